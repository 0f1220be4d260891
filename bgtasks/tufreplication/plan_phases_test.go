package tufreplication

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/google/uuid"
)

// Each phase of Compute on its own: a planner is built from a small rack,
// the phases before the one under test run as Compute runs them, and the
// test reads the state the phase leaves.

// prepared is a planner over in, before any phase has run.
func prepared(in Input) *planner { return newPlanner(in, sortedSleds(in.Sleds)) }

// counted is a planner over in after every phase before assign.
func counted(in Input) *planner {
	p := prepared(in)
	p.addSources()
	p.countInFlight()
	p.countHoldings()
	return p
}

// name gives a source's fixture name: sled-NN, nexus-self or nexus-other.
func name(url string) string {
	switch url {
	case selfURL:
		return "nexus-self"
	case otherURL:
		return "nexus-other"
	}
	return strings.TrimPrefix(url, "http://")
}

func names(srcs []*source) []string {
	out := []string{}
	for _, s := range srcs {
		if s == nil {
			out = append(out, "-")
		} else {
			out = append(out, name(s.url))
		}
	}
	return out
}

func equal[T comparable](t *testing.T, what string, got, want T) {
	t.Helper()
	if got != want {
		t.Errorf("%s = %v, want %v", what, got, want)
	}
}

func equalSlices[T comparable](t *testing.T, what string, got, want []T) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Errorf("%s = %v, want %v", what, got, want)
	}
}

func TestSortedSleds(t *testing.T) {
	id := func(s string) uuid.UUID { return uuid.MustParse(s) }
	for _, tc := range []struct {
		name string
		ids  []uuid.UUID
	}{
		{"empty", nil},
		{"already sorted", []uuid.UUID{sledID(1), sledID(2), sledID(3)}},
		{"reversed", []uuid.UUID{sledID(3), sledID(2), sledID(1)}},
		// Digits sort before letters in the canonical form, as 0x09 sorts
		// before 0x0a.
		{"hex digits and letters", []uuid.UUID{
			id("0a000000-0000-0000-0000-000000000000"), id("09000000-0000-0000-0000-000000000000"),
			id("00000000-0000-0000-0000-0000000000ff"), id("f0000000-0000-0000-0000-000000000000"),
			id("00000000-0000-0000-00a0-000000000000"), id("00000000-0000-0000-0099-000000000000"),
		}},
		{"duplicates", []uuid.UUID{sledID(2), sledID(1), sledID(2)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var in []Sled
			for i, id := range tc.ids {
				in = append(in, Sled{ID: id, DepotURL: sledURL(i)})
			}
			before := slices.Clone(in)
			got := sortedSleds(in)
			var gotIDs []string
			for _, s := range got {
				gotIDs = append(gotIDs, s.ID.String())
			}
			var want []string
			for _, id := range tc.ids {
				want = append(want, id.String())
			}
			slices.Sort(want)
			equalSlices(t, "order", gotIDs, want)
			if !slices.EqualFunc(in, before, func(a, b Sled) bool { return a.ID == b.ID && a.DepotURL == b.DepotURL }) {
				t.Errorf("sortedSleds reordered its input: %v", in)
			}
		})
	}
}

func TestStaleView(t *testing.T) {
	for _, tc := range []struct {
		name  string
		sleds []Sled
		want  string
	}{
		{"no sleds", nil, ""},
		{"all at the generation or behind", []Sled{
			{ID: sledID(1), Reachable: true, Generation: 5},
			{ID: sledID(2), Reachable: true, Generation: 4},
		}, ""},
		{"an unreachable sled's newer generation does not count", []Sled{
			{ID: sledID(1), Reachable: false, Generation: 9},
		}, ""},
		{"a reachable sled ahead stops the run", []Sled{
			{ID: sledID(1), Reachable: true, Generation: 5},
			{ID: sledID(2), Reachable: true, Generation: 6},
		}, "sled " + sledID(2).String() + " holds artifact generation 6, newer than this Nexus's 5: its view is stale"},
		{"the first sled ahead is named", []Sled{
			{ID: sledID(1), Reachable: true, Generation: 7},
			{ID: sledID(2), Reachable: true, Generation: 6},
		}, "sled " + sledID(1).String() + " holds artifact generation 7, newer than this Nexus's 5: its view is stale"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			equal(t, "staleView", staleView(tc.sleds, 5), tc.want)
		})
	}
}

