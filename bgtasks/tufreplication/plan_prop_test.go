package tufreplication

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/google/uuid"
	"pgregory.net/rapid"

	"github.com/rackplane/rackplane/internal/cputime"
)

// genInput draws a random rack: sleds in every state, partial holdings,
// in-flight copies, Nexus copies (some of artifacts outside the wanted set).
func genInput(t *rapid.T) Input {
	nArt := rapid.IntRange(0, 8).Draw(t, "artifacts")
	nSled := rapid.IntRange(0, 12).Draw(t, "sleds")
	gen := int64(rapid.IntRange(1, 5).Draw(t, "generation"))
	in := Input{
		Generation: gen,
		Artifacts:  artifacts(nArt),
		Self:       selfID,
		Limits: Limits{
			MinSledReplication: rapid.IntRange(0, 4).Draw(t, "min"),
			MaxCopiesPerSource: rapid.IntRange(1, 4).Draw(t, "perSource"),
			MaxCopiesPerTarget: rapid.IntRange(1, 4).Draw(t, "perTarget"),
			MaxNexusSends:      rapid.IntRange(0, 6).Draw(t, "nexusSends"),
			MaxRequests:        rapid.IntRange(0, 40).Draw(t, "maxRequests"),
		},
	}
	for i := range nSled {
		s := Sled{
			ID: sledID(i), DepotURL: sledURL(i),
			Reachable:  rapid.IntRange(0, 9).Draw(t, "reachable") > 0,
			Generation: gen - int64(rapid.IntRange(0, 6).Draw(t, "behind")/5),
			M2Present:  rapid.IntRange(0, 2).Draw(t, "m2"),
			Copies:     make([]uint8, nArt),
		}
		for a := range nArt {
			s.Copies[a] = uint8(rapid.IntRange(0, s.M2Present).Draw(t, "copies"))
		}
		if nArt > 0 && nSled > 0 {
			for range rapid.IntRange(0, 2).Draw(t, "inflight") {
				s.InFlight = append(s.InFlight, InFlight{
					Artifact: rapid.IntRange(0, nArt-1).Draw(t, "flightArt"),
					Source:   sledURL(rapid.IntRange(0, nSled-1).Draw(t, "flightSrc")),
				})
			}
		}
		in.Sleds = append(in.Sleds, s)
	}
	for a := range nArt {
		if rapid.Bool().Draw(t, "selfHolds") {
			in.selfHolds(a)
		}
		if rapid.Bool().Draw(t, "otherHolds") {
			in.NexusCopies = append(in.NexusCopies, NexusCopy{NexusID: otherID, URL: otherURL, Artifact: a})
		}
	}
	if rapid.Bool().Draw(t, "unwantedLocal") {
		in.SelfLocal = append(in.SelfLocal, hashOf(20))
	}
	return in
}

