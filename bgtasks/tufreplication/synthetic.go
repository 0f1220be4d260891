package tufreplication

import (
	"fmt"

	"github.com/google/uuid"
)

// SyntheticRack is a planner input at rack scale, for timing Compute (the
// go test benchmark and rackbench share it): nSleds reachable sleds with
// two M.2s each and nArtifacts artifacts of 1 MiB, every sled holding held
// copies of every artifact. held = 2 is the steady state every periodic run
// sees; held = 0 is a fresh upload that this Nexus holds and must seed.
func SyntheticRack(nSleds, nArtifacts int, held uint8, lim Limits) Input {
	self := uuid.UUID{0xaa, 0x01}
	const selfURL = "http://nexus-self"
	in := Input{Generation: 7, Self: self, Limits: lim, Artifacts: make([]Artifact, nArtifacts)}
	for i := range in.Artifacts {
		in.Artifacts[i] = Artifact{SHA256: Hash(fmt.Sprintf("%064x", i)), Length: 1 << 20}
		if held == 0 {
			in.NexusCopies = append(in.NexusCopies, NexusCopy{NexusID: self, URL: selfURL, Artifact: i})
			in.SelfLocal = append(in.SelfLocal, in.Artifacts[i].SHA256)
		}
	}
	for i := range nSleds {
		c := make([]uint8, nArtifacts)
		for j := range c {
			c[j] = held
		}
		var id uuid.UUID
		id[0], id[14], id[15] = 0x51, byte(i>>8), byte(i)
		in.Sleds = append(in.Sleds, Sled{ID: id, DepotURL: fmt.Sprintf("http://sled-%04d:12348", i), Reachable: true,
			Generation: 7, M2Present: 2, Copies: c})
	}
	return in
}
