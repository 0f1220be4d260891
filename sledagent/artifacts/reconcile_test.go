package artifacts_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/rackplane/rackplane/sledagent/artifacts"
)

// Copies the config no longer wants are deleted from every M.2; wanted
// ones, the ledger, tmp/ and files that are not artifacts stay.
func TestDeleteReconcilerRemovesOnlyUnwanted(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{noRun: true})
	keep, drop := newArtifact(t, 1000), newArtifact(t, 1000)
	r.putConfig(1, keep, drop)
	r.mustPut(1, keep)
	r.mustPut(1, drop)
	junk := filepath.Join(r.dirs[0], artifacts.UpdateDir, "README")
	if err := os.WriteFile(junk, []byte("not an artifact"), 0o644); err != nil {
		t.Fatal(err)
	}

	r.putConfig(2, keep)
	res := r.store.Reconcile(context.Background())
	if res.Deleted != 2 {
		t.Fatalf("deleted %d copies, want 2", res.Deleted)
	}
	for dev := range r.dirs {
		if !r.holds(dev, keep) {
			t.Fatalf("M.2 %d lost a wanted artifact", dev)
		}
		if r.holds(dev, drop) {
			t.Fatalf("M.2 %d still holds an unwanted artifact", dev)
		}
		if g, _ := r.ledgerGeneration(dev); g != 2 {
			t.Fatalf("M.2 %d ledger %d", dev, g)
		}
	}
	if _, err := os.Stat(junk); err != nil {
		t.Fatal("the reconciler removed a file that is not an artifact")
	}
	if got := r.counter("rackplane_sled_artifact_deleted_total"); got != 2 {
		t.Fatalf("deleted metric %v", got)
	}

	// Wanted again at a newer generation: put back, and a reconcile keeps it.
	r.putConfig(3, keep, drop)
	r.mustPut(3, drop)
	if res := r.store.Reconcile(context.Background()); res.Deleted != 0 {
		t.Fatalf("reconcile deleted %d wanted copies", res.Deleted)
	}
}

// A config change triggers the reconciler without waiting for its period.
func TestConfigChangeTriggersDeletes(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{}) // background loops running, period 1 h
	a := newArtifact(t, 1000)
	r.putConfig(1, a)
	r.mustPut(1, a)
	r.putConfig(2)
	waitFor(t, 10e9, "the unwanted artifact to be deleted", func() error {
		for dev := range r.dirs {
			if _, err := os.Stat(r.file(dev, a.sha)); err == nil {
				return os.ErrExist
			}
		}
		return nil
	})
}
