package artifacts_test

import (
	"context"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
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

// A source that keeps failing (HTTP 500) is not hammered by copies asked
// for again and again, as Nexus asks after each failure: every copy after
// a failed one waits for a cool-down that doubles from CopyCooldown up to
// CopyCooldownMax, and each copy makes only its own attempts. A success
// ends the cool-down.
func TestCopiesFromAFailingSourceCoolDown(t *testing.T) {
	t.Parallel()
	fake := clock.NewFake(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	const attempts = 2
	r := newRig(t, rigOptions{opts: artifacts.Options{Clock: fake, Rand: rand.NewPCG(5, 5), CopyAttempts: attempts,
		CopyBackoff: 10 * time.Millisecond, CopyCooldown: time.Second, CopyCooldownMax: 8 * time.Second}})
	good := newRig(t, rigOptions{noRun: true})
	a := newArtifact(t, 5000)
	r.putConfig(1, a)
	good.putConfig(1, a)
	good.mustPut(1, a)
	var gets atomic.Int64
	var healthy atomic.Bool
	src := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		gets.Add(1)
		if healthy.Load() {
			http.Redirect(w, req, good.depotURL+req.URL.Path, http.StatusTemporaryRedirect)
			return
		}
		http.Error(w, "broken", http.StatusInternalServerError)
	}))
	t.Cleanup(src.Close)
	url := src.URL + api.DepotArtifactPath(a.sha)

	const copies = 6
	var starts []time.Time
	for k := range copies {
		if _, err := r.api.ArtifactCopyFromDepot(context.Background(), a.sha, 1, url); err != nil {
			t.Fatal(err)
		}
		st := r.waitCopy(a.sha)
		if st.State != api.CopyFailed || st.Attempts != attempts {
			t.Fatalf("copy %d from a failing source: %+v", k+1, st)
		}
		starts = append(starts, st.TimeStarted)
	}
	if n := gets.Load(); n != copies*attempts {
		t.Fatalf("%d requests to the source for %d copies of %d attempts each", n, copies, attempts)
	}
	// Each copy started at least half a doubling cool-down after the one
	// before it (which itself took its own retry delays).
	ceiling := time.Second
	for k := 1; k < copies; k++ {
		if gap := starts[k].Sub(starts[k-1]); gap < ceiling/2 {
			t.Fatalf("copy %d started %s after copy %d, want at least %s (starts %v)", k+1, gap, k, ceiling/2, starts)
		}
		ceiling = min(2*ceiling, 8*time.Second)
	}
	if ceiling != 8*time.Second {
		t.Fatalf("the cool-down never reached its ceiling")
	}

	// The source is fixed: the next copy still waits out the cool-down,
	// then succeeds.
	healthy.Store(true)
	if _, err := r.api.ArtifactCopyFromDepot(context.Background(), a.sha, 1, url); err != nil {
		t.Fatal(err)
	}
	if st := r.waitCopy(a.sha); st.State != api.CopyDone || st.TimeStarted.Sub(starts[copies-1]) < 4*time.Second {
		t.Fatalf("copy once the source is fixed: %+v", st)
	}
	for i := range r.dirs {
		if !r.holds(i, a) {
			t.Fatalf("M.2 %d lacks the artifact", i)
		}
	}
}
