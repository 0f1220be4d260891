package artifacts_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/sledagent/artifacts"
)

func depotGet(t *testing.T, u, rangeHdr string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	if rangeHdr != "" {
		req.Header.Set("Range", rangeHdr)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func TestDepotServesWithRange(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{noRun: true})
	a := newArtifact(t, 100_000)
	r.putConfig(1, a)
	r.mustPut(1, a)
	u := r.depotURL + api.DepotArtifactPath(a.sha)

	resp, b := depotGet(t, u, "")
	if resp.StatusCode != 200 || !bytes.Equal(b, a.data) || resp.Header.Get("ETag") != `"`+a.sha+`"` {
		t.Fatalf("full get: %d, %d bytes, etag %q", resp.StatusCode, len(b), resp.Header.Get("ETag"))
	}
	resp, b = depotGet(t, u, "bytes=40000-")
	if resp.StatusCode != 206 || !bytes.Equal(b, a.data[40000:]) ||
		resp.Header.Get("Content-Range") != fmt.Sprintf("bytes 40000-99999/%d", len(a.data)) {
		t.Fatalf("open range: %d %q %d bytes", resp.StatusCode, resp.Header.Get("Content-Range"), len(b))
	}
	resp, b = depotGet(t, u, "bytes=10-19")
	if resp.StatusCode != 206 || !bytes.Equal(b, a.data[10:20]) {
		t.Fatalf("closed range: %d %d bytes", resp.StatusCode, len(b))
	}
	resp, b = depotGet(t, u, "bytes=-5")
	if resp.StatusCode != 206 || !bytes.Equal(b, a.data[len(a.data)-5:]) {
		t.Fatalf("suffix range: %d %d bytes", resp.StatusCode, len(b))
	}
	// A range past the end is a 416 with our JSON error.
	resp, b = depotGet(t, u, "bytes=200000-")
	var e api.Error
	if resp.StatusCode != 416 || json.Unmarshal(b, &e) != nil || e.ErrorCode != api.CodeInvalidRange {
		t.Fatalf("unsatisfiable range: %d %s", resp.StatusCode, b)
	}
	// HEAD says the size without the body.
	hresp, err := http.Head(u)
	if err != nil || hresp.StatusCode != 200 || hresp.ContentLength != int64(len(a.data)) {
		t.Fatalf("HEAD: %v %+v", err, hresp)
	}
	hresp.Body.Close()

	other := newArtifact(t, 10)
	resp, b = depotGet(t, r.depotURL+api.DepotArtifactPath(other.sha), "")
	if resp.StatusCode != 404 || !strings.Contains(string(b), api.CodeNotFound) {
		t.Fatalf("unknown hash: %d %s", resp.StatusCode, b)
	}
	resp, b = depotGet(t, r.depotURL+"/artifact/sha256/nothex", "")
	if resp.StatusCode != 400 || !strings.Contains(string(b), api.CodeInvalidSHA256) {
		t.Fatalf("malformed hash: %d %s", resp.StatusCode, b)
	}
	served := r.counter("rackplane_sled_artifact_bytes_served_total")
	if want := float64(len(a.data) + (len(a.data) - 40000) + 10 + 5); served != want {
		t.Fatalf("bytes served %v, want %v", served, want)
	}
}

// source is a test depot in front of a real one: it counts requests,
// records Range headers, and can cut the first responses short, hold a
// response until released, ignore Range, or serve other bytes.
type source struct {
	upstream string
	// cutAfter, when > 0, aborts the first cuts responses after this many
	// body bytes.
	cutAfter    int
	cuts        int32
	ignoreRange bool
	gate        chan struct{}
	wrong       []byte
	// stallAfter, when > 0, holds the first response after this many body
	// bytes until stall is closed or the client goes away.
	stallAfter int
	stall      chan struct{}

	requests atomic.Int32
	served   atomic.Int64
	mu       sync.Mutex
	ranges   []string
}

func (s *source) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := s.requests.Add(1)
	s.mu.Lock()
	s.ranges = append(s.ranges, r.Header.Get("Range"))
	s.mu.Unlock()
	if s.gate != nil {
		<-s.gate
	}
	if s.wrong != nil {
		w.Header().Set("Content-Length", fmt.Sprint(len(s.wrong)))
		w.Write(s.wrong)
		return
	}
	req, _ := http.NewRequest(http.MethodGet, s.upstream+r.URL.Path, nil)
	if rg := r.Header.Get("Range"); rg != "" && !s.ignoreRange {
		req.Header.Set("Range", rg)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	for _, h := range []string{"Content-Length", "Content-Range", "Content-Type"} {
		if v := resp.Header.Get(h); v != "" {
			w.Header().Set(h, v)
		}
	}
	w.WriteHeader(resp.StatusCode)
	if s.cutAfter > 0 && n <= s.cuts {
		m, _ := io.CopyN(w, resp.Body, int64(s.cutAfter))
		s.served.Add(m)
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // drop the connection mid-body
	}
	if s.stallAfter > 0 && n == 1 {
		m, _ := io.CopyN(w, resp.Body, int64(s.stallAfter))
		s.served.Add(m)
		w.(http.Flusher).Flush()
		select {
		case <-s.stall:
		case <-r.Context().Done():
		}
		panic(http.ErrAbortHandler)
	}
	m, _ := io.Copy(w, resp.Body)
	if resp.StatusCode < 300 {
		s.served.Add(m) // artifact bytes, not error bodies
	}
}

func (s *source) rangeHeaders() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.ranges...)
}

