package sledagent_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rackplane/rackplane/internal/clock"
	"github.com/rackplane/rackplane/internal/sledtest"
	"github.com/rackplane/rackplane/sledagent"
)

// startSledWithNexusDown starts a sled whose Nexus address refuses every
// connection, on a fake clock. It has no M.2s, so no device change
// triggers an early registration, and everything on the clock but the
// registration loop waits a day.
func startSledWithNexusDown(t *testing.T, seed uint64, cfg sledagent.Config) (*sledtest.Sled, *clock.Fake) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	fake := clock.NewFake(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	cfg.Clock, cfg.Rand = fake, rand.NewPCG(seed, seed)
	cfg.M2Dirs, cfg.M2PollInterval, cfg.ArtifactReconcileInterval, cfg.ScrubInterval = []string{}, 24*time.Hour, 24*time.Hour, -1
	return sledtest.StartSled(t, "https://"+addr, cfg), fake
}

// registrationWaits lets n registration attempts fail and returns how long
// the sled chose to wait after each, read from the retry timer it armed.
func registrationWaits(t *testing.T, sled *sledtest.Sled, fake *clock.Fake, n int) []time.Duration {
	t.Helper()
	var waits []time.Duration
	for len(waits) < n {
		var wait time.Duration
		sledtest.WaitFor(t, 10*time.Second, fmt.Sprintf("failed attempt %d and its retry timer", len(waits)+1), func() error {
			now := fake.Now()
			if st := sled.Registration(); !st.LastAttempt.Equal(now) || st.LastError == "" {
				return fmt.Errorf("last attempt %s (error %q), clock at %s", st.LastAttempt, st.LastError, now)
			}
			// A retry waits at most 10 s; everything else on the clock
			// is due a day after the start, hours away even after every
			// retry this test lets happen.
			next, ok := fake.NextDeadline()
			if !ok || !next.After(now) || next.Sub(now) > time.Minute {
				return errors.New("no retry armed yet")
			}
			wait = next.Sub(now)
			return nil
		})
		waits = append(waits, wait)
		fake.Advance(wait)
	}
	return waits
}

// Two sleds whose Nexus is down retry on jittered schedules that differ;
// every wait is at least half of a ceiling that doubles from 250 ms to
// 10 s, so a failure that persists is retried every 5–10 s, no faster.
func TestRegistrationRetriesAreJitteredAndBackOffToTheCeiling(t *testing.T) {
	t.Parallel()
	const attempts = 12
	var schedules [2][]time.Duration
	for i := range schedules {
		sled, fake := startSledWithNexusDown(t, uint64(i+1), sledagent.Config{})
		waits := registrationWaits(t, sled, fake, attempts)
		for n, d := range waits {
			ceiling := min(250*time.Millisecond<<n, 10*time.Second)
			if d < ceiling/2 || d > ceiling {
				t.Fatalf("sled %d, wait %d is %s, want within [%s, %s] (all: %v)", i, n+1, d, ceiling/2, ceiling, waits)
			}
		}
		for n, d := range waits[6:] { // 250 ms · 2^6 is past the 10 s ceiling
			if d < 5*time.Second {
				t.Fatalf("sled %d, wait %d at the ceiling is only %s", i, n+7, d)
			}
		}
		schedules[i] = waits
	}
	if slices.Equal(schedules[0], schedules[1]) {
		t.Fatalf("both sleds retried on the schedule %v: they would hit Nexus in lockstep", schedules[0])
	}
}

// Retries never wait longer than the registration period.
func TestRegistrationRetriesNeverExceedTheInterval(t *testing.T) {
	t.Parallel()
	sled, fake := startSledWithNexusDown(t, 3, sledagent.Config{RegisterInterval: 2 * time.Second})
	waits := registrationWaits(t, sled, fake, 8)
	for n, d := range waits {
		if d > 2*time.Second {
			t.Fatalf("wait %d is %s, beyond the 2 s register interval (all: %v)", n+1, d, waits)
		}
	}
	if tail := waits[5:]; !slices.Equal(tail, []time.Duration{2 * time.Second, 2 * time.Second, 2 * time.Second}) {
		t.Fatalf("at the ceiling the waits are %v, want the 2 s interval", tail)
	}
}

// While Nexus refuses the sled, changes it wants to report wait for the
// back-off like any retry: a flood of triggers makes no extra attempts.
func TestRegistrationTriggersWaitForTheBackoff(t *testing.T) {
	t.Parallel()
	// A "Nexus" that takes every connection and hangs up at once, counting
	// them: each registration attempt is one connection.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var conns atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			c.Close()
		}
	}()
	fake := clock.NewFake(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	cfg := sledagent.Config{Clock: fake, Rand: rand.NewPCG(4, 4), M2Dirs: []string{}, M2PollInterval: 24 * time.Hour,
		ArtifactReconcileInterval: 24 * time.Hour, ScrubInterval: -1}
	sled := sledtest.StartSled(t, "https://"+ln.Addr().String(), cfg)
	waits := registrationWaits(t, sled, fake, 3)
	// The fourth attempt (the clock is at it) fails and arms its retry.
	var retryAt time.Time
	sledtest.WaitFor(t, 10*time.Second, "the fourth attempt and its retry timer", func() error {
		now := fake.Now()
		if st := sled.Registration(); !st.LastAttempt.Equal(now) || st.LastError == "" {
			return fmt.Errorf("last attempt %s, clock at %s", st.LastAttempt, now)
		}
		next, ok := fake.NextDeadline()
		if !ok || !next.After(now) || next.Sub(now) > time.Minute {
			return errors.New("no retry armed yet")
		}
		retryAt = next
		return nil
	})
	before := conns.Load()
	if before != 4 {
		t.Fatalf("%d connections for 4 attempts", before)
	}
	for range 50 {
		sled.TriggerRegistration()
		time.Sleep(time.Millisecond) // a loop that wrongly takes the triggers gets the chance
	}
	if n := conns.Load(); n != before {
		t.Fatalf("50 triggers during the back-off made %d more attempts", n-before)
	}
	// The retry comes when the back-off said, at least half a doubled
	// ceiling after the attempt, and reports the triggers in one attempt.
	ceiling := min(250*time.Millisecond<<len(waits), 10*time.Second)
	if d := retryAt.Sub(fake.Now()); d < ceiling/2 {
		t.Fatalf("the retry is due %s after the attempt, want at least %s (earlier waits %v)", d, ceiling/2, waits)
	}
	fake.Advance(retryAt.Sub(fake.Now()))
	sledtest.WaitFor(t, 10*time.Second, "the retry", func() error {
		if n := conns.Load(); n != before+1 {
			return fmt.Errorf("%d attempts after the back-off", n-before)
		}
		return nil
	})
}
