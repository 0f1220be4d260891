package artifacts_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/rackplane/rackplane/internal/clock"
	"github.com/rackplane/rackplane/sledagent/artifacts"
)

// A flipped byte in one stored copy: the scrub finds it, removes that copy
// only, counts it, and the reconciler refills it from the good sibling.
func TestScrubCatchesFlippedByte(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{noRun: true})
	a, b := newArtifact(t, 2<<20), newArtifact(t, 1000)
	r.putConfig(1, a, b)
	r.mustPut(1, a)
	r.mustPut(1, b)

	f, err := os.OpenFile(r.file(0, a.sha), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	one := []byte{a.data[12345] ^ 0x04}
	if _, err := f.WriteAt(one, 12345); err != nil {
		t.Fatal(err)
	}
	f.Close()

	res, err := r.store.Scrub(context.Background())
	if err != nil || res.Files != 4 || res.Corrupt != 1 || res.Bytes != int64(2*(len(a.data)+len(b.data))) {
		t.Fatalf("scrub %+v %v", res, err)
	}
	if _, err := os.Stat(r.file(0, a.sha)); !os.IsNotExist(err) {
		t.Fatal("corrupt copy not removed")
	}
	if !r.holds(1, a) || !r.holds(0, b) || !r.holds(1, b) {
		t.Fatal("scrub removed a good copy")
	}
	st := r.store.ScrubStatus()
	if st.Passes != 1 || st.CorruptFound != 1 || len(st.Recent) != 1 || st.Recent[0].SHA256 != a.sha || st.Recent[0].M2 != r.dirs[0] {
		t.Fatalf("scrub status %+v", st)
	}
	if r.counter("rackplane_sled_artifact_corrupt_copies_total", "found_by", "scrub") != 1 ||
		r.counter("rackplane_sled_artifact_scrub_files_checked_total") != 4 {
		t.Fatal("scrub metrics not counted")
	}
	// Over HTTP too.
	hst, err := r.api.ArtifactScrubStatus(context.Background())
	if err != nil || hst.CorruptFound != 1 {
		t.Fatalf("scrub status over HTTP: %+v %v", hst, err)
	}

	if res := r.store.Reconcile(context.Background()); res.Filled != 1 {
		t.Fatalf("reconcile filled %d, want 1", res.Filled)
	}
	if !r.holds(0, a) {
		t.Fatal("corrupt copy not refilled from the sibling")
	}
	if res, _ := r.store.Scrub(context.Background()); res.Corrupt != 0 {
		t.Fatalf("second scrub found %d corrupt", res.Corrupt)
	}
}

// A local fill from a corrupt sibling notices the corruption, removes that
// copy and keeps nothing from it.
func TestLocalFillRefusesCorruptSibling(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{absent: []int{1}, noRun: true})
	a := newArtifact(t, 1<<20)
	r.putConfig(1, a)
	r.mustPut(1, a)
	if err := os.WriteFile(r.file(0, a.sha), newArtifact(t, 1<<20).data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := mkdir(r.dirs[1]); err != nil {
		t.Fatal(err)
	}
	r.w.Poll()
	if res := r.store.Reconcile(context.Background()); res.Filled != 0 {
		t.Fatalf("filled %d from a corrupt copy", res.Filled)
	}
	r.assertNothingKept(a.sha)
	if r.counter("rackplane_sled_artifact_corrupt_copies_total", "found_by", "local_copy") != 1 {
		t.Fatal("corruption found by the local copy not counted")
	}
}

// The scrub reads at the configured rate: hashing 8 MiB at 1 MiB/s asks
// the clock for about 8 s of waiting (a fake clock, so the test is fast).
func TestScrubIsRateBounded(t *testing.T) {
	t.Parallel()
	fake := clock.NewFake(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	r := newRig(t, rigOptions{noRun: true, opts: artifacts.Options{Clock: fake, ScrubRate: 1 << 20}})
	a, b := newArtifact(t, 3<<20), newArtifact(t, 1<<20)
	r.putConfig(1, a, b)
	r.mustPut(1, a)
	r.mustPut(1, b)
	res, err := r.store.Scrub(context.Background())
	if err != nil || res.Bytes != 8<<20 {
		t.Fatalf("scrub %+v %v", res, err)
	}
	if slept := fake.Slept(); slept < 7900*time.Millisecond || slept > 8100*time.Millisecond {
		t.Fatalf("scrub of 8 MiB at 1 MiB/s waited %s, want about 8 s", slept)
	}
	st := r.store.ScrubStatus()
	if d := st.LastFinished.Sub(st.LastStarted); d < 7900*time.Millisecond {
		t.Fatalf("pass took %s of clock time", d)
	}
}

// A pass runs at start; then, the store being small (read in far less
// than the interval), one every ScrubInterval after the last one started,
// as the clock tells it.
func TestScrubRunsOnSchedule(t *testing.T) {
	t.Parallel()
	fake := clock.NewFake(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	r := newRig(t, rigOptions{opts: artifacts.Options{Clock: fake, ScrubInterval: time.Hour}})
	waitFor(t, 5*time.Second, "the start-up pass", func() error {
		if st := r.store.ScrubStatus(); st.Passes != 1 {
			return fmt.Errorf("%d passes", st.Passes)
		}
		return nil
	})
	a := newArtifact(t, 1000)
	r.putConfig(1, a)
	r.mustPut(1, a)
	for pass := int64(2); pass <= 3; pass++ {
		// Both loops (reconcile, scrub) park on the clock before it moves.
		waitFor(t, 5*time.Second, "the loops to wait on the clock", func() error {
			if fake.Waiters() < 2 {
				return fmt.Errorf("%d waiters", fake.Waiters())
			}
			return nil
		})
		if st := r.store.ScrubStatus(); st.Passes != pass-1 {
			t.Fatalf("%d passes before the interval passed, want %d", st.Passes, pass-1)
		}
		fake.Advance(time.Hour)
		waitFor(t, 5*time.Second, "a scrub pass", func() error {
			if st := r.store.ScrubStatus(); st.Passes != pass {
				return fmt.Errorf("%d passes", st.Passes)
			}
			return nil
		})
	}
	if st := r.store.ScrubStatus(); st.FilesChecked != 4 || st.IntervalSeconds != 3600 {
		t.Fatalf("status %+v", st)
	}
	// An operator can ask for a pass now.
	if _, err := r.api.ArtifactScrubStart(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the requested scrub pass", func() error {
		st, err := r.api.ArtifactScrubStatus(context.Background())
		if err != nil {
			return err
		}
		if st.Passes != 4 {
			return fmt.Errorf("%d passes", st.Passes)
		}
		return nil
	})
}
