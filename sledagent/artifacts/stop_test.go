package artifacts_test

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"testing"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/api/client"
	"github.com/rackplane/rackplane/sledagent/artifacts"
)

// Copy requests keep arriving while a sled agent stops (its listeners
// drain for a grace period after the store has stopped). Each one either
// starts a copy the store then waits for, or is refused with a 503; once
// the store has stopped nothing is copying and nothing new is accepted.
// Run with -race, this also checks that no copy joins the store's wait for
// its copies while that wait is in progress.
func TestCopyRequestsWhileStopping(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{noRun: true})
	var arts []artifact
	for range 24 {
		arts = append(arts, newArtifact(t, 64))
	}
	late := newArtifact(t, 64)
	r.putConfig(1, append(arts, late)...)
	// A source that refuses connections: every copy retries until the
	// store stops it.
	const source = "http://127.0.0.1:1"

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stopped := make(chan struct{})
	go func() { defer close(stopped); r.store.Run(ctx) }()

	// The first half are accepted while the store runs; the second half
	// race its stop.
	half := len(arts) / 2
	for _, a := range arts[:half] {
		if _, err := r.api.ArtifactCopyFromDepot(context.Background(), a.sha, 1, source); err != nil {
			t.Fatalf("copy of %s before the stop: %v", a.sha, err)
		}
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	accepted, refused := half, 0
	wg.Go(cancel)
	for _, a := range arts[half:] {
		wg.Go(func() {
			_, err := r.api.ArtifactCopyFromDepot(context.Background(), a.sha, 1, source)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				accepted++
			case client.StatusCode(err) == http.StatusServiceUnavailable &&
				client.ErrorCode(err) == api.CodeServiceUnavailable:
				refused++
			default:
				t.Errorf("copy of %s: %v", a.sha, err)
			}
		})
	}
	wg.Wait()
	<-stopped
	t.Logf("%d copy requests accepted, %d refused", accepted, refused)
	if accepted+refused != len(arts) {
		t.Fatalf("%d accepted + %d refused of %d requests", accepted, refused, len(arts))
	}

	list, err := r.api.ArtifactCopies(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range list.Copies {
		if !c.Finished() {
			t.Errorf("copy of %s still %s after the store stopped", c.SHA256, c.State)
		}
	}
	if list.InFlight != 0 {
		t.Fatalf("%d copies still in flight after the store stopped", list.InFlight)
	}
	if len(list.Copies) != accepted {
		t.Fatalf("%d copies listed, %d accepted", len(list.Copies), accepted)
	}
	for _, c := range list.Copies {
		if c.State == api.CopyDone {
			t.Fatalf("copy of %s from a source that refuses connections is done", c.SHA256)
		}
	}

	_, err = r.api.ArtifactCopyFromDepot(context.Background(), late.sha, 1, source)
	apiErr(t, err, http.StatusServiceUnavailable, api.CodeServiceUnavailable)
	if c, ok := r.store.Copy(late.sha); ok {
		t.Fatalf("a copy refused after stop is listed: %+v", c)
	}
	if _, _, err := r.store.StartCopy(context.Background(), late.sha, 1,
		api.ArtifactCopyRequest{SourceURL: source}); !errors.Is(err, artifacts.ErrStopped) {
		t.Fatalf("StartCopy after stop: %v, want ErrStopped", err)
	}
	r.assertNothingKept(late.sha)
}
