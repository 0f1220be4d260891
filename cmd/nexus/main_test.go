package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/internal/buildinfo"
	"github.com/rackplane/rackplane/internal/rackpki"
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
	// The hash is computed here: CockroachDB's sha256() returns hex text,
	// PostgreSQL's bytes.
	hash := sha256.Sum256([]byte(tok))
	if err := db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM operator_token
		WHERE name = 'first-admin' AND role = 'admin' AND token_sha256 = $1`, hash[:]).Scan(&n); err != nil || n != 1 {
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

// nexus pki makes a rack CA once and issues certificates that load, name
// the identity asked for, and verify against that CA; a Nexus refuses to
// start without its certificate or with one naming another Nexus.
func TestPKICommands(t *testing.T) {
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca")
	if code, out, errOut := nexusCmd(t, "pki", "init", "--dir", ca, "--name", "test"); code != 0 || !strings.Contains(out, "rack CA") {
		t.Fatalf("pki init: exit %d %q %q", code, out, errOut)
	}
	if code, _, errOut := nexusCmd(t, "pki", "init", "--dir", ca); code != 1 || !strings.Contains(errOut, "refusing to replace") {
		t.Fatalf("second pki init: exit %d %q", code, errOut)
	}
	id := uuid.NewString()
	for _, c := range []struct {
		args []string
		name string
		want rackpki.Identity
	}{
		{[]string{"--nexus", id}, "nexus", rackpki.Nexus(id)},
		{[]string{"--sled", "913-0000019:BRM42"}, "sled", rackpki.Sled("913-0000019", "BRM42")},
		{[]string{"--rss"}, "rss", rackpki.RSS()},
	} {
		out := filepath.Join(dir, c.name)
		args := append([]string{"pki", "issue", "--ca-dir", ca, "--out", out}, c.args...)
		if code, _, errOut := nexusCmd(t, args...); code != 0 {
			t.Fatalf("%v: exit %d %q", args, code, errOut)
		}
		b, err := rackpki.LoadDir(out, c.name)
		if err != nil || b.Identity != c.want {
			t.Fatalf("%v: loaded %+v, %v", args, b, err)
		}
		if fi, err := os.Stat(filepath.Join(out, rackpki.KeyFile(c.name))); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s key mode %v %v", c.name, fi.Mode(), err)
		}
	}
	for _, bad := range [][]string{
		{"pki", "issue", "--ca-dir", ca, "--out", dir, "--sled", "no-colon"},
		{"pki", "issue", "--ca-dir", ca, "--out", dir, "--nexus", "not-a-uuid"},
		{"pki", "issue", "--ca-dir", ca, "--out", dir, "--rss", "--nexus", id},
		{"pki", "issue", "--ca-dir", filepath.Join(dir, "none"), "--out", dir, "--rss"},
		{"pki", "rotate"},
	} {
		if code, _, _ := nexusCmd(t, bad...); code == 0 {
			t.Errorf("%v succeeded", bad)
		}
	}

	db := testdb.New(t)
	code, _, errOut := nexusCmd(t, "--database-url", db.URL, "--data-dir", t.TempDir(), "--id", id)
	if code != 2 || !strings.Contains(errOut, "certificate is required") {
		t.Fatalf("no certificate: exit %d %q", code, errOut)
	}
	code, _, errOut = nexusCmd(t, "--database-url", db.URL, "--data-dir", t.TempDir(), "--id", uuid.NewString(),
		"--tls-dir", filepath.Join(dir, "nexus"), "--external-addr", "127.0.0.1:0", "--internal-addr", "127.0.0.1:0")
	if code != 1 || !strings.Contains(errOut, "the certificate names urn:rackplane:nexus:"+id) {
		t.Fatalf("another Nexus's certificate: exit %d %q", code, errOut)
	}
}

func TestVersion(t *testing.T) {
	code, out, errOut := nexusCmd(t, "--version")
	if code != 0 || !strings.HasPrefix(out, "nexus "+buildinfo.Read().Version) || errOut != "" {
		t.Fatalf("exit %d, %q, %q", code, out, errOut)
	}
}
