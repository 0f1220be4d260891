package artifacts_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/rackplane/rackplane/api"
)

func TestPutStoresOnBothM2sAndCountsCopies(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{noRun: true})
	a, b := newArtifact(t, 3<<20+17), newArtifact(t, 100)
	r.putConfig(4, a, b)

	res := r.mustPut(4, a)
	if res.Size != int64(len(a.data)) || len(res.Written) != 2 || res.Copies != 2 || res.Generation != 4 || len(res.Failed) != 0 {
		t.Fatalf("put result %+v", res)
	}
	if !r.holds(0, a) || !r.holds(1, a) {
		t.Fatal("artifact not on both M.2s")
	}
	list, err := r.api.ArtifactList(context.Background())
	if err != nil || list.Generation != 4 || list.Artifacts[a.sha] != 2 || list.Artifacts[b.sha] != 0 || len(list.Artifacts) != 2 {
		t.Fatalf("list %+v %v", list, err)
	}
	// A second put of the same artifact writes nothing new.
	res = r.mustPut(4, a)
	if len(res.Written) != 0 || len(res.AlreadyHeld) != 2 || res.Copies != 2 {
		t.Fatalf("re-put result %+v", res)
	}
	if got := r.counter("rackplane_sled_artifact_bytes_written_total", "source", "put"); got != float64(2*len(a.data)) {
		t.Fatalf("bytes written %v, want %d", got, 2*len(a.data))
	}
	r.assertNothingKept(b.sha)
}

func TestPutBadRequests(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{noRun: true})
	a, other := newArtifact(t, 1000), newArtifact(t, 1000)
	r.putConfig(3, a)

	_, err := r.put(2, a)
	apiErr(t, err, http.StatusConflict, api.CodeGenerationMismatch)
	_, err = r.put(4, a)
	apiErr(t, err, http.StatusConflict, api.CodeGenerationMismatch)
	_, err = r.put(3, other)
	apiErr(t, err, http.StatusBadRequest, api.CodeArtifactNotInConfig)

	for _, bad := range []string{strings.ToUpper(a.sha), a.sha[:40], "zz" + a.sha[2:], a.sha + "0"} {
		_, err := r.api.ArtifactPut(context.Background(), bad, 3, bytes.NewReader(a.data), int64(len(a.data)))
		apiErr(t, err, http.StatusBadRequest, api.CodeInvalidSHA256)
	}
	for _, q := range []string{"", "generation=", "generation=-1", "generation=x"} {
		resp, err := http.DefaultClient.Do(mustReq(t, http.MethodPut, r.api.URL("/artifacts/"+a.sha, nil)+"?"+q, a.data))
		if err != nil {
			t.Fatal(err)
		}
		var e api.Error
		derr := json.NewDecoder(resp.Body).Decode(&e)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("query %q: HTTP %d, want 400", q, resp.StatusCode)
		}
		if derr != nil || e.ErrorCode != api.CodeInvalidParameter || !strings.Contains(e.Message, "query parameter generation") {
			t.Fatalf("query %q: body %+v (%v), want invalid_parameter naming the generation", q, e, derr)
		}
	}
	r.assertNothingKept(a.sha)
	r.assertNothingKept(other.sha)
}

