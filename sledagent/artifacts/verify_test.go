package artifacts_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/sledagent/artifacts"
)

// flip corrupts one byte of the copy of a on M.2 dev.
func (r *rig) flip(dev int, a artifact, at int64) {
	r.t.Helper()
	f, err := os.OpenFile(r.file(dev, a.sha), os.O_RDWR, 0)
	if err != nil {
		r.t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte{a.data[at] ^ 0x10}, at); err != nil {
		r.t.Fatal(err)
	}
}

// The depot checks what it serves: a copy that rotted since it was stored
// is cut short however it is read (whole, resumed from an offset past the
// flipped byte, or a closed range before it), never arrives whole, and is
// removed and counted at once; the good copy on the other M.2 is served
// from then on.
func TestDepotReadFindsACorruptCopy(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, rng string
	}{
		{"whole", ""},
		{"resumed past the flip", "bytes=3000000-"},
		{"closed range before the flip", "bytes=0-99"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := newRig(t, rigOptions{noRun: true})
			a := newArtifact(t, 4<<20)
			r.putConfig(1, a)
			r.mustPut(1, a)
			r.flip(0, a, 1<<20) // the depot serves M.2 0's copy first
			u := r.depotURL + api.DepotArtifactPath(a.sha)

			resp, body := depotGet(t, u, tc.rng)
			switch {
			case tc.rng == "bytes=0-99":
				if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "corrupt") {
					t.Fatalf("closed range of a corrupt copy: %d %s", resp.StatusCode, body)
				}
			default:
				want := int64(len(a.data))
				if tc.rng != "" {
					want -= 3000000
				}
				if resp.ContentLength != want || int64(len(body)) >= want {
					t.Fatalf("corrupt copy served: %d of %d bytes announced %d", len(body), want, resp.ContentLength)
				}
			}
			if _, err := os.Stat(r.file(0, a.sha)); !os.IsNotExist(err) {
				t.Fatalf("the corrupt copy is still stored (%v)", err)
			}
			if !r.holds(1, a) {
				t.Fatal("the good copy was removed")
			}
			if n := r.counter("rackplane_sled_artifact_corrupt_copies_total", "found_by", "depot_read"); n != 1 {
				t.Fatalf("%v corrupt copies counted by depot reads", n)
			}
			if st := r.store.ScrubStatus(); st.CorruptFound != 1 || len(st.Recent) != 1 || st.Recent[0].M2 != r.dirs[0] ||
				!strings.Contains(st.Recent[0].Detail, "depot read") {
				t.Fatalf("finding not reported: %+v", st)
			}
			// Asked again, the depot serves the good copy, whole.
			resp, body = depotGet(t, u, "")
			if resp.StatusCode != 200 || string(body) != string(a.data) {
				t.Fatalf("after removing the corrupt copy: %d, %d bytes", resp.StatusCode, len(body))
			}
		})
	}
}

// A sled copying from a depot whose only copy is corrupt keeps nothing;
// the source removes its copy, so asking again fails at once (not found)
// instead of sending the bad bytes again.
func TestCopyFromACorruptSourceKeepsNothing(t *testing.T) {
	t.Parallel()
	src, dst := newRig(t, rigOptions{noRun: true, absent: []int{1}}), newRig(t, rigOptions{})
	a := newArtifact(t, 3<<20)
	src.putConfig(1, a)
	src.mustPut(1, a)
	src.flip(0, a, 2<<20)
	dst.putConfig(1, a)
	if _, err := dst.api.ArtifactCopyFromDepot(context.Background(), a.sha, 1, src.depotURL); err != nil {
		t.Fatal(err)
	}
	st := dst.waitCopy(a.sha)
	if st.State != api.CopyFailed {
		t.Fatalf("copy from a corrupt source: %+v", st)
	}
	dst.assertNothingKept(a.sha)
	if _, err := os.Stat(src.file(0, a.sha)); !os.IsNotExist(err) {
		t.Fatal("the source kept its corrupt copy")
	}
	if n := src.counter("rackplane_sled_artifact_corrupt_copies_total", "found_by", "depot_read"); n != 1 {
		t.Fatalf("source counted %v corrupt copies", n)
	}
}

// The scrub runs at start, without being asked, and then continuously: a
// copy corrupt before the store started is found by the first pass, one
// corrupted later by a following one, each within moments at this rate.
func TestScrubRunsAtStartAndContinuously(t *testing.T) {
	t.Parallel()
	// Fill two M.2s with a store that never scrubs, then corrupt one copy
	// and start a scrubbing store on the same M.2s.
	filler := newRig(t, rigOptions{noRun: true})
	a, b := newArtifact(t, 2<<20), newArtifact(t, 1<<20)
	filler.putConfig(1, a, b)
	filler.mustPut(1, a)
	filler.mustPut(1, b)
	filler.flip(1, a, 777)
	filler.store.Close()

	r := newRigOn(t, filler.dirs, rigOptions{opts: artifacts.Options{ScrubInterval: 50 * time.Millisecond,
		ScrubRate: 64 << 20, ReconcileInterval: time.Hour}})
	waitFor(t, 5*time.Second, "the start-up scrub to find the corrupt copy", func() error {
		if n := r.counter("rackplane_sled_artifact_corrupt_copies_total", "found_by", "scrub"); n != 1 {
			return fmt.Errorf("%v corrupt copies found", n)
		}
		return nil
	})
	// The reconciler refills it from the sibling, then another copy rots.
	waitFor(t, 5*time.Second, "the refill from the sibling", func() error {
		if !r.holds(1, a) {
			return fmt.Errorf("M.2 1 lacks %s", a.sha[:12])
		}
		return nil
	})
	passes := r.store.ScrubStatus().Passes
	r.flip(0, b, 5)
	waitFor(t, 5*time.Second, "a later pass to find the second corrupt copy", func() error {
		if n := r.counter("rackplane_sled_artifact_corrupt_copies_total", "found_by", "scrub"); n != 2 {
			return fmt.Errorf("%v corrupt copies found", n)
		}
		return nil
	})
	waitFor(t, 5*time.Second, "that pass to finish", func() error {
		if st := r.store.ScrubStatus(); st.Passes <= passes || st.RateBytesPerSecond != 64<<20 || st.CorruptFound != 2 {
			return fmt.Errorf("scrub status %+v (passes before %d)", st, passes)
		}
		return nil
	})
}
