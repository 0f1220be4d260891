package backoff_test

import (
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/rackplane/rackplane/internal/backoff"
)

// ceiling is the test's own statement of the schedule: Initial doubled
// per failure after the first, capped at Max.
func ceiling(p backoff.Policy, n int) time.Duration {
	c := p.Initial
	for i := 1; i < n && c < p.Max; i++ {
		c *= 2
	}
	return min(c, p.Max)
}

func draw(b *backoff.Schedule, n int) []time.Duration {
	out := make([]time.Duration, n)
	for i := range out {
		out[i] = b.NextBackOff()
	}
	return out
}

func seeded(a, b uint64) *backoff.Rand { return backoff.NewRand(rand.NewPCG(a, b)) }

// Without jitter the schedule is exactly the doubling to the ceiling: it
// reaches the ceiling no sooner than doubling allows and stays there.
func TestScheduleDoublesToTheCeiling(t *testing.T) {
	p := backoff.Policy{Initial: 250 * time.Millisecond, Max: 10 * time.Second}
	got := draw(backoff.New(p, seeded(1, 1)), 9)
	want := []time.Duration{250 * time.Millisecond, 500 * time.Millisecond, time.Second, 2 * time.Second,
		4 * time.Second, 8 * time.Second, 10 * time.Second, 10 * time.Second, 10 * time.Second}
	if !slices.Equal(got, want) {
		t.Fatalf("schedule %v, want %v", got, want)
	}
	capped := draw(backoff.New(backoff.Policy{Initial: 8 * time.Second, Max: 5 * time.Second}, seeded(1, 1)), 3)
	if !slices.Equal(capped, []time.Duration{5 * time.Second, 5 * time.Second, 5 * time.Second}) {
		t.Fatalf("a first delay above Max must be capped too: %v", capped)
	}
}

// Every delay lies in [c·(1−Jitter), c] for its ceiling c, for full,
// half and no jitter, and the jitter really varies the delays.
func TestJitteredDelaysStayWithinBounds(t *testing.T) {
	for _, jitter := range []float64{1, 0.5, 0.2, 0} {
		p := backoff.Policy{Initial: 10 * time.Millisecond, Max: 80 * time.Millisecond, Jitter: jitter}
		seen := map[time.Duration]bool{}
		for seed := range uint64(50) {
			b := backoff.New(p, seeded(seed, 7))
			for n := 1; n <= 40; n++ {
				d := b.NextBackOff()
				c := ceiling(p, n)
				lo := c - time.Duration(float64(c)*jitter)
				if d < lo || d > c {
					t.Fatalf("jitter %.1f, failure %d: delay %s outside [%s, %s]", jitter, n, d, lo, c)
				}
				seen[d] = true
			}
		}
		switch {
		case jitter == 0 && len(seen) != 4: // 10, 20, 40, 80 ms
			t.Fatalf("no jitter, yet %d distinct delays", len(seen))
		case jitter > 0 && len(seen) < 1000:
			t.Fatalf("jitter %.1f: only %d distinct delays in 2000", jitter, len(seen))
		}
	}
}

// A failure that persists settles at the ceiling: once doubling has
// reached it, every delay is in the jitter band just under it, never
// above and never back at the short early delays.
func TestPersistentFailureSettlesAtTheCeiling(t *testing.T) {
	p := backoff.Policy{Initial: 250 * time.Millisecond, Max: 10 * time.Second, Jitter: 0.5}
	b := backoff.New(p, seeded(3, 4))
	delays := draw(b, 200)
	var total time.Duration
	for i, d := range delays[6:] { // 250 ms · 2^6 > 10 s: the ceiling from the 7th on
		if d < p.Max/2 || d > p.Max {
			t.Fatalf("delay %d is %s, want within [%s, %s]", i+7, d, p.Max/2, p.Max)
		}
		total += d
	}
	// Half-jittered delays average three quarters of the ceiling.
	if mean := total / time.Duration(len(delays)-6); mean < 7*time.Second || mean > 8*time.Second {
		t.Fatalf("mean delay at the ceiling %s, want about 7.5 s", mean)
	}
	b.Reset()
	if d := b.NextBackOff(); d < p.Initial/2 || d > p.Initial {
		t.Fatalf("after Reset the first delay is %s, want within [%s, %s]", d, p.Initial/2, p.Initial)
	}
}

// Two parties with their own sources retry on different schedules; the
// same seed replays the same schedule.
func TestSchedulesDifferBetweenSources(t *testing.T) {
	p := backoff.Policy{Initial: 250 * time.Millisecond, Max: 10 * time.Second, Jitter: 0.5}
	a := draw(backoff.New(p, seeded(1, 2)), 20)
	b := draw(backoff.New(p, seeded(5, 6)), 20)
	same := 0
	for i := range a {
		if a[i] == b[i] {
			same++
		}
	}
	if same > 0 {
		t.Fatalf("%d of 20 delays identical across sources: %v vs %v", same, a, b)
	}
	if again := draw(backoff.New(p, seeded(1, 2)), 20); !slices.Equal(a, again) {
		t.Fatalf("the same seed gave %v, then %v", a, again)
	}
	// Unseeded sources come from the operating system: they differ too.
	if x, y := draw(backoff.New(p, backoff.NewRand(nil)), 20), draw(backoff.New(p, backoff.NewRand(nil)), 20); slices.Equal(x, y) {
		t.Fatalf("two unseeded sources drew the same schedule %v", x)
	}
}

// One Rand serves many loops at once (run with -race).
func TestSharedRandIsSafeForConcurrentUse(t *testing.T) {
	rnd := seeded(9, 9)
	if backoff.NewRand(rnd) != rnd {
		t.Fatal("wrapping a Rand again must return it, so loops share one lock")
	}
	p := backoff.Policy{Initial: time.Millisecond, Max: time.Second, Jitter: 1}
	var wg sync.WaitGroup
	errs := make(chan time.Duration, 8)
	for range 8 {
		wg.Go(func() {
			b := backoff.New(p, rnd)
			for n := 1; n <= 500; n++ {
				if d := b.NextBackOff(); d < 0 || d > ceiling(p, n) {
					errs <- d
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for d := range errs {
		t.Errorf("delay %s out of bounds", d)
	}
}

func TestJitterOutsideTheUnitIntervalIsClamped(t *testing.T) {
	p := backoff.Policy{Initial: time.Second, Max: time.Second, Jitter: 3}
	for _, d := range draw(backoff.New(p, seeded(1, 1)), 100) {
		if d < 0 || d > time.Second {
			t.Fatalf("jitter 3 gave %s, want within [0, 1s]", d)
		}
	}
	p.Jitter = -1
	if got := draw(backoff.New(p, seeded(1, 1)), 3); !slices.Equal(got, []time.Duration{time.Second, time.Second, time.Second}) {
		t.Fatalf("negative jitter gave %v, want no jitter", got)
	}
}
