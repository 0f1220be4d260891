package tufreplication

import (
	"bytes"
	"cmp"
	"fmt"
	"slices"

	"github.com/google/uuid"
)

// Hash is an artifact's SHA-256, lowercase hex.
type Hash string

// Artifact is one artifact sleds should hold.
type Artifact struct {
	SHA256 Hash
	Length int64
}

// Sled is what the collect phase learned about one in-service sled.
type Sled struct {
	ID uuid.UUID
	// DepotURL is the base URL of the sled's repo depot, used as the
	// source of copies to other sleds.
	DepotURL string
	// Reachable is false when the config put or the listing failed; such
	// a sled is neither a source nor a target in this run.
	Reachable bool
	// Generation is the artifact-config generation the sled reported.
	Generation int64
	// M2Present counts the sled's M.2 devices that are present; a sled
	// holds an artifact fully when it has this many verified copies.
	M2Present int
	// Copies holds, per artifact of Input.Artifacts (same index), how many
	// of the sled's M.2s hold a verified copy. It is a slice, not a map,
	// because the planner reads every (sled, artifact) pair and a rack has
	// thousands of both.
	Copies []uint8
	// InFlight lists copies the sled is running (or has queued) now.
	InFlight []InFlight
}

// InFlight is a copy a sled reported as queued or running.
type InFlight struct {
	// Artifact indexes Input.Artifacts.
	Artifact int
	// Source is the depot URL the sled is copying from.
	Source string
}

// NexusCopy says that a Nexus instance holds an artifact in its local
// depot.
type NexusCopy struct {
	NexusID uuid.UUID
	// URL is the base URL of that Nexus's internal API, which serves
	// /artifact/sha256/{sha256} like a sled's depot.
	URL string
	// Artifact indexes Input.Artifacts.
	Artifact int
}

// Limits bound what one run asks of the rack.
type Limits struct {
	// MinSledReplication is how many sleds must hold an artifact before
	// Nexus may drop its local copy. Nexus itself seeds an artifact to one
	// sled (only while no sled holds or receives it): every other copy
	// fans out from sleds, so each byte leaves Nexus once.
	MinSledReplication int
	// MaxCopiesPerSource bounds the copies one sled serves at once,
	// counting copies already in flight.
	MaxCopiesPerSource int
	// MaxCopiesPerTarget bounds the copies one sled receives at once.
	MaxCopiesPerTarget int
	// MaxNexusSends bounds the copies Nexus instances serve in one run,
	// and the copies each one serves at once (a Nexus is the scarce
	// source: everything it sends beyond the first few could have come
	// from a sled).
	MaxNexusSends int
	// MaxRequests bounds the requests of one run; the rest wait for the
	// next run (reported as Deferred).
	MaxRequests int
}

// Input is everything the planner decides from.
type Input struct {
	// Generation is the wanted set's generation, read from the database
	// in the same snapshot as Artifacts.
	Generation int64
	// Artifacts is the wanted set, sorted by SHA256.
	Artifacts []Artifact
	// Sleds are the in-service sleds, in any order.
	Sleds []Sled
	// Self is the Nexus running the plan; its own depot is the first
	// choice among Nexus sources (it costs no other Nexus anything).
	Self uuid.UUID
	// NexusCopies lists every Nexus's local copies of wanted artifacts.
	NexusCopies []NexusCopy
	// SelfLocal lists every artifact this Nexus holds locally, wanted or
	// not (a pruned repo's artifacts are dropped too).
	SelfLocal []Hash
	Limits    Limits
}

// RequestKind is what a request asks a sled to do.
type RequestKind string

// CopyFromDepot asks the sled to fetch the artifact from another sled's
// depot or a Nexus's (POST /artifacts/{sha256}/copy-from-depot). The copy
// runs after the reply, so seeding from this Nexus does not hold the run
// (or its connection) for as long as the artifact takes to send.
const CopyFromDepot RequestKind = "copy"

