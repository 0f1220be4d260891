package httpx

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/internal/fault"
)

// Every fault kind answers with its own status and keeps its code and
// message; an internal fault hides its message like any unclassified error.
func TestFaultsMapToStatusesOnce(t *testing.T) {
	cases := []struct {
		err    error
		status int
		code   string
	}{
		{fault.Invalidf("bad_thing", "the thing is bad"), 400, "bad_thing"},
		{fault.NotFoundf("not_found", "no such thing"), 404, "not_found"},
		{fault.Conflictf("repo_conflict", "already there"), 409, "repo_conflict"},
		{fault.New(fault.TooLarge, "body_too_large", "too big"), 413, "body_too_large"},
		{fault.New(fault.Unavailable, "service_unavailable", "later"), 503, "service_unavailable"},
		{fault.New(fault.Busy, "busy", "later"), 429, "busy"},
		{fault.New(fault.Unauthenticated, "unauthenticated", "who are you"), 401, "unauthenticated"},
		{fault.New(fault.Forbidden, "forbidden", "no"), 403, "forbidden"},
		{fault.New(fault.RangeNotSatisfiable, "bad_range", "no"), 416, "bad_range"},
		{fault.New(fault.MethodNotAllowed, "method_not_allowed", "no"), 405, "method_not_allowed"},
		{fault.New(fault.Canceled, "client_closed_request", "gone"), 499, "client_closed_request"},
		{fault.New(fault.Timeout, "proxy_timeout", "no answer"), 504, "proxy_timeout"},
		{fault.New(fault.InsufficientStorage, "insufficient_storage", "full"), 507, "insufficient_storage"},
		// Wrapped faults are found through the chain.
		{fmt.Errorf("upload: %w", fault.Invalidf("not_a_zip", "not a zip")), 400, "not_a_zip"},
		{fault.New(fault.Internal, "whatever", "secret detail"), 500, "internal_error"},
	}
	for _, c := range cases {
		r := NewRouter(zerolog.Nop())
		r.Get("/x", Handlers{}.H(func(http.ResponseWriter, *http.Request) error { return c.err }))
		srv := httptest.NewServer(r)
		resp, err := http.Get(srv.URL + "/x")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		srv.Close()
		var body map[string]any
		if err := json.Unmarshal(b, &body); err != nil {
			t.Fatalf("%v: body %s", c.err, b)
		}
		if resp.StatusCode != c.status || body["error_code"] != c.code || body["request_id"] == "" {
			t.Errorf("%v: got %d %s, want %d %s", c.err, resp.StatusCode, b, c.status, c.code)
		}
		if c.status == 500 && strings.Contains(string(b), "secret") {
			t.Errorf("an internal fault leaked its message: %s", b)
		}
	}
}

// A fault's extra fields sit beside the standard ones, and the cause stays
// out of the body.
func TestFaultExtraFieldsAndCause(t *testing.T) {
	f := fault.Wrap(errors.New("disk says no"), fault.Conflict, "config_generation", "held %d", 7).
		With("held_generation", uint64(7))
	r := NewRouter(zerolog.Nop())
	r.Get("/x", Handlers{}.H(func(http.ResponseWriter, *http.Request) error { return f }))
	srv := httptest.NewServer(r)
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/x")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Code    string `json:"error_code"`
		Message string `json:"message"`
		ReqID   string `json:"request_id"`
		Held    uint64 `json:"held_generation"`
	}
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &body); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 409 || body.Code != "config_generation" || body.Message != "held 7" || body.Held != 7 ||
		body.ReqID == "" || strings.Contains(string(b), "disk says no") {
		t.Fatalf("got %d %s", resp.StatusCode, b)
	}
	if f.Extra["held_generation"] != uint64(7) || len(fault.Conflictf("x", "y").Extra) != 0 {
		t.Fatal("With must copy, not share, the extra fields")
	}
}

// Every kind fault declares has its own entry in the status table: a kind
// added without one would silently answer 500.
func TestEveryKindHasAStatus(t *testing.T) {
	n := 0
	for k := fault.Kind(0); !strings.HasPrefix(k.String(), "kind("); k++ {
		n++
		if _, ok := statusOf[k]; !ok {
			t.Errorf("kind %v has no HTTP status in statusOf", k)
		}
	}
	if n < 14 || len(statusOf) != n {
		t.Fatalf("%d named kinds, %d statuses", n, len(statusOf))
	}
	seen := map[int]fault.Kind{}
	for k, s := range statusOf {
		if other, dup := seen[s]; dup {
			t.Errorf("kinds %v and %v both answer %d", k, other, s)
		}
		seen[s] = k
	}
}

// A request whose client has gone away is answered (for the log) as 499,
// whatever the handler's error said.
func TestClientGoneIs499(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	req := httptest.NewRequest("GET", "/x", nil).WithContext(ctx)
	rec := httptest.NewRecorder()
	WriteError(rec, req, fmt.Errorf("reading the body: %w", context.Canceled))
	var e api.Error
	if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil {
		t.Fatal(err)
	}
	if rec.Code != 499 || e.ErrorCode != "client_closed_request" {
		t.Fatalf("got %d %s", rec.Code, rec.Body)
	}
	// The same error while the client is still there is an internal one.
	rec = httptest.NewRecorder()
	WriteError(rec, httptest.NewRequest("GET", "/x", nil), fmt.Errorf("reading the body: %w", context.Canceled))
	if rec.Code != 500 {
		t.Fatalf("a cancellation the client did not cause answered %d", rec.Code)
	}
}

// The plumbing's own refusals (bodies, routes, methods) are faults with
// the statuses and codes they always had.
func TestPlumbingRefusals(t *testing.T) {
	type body struct {
		Name string `json:"name"`
	}
	r := NewRouter(zerolog.Nop())
	r.Post("/x", Handlers{}.H(func(w http.ResponseWriter, r *http.Request) error {
		var b body
		if err := DecodeJSON(r, &b, 64); err != nil {
			return err
		}
		WriteJSON(w, 200, b)
		return nil
	}))
	srv := httptest.NewServer(r)
	defer srv.Close()
	for _, c := range []struct {
		method, path, body string
		status             int
		code, message      string
	}{
		{"POST", "/x", "", 400, api.CodeInvalidBody, "request body is empty; expected a JSON object"},
		{"POST", "/x", `{"name": "a"} {}`, 400, api.CodeInvalidBody, "request body has data after the JSON value"},
		{"POST", "/x", `{"name": 1}`, 400, api.CodeInvalidField, `field "name" must be a string, not number`},
		{"POST", "/x", `{"other": 1}`, 400, api.CodeInvalidField, `unknown field "other"`},
		{"POST", "/x", `{"name": "` + strings.Repeat("a", 100) + `"}`, 413, api.CodeBodyTooLarge,
			"request body is larger than 64 bytes"},
		{"GET", "/nowhere", "", 404, api.CodeNotFound, "no such route: GET /nowhere"},
		{"GET", "/x", "", 405, api.CodeMethodNotAllowed, "method GET is not allowed on /x"},
	} {
		req, _ := http.NewRequest(c.method, srv.URL+c.path, strings.NewReader(c.body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var e api.Error
		derr := json.NewDecoder(resp.Body).Decode(&e)
		resp.Body.Close()
		if derr != nil || resp.StatusCode != c.status || e.ErrorCode != c.code || e.Message != c.message {
			t.Errorf("%s %s %q: got %d %+v (%v), want %d %s %q", c.method, c.path, c.body, resp.StatusCode, e, derr,
				c.status, c.code, c.message)
		}
	}
}