// TestComputeStopsOnStaleView checks a stopped plan carries nothing but the
// reason, whatever else the input would have asked for.
func TestComputeStopsOnStaleView(t *testing.T) {
	in := rack(3, 2)
	in.selfHolds(0, 1)
	in.SelfLocal = append(in.SelfLocal, hashOf(9))
	in.Sleds[1].Generation = 6
	p := Compute(in)
	want := staleView(sortedSleds(in.Sleds), in.Generation)
	if want == "" || p.Stop != want {
		t.Fatalf("Stop = %q, want %q", p.Stop, want)
	}
	if p.Requests != nil || p.Deferred != 0 || p.Artifacts != nil || p.Unheld != nil || p.DropLocal != nil {
		t.Errorf("stopped plan carries more than its reason: %+v", p)
	}
}

func TestAddSources(t *testing.T) {
	type srcView struct {
		kind string
		cap  int
	}
	for _, tc := range []struct {
		name         string
		input        func() Input
		sledSource   []string
		nexusHolders [][]string
		nexusCounts  []int
		sources      map[string]srcView
		// shared lists sleds that must share one source (one load).
		shared []int
	}{
		{
			name: "only usable sleds are sources",
			input: func() Input {
				in := rack(3, 1)
				in.Sleds[1].Reachable = false
				in.Sleds[2].Generation = 4
				return in
			},
			sledSource:   []string{"sled-00", "-", "-"},
			nexusHolders: [][]string{nil},
			nexusCounts:  []int{0},
			sources:      map[string]srcView{"sled-00": {"sled", 2}},
		},
		{
			name: "Nexus copies, this Nexus's marked self; copies outside the wanted set ignored",
			input: func() Input {
				in := rack(1, 2)
				in.NexusCopies = []NexusCopy{
					{NexusID: otherID, URL: otherURL, Artifact: 0},
					{NexusID: selfID, URL: selfURL, Artifact: 0},
					{NexusID: otherID, URL: otherURL, Artifact: 1},
					{NexusID: selfID, URL: selfURL, Artifact: 2},
					{NexusID: otherID, URL: otherURL, Artifact: -1},
				}
				return in
			},
			sledSource:   []string{"sled-00"},
			nexusHolders: [][]string{{"nexus-other", "nexus-self"}, {"nexus-other"}},
			nexusCounts:  []int{2, 1},
			sources: map[string]srcView{"sled-00": {"sled", 2}, "nexus-self": {"self", 8},
				"nexus-other": {"nexus", 8}},
		},
		{
			name: "one source per URL",
			input: func() Input {
				in := rack(2, 1)
				in.Sleds[1].DepotURL = in.Sleds[0].DepotURL
				in.NexusCopies = []NexusCopy{{NexusID: otherID, URL: sledURL(0), Artifact: 0}}
				return in
			},
			sledSource:   []string{"sled-00", "sled-00"},
			nexusHolders: [][]string{{"sled-00"}},
			nexusCounts:  []int{1},
			sources:      map[string]srcView{"sled-00": {"sled", 2}},
			shared:       []int{0, 1},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := prepared(tc.input())
			p.addSources()
			equalSlices(t, "sled sources", names(p.sledSource), tc.sledSource)
			for a := range tc.nexusHolders {
				want := tc.nexusHolders[a]
				if want == nil {
					want = []string{}
				}
				equalSlices(t, fmt.Sprintf("nexus holders of artifact %d", a), names(p.nexusHolders[a]), want)
				equal(t, fmt.Sprintf("NexusHolders of artifact %d", a), p.plan.Artifacts[a].NexusHolders, tc.nexusCounts[a])
			}
			got := map[string]srcView{}
			for url, s := range p.sources {
				got[name(url)] = srcView{s.kind, s.cap}
				if s.load != 0 {
					t.Errorf("source %s starts with load %d", url, s.load)
				}
			}
			if !maps.Equal(got, tc.sources) {
				t.Errorf("sources = %v, want %v", got, tc.sources)
			}
			for _, i := range tc.shared {
				if p.sledSource[i] != p.sledSource[tc.shared[0]] {
					t.Errorf("sleds %v share a URL but not a source", tc.shared)
				}
			}
		})
	}
}

