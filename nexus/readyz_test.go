package nexus_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/bgtasks/tufpruner"
	"github.com/rackplane/rackplane/bgtasks/tufreplication"
	"github.com/rackplane/rackplane/internal/buildinfo"
	"github.com/rackplane/rackplane/internal/racktest"
	"github.com/rackplane/rackplane/internal/testdb"
	"github.com/rackplane/rackplane/nexus"
)

// getJSON fetches path with the token (none when empty) and decodes the
// body into out.
func getJSON(t *testing.T, nx *racktest.Nexus, path, token string, out any) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, nx.ExternalURL()+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(body, out); err != nil {
		t.Fatalf("%s: %s: %v", path, body, err)
	}
	return resp.StatusCode, string(body)
}

// /readyz says ready while the database answers and no task keeps
// failing; a renamed table (the pruner and replication fail) and a
// database outage make it 503, naming only the failing check to anyone and
// the errors to an operator. /healthz stays liveness, and tells an
// operator which build answers.
func TestReadiness(t *testing.T) {
	cluster, url := testdb.NewCluster(t)
	nx := racktest.StartNexus(t, url, nexus.Config{})
	viewer := nx.Token(t, "dashboard", "viewer", 0)
	racktest.WaitTask(t, nx, tufreplication.Name, 1)
	racktest.WaitTask(t, nx, tufpruner.Name, 1)

	var rd api.Readiness
	if code, body := getJSON(t, nx, "/readyz", "", &rd); code != 200 || rd.Status != api.ReadyStatus ||
		rd.Checks["database"] != "ok" || rd.Checks["background_tasks"] != "ok" || rd.Detail != nil {
		t.Fatalf("ready at first: %d %s", code, body)
	}
	var hl api.Health
	if code, body := getJSON(t, nx, "/healthz", "", &hl); code != 200 || hl.Build != nil {
		t.Fatalf("public healthz: %d %s", code, body)
	}
	if code, body := getJSON(t, nx, "/healthz", viewer, &hl); code != 200 || hl.Build == nil ||
		hl.Build.Version != buildinfo.Read().Version || hl.Build.GoVersion == "" {
		t.Fatalf("healthz for an operator: %d %s", code, body)
	}
	var anon api.Health
	if code, body := getJSON(t, nx, "/healthz", "rp_not-a-token", &anon); code != 200 || anon.Build != nil {
		t.Fatalf("healthz with a bad token: %d %s", code, body)
	}

	// The table the tasks read is renamed: each fails, twice in a row.
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `ALTER TABLE tuf_repo RENAME TO tuf_repo_moved`); err != nil {
		t.Fatal(err)
	}
	runTwice := func(name string) {
		t.Helper()
		for range 2 {
			before, _ := nx.Tasks().Task(name, false)
			if err := nx.ActivateTask(name, "readyz-test"); err != nil {
				t.Fatal(err)
			}
			racktest.WaitTask(t, nx, name, before.LastActivation.Iteration+1)
		}
	}
	runTwice(tufpruner.Name)
	runTwice(tufreplication.Name)
	rd = api.Readiness{}
	code, body := getJSON(t, nx, "/readyz", "", &rd)
	if code != 503 || rd.Status != api.NotReadyStatus || rd.Checks["background_tasks"] != "failing" ||
		rd.Checks["database"] != "ok" || rd.Detail != nil || strings.Contains(body, "tuf_repo") {
		t.Fatalf("public readyz with failing tasks: %d %s", code, body)
	}
	code, body = getJSON(t, nx, "/readyz", viewer, &rd)
	if code != 503 || rd.Detail == nil || rd.Detail.Database != "ok" || len(rd.Detail.FailingTasks) != 2 {
		t.Fatalf("operator readyz with failing tasks: %d %s", code, body)
	}
	for _, ft := range rd.Detail.FailingTasks {
		if (ft.Name != tufpruner.Name && ft.Name != tufreplication.Name) || ft.ConsecutiveErrors < 2 ||
			!strings.Contains(ft.LastError, "tuf_repo") {
			t.Errorf("failing task %+v", ft)
		}
	}
	if code, _ := getJSON(t, nx, "/healthz", "", &hl); code != 200 {
		t.Fatalf("healthz is liveness, not readiness: %d", code)
	}
	if _, err := conn.Exec(ctx, `ALTER TABLE tuf_repo_moved RENAME TO tuf_repo`); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{tufpruner.Name, tufreplication.Name} {
		before, _ := nx.Tasks().Task(name, false)
		if err := nx.ActivateTask(name, "readyz-test"); err != nil {
			t.Fatal(err)
		}
		racktest.WaitTask(t, nx, name, before.LastActivation.Iteration+1)
	}
	if code, body := getJSON(t, nx, "/readyz", "", &rd); code != 200 || rd.Status != api.ReadyStatus {
		t.Fatalf("ready again: %d %s", code, body)
	}
	// The typed client, with the admin token, sees the detail and the
	// build.
	if got, err := nx.Client.Readiness(ctx); err != nil || got.Detail == nil || got.Detail.Build.Version == "" {
		t.Fatalf("client readiness: %v %+v", err, got)
	}
	if h, err := nx.Client.Health(ctx); err != nil || h.Build == nil {
		t.Fatalf("client health for an operator: %v %+v", err, h)
	}

	// The database goes away.
	conn.Close(ctx)
	cluster.Stop()
	rd = api.Readiness{}
	code, body = getJSON(t, nx, "/readyz", "", &rd)
	if code != 503 || rd.Checks["database"] != "failing" || strings.Contains(body, "dial") || strings.Contains(body, "sock") {
		t.Fatalf("public readyz with the database down: %d %s", code, body)
	}
	if got, err := nx.Client.Readiness(ctx); err == nil || got.Status != api.NotReadyStatus {
		t.Fatalf("client readiness with the database down: %v %+v", err, got)
	}
	if err := cluster.Start(ctx); err != nil {
		t.Fatal(err)
	}
	racktest.WaitFor(t, 20*time.Second, "readiness after the database is back", func() error {
		if code, body := getJSON(t, nx, "/readyz", "", &rd); code != 200 {
			return fmt.Errorf("%d %s", code, body)
		}
		return nil
	})
}