// waitCopy waits until the copy of sha has finished and returns it.
func (r *rig) waitCopy(sha string) api.ArtifactCopy {
	r.t.Helper()
	var st api.ArtifactCopy
	waitFor(r.t, 20*time.Second, "the copy to finish", func() error {
		var err error
		st, err = r.api.ArtifactCopyGet(context.Background(), sha)
		if err != nil {
			return err
		}
		if !st.Finished() {
			return fmt.Errorf("state %s, %d/%d bytes", st.State, st.BytesDone, st.BytesTotal)
		}
		return nil
	})
	return st
}

func TestCopyFromDepotFillsBothM2s(t *testing.T) {
	t.Parallel()
	src, dst := newRig(t, rigOptions{noRun: true}), newRig(t, rigOptions{})
	a := newArtifact(t, 3<<20+1)
	src.putConfig(2, a)
	src.mustPut(2, a)
	dst.putConfig(2, a)
	ctx := context.Background()

	st, err := dst.api.ArtifactCopyFromDepot(ctx, a.sha, 2, src.depotURL)
	if err != nil || st.State == api.CopyFailed || st.SourceURL != src.depotURL+api.DepotArtifactPath(a.sha) {
		t.Fatalf("start copy: %+v %v", st, err)
	}
	st = dst.waitCopy(a.sha)
	if st.State != api.CopyDone || st.BytesDone != int64(len(a.data)) || st.BytesTotal != int64(len(a.data)) ||
		len(st.Written) != 2 || st.Attempts != 1 || st.Resumes != 0 || st.TimeFinished.IsZero() {
		t.Fatalf("copy status %+v", st)
	}
	if !dst.holds(0, a) || !dst.holds(1, a) {
		t.Fatal("copy did not fill both M.2s")
	}
	// Asking again answers at once, without copying.
	st, err = dst.api.ArtifactCopyFromDepot(ctx, a.sha, 2, src.depotURL)
	if err != nil || st.State != api.CopyDone || !st.AlreadyPresent {
		t.Fatalf("second request: %+v %v", st, err)
	}
	if got := dst.counter("rackplane_sled_artifact_copies_total", "result", "already_present"); got != 1 {
		t.Fatalf("already_present count %v", got)
	}
	if dst.counter("rackplane_sled_artifact_copies_in_flight") != 0 {
		t.Fatal("copies in flight after all finished")
	}
	dst.assertNoTemps()
}

