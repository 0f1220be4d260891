package tufreplication_test

import (
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/rackplane/rackplane/internal/racktest"
	"github.com/rackplane/rackplane/internal/tufgen"
)

// A byte flipped in an artifact on a sled's M.2s, with nobody asking for a
// scrub: the sled's continuous scrub (at a test rate) finds it within
// seconds, removes the bad copies and reports at once, and the next
// replication run, started by that report, brings a good copy back from
// another sled.
func TestContinuousScrubFindsAFlippedByteAndReplicationRepairsIt(t *testing.T) {
	t.Parallel()
	cfg := sledConfig()
	cfg.ScrubInterval, cfg.ScrubRate = 200*time.Millisecond, 64<<20
	r := &rack{racktest.StartRack(t, racktest.RackConfig{Sleds: 4, Nexus: nexusConfig(), Sled: cfg, Seed: 42})}
	built := r.upload(r.Nexus, tufgen.Sized("1.0.0", 4<<20, 3, 17))
	want := hashes(built)
	r.waitHeld(r.Sleds, want, 30*time.Second)
	waitConverged(t, r.Nexus, 30*time.Second)
	quiesce(t, r.Nexus)

	victim, h := r.Sleds[2], want[1]
	before := sledMetric(t, victim, "rackplane_sled_artifact_corrupt_copies_total")
	flipped := time.Now()
	for _, m2 := range victim.Config.M2Dirs {
		f, err := os.OpenFile(racktest.ArtifactPath(m2, h), os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		b := make([]byte, 1)
		if _, err := f.ReadAt(b, 1000); err != nil {
			t.Fatal(err)
		}
		b[0] ^= 0x01
		if _, err := f.WriteAt(b, 1000); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	// 12 MiB stored per M.2, read at 64 MiB/s: a pass takes well under a
	// second, so the scrub finds both within a few.
	racktest.WaitFor(t, 5*time.Second, "the continuous scrub to find both corrupt copies", func() error {
		if n := sledMetric(t, victim, "rackplane_sled_artifact_corrupt_copies_total") - before; n < 2 {
			return fmt.Errorf("%v corrupt copies found", n)
		}
		return nil
	})
	found := time.Since(flipped)
	r.waitHeld(r.Sleds, want, 10*time.Second)
	if !activatedBy(t, r.Nexus, "sled-registration:"+victim.ID().String(), flipped) {
		t.Fatalf("no replication run was started by sled %s reporting its lost copies", victim.ID())
	}
	t.Logf("found %s after the flip; repaired %s after it", found, time.Since(flipped))
}
