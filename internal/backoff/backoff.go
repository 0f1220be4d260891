// Package backoff paces retries: delays that double from a first value up
// to a ceiling, with part of each delay drawn at random so that parties
// failing together (every sled when Nexus restarts, transactions that
// conflicted) do not retry together.
//
// The doubling and the ceiling come from github.com/cenkalti/backoff/v5.
// Its own jitter draws from the process-wide random source, which a test
// cannot replay, so the library runs here without randomisation and the
// jitter is drawn from a [Rand] the caller passes in. Callers keep their
// own loops and sleep on their injected clock; [Schedule] only says how
// long to wait.
package backoff

import (
	crand "crypto/rand"
	"math/rand/v2"
	"sync"
	"time"

	cbackoff "github.com/cenkalti/backoff/v5"
)

// Policy describes a schedule of delays.
type Policy struct {
	// Initial is the ceiling of the first delay; each further failure
	// doubles it. Zero means retrying at once.
	Initial time.Duration
	// Max is the ceiling no delay exceeds however long failures persist.
	// A Max below Initial caps every delay at Max.
	Max time.Duration
	// Jitter is the fraction of each delay left to chance: a delay whose
	// ceiling is c is uniform in [c·(1−Jitter), c]. 1 is "full jitter"
	// (anything from zero to c); 0.5 waits at least half the ceiling, so a
	// persistent failure is retried at most twice as often as the ceiling
	// alone would. Values outside [0, 1] are clamped.
	Jitter float64
}

// Schedule is one retry loop's sequence of delays. It is not safe for
// concurrent use; every loop starts its own (they may share a Rand).
type Schedule struct {
	exp    cbackoff.ExponentialBackOff
	max    time.Duration
	jitter float64
	rnd    *Rand
}

var _ cbackoff.BackOff = (*Schedule)(nil)

// New starts a schedule following p, drawing its jitter from rnd.
func New(p Policy, rnd *Rand) *Schedule {
	s := &Schedule{
		exp: cbackoff.ExponentialBackOff{
			InitialInterval: p.Initial,
			// The jitter is applied below, from rnd.
			RandomizationFactor: 0,
			Multiplier:          2,
			MaxInterval:         p.Max,
		},
		max:    p.Max,
		jitter: min(max(p.Jitter, 0), 1),
		rnd:    rnd,
	}
	s.exp.Reset()
	return s
}

// NextBackOff returns how long to wait after one more failure.
func (s *Schedule) NextBackOff() time.Duration {
	// The library caps the interval it grows, but returns a first interval
	// above MaxInterval as it is.
	c := min(s.exp.NextBackOff(), s.max)
	if c <= 0 || s.jitter == 0 {
		return max(c, 0)
	}
	span := uint64(c) // c ≤ MaxInt64, so span+1 cannot overflow
	if s.jitter < 1 {
		span = uint64(float64(c) * s.jitter)
	}
	return c - time.Duration(s.rnd.uint64N(span+1))
}

// Reset starts the schedule over, after a success or after progress.
func (s *Schedule) Reset() { s.exp.Reset() }

// Rand is a source of jitter that every retry loop of a process may share:
// draws are serialised. It is itself a rand.Source, so it can be handed on
// to packages that take one.
type Rand struct {
	mu sync.Mutex
	r  *rand.Rand
}

// NewRand wraps src (returned as is when it already is a *Rand). A nil src
// gets a generator seeded from the operating system, so that processes
// started at the same moment still draw different delays.
func NewRand(src rand.Source) *Rand {
	if r, ok := src.(*Rand); ok {
		return r
	}
	if src == nil {
		var seed [32]byte
		_, _ = crand.Read(seed[:]) // never fails (crypto/rand documents it)
		src = rand.NewChaCha8(seed)
	}
	return &Rand{r: rand.New(src)}
}

// Uint64 returns a uniformly random value (the rand.Source method).
func (r *Rand) Uint64() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.r.Uint64()
}

// uint64N returns a uniformly random value in [0, n); n must not be 0.
func (r *Rand) uint64N(n uint64) uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.r.Uint64N(n)
}