func TestCopyBadRequests(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{noRun: true})
	a, other := newArtifact(t, 10), newArtifact(t, 10)
	r.putConfig(3, a)
	ctx := context.Background()
	_, err := r.api.ArtifactCopyFromDepot(ctx, a.sha, 2, "http://127.0.0.1:1")
	apiErr(t, err, http.StatusConflict, api.CodeGenerationMismatch)
	_, err = r.api.ArtifactCopyFromDepot(ctx, other.sha, 3, "http://127.0.0.1:1")
	apiErr(t, err, http.StatusBadRequest, api.CodeArtifactNotInConfig)
	_, err = r.api.ArtifactCopyFromDepot(ctx, "ABC", 3, "http://127.0.0.1:1")
	apiErr(t, err, http.StatusBadRequest, api.CodeInvalidSHA256)
	for _, bad := range []string{"", "ftp://x/y", "/relative", "http://user:pw@host/x", "http://"} {
		_, err = r.api.ArtifactCopyFromDepot(ctx, a.sha, 3, bad)
		apiErr(t, err, http.StatusBadRequest, api.CodeInvalidField)
	}
	if list, _ := r.api.ArtifactCopies(ctx); len(list.Copies) != 0 {
		t.Fatalf("bad requests left copies: %+v", list)
	}
}

// A second request for a hash being copied returns the copy in flight
// instead of starting another.
func TestCopyIsNotStartedTwice(t *testing.T) {
	t.Parallel()
	src, dst := newRig(t, rigOptions{noRun: true}), newRig(t, rigOptions{})
	a := newArtifact(t, 1<<20)
	src.putConfig(1, a)
	src.mustPut(1, a)
	dst.putConfig(1, a)
	s := &source{upstream: src.depotURL, gate: make(chan struct{})}
	srv := httptest.NewServer(s)
	defer srv.Close()
	ctx := context.Background()

	first, err := dst.api.ArtifactCopyFromDepot(ctx, a.sha, 1, srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the source to be asked", func() error {
		if s.requests.Load() == 0 {
			return fmt.Errorf("no request yet")
		}
		return nil
	})
	second, err := dst.api.ArtifactCopyFromDepot(ctx, a.sha, 1, srv.URL)
	if err != nil || second.RequestID != first.RequestID || second.State != api.CopyRunning {
		t.Fatalf("second request: %+v %v (first %+v)", second, err, first)
	}
	list, _ := dst.api.ArtifactCopies(ctx)
	if list.InFlight != 1 || len(list.Copies) != 1 {
		t.Fatalf("copies list %+v", list)
	}
	// The artifact listing says what is on its way, and from where.
	// (Errorf, not Fatalf: the gated source must be released below.)
	held, err := dst.api.ArtifactList(ctx)
	if err != nil || len(held.Copying) != 1 || held.Copying[a.sha] != srv.URL+api.DepotArtifactPath(a.sha) ||
		held.Artifacts[a.sha] != 0 {
		t.Errorf("listing during the copy: %+v %v", held, err)
	}
	close(s.gate)
	if st := dst.waitCopy(a.sha); st.State != api.CopyDone {
		t.Fatalf("copy %+v", st)
	}
	if held, err := dst.api.ArtifactList(ctx); err != nil || held.Copying != nil {
		t.Fatalf("listing after the copy: %+v %v", held, err)
	}
	if n := s.requests.Load(); n != 1 {
		t.Fatalf("source got %d requests, want 1", n)
	}
}

// An interrupted transfer resumes with a Range request from the byte where
// it stopped; the source sends every byte once.
func TestCopyResumesWithRange(t *testing.T) {
	t.Parallel()
	src := newRig(t, rigOptions{noRun: true})
	dst := newRig(t, rigOptions{opts: artifacts.Options{CopyBackoff: time.Millisecond}})
	a := newArtifact(t, 5<<20)
	src.putConfig(1, a)
	src.mustPut(1, a)
	dst.putConfig(1, a)
	const cut = 2<<20 + 12345
	s := &source{upstream: src.depotURL, cutAfter: cut, cuts: 1}
	srv := httptest.NewServer(s)
	defer srv.Close()

	if _, err := dst.api.ArtifactCopyFromDepot(context.Background(), a.sha, 1, srv.URL+api.DepotArtifactPath(a.sha)); err != nil {
		t.Fatal(err)
	}
	st := dst.waitCopy(a.sha)
	if st.State != api.CopyDone || st.Attempts != 2 || st.Resumes != 1 {
		t.Fatalf("copy %+v", st)
	}
	ranges := s.rangeHeaders()
	if len(ranges) != 2 || ranges[0] != "" || ranges[1] != fmt.Sprintf("bytes=%d-", cut) {
		t.Fatalf("Range headers %q, want none then bytes=%d-", ranges, cut)
	}
	if got := s.served.Load(); got != int64(len(a.data)) {
		t.Fatalf("source served %d bytes for a %d-byte artifact", got, len(a.data))
	}
	if !dst.holds(0, a) || !dst.holds(1, a) {
		t.Fatal("resumed copy not stored on both M.2s")
	}
	dst.assertNoTemps()
}

