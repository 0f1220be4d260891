package client_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/api/client"
	"github.com/rackplane/rackplane/internal/reqid"
)

// These tests look at what the clients put on the wire, which no real
// server reports back: a recording server stands at the other end. That
// the routes exist and answer is tested against real servers (the
// api/openapi drift tests and every Nexus and sled-agent test).

// received is what the recording server saw of one request.
type received struct {
	method, path, rawQuery, contentType, requestID string
	contentLength                                  int64
	transferEncoding                               []string
	bodySHA256                                     string
	bodyBytes                                      int64
}

func recorder(t *testing.T, answer func(w http.ResponseWriter, r *http.Request)) (*httptest.Server, func() []received) {
	t.Helper()
	var mu sync.Mutex
	var got []received
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		if err != nil {
			t.Errorf("reading the body: %v", err)
		}
		mu.Lock()
		got = append(got, received{method: r.Method, path: r.URL.EscapedPath(), rawQuery: r.URL.RawQuery,
			contentType: r.Header.Get("Content-Type"), requestID: r.Header.Get(reqid.Header),
			contentLength: r.ContentLength, transferEncoding: r.TransferEncoding,
			bodySHA256: hex.EncodeToString(h.Sum(nil)), bodyBytes: n})
		mu.Unlock()
		answer(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, func() []received {
		mu.Lock()
		defer mu.Unlock()
		return append([]received(nil), got...)
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// randomReader is a stream that is not a bytes or strings reader, so
// nothing but the client can tell http.Request its length.
type randomReader struct{ r *rand.ChaCha8 }

func (r randomReader) Read(p []byte) (int, error) { return r.r.Read(p) }

// The upload goes out as one stream with its Content-Length (not
// chunked), with progress reported up to the total, and the caller's
// request id.
func TestRepoUploadStreamsWithLengthAndProgress(t *testing.T) {
	srv, got := recorder(t, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, api.TufRepoUpload{Status: api.UploadInserted, Generation: 7})
	})
	nx, err := client.NewNexus(srv.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	const size = 8<<20 + 3
	src := io.LimitReader(randomReader{rand.NewChaCha8([32]byte{1})}, size)
	want := sha256.New()
	var mu sync.Mutex
	var calls, last int64
	ctx := reqid.With(context.Background(), "rackctl-test-1")
	res, err := nx.RepoUpload(ctx, "release 1.zip", io.TeeReader(src, want), size, func(sent, total int64) {
		mu.Lock()
		defer mu.Unlock()
		if sent < last || total != size {
			t.Errorf("progress %d of %d after %d", sent, total, last)
		}
		calls, last = calls+1, sent
	})
	if err != nil || res.Generation != 7 {
		t.Fatalf("upload: %+v, %v", res, err)
	}
	r := got()[0]
	if r.method != http.MethodPut || r.path != "/v1/system/update/repositories" || r.rawQuery != "file_name=release+1.zip" {
		t.Errorf("request %s %s?%s", r.method, r.path, r.rawQuery)
	}
	if r.contentLength != size || len(r.transferEncoding) != 0 || r.contentType != "application/zip" {
		t.Errorf("sent Content-Length %d, Transfer-Encoding %v, Content-Type %q; want %d, none, application/zip",
			r.contentLength, r.transferEncoding, r.contentType, size)
	}
	if r.bodyBytes != size || r.bodySHA256 != hex.EncodeToString(want.Sum(nil)) {
		t.Errorf("server received %d bytes hashing %s, want the %d bytes read", r.bodyBytes, r.bodySHA256, size)
	}
	if r.requestID != "rackctl-test-1" {
		t.Errorf("request id %q, want the context's", r.requestID)
	}
	if calls < 2 || last != size {
		t.Errorf("progress called %d times, last at %d of %d", calls, last, size)
	}
}

// An artifact PUT names hash and generation in the URL and streams the
// body with its length; an unknown length (-1) goes out chunked.
func TestArtifactPutStreamsWithLength(t *testing.T) {
	srv, got := recorder(t, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, api.ArtifactPutResult{Copies: 2})
	})
	sc, err := client.NewSledAgent(srv.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	sha := strings.Repeat("ab", 32)
	body := func() io.Reader { return io.LimitReader(randomReader{rand.NewChaCha8([32]byte{2})}, 1<<20) }
	if _, err := sc.ArtifactPut(context.Background(), sha, 18446744073709551615, body(), 1<<20); err != nil {
		t.Fatal(err)
	}
	if _, err := sc.ArtifactPut(context.Background(), sha, 3, body(), -1); err != nil {
		t.Fatal(err)
	}
	reqs := got()
	known, unknown := reqs[0], reqs[1]
	if known.path != "/artifacts/"+sha || known.rawQuery != "generation=18446744073709551615" ||
		known.contentLength != 1<<20 || len(known.transferEncoding) != 0 || known.contentType != "application/octet-stream" {
		t.Errorf("known length: %+v", known)
	}
	if unknown.contentLength != -1 || len(unknown.transferEncoding) != 1 || unknown.bodyBytes != 1<<20 {
		t.Errorf("unknown length: %+v", unknown)
	}
}

// A trust root goes out byte for byte: its hash is what Nexus records.
func TestTrustRootAddSendsTheDocumentAsIs(t *testing.T) {
	doc := []byte("{\"signed\":  {\"_type\":\"root\"},\n \"signatures\": []}")
	srv, got := recorder(t, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusCreated, api.TrustRoot{ID: uuid.New()})
	})
	nx, err := client.NewNexus(srv.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, created, err := nx.TrustRootAdd(context.Background(), doc)
	if err != nil || !created {
		t.Fatalf("add: created %v, %v", created, err)
	}
	sum := sha256.Sum256(doc)
	if r := got()[0]; r.bodySHA256 != hex.EncodeToString(sum[:]) || r.contentType != "application/json" {
		t.Errorf("sent %+v, want the document unchanged", r)
	}
}

