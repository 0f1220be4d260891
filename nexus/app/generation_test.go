package app_test

import (
	"context"
	"errors"
	"testing"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/internal/fault"
	"github.com/rackplane/rackplane/nexus/app"
	"github.com/rackplane/rackplane/nexus/model"
)

// The generation is fast-forwarded past a sled's only when the database is
// behind it; the change is the task's, audited; a database that is not
// behind, or a caller without the admin role, changes nothing.
func TestFastForwardTufGeneration(t *testing.T) {
	f := newApp(t, 1<<20)
	ctx := context.Background()
	gen := func() int64 {
		return int64(f.db.Count(t, `SELECT generation FROM tuf_generation`))
	}
	audits := func() int {
		return f.db.Count(t, `SELECT count(*) FROM audit_log WHERE action = 'tuf_generation.fast_forward'`)
	}
	if _, err := f.db.Pool.Exec(ctx, `UPDATE tuf_generation SET generation = 5`); err != nil {
		t.Fatal(err)
	}
	sled := uuid.New()
	task := app.WithActor(ctx, app.TaskActor("tuf_artifact_replication"))

	// Not behind: the sled holds what the database holds, or less.
	for _, seen := range []int64{4, 5} {
		ff, err := f.app.FastForwardTufGeneration(task, seen, sled)
		if !errors.Is(err, app.ErrGenerationNotBehind) || ff.After != 5 || gen() != 5 || audits() != 0 {
			t.Fatalf("sled at %d, database at 5: %+v, %v; generation %d, %d audit rows", seen, ff, err, gen(), audits())
		}
	}
	if n := f.count(app.ReposChanged); n != 0 {
		t.Fatalf("%d ReposChanged events without a change", n)
	}

	// Only an admin (here: a task) may change it.
	viewer := app.WithActor(ctx, app.Actor{Kind: app.ActorOperator, Name: "v", Role: model.RoleViewer})
	if _, err := f.app.FastForwardTufGeneration(viewer, 9, sled); fault.KindOf(err) != fault.Forbidden || gen() != 5 {
		t.Fatalf("a viewer: %v, generation %d", err, gen())
	}

	// Behind: past the sled's, once, audited as the task.
	ff, err := f.app.FastForwardTufGeneration(task, 9, sled)
	if err != nil || ff.Before != 5 || ff.After != 10 || ff.SledGeneration != 9 || ff.Sled != sled || gen() != 10 {
		t.Fatalf("sled at 9, database at 5: %+v, %v; generation %d", ff, err, gen())
	}
	if n := f.db.Count(t, `SELECT count(*) FROM audit_log WHERE action = 'tuf_generation.fast_forward'
		AND actor_kind = 'task' AND actor = 'tuf_artifact_replication' AND outcome = 'ok'`); n != 1 {
		t.Fatalf("%d audit rows for the fast-forward", n)
	}
	if n := f.count(app.ReposChanged); n != 1 {
		t.Fatalf("%d ReposChanged events after the fast-forward", n)
	}
	// Asked again with what the sleds held then: nothing more to do.
	if _, err := f.app.FastForwardTufGeneration(task, 9, sled); !errors.Is(err, app.ErrGenerationNotBehind) || gen() != 10 {
		t.Fatalf("again: %v, generation %d", err, gen())
	}
}