// A source that answers a resumed request with the whole artifact (no
// Range support) still gives a correct copy.
func TestCopyFromSourceIgnoringRange(t *testing.T) {
	t.Parallel()
	src := newRig(t, rigOptions{noRun: true})
	dst := newRig(t, rigOptions{opts: artifacts.Options{CopyBackoff: time.Millisecond}})
	a := newArtifact(t, 3<<20)
	src.putConfig(1, a)
	src.mustPut(1, a)
	dst.putConfig(1, a)
	s := &source{upstream: src.depotURL, cutAfter: 1 << 20, cuts: 1, ignoreRange: true}
	srv := httptest.NewServer(s)
	defer srv.Close()
	if _, err := dst.api.ArtifactCopyFromDepot(context.Background(), a.sha, 1, srv.URL); err != nil {
		t.Fatal(err)
	}
	if st := dst.waitCopy(a.sha); st.State != api.CopyDone || st.Attempts != 2 {
		t.Fatalf("copy %+v", st)
	}
	if !dst.holds(0, a) || !dst.holds(1, a) {
		t.Fatal("copy not stored")
	}
}

// A source that returns the wrong bytes: the copy fails, says so, and
// nothing is kept. A source without the artifact fails at once.
func TestCopyFailures(t *testing.T) {
	t.Parallel()
	dst := newRig(t, rigOptions{opts: artifacts.Options{CopyBackoff: time.Millisecond}})
	a := newArtifact(t, 1<<20)
	dst.putConfig(1, a)
	wrong := newArtifact(t, 1<<20)
	s := &source{wrong: wrong.data}
	srv := httptest.NewServer(s)
	defer srv.Close()
	if _, err := dst.api.ArtifactCopyFromDepot(context.Background(), a.sha, 1, srv.URL); err != nil {
		t.Fatal(err)
	}
	st := dst.waitCopy(a.sha)
	if st.State != api.CopyFailed || !strings.Contains(st.Error, "wrong bytes") || !strings.Contains(st.Error, wrong.sha) {
		t.Fatalf("copy from a lying source: %+v", st)
	}
	dst.assertNothingKept(a.sha)

	// An empty depot answers 404: no retries.
	empty := newRig(t, rigOptions{noRun: true})
	if _, err := dst.api.ArtifactCopyFromDepot(context.Background(), a.sha, 1, empty.depotURL); err != nil {
		t.Fatal(err)
	}
	st = dst.waitCopy(a.sha)
	if st.State != api.CopyFailed || st.Attempts != 1 || !strings.Contains(st.Error, "404") {
		t.Fatalf("copy from a depot without it: %+v", st)
	}
	if got := dst.counter("rackplane_sled_artifact_copies_total", "result", "failed"); got != 2 {
		t.Fatalf("failed copies metric %v", got)
	}
	dst.assertNothingKept(a.sha)
}

// When one M.2 already holds the artifact, a copy request fills the other
// from it locally, not over the network.
func TestCopyPrefersSiblingM2(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{absent: []int{1}, noRun: true})
	a := newArtifact(t, 1<<20)
	r.putConfig(1, a)
	r.mustPut(1, a)
	if err := mkdir(r.dirs[1]); err != nil {
		t.Fatal(err)
	}
	r.w.Poll()
	s := &source{wrong: []byte("never asked")}
	srv := httptest.NewServer(s)
	defer srv.Close()
	if _, err := r.api.ArtifactCopyFromDepot(context.Background(), a.sha, 1, srv.URL); err != nil {
		t.Fatal(err)
	}
	st := r.waitCopy(a.sha)
	if st.State != api.CopyDone || st.LocalSource != r.dirs[0] || s.requests.Load() != 0 {
		t.Fatalf("copy %+v, source asked %d times", st, s.requests.Load())
	}
	if !r.holds(1, a) {
		t.Fatal("sibling not filled")
	}
}
