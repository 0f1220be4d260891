package tufreplication

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/uuid"
)

var update = flag.Bool("update", false, "rewrite golden files")

// Test fixtures use readable names: sled-NN, artifact hashes aaaa…, bbbb….
func sledID(i int) uuid.UUID {
	return uuid.MustParse(fmt.Sprintf("00000000-0000-0000-0000-%012d", i))
}

func sledURL(i int) string { return fmt.Sprintf("http://sled-%02d", i) }

var (
	selfID  = uuid.MustParse("aaaaaaaa-0000-0000-0000-000000000001")
	otherID = uuid.MustParse("bbbbbbbb-0000-0000-0000-000000000002")
)

const (
	selfURL  = "http://nexus-self"
	otherURL = "http://nexus-other"
)

func hashOf(i int) Hash { return Hash(strings.Repeat(string(rune('a'+i)), 64)) }

func artifacts(n int) []Artifact {
	out := make([]Artifact, n)
	for i := range out {
		out[i] = Artifact{SHA256: hashOf(i), Length: int64(1000 * (i + 1))}
	}
	return out
}

// rack builds an input with n sleds (2 M.2s each, reachable, at generation
// 5) holding nothing, and artifacts a.
func rack(nSleds, nArtifacts int) Input {
	in := Input{
		Generation: 5,
		Artifacts:  artifacts(nArtifacts),
		Self:       selfID,
		Limits: Limits{MinSledReplication: 3, MaxCopiesPerSource: 2, MaxCopiesPerTarget: 4,
			MaxNexusSends: 8, MaxRequests: 100},
	}
	for i := range nSleds {
		in.Sleds = append(in.Sleds, Sled{ID: sledID(i), DepotURL: sledURL(i), Reachable: true, Generation: 5,
			M2Present: 2, Copies: make([]uint8, nArtifacts)})
	}
	return in
}

func (in *Input) selfHolds(arts ...int) {
	for _, a := range arts {
		in.NexusCopies = append(in.NexusCopies, NexusCopy{NexusID: selfID, URL: selfURL, Artifact: a})
		in.SelfLocal = append(in.SelfLocal, in.Artifacts[a].SHA256)
	}
}

func (in *Input) holdAll(sleds ...int) {
	for _, s := range sleds {
		for a := range in.Artifacts {
			in.Sleds[s].Copies[a] = 2
		}
	}
}

