// Package bgtasks is the background-task driver that runs Nexus's
// level-triggered reconcilers, and the home of the tasks themselves (one
// subpackage per task: sledliveness, heartbeat, ...).
//
// # Writing a task
//
// A task implements [Task]: Activate re-reads everything it needs, moves the
// world one step toward the desired state and returns a JSON-serialisable
// status describing what it saw and did. It is registered once, in
// nexus.Server.registerTasks, with a [Registration]: a stable snake_case
// name, a one-line description, a default period and, optionally, the tasks
// it depends on. Config may override the period (--task-period NAME=DUR).
// Tests of a task call Activate directly with [NewActivation]; tests of
// timing use the fake clock in internal/clock.
//
// # When a task runs
//
// Once at start-up; then every period; on explicit request
// ([Driver.Activate], which nexus.Server.ActivateTask wraps); and when a
// task it depends on finishes an activation that changed something. At most
// one activation of a task runs at a time. Triggers that arrive while one
// runs coalesce into a single follow-up activation (which carries the first
// trigger's reason). An explicit activation does not move the period timer.
//
// # Signalling "changed"
//
// A task says its activation changed the result its dependents consume by
// calling [Activation.MarkChanged]; the driver then activates every task
// that declared DependsOn on it, once the activation finishes. This is an
// explicit signal rather than a comparison of statuses, because statuses
// carry times and counts that differ on every run. Call it only when the
// world changed (a row written, a sled's state flipped).
//
// # Failures and back-off
//
// A panic is recovered and recorded as that activation's error. After an
// activation that failed, or one that called [Activation.RetryLater]
// (it ran but could not make progress: a stale view, say), the task backs
// off: it runs again, with reason retry, once a jittered delay has passed
// ([DefaultRetry]: 50-100 ms at first, doubling with every such
// activation in a row up to the task's period), and every trigger that
// arrives meanwhile waits for that run rather than starting one sooner. So
// nothing — an operator, an event, the task's own follow-ups — reruns a
// failing task faster than the back-off allows; the first activation that
// succeeds ends it. The task's status shows the back-off's end
// (current.backoff_until).
//
// # Switches and shutdown
//
// Before every activation the driver asks
// [Options.Enabled] (in Nexus: the bgtask_setting table, so the switch holds
// across restarts and every Nexus instance); a disabled task does not run
// and records the outcome "disabled". [Driver.Stop] cancels every
// activation's context and waits, up to a bound, for them to return.
//
// # What operators see
//
// [Driver.Task] and [Driver.Tasks] report each task's current state, last
// activation, the last [DefaultHistory] activations and the task's own
// status, as api.BackgroundTask; [Metrics] count activations, errors and
// durations by task and outcome.
package bgtasks
