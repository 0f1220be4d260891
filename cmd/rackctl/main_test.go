package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/internal/racktest"
	"github.com/rackplane/rackplane/internal/testdb"
	"github.com/rackplane/rackplane/nexus"
	"github.com/rackplane/rackplane/sledagent"
)

func TestMain(m *testing.M) { testdb.Main(m) }

func rackctl(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(context.Background(), args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestSledsList(t *testing.T) {
	db := testdb.New(t)
	nx := racktest.StartNexus(t, db.URL, nexus.Config{})
	a := racktest.StartSled(t, nx.InternalURL(), sledagent.Config{Baseboard: api.Baseboard{Serial: "BRM001"}})
	b := racktest.StartSled(t, nx.InternalURL(), sledagent.Config{Baseboard: api.Baseboard{Serial: "BRM002"}})
	racktest.WaitRegistered(t, nx.Client, a, b)

	code, out, errOut := rackctl(t, "--nexus", nx.ExternalURL(), "sleds", "list")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "ID") || !strings.Contains(out, "BRM001") ||
		!strings.Contains(out, "BRM002") || !strings.Contains(out, a.Address()) || lines[3] != "2 sled(s)" {
		t.Fatalf("table:\n%s", out)
	}

	for _, args := range [][]string{
		{"--nexus", nx.ExternalURL(), "--json", "sleds", "list"},
		{"--nexus", nx.ExternalURL(), "sleds", "list", "--json"},
	} {
		code, out, errOut = rackctl(t, args...)
		var sleds []api.Sled
		if code != 0 || json.Unmarshal([]byte(out), &sleds) != nil || len(sleds) != 2 {
			t.Fatalf("%v: exit %d, %d sleds from %q (%s)", args, code, len(sleds), out, errOut)
		}
	}
}

func TestErrorsAreExplained(t *testing.T) {
	code, _, errOut := rackctl(t, "--nexus", "http://127.0.0.1:1", "sleds", "list")
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
	code, _, errOut = rackctl(t, "--nexus", "http://127.0.0.1:1", "sleds", "list", "extra")
	if code != 2 || !strings.Contains(errOut, "takes no arguments") {
		t.Errorf("extra argument: exit %d, %q", code, errOut)
	}
	code, out, _ := rackctl(t, "help")
	if code != 0 || !strings.Contains(out, "sleds list") || !strings.Contains(out, "RACKPLANE_NEXUS_URL") {
		t.Errorf("help: exit %d, %q", code, out)
	}
}