// Listings follow next_page until a page has none, passing each token
// back as page_token.
func TestListingsFollowPages(t *testing.T) {
	ids := []uuid.UUID{uuid.New(), uuid.New(), uuid.New()}
	srv, got := recorder(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Query().Get("page_token") {
		case "":
			writeJSON(w, http.StatusOK, api.Page[api.Sled]{Items: []api.Sled{{ID: ids[0]}, {ID: ids[1]}}, NextPage: "p/2"})
		case "p/2":
			writeJSON(w, http.StatusOK, api.Page[api.Sled]{Items: []api.Sled{{ID: ids[2]}}})
		default:
			writeJSON(w, http.StatusBadRequest, api.Error{ErrorCode: api.CodeInvalidParameter, Message: "bad token"})
		}
	})
	nx, err := client.NewNexus(srv.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	sleds, err := nx.SledList(context.Background())
	if err != nil || len(sleds) != 3 || sleds[2].ID != ids[2] {
		t.Fatalf("listed %+v, %v", sleds, err)
	}
	reqs := got()
	if len(reqs) != 2 || reqs[0].rawQuery != "" || reqs[1].rawQuery != "page_token=p%2F2" {
		t.Errorf("requests %+v", reqs)
	}
}

// Every non-2xx answer is an *api.Error, whether the body is ours or not,
// with the status and the request id.
func TestErrorsAreAPIErrors(t *testing.T) {
	srv, _ := recorder(t, func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/kept") {
			w.Header().Set(reqid.Header, "srv-1")
			http.Error(w, "upstream gone", http.StatusBadGateway)
			return
		}
		writeJSON(w, http.StatusNotFound, api.Error{ErrorCode: api.CodeNotFound, Message: "no repo", RequestID: "srv-2"})
	})
	nx, err := client.NewNexus(srv.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = nx.RepoGet(context.Background(), "1.0.0")
	if client.StatusCode(err) != 404 || client.ErrorCode(err) != api.CodeNotFound || !strings.Contains(err.Error(), "srv-2") {
		t.Errorf("our error body: %v", err)
	}
	_, err = nx.RepoSetKept(context.Background(), "1.0.0", true)
	if client.StatusCode(err) != 502 || client.ErrorCode(err) != "http_502" || !strings.Contains(err.Error(), "upstream gone") ||
		!strings.Contains(err.Error(), "srv-1") {
		t.Errorf("a foreign error body: %v", err)
	}
}

// A base URL with a path keeps it: the generated builders resolve
// operation paths against it.
func TestBaseURLPathIsKept(t *testing.T) {
	srv, got := recorder(t, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, api.ScrubStatus{})
	})
	sc, err := client.NewSledAgent(srv.URL+"/sled-7/", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sc.ArtifactScrubStart(context.Background()); err != nil {
		t.Fatal(err)
	}
	if r := got()[0]; r.method != http.MethodPost || r.path != "/sled-7/artifacts/scrub" {
		t.Errorf("sent %s %s", r.method, r.path)
	}
}