var goldenCases = map[string]func() Input{
	// A repo just uploaded to this Nexus: it seeds each artifact to one
	// sled (which copies it from Nexus's depot) and no more.
	"new_repo_16_sleds": func() Input {
		in := rack(16, 3)
		in.selfHolds(0, 1, 2)
		return in
	},
	// Three sleds hold everything (the seeds and their first copies): the
	// other thirteen copy from them, two at a time per source.
	"new_repo_16_sleds_second_run": func() Input {
		in := rack(16, 3)
		in.selfHolds(0, 1, 2)
		in.holdAll(0, 1, 2)
		return in
	},
	// Every sled holds everything except one that just joined.
	"new_sled_joining": func() Input {
		in := rack(5, 3)
		in.holdAll(0, 1, 2, 3)
		return in
	},
	// Scrub removed a corrupt copy on one M.2 of one sled: it refills from
	// its own other M.2 (its own depot).
	"one_m2_missing_a_copy": func() Input {
		in := rack(4, 2)
		in.holdAll(0, 1, 2, 3)
		in.Sleds[2].Copies[1] = 1
		return in
	},
	// Artifact 0 is held only by this Nexus, artifact 1 only by another
	// Nexus instance (its uploader): each seeds one sled from its depot.
	"held_only_by_nexus": func() Input {
		in := rack(5, 2)
		in.selfHolds(0)
		in.NexusCopies = append(in.NexusCopies, NexusCopy{NexusID: otherID, URL: otherURL, Artifact: 1})
		return in
	},
	// Artifact 1 has no holder at all: nothing can be done but report it.
	"held_by_nobody": func() Input {
		in := rack(4, 2)
		in.holdAll(0, 1)
		for s := range in.Sleds {
			in.Sleds[s].Copies[1] = 0
		}
		return in
	},
	// A sled already holds generation 6: this Nexus's view (5) is stale and
	// the run stops before any request.
	"stale_generation_seen": func() Input {
		in := rack(4, 2)
		in.selfHolds(0, 1)
		in.Sleds[3].Generation = 6
		return in
	},
	// One holder, already serving one copy: it takes one more; Nexus
	// seeds nothing (a sled holds it); the rest wait.
	"fan_out_limited_by_sources": func() Input {
		in := rack(8, 1)
		in.selfHolds(0)
		in.Sleds[0].Copies[0] = 2
		in.Sleds[1].InFlight = []InFlight{{Artifact: 0, Source: sledURL(0)}}
		return in
	},
	// Unreachable sleds and sleds at an older generation (their config put
	// failed) are neither sources nor targets.
	"unreachable_and_behind": func() Input {
		in := rack(5, 1)
		in.holdAll(0)
		in.Sleds[1].Reachable = false
		in.Sleds[1].Copies[0] = 0
		in.Sleds[2].Generation = 4
		in.Sleds[2].Copies[0] = 0
		in.Sleds[3].Copies[0] = 0
		return in
	},
	// Local copies: one replicated enough to drop, one not, one no longer
	// wanted at all.
	"drop_local_copies": func() Input {
		in := rack(4, 2)
		in.holdAll(0, 1, 2)
		for s := range in.Sleds {
			in.Sleds[s].Copies[1] = 0
		}
		in.Sleds[0].Copies[1] = 2
		in.selfHolds(0, 1)
		in.SelfLocal = append(in.SelfLocal, hashOf(9))
		return in
	},
	// A run capped at 3 requests defers the rest.
	"request_limit": func() Input {
		in := rack(6, 2)
		in.holdAll(0, 1, 2)
		in.Limits.MaxRequests = 3
		return in
	},
}

func TestPlanGolden(t *testing.T) {
	for name, mk := range goldenCases {
		t.Run(name, func(t *testing.T) {
			in := mk()
			got := render(in, Compute(in))
			path := filepath.Join("testdata", "plan", name+".golden")
			if *update {
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create)", err)
			}
			if got != string(want) {
				t.Errorf("plan differs from %s (run with -update if the change is intended)\n--- got\n%s--- want\n%s", path, got, want)
			}
		})
	}
}

// render prints a plan with short names, for golden files.
func render(in Input, p Plan) string {
	names := map[string]string{selfURL: "nexus-self", otherURL: "nexus-other"}
	sledName := map[uuid.UUID]string{}
	for i, s := range in.Sleds {
		sledName[s.ID] = fmt.Sprintf("sled-%02d", i)
		names[s.DepotURL] = sledName[s.ID]
	}
	short := func(h Hash) string { return string(h[:8]) }
	var b strings.Builder
	fmt.Fprintf(&b, "generation %d, %d sleds, %d artifacts\n", in.Generation, len(in.Sleds), len(in.Artifacts))
	if p.Stop != "" {
		fmt.Fprintf(&b, "STOP: %s\n", p.Stop)
	}
	fmt.Fprintf(&b, "requests: %d\n", len(p.Requests))
	for _, r := range p.Requests {
		src := names[r.Source]
		fmt.Fprintf(&b, "  %-4s %s %s <- %s [%s]\n", r.Kind, short(r.Artifact.SHA256), sledName[r.Sled], src, r.SourceKind)
	}
	fmt.Fprintf(&b, "deferred: %d\n", p.Deferred)
	for _, a := range p.Artifacts {
		fmt.Fprintf(&b, "artifact %s: holders %d (full %d), in flight %d, nexus %d\n",
			short(a.Artifact.SHA256), a.Holders, a.FullHolders, a.InFlight, a.NexusHolders)
	}
	for _, h := range p.Unheld {
		fmt.Fprintf(&b, "unheld: %s\n", short(h))
	}
	for _, h := range p.DropLocal {
		fmt.Fprintf(&b, "drop local: %s\n", short(h))
	}
	return b.String()
}
