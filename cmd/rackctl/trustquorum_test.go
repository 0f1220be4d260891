package main

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/bgtasks/nexustasks"
	"github.com/rackplane/rackplane/internal/racktest"
	"github.com/rackplane/rackplane/nexus"
)

// The trust-quorum commands against a real rack set up over the
// bootstrap network: status, add with --wait until committed, show,
// remove with --json, and refusals.
func TestTrustQuorumCommands(t *testing.T) {
	r := racktest.StartRack(t, racktest.RackConfig{Sleds: 4, Spares: 1, TrustQuorum: true, Nexus: nexus.Config{
		Tasks: nexustasks.Registrar(nexustasks.Config{TrustQuorum: nexustasks.TrustQuorumConfig{FollowUp: 50 * time.Millisecond}}),
	}})
	base := []string{"--nexus", r.Nexus.ExternalURL(), "--token", r.Nexus.AdminToken}
	tq := func(args ...string) (int, string, string) {
		t.Helper()
		return rackctl(t, append(append(append([]string{}, base...), "trust-quorum"), args...)...)
	}
	code, out, errOut := tq("status")
	if code != 0 || !strings.Contains(out, "latest:") || !strings.Contains(out, "committed, 4 of 4 acked") ||
		!strings.Contains(out, "SIM-0004") {
		t.Fatalf("status: exit %d\n%s%s", code, out, errOut)
	}
	// The spare shows up as uninitialised once the manager has seen a
	// member see it.
	racktest.WaitFor(t, 30*time.Second, "the spare to be listed", func() error {
		if err := r.Nexus.ActivateTask("trust_quorum_manager", "test"); err != nil {
			return err
		}
		code, out, errOut = tq("status")
		if code != 0 || !strings.Contains(out, "uninitialised sleds") || !strings.Contains(out, "SIM-0005") {
			return fmt.Errorf("status: exit %d\n%s%s", code, out, errOut)
		}
		return nil
	})

	// Flags after the arguments, as everywhere: the steps on stderr, the
	// outcome on stdout.
	tqGoldens(t, r)

	code, out, errOut = tq("add", "SIM-0005", "--wait")
	if code != 0 || !strings.Contains(errOut, "epoch 2 (attempt 1): preparing") ||
		!strings.Contains(errOut, "epoch 2 (attempt 1): committed, 5 of 5 acked") || out != "epoch 2 committed (attempt 1): 5 of 5 acked, 5 members\n" {
		t.Fatalf("add --wait: exit %d\n%s%s", code, out, errOut)
	}
	// The added sled unlocks its disks once Nexus starts its sled agent;
	// status shows every node's storage lock.
	racktest.WaitFor(t, 30*time.Second, "every node unlocked in the status", func() error {
		if err := r.Nexus.ActivateTask("trust_quorum_manager", "test"); err != nil {
			return err
		}
		code, out, errOut = tq("status")
		if code != 0 || !strings.Contains(out, "STORAGE") || strings.Count(out, " unlocked ") != 5 {
			return fmt.Errorf("status: exit %d\n%s%s", code, out, errOut)
		}
		return nil
	})
	code, out, errOut = tq("show", "2")
	if code != 0 || strings.Count(out, " committed ") < 5 || !strings.Contains(out, "K=3, Z=1, 5 members") {
		t.Fatalf("show 2: exit %d\n%s%s", code, out, errOut)
	}

	code, out, errOut = tq("remove", "--wait", "--json", "SIM-0005")
	var final api.TrustQuorumConfig
	if code != 0 || json.Unmarshal([]byte(out), &final) != nil || final.Epoch != 3 || final.State != "committed" || len(final.Members) != 4 ||
		errOut != "" {
		t.Fatalf("remove --wait --json: exit %d\n%s%s", code, out, errOut)
	}

	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"abort", "3"}, 1, "trust_quorum_committing"},
		{[]string{"upgrade-from-lrtq"}, 1, "already_upgraded"},
		{[]string{"add", "NOPE-1"}, 1, "no sled with serial NOPE-1"},
		{[]string{"--json", "add", "NOPE-1"}, 1, `{"error":{"code":"not_found","message":"no sled with serial NOPE-1`},
		{[]string{"add", "SIM-0001", "--wait", "--wait-timeout", "0s"}, 2, "--wait-timeout must be positive"},
		{[]string{"remove", "SIM-0005"}, 1, "no member of the latest committed epoch has serial SIM-0005"},
		{[]string{"add", "rackplane-sim:SIM-0005"}, 1, "sled_expunged"},
		{[]string{"show", "x"}, 2, "not an epoch"},
		{[]string{"show", "99"}, 1, "not_found"},
		{[]string{"add"}, 2, "at least one sled"},
	} {
		code, out, errOut := tq(c.args...)
		if code != c.code || !strings.Contains(errOut, c.want) {
			t.Errorf("%v: exit %d, want %d saying %q\n%s%s", c.args, code, c.code, c.want, out, errOut)
		}
	}
}

// tqGoldens records status and show of the rack as rack setup left it
// (epoch 1 committed on four sleds, the spare seen) against
// testdata/trustquorum/*.golden. Which member saw the spare first, and
// what each node last reported (peers, ledger generations), is the
// rack's timing: the status JSON is compared by shape.
func tqGoldens(t *testing.T, r *racktest.Rack) {
	t.Helper()
	g := &goldenRack{env: []string{"RACKPLANE_NEXUS_URL=" + r.Nexus.ExternalURL(), "RACKPLANE_TOKEN=" + r.Nexus.AdminToken}}
	g.m.literalMask(r.Nexus.ExternalURL(), "NEXUS_URL")
	g.m.common()
	seenBy := regexp.MustCompile(`(SIM-0005  rackplane-sim  )SIM-\d+`)
	for _, c := range []struct {
		name string
		args []string
	}{
		{"status", []string{"trust-quorum", "status"}},
		{"status_json", []string{"--json", "trust-quorum", "status"}},
		{"show", []string{"trust-quorum", "show", "1"}},
		{"show_json", []string{"--json", "trust-quorum", "show", "1"}},
	} {
		text, code, out, _ := g.record(t, c.args...)
		if code != 0 {
			t.Errorf("%s: exit %d\n%s", c.name, code, text)
			continue
		}
		if c.name == "status_json" {
			text = fmt.Sprintf("$ rackctl %s\nexit 0\n--- stdout (shape)\n%s", strings.Join(c.args, " "), g.shape(t, out))
		}
		text = seenBy.ReplaceAllString(text, "${1}MEMBER")
		text = regexp.MustCompile(`("(seen_by|connected_peers)": \[?\s*\{\s*"part": "rackplane-sim",\s*"serial": )"SIM-\d+"`).
			ReplaceAllString(text, `$1"MEMBER"`)
		golden(t, "trustquorum/"+c.name, text)
	}
}
