package main

import (
	"bytes"
	"testing"
	"time"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/internal/clock"
)

// A Nexus that is healthy but not ready, as an operator with a token sees
// it, against testdata/health/not_ready.golden: the failing checks with
// Nexus's reasons, each failing task with what to run next, the build.
func TestHealthRendering(t *testing.T) {
	now := time.Date(2026, 3, 4, 12, 0, 0, 0, time.UTC)
	build := api.BuildInfo{Version: "v1.4.0", Commit: "0123456789abcdef0123456789abcdef01234567",
		CommitTime: time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC), GoVersion: "go1.26.8"}
	h := api.Health{Status: "ok", Checks: map[string]string{"database": "ok"}, Build: &build}
	rd := api.Readiness{Status: api.NotReadyStatus, Checks: map[string]string{"database": api.CheckOK, "background_tasks": api.CheckFailing},
		Detail: &api.ReadinessDetail{Database: api.CheckOK, Build: build, FailingTasks: []api.FailingTask{{
			Name: "tuf_artifact_replication", ConsecutiveErrors: 3, LastStart: now.Add(-20 * time.Second),
			LastError: "list sleds: the database did not answer within 5s",
		}}}}
	var out bytes.Buffer
	e := &env{out: &out, baseURL: "https://nexus.example:12220", clock: clock.NewFake(now)}
	if err := printHealth(e, h, &rd); err != nil {
		t.Fatal(err)
	}
	golden(t, "health/not_ready", out.String())
}
