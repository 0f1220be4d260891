package artifacts_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/rackplane/rackplane/sledagent/artifacts"
)

// Seed 000: an M.2 missing at start that appears later gets the newest
// config ledger before it is used, and the wanted artifacts by local copy
// from its sibling, with no Nexus involved.
func TestLateM2GetsConfigAndArtifactsFromSibling(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{absent: []int{1}})
	a, b := newArtifact(t, 2<<20), newArtifact(t, 1000)
	r.putConfig(5, a, b)
	if res := r.mustPut(5, a); res.Copies != 1 {
		t.Fatalf("with one M.2, copies = %d", res.Copies)
	}
	r.mustPut(5, b)
	if got := r.store.Devices(); len(got) != 1 {
		t.Fatalf("devices in use %v", got)
	}

	if err := os.Mkdir(r.dirs[1], 0o755); err != nil {
		t.Fatal(err)
	}
	if !r.w.Poll() {
		t.Fatal("poll did not notice the new M.2")
	}
	// The ledger is there as soon as the device is in use.
	if g, ok := r.ledgerGeneration(1); !ok || g != 5 {
		t.Fatalf("late M.2 holds config generation %d (%v), want 5", g, ok)
	}
	waitFor(t, 10*time.Second, "the late M.2 to be filled", func() error {
		if !r.holds(1, a) || !r.holds(1, b) {
			return fmt.Errorf("not filled yet")
		}
		return nil
	})
	list, _ := r.api.ArtifactList(context.Background())
	if list.Artifacts[a.sha] != 2 || list.Artifacts[b.sha] != 2 {
		t.Fatalf("copies after fill: %+v", list)
	}
	if got := r.counter("rackplane_sled_artifact_copies_stored_total", "source", "local"); got != 2 {
		t.Fatalf("local copies stored = %v, want 2", got)
	}
	r.assertNoTemps()
}

// A config put racing with an M.2's arrival never leaves the new M.2
// behind: whatever the interleaving, once both are done every M.2 holds the
// generation the sled reports.
func TestConfigPutRacingM2Arrival(t *testing.T) {
	t.Parallel()
	for i := range 20 {
		r := newRig(t, rigOptions{absent: []int{1}, noRun: true})
		r.putConfig(1)
		if err := os.Mkdir(r.dirs[1], 0o755); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); r.putConfig(2) }()
		go func() { defer wg.Done(); r.w.Poll() }()
		wg.Wait()
		for dev := range r.dirs {
			if g, _ := r.ledgerGeneration(dev); g != 2 {
				t.Fatalf("round %d: M.2 %d holds generation %d, sled holds %d", i, dev, g, r.store.Generation())
			}
		}
	}
}

// The newest ledger wins across devices: an M.2 that arrives holding a
// newer generation than the sled had is adopted and copied to the other.
func TestArrivingM2WithNewerLedgerWins(t *testing.T) {
	t.Parallel()
	// Make M.2 b hold generation 7 from an earlier life.
	earlier := newRig(t, rigOptions{noRun: true})
	a := newArtifact(t, 10)
	earlier.putConfig(7, a)
	old := filepath.Join(earlier.dirs[1], artifacts.UpdateDir, artifacts.ConfigFile)
	ledger, err := os.ReadFile(old)
	if err != nil {
		t.Fatal(err)
	}

	r := newRig(t, rigOptions{absent: []int{1}, noRun: true})
	r.putConfig(3)
	if err := os.MkdirAll(filepath.Join(r.dirs[1], artifacts.UpdateDir), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(r.dirs[1], artifacts.UpdateDir, artifacts.ConfigFile), ledger, 0o644); err != nil {
		t.Fatal(err)
	}
	r.w.Poll()
	if g := r.store.Generation(); g != 7 {
		t.Fatalf("sled generation %d, want 7", g)
	}
	if g, _ := r.ledgerGeneration(0); g != 7 {
		t.Fatalf("M.2 a holds %d, want 7", g)
	}
	cfg, _ := r.api.ArtifactConfigGet(context.Background())
	if len(cfg.Artifacts) != 1 || cfg.Artifacts[0] != a.sha {
		t.Fatalf("config %+v", cfg)
	}
}