func TestCountInFlight(t *testing.T) {
	for _, tc := range []struct {
		name       string
		input      func() Input
		receiving  [][]int // per artifact, the receiving sleds
		inFlight   []int
		targetLoad []int
		loads      map[string]int
	}{
		{
			name: "copies charge their targets and known sources",
			input: func() Input {
				in := rack(3, 2)
				in.holdAll(0)
				in.selfHolds(1)
				in.Sleds[1].InFlight = []InFlight{{Artifact: 0, Source: sledURL(0)}, {Artifact: 1, Source: selfURL}}
				in.Sleds[2].InFlight = []InFlight{{Artifact: 0, Source: "http://elsewhere"}}
				return in
			},
			receiving:  [][]int{{1, 2}, {1}},
			inFlight:   []int{2, 1},
			targetLoad: []int{0, 2, 1},
			loads:      map[string]int{"sled-00": 1, "sled-01": 0, "sled-02": 0, "nexus-self": 1},
		},
		{
			name: "copies outside the wanted set are ignored",
			input: func() Input {
				in := rack(2, 1)
				in.Sleds[1].InFlight = []InFlight{{Artifact: 1, Source: sledURL(0)}, {Artifact: -1, Source: sledURL(0)}}
				return in
			},
			receiving:  [][]int{nil},
			inFlight:   []int{0},
			targetLoad: []int{0, 0},
			loads:      map[string]int{"sled-00": 0, "sled-01": 0},
		},
		{
			name: "unusable sleds' copies are ignored",
			input: func() Input {
				in := rack(3, 1)
				in.Sleds[1].Reachable = false
				in.Sleds[1].InFlight = []InFlight{{Artifact: 0, Source: sledURL(0)}}
				in.Sleds[2].Generation = 4
				in.Sleds[2].InFlight = []InFlight{{Artifact: 0, Source: sledURL(0)}}
				return in
			},
			receiving:  [][]int{nil},
			inFlight:   []int{0},
			targetLoad: []int{0, 0, 0},
			loads:      map[string]int{"sled-00": 0},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := prepared(tc.input())
			p.addSources()
			p.countInFlight()
			for a, want := range tc.receiving {
				got := slices.Sorted(maps.Keys(p.receiving[a]))
				if !slices.Equal(got, want) {
					t.Errorf("artifact %d received by %v, want %v", a, got, want)
				}
				equal(t, fmt.Sprintf("InFlight of artifact %d", a), p.plan.Artifacts[a].InFlight, tc.inFlight[a])
			}
			equalSlices(t, "target load", p.targetLoad, tc.targetLoad)
			got := map[string]int{}
			for url, s := range p.sources {
				got[name(url)] = s.load
			}
			if !maps.Equal(got, tc.loads) {
				t.Errorf("source loads = %v, want %v", got, tc.loads)
			}
		})
	}
}

func TestCountHoldings(t *testing.T) {
	for _, tc := range []struct {
		name    string
		input   func() Input
		holders []int
		full    []int
		needs   []int
	}{
		{
			name: "full, partial and no copies",
			input: func() Input {
				in := rack(3, 1)
				in.Sleds[0].Copies[0] = 2
				in.Sleds[1].Copies[0] = 1
				return in
			},
			holders: []int{2}, full: []int{1}, needs: []int{2},
		},
		{
			name: "a one-M.2 sled with its copy holds fully",
			input: func() Input {
				in := rack(1, 1)
				in.Sleds[0].M2Present = 1
				in.Sleds[0].Copies[0] = 1
				return in
			},
			holders: []int{1}, full: []int{1}, needs: []int{0},
		},
		{
			name: "a sled without M.2s needs nothing",
			input: func() Input {
				in := rack(2, 2)
				in.Sleds[1].M2Present = 0
				return in
			},
			holders: []int{0, 0}, full: []int{0, 0}, needs: []int{1, 1},
		},
		{
			name: "unusable sleds neither hold nor need",
			input: func() Input {
				in := rack(3, 1)
				in.holdAll(1, 2)
				in.Sleds[1].Reachable = false
				in.Sleds[2].Generation = 4
				return in
			},
			holders: []int{0}, full: []int{0}, needs: []int{1},
		},
		{
			name: "a short Copies slice holds nothing beyond its end",
			input: func() Input {
				in := rack(1, 3)
				in.Sleds[0].Copies = []uint8{2}
				return in
			},
			holders: []int{1, 0, 0}, full: []int{1, 0, 0}, needs: []int{0, 1, 1},
		},
		{
			name: "a long Copies slice is cut at the wanted set",
			input: func() Input {
				in := rack(1, 2)
				in.Sleds[0].Copies = []uint8{2, 0, 2, 2}
				return in
			},
			holders: []int{1, 0}, full: []int{1, 0}, needs: []int{0, 1},
		},
		{
			name: "a sled receiving a copy does not need another",
			input: func() Input {
				in := rack(3, 1)
				in.holdAll(0)
				in.Sleds[1].InFlight = []InFlight{{Artifact: 0, Source: sledURL(0)}}
				in.Sleds[2].Copies[0] = 1
				in.Sleds[2].InFlight = []InFlight{{Artifact: 0, Source: sledURL(0)}}
				// A full holder reporting a copy (a stale queue entry)
				// takes nothing off the others' needs.
				in.Sleds[0].InFlight = []InFlight{{Artifact: 0, Source: sledURL(1)}}
				return in
			},
			holders: []int{2}, full: []int{1}, needs: []int{0},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := counted(tc.input())
			var holders, full []int
			for _, st := range p.plan.Artifacts {
				holders, full = append(holders, st.Holders), append(full, st.FullHolders)
			}
			equalSlices(t, "holders", holders, tc.holders)
			equalSlices(t, "full holders", full, tc.full)
			equalSlices(t, "needs", p.needs, tc.needs)
		})
	}
}

