package tufreplication

import (
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
	// Nexus may drop its local copy, and also how many sleds Nexus seeds
	// an artifact to itself: everything beyond that fans out from sleds.
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
	// Self is the Nexus running the plan; its local copies can be PUT
	// straight from disk.
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

const (
	// PutFromNexus streams the artifact from this Nexus's local depot to
	// the sled (PUT /artifacts/{sha256}).
	PutFromNexus RequestKind = "put"
	// CopyFromDepot asks the sled to fetch the artifact from another
	// sled's depot or another Nexus (POST /artifacts/{sha256}/copy-from-depot).
	CopyFromDepot RequestKind = "copy"
)

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
// only when fewer than MinSledReplication sleds hold or are receiving it
// does Nexus send it itself (PUT from this Nexus, or a copy from another
// Nexus's depot). Every finished copy adds a source, so the number of
// sources grows with each run: a tree, not a star.
func Compute(in Input) Plan {
	lim := in.Limits
	var plan Plan

	sleds := slices.Clone(in.Sleds)
	slices.SortFunc(sleds, func(a, b Sled) int { return cmp.Compare(a.ID.String(), b.ID.String()) })
	for _, s := range sleds {
		if s.Reachable && s.Generation > in.Generation {
			plan.Stop = fmt.Sprintf("sled %s holds artifact generation %d, newer than this Nexus's %d: its view is stale",
				s.ID, s.Generation, in.Generation)
			return plan
		}
	}
	// A sled is usable this run when it is reachable and at our
	// generation (requests carry the generation and would be refused
	// otherwise).
	usable := func(s *Sled) bool { return s.Reachable && s.Generation == in.Generation }

	n := len(in.Artifacts)
	plan.Artifacts = make([]ArtifactState, n)
	for i, a := range in.Artifacts {
		plan.Artifacts[i].Artifact = a
	}

	// Sources: every usable sled's depot and every Nexus holding copies.
	sources := map[string]*source{}
	addSource := func(s *source) *source {
		if old, ok := sources[s.url]; ok {
			return old
		}
		sources[s.url] = s
		return s
	}
	sledSource := make([]*source, len(sleds))
	for i := range sleds {
		if usable(&sleds[i]) {
			sledSource[i] = addSource(&source{url: sleds[i].DepotURL, kind: "sled", id: sleds[i].ID,
				cap: lim.MaxCopiesPerSource})
		}
	}
	nexusHolders := make([][]*source, n)
	for _, c := range in.NexusCopies {
		if c.Artifact < 0 || c.Artifact >= n {
			continue
		}
		kind := "nexus"
		if c.NexusID == in.Self {
			kind = "self"
		}
		src := addSource(&source{url: c.URL, kind: kind, id: c.NexusID, cap: lim.MaxNexusSends})
		nexusHolders[c.Artifact] = append(nexusHolders[c.Artifact], src)
		plan.Artifacts[c.Artifact].NexusHolders++
	}

	// What is in flight: receivers per artifact, load per source and per
	// target.
	receiving := make([]map[int]bool, n)
	targetLoad := make([]int, len(sleds))
	for i := range sleds {
		if !usable(&sleds[i]) {
			continue
		}
		for _, f := range sleds[i].InFlight {
			if f.Artifact < 0 || f.Artifact >= n {
				continue
			}
			if receiving[f.Artifact] == nil {
				receiving[f.Artifact] = map[int]bool{}
			}
			receiving[f.Artifact][i] = true
			plan.Artifacts[f.Artifact].InFlight++
			targetLoad[i]++
			if src, ok := sources[f.Source]; ok {
				src.load++
			}
		}
	}

	// Count holders and, per artifact, the sleds that need a copy. This is
	// the one pass over every (sled, artifact) pair; everything after it
	// touches only artifacts that need something, so a rack where all is
	// in place costs little more than this loop.
	holds := func(s *Sled, a int) int {
		if a < len(s.Copies) {
			return int(s.Copies[a])
		}
		return 0
	}
	needs := make([]int, n)
	for i := range sleds {
		s := &sleds[i]
		if !usable(s) {
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
				plan.Artifacts[a].Holders++
				plan.Artifacts[a].FullHolders++
				continue
			default:
				plan.Artifacts[a].Holders++
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
	for a, rs := range receiving {
		for i := range rs {
			if s := &sleds[i]; s.M2Present > 0 && holds(s, a) < s.M2Present {
				needs[a]--
			}
		}
	}

	// Rarest first, so that under limits the artifacts closest to being
	// lost spread first.
	order := make([]int, n)
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(x, y int) int {
		return cmp.Compare(plan.Artifacts[x].Holders+plan.Artifacts[x].InFlight,
			plan.Artifacts[y].Holders+plan.Artifacts[y].InFlight)
	})

	nexusSends := 0
	var holders []*source
	for rank, a := range order {
		st := &plan.Artifacts[a]
		art := in.Artifacts[a]
		if st.Holders == 0 && st.NexusHolders == 0 && st.InFlight == 0 {
			plan.Unheld = append(plan.Unheld, art.SHA256)
			continue
		}
		if needs[a] == 0 {
			continue
		}
		if len(plan.Requests) >= lim.MaxRequests {
			plan.Deferred += needs[a]
			continue
		}
		holders = holders[:0]
		for i := range sleds {
			if sledSource[i] != nil && holds(&sleds[i], a) > 0 {
				holders = append(holders, sledSource[i])
			}
		}
		// Nexus seeds only what sleds do not already have or receive.
		nexusBudget := lim.MinSledReplication - st.Holders - st.InFlight
		// Start each artifact's targets at a different sled, so that
		// seeds (and so the next run's sources) spread over the rack.
		offset := rank * max(lim.MinSledReplication, 1)
		remaining := needs[a]
		for k := 0; k < len(sleds) && remaining > 0; k++ {
			i := (k + offset) % len(sleds)
			s := &sleds[i]
			if !usable(s) || s.M2Present == 0 || holds(s, a) >= s.M2Present || receiving[a][i] {
				continue
			}
			remaining--
			if len(plan.Requests) >= lim.MaxRequests || targetLoad[i] >= lim.MaxCopiesPerTarget {
				plan.Deferred++
				continue
			}
			var req *source
			ok := false
			if holds(s, a) > 0 && sledSource[i].load < sledSource[i].cap {
				// One M.2 lacks it: refill from the sled's own copy.
				req, ok = sledSource[i], true
			}
			if !ok {
				req, ok = pickSource(holders, sledSource[i])
			}
			nexusOK := nexusBudget > 0 && nexusSends < lim.MaxNexusSends
			if !ok && nexusOK {
				// No sled can serve it yet: Nexus seeds it, preferring
				// its own disk.
				req, ok = pickSource(preferSelf(nexusHolders[a]), nil)
				if ok {
					nexusBudget--
					nexusSends++
				}
			}
			if !ok {
				plan.Deferred++
				if !nexusOK && !anySpare(holders) {
					// Nothing can serve this artifact any more this run:
					// the other sleds that need it wait too.
					plan.Deferred += remaining
					break
				}
				continue
			}
			req.load++
			targetLoad[i]++
			r := Request{Kind: CopyFromDepot, Sled: s.ID, Artifact: art, Source: req.url, SourceKind: req.kind}
			if req.kind == "self" {
				r = Request{Kind: PutFromNexus, Sled: s.ID, Artifact: art, SourceKind: "nexus"}
			} else if req.kind == "nexus" {
				r.SourceKind = "nexus"
			}
			plan.Requests = append(plan.Requests, r)
		}
	}
	slices.Sort(plan.Unheld)

	// Local copies this Nexus may drop.
	wanted := make(map[Hash]int, n)
	for i, a := range in.Artifacts {
		wanted[a.SHA256] = i
	}
	for _, h := range in.SelfLocal {
		a, ok := wanted[h]
		if !ok || (lim.MinSledReplication > 0 && plan.Artifacts[a].Holders >= lim.MinSledReplication) {
			plan.DropLocal = append(plan.DropLocal, h)
		}
	}
	slices.Sort(plan.DropLocal)
	return plan
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

// preferSelf puts this Nexus's own copy first: a PUT from local disk
// costs no other Nexus anything.
func preferSelf(cands []*source) []*source {
	for i, s := range cands {
		if s.kind == "self" {
			out := append([]*source{s}, cands[:i]...)
			return append(out, cands[i+1:]...)
		}
	}
	return cands
}
