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