func TestRarestFirst(t *testing.T) {
	st := func(holders, inFlight int) ArtifactState { return ArtifactState{Holders: holders, InFlight: inFlight} }
	for _, tc := range []struct {
		name   string
		states []ArtifactState
		want   []int
	}{
		{"none", nil, []int{}},
		{"fewest holders first", []ArtifactState{st(3, 0), st(0, 0), st(1, 0)}, []int{1, 2, 0}},
		{"copies in flight count as holders", []ArtifactState{st(1, 2), st(2, 0), st(0, 0)}, []int{2, 1, 0}},
		{"ties keep input order", []ArtifactState{st(2, 0), st(1, 1), st(0, 2), st(0, 0)}, []int{3, 0, 1, 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			equalSlices(t, "order", rarestFirst(tc.states), tc.want)
		})
	}
}

func TestChooseSource(t *testing.T) {
	// Sled 0 holds the artifact on both M.2s, sled 1 on one; sleds 2 and
	// 3 lack it. This Nexus and another hold it too.
	base := func() Input {
		in := rack(4, 1)
		in.Sleds[0].Copies[0] = 2
		in.Sleds[1].Copies[0] = 1
		in.NexusCopies = append(in.NexusCopies, NexusCopy{NexusID: otherID, URL: otherURL, Artifact: 0})
		in.selfHolds(0)
		return in
	}
	for _, tc := range []struct {
		name      string
		target    int
		loads     map[string]int
		nexusOK   bool
		want      string // "" for none
		fromNexus bool
	}{
		{name: "a sled missing one copy refills from its own depot", target: 1, want: "sled-01"},
		{name: "own depot busy: another holder", target: 1, loads: map[string]int{sledURL(1): 2}, want: "sled-00"},
		{name: "ties go to the first holder", target: 2, want: "sled-00"},
		{name: "least loaded holder", target: 2, loads: map[string]int{sledURL(0): 1}, want: "sled-01"},
		{name: "holders busy and Nexus not allowed", target: 2,
			loads: map[string]int{sledURL(0): 2, sledURL(1): 2}, want: ""},
		{name: "holders busy: this Nexus first", target: 2,
			loads: map[string]int{sledURL(0): 2, sledURL(1): 2}, nexusOK: true, want: "nexus-self", fromNexus: true},
		{name: "this Nexus busy: another Nexus", target: 2,
			loads:   map[string]int{sledURL(0): 2, sledURL(1): 2, selfURL: 8},
			nexusOK: true, want: "nexus-other", fromNexus: true},
		{name: "every source busy", target: 3,
			loads:   map[string]int{sledURL(0): 2, sledURL(1): 2, selfURL: 8, otherURL: 8},
			nexusOK: true, want: ""},
		{name: "a free sled holder is preferred to Nexus", target: 3, nexusOK: true, want: "sled-00"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := counted(base())
			for url, n := range tc.loads {
				p.sources[url].load = n
			}
			src, fromNexus := p.chooseSource(tc.target, 0, p.sledHolders(0), tc.nexusOK)
			got := ""
			if src != nil {
				got = name(src.url)
			}
			equal(t, "source", got, tc.want)
			equal(t, "fromNexus", fromNexus, tc.fromNexus)
		})
	}
}