// Request is one call the execute phase makes to a sled.
type Request struct {
	Kind     RequestKind
	Sled     uuid.UUID
	Artifact Artifact
	// Source is the depot URL to copy from (CopyFromDepot only).
	Source string
	// SourceKind says what Source is: "sled" or "nexus".
	SourceKind string
}

// ArtifactState summarises one artifact across the rack.
type ArtifactState struct {
	Artifact Artifact
	// Holders counts reachable sleds with at least one verified copy.
	Holders int
	// FullHolders counts reachable sleds with a copy on every present M.2.
	FullHolders int
	// InFlight counts copies of it running now.
	InFlight int
	// NexusHolders counts Nexus instances holding it locally.
	NexusHolders int
}

// Plan is what one run should do.
type Plan struct {
	// Stop, when set, says why the run must stop before doing anything:
	// a sled holds a newer generation, so this Nexus's view is stale.
	Stop string
	// Requests to send, at most Limits.MaxRequests.
	Requests []Request
	// Deferred counts copies that are needed but wait for a later run
	// (limits reached, or no source with spare capacity yet).
	Deferred int
	// Artifacts summarises every wanted artifact, in Input order.
	Artifacts []ArtifactState
	// Unheld lists wanted artifacts that no reachable sled and no Nexus
	// holds: their repos are degraded.
	Unheld []Hash
	// DropLocal lists this Nexus's local copies that are safe to delete:
	// unwanted, or held by at least MinSledReplication sleds.
	DropLocal []Hash
}

// source is a place copies can come from, with its load this run.
type source struct {
	url  string
	kind string // "sled", "self" or "nexus"
	id   uuid.UUID
	load int
	cap  int // copies it may serve at once
}

// Compute plans one run. It is a pure function of its input: the same input
// gives the same plan, so plans can be golden-tested.
//
// For each wanted artifact, rarest first: sleds that lack it (or lack it on
// one of their M.2s) get a copy from the least-loaded sled that holds it;
// only when no sled holds it or is receiving it does a Nexus send it, to
// one sled (which copies it from the Nexus's depot, this one's first).
// Every finished copy adds a source, so the number of sources grows with
// each run: a tree, not a star, whose root is the one seed.
//
// The phases run in this order, each over the state the ones before it
// left in a planner: stop on a stale view, register sources, count what is
// in flight, count holdings and needs, then hand out copies artifact by
// artifact, and last decide which local copies may go.
func Compute(in Input) Plan {
	sleds := sortedSleds(in.Sleds)
	if stop := staleView(sleds, in.Generation); stop != "" {
		return Plan{Stop: stop}
	}
	p := newPlanner(in, sleds)
	p.addSources()
	p.countInFlight()
	p.countHoldings()
	for rank, a := range rarestFirst(p.plan.Artifacts) {
		p.assign(rank, a)
	}
	slices.Sort(p.plan.Unheld)
	p.plan.DropLocal = droppable(in.Artifacts, p.plan.Artifacts, in.SelfLocal, in.Limits.MinSledReplication)
	return p.plan
}

// sortedSleds returns a copy of sleds ordered by ID, the order every phase
// walks them in, so that a plan does not depend on the collect phase's
// order.
func sortedSleds(sleds []Sled) []Sled {
	out := slices.Clone(sleds)
	// Byte order of the IDs is the order of their canonical strings
	// (fixed-width lowercase hex, dashes at fixed places) without
	// formatting two strings per comparison.
	slices.SortFunc(out, func(a, b Sled) int { return bytes.Compare(a.ID[:], b.ID[:]) })
	return out
}

// staleView says why the run must stop when a reachable sled holds a newer
// artifact generation than gen (the first such sled in sleds' order), and
// returns "" when none does.
func staleView(sleds []Sled, gen int64) string {
	for _, s := range sleds {
		if s.Reachable && s.Generation > gen {
			return fmt.Sprintf("sled %s holds artifact generation %d, newer than this Nexus's %d: its view is stale",
				s.ID, s.Generation, gen)
		}
	}
	return ""
}

