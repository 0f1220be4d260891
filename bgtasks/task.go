package bgtasks

import (
	"context"
	"sync/atomic"
	"time"
)

// Reason says why a task is being activated.
type Reason string

// Activation reasons.
const (
	// ReasonStartup is the first activation after Nexus starts.
	ReasonStartup Reason = "startup"
	// ReasonPeriodic comes from the task's period timer.
	ReasonPeriodic Reason = "periodic"
	// ReasonExplicit is a request by an operator (API, CLI, status page) or
	// by Nexus code that changed the task's inputs (an upload, say).
	ReasonExplicit Reason = "explicit"
	// ReasonDependency follows a task this one depends on finishing with a
	// changed result.
	ReasonDependency Reason = "dependency"
)

// Activation describes one run of a task.
type Activation struct {
	// Iteration counts this task's activations in this Nexus, from 1.
	Iteration uint64
	Reason    Reason
	// Requester says who asked: for an explicit activation the operator's
	// request id or the Nexus component, for a dependency activation the
	// task that finished.
	Requester string
	// RunID identifies this activation in every log line and in every
	// request the task makes to sled agents (as the request id).
	RunID string
	// Start is when the run began.
	Start time.Time

	// changed is shared by every copy of the Activation the driver hands
	// out, so MarkChanged works on a value receiver.
	changed *atomic.Bool
}

// NewActivation returns an Activation that records MarkChanged, as the
// driver's do. Tasks' own tests use it to check what their activations
// report.
func NewActivation(iteration uint64, reason Reason, requester, runID string, start time.Time) Activation {
	return Activation{Iteration: iteration, Reason: reason, Requester: requester, RunID: runID, Start: start,
		changed: new(atomic.Bool)}
}

// MarkChanged tells the driver that this activation changed the result that
// dependent tasks consume, so they are activated when it finishes. A task
// calls it only when it really changed something (a row written, a sled's
// state flipped), never merely because its status differs: statuses carry
// times and counts that differ on every run. It is safe to call from any
// goroutine of the activation and is a no-op on an Activation made neither by
// the driver nor by NewActivation.
func (a Activation) MarkChanged() {
	if a.changed != nil {
		a.changed.Store(true)
	}
}

// Changed reports whether MarkChanged was called for this activation.
func (a Activation) Changed() bool { return a.changed != nil && a.changed.Load() }

// Task is one level-triggered reconciler. Each activation re-reads all the
// desired state it needs and moves the world one step toward it, so running
// it again, or after a crash, is always safe.
type Task interface {
	// Activate runs the task once. The status is JSON-serialisable and is
	// what operators see on status pages: it should describe what the run
	// saw and did (counts, what was kept and why), not only errors. A run
	// that partly failed returns both a status and an error.
	Activate(ctx context.Context, act Activation) (status any, err error)
}

// TaskFunc adapts a function to the Task interface.
type TaskFunc func(ctx context.Context, act Activation) (status any, err error)

// Activate calls f.
func (f TaskFunc) Activate(ctx context.Context, act Activation) (any, error) { return f(ctx, act) }
