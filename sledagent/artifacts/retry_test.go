package artifacts_test

import (
	"context"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/internal/clock"
	"github.com/rackplane/rackplane/sledagent/artifacts"
)

// downDepotURL is a depot address nothing listens on: every request is
// refused, a failure worth retrying.
func downDepotURL(t *testing.T, sha string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr + api.DepotArtifactPath(sha)
}

// A depot that stays down: the copy's retries wait at least half of a
// ceiling that doubles from CopyBackoff to 5 s and then stays there, the
// waits are jittered (two sleds with their own random sources wait
// differently), and the copy gives up after CopyAttempts.
func TestCopyRetriesBackOffToTheCeiling(t *testing.T) {
	t.Parallel()
	const attempts = 12
	start := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	var schedules [2][]time.Duration
	for i, seed := range []uint64{1, 2} {
		fake := clock.NewFake(start)
		r := newRig(t, rigOptions{opts: artifacts.Options{Clock: fake, Rand: rand.NewPCG(seed, seed),
			CopyAttempts: attempts, CopyBackoff: 100 * time.Millisecond}})
		a := newArtifact(t, 1000)
		r.putConfig(1, a)
		if _, err := r.api.ArtifactCopyFromDepot(context.Background(), a.sha, 1, downDepotURL(t, a.sha)); err != nil {
			t.Fatal(err)
		}
		st := r.waitCopy(a.sha)
		if st.State != api.CopyFailed || st.Attempts != attempts || !strings.Contains(st.Error, "gave up after 12 attempts") {
			t.Fatalf("copy from a depot that is down: %+v", st)
		}
		r.assertNothingKept(a.sha)

		sleeps := fake.Sleeps() // nothing else sleeps on this clock: scrubs are off
		if len(sleeps) != attempts-1 {
			t.Fatalf("%d waits between %d attempts: %v", len(sleeps), attempts, sleeps)
		}
		var total time.Duration
		for n, d := range sleeps {
			ceiling := min(100*time.Millisecond<<n, 5*time.Second)
			if d < ceiling/2 || d > ceiling {
				t.Fatalf("wait %d is %s, want within [%s, %s] (all: %v)", n+1, d, ceiling/2, ceiling, sleeps)
			}
			total += d
		}
		// From the 7th wait on, the ceiling is 5 s: a persistent failure is
		// retried no faster than every 2.5 s.
		for n, d := range sleeps[6:] {
			if d < 2500*time.Millisecond {
				t.Fatalf("wait %d at the ceiling is only %s", n+7, d)
			}
		}
		// The copy's timestamps follow the same clock.
		if took := st.TimeFinished.Sub(st.TimeStarted); took != total {
			t.Fatalf("copy ran %s of clock time, want the %s it waited", took, total)
		}
		schedules[i] = sleeps
	}
	if slices.Equal(schedules[0], schedules[1]) {
		t.Fatalf("two sleds retried on the same schedule %v: not jittered", schedules[0])
	}
}