// planner is one Compute call's working state. Per-sled slices follow
// sleds; per-artifact slices follow Input.Artifacts.
type planner struct {
	in    Input
	lim   Limits
	sleds []Sled
	// usable marks sleds that are reachable and at the wanted generation:
	// only those are sources or targets (requests carry the generation
	// and would be refused otherwise).
	usable []bool
	plan   Plan

	// sources holds every place copies can come from, by URL, so that a
	// copy in flight is charged to its source whatever that is.
	sources map[string]*source
	// sledSource is each usable sled's own depot (nil for the others).
	sledSource []*source
	// nexusHolders lists, per artifact, the Nexus instances holding it.
	nexusHolders [][]*source
	// receiving marks, per artifact, the sleds with a copy of it in flight.
	receiving []map[int]bool
	// targetLoad counts, per sled, the copies it receives at once.
	targetLoad []int
	// needs counts, per artifact, the usable sleds that lack a copy on
	// some M.2 and are not receiving one.
	needs []int
	// nexusSends counts the copies Nexus instances serve in this plan.
	nexusSends int
	// holders is assign's scratch list of an artifact's sled sources.
	holders []*source
}

// newPlanner starts a plan of in over sleds (in.Sleds in sortedSleds'
// order): one state per wanted artifact, nothing counted yet.
func newPlanner(in Input, sleds []Sled) *planner {
	n := len(in.Artifacts)
	p := &planner{
		in:           in,
		lim:          in.Limits,
		sleds:        sleds,
		usable:       make([]bool, len(sleds)),
		sources:      map[string]*source{},
		sledSource:   make([]*source, len(sleds)),
		nexusHolders: make([][]*source, n),
		receiving:    make([]map[int]bool, n),
		targetLoad:   make([]int, len(sleds)),
		needs:        make([]int, n),
	}
	for i := range sleds {
		p.usable[i] = sleds[i].Reachable && sleds[i].Generation == in.Generation
	}
	p.plan.Artifacts = make([]ArtifactState, n)
	for i, a := range in.Artifacts {
		p.plan.Artifacts[i].Artifact = a
	}
	return p
}

// addSource registers s, or returns the source already registered at its
// URL (a depot is one source however many things point at it).
func (p *planner) addSource(s *source) *source {
	if old, ok := p.sources[s.url]; ok {
		return old
	}
	p.sources[s.url] = s
	return s
}

// addSources registers every usable sled's depot and every Nexus holding
// a wanted artifact, and counts each artifact's Nexus holders. Copies of
// artifacts outside the wanted set are ignored.
func (p *planner) addSources() {
	for i := range p.sleds {
		if p.usable[i] {
			p.sledSource[i] = p.addSource(&source{url: p.sleds[i].DepotURL, kind: "sled", id: p.sleds[i].ID,
				cap: p.lim.MaxCopiesPerSource})
		}
	}
	n := len(p.in.Artifacts)
	for _, c := range p.in.NexusCopies {
		if c.Artifact < 0 || c.Artifact >= n {
			continue
		}
		kind := "nexus"
		if c.NexusID == p.in.Self {
			kind = "self"
		}
		src := p.addSource(&source{url: c.URL, kind: kind, id: c.NexusID, cap: p.lim.MaxNexusSends})
		p.nexusHolders[c.Artifact] = append(p.nexusHolders[c.Artifact], src)
		p.plan.Artifacts[c.Artifact].NexusHolders++
	}
}

// countInFlight records the copies usable sleds are running: who receives
// each artifact, each artifact's InFlight count, and the load they put on
// their targets and on their sources (when the source is one this plan
// knows).
func (p *planner) countInFlight() {
	n := len(p.in.Artifacts)
	for i := range p.sleds {
		if !p.usable[i] {
			continue
		}
		for _, f := range p.sleds[i].InFlight {
			if f.Artifact < 0 || f.Artifact >= n {
				continue
			}
			if p.receiving[f.Artifact] == nil {
				p.receiving[f.Artifact] = map[int]bool{}
			}
			p.receiving[f.Artifact][i] = true
			p.plan.Artifacts[f.Artifact].InFlight++
			p.targetLoad[i]++
			if src, ok := p.sources[f.Source]; ok {
				src.load++
			}
		}
	}
}

