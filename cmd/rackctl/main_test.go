package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/internal/racktest"
	"github.com/rackplane/rackplane/internal/testdb"
	"github.com/rackplane/rackplane/nexus"
	"github.com/rackplane/rackplane/sledagent"
)

func TestSledsList(t *testing.T) {
	db := testdb.New(t)
	nx := racktest.StartNexus(t, db.URL, nexus.Config{})
	a := racktest.StartSled(t, nx.InternalURL(), sledagent.Config{Baseboard: api.Baseboard{Serial: "BRM001"}})
	b := racktest.StartSled(t, nx.InternalURL(), sledagent.Config{Baseboard: api.Baseboard{Serial: "BRM002"}})
	racktest.WaitRegistered(t, nx.Client, a, b)

	code, out, errOut := rackctl(t, "--nexus", nx.ExternalURL(), "--token", nx.AdminToken, "sleds", "list")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "ID") || !strings.Contains(out, "BRM001") ||
		!strings.Contains(out, "BRM002") || !strings.Contains(out, a.Address()) || lines[3] != "2 sled(s)" {
		t.Fatalf("table:\n%s", out)
	}

	for _, args := range [][]string{
		{"--nexus", nx.ExternalURL(), "--token", nx.AdminToken, "--json", "sleds", "list"},
		{"--nexus", nx.ExternalURL(), "--token", nx.AdminToken, "sleds", "list", "--json"},
	} {
		code, out, errOut = rackctl(t, args...)
		var sleds []api.Sled
		if code != 0 || json.Unmarshal([]byte(out), &sleds) != nil || len(sleds) != 2 {
			t.Fatalf("%v: exit %d, %d sleds from %q (%s)", args, code, len(sleds), out, errOut)
		}
	}
}

func TestErrorsAreExplained(t *testing.T) {
	code, _, errOut := rackctl(t, "--nexus", "http://127.0.0.1:1", "--token", "rp_x", "sleds", "list")
	if code != 1 || !strings.Contains(errOut, "cannot reach Nexus at http://127.0.0.1:1") {
		t.Errorf("unreachable Nexus: exit %d, %q", code, errOut)
	}
	code, _, errOut = rackctl(t, "frobnicate")
	if code != 2 || !strings.Contains(errOut, `unknown command "frobnicate"`) {
		t.Errorf("unknown command: exit %d, %q", code, errOut)
	}
	code, _, errOut = rackctl(t, "sleds")
	if code != 2 || !strings.Contains(errOut, "sleds needs one of: list") {
		t.Errorf("missing verb: exit %d, %q", code, errOut)
	}
	code, _, errOut = rackctl(t, "--nexus", "http://127.0.0.1:1", "--token", "rp_x", "sleds", "list", "extra")
	if code != 2 || !strings.Contains(errOut, "takes no arguments") {
		t.Errorf("extra argument: exit %d, %q", code, errOut)
	}
	// No token anywhere: one line saying how to get one, and nothing sent.
	code, _, errOut = rackctl(t, "--nexus", "http://127.0.0.1:1", "--token-file", "", "sleds", "list")
	if code != 2 || !strings.Contains(errOut, "no operator token") || !strings.Contains(errOut, "rackctl token create") ||
		strings.Count(strings.TrimSpace(errOut), "\n") != 0 || strings.Contains(errOut, "cannot reach") {
		t.Errorf("no token: exit %d, %q", code, errOut)
	}
	code, out, _ := rackctl(t, "help")
	if code != 0 || !strings.Contains(out, "sleds list") || !strings.Contains(out, "RACKPLANE_NEXUS_URL") {
		t.Errorf("help: exit %d, %q", code, out)
	}
}

// Tokens from the CLI: an admin makes a viewer token, which reads but
// cannot change; it shows in the list without its secret, is revoked by
// name, and the audit log says so. The token file works as --token does.
func TestTokenAndAuditCommands(t *testing.T) {
	db := testdb.New(t)
	nx := racktest.StartNexus(t, db.URL, nexus.Config{})
	admin := []string{"--nexus", nx.ExternalURL(), "--token", nx.AdminToken}
	code, out, errOut := rackctl(t, append(admin, "token", "create", "--role", "viewer", "dashboards")...)
	tok := strings.TrimSpace(out)
	if code != 0 || !strings.HasPrefix(tok, "rp_") || !strings.Contains(errOut, "shown only now") {
		t.Fatalf("token create: exit %d %q %q", code, out, errOut)
	}
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte(tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	viewer := []string{"--nexus", nx.ExternalURL(), "--token-file", file}
	if code, _, errOut := rackctl(t, append(viewer, "sleds", "list")...); code != 0 || errOut != "" {
		t.Fatalf("viewer read: exit %d %q", code, errOut)
	}
	code, _, errOut = rackctl(t, append(viewer, "bgtasks", "disable", "sled_liveness")...)
	if code != 1 || !strings.Contains(errOut, "forbidden") || !strings.Contains(errOut, "admin") {
		t.Fatalf("viewer change: exit %d %q", code, errOut)
	}
	code, out, _ = rackctl(t, append(admin, "token", "list")...)
	if code != 0 || !strings.Contains(out, "dashboards") || !strings.Contains(out, "viewer") || strings.Contains(out, tok) {
		t.Fatalf("token list: exit %d\n%s", code, out)
	}
	if code, out, errOut := rackctl(t, append(admin, "token", "revoke", "dashboards")...); code != 0 || !strings.Contains(out, "revoked") {
		t.Fatalf("revoke: exit %d %q %q", code, out, errOut)
	}
	code, _, errOut = rackctl(t, append(viewer, "sleds", "list")...)
	if code != 1 || !strings.Contains(errOut, "token_revoked") {
		t.Fatalf("revoked token: exit %d %q", code, errOut)
	}
	code, out, _ = rackctl(t, append(admin, "audit", "list")...)
	if code != 0 || !strings.Contains(out, "token.revoke") || !strings.Contains(out, "refused (forbidden)") ||
		!strings.Contains(out, "dashboards") {
		t.Fatalf("audit list: exit %d\n%s", code, out)
	}
}