func TestAssign(t *testing.T) {
	for _, tc := range []struct {
		name       string
		input      func() Input
		rank       int
		setup      func(p *planner)
		requests   []string
		deferred   int
		nexusSends int
		unheld     bool
	}{
		{
			name:   "held by nobody is reported, not assigned",
			input:  func() Input { return rack(3, 1) },
			unheld: true,
		},
		{
			name:  "held everywhere needs nothing",
			input: func() Input { in := rack(3, 1); in.holdAll(0, 1, 2); return in },
		},
		{
			name: "every need deferred once the request limit is reached",
			input: func() Input {
				in := rack(4, 1)
				in.holdAll(0)
				in.Limits.MaxRequests = 0
				return in
			},
			deferred: 3,
		},
		{
			name: "targets start at an offset by rank; an exhausted source defers the rest",
			input: func() Input {
				in := rack(6, 1)
				in.holdAll(0)
				return in
			},
			rank:     1,
			requests: []string{"copy sled-03 <- sled-00", "copy sled-04 <- sled-00"},
			deferred: 3,
		},
		{
			name: "a busy target waits; the next gets the copy",
			input: func() Input {
				in := rack(3, 1)
				in.holdAll(0)
				return in
			},
			setup:    func(p *planner) { p.targetLoad[1] = p.lim.MaxCopiesPerTarget },
			requests: []string{"copy sled-02 <- sled-00"},
			deferred: 1,
		},
		{
			// The others wait for the seed to finish and copy from it:
			// each byte leaves Nexus once, whatever MinSledReplication is.
			name: "Nexus seeds one sled and no more",
			input: func() Input {
				in := rack(5, 1)
				in.selfHolds(0)
				return in
			},
			requests: []string{"copy sled-00 <- nexus-self"},
			deferred: 4, nexusSends: 1,
		},
		{
			name: "Nexus seeds nothing that a sled holds or receives",
			input: func() Input {
				in := rack(5, 1)
				in.selfHolds(0)
				in.Limits.MaxCopiesPerSource = 1
				in.Sleds[0].Copies[0] = 2
				in.Sleds[1].InFlight = []InFlight{{Artifact: 0, Source: selfURL}}
				return in
			},
			// sled-00 serves one copy (its limit); the last two targets
			// wait for it or for sled-01's copy to finish.
			requests: []string{"copy sled-02 <- sled-00"},
			deferred: 2, nexusSends: 0,
		},
		{
			name: "Nexus stops at the run's send limit",
			input: func() Input {
				in := rack(5, 1)
				in.selfHolds(0)
				return in
			},
			setup:    func(p *planner) { p.nexusSends = p.lim.MaxNexusSends },
			requests: nil,
			deferred: 5, nexusSends: 8,
		},
		{
			name: "another Nexus seeds through its depot",
			input: func() Input {
				in := rack(2, 1)
				in.NexusCopies = []NexusCopy{{NexusID: otherID, URL: otherURL, Artifact: 0}}
				return in
			},
			requests:   []string{"copy sled-00 <- nexus-other"},
			deferred:   1,
			nexusSends: 1,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := counted(tc.input())
			if tc.setup != nil {
				tc.setup(p)
			}
			p.assign(tc.rank, 0)
			got := []string{}
			for _, r := range p.plan.Requests {
				src := name(r.Source)
				got = append(got, fmt.Sprintf("%s %s <- %s", r.Kind, name(sledURL(indexOf(p, r.Sled))), src))
			}
			want := tc.requests
			if want == nil {
				want = []string{}
			}
			equalSlices(t, "requests", got, want)
			equal(t, "deferred", p.plan.Deferred, tc.deferred)
			equal(t, "nexus sends", p.nexusSends, tc.nexusSends)
			equal(t, "unheld", len(p.plan.Unheld) == 1, tc.unheld)
			// Every request is charged to its target.
			for _, r := range p.plan.Requests {
				if i := indexOf(p, r.Sled); p.targetLoad[i] == 0 {
					t.Errorf("request to sled %d not charged to its target load", i)
				}
			}
		})
	}
}

