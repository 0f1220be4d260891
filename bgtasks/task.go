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
	// ReasonFollowUp is the task's own request (Activation.RequeueAfter)
	// to run again soon because work it started is still finishing.
	ReasonFollowUp Reason = "follow_up"
	// ReasonRetry follows an activation that failed or could not make
	// progress (Activation.RetryLater), once the driver's back-off has
	// passed.
	ReasonRetry Reason = "retry"
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

	// changed and requeue are shared by every copy of the Activation the
	// driver hands out, so MarkChanged and RequeueAfter work on a value
	// receiver.
	changed *atomic.Bool
	requeue *atomic.Int64 // nanoseconds; 0 means no follow-up
	retry   *atomic.Bool
}

// NewActivation returns an Activation that records MarkChanged, as the
// driver's do. Tasks' own tests use it to check what their activations
// report.
func NewActivation(iteration uint64, reason Reason, requester, runID string, start time.Time) Activation {
	return Activation{Iteration: iteration, Reason: reason, Requester: requester, RunID: runID, Start: start,
		changed: new(atomic.Bool), requeue: new(atomic.Int64), retry: new(atomic.Bool)}
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

// RequeueAfter asks for a follow-up activation d after this one finishes,
// for a task that started work it wants to see through (copies still
// running on sleds, say) sooner than its period. The shortest request of an
// activation wins; the follow-up coalesces with other triggers like any
// activation, and does not move the period timer.
func (a Activation) RequeueAfter(d time.Duration) {
	if a.requeue == nil || d <= 0 {
		return
	}
	for {
		cur := a.requeue.Load()
		if cur != 0 && cur <= int64(d) {
			return
		}
		if a.requeue.CompareAndSwap(cur, int64(d)) {
			return
		}
	}
}

// Requeue returns the follow-up delay asked for with RequeueAfter (0: none).
func (a Activation) Requeue() time.Duration {
	if a.requeue == nil {
		return 0
	}
	return time.Duration(a.requeue.Load())
}

// RetryLater tells the driver that this activation could not make
// progress (its view of the world was stale, something it needs was not
// ready) although it did not fail: the driver paces it as it paces a
// failed activation. The task runs again once a jittered back-off has
// passed, the back-off doubling with every such activation in a row up to
// the task's period, and every trigger that arrives meanwhile waits for it
// too. A follow-up asked for with RequeueAfter is then ignored.
func (a Activation) RetryLater() {
	if a.retry != nil {
		a.retry.Store(true)
	}
}

// Retrying reports whether RetryLater was called for this activation.
func (a Activation) Retrying() bool { return a.retry != nil && a.retry.Load() }

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
