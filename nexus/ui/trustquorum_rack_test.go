package ui_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/bgtasks/nexustasks"
	"github.com/rackplane/rackplane/bgtasks/trustquorum"
	"github.com/rackplane/rackplane/internal/racktest"
	"github.com/rackplane/rackplane/internal/sledtest"
	"github.com/rackplane/rackplane/nexus"
	tq "github.com/rackplane/rackplane/trustquorum"
)

// tqRack is a rack set up with the trust quorum over the bootstrap
// network (as rackdev does), its manager following up quickly.
func tqRack(t *testing.T, sleds int) *racktest.Rack {
	t.Helper()
	return racktest.StartRack(t, racktest.RackConfig{Sleds: sleds, TrustQuorum: true, Nexus: nexus.Config{
		Tasks: nexustasks.Registrar(nexustasks.Config{TrustQuorum: nexustasks.TrustQuorumConfig{FollowUp: 50 * time.Millisecond}}),
	}})
}

// raiseAlarm has a rogue sled prepare a different epoch 1 at sled i, and
// waits until the sled reports the alarm itself; it returns the rogue.
func raiseAlarm(t *testing.T, r *racktest.Rack, i int) api.Baseboard {
	t.Helper()
	target, other := r.Processes[i], r.Processes[(i+1)%len(r.Processes)]
	id := func(p *sledtest.Process) tq.BaseboardID {
		return tq.BaseboardID{Part: p.Bundle.Identity.Part, Serial: p.Bundle.Identity.Serial}
	}
	rogue := sledtest.ForgePrepare(t, target.BootstrapAddr(), r.RackID, 1, id(target), id(other))
	racktest.WaitFor(t, 10*time.Second, "the sled to raise the alarm", func() error {
		st, err := target.Agent().Status(context.Background())
		if err != nil {
			return err
		}
		for _, a := range st.Alarms {
			if a.Alarm.Kind == tq.AlarmMismatchedConfigurations && a.Alarm.Peer == rogue {
				return nil
			}
		}
		return errors.New("no alarm yet")
	})
	return api.BaseboardFrom(rogue)
}

// An alarm a node raises reaches Nexus's API and the status page at the
// manager's next run, highlighted, with the peer that caused it.
func TestTrustQuorumAlarmsInAPIAndPage(t *testing.T) {
	t.Parallel()
	r := tqRack(t, 3)
	op := signIn(t, r.Nexus, r.Nexus.AdminToken)
	code, body, _ := op.get("/ui/trust-quorum")
	if code != 200 || !strings.Contains(body, `data-epoch="1"`) || strings.Contains(body, `class="failing"`) ||
		!strings.Contains(body, `aria-current="page"`) {
		t.Fatalf("page before the alarm: %d\n%s", code, body)
	}
	target := racktest.Baseboard(r.Processes[1])
	rogue := raiseAlarm(t, r, 1)
	racktest.RunTask(t, r.Nexus, trustquorum.Name)

	st, err := r.Nexus.Client.TrustQuorumStatus(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, n := range st.Nodes {
		if n.Part != target.Part || n.Serial != target.Serial {
			continue
		}
		for _, a := range n.Status.Alarms {
			found = found || (a.Kind == string(tq.AlarmMismatchedConfigurations) && a.Peer != nil && *a.Peer == rogue && a.Epoch == 1)
		}
	}
	if !found {
		t.Fatalf("the API does not show the alarm: %+v", st.Nodes)
	}
	code, body, _ = op.get("/ui/trust-quorum")
	row := fmt.Sprintf(`<tr class="failing" data-node="%s">`, target.Serial)
	if code != 200 || !strings.Contains(body, row) || !strings.Contains(body, "mismatched_configurations") ||
		!strings.Contains(body, "from "+rogue.String()) || !strings.Contains(body, `id="alarm-count">1 alarm</span>`) {
		t.Fatalf("page after the alarm: %d\n%s", code, body)
	}
	// The page's fragment refreshes itself without the layout.
	if code, body, _ = op.get("/ui/trust-quorum?fragment=1"); code != 200 || strings.Contains(body, "<html") || !strings.Contains(body, row) {
		t.Fatalf("fragment: %d\n%s", code, body)
	}
}