// holds is how many of s's M.2s hold a verified copy of artifact a.
func holds(s *Sled, a int) int {
	if a < len(s.Copies) {
		return int(s.Copies[a])
	}
	return 0
}

// countHoldings counts each artifact's holders and full holders among the
// usable sleds, and the sleds that need a copy of it: usable sleds with an
// M.2 present that lack it on some M.2 and are not already receiving it.
//
// This is the one pass over every (sled, artifact) pair; everything after
// it touches only artifacts that need something, so a rack where all is
// in place costs little more than this loop. It works on local slices so
// the inner loop keeps them in registers.
func (p *planner) countHoldings() {
	states, needs := p.plan.Artifacts, p.needs
	n := len(states)
	for i := range p.sleds {
		s := &p.sleds[i]
		if !p.usable[i] {
			continue
		}
		copies := s.Copies
		if len(copies) > n {
			copies = copies[:n]
		}
		for a, c := range copies {
			switch {
			case c == 0:
			case int(c) >= s.M2Present:
				states[a].Holders++
				states[a].FullHolders++
				continue
			default:
				states[a].Holders++
			}
			if s.M2Present > 0 {
				needs[a]++
			}
		}
		if s.M2Present > 0 {
			// Artifacts beyond a short Copies slice are held by nobody here.
			for a := len(copies); a < n; a++ {
				needs[a]++
			}
		}
	}
	for a, rs := range p.receiving {
		for i := range rs {
			if s := &p.sleds[i]; s.M2Present > 0 && holds(s, a) < s.M2Present {
				needs[a]--
			}
		}
	}
}

// rarestFirst returns the artifacts' indexes ordered by holders plus copies
// in flight, fewest first, ties in input order: under limits the artifacts
// closest to being lost spread first.
func rarestFirst(states []ArtifactState) []int {
	order := make([]int, len(states))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(x, y int) int {
		return cmp.Compare(states[x].Holders+states[x].InFlight, states[y].Holders+states[y].InFlight)
	})
	return order
}

// lacks reports whether sled i is a target for artifact a: usable, with an
// M.2 present that lacks a copy, and not already receiving one.
func (p *planner) lacks(i, a int) bool {
	s := &p.sleds[i]
	return p.usable[i] && s.M2Present > 0 && holds(s, a) < s.M2Present && !p.receiving[a][i]
}

// sledHolders lists the sources of the usable sleds holding a copy of a,
// in sleds' order. The list is scratch space, valid until the next call.
func (p *planner) sledHolders(a int) []*source {
	p.holders = p.holders[:0]
	for i := range p.sleds {
		if p.sledSource[i] != nil && holds(&p.sleds[i], a) > 0 {
			p.holders = append(p.holders, p.sledSource[i])
		}
	}
	return p.holders
}

