package ui_test

import (
	"context"
	"net/url"
	"strings"
	"testing"

	"github.com/rackplane/rackplane/bgtasks/sledliveness"
	"github.com/rackplane/rackplane/internal/racktest"
	"github.com/rackplane/rackplane/internal/testdb"
)

func TestStatusPagesOverHTTP(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	nx := racktest.StartNexus(t, db.URL, racktest.FastHeartbeat())
	racktest.WaitTask(t, nx, sledliveness.Name, 1)
	op := signIn(t, nx, nx.AdminToken)

	if code, _, h := op.get("/ui"); code != 303 || h.Get("Location") != "/ui/background-tasks" {
		t.Fatalf("/ui: %d to %q", code, h.Get("Location"))
	}
	code, body, h := op.get("/ui/background-tasks")
	if code != 200 || !strings.HasPrefix(h.Get("Content-Type"), "text/html") || !strings.Contains(body, `data-task="sled_liveness"`) ||
		!strings.Contains(body, `aria-current="page"`) || !strings.Contains(body, "data-refresh=") ||
		!strings.Contains(body, nx.ID().String()) {
		t.Fatalf("task list: %d %q\n%s", code, h.Get("Content-Type"), body)
	}
	// No external assets: everything is inline.
	for _, bad := range []string{"<link", "<script src", "<img", "http://", "https://", "@import"} {
		if strings.Contains(body, bad) {
			t.Errorf("task list refers to an external asset (%q)", bad)
		}
	}
	code, body, _ = op.get("/ui/background-tasks?fragment=1")
	if code != 200 || strings.Contains(body, "<html") || !strings.Contains(body, `data-task="nexus_heartbeat"`) {
		t.Fatalf("fragment: %d\n%s", code, body)
	}
	code, body, _ = op.get("/ui/background-tasks/sled_liveness")
	if code != 200 || !strings.Contains(body, `id="activate"`) || !strings.Contains(body, "Threshold") ||
		!strings.Contains(body, "Raw JSON") || !strings.Contains(body, `id="iteration" data-iteration="1"`) {
		t.Fatalf("task page: %d\n%s", code, body)
	}

	code, body, _ = op.get("/ui/background-tasks/ghost")
	if code != 404 || !strings.Contains(body, `no background task named &#34;ghost&#34;`) || !strings.Contains(body, "sled_liveness") {
		t.Fatalf("unknown task page: %d\n%s", code, body)
	}
	code, body, _ = op.post("/ui/background-tasks/ghost/activate", nil)
	if code != 404 || !strings.Contains(body, "nothing was activated") {
		t.Fatalf("activate unknown: %d\n%s", code, body)
	}
	code, body, _ = op.post("/ui/background-tasks/sled_liveness/enabled", url.Values{"enabled": {"maybe"}})
	if code != 400 || !strings.Contains(body, "must be true or false") || db.Count(t, `SELECT count(*) FROM bgtask_setting WHERE name = $1`, sledliveness.Name) != 0 {
		t.Fatalf("bad switch form: %d\n%s", code, body)
	}
	code, body, _ = op.post("/ui/background-tasks/ghost/enabled", url.Values{"enabled": {"false"}})
	if code != 404 || db.Count(t, `SELECT count(*) FROM bgtask_setting WHERE name = $1`, "ghost") != 0 {
		t.Fatalf("switch unknown: %d\n%s", code, body)
	}

	code, _, h = op.post("/ui/background-tasks/sled_liveness/activate", nil)
	if code != 303 || h.Get("Location") != "/ui/background-tasks/sled_liveness?done=activated" {
		t.Fatalf("activate: %d to %q", code, h.Get("Location"))
	}
	if task := racktest.WaitTask(t, nx, sledliveness.Name, 2); !strings.HasPrefix(racktest.Activation(t, task, 2).Requester, "ui:") {
		t.Fatalf("activation from the page: %+v", task.History)
	}
	// The audit log page shows who did it, from the page as from the API.
	code, body, _ = op.get("/ui/audit-log")
	if code != 200 || !strings.Contains(body, "task.activate") || !strings.Contains(body, "racktest-admin") ||
		!strings.Contains(body, `<span class="badge ok">ok</span>`) {
		t.Fatalf("audit page: %d\n%s", code, body)
	}
	code, _, h = op.post("/ui/background-tasks/sled_liveness/enabled", url.Values{"enabled": {"false"}})
	if code != 303 || h.Get("Location") != "/ui/background-tasks/sled_liveness?done=disabled" {
		t.Fatalf("disable: %d to %q", code, h.Get("Location"))
	}
	racktest.WaitTask(t, nx, sledliveness.Name, 3)
	code, body, _ = op.get("/ui/background-tasks/sled_liveness?done=disabled")
	if code != 200 || !strings.Contains(body, "disabled on every Nexus") || !strings.Contains(body, "Disabled on every Nexus;") ||
		!strings.Contains(body, `name="enabled" value="true"`) {
		t.Fatalf("page after disabling: %d\n%s", code, body)
	}
	code, body, _ = op.get("/ui/background-tasks")
	if code != 200 || !strings.Contains(body, `<tr class="disabled" data-task="sled_liveness">`) {
		t.Fatalf("list after disabling: %d\n%s", code, body)
	}
	if got, err := nx.Client.BackgroundTaskGet(context.Background(), sledliveness.Name); err != nil || got.Enabled {
		t.Fatalf("switch after the form: %+v %v", got, err)
	}
}