func TestPlanProperties(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		in := genInput(t)
		p := Compute(in)

		wanted := map[Hash]int{}
		for i, a := range in.Artifacts {
			wanted[a.SHA256] = i
		}
		sleds := map[uuid.UUID]*Sled{}
		byURL := map[string]*Sled{}
		stale := false
		for i := range in.Sleds {
			s := &in.Sleds[i]
			sleds[s.ID], byURL[s.DepotURL] = s, s
			if s.Reachable && s.Generation > in.Generation {
				stale = true
			}
		}
		if stale != (p.Stop != "") {
			t.Fatalf("stale view %v but Stop %q", stale, p.Stop)
		}
		if p.Stop != "" && (len(p.Requests) > 0 || len(p.DropLocal) > 0) {
			t.Fatalf("a stopped plan still acts: %+v", p)
		}
		if len(p.Requests) > in.Limits.MaxRequests {
			t.Fatalf("%d requests over the limit %d", len(p.Requests), in.Limits.MaxRequests)
		}
		nexusHolds := map[string]map[int]bool{}
		for _, c := range in.NexusCopies {
			if nexusHolds[c.URL] == nil {
				nexusHolds[c.URL] = map[int]bool{}
			}
			nexusHolds[c.URL][c.Artifact] = true
		}
		seen := map[string]bool{}
		perTarget := map[uuid.UUID]int{}
		perSource := map[string]int{}
		nexusSends := 0
		for _, f := range in.Sleds {
			if f.Reachable && f.Generation == in.Generation {
				perTarget[f.ID] += len(f.InFlight)
				for _, fl := range f.InFlight {
					perSource[fl.Source]++
				}
			}
		}
		for _, r := range p.Requests {
			a, ok := wanted[r.Artifact.SHA256]
			if !ok {
				t.Fatalf("request for %s, which is not in the config", r.Artifact.SHA256)
			}
			s := sleds[r.Sled]
			if s == nil || !s.Reachable || s.Generation != in.Generation || s.M2Present == 0 {
				t.Fatalf("request to unusable sled %+v", s)
			}
			if int(s.Copies[a]) >= s.M2Present {
				t.Fatalf("sled %s already holds %s fully", r.Sled, r.Artifact.SHA256)
			}
			for _, f := range s.InFlight {
				if f.Artifact == a {
					t.Fatalf("sled %s is already copying %s", r.Sled, r.Artifact.SHA256)
				}
			}
			key := r.Sled.String() + string(r.Artifact.SHA256)
			if seen[key] {
				t.Fatalf("two requests give %s to sled %s", r.Artifact.SHA256, r.Sled)
			}
			seen[key] = true
			perTarget[r.Sled]++
			switch r.Kind {
			case CopyFromDepot:
				perSource[r.Source]++
				if src := byURL[r.Source]; src != nil {
					if src.Copies[a] == 0 || !src.Reachable || src.Generation != in.Generation {
						t.Fatalf("copy of %s from sled %s, which cannot serve it", r.Artifact.SHA256, src.ID)
					}
				} else if !nexusHolds[r.Source][a] {
					t.Fatalf("copy of %s from %s, which does not hold it", r.Artifact.SHA256, r.Source)
				} else {
					nexusSends++
				}
			default:
				t.Fatalf("unknown request kind %q", r.Kind)
			}
		}
		for id, n := range perTarget {
			if n > max(in.Limits.MaxCopiesPerTarget, len(sleds[id].InFlight)) {
				t.Fatalf("sled %s receives %d copies at once", id, n)
			}
		}
		for url, n := range perSource {
			limit := in.Limits.MaxCopiesPerSource
			if byURL[url] == nil {
				limit = in.Limits.MaxNexusSends
			}
			if n > limit && n > countInFlightFrom(in, url) {
				t.Fatalf("source %s serves %d copies at once (limit %d)", url, n, limit)
			}
		}
		if nexusSends > in.Limits.MaxNexusSends {
			t.Fatalf("Nexus sends %d copies, limit %d", nexusSends, in.Limits.MaxNexusSends)
		}
		// A Nexus seeds an artifact to one sled at most, and only one that
		// no sled holds or receives: each byte leaves Nexus once.
		fromNexus := map[int]int{}
		for _, r := range p.Requests {
			if r.SourceKind == "nexus" {
				fromNexus[wanted[r.Artifact.SHA256]]++
			}
		}
		for a, n := range fromNexus {
			if st := p.Artifacts[a]; n > 1 || st.Holders+st.InFlight > 0 {
				t.Fatalf("Nexus seeds %s to %d sleds though %d hold or receive it",
					in.Artifacts[a].SHA256, n, st.Holders+st.InFlight)
			}
		}
		// Unheld is exactly the wanted artifacts without any holder.
		if p.Stop == "" {
			for _, h := range p.Unheld {
				st := p.Artifacts[wanted[h]]
				if st.Holders+st.NexusHolders+st.InFlight != 0 {
					t.Fatalf("%s reported unheld but has holders %+v", h, st)
				}
			}
			for _, h := range p.DropLocal {
				if a, ok := wanted[h]; ok && p.Artifacts[a].Holders < in.Limits.MinSledReplication {
					t.Fatalf("dropping local %s held by only %d sleds", h, p.Artifacts[a].Holders)
				}
			}
		}
	})
}

// threadCPU is the calling thread's CPU time.
func countInFlightFrom(in Input, url string) int {
	n := 0
	for _, s := range in.Sleds {
		for _, f := range s.InFlight {
			if f.Source == url {
				n++
			}
		}
	}
	return n
}

// BenchmarkPlan plans 1,000 sleds × 10,000 artifacts. The target is under
// 200 ms per plan. Two shapes: a rack where everyone holds everything (the
// steady state every run sees) and a fresh upload nobody holds yet.
// rackbench replicate times the same inputs with the task's default limits.
func BenchmarkPlan(b *testing.B) {
	const nSleds, nArts = 1000, 10000
	for _, tc := range []struct {
		name string
		held uint8
	}{{"steady", 2}, {"fresh", 0}} {
		b.Run(fmt.Sprintf("%s_%dx%d", tc.name, nSleds, nArts), func(b *testing.B) {
			in := SyntheticRack(nSleds, nArts, tc.held, Limits{MinSledReplication: 3, MaxCopiesPerSource: 4,
				MaxCopiesPerTarget: 4, MaxNexusSends: 16, MaxRequests: 1024})
			// The planner is single-threaded: this thread's CPU time is
			// what it costs, whatever else the machine is doing.
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			b.ResetTimer()
			var worst time.Duration
			for b.Loop() {
				start, err := cputime.Thread()
				if err != nil {
					b.Fatal(err)
				}
				Compute(in)
				end, err := cputime.Thread()
				if err != nil {
					b.Fatal(err)
				}
				worst = max(worst, end-start)
			}
			b.ReportMetric(float64(worst)/1e6, "worst-cpu-ms")
			b.ReportMetric(float64(worst)/float64(200*time.Millisecond), "ratio-to-200ms-target")
		})
	}
}
