package nexus_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/bgtasks/nexustasks"
	"github.com/rackplane/rackplane/bgtasks/tufpruner"
	"github.com/rackplane/rackplane/internal/racktest"
	"github.com/rackplane/rackplane/internal/reqid"
	"github.com/rackplane/rackplane/internal/testdb"
	"github.com/rackplane/rackplane/internal/tufgen"
	"github.com/rackplane/rackplane/nexus"
)

// waitActivation waits for the activation of task that the API request
// with request id rid caused, and returns it.
func waitActivation(t *testing.T, nx *racktest.Nexus, task, rid string) api.TaskActivation {
	t.Helper()
	var found api.TaskActivation
	racktest.WaitFor(t, 10*time.Second, "the activation requested by "+rid, func() error {
		got, err := nx.Client.BackgroundTaskGet(context.Background(), task)
		if err != nil {
			return err
		}
		for _, a := range got.History {
			if a.Requester == "api:"+rid {
				found = a
				return nil
			}
		}
		return fmt.Errorf("not in the last %d activations", len(got.History))
	})
	return found
}

// The pruner runs under the driver, and operators switch it off and on at
// runtime with the background-task switch (which also runs it at once).
func TestPrunerObeysTheTaskSwitch(t *testing.T) {
	db := testdb.New(t)
	nx := racktest.StartNexus(t, db.URL, nexus.Config{Tasks: nexustasks.Registrar(nexustasks.Config{TufReposKept: 1}),
		TaskPeriods: map[string]time.Duration{tufpruner.Name: time.Hour}})
	ctx := context.Background()
	l := newLineage(t, 9, tufgen.LineageOptions{})
	addRoot(t, nx.Client, l.TrustRoot())
	for _, v := range []string{"1.0.0", "2.0.0", "3.0.0"} {
		a, _ := buildRepo(t, l, tufgen.Demo(v))
		mustUpload(t, nx.Client, a, api.UploadInserted)
	}
	live := func() int {
		repos, err := nx.Client.RepoList(ctx, false)
		if err != nil {
			t.Fatal(err)
		}
		return len(repos)
	}

	if _, err := nx.Client.BackgroundTaskSetEnabled(reqid.With(ctx, "switch-off"), tufpruner.Name, false); err != nil {
		t.Fatal(err)
	}
	waitActivation(t, nx, tufpruner.Name, "switch-off")
	if _, err := nx.Client.BackgroundTaskActivate(reqid.With(ctx, "run-while-off"), tufpruner.Name); err != nil {
		t.Fatal(err)
	}
	if act := waitActivation(t, nx, tufpruner.Name, "run-while-off"); act.Outcome != "disabled" {
		t.Fatalf("disabled pruner's activation: %+v", act)
	}
	if n := live(); n != 3 {
		t.Fatalf("a disabled pruner pruned: %d live repos", n)
	}

	if _, err := nx.Client.BackgroundTaskSetEnabled(reqid.With(ctx, "switch-on"), tufpruner.Name, true); err != nil {
		t.Fatal(err)
	}
	act := waitActivation(t, nx, tufpruner.Name, "switch-on")
	var st tufpruner.Status
	if err := json.Unmarshal(act.Status, &st); err != nil {
		t.Fatalf("status %s: %v", act.Status, err)
	}
	if act.Outcome != "ok" || st.Pruned == nil || st.Pruned.SystemVersion != "1.0.0" || !act.Changed ||
		st.GenerationAfter != st.Generation+1 || len(st.Waiting) != 1 || st.Waiting[0].SystemVersion != "2.0.0" {
		t.Fatalf("enabled pruner's activation: %+v, status %+v", act, st)
	}
	if n := live(); n != 2 {
		t.Fatalf("%d live repos after one prune, want 2", n)
	}
}
