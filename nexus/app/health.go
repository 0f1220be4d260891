package app

import (
	"context"
	"time"
)

// TaskFailingAfter is how many activations in a row must fail before a
// task counts as failing for readiness: one failure is a blip its next
// run may clear; two in a row are a pattern (a renamed table, a lost
// sled network) an operator must look at.
const TaskFailingAfter = 2

// FailingTask is a background task that readiness counts as failing.
type FailingTask struct {
	Name              string
	ConsecutiveErrors uint64
	LastError         string
	LastStart         time.Time
}

// Readiness is whether this Nexus can do its work: reach its database, and
// run its background tasks without them failing.
type Readiness struct {
	// DatabaseErr is why the database did not answer (nil when it did).
	DatabaseErr error
	// FailingTasks are the tasks whose last TaskFailingAfter or more
	// activations failed.
	FailingTasks []FailingTask
}

// Ready reports whether nothing is wrong.
func (r Readiness) Ready() bool { return r.DatabaseErr == nil && len(r.FailingTasks) == 0 }

// Readiness checks the database and this Nexus's background tasks.
func (a *App) Readiness(ctx context.Context) Readiness {
	var r Readiness
	r.DatabaseErr = a.Ping(ctx)
	for _, t := range a.tasks.Tasks() {
		if t.ConsecutiveErrors < TaskFailingAfter || t.LastActivation == nil {
			continue
		}
		r.FailingTasks = append(r.FailingTasks, FailingTask{Name: t.Name, ConsecutiveErrors: t.ConsecutiveErrors,
			LastError: t.LastActivation.Error, LastStart: t.LastActivation.Start})
	}
	return r
}
