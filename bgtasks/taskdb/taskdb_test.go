package taskdb_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/rs/zerolog"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/bgtasks/taskdb"
	"github.com/rackplane/rackplane/internal/testdb"
	"github.com/rackplane/rackplane/nexus/datastore"
)

func TestMain(m *testing.M) { testdb.Main(m) }

func newStore(t *testing.T) (*taskdb.Store, *testdb.DB) {
	db := testdb.New(t)
	return taskdb.New(datastore.New(db.Pool, zerolog.Nop(), datastore.Options{})), db
}

func TestSwitches(t *testing.T) {
	t.Parallel()
	s, db := newStore(t)
	ctx := context.Background()
	if on, err := s.Enabled(ctx, "a"); err != nil || !on {
		t.Fatalf("a task nobody switched: %v, %v", on, err)
	}
	if err := s.SetEnabled(ctx, "a", false, "req-1"); err != nil {
		t.Fatal(err)
	}
	if err := s.SetEnabled(ctx, "b", true, "req-2"); err != nil {
		t.Fatal(err)
	}
	if on, err := s.Enabled(ctx, "a"); err != nil || on {
		t.Fatalf("switched off: %v, %v", on, err)
	}
	if err := s.SetEnabled(ctx, "a", true, "req-3"); err != nil {
		t.Fatal(err)
	}
	sw, err := s.Switches(ctx)
	if err != nil || len(sw) != 2 || !sw["a"] || !sw["b"] {
		t.Fatalf("switches %v, %v", sw, err)
	}
	var by string
	if err := db.Pool.QueryRow(ctx, `SELECT modified_by FROM bgtask_setting WHERE name = 'a'`).Scan(&by); err != nil || by != "req-3" {
		t.Fatalf("modified_by %q, %v", by, err)
	}
}

func TestHeartbeats(t *testing.T) {
	t.Parallel()
	s, db := newStore(t)
	ctx := context.Background()
	live, gone, ancient := uuid.New(), uuid.New(), uuid.New()
	start := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	tasks := []api.TaskSummary{{Name: "x", Enabled: true, State: "idle", Iteration: 4, LastStart: &start, LastOutcome: "ok"}}
	for _, id := range []uuid.UUID{live, gone, ancient} {
		if err := s.WriteHeartbeat(ctx, id, tasks); err != nil {
			t.Fatal(err)
		}
	}
	// A second write replaces the first.
	tasks[0].Iteration = 5
	if err := s.WriteHeartbeat(ctx, live, tasks); err != nil {
		t.Fatal(err)
	}
	age := func(id uuid.UUID, d time.Duration) {
		if _, err := db.Pool.Exec(ctx, `UPDATE bgtask_heartbeat SET time_written = now() - $2::FLOAT8 * INTERVAL '1 second'
			WHERE nexus_id = $1`, id, d.Seconds()); err != nil {
			t.Fatal(err)
		}
	}
	age(gone, time.Minute)
	age(ancient, 8*24*time.Hour)

	hbs, err := s.Heartbeats(ctx, 30*time.Second)
	if err != nil || len(hbs) != 3 {
		t.Fatalf("heartbeats %+v, %v", hbs, err)
	}
	byID := map[uuid.UUID]api.NexusTaskHeartbeat{}
	for _, hb := range hbs {
		byID[hb.NexusID] = hb
	}
	if hb := byID[live]; hb.Stale || hb.AgeSeconds > 5 || len(hb.Tasks) != 1 || hb.Tasks[0].Iteration != 5 ||
		!hb.Tasks[0].LastStart.Equal(start) {
		t.Fatalf("live heartbeat %+v", hb)
	}
	if hb := byID[gone]; !hb.Stale || hb.AgeSeconds < 59 || hb.AgeSeconds > 65 {
		t.Fatalf("stale heartbeat %+v", hb)
	}

	n, err := s.PruneHeartbeats(ctx, 7*24*time.Hour)
	if err != nil || n != 1 {
		t.Fatalf("pruned %d, %v", n, err)
	}
	if hbs, _ := s.Heartbeats(ctx, time.Minute); len(hbs) != 2 {
		t.Fatalf("after pruning: %+v", hbs)
	}
}
