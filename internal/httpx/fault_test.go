package httpx

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/rs/zerolog"

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