// An M.2 removed at run time: the sled carries on with the other, reports
// one copy, and refills the device when it comes back.
func TestM2RemovedAtRunTimeAndReturning(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{})
	a, b := newArtifact(t, 1<<20), newArtifact(t, 1<<20)
	r.putConfig(1, a, b)
	r.mustPut(1, a)

	if err := os.RemoveAll(r.dirs[0]); err != nil {
		t.Fatal(err)
	}
	// Before the poll notices, a write fails on the vanished device only.
	res := r.mustPut(1, b)
	if len(res.Written) != 1 || res.Written[0] != r.dirs[1] || len(res.Failed) != 1 || res.Failed[0].M2 != r.dirs[0] {
		t.Fatalf("put with a vanished M.2: %+v", res)
	}
	if !r.w.Poll() {
		t.Fatal("poll did not notice the removal")
	}
	if devs := r.w.Devices(); devs[0].Present || !devs[1].Present {
		t.Fatalf("inventory %+v", devs)
	}
	list, _ := r.api.ArtifactList(context.Background())
	if list.Artifacts[a.sha] != 1 || list.Artifacts[b.sha] != 1 {
		t.Fatalf("copies with one M.2: %+v", list)
	}
	// Config changes keep working on one device.
	r.putConfig(2, a, b)

	if err := os.Mkdir(r.dirs[0], 0o755); err != nil {
		t.Fatal(err)
	}
	r.w.Poll()
	if g, _ := r.ledgerGeneration(0); g != 2 {
		t.Fatalf("returned M.2 holds generation %d, want 2", g)
	}
	waitFor(t, 10*time.Second, "the returned M.2 to be refilled", func() error {
		list, err := r.api.ArtifactList(context.Background())
		if err != nil {
			return err
		}
		if list.Artifacts[a.sha] != 2 || list.Artifacts[b.sha] != 2 {
			return fmt.Errorf("copies %v", list.Artifacts)
		}
		return nil
	})
	if !r.holds(0, a) || !r.holds(0, b) {
		t.Fatal("refilled M.2 holds the wrong bytes")
	}
}

// A device directory replaced between two polls (removed and recreated) is
// treated as a departure and an arrival, so it gets the ledger back.
func TestReplacedM2DirectoryIsReconciled(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{noRun: true})
	r.putConfig(4)
	if err := os.RemoveAll(r.dirs[1]); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(r.dirs[1], 0o755); err != nil {
		t.Fatal(err)
	}
	if !r.w.Poll() {
		t.Fatal("poll did not notice the replaced directory")
	}
	if g, ok := r.ledgerGeneration(1); !ok || g != 4 {
		t.Fatalf("replaced M.2 holds %d (%v), want 4", g, ok)
	}
}

// Start-up (a device coming into use) clears what interrupted writes left
// in tmp/ and interrupted ledger writes, and touches nothing else.
func TestArrivalClearsTempLeftovers(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{absent: []int{1}, noRun: true})
	a := newArtifact(t, 100)
	upd := filepath.Join(r.dirs[1], artifacts.UpdateDir)
	if err := os.MkdirAll(filepath.Join(upd, artifacts.TmpDir, "nested"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{
		filepath.Join(upd, artifacts.TmpDir, a.sha+"-123"),
		filepath.Join(upd, ".tmp-"+artifacts.ConfigFile+"-99"),
	} {
		if err := os.WriteFile(f, []byte("partial"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(upd, a.sha), a.data, 0o644); err != nil {
		t.Fatal(err)
	}
	r.w.Poll()
	entries, _ := os.ReadDir(filepath.Join(upd, artifacts.TmpDir))
	if len(entries) != 0 {
		t.Fatalf("tmp/ still holds %d entries", len(entries))
	}
	if _, err := os.Stat(filepath.Join(upd, ".tmp-"+artifacts.ConfigFile+"-99")); !os.IsNotExist(err) {
		t.Fatal("interrupted ledger write not removed")
	}
	if !r.holds(1, a) {
		t.Fatal("arrival removed a stored artifact")
	}
}
