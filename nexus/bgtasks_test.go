package nexus_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/api/client"
	"github.com/rackplane/rackplane/bgtasks"
	"github.com/rackplane/rackplane/bgtasks/heartbeat"
	"github.com/rackplane/rackplane/bgtasks/nexustasks"
	"github.com/rackplane/rackplane/bgtasks/sledliveness"
	"github.com/rackplane/rackplane/internal/rackpki"
	"github.com/rackplane/rackplane/internal/racktest"
	"github.com/rackplane/rackplane/internal/sledtest"
	"github.com/rackplane/rackplane/internal/testdb"
	"github.com/rackplane/rackplane/nexus"
	"github.com/rackplane/rackplane/sledagent"
)

func TestBackgroundTaskAPI(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	nx := racktest.StartNexus(t, db.URL, racktest.FastHeartbeat())
	ctx := context.Background()
	racktest.WaitTask(t, nx, sledliveness.Name, 1)

	// The listing: this Nexus's tasks, live, and its own heartbeat.
	var list api.BackgroundTaskList
	racktest.WaitFor(t, 10*time.Second, "this Nexus's heartbeat", func() error {
		var err error
		if list, err = nx.Client.BackgroundTaskList(ctx); err != nil {
			return err
		}
		if len(list.Instances) != 1 || list.Instances[0].NexusID != nx.ID() || len(list.Instances[0].Tasks) != len(nx.Tasks().Names()) {
			return fmt.Errorf("instances %+v", list.Instances)
		}
		return nil
	})
	byName := map[string]api.BackgroundTask{}
	for _, task := range list.Tasks {
		byName[task.Name] = task
	}
	hbTask := byName[heartbeat.Name]
	if list.NexusID != nx.ID() || len(list.Tasks) != len(nx.Tasks().Names()) || list.Tasks[0].Name != sledliveness.Name ||
		hbTask.Name != heartbeat.Name || list.Tasks[0].Description == "" || !list.Tasks[0].Enabled ||
		list.Tasks[0].PeriodSeconds != 15 || hbTask.PeriodSeconds != 0.2 || list.Tasks[0].History != nil ||
		len(list.Warnings) != 0 || list.Instances[0].Stale {
		t.Fatalf("listing: %+v", list)
	}
	for _, ts := range list.Instances[0].Tasks {
		// The heartbeat's own entry is written as idle: it is done once
		// the row is written.
		if ts.Name == heartbeat.Name && (ts.State != api.TaskStateIdle || ts.RunningSince != nil || ts.Iteration == 0) {
			t.Fatalf("heartbeat's own entry: %+v", ts)
		}
	}

	// One task, with history and its own status.
	task := racktest.WaitTask(t, nx, sledliveness.Name, 1)
	first := racktest.Activation(t, task, 1)
	var st sledliveness.Status
	if first.Reason != "startup" || first.Outcome != api.TaskOutcomeOK || json.Unmarshal(task.Status, &st) != nil ||
		st.ThresholdSeconds != 90 || st.MarkedActive == nil {
		t.Fatalf("sled_liveness after start-up: %+v (status %s)", first, task.Status)
	}

	// Explicit activation through the API names its requester.
	got, err := nx.Client.BackgroundTaskActivate(ctx, sledliveness.Name, sledliveness.Name)
	if err != nil || len(got.Activated) != 1 || got.Activated[0] != sledliveness.Name {
		t.Fatalf("activate: %+v, %v", got, err)
	}
	task = racktest.WaitTask(t, nx, sledliveness.Name, 2)
	if a := racktest.Activation(t, task, 2); a.Reason != "explicit" || !strings.HasPrefix(a.Requester, "api:") {
		t.Fatalf("explicit activation: %+v", a)
	}

	// Unknown names: 404 naming them, and nothing activated (the next
	// activation is the probe's).
	_, err = nx.Client.BackgroundTaskActivate(ctx, sledliveness.Name, "ghost")
	if client.StatusCode(err) != 404 || client.ErrorCode(err) != api.CodeUnknownBackgroundTask ||
		!strings.Contains(err.Error(), `"ghost"`) || !strings.Contains(err.Error(), "nothing was activated") ||
		!strings.Contains(err.Error(), "this Nexus runs: "+strings.Join(nx.Tasks().Names(), ", ")) {
		t.Fatalf("unknown name: %v", err)
	}
	if err := nx.ActivateTask(sledliveness.Name, "probe"); err != nil {
		t.Fatal(err)
	}
	if a := racktest.Activation(t, racktest.WaitTask(t, nx, sledliveness.Name, 3), 3); a.Requester != "probe" {
		t.Fatalf("the refused request activated something: %+v", a)
	}
	if err := nx.ActivateTask("ghost", "probe"); !errors.Is(err, bgtasks.ErrUnknownTask) {
		t.Fatalf("ActivateTask(ghost): %v", err)
	}

	// Disable: stored in the database, reported as disabled, task idle.
	off, err := nx.Client.BackgroundTaskSetEnabled(ctx, sledliveness.Name, false)
	if err != nil || off.Enabled || db.Count(t, `SELECT count(*) FROM bgtask_setting WHERE name = $1`, sledliveness.Name) != 1 {
		t.Fatalf("disable: %+v, %v", off, err)
	}
	task = racktest.WaitTask(t, nx, sledliveness.Name, 4)
	if task.Enabled || task.LastActivation.Outcome != api.TaskOutcomeDisabled || task.StatusIteration != 3 {
		t.Fatalf("after disabling: %+v", task)
	}
	on, err := nx.Client.BackgroundTaskSetEnabled(ctx, sledliveness.Name, true)
	if err != nil || !on.Enabled {
		t.Fatalf("enable: %+v, %v", on, err)
	}
	task = racktest.WaitTask(t, nx, sledliveness.Name, 5)
	if !task.Enabled || task.LastActivation.Outcome != api.TaskOutcomeOK || task.StatusIteration != 5 {
		t.Fatalf("after enabling: %+v", task)
	}

	_, err = nx.Client.BackgroundTaskGet(ctx, "ghost")
	if client.StatusCode(err) != 404 || client.ErrorCode(err) != api.CodeUnknownBackgroundTask {
		t.Fatalf("get unknown: %v", err)
	}
	_, err = nx.Client.BackgroundTaskSetEnabled(ctx, "ghost", false)
	if client.StatusCode(err) != 404 || client.ErrorCode(err) != api.CodeUnknownBackgroundTask || db.Count(t, `SELECT count(*) FROM bgtask_setting WHERE name = $1`, "ghost") != 0 {
		t.Fatalf("switch unknown: %v", err)
	}
}

