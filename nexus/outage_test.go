package nexus_test

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/api/client"
	"github.com/rackplane/rackplane/bgtasks"
	"github.com/rackplane/rackplane/bgtasks/heartbeat"
	"github.com/rackplane/rackplane/bgtasks/nexustasks"
	"github.com/rackplane/rackplane/bgtasks/tufreplication"
	"github.com/rackplane/rackplane/internal/racktest"
	"github.com/rackplane/rackplane/internal/testdb"
	"github.com/rackplane/rackplane/internal/tufgen"
	"github.com/rackplane/rackplane/nexus"
	"github.com/rackplane/rackplane/nexus/model"
	"github.com/rackplane/rackplane/sledagent"
)

// The issue asks for a 60 s outage; CI runs 10 s. With the replication
// task's period at 3 s, 10 s already takes its back-off to the period and
// keeps it there for several retries, and the sleds' registration back-off
// past 5 s, which is what a long outage adds over a short one; another
// 50 s of the same would cost CI a minute and test nothing new. Run the
// full length with
//
//	go test ./nexus -run TestDatabaseAwayForMinutes -rel.outage=60s
var outageLength = flag.Duration("rel.outage", 10*time.Second, "how long TestDatabaseAwayForMinutes keeps the database stopped")

// backoffBound is how many attempts a back-off with this first ceiling,
// cap and jitter lets through in window: the first at once, then one
// after each delay (each at least (1-jitter) of its ceiling).
func backoffBound(initial, ceiling time.Duration, jitter float64, window time.Duration) int {
	n, elapsed, c := 1, time.Duration(0), initial
	for {
		elapsed += time.Duration(float64(c) * (1 - jitter))
		if elapsed > window {
			return n
		}
		n++
		c = min(2*c, ceiling)
	}
}

