package httpx_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/api/gen/external"
	"github.com/rackplane/rackplane/internal/httpx"
)

// The generated wrappers' parameter errors reach the caller as our 400
// body, worded by the rules where there are rules and naming the
// parameter and where it was where there are none. Nexus's generated
// routes stand in for any: only the wrappers run (the handlers are the
// generated Unimplemented ones, which answer 501).
func TestParamErrorHandler(t *testing.T) {
	r := httpx.NewRouter(zerolog.Nop())
	rules := httpx.PageRules.With(httpx.ParamRules{
		"sled_id":   httpx.UUIDParam("sled_id"),
		"file_name": {Code: api.CodeMissingFileName, Missing: "query parameter file_name is required: the archive's name"},
	})
	external.HandlerWithOptions(external.Unimplemented{}, external.ChiServerOptions{
		BaseRouter: r, ErrorHandlerFunc: httpx.ParamErrorHandler(rules)})
	srv := httptest.NewServer(r)
	defer srv.Close()
	for _, tc := range []struct {
		method, path string
		status       int
		code, want   string
	}{
		{"GET", "/v1/system/hardware/sleds/nope", 400, api.CodeInvalidParameter, `path parameter sled_id: "nope" is not a UUID`},
		{"GET", "/v1/system/hardware/sleds?limit=ten", 400, api.CodeInvalidParameter, `query parameter limit must be an integer from 1 to 1000, not "ten"`},
		{"PUT", "/v1/system/update/repositories", 400, api.CodeMissingFileName, "query parameter file_name is required: the archive's name"},
		// An empty string binds as a string: the handler's own check
		// answers it.
		{"PUT", "/v1/system/update/repositories?file_name=", 501, "", ""},
		// No rule: the parameter, where it was, and what was wrong.
		{"GET", "/v1/system/update/trust-roots/nope", 400, api.CodeInvalidParameter, `path parameter id: "nope" is not valid:`},
		{"GET", "/v1/system/update/repositories?include_pruned=maybe", 400, api.CodeInvalidParameter, `query parameter include_pruned: "maybe" is not valid:`},
		// Well-formed parameters reach the handler.
		{"GET", "/v1/system/hardware/sleds?limit=5", 501, "", ""},
	} {
		req, _ := http.NewRequest(tc.method, srv.URL+tc.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var e api.Error
		derr := json.NewDecoder(resp.Body).Decode(&e)
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Errorf("%s %s: HTTP %d, want %d", tc.method, tc.path, resp.StatusCode, tc.status)
			continue
		}
		if tc.status == 400 && (derr != nil || e.ErrorCode != tc.code || !strings.HasPrefix(e.Message, tc.want) || e.RequestID == "") {
			t.Errorf("%s %s: %+v (%v), want %s starting %q", tc.method, tc.path, e, derr, tc.code, tc.want)
		}
	}
}
