package tufreplication_test

// Retry storms: a sled that keeps failing is not asked again faster than
// the task's back-off allows, however often the task runs.

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/api/client"
	"github.com/rackplane/rackplane/bgtasks/tufreplication"
	"github.com/rackplane/rackplane/internal/httpx"
	"github.com/rackplane/rackplane/internal/rackpki"
	"github.com/rackplane/rackplane/internal/racktest"
	"github.com/rackplane/rackplane/internal/sledtest"
	"github.com/rackplane/rackplane/internal/tufgen"
)

// brokenSled is a sled that answers every request with a 500: its mutual
// TLS listener is a sled's (the rack CA, a sled certificate), but whatever
// is behind it is broken. It counts the requests it gets.
type brokenSled struct {
	ln       net.Listener
	requests atomic.Int64
}

func startBrokenSled(t *testing.T, serial string) *brokenSled {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &brokenSled{ln: tls.NewListener(ln, sledtest.Bundle(t, rackpki.Sled("rackplane-sim", serial)).
		ServerTLS(rackpki.AnyIdentity, nil))}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.requests.Add(1)
		httpx.WriteJSON(w, http.StatusInternalServerError, api.Error{ErrorCode: api.CodeInternal,
			Message: "the sled agent is broken"})
	})}
	go func() { _ = srv.Serve(b.ln) }()
	t.Cleanup(func() { srv.Close() })
	return b
}

// backoffBound is how many requests a back-off with this first delay,
// ceiling and jitter (each delay at least (1-jitter) of its ceiling) lets
// through in window: the first at once, then one after each delay.
func backoffBound(initial, ceiling time.Duration, jitter float64, window time.Duration) int {
	n, elapsed, c := 1, time.Duration(0), initial
	for {
		elapsed += time.Duration(float64(c) * (1 - jitter))
		if elapsed > window {
			return n
		}
		n++
		c = min(2*c, ceiling)
	}
}

// A sled that answers 500 to everything, in a rack whose replication task
// is activated over and over (and copies to the healthy sleds keep it
// following up), gets no more requests than the back-off allows; the
// healthy sleds converge, and the broken one is shown as backing off.
func TestBrokenSledIsAskedOnlyAsTheBackoffAllows(t *testing.T) {
	t.Parallel()
	r := newRack(t, 3)
	ctx := context.Background()
	broken := startBrokenSled(t, "BROKEN-1")
	in, err := client.NewNexusInternal(r.Nexus.InternalURL(), sledtest.HTTPClient(t, rackpki.Sled("rackplane-sim", "BROKEN-1")))
	if err != nil {
		t.Fatal(err)
	}
	id := uuid.New()
	if _, err := in.SledRegister(ctx, id, api.SledRegistration{
		Baseboard:        api.Baseboard{Part: "rackplane-sim", Serial: "BROKEN-1"},
		SledAgentAddress: broken.ln.Addr().String(), RepoDepotPort: 1}); err != nil {
		t.Fatal(err)
	}

	built := r.upload(r.Nexus, tufgen.Sized("1.0.0", 8<<20, 4, 21))
	const window = 6 * time.Second
	start := time.Now()
	startActivations := activations(t, r)
	startRequests := broken.requests.Load()
	// At least the window, and at least 50 runs: under the race detector
	// on a loaded machine a run can take a quarter of a second, and too
	// few runs would not test the back-off (the bound below is computed
	// from the time actually taken, so a longer loop does not loosen it).
	for time.Since(start) < window || (activations(t, r)-startActivations < 50 && time.Since(start) < 10*window) {
		if _, err := r.Nexus.Client.BackgroundTaskActivate(ctx, tufreplication.Name); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	elapsed := time.Since(start)
	got := broken.requests.Load() - startRequests
	runs := activations(t, r) - startActivations
	// Each attempt at the broken sled is one request (its listing fails,
	// nothing else is asked), and the window is measured after the
	// attempts it covers, so the bound is exact, not a timing guess.
	bound := backoffBound(tufreplication.DefaultSledBackoff, tufreplication.DefaultPeriod, 0.5, elapsed)
	if got > int64(bound) {
		t.Fatalf("the broken sled got %d requests in %s over %d runs; the back-off allows at most %d", got, elapsed, runs, bound)
	}
	if got < 2 || runs < 50 {
		t.Fatalf("the test did not exercise the back-off: %d requests to the broken sled over %d runs", got, runs)
	}
	t.Logf("%d runs in %s; the broken sled was asked %d times (back-off bound %d)", runs, elapsed, got, bound)

	r.waitHeld(r.Sleds, hashes(built), 30*time.Second)
	st := racktest.ReplicationStatus(t, r.Nexus)
	for _, s := range st.SledStates {
		if s.ID == id && s.Error == "" {
			t.Fatalf("the broken sled shows no error: %+v", s)
		}
	}
	if st.Converged {
		t.Fatal("converged with a broken sled")
	}
}

func activations(t *testing.T, r *rack) uint64 {
	t.Helper()
	task, err := r.Nexus.Client.BackgroundTaskGet(context.Background(), tufreplication.Name)
	if err != nil {
		t.Fatal(err)
	}
	return task.Activations
}