func mustReq(t *testing.T, method, u string, body []byte) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, u, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// Bodies that are not the artifact are refused with 400 and leave nothing:
// shorter, longer, a flipped byte, and a connection cut before the
// Content-Length was reached.
func TestPutBadBodiesKeepNothing(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{noRun: true})
	a := newArtifact(t, 2<<20+5)
	r.putConfig(1, a)
	flipped := slices.Clone(a.data)
	flipped[len(flipped)/2] ^= 0x01
	for name, body := range map[string][]byte{
		"shorter": a.data[:len(a.data)-1],
		"longer":  append(slices.Clone(a.data), 'x'),
		"flipped": flipped,
		"empty":   {},
	} {
		_, err := r.api.ArtifactPut(context.Background(), a.sha, 1, bytes.NewReader(body), int64(len(body)))
		apiErr(t, err, http.StatusBadRequest, api.CodeHashMismatch)
		if !strings.Contains(err.Error(), "nothing was kept") {
			t.Errorf("%s: message does not say nothing was kept: %v", name, err)
		}
		r.assertNothingKept(a.sha)
	}

	// A truncated body: announce the full length, send half, half-close.
	u, _ := url.Parse(r.api.BaseURL())
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "PUT /artifacts/%s?generation=1 HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n\r\n",
		a.sha, u.Host, len(a.data))
	conn.Write(a.data[:len(a.data)/2])
	conn.(*net.TCPConn).CloseWrite()
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), api.CodeLengthMismatch) {
		t.Fatalf("truncated body: HTTP %d %s", resp.StatusCode, b)
	}
	r.assertNothingKept(a.sha)

	// The real artifact still goes in afterwards.
	r.mustPut(1, a)
	if !r.holds(0, a) || !r.holds(1, a) {
		t.Fatal("good put after bad ones did not store the artifact")
	}
}

// Many writers of the same hash at once, good and bad bodies mixed: every
// good one succeeds, every bad one is refused, and the stored copies are
// exactly the artifact with no temp file left.
func TestConcurrentWritersOfSameHash(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{noRun: true})
	a := newArtifact(t, 4<<20)
	r.putConfig(1, a)
	bad := slices.Clone(a.data)
	bad[0] ^= 0xff
	var wg sync.WaitGroup
	errs := make([]error, 12)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := a.data
			if i%3 == 2 {
				body = bad
			}
			_, errs[i] = r.api.ArtifactPut(context.Background(), a.sha, 1, bytes.NewReader(body), int64(len(body)))
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if i%3 == 2 {
			apiErr(t, err, http.StatusBadRequest, api.CodeHashMismatch)
		} else if err != nil {
			t.Fatalf("writer %d: %v", i, err)
		}
	}
	if !r.holds(0, a) || !r.holds(1, a) {
		t.Fatal("artifact missing after concurrent writes")
	}
	r.assertNoTemps()
}

// One M.2 full: the other still takes the artifact and the answer names
// the full one. Both full: 507 insufficient_storage, nothing kept.
func TestPutWithFullM2(t *testing.T) {
	t.Parallel()
	a := newArtifact(t, 3<<20)

	t.Run("one full", func(t *testing.T) {
		t.Parallel()
		r := newRig(t, rigOptions{noRun: true, budgets: map[int]int64{0: 1 << 20}})
		r.putConfig(1, a)
		res := r.mustPut(1, a)
		if !slices.Equal(res.Written, r.dirs[1:]) || len(res.Failed) != 1 || !res.Failed[0].Full ||
			res.Failed[0].M2 != r.dirs[0] || res.Copies != 1 {
			t.Fatalf("put result %+v", res)
		}
		if r.holds(0, a) || !r.holds(1, a) {
			t.Fatal("wrong M.2s hold the artifact")
		}
		r.assertNoTemps()
		list, _ := r.api.ArtifactList(context.Background())
		if list.Artifacts[a.sha] != 1 {
			t.Fatalf("copies %d, want 1", list.Artifacts[a.sha])
		}
	})

	t.Run("both full", func(t *testing.T) {
		t.Parallel()
		r := newRig(t, rigOptions{noRun: true, budgets: map[int]int64{0: 1 << 20, 1: 2 << 20}})
		r.putConfig(1, a)
		_, err := r.put(1, a)
		apiErr(t, err, http.StatusInsufficientStorage, api.CodeInsufficientStorage)
		for _, d := range r.dirs {
			if !strings.Contains(err.Error(), d) {
				t.Errorf("message does not name %s: %v", d, err)
			}
		}
		r.assertNothingKept(a.sha)
	})
}
