package main

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/internal/racktest"
	"github.com/rackplane/rackplane/internal/testdb"
	"github.com/rackplane/rackplane/nexus"
)

// `nexus migrate up` is the one-shot step a deployment runs before Nexus:
// it waits for a live holder of the migration lock up to --lock-wait and
// then fails naming it, takes over a stale one, and `migrate status` says
// which it is.
func TestMigrateUpAndTheLock(t *testing.T) {
	ctx := context.Background()
	db := testdb.NewEmpty(t)
	code, out, errOut := nexusCmd(t, "migrate", "status", "--database-url", db.URL)
	if code != 3 || !strings.Contains(out, "migration lock: free") {
		t.Fatalf("status of an empty database: exit %d\n%s%s", code, out, errOut)
	}
	if _, err := db.Pool.Exec(ctx, leaseDDL); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Pool.Exec(ctx, `INSERT INTO schema_migration_lease (id, holder, token, time_acquired, time_expires)
		VALUES (1, 'other-host pid 9', $1, now(), now() + INTERVAL '1 hour')`, uuid.New()); err != nil {
		t.Fatal(err)
	}
	code, out, _ = nexusCmd(t, "migrate", "status", "--database-url", db.URL)
	if code != 3 || !strings.Contains(out, "migration lock: held by other-host pid 9") {
		t.Fatalf("status with the lock held: exit %d\n%s", code, out)
	}
	code, out, errOut = nexusCmd(t, "migrate", "up", "--database-url", db.URL, "--lock-wait", "1s")
	if code != 1 || !strings.Contains(errOut, "held by another migrator") || !strings.Contains(errOut, "other-host pid 9") {
		t.Fatalf("up with the lock held: exit %d\n%s%s", code, out, errOut)
	}
	if _, err := db.Pool.Exec(ctx, `UPDATE schema_migration_lease SET time_expires = now() - INTERVAL '1 second'`); err != nil {
		t.Fatal(err)
	}
	code, out, _ = nexusCmd(t, "migrate", "status", "--database-url", db.URL)
	if !strings.Contains(out, "migration lock: stale claim by other-host pid 9") {
		t.Fatalf("status with a stale claim: exit %d\n%s", code, out)
	}
	code, out, errOut = nexusCmd(t, "migrate", "up", "--database-url", db.URL, "--lock-wait", "1s")
	if code != 0 || !strings.Contains(out, "created schema at version") ||
		!strings.Contains(errOut, "taking over a stale migration lock") {
		t.Fatalf("up with a stale claim: exit %d\n%s%s", code, out, errOut)
	}
	code, out, _ = nexusCmd(t, "migrate", "status", "--database-url", db.URL)
	if code != 0 || !strings.Contains(out, "migration lock: free") || !strings.Contains(out, "up to date") {
		t.Fatalf("status after up: exit %d\n%s", code, out)
	}
	if code, _, errOut := nexusCmd(t, "migrate", "up", "--database-url", db.URL, "extra"); code != 2 ||
		!strings.Contains(errOut, "unexpected argument") {
		t.Fatalf("stray argument: exit %d %q", code, errOut)
	}
}

// leaseDDL makes the lock table as another migrator would have: the columns
// are the migrations package's (its own CREATE TABLE IF NOT EXISTS then
// keeps this one).
const leaseDDL = `CREATE TABLE schema_migration_lease (id INT8 PRIMARY KEY, holder TEXT NOT NULL, token UUID NOT NULL,
	time_acquired TIMESTAMPTZ NOT NULL, time_expires TIMESTAMPTZ NOT NULL)`

// A migration step started before its database waits for it up to
// --database-wait, then says it did not answer.
func TestMigrateUpWaitsForTheDatabase(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	code, _, errOut := nexusCmd(t, "migrate", "up", "--database-url", "postgres://nexus@"+addr+"/rackplane?sslmode=disable",
		"--database-wait", "1s")
	if code != 1 || !strings.Contains(errOut, "database did not answer within 1s") ||
		!strings.Contains(errOut, "waiting for the database") {
		t.Fatalf("exit %d %q", code, errOut)
	}
}

// `nexus healthcheck` exits 0 against a healthy Nexus, and 1 (saying why)
// against an address nothing answers at.
func TestHealthcheck(t *testing.T) {
	db := testdb.New(t)
	nx := racktest.StartNexus(t, db.URL, nexus.Config{})
	code, out, errOut := nexusCmd(t, "healthcheck", "--url", nx.ExternalURL())
	if code != 0 || !strings.Contains(out, ": ok") {
		t.Fatalf("healthy Nexus: exit %d %q %q", code, out, errOut)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	code, _, errOut = nexusCmd(t, "healthcheck", "--url", "http://"+addr, "--timeout", "2s")
	if code != 1 || !strings.Contains(errOut, "is not healthy") {
		t.Fatalf("nothing listening: exit %d %q", code, errOut)
	}
	if code, _, _ := nexusCmd(t, "healthcheck", "--url", "not a url"); code != 2 {
		t.Fatalf("bad --url: exit %d", code)
	}
}

// `nexus pki issue` makes CockroachDB's node and client certificates under
// the rack CA, in the files CockroachDB reads.
func TestPKICockroachCertificates(t *testing.T) {
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca")
	if code, _, errOut := nexusCmd(t, "pki", "init", "--dir", ca); code != 0 {
		t.Fatalf("pki init: %d %q", code, errOut)
	}
	node := filepath.Join(dir, "crdb-1")
	code, out, errOut := nexusCmd(t, "pki", "issue", "--ca-dir", ca, "--out", node, "--cockroach-node",
		"--host", "crdb-1", "--host", "localhost")
	if code != 0 || !strings.Contains(out, "CockroachDB certificate for node") {
		t.Fatalf("node: exit %d %q %q", code, out, errOut)
	}
	client := filepath.Join(dir, "db-client")
	code, out, errOut = nexusCmd(t, "pki", "issue", "--ca-dir", ca, "--out", client, "--cockroach-client", "rackplane")
	if code != 0 || !strings.Contains(out, "for rackplane") {
		t.Fatalf("client: exit %d %q %q", code, out, errOut)
	}
	for _, f := range []string{filepath.Join(node, "node.crt"), filepath.Join(node, "node.key"), filepath.Join(node, "ca.crt"),
		filepath.Join(client, "client.rackplane.crt"), filepath.Join(client, "client.rackplane.key")} {
		if _, err := os.Stat(f); err != nil {
			t.Fatal(err)
		}
	}
	for _, bad := range [][]string{
		{"pki", "issue", "--ca-dir", ca, "--out", dir, "--cockroach-node"},
		{"pki", "issue", "--ca-dir", ca, "--out", dir, "--cockroach-client", "Root"},
		{"pki", "issue", "--ca-dir", ca, "--out", dir, "--cockroach-client", "x", "--host", "h"},
		{"pki", "issue", "--ca-dir", ca, "--out", dir, "--cockroach-node", "--host", "h", "--rss"},
	} {
		if code, _, _ := nexusCmd(t, bad...); code == 0 {
			t.Errorf("%v succeeded", bad)
		}
	}
}