// assign hands out copies of artifact a, the rank-th in rarestFirst order,
// to the sleds that need it, within the run's limits; what it cannot hand
// out is counted as Deferred. An artifact nobody holds or receives is
// reported Unheld instead.
func (p *planner) assign(rank, a int) {
	st := &p.plan.Artifacts[a]
	if st.Holders == 0 && st.NexusHolders == 0 && st.InFlight == 0 {
		p.plan.Unheld = append(p.plan.Unheld, st.Artifact.SHA256)
		return
	}
	if p.needs[a] == 0 {
		return
	}
	if len(p.plan.Requests) >= p.lim.MaxRequests {
		p.plan.Deferred += p.needs[a]
		return
	}
	holders := p.sledHolders(a)
	// Nexus seeds one sled, and only an artifact no sled has or receives:
	// the rest of the rack copies from sleds.
	nexusBudget := 1 - st.Holders - st.InFlight
	// Start each artifact's targets at a different sled, so that seeds
	// (and so the next run's sources) spread over the rack.
	offset := rank * max(p.lim.MinSledReplication, 1)
	remaining := p.needs[a]
	for k := 0; k < len(p.sleds) && remaining > 0; k++ {
		i := (k + offset) % len(p.sleds)
		if !p.lacks(i, a) {
			continue
		}
		remaining--
		if len(p.plan.Requests) >= p.lim.MaxRequests || p.targetLoad[i] >= p.lim.MaxCopiesPerTarget {
			p.plan.Deferred++
			continue
		}
		nexusOK := nexusBudget > 0 && p.nexusSends < p.lim.MaxNexusSends
		src, fromNexus := p.chooseSource(i, a, holders, nexusOK)
		if src == nil {
			p.plan.Deferred++
			if !nexusOK && !anySpare(holders) {
				// Nothing can serve this artifact any more this run: the
				// other sleds that need it wait too.
				p.plan.Deferred += remaining
				return
			}
			continue
		}
		if fromNexus {
			nexusBudget--
			p.nexusSends++
		}
		src.load++
		p.targetLoad[i]++
		p.plan.Requests = append(p.plan.Requests, newRequest(p.sleds[i].ID, st.Artifact, src))
	}
}

// chooseSource picks where sled i gets artifact a from: its own depot when
// one of its M.2s already holds it (refilling the other), else the
// least-loaded other sled in holders, else, when nexusOK, a Nexus holding
// it, this one first. It returns nil when every candidate is at capacity;
// fromNexus says the source is a Nexus (charged to the Nexus budgets).
func (p *planner) chooseSource(i, a int, holders []*source, nexusOK bool) (src *source, fromNexus bool) {
	own := p.sledSource[i]
	if holds(&p.sleds[i], a) > 0 && own.load < own.cap {
		return own, false
	}
	if src, ok := pickSource(holders, own); ok {
		return src, false
	}
	if nexusOK {
		if src, ok := pickSource(preferSelf(p.nexusHolders[a]), nil); ok {
			return src, true
		}
	}
	return nil, false
}

// newRequest is the request giving art to sled from src: a copy from src's
// depot, whether src is a sled or a Nexus (this one or another).
func newRequest(sled uuid.UUID, art Artifact, src *source) Request {
	kind := src.kind
	if kind == "self" {
		kind = "nexus"
	}
	return Request{Kind: CopyFromDepot, Sled: sled, Artifact: art, Source: src.url, SourceKind: kind}
}

// droppable lists, sorted, the local copies (local) this Nexus may delete:
// those not in the wanted set (artifacts), and wanted ones at least minSleds
// sleds hold (states, per artifact). minSleds 0 keeps every wanted copy.
func droppable(artifacts []Artifact, states []ArtifactState, local []Hash, minSleds int) []Hash {
	wanted := make(map[Hash]int, len(artifacts))
	for i, a := range artifacts {
		wanted[a.SHA256] = i
	}
	var out []Hash
	for _, h := range local {
		a, ok := wanted[h]
		if !ok || (minSleds > 0 && states[a].Holders >= minSleds) {
			out = append(out, h)
		}
	}
	slices.Sort(out)
	return out
}

// pickSource returns the least-loaded source with spare capacity, other
// than exclude; ties go to the earliest candidate.
func pickSource(cands []*source, exclude *source) (*source, bool) {
	var best *source
	for _, s := range cands {
		if s == exclude || s.load >= s.cap {
			continue
		}
		if best == nil || s.load < best.load {
			best = s
		}
	}
	return best, best != nil
}

// anySpare reports whether any source still has capacity.
func anySpare(cands []*source) bool {
	for _, s := range cands {
		if s.load < s.cap {
			return true
		}
	}
	return false
}

// preferSelf puts this Nexus's own copy first: serving it costs no other
// Nexus anything.
func preferSelf(cands []*source) []*source {
	for i, s := range cands {
		if s.kind == "self" {
			out := append([]*source{s}, cands[:i]...)
			return append(out, cands[i+1:]...)
		}
	}
	return cands
}