// The database goes away for a long while under a rack at work. Nexus
// keeps serving what it holds in memory — /healthz (which says the
// database is down), and the background tasks with their statuses,
// including the replication task's view and its page — to operators whose
// tokens it checked before the outage; it refuses every change with a 503
// that says why and that nothing changed; its tasks retry no faster than
// their back-off (capped at their period). When the database is back,
// everything converges: an artifact a sled lost during the outage is
// restored, and a new upload reaches every sled.
func TestDatabaseAwayForMinutes(t *testing.T) {
	t.Parallel()
	const period = 3 * time.Second
	cluster, url := testdb.NewCluster(t)
	nx := racktest.StartNexus(t, url, nexus.Config{
		Tasks: nexustasks.Registrar(nexustasks.Config{Replication: nexustasks.ReplicationConfig{
			MinSledReplication: 2, FollowUp: 100 * time.Millisecond}}),
		TaskPeriods: map[string]time.Duration{tufreplication.Name: period, heartbeat.Name: time.Second},
	})
	ctx := context.Background()
	var sleds []*racktest.Sled
	for range 3 {
		sleds = append(sleds, racktest.StartSled(t, nx.InternalURL(), sledagent.Config{M2PollInterval: 100 * time.Millisecond}))
	}
	racktest.WaitRegistered(t, nx.Client, sleds...)
	lineage := newLineage(t, 61, tufgen.LineageOptions{})
	if _, _, err := nx.Client.TrustRootAdd(ctx, lineage.TrustRoot()); err != nil {
		t.Fatal(err)
	}
	upload := func(repo tufgen.Repo) (*tufgen.Built, error) {
		archive, built := buildRepo(t, lineage, repo)
		_, err := nx.Client.RepoUpload(ctx, "repo.zip", bytes.NewReader(archive), int64(len(archive)), nil)
		return built, err
	}
	waitHeld := func(timeout time.Duration, builts ...*tufgen.Built) {
		t.Helper()
		racktest.WaitFor(t, timeout, "every sled to hold every artifact on both M.2s", func() error {
			for i, s := range sleds {
				for _, b := range builts {
					for _, a := range b.Artifacts {
						if racktest.CopiesOn(s, a.SHA256) != len(s.Config.M2Dirs) {
							return fmt.Errorf("sled %d lacks %s", i, a.SHA256[:12])
						}
					}
				}
			}
			return nil
		})
	}
	first, err := upload(tufgen.Demo("1.0.0"))
	if err != nil {
		t.Fatal(err)
	}
	waitHeld(30*time.Second, first)

	// A viewer's token, used once before the outage.
	viewer, err := client.NewNexus(nx.ExternalURL(), nil)
	if err != nil {
		t.Fatal(err)
	}
	viewerToken := nx.Token(t, "watcher", model.RoleViewer, 0)
	viewer = viewer.WithToken(viewerToken)
	if _, err := viewer.BackgroundTaskList(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := nx.Client.BackgroundTaskList(ctx); err != nil {
		t.Fatal(err)
	}

	cluster.Stop()
	stopped := time.Now()
	activationsAtStop := taskActivations(t, viewer, tufreplication.Name)
	// While it is away a sled loses an artifact on both M.2s: work for
	// when it is back.
	lost := first.Artifacts[0].SHA256
	for _, m2 := range sleds[1].Config.M2Dirs {
		if err := os.Remove(racktest.ArtifactPath(m2, lost)); err != nil {
			t.Fatal(err)
		}
	}
	checks, backingOff := 0, 0
	for time.Since(stopped) < *outageLength {
		if checkDuringOutage(t, nx, viewer, viewerToken, upload) {
			backingOff++
		}
		checks++
		time.Sleep(250 * time.Millisecond)
	}
	// Between its retries the task is backing off, and its page says so.
	if backingOff == 0 {
		t.Fatalf("in %d rounds the replication task's page never said it was backing off", checks)
	}
	window := time.Since(stopped)
	runs := taskActivations(t, viewer, tufreplication.Name) - activationsAtStop
	// The run that was going when the database stopped may finish after,
	// hence the one extra.
	bound := backoffBound(bgtasks.DefaultRetry.Initial, period, bgtasks.DefaultRetry.Jitter, window) + 1
	if runs > uint64(bound) {
		t.Fatalf("replication ran %d times in a %s outage; its back-off allows %d", runs, window, bound)
	}
	task, err := viewer.BackgroundTaskGet(ctx, tufreplication.Name)
	if err != nil || task.ConsecutiveErrors < 2 || task.LastActivation.Outcome != api.TaskOutcomeError {
		t.Fatalf("replication after the outage began: %+v (%v)", task, err)
	}
	t.Logf("%s outage: %d rounds of checks, %d replication runs (back-off bound %d)", window, checks, runs, bound)

	if err := cluster.Start(ctx); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	racktest.WaitFor(t, 20*time.Second, "Nexus to see the database again", func() error {
		_, err := nx.Client.Health(ctx)
		return err
	})
	second, err := upload(tufgen.Sized("2.0.0", 2<<20, 2, 8))
	if err != nil {
		t.Fatalf("upload once the database is back: %v", err)
	}
	waitHeld(period+30*time.Second, first, second)
	t.Logf("converged %s after the database came back", time.Since(back))
	racktest.WaitFor(t, 20*time.Second, "the replication task to run cleanly again", func() error {
		task, err := nx.Client.BackgroundTaskGet(ctx, tufreplication.Name)
		if err != nil {
			return err
		}
		if task.ConsecutiveErrors != 0 || task.Current.BackoffUntil != nil {
			return fmt.Errorf("%d errors in a row, backing off until %v", task.ConsecutiveErrors, task.Current.BackoffUntil)
		}
		return nil
	})
}

func taskActivations(t *testing.T, c client.Nexus, name string) uint64 {
	t.Helper()
	task, err := c.BackgroundTaskGet(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return task.Activations
}

// checkDuringOutage checks one round of what Nexus answers while its
// database is away, and reports whether the replication task's page said
// the task was backing off.
func checkDuringOutage(t *testing.T, nx *racktest.Nexus, viewer client.Nexus, viewerToken string,
	upload func(tufgen.Repo) (*tufgen.Built, error)) (backingOff bool) {
	t.Helper()
	ctx := context.Background()
	if h, err := nx.Client.Health(ctx); err == nil || h.Checks["database"] != "unhealthy" {
		t.Fatalf("health during the outage: %+v, %v", h, err)
	}
	// Reads from memory, with a token checked before the outage.
	list, err := viewer.BackgroundTaskList(ctx)
	if err != nil || len(list.Warnings) == 0 {
		t.Fatalf("task list during the outage: %+v, %v", list, err)
	}
	found := false
	for _, task := range list.Tasks {
		found = found || (task.Name == tufreplication.Name && len(task.Status) > 0)
	}
	if !found {
		t.Fatalf("the replication task and its status are missing from %+v", list.Tasks)
	}
	task, err := viewer.BackgroundTaskGet(ctx, tufreplication.Name)
	if err != nil {
		t.Fatalf("replication task during the outage: %v", err)
	}
	var st api.ReplicationStatus
	if err := json.Unmarshal(task.Status, &st); err != nil || st.Artifacts == 0 {
		t.Fatalf("replication status during the outage: %s (%v)", task.Status, err)
	}
	getPage := func(path string) string {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, nx.ExternalURL()+path, nil)
		req.Header.Set("Authorization", "Bearer "+viewerToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		page, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s during the outage: %d\n%s", path, resp.StatusCode, page)
		}
		return string(page)
	}
	if page := getPage("/ui/replication"); !strings.Contains(page, "Artifact replication") {
		t.Fatalf("replication page during the outage:\n%s", page)
	}
	backingOff = strings.Contains(getPage("/ui/background-tasks/"+tufreplication.Name), "backing off after a failed or stalled run")

	// Changes are refused, saying why; nothing is left behind.
	refused := func(what string, err error) {
		t.Helper()
		if client.StatusCode(err) != http.StatusServiceUnavailable || client.ErrorCode(err) != api.CodeServiceUnavailable ||
			!strings.Contains(err.Error(), "database is unavailable") || !strings.Contains(err.Error(), "nothing was changed") {
			t.Fatalf("%s during the outage: %v; want 503 service_unavailable saying the database is away", what, err)
		}
	}
	_, err = nx.Client.BackgroundTaskActivate(ctx, tufreplication.Name)
	refused("activating a task", err)
	_, err = nx.Client.RepoDelete(ctx, "1.0.0")
	refused("pruning a repo", err)
	_, err = upload(tufgen.Demo("9.0.0"))
	refused("an upload", err)
	entries, err := os.ReadDir(nx.Depot().Dir())
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".tmp") {
			t.Fatalf("a refused upload left %s in the depot", filepath.Join(nx.Depot().Dir(), e.Name()))
		}
	}
	// Data that lives only in the database cannot be read: 503 again.
	if _, err := viewer.RepoList(ctx, false); client.StatusCode(err) != http.StatusServiceUnavailable {
		t.Fatalf("repo list during the outage: %v", err)
	}
	return backingOff
}
