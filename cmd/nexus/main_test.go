package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/rackplane/rackplane/internal/testdb"
)

func TestMain(m *testing.M) { testdb.Main(m) }

func nexusCmd(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(context.Background(), args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestMigrateStatusAndUp(t *testing.T) {
	db := testdb.NewEmpty(t)
	code, out, errOut := nexusCmd(t, "migrate", "status", "--database-url", db.URL)
	if code != 3 || !strings.Contains(out, "no rackplane schema") {
		t.Fatalf("status of an empty database: exit %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = nexusCmd(t, "migrate", "up", "--database-url", db.URL)
	if code != 0 || !strings.Contains(out, "created schema at version") {
		t.Fatalf("up: exit %d\n%s%s", code, out, errOut)
	}
	code, out, _ = nexusCmd(t, "migrate", "up", "--database-url", db.URL)
	if code != 0 || !strings.Contains(out, "nothing to do") {
		t.Fatalf("second up: exit %d\n%s", code, out)
	}
	code, out, _ = nexusCmd(t, "migrate", "status", "--database-url", db.URL)
	if code != 0 || !strings.Contains(out, "up to date") {
		t.Fatalf("status after up: exit %d\n%s", code, out)
	}
	if _, err := db.Pool.Exec(context.Background(), "UPDATE schema_migrations SET dirty = true"); err != nil {
		t.Fatal(err)
	}
	code, out, _ = nexusCmd(t, "migrate", "status", "--database-url", db.URL)
	if code != 1 || !strings.Contains(out, "dirty") {
		t.Fatalf("status of a dirty schema: exit %d\n%s", code, out)
	}
}

func TestFlagsAndEnvironment(t *testing.T) {
	code, _, errOut := nexusCmd(t, "--help")
	if code != 0 || !strings.Contains(errOut, "--database-url") || !strings.Contains(errOut, "$RACKPLANE_DATABASE_URL") ||
		!strings.Contains(errOut, "--auto-migrate") || !strings.Contains(errOut, `(default ":12220")`) {
		t.Fatalf("--help: exit %d\n%s", code, errOut)
	}
	t.Setenv("RACKPLANE_DATABASE_WAIT", "soon")
	code, _, errOut = nexusCmd(t)
	if code != 2 || !strings.Contains(errOut, "RACKPLANE_DATABASE_WAIT") {
		t.Fatalf("malformed environment value: exit %d, %q", code, errOut)
	}
	t.Setenv("RACKPLANE_DATABASE_WAIT", "1s")
	code, _, errOut = nexusCmd(t, "--id", "nope", "--data-dir", t.TempDir())
	if code != 2 || !strings.Contains(errOut, "not a UUID") {
		t.Fatalf("bad --id: exit %d, %q", code, errOut)
	}
	code, _, errOut = nexusCmd(t, "migrate", "sideways")
	if code != 2 || !strings.Contains(errOut, "usage: nexus migrate up|status") {
		t.Fatalf("bad migrate verb: exit %d, %q", code, errOut)
	}
}

// The console makes the first admin token: printed once on stdout, only
// its hash stored, the creation in the audit log.
func TestTokenCreate(t *testing.T) {
	db := testdb.New(t)
	code, out, errOut := nexusCmd(t, "token", "create", "--database-url", db.URL, "--name", "first-admin")
	tok := strings.TrimSpace(out)
	if code != 0 || !strings.HasPrefix(tok, "rp_") || !strings.Contains(errOut, "shown only now") {
		t.Fatalf("token create: exit %d\n%s%s", code, out, errOut)
	}
	var n int
	if err := db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM operator_token
		WHERE name = 'first-admin' AND role = 'admin' AND token_sha256 = sha256($1::BYTEA)`, []byte(tok)).Scan(&n); err != nil || n != 1 {
		t.Fatalf("stored tokens matching: %d (%v)", n, err)
	}
	if db.Count(t, `SELECT count(*) FROM operator_token WHERE position($1 in encode(token_sha256, 'escape')) > 0`, tok) != 0 {
		t.Fatal("the token itself is stored")
	}
	if db.Count(t, `SELECT count(*) FROM audit_log WHERE action = 'token.create' AND actor_kind = 'console' AND outcome = 'ok'`) != 1 {
		t.Fatal("no audit entry for the console's token")
	}
	for _, bad := range [][]string{
		{"token", "create", "--database-url", db.URL},
		{"token", "create", "--database-url", db.URL, "--name", "x", "--role", "root"},
		{"token", "mint"},
	} {
		if code, _, _ := nexusCmd(t, bad...); code == 0 {
			t.Errorf("%v succeeded", bad)
		}
	}
	if db.Count(t, `SELECT count(*) FROM operator_token`) != 1 {
		t.Fatal("a refused token create stored a token")
	}
}
