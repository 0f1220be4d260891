package main

import (
	"encoding/json"
	"fmt"
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

	code, out, errOut = tq("add", "--wait", "SIM-0005")
	if code != 0 || !strings.Contains(out, "epoch 2 (attempt 1): preparing") || !strings.Contains(out, "epoch 2 (attempt 1): committed, 5 of 5 acked") {
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
	if code != 0 || json.Unmarshal([]byte(out), &final) != nil || final.Epoch != 3 || final.State != "committed" || len(final.Members) != 4 {
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