func indexOf(p *planner, id uuid.UUID) int {
	return slices.IndexFunc(p.sleds, func(s Sled) bool { return s.ID == id })
}

func TestNewRequest(t *testing.T) {
	art := Artifact{SHA256: hashOf(0), Length: 10}
	id := sledID(3)
	for _, tc := range []struct {
		src  *source
		want Request
	}{
		{&source{url: selfURL, kind: "self"},
			Request{Kind: CopyFromDepot, Sled: id, Artifact: art, Source: selfURL, SourceKind: "nexus"}},
		{&source{url: otherURL, kind: "nexus"},
			Request{Kind: CopyFromDepot, Sled: id, Artifact: art, Source: otherURL, SourceKind: "nexus"}},
		{&source{url: sledURL(1), kind: "sled"},
			Request{Kind: CopyFromDepot, Sled: id, Artifact: art, Source: sledURL(1), SourceKind: "sled"}},
	} {
		t.Run(tc.src.kind, func(t *testing.T) {
			equal(t, "request", newRequest(id, art, tc.src), tc.want)
		})
	}
}

func TestDroppable(t *testing.T) {
	arts := artifacts(3)
	states := []ArtifactState{{Holders: 3}, {Holders: 2}, {Holders: 5}}
	for _, tc := range []struct {
		name     string
		local    []Hash
		minSleds int
		want     []Hash
	}{
		{"nothing local", nil, 3, nil},
		{"wanted and replicated enough", []Hash{hashOf(0), hashOf(2)}, 3, []Hash{hashOf(0), hashOf(2)}},
		{"wanted and under-replicated kept", []Hash{hashOf(1)}, 3, nil},
		{"unwanted always dropped, sorted", []Hash{hashOf(9), hashOf(1), hashOf(7)}, 3, []Hash{hashOf(7), hashOf(9)}},
		{"MinSledReplication 0 keeps every wanted copy", []Hash{hashOf(2), hashOf(8)}, 0, []Hash{hashOf(8)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			equalSlices(t, "droppable", droppable(arts, states, tc.local, tc.minSleds), tc.want)
		})
	}
}

func TestSourceHelpers(t *testing.T) {
	mk := func(loads ...int) []*source {
		var out []*source
		for i, l := range loads {
			out = append(out, &source{url: sledURL(i), kind: "sled", load: l, cap: 2})
		}
		return out
	}
	t.Run("pickSource", func(t *testing.T) {
		for _, tc := range []struct {
			loads   []int
			exclude int // index, -1 for none
			want    int // index, -1 for none
		}{
			{nil, -1, -1},
			{[]int{1, 0, 0}, -1, 1},
			{[]int{0, 0}, 0, 1},
			{[]int{2, 2}, -1, -1},
			{[]int{2, 1, 1}, -1, 1},
			{[]int{0}, 0, -1},
		} {
			cands := mk(tc.loads...)
			var exclude *source
			if tc.exclude >= 0 {
				exclude = cands[tc.exclude]
			}
			got, ok := pickSource(cands, exclude)
			idx := slices.Index(cands, got)
			if !ok {
				idx = -1
			}
			if idx != tc.want || ok != (tc.want >= 0) {
				t.Errorf("pickSource(loads %v, exclude %d) = %d, %v; want %d", tc.loads, tc.exclude, idx, ok, tc.want)
			}
		}
	})
	t.Run("anySpare", func(t *testing.T) {
		for _, tc := range []struct {
			loads []int
			want  bool
		}{{nil, false}, {[]int{2, 2}, false}, {[]int{2, 1}, true}} {
			equal(t, fmt.Sprint("anySpare", tc.loads), anySpare(mk(tc.loads...)), tc.want)
		}
	})
	t.Run("preferSelf", func(t *testing.T) {
		other := &source{url: otherURL, kind: "nexus"}
		self := &source{url: selfURL, kind: "self"}
		third := &source{url: "http://nexus-third", kind: "nexus"}
		for _, tc := range []struct {
			in, want []*source
		}{
			{nil, nil},
			{[]*source{other, third}, []*source{other, third}},
			{[]*source{other, self, third}, []*source{self, other, third}},
			{[]*source{self, other}, []*source{self, other}},
		} {
			in := slices.Clone(tc.in)
			got := preferSelf(in)
			equalSlices(t, "order", names(got), names(tc.want))
			equalSlices(t, "input untouched", names(in), names(tc.in))
		}
	})
}
