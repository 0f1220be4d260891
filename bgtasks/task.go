package bgtasks

import (
	"context"
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
}

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