func TestBackgroundTaskAPIRejectsBadInput(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	nx := racktest.StartNexus(t, db.URL, nexus.Config{})
	base := nx.ExternalURL() + "/v1/system/background-tasks"
	for _, tc := range []struct {
		name, method, url, body string
		status                  int
		code, mention           string
	}{
		{"no names", "POST", base + "/activate", `{"names":[]}`, 400, api.CodeInvalidField, "names"},
		{"names missing", "POST", base + "/activate", `{}`, 400, api.CodeInvalidField, "names"},
		{"empty name", "POST", base + "/activate", `{"names":[""]}`, 400, api.CodeInvalidField, "empty name"},
		{"names not a list", "POST", base + "/activate", `{"names":"sled_liveness"}`, 400, api.CodeInvalidField, "names"},
		{"unknown field", "POST", base + "/activate", `{"name":["sled_liveness"]}`, 400, api.CodeInvalidField, `"name"`},
		{"not JSON", "POST", base + "/activate", `names=sled_liveness`, 400, api.CodeInvalidBody, "not valid JSON"},
		{"enabled missing", "PUT", base + "/sled_liveness/enabled", `{}`, 400, api.CodeInvalidField, "enabled"},
		{"enabled not bool", "PUT", base + "/sled_liveness/enabled", `{"enabled":"no"}`, 400, api.CodeInvalidField, "enabled"},
		{"enabled null", "PUT", base + "/sled_liveness/enabled", `{"enabled":null}`, 400, api.CodeInvalidField, "enabled"},
		{"enabled unknown task", "PUT", base + "/ghost/enabled", `{"enabled":false}`, 404, api.CodeUnknownBackgroundTask, "ghost"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, e, _ := rawCall(t, tc.method, tc.url, tc.body, admin(nx))
			if status != tc.status || e.ErrorCode != tc.code || !strings.Contains(e.Message, tc.mention) {
				t.Fatalf("got %d %+v; want %d %s mentioning %q", status, e, tc.status, tc.code, tc.mention)
			}
		})
	}
	var n int
	if err := db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM bgtask_setting`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("bad requests left %d switch rows (%v)", n, err)
	}
	task, err := nx.Tasks().Task(sledliveness.Name, false)
	if err != nil || task.Current.Pending != "" {
		t.Fatalf("a bad request queued an activation: %+v", task)
	}
}

func TestMetricsEndpoint(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	nx := racktest.StartNexus(t, db.URL, nexus.Config{})
	racktest.WaitTask(t, nx, sledliveness.Name, 1)
	resp, err := http.DefaultClient.Do(nx.Request(t, http.MethodGet, "/metrics", nil))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	body := string(b)
	for _, want := range []string{
		`rackplane_bgtask_activations_total{outcome="ok",task="sled_liveness"} 1`,
		`rackplane_bgtask_activation_duration_seconds_count{outcome="ok",task="sled_liveness"} 1`,
		`rackplane_bgtask_running{task="sled_liveness"} 0`,
		"go_goroutines ",
		"process_resident_memory_bytes ",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if resp.StatusCode != 200 || t.Failed() {
		t.Fatalf("/metrics: %d\n%s", resp.StatusCode, body)
	}
}

// Two Nexus instances on one database: the switch is honoured by both,
// each sees the other's heartbeat, and a stopped one turns stale.
func TestTwoNexusShareSwitchesAndHeartbeats(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	a := racktest.StartNexus(t, db.URL, racktest.FastHeartbeat())
	b := racktest.StartNexus(t, db.URL, racktest.FastHeartbeat())
	ctx := context.Background()
	racktest.WaitTask(t, b, sledliveness.Name, 1)

	if _, err := a.Client.BackgroundTaskSetEnabled(ctx, sledliveness.Name, false); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Client.BackgroundTaskActivate(ctx, sledliveness.Name); err != nil {
		t.Fatal(err)
	}
	task := racktest.WaitTask(t, b, sledliveness.Name, 2)
	if task.Enabled || racktest.Activation(t, task, 2).Outcome != api.TaskOutcomeDisabled {
		t.Fatalf("the other Nexus did not honour the switch: %+v", task)
	}

	racktest.WaitFor(t, 10*time.Second, "both heartbeats", func() error {
		list, err := a.Client.BackgroundTaskList(ctx)
		if err != nil {
			return err
		}
		seen := map[uuid.UUID]bool{}
		for _, hb := range list.Instances {
			if !hb.Stale && len(hb.Tasks) == len(a.Tasks().Names()) {
				seen[hb.NexusID] = true
			}
		}
		if !seen[a.ID()] || !seen[b.ID()] {
			return fmt.Errorf("fresh heartbeats: %v", seen)
		}
		return nil
	})

	b.Stop()
	racktest.WaitFor(t, 15*time.Second, "the stopped Nexus to turn stale", func() error {
		list, err := a.Client.BackgroundTaskList(ctx)
		if err != nil {
			return err
		}
		for _, hb := range list.Instances {
			if hb.NexusID == b.ID() && hb.Stale && hb.AgeSeconds >= 0.6 {
				return nil
			}
			if hb.NexusID == a.ID() && hb.Stale {
				t.Fatalf("the running Nexus's heartbeat is stale: %+v", hb)
			}
		}
		return errors.New("not stale yet")
	})
}

// A sled that stops reporting is marked unreachable by the task, and one
// seen again is marked active by the task (not by registration: the agent
// stays stopped and its last-seen time is refreshed by hand).
func TestSledLivenessMarksAStoppedSled(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	nx := racktest.StartNexus(t, db.URL, nexus.Config{
		Tasks:       nexustasks.Registrar(nexustasks.Config{SledLivenessThreshold: time.Second}),
		TaskPeriods: map[string]time.Duration{sledliveness.Name: 100 * time.Millisecond},
	})
	sled := racktest.StartSled(t, nx.InternalURL(), sledagent.Config{RegisterInterval: 100 * time.Millisecond})
	racktest.WaitRegistered(t, nx.Client, sled)
	ctx := context.Background()
	sled.Stop()

	state := func(want string) func() error {
		return func() error {
			s, err := nx.Client.SledGet(ctx, sled.ID())
			if err != nil {
				return err
			}
			if s.State != want {
				return fmt.Errorf("sled is %s", s.State)
			}
			return nil
		}
	}
	racktest.WaitFor(t, 15*time.Second, "the silent sled to be marked unreachable", state(api.SledStateUnreachable))
	task, err := nx.Client.BackgroundTaskGet(ctx, sledliveness.Name)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, a := range task.History {
		var st sledliveness.Status
		if a.Changed && json.Unmarshal(a.Status, &st) == nil && len(st.MarkedUnreachable) == 1 &&
			st.MarkedUnreachable[0].ID == sled.ID() && st.MarkedUnreachable[0].SilentSeconds >= 1 {
			found = true
		}
	}
	if !found {
		t.Fatalf("no activation reports marking the sled unreachable: %+v", task.History)
	}

	if _, err := db.Pool.Exec(ctx, `UPDATE sled SET time_last_seen = now() WHERE id = $1`, sled.ID()); err != nil {
		t.Fatal(err)
	}
	racktest.WaitFor(t, 15*time.Second, "the sled to be marked active again", state(api.SledStateActive))
}

func TestUnknownTaskPeriodStopsStartup(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	id := uuid.New()
	_, err := nexus.New(context.Background(), nexus.Config{ID: id, ExternalAddr: "127.0.0.1:0",
		InternalAddr: "127.0.0.1:0", DatabaseURL: db.URL, DataDir: t.TempDir(), TLS: sledtest.Bundle(t, rackpki.Nexus(id.String())),
		Tasks:       nexustasks.Registrar(nexustasks.Config{}),
		TaskPeriods: map[string]time.Duration{"sled_livenes": time.Second}}, racktest.Logger(t, "nexus"))
	if !errors.Is(err, bgtasks.ErrInvalidRegistration) || !strings.Contains(err.Error(), "for sled_livenes,") ||
		!strings.Contains(err.Error(), "(tasks: sled_liveness, ") || !strings.Contains(err.Error(), "nexus_heartbeat") {
		t.Fatalf("typo in a task period: %v", err)
	}
}
