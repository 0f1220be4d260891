package ui_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/internal/racktest"
	"github.com/rackplane/rackplane/internal/tufgen"
)

// One M.2 of one sled moved away: the API says the sled is degraded and
// which device is missing, replication does not call the rack converged,
// the replication page says why and does not draw that sled's cells
// green, and the sleds page marks it; the device back, all is well again.
func TestMissingM2IsDegradedEverywhere(t *testing.T) {
	t.Parallel()
	r := newUIRack(t, 2)
	op := signIn(t, r.Nexus, r.Nexus.AdminToken)
	ctx := context.Background()
	built := r.upload(tufgen.Demo("1.0.0"), "demo.zip")
	r.waitConverged(len(built.Artifacts))
	victim := r.Sleds[1]
	if got, err := r.Nexus.Client.SledGet(ctx, victim.ID()); err != nil || got.Health.State != api.SledHealthOK ||
		got.Health.M2Present != 2 || got.Health.M2Expected != 2 || got.Health.StorageLock != "unknown" {
		t.Fatalf("a healthy sled: %v %+v", err, got.Health)
	}

	m2 := victim.Config.M2Dirs[1]
	if err := os.Rename(m2, m2+".away"); err != nil {
		t.Fatal(err)
	}
	racktest.WaitFor(t, 20*time.Second, "the sled to report the missing M.2", func() error {
		got, err := r.Nexus.Client.SledGet(ctx, victim.ID())
		if err != nil {
			return err
		}
		h := got.Health
		if h.State != api.SledHealthDegraded || h.M2Present != 1 || len(h.M2Missing) != 1 || h.M2Missing[0].Path != m2 ||
			len(h.Problems) != 1 || !strings.Contains(h.Problems[0], m2+" is missing") {
			return fmt.Errorf("health %+v", h)
		}
		return nil
	})
	racktest.WaitFor(t, 20*time.Second, "replication to count the sled degraded", func() error {
		r.runTask()
		st := r.status()
		// A copy the sled had in flight when the M.2 went must have ended
		// (it fails on the missing device) before the cells are read.
		if st.Converged || st.DegradedSleds != 1 || st.Requests != 0 || st.InFlight != 0 {
			return fmt.Errorf("converged %v, %d degraded sleds, %d requests, %d in flight", st.Converged,
				st.DegradedSleds, st.Requests, st.InFlight)
		}
		return nil
	})
	code, body, _ := op.get("/ui/replication")
	if code != 200 || !strings.Contains(body, `data-state="converging"`) || !strings.Contains(body, "1 sled is missing an M.2") ||
		strings.Contains(body, "Some sled does not yet hold") {
		t.Fatalf("replication page with an M.2 missing: %d\n%s", code, body)
	}
	cells := matrixCells(t, body)
	for _, a := range built.Artifacts {
		c := cells[a.SHA256][victim.ID().String()]
		if c.class != "part" || c.text != "1/2" {
			t.Errorf("cell of %s on the degraded sled: %+v", a.Name, c)
		}
		if c := cells[a.SHA256][r.Sleds[0].ID().String()]; c.class != "full" || c.text != "2/2" {
			t.Errorf("cell of %s on the healthy sled: %+v", a.Name, c)
		}
	}
	code, body, _ = op.get("/ui/sleds")
	if code != 200 || !strings.Contains(body, `data-health="degraded"`) || !strings.Contains(body, m2+" is missing") {
		t.Fatalf("sleds page: %d\n%s", code, body)
	}
	code, body, _ = op.get("/ui/sleds/" + victim.ID().String())
	if code != 200 || !strings.Contains(body, "1 of 2 in use") || !strings.Contains(body, `<span class="badge error">missing</span>`) {
		t.Fatalf("sled page: %d\n%s", code, body)
	}

	if err := os.Rename(m2+".away", m2); err != nil {
		t.Fatal(err)
	}
	r.waitConverged(len(built.Artifacts))
	// Health comes from the sled's inventory report, which may reach
	// Nexus a moment after replication sees both M.2s.
	racktest.WaitFor(t, 20*time.Second, "the sled to report healthy after the M.2 came back", func() error {
		got, err := r.Nexus.Client.SledGet(ctx, victim.ID())
		if err != nil {
			return err
		}
		if got.Health.State != api.SledHealthOK {
			return fmt.Errorf("health %+v", got.Health)
		}
		return nil
	})
}
