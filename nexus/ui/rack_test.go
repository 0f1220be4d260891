package ui_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/rackplane/rackplane/bgtasks/nexustasks"
	"github.com/rackplane/rackplane/bgtasks/tufreplication"
	"github.com/rackplane/rackplane/internal/racktest"
	"github.com/rackplane/rackplane/internal/tufgen"
	"github.com/rackplane/rackplane/nexus"
	"github.com/rackplane/rackplane/sledagent"
)

// uiRack is a small real rack for the repo and replication pages: a
// Nexus, sled agents with two temp-dir M.2s each, and a signing lineage
// registered as a trust root.
type uiRack struct{ *racktest.Rack }

func newUIRack(t *testing.T, nSleds int) *uiRack {
	t.Helper()
	return &uiRack{racktest.StartRack(t, racktest.RackConfig{
		Sleds: nSleds, Seed: 61,
		Nexus: nexus.Config{Tasks: nexustasks.Registrar(nexustasks.Config{Replication: nexustasks.ReplicationConfig{MinSledReplication: 2, FollowUp: 100 * time.Millisecond}})},
		Sled:  sledagent.Config{RegisterInterval: 300 * time.Millisecond, M2PollInterval: 100 * time.Millisecond},
	})}
}

// upload builds repo and uploads it under fileName.
func (r *uiRack) upload(repo tufgen.Repo, fileName string) *tufgen.Built {
	r.T.Helper()
	return r.Upload(r.Nexus, repo, fileName)
}

// status is the replication task's last status on this Nexus.
func (r *uiRack) status() tufreplication.Status {
	r.T.Helper()
	return racktest.ReplicationStatus(r.T, r.Nexus)
}

// runTask activates the replication task and waits for that run.
func (r *uiRack) runTask() {
	r.T.Helper()
	before, err := r.Nexus.Tasks().Task(tufreplication.Name, false)
	if err != nil {
		r.T.Fatal(err)
	}
	next := before.Current.Iteration
	if next == 0 && before.LastActivation != nil {
		next = before.LastActivation.Iteration
	}
	if err := r.Nexus.ActivateTask(tufreplication.Name, "ui-test"); err != nil {
		r.T.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := r.Nexus.Tasks().WaitCompleted(ctx, tufreplication.Name, next+1); err != nil {
		r.T.Fatal(err)
	}
}

// waitConverged waits until a run reports convergence with want artifacts.
func (r *uiRack) waitConverged(want int) tufreplication.Status {
	r.T.Helper()
	var st tufreplication.Status
	racktest.WaitFor(r.T, 30*time.Second, "the replication task to report convergence", func() error {
		r.runTask()
		st = r.status()
		if !st.Converged || st.Artifacts != want {
			return fmt.Errorf("converged %v with %d of %d artifacts: %d requests, %d in flight, unheld %v",
				st.Converged, st.Artifacts, want, st.Requests, st.InFlight, st.Unheld)
		}
		return nil
	})
	return st
}
