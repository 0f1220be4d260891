// Package heartbeat is the nexus_heartbeat background task: it writes a
// compact summary of this Nexus's tasks to the database, so that every
// Nexus's status page can show every Nexus's tasks, and prunes heartbeats
// of instances gone for a long time.
package heartbeat

import (
	"context"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/bgtasks"
	"github.com/rackplane/rackplane/bgtasks/taskdb"
)

// Name is the task's registered name.
const Name = "nexus_heartbeat"

// Defaults: the period also sets how stale a heartbeat may grow before the
// status page calls its Nexus stale (a few periods).
const (
	DefaultPeriod = 10 * time.Second
	// DefaultPruneAfter keeps a dead Nexus visible (as stale) for a week,
	// long enough for someone to notice, short enough not to pile up.
	DefaultPruneAfter = 7 * 24 * time.Hour
)

// Description is the one line operators see.
const Description = "writes this Nexus's background-task summary to the database for the all-Nexus status page"

// Task writes the heartbeat.
type Task struct {
	Store   *taskdb.Store
	NexusID uuid.UUID
	// Snapshot returns this Nexus's task summaries at the time of writing.
	Snapshot func() []api.TaskSummary
	// PruneAfter is DefaultPruneAfter when zero.
	PruneAfter time.Duration
}

// Status is what one activation did.
type Status struct {
	NexusID       uuid.UUID `json:"nexus_id"`
	TasksReported int       `json:"tasks_reported"`
	// Pruned counts heartbeats of other instances deleted for age.
	Pruned int64 `json:"pruned"`
}

// Activate writes the heartbeat, then prunes old ones.
func (t *Task) Activate(ctx context.Context, _ bgtasks.Activation) (any, error) {
	tasks := t.Snapshot()
	for i := range tasks {
		// This very activation would otherwise be recorded as running,
		// and read as "running for a while" as the heartbeat ages; it is
		// done once the row is written.
		if tasks[i].Name == Name {
			tasks[i].State, tasks[i].RunningSince = api.TaskStateIdle, nil
		}
	}
	st := Status{NexusID: t.NexusID, TasksReported: len(tasks)}
	if err := t.Store.WriteHeartbeat(ctx, t.NexusID, tasks); err != nil {
		return st, err
	}
	prune := t.PruneAfter
	if prune <= 0 {
		prune = DefaultPruneAfter
	}
	n, err := t.Store.PruneHeartbeats(ctx, prune)
	st.Pruned = n
	return st, err
}
