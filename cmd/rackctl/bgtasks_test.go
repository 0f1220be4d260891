package main

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/internal/racktest"
	"github.com/rackplane/rackplane/internal/testdb"
	"github.com/rackplane/rackplane/nexus"
)

func TestBgtasksCommands(t *testing.T) {
	db := testdb.New(t)
	nx := racktest.StartNexus(t, db.URL, nexus.Config{TaskPeriods: map[string]time.Duration{"nexus_heartbeat": 200 * time.Millisecond}})
	ctx := context.Background()
	wait := func(iteration uint64) {
		t.Helper()
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := nx.Tasks().WaitCompleted(wctx, "sled_liveness", iteration); err != nil {
			t.Fatal(err)
		}
	}
	wait(1)
	url := nx.ExternalURL()

	code, out, errOut := rackctl(t, "--nexus", url, "--token", nx.AdminToken, "bgtasks", "list")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	nTasks := len(nx.Tasks().Names())
	if code != 0 || len(lines) != nTasks+2 || !strings.HasPrefix(lines[0], "NAME") || !strings.HasPrefix(lines[1], "sled_liveness") ||
		!strings.Contains(lines[1], " ok ") || !strings.Contains(lines[1], "15s") || !strings.HasPrefix(lines[nTasks+1], fmt.Sprintf("%d task(s) on Nexus %s", nTasks, nx.ID())) {
		t.Fatalf("list: exit %d\n%s%s", code, out, errOut)
	}
	code, out, _ = rackctl(t, "--nexus", url, "--token", nx.AdminToken, "bgtasks", "list", "--json")
	var list api.BackgroundTaskList
	if code != 0 || json.Unmarshal([]byte(out), &list) != nil || len(list.Tasks) != nTasks {
		t.Fatalf("list --json: exit %d\n%s", code, out)
	}
	// Each task's status appears once: as "status", not again under
	// "last_activation" (where the API repeats it).
	var raw struct {
		Tasks []map[string]json.RawMessage `json:"tasks"`
	}
	if err := json.Unmarshal([]byte(out), &raw); err != nil {
		t.Fatal(err)
	}
	withStatus := 0
	for _, task := range raw.Tasks {
		var last map[string]json.RawMessage
		if task["last_activation"] == nil {
			continue // not run yet
		}
		if err := json.Unmarshal(task["last_activation"], &last); err != nil {
			t.Fatalf("%s: last_activation %s: %v", task["name"], task["last_activation"], err)
		}
		if _, ok := task["status"]; ok {
			withStatus++
			if _, dup := last["status"]; dup {
				t.Errorf("%s: the status is repeated under last_activation", task["name"])
			}
		}
	}
	if withStatus == 0 {
		t.Fatal("no task with a status to check")
	}
	racktest.WaitFor(t, 10*time.Second, "the heartbeat in list --all", func() error {
		code, out, errOut = rackctl(t, "--nexus", url, "--token", nx.AdminToken, "bgtasks", "list", "--all")
		if code != 0 || !strings.Contains(out, nx.ID().String()[:8]) || !strings.Contains(out, "1 Nexus instance(s)") {
			return &api.Error{Message: out + errOut}
		}
		return nil
	})

	code, out, errOut = rackctl(t, "--nexus", url, "--token", nx.AdminToken, "bgtasks", "activate", "sled_liveness")
	if code != 0 || !strings.Contains(out, "activation requested: sled_liveness") {
		t.Fatalf("activate: exit %d\n%s%s", code, out, errOut)
	}
	wait(2)
	code, out, errOut = rackctl(t, "--nexus", url, "--token", nx.AdminToken, "bgtasks", "show", "sled_liveness")
	if code != 0 || !strings.Contains(out, "description:") || !regexp.MustCompile(`\n  threshold +1m30s\n`).MatchString(out) || strings.Contains(out, "{") ||
		!strings.Contains(out, "explicit (api:rackctl-") || !strings.Contains(out, "startup") {
		t.Fatalf("show: exit %d\n%s%s", code, out, errOut)
	}
	code, out, _ = rackctl(t, "--nexus", url, "--token", nx.AdminToken, "--json", "bgtasks", "show", "sled_liveness")
	var task api.BackgroundTask
	if code != 0 || json.Unmarshal([]byte(out), &task) != nil || len(task.History) != 2 {
		t.Fatalf("show --json: exit %d\n%s", code, out)
	}

	code, out, errOut = rackctl(t, "--nexus", url, "--token", nx.AdminToken, "bgtasks", "disable", "sled_liveness")
	if code != 0 || !strings.Contains(out, "sled_liveness disabled on every Nexus") {
		t.Fatalf("disable: exit %d\n%s%s", code, out, errOut)
	}
	if got, err := nx.Client.BackgroundTaskGet(ctx, "sled_liveness"); err != nil || got.Enabled {
		t.Fatalf("after disable: %+v %v", got, err)
	}
	code, out, _ = rackctl(t, "--nexus", url, "--token", nx.AdminToken, "bgtasks", "list")
	if code != 0 || !strings.Contains(out, " NO ") {
		t.Fatalf("list after disable:\n%s", out)
	}
	code, out, errOut = rackctl(t, "--nexus", url, "--token", nx.AdminToken, "bgtasks", "enable", "sled_liveness")
	if code != 0 || !strings.Contains(out, "sled_liveness enabled on every Nexus") {
		t.Fatalf("enable: exit %d\n%s%s", code, out, errOut)
	}
	if got, err := nx.Client.BackgroundTaskGet(ctx, "sled_liveness"); err != nil || !got.Enabled {
		t.Fatalf("after enable: %+v %v", got, err)
	}

	for _, tc := range []struct {
		args    []string
		code    int
		mention string
	}{
		{[]string{"bgtasks", "activate", "sled_liveness", "ghost"}, 1, `"ghost"`},
		{[]string{"bgtasks", "activate"}, 2, "at least one task name"},
		{[]string{"bgtasks", "show"}, 2, "one task name"},
		{[]string{"bgtasks", "enable", "a", "b"}, 2, "one task name"},
		{[]string{"bgtasks", "disable", "ghost"}, 1, "unknown_background_task"},
		{[]string{"bgtasks", "list", "x"}, 2, "takes no arguments"},
	} {
		code, _, errOut := rackctl(t, append([]string{"--nexus", url, "--token", nx.AdminToken, "--token", nx.AdminToken}, tc.args...)...)
		if code != tc.code || !strings.Contains(errOut, tc.mention) {
			t.Errorf("%v: exit %d, %q; want %d mentioning %q", tc.args, code, errOut, tc.code, tc.mention)
		}
	}
}
