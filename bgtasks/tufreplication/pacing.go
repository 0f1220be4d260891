package tufreplication

import (
	"encoding/binary"
	"hash/fnv"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/internal/backoff"
)

// Pacing: the task never asks a failing sled again, nor re-sends a request
// that failed, sooner than a jittered back-off allows, and it follows up
// on copies in flight less and less often while nothing changes. Without
// it a sled answering 500 (or a copy that fails at once) is asked again on
// every follow-up, ten times a second.

// Defaults for Config's pacing.
const (
	// DefaultSledBackoff is the first wait before a sled whose request
	// failed is asked again; it doubles per failure in a row up to
	// DefaultPeriod.
	DefaultSledBackoff = 500 * time.Millisecond
	// DefaultFollowUpMax caps the follow-up delay while copies are in
	// flight but nothing has changed since the last run.
	DefaultFollowUpMax = 10 * time.Second
)

// pace is one back-off: a sled's, or one request's to one sled.
type pace struct {
	sched    *backoff.Schedule
	until    time.Time
	failures int
	last     string
}

type requestKey struct {
	sled uuid.UUID
	sha  Hash
}

// sledKey names a sled at an address: a sled that comes back elsewhere
// (a restart on another port) is a new party, not a failing one.
type sledKey struct {
	id      uuid.UUID
	address string
}

// pacer holds the task's back-offs across runs.
type pacer struct {
	now      func() time.Time
	rnd      *backoff.Rand
	sledPol  backoff.Policy
	followUp time.Duration

	mu       sync.Mutex
	sleds    map[sledKey]*pace
	requests map[requestKey]*pace
	// follow paces follow-ups while the collected state stays the same.
	follow    *backoff.Schedule
	lastPrint uint64
}

func newPacer(cfg Config) *pacer {
	rnd := backoff.NewRand(cfg.Rand)
	return &pacer{
		now:      cfg.Now,
		rnd:      rnd,
		sledPol:  backoff.Policy{Initial: cfg.SledBackoff, Max: cfg.SledBackoffMax, Jitter: 0.5},
		followUp: cfg.FollowUp,
		sleds:    map[sledKey]*pace{},
		requests: map[requestKey]*pace{},
		follow:   backoff.New(backoff.Policy{Initial: cfg.FollowUp, Max: cfg.FollowUpMax, Jitter: 0.5}, rnd),
	}
}

// failed records a failure in m[k] and returns the back-off it starts.
func failed[K comparable](p *pacer, m map[K]*pace, k K, err error) *pace {
	pc := m[k]
	if pc == nil {
		pc = &pace{sched: backoff.New(p.sledPol, p.rnd)}
		m[k] = pc
	}
	pc.failures++
	pc.last = err.Error()
	pc.until = p.now().Add(pc.sched.NextBackOff())
	return pc
}

// waiting returns m[k]'s back-off while it has not passed.
func waiting[K comparable](p *pacer, m map[K]*pace, k K) (pace, bool) {
	pc := m[k]
	if pc == nil || !p.now().Before(pc.until) {
		return pace{}, false
	}
	return *pc, true
}

// sledWaiting says whether sled is backing off (and until when).
func (p *pacer) sledWaiting(sled sledKey) (pace, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return waiting(p, p.sleds, sled)
}

func (p *pacer) sledFailed(sled sledKey, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	failed(p, p.sleds, sled, err)
}

func (p *pacer) sledOK(sled sledKey) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.sleds, sled)
}

// requestWaiting says whether the request for sha to sled is backing off.
func (p *pacer) requestWaiting(sled uuid.UUID, sha Hash) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, ok := waiting(p, p.requests, requestKey{sled, sha})
	return ok
}

func (p *pacer) requestFailed(sled uuid.UUID, sha Hash, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	failed(p, p.requests, requestKey{sled, sha}, err)
}

func (p *pacer) requestOK(sled uuid.UUID, sha Hash) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.requests, requestKey{sled, sha})
}

// forget drops back-offs that ended more than their ceiling ago, so
// requests for artifacts long gone do not pile up.
func (p *pacer) forget() {
	p.mu.Lock()
	defer p.mu.Unlock()
	old := p.now().Add(-p.sledPol.Max)
	for k, pc := range p.requests {
		if pc.until.Before(old) {
			delete(p.requests, k)
		}
	}
	for k, pc := range p.sleds {
		if pc.until.Before(old) {
			delete(p.sleds, k)
		}
	}
}

// nextFollowUp is how soon to look again while copies are in flight:
// FollowUp when what the run collected differs from the last run's
// (copies are finishing, each a new source), else a delay that doubles up
// to FollowUpMax, with jitter.
func (p *pacer) nextFollowUp(print uint64) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	if print != p.lastPrint {
		p.lastPrint = print
		p.follow.Reset()
		return p.followUp
	}
	return p.follow.NextBackOff()
}

// fingerprint summarises what a run collected (the generation, and every
// sled's reachability, holdings and copies in flight), so that two runs
// that saw the same rack can be told apart from runs between which
// something changed.
func fingerprint(in Input) uint64 {
	h := fnv.New64a()
	var b [8]byte
	put := func(v uint64) {
		binary.LittleEndian.PutUint64(b[:], v)
		h.Write(b[:])
	}
	put(uint64(in.Generation))
	put(uint64(len(in.Artifacts)))
	for _, s := range sortedSleds(in.Sleds) {
		h.Write(s.ID[:])
		reach := uint64(0)
		if s.Reachable {
			reach = 1
		}
		put(reach)
		put(uint64(s.Generation))
		put(uint64(s.M2Present))
		put(uint64(len(s.Copies)))
		h.Write(s.Copies)
		flights := slices.Clone(s.InFlight)
		slices.SortFunc(flights, func(a, b InFlight) int { return a.Artifact - b.Artifact })
		put(uint64(len(flights)))
		for _, f := range flights {
			put(uint64(f.Artifact))
			h.Write([]byte(f.Source))
		}
	}
	put(uint64(len(in.NexusCopies)))
	for _, c := range in.NexusCopies {
		h.Write(c.NexusID[:])
		put(uint64(c.Artifact))
	}
	return h.Sum64()
}
