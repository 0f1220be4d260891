package nexus_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/api/client"
	"github.com/rackplane/rackplane/internal/racktest"
	"github.com/rackplane/rackplane/internal/testdb"
	"github.com/rackplane/rackplane/internal/tufgen"
	"github.com/rackplane/rackplane/nexus"
	"github.com/rackplane/rackplane/nexus/model"
)

// callWith calls path on nx's external API with token (none when empty).
func callWith(t *testing.T, nx *racktest.Nexus, token, method, path string, body []byte) (int, api.Error) {
	t.Helper()
	h := http.Header{}
	if token != "" {
		h.Set("Authorization", "Bearer "+token)
	}
	status, e, _ := rawCall(t, method, nx.ExternalURL()+path, string(body), h)
	return status, e
}

// Every route of the external API but /healthz and the document needs a
// token: 401 without one (or with a bad, expired or revoked one), 403 for a
// viewer's change, each saying what to do and changing nothing; and the
// audit log records the refusals as well as the changes.
func TestExternalAPIIsLocked(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	nx := racktest.StartNexus(t, db.URL, nexus.Config{})
	ctx := context.Background()
	l := newLineage(t, 70, tufgen.LineageOptions{})
	root := l.TrustRoot()
	viewer := nx.Token(t, "looker", model.RoleViewer, 0)
	expired := nx.Token(t, "brief", model.RoleAdmin, 50*time.Millisecond)
	revoked := nx.Token(t, "gone", model.RoleAdmin, 0)
	toks, err := nx.Client.TokenList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, tk := range toks {
		if tk.Name == "gone" {
			if _, err := nx.Client.TokenRevoke(ctx, tk.ID); err != nil {
				t.Fatal(err)
			}
		}
	}
	time.Sleep(100 * time.Millisecond)

	for _, c := range []struct {
		name, token, code string
		status            int
	}{
		{"no token", "", api.CodeUnauthenticated, 401},
		{"not a token", "hunter2", api.CodeInvalidToken, 401},
		{"a token this rack never issued", "rp_" + strings.Repeat("A", 43), api.CodeInvalidToken, 401},
		{"expired", expired, api.CodeTokenExpired, 401},
		{"revoked", revoked, api.CodeTokenRevoked, 401},
		{"viewer adding a trust root", viewer, api.CodeForbidden, 403},
	} {
		status, e := callWith(t, nx, c.token, "POST", "/v1/system/update/trust-roots", root)
		if status != c.status || e.ErrorCode != c.code || e.RequestID == "" || len(e.Message) < 30 {
			t.Errorf("%s: %d %+v, want %d %s", c.name, status, e, c.status, c.code)
		}
		if c.status == 401 && !strings.Contains(e.Message, "token") {
			t.Errorf("%s: the message does not say what to do: %q", c.name, e.Message)
		}
	}
	for _, path := range []string{"/v1/system/hardware/sleds", "/v1/system/background-tasks", "/metrics",
		"/v1/system/update/repositories", "/v1/system/audit-log", "/v1/system/tokens"} {
		if status, e := callWith(t, nx, "", "GET", path, nil); status != 401 || e.ErrorCode != api.CodeUnauthenticated {
			t.Errorf("GET %s without a token: %d %+v", path, status, e)
		}
	}
	if n := db.Count(t, `SELECT count(*) FROM tuf_trust_root`); n != 0 {
		t.Fatalf("a refused request registered a trust root (%d)", n)
	}
	// A viewer reads everything but the tokens.
	for path, want := range map[string]int{"/v1/system/hardware/sleds": 200, "/metrics": 200,
		"/v1/system/audit-log": 200, "/v1/system/tokens": 403} {
		if status, e := callWith(t, nx, viewer, "GET", path, nil); status != want {
			t.Errorf("viewer GET %s: %d %+v, want %d", path, status, e, want)
		}
	}
	// Public: whether Nexus is up, and what its API is.
	for _, path := range []string{"/healthz", "/openapi.json"} {
		if status, _ := callWith(t, nx, "", "GET", path, nil); status != 200 {
			t.Errorf("GET %s without a token: %d", path, status)
		}
	}

	// An admin's token made through the API works at once, and its
	// secret is never listed.
	made, err := nx.Client.TokenCreate(ctx, api.OperatorTokenCreate{Name: "ci", Role: api.RoleAdmin})
	if err != nil || !strings.HasPrefix(made.Token, "rp_") || made.Role != api.RoleAdmin {
		t.Fatalf("token create: %+v %v", made, err)
	}
	ci := nx.Client.WithToken(made.Token)
	if _, _, err := ci.TrustRootAdd(ctx, root); err != nil {
		t.Fatalf("the new token: %v", err)
	}
	b, _ := json.Marshal(toks)
	if strings.Contains(string(b), viewer) || strings.Contains(string(b), "rp_") {
		t.Fatal("the token list holds secrets")
	}
	if _, err := ci.TokenCreate(ctx, api.OperatorTokenCreate{Name: "", Role: "root"}); client.ErrorCode(err) != api.CodeInvalidField {
		t.Fatalf("bad token request: %v", err)
	}

	// The audit log has the refusals and the changes, with who and the
	// request id.
	log, err := nx.Client.AuditLog(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	var sawRefused, sawCreate, sawRevoke bool
	for _, e := range log {
		switch {
		case e.Action == "POST /v1/system/update/trust-roots" && e.Outcome == "refused" && e.Actor == "looker" &&
			e.ErrorCode == api.CodeForbidden:
			sawRefused = true
		case e.Action == "trust_root.create" && e.Outcome == "ok" && e.Actor == "ci" && strings.HasPrefix(e.Target, "trust root sha256 "):
			sawCreate = e.RequestID != ""
		case e.Action == "token.revoke" && e.Outcome == "ok" && e.Actor == "racktest-admin":
			sawRevoke = true
		}
	}
	if !sawRefused || !sawCreate || !sawRevoke {
		t.Fatalf("audit log (refused %v, create %v, revoke %v):\n%v", sawRefused, sawCreate, sawRevoke, log)
	}
}

// A change and its audit entry commit together: an upload that the
// database refuses leaves a "refused" entry and no "ok" one.
func TestAuditEntriesCommitWithTheirChange(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	nx := racktest.StartNexus(t, db.URL, nexus.Config{})
	ctx := context.Background()
	l := newLineage(t, 71, tufgen.LineageOptions{})
	if _, _, err := nx.Client.TrustRootAdd(ctx, l.TrustRoot()); err != nil {
		t.Fatal(err)
	}
	first, _ := buildRepo(t, l, tufgen.Demo("1.0.0"))
	if _, err := nx.Client.RepoUpload(ctx, "a.zip", bytes.NewReader(first), int64(len(first)), nil); err != nil {
		t.Fatal(err)
	}
	// The same version with other contents: refused by the database's
	// own check, inside the upload's transaction.
	r := tufgen.Demo("1.0.0")
	r.Artifacts[0].Seed++
	second, _ := buildRepo(t, l, r)
	_, err := nx.Client.RepoUpload(ctx, "b.zip", bytes.NewReader(second), int64(len(second)), nil)
	if client.ErrorCode(err) != api.CodeRepoConflict {
		t.Fatalf("conflicting upload: %v", err)
	}
	if n := db.Count(t, `SELECT count(*) FROM audit_log WHERE action = 'repo.upload' AND outcome = 'ok' AND target = 'repo 1.0.0'`); n != 1 {
		t.Fatalf("%d ok upload entries, want 1", n)
	}
	if n := db.Count(t, `SELECT count(*) FROM audit_log WHERE action = 'repo.upload' AND outcome = 'refused'
		AND error_code = 'repo_conflict'`); n != 1 {
		t.Fatalf("%d refused upload entries, want 1", n)
	}
}
