package artifacts_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/sledagent/artifacts"
)

func other(t *testing.T) artifact { return newArtifact(t, 16) }

func (r *rig) partialPath(dev int, sha string) string {
	return filepath.Join(r.dirs[dev], artifacts.UpdateDir, artifacts.TmpDir, sha+".partial")
}

// writePartial leaves a partial copy on M.2 dev as an earlier sled agent
// would have: data, and its description.
func (r *rig) writePartial(dev int, sha, source string, length int64, data []byte) {
	r.t.Helper()
	tmp := filepath.Join(r.dirs[dev], artifacts.UpdateDir, artifacts.TmpDir)
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		r.t.Fatal(err)
	}
	if err := os.WriteFile(r.partialPath(dev, sha), data, 0o644); err != nil {
		r.t.Fatal(err)
	}
	meta, _ := json.Marshal(map[string]any{"sha256": sha, "source": source, "length": length})
	if err := os.WriteFile(r.partialPath(dev, sha)+".json", meta, 0o644); err != nil {
		r.t.Fatal(err)
	}
}

// A sled agent stopped in the middle of a copy keeps what it received, in
// partial copies that are never taken for the artifact; started again on
// the same M.2s and asked for the same copy, it re-hashes them and asks
// the source only for the rest.
func TestCopyResumesAcrossARestart(t *testing.T) {
	t.Parallel()
	src := newRig(t, rigOptions{noRun: true})
	a := newArtifact(t, 6<<20)
	src.putConfig(1, a)
	src.mustPut(1, a)
	const stall = 2<<20 + 777
	s := &source{upstream: src.depotURL, stallAfter: stall, stall: make(chan struct{})}
	srv := httptest.NewServer(s)
	defer srv.Close()
	url := srv.URL + api.DepotArtifactPath(a.sha)

	first := newRig(t, rigOptions{})
	first.putConfig(1, a)
	if _, err := first.api.ArtifactCopyFromDepot(context.Background(), a.sha, 1, url); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the copy to be part-way", func() error {
		st, err := first.api.ArtifactCopyGet(context.Background(), a.sha)
		if err != nil {
			return err
		}
		if st.BytesDone < stall {
			return fmt.Errorf("%d bytes done", st.BytesDone)
		}
		return nil
	})
	first.store.Close() // the sled agent stops
	close(s.stall)
	for i := range first.dirs {
		info, err := os.Stat(first.partialPath(i, a.sha))
		if err != nil || info.Size() != stall {
			t.Fatalf("M.2 %d keeps %v bytes of the partial copy (%v), want %d", i, info, err, stall)
		}
		if first.holds(i, a) {
			t.Fatalf("M.2 %d holds the artifact after an interrupted copy", i)
		}
	}

	// What else an interrupted sled leaves in tmp/ (a PUT's temp file, a
	// partial copy without its description) is not resumed: it goes when
	// the M.2 comes into use, and the partial copies stay.
	leftovers := []string{a.sha + "-123456", other(t).sha + ".partial"}
	for _, name := range leftovers {
		if err := os.WriteFile(filepath.Join(first.dirs[0], artifacts.UpdateDir, artifacts.TmpDir, name), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	again := newRigOn(t, first.dirs, rigOptions{})
	for _, name := range leftovers {
		if _, err := os.Stat(filepath.Join(first.dirs[0], artifacts.UpdateDir, artifacts.TmpDir, name)); !os.IsNotExist(err) {
			t.Fatalf("leftover %s survived the start (%v)", name, err)
		}
	}
	for i := range first.dirs {
		if _, err := os.Stat(first.partialPath(i, a.sha)); err != nil {
			t.Fatalf("the partial copy on M.2 %d did not survive the start: %v", i, err)
		}
	}
	servedBefore := s.served.Load()
	if _, err := again.api.ArtifactCopyFromDepot(context.Background(), a.sha, 1, url); err != nil {
		t.Fatal(err)
	}
	st := again.waitCopy(a.sha)
	if st.State != api.CopyDone || st.Resumes != 1 {
		t.Fatalf("copy after the restart: %+v", st)
	}
	if after := s.served.Load() - servedBefore; after != int64(len(a.data))-stall {
		t.Fatalf("the source served %d bytes after the restart, want the %d missing", after, int64(len(a.data))-stall)
	}
	ranges := s.rangeHeaders()
	if last := ranges[len(ranges)-1]; last != fmt.Sprintf("bytes=%d-", stall) {
		t.Fatalf("resumed with Range %q", last)
	}
	if n := again.counter("rackplane_sled_artifact_copy_resumed_bytes_total"); n != stall {
		t.Fatalf("resumed bytes counted %v, want %d", n, stall)
	}
	for i := range again.dirs {
		if !again.holds(i, a) {
			t.Fatalf("M.2 %d lacks the artifact", i)
		}
	}
	again.assertNoTemps()
}

// Partial copies that cannot be trusted to continue are discarded and the
// copy starts over: one from another source, of another hash (by its
// description), longer than the artifact, or disagreeing with its
// sibling's. One that is a true prefix on one M.2 only is resumed there,
// and the other M.2 filled from it.
func TestPartialCopiesThatCannotBeResumedAreDiscarded(t *testing.T) {
	t.Parallel()
	src := newRig(t, rigOptions{noRun: true})
	a, other := newArtifact(t, 3<<20), newArtifact(t, 10)
	src.putConfig(1, a)
	src.mustPut(1, a)
	size := int64(len(a.data))
	const have = 1 << 20
	flipped := append([]byte(nil), a.data[:have]...)
	flipped[100] ^= 1

	for _, tc := range []struct {
		name string
		// prepare leaves partial copies on the M.2s of r, for a copy from url.
		prepare func(r *rig, url string)
		// resumed is how many bytes the copy should not fetch again.
		resumed int64
	}{
		{"another source", func(r *rig, url string) {
			r.writePartial(0, a.sha, "http://elsewhere"+api.DepotArtifactPath(a.sha), size, a.data[:have])
			r.writePartial(1, a.sha, "http://elsewhere"+api.DepotArtifactPath(a.sha), size, a.data[:have])
		}, 0},
		{"another hash", func(r *rig, url string) {
			r.writePartial(0, a.sha, url, size, a.data[:have])
			meta, _ := json.Marshal(map[string]any{"sha256": other.sha, "source": url, "length": size})
			_ = os.WriteFile(r.partialPath(0, a.sha)+".json", meta, 0o644)
		}, 0},
		{"longer than the artifact", func(r *rig, url string) {
			r.writePartial(0, a.sha, url, size, append(append([]byte(nil), a.data...), 1, 2, 3))
		}, 0},
		{"longer than a length never learnt", func(r *rig, url string) {
			r.writePartial(0, a.sha, url, -1, append(append([]byte(nil), a.data...), 1, 2, 3))
		}, 0},
		{"M.2s disagree", func(r *rig, url string) {
			r.writePartial(0, a.sha, url, size, a.data[:have])
			r.writePartial(1, a.sha, url, size, flipped)
		}, 0},
		{"a true prefix on one M.2", func(r *rig, url string) {
			r.writePartial(1, a.sha, url, size, a.data[:have])
		}, have},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := &source{upstream: src.depotURL}
			srv := httptest.NewServer(s)
			defer srv.Close()
			url := srv.URL + api.DepotArtifactPath(a.sha)
			r := newRig(t, rigOptions{opts: artifacts.Options{CopyBackoff: time.Millisecond}})
			dirs := r.dirs
			r.putConfig(1, a)
			tc.prepare(r, url)
			if _, err := r.api.ArtifactCopyFromDepot(context.Background(), a.sha, 1, url); err != nil {
				t.Fatal(err)
			}
			if st := r.waitCopy(a.sha); st.State != api.CopyDone {
				t.Fatalf("copy: %+v", st)
			}
			if got := s.served.Load(); got != size-tc.resumed {
				t.Fatalf("the source served %d bytes, want %d", got, size-tc.resumed)
			}
			if n := r.counter("rackplane_sled_artifact_copy_resumed_bytes_total"); n != float64(tc.resumed) {
				t.Fatalf("resumed bytes %v, want %d", n, tc.resumed)
			}
			r.store.TriggerReconcile()
			waitFor(t, 5*time.Second, "both M.2s to hold the artifact", func() error {
				for i := range dirs {
					if _, err := os.Stat(r.file(i, a.sha)); err != nil {
						return err
					}
				}
				return nil
			})
			for i := range dirs {
				if !r.holds(i, a) {
					t.Fatalf("M.2 %d lacks the artifact", i)
				}
			}
			r.assertNoTemps()
		})
	}
}

// The reconciler removes partial copies nothing will resume: of a hash
// the config dropped, or one the M.2 holds already; it keeps one a copy
// may still resume.
func TestReconcileRemovesPartialCopiesNothingResumes(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{noRun: true})
	held, pending, dropped := newArtifact(t, 1000), newArtifact(t, 2000), newArtifact(t, 3000)
	r.putConfig(1, held, pending, dropped)
	r.mustPut(1, held)
	for _, a := range []artifact{held, pending, dropped} {
		r.writePartial(0, a.sha, "http://depot"+api.DepotArtifactPath(a.sha), int64(len(a.data)), a.data[:100])
	}
	r.putConfig(2, held, pending)
	r.store.Reconcile(context.Background())
	for _, tc := range []struct {
		a    artifact
		kept bool
	}{{held, false}, {pending, true}, {dropped, false}} {
		for _, p := range []string{r.partialPath(0, tc.a.sha), r.partialPath(0, tc.a.sha) + ".json"} {
			if _, err := os.Stat(p); (err == nil) != tc.kept {
				t.Errorf("%s: kept %v, want %v", filepath.Base(p), err == nil, tc.kept)
			}
		}
	}
}
