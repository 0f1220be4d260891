package api

import (
	"encoding/json"
	"time"

	"github.com/google/uuid"
)

// Background-task states, activation outcomes and the error code for a
// task name that no task has.
const (
	TaskStateIdle    = "idle"
	TaskStateRunning = "running"

	// TaskOutcomeOK: the task ran and returned no error.
	TaskOutcomeOK = "ok"
	// TaskOutcomeError: the task returned an error or panicked, or the
	// driver could not tell whether the task is enabled.
	TaskOutcomeError = "error"
	// TaskOutcomeDisabled: the task is switched off and did nothing.
	TaskOutcomeDisabled = "disabled"

	CodeUnknownBackgroundTask = "unknown_background_task"
)

// BackgroundTask is one task as one Nexus runs it (GET
// /v1/system/background-tasks/{name}; the listing leaves History out).
type BackgroundTask struct {
	Name          string   `json:"name"`
	Description   string   `json:"description"`
	PeriodSeconds float64  `json:"period_seconds"`
	DependsOn     []string `json:"depends_on"`
	// Enabled is the database switch every Nexus honours.
	Enabled bool        `json:"enabled"`
	Current TaskCurrent `json:"current"`
	// LastActivation is the last completed activation, whatever its outcome.
	LastActivation *TaskActivation `json:"last_activation,omitempty"`
	// Status is what the task itself reported from the last activation that
	// really ran (a disabled activation does not replace it), so operators
	// still see what the task last saw while it is switched off.
	Status          json.RawMessage `json:"status,omitempty"`
	StatusIteration uint64          `json:"status_iteration,omitempty"`
	// Activations and Errors count completed activations in this Nexus.
	Activations uint64 `json:"activations"`
	Errors      uint64 `json:"errors"`
	// ConsecutiveErrors counts the failed activations since the last one
	// that succeeded (disabled ones neither count nor reset it).
	ConsecutiveErrors uint64 `json:"consecutive_errors"`
	// Coalesced counts triggers folded into an already pending activation.
	Coalesced uint64 `json:"coalesced"`
	// History holds the last activations, newest first.
	History []TaskActivation `json:"history,omitempty"`
}

// TaskCurrent is what a task is doing now.
type TaskCurrent struct {
	State string `json:"state"`
	// Since, Reason, Requester, Iteration and RunID describe the running
	// activation (only when State is running).
	Since     *time.Time `json:"since,omitempty"`
	Reason    string     `json:"reason,omitempty"`
	Requester string     `json:"requester,omitempty"`
	Iteration uint64     `json:"iteration,omitempty"`
	RunID     string     `json:"run_id,omitempty"`
	// Pending is the reason of a trigger waiting to run, if any.
	Pending string `json:"pending,omitempty"`
	// BackoffUntil is set while the task backs off after an activation
	// that failed or could not make progress: nothing starts it before
	// then, however it is triggered; it then retries.
	BackoffUntil *time.Time `json:"backoff_until,omitempty"`
}

// TaskActivation is one completed activation.
type TaskActivation struct {
	Iteration  uint64    `json:"iteration"`
	Reason     string    `json:"reason"`
	Requester  string    `json:"requester,omitempty"`
	RunID      string    `json:"run_id"`
	Start      time.Time `json:"start"`
	DurationMS float64   `json:"duration_ms"`
	Outcome    string    `json:"outcome"`
	Error      string    `json:"error,omitempty"`
	// Changed is set when the task said its result changed, which activates
	// the tasks that depend on it.
	Changed bool            `json:"changed,omitempty"`
	Status  json.RawMessage `json:"status,omitempty"`
}

// BackgroundTaskList is the body of GET /v1/system/background-tasks: the
// answering Nexus's tasks, live, and every Nexus's last heartbeat.
type BackgroundTaskList struct {
	NexusID   uuid.UUID            `json:"nexus_id"`
	Tasks     []BackgroundTask     `json:"tasks"`
	Instances []NexusTaskHeartbeat `json:"instances"`
	// Warnings say what could not be read (the database, when it is
	// down); the live tasks are still shown, with Enabled as last seen.
	Warnings []string `json:"warnings,omitempty"`
}

// NexusTaskHeartbeat is the compact summary of its tasks one Nexus last
// wrote to the database.
type NexusTaskHeartbeat struct {
	NexusID     uuid.UUID `json:"nexus_id"`
	TimeWritten time.Time `json:"time_written"`
	// AgeSeconds is measured with the database's clock when read, so Nexus
	// clocks that disagree do not matter.
	AgeSeconds float64 `json:"age_seconds"`
	// Stale is set when the heartbeat is older than a few heartbeat
	// periods: that Nexus is probably not running.
	Stale bool          `json:"stale"`
	Tasks []TaskSummary `json:"tasks"`
}

// TaskSummary is one task in a heartbeat: enough for a status table.
type TaskSummary struct {
	Name              string     `json:"name"`
	Enabled           bool       `json:"enabled"`
	PeriodSeconds     float64    `json:"period_seconds"`
	State             string     `json:"state"`
	RunningSince      *time.Time `json:"running_since,omitempty"`
	Iteration         uint64     `json:"iteration"`
	LastStart         *time.Time `json:"last_start,omitempty"`
	LastDurationMS    float64    `json:"last_duration_ms"`
	LastOutcome       string     `json:"last_outcome,omitempty"`
	LastError         string     `json:"last_error,omitempty"`
	ConsecutiveErrors uint64     `json:"consecutive_errors"`
}

// HistoryEntry returns the activation with the given iteration from t's
// history, if it is still there.
func (t BackgroundTask) HistoryEntry(iteration uint64) (TaskActivation, bool) {
	for _, a := range t.History {
		if a.Iteration == iteration {
			return a, true
		}
	}
	return TaskActivation{}, false
}

// Summary condenses t for a heartbeat or a status table.
func (t BackgroundTask) Summary() TaskSummary {
	s := TaskSummary{Name: t.Name, Enabled: t.Enabled, PeriodSeconds: t.PeriodSeconds, State: t.Current.State,
		RunningSince: t.Current.Since, ConsecutiveErrors: t.ConsecutiveErrors}
	if t.Current.State == TaskStateRunning {
		s.Iteration = t.Current.Iteration
	}
	if l := t.LastActivation; l != nil {
		start := l.Start
		s.LastStart, s.LastDurationMS, s.LastOutcome, s.LastError = &start, l.DurationMS, l.Outcome, l.Error
		s.Iteration = max(s.Iteration, l.Iteration)
	}
	return s
}

// BackgroundTaskActivate is the body of POST
// /v1/system/background-tasks/activate.
type BackgroundTaskActivate struct {
	Names []string `json:"names"`
}

// Validate checks that at least one name is given and none is empty.
func (a *BackgroundTaskActivate) Validate() error {
	if len(a.Names) == 0 {
		return fieldErr("names", "must list at least one background task")
	}
	for _, n := range a.Names {
		if n == "" {
			return fieldErr("names", "must not contain an empty name")
		}
	}
	return nil
}

// BackgroundTaskActivated answers an activation: the tasks that will run.
type BackgroundTaskActivated struct {
	Activated []string `json:"activated"`
}

// BackgroundTaskEnabled is the body of PUT
// /v1/system/background-tasks/{name}/enabled.
type BackgroundTaskEnabled struct {
	Enabled *bool `json:"enabled"`
}

// Validate requires the field: a missing "enabled" must not mean false.
func (e *BackgroundTaskEnabled) Validate() error {
	if e.Enabled == nil {
		return fieldErr("enabled", "is required (true or false)")
	}
	return nil
}
