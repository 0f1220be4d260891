package nexus_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rackplane/rackplane/bgtasks/tufreplication"
	"github.com/rackplane/rackplane/internal/racktest"
	"github.com/rackplane/rackplane/internal/testdb"
	"github.com/rackplane/rackplane/internal/tufgen"
	"github.com/rackplane/rackplane/nexus"
	"github.com/rackplane/rackplane/sledagent"
	"github.com/rackplane/rackplane/sledagent/artifacts"
)

// uiRack is a small real rack for the repo and replication pages: a
// Nexus, sled agents with two temp-dir M.2s each, and a signing lineage
// registered as a trust root.
type uiRack struct {
	t       *testing.T
	db      *testdb.DB
	nx      *racktest.Nexus
	sleds   []*racktest.Sled
	lineage *tufgen.Lineage
}

func newUIRack(t *testing.T, nSleds int) *uiRack {
	t.Helper()
	r := &uiRack{t: t, db: testdb.New(t)}
	r.nx = racktest.StartNexus(t, r.db.URL, nexus.Config{
		Replication: nexus.ReplicationConfig{MinSledReplication: 2, FollowUp: 100 * time.Millisecond}})
	for range nSleds {
		r.sleds = append(r.sleds, racktest.StartSled(t, r.nx.InternalURL(), sledagent.Config{
			RegisterInterval: 300 * time.Millisecond, M2PollInterval: 100 * time.Millisecond}))
	}
	racktest.WaitRegistered(t, r.nx.Client, r.sleds...)
	l, err := tufgen.NewLineage(rand.NewChaCha8([32]byte{61}), tufgen.LineageOptions{})
	if err != nil {
		t.Fatal(err)
	}
	r.lineage = l
	if _, _, err := r.nx.Client.TrustRootAdd(context.Background(), l.TrustRoot()); err != nil {
		t.Fatal(err)
	}
	return r
}

// upload builds repo and uploads it under fileName.
func (r *uiRack) upload(repo tufgen.Repo, fileName string) *tufgen.Built {
	r.t.Helper()
	archive, built, err := r.lineage.BuildBytes(repo)
	if err != nil {
		r.t.Fatal(err)
	}
	if _, err := r.nx.Client.RepoUpload(context.Background(), fileName, bytes.NewReader(archive),
		int64(len(archive)), nil); err != nil {
		r.t.Fatalf("upload %s: %v", repo.SystemVersion, err)
	}
	return built
}

// status is the replication task's last status on this Nexus.
func (r *uiRack) status() tufreplication.Status {
	r.t.Helper()
	task, err := r.nx.Client.BackgroundTaskGet(context.Background(), tufreplication.Name)
	if err != nil {
		r.t.Fatal(err)
	}
	var st tufreplication.Status
	if len(task.Status) > 0 {
		if err := json.Unmarshal(task.Status, &st); err != nil {
			r.t.Fatalf("status %s: %v", task.Status, err)
		}
	}
	return st
}

// runTask activates the replication task and waits for that run.
func (r *uiRack) runTask() {
	r.t.Helper()
	before, err := r.nx.Tasks().Task(tufreplication.Name, false)
	if err != nil {
		r.t.Fatal(err)
	}
	next := before.Current.Iteration
	if next == 0 && before.LastActivation != nil {
		next = before.LastActivation.Iteration
	}
	if err := r.nx.ActivateTask(tufreplication.Name, "ui-test"); err != nil {
		r.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := r.nx.Tasks().WaitCompleted(ctx, tufreplication.Name, next+1); err != nil {
		r.t.Fatal(err)
	}
}

// waitConverged waits until a run reports convergence with want artifacts.
func (r *uiRack) waitConverged(want int) tufreplication.Status {
	r.t.Helper()
	var st tufreplication.Status
	racktest.WaitFor(r.t, 30*time.Second, "the replication task to report convergence", func() error {
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

// copiesOn counts the M.2s of s holding a verified copy of sha: the
// state of the world the pages must reflect.
func copiesOn(s *racktest.Sled, sha string) int {
	n := 0
	for _, m2 := range s.Config.M2Dirs {
		f, err := os.Open(filepath.Join(m2, artifacts.UpdateDir, sha))
		if err != nil {
			continue
		}
		h := sha256.New()
		_, err = io.Copy(h, f)
		f.Close()
		if err == nil && hex.EncodeToString(h.Sum(nil)) == sha {
			n++
		}
	}
	return n
}
