package app

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/bgtasks"
	"github.com/rackplane/rackplane/internal/fault"
	"github.com/rackplane/rackplane/nexus/model"
)

// SetHeartbeatTask names the task that writes this Nexus's task summaries
// to the database: its period sets how old another Nexus's heartbeat may
// grow before it is shown as stale.
func (a *App) SetHeartbeatTask(name string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.heartbeatTask = name
}

// Tasks is this Nexus's background-task driver.
func (a *App) Tasks() *bgtasks.Driver { return a.tasks }

// TaskSummaries is what the heartbeat writes: this Nexus's view.
func (a *App) TaskSummaries() []api.TaskSummary {
	tasks := a.tasks.Tasks()
	out := make([]api.TaskSummary, len(tasks))
	for i, t := range tasks {
		out[i] = t.Summary()
	}
	return out
}

// heartbeatStaleAfter is how old another Nexus's heartbeat may grow before
// it is shown as stale: a few of this Nexus's heartbeat periods.
func (a *App) heartbeatStaleAfter(fallback time.Duration) time.Duration {
	period := fallback
	a.mu.Lock()
	name := a.heartbeatTask
	a.mu.Unlock()
	if t, err := a.tasks.Task(name, false); err == nil {
		period = time.Duration(t.PeriodSeconds * float64(time.Second))
	}
	return max(3*period, 3*time.Second)
}

// Heartbeats returns every Nexus's last heartbeat, marking stale ones.
func (a *App) Heartbeats(ctx context.Context) ([]api.NexusTaskHeartbeat, error) {
	hbs, err := a.taskdb.Heartbeats(ctx, a.heartbeatStaleAfter(10*time.Second))
	return hbs, translate(err)
}

// TaskList gathers this Nexus's live tasks with the database's switches,
// and every Nexus's heartbeat. When the database cannot be read, the live
// tasks are still returned, with a warning saying what is missing.
func (a *App) TaskList(ctx context.Context) api.BackgroundTaskList {
	out := api.BackgroundTaskList{NexusID: a.cfg.NexusID, Tasks: a.tasks.Tasks(), Instances: []api.NexusTaskHeartbeat{}}
	if w := a.applySwitches(ctx, out.Tasks); w != "" {
		out.Warnings = append(out.Warnings, w)
	}
	hbs, err := a.taskdb.Heartbeats(ctx, a.heartbeatStaleAfter(10*time.Second))
	if err != nil {
		zerolog.Ctx(ctx).Warn().Err(err).Msg("reading heartbeats")
		out.Warnings = append(out.Warnings, "other Nexus instances are not shown: "+err.Error())
	} else {
		out.Instances = hbs
	}
	return out
}

// applySwitches sets each task's Enabled from the database, which every
// Nexus honours; it returns a warning when the switches cannot be read.
func (a *App) applySwitches(ctx context.Context, tasks []api.BackgroundTask) string {
	sw, err := a.taskdb.Switches(ctx)
	if err != nil {
		zerolog.Ctx(ctx).Warn().Err(err).Msg("reading background-task switches")
		return "enabled/disabled is shown as last seen by this Nexus: " + err.Error()
	}
	for i := range tasks {
		on, ok := sw[tasks[i].Name]
		tasks[i].Enabled = on || !ok
	}
	return ""
}

// Task is one task with its history and its switch from the database; the
// warning says what could not be read.
func (a *App) Task(ctx context.Context, name string) (t api.BackgroundTask, warning string, err error) {
	t, err = a.tasks.Task(name, true)
	if err != nil {
		return t, "", a.unknownTask(err)
	}
	one := []api.BackgroundTask{t}
	w := a.applySwitches(ctx, one)
	return one[0], w, nil
}

// CheckTask returns a not-found fault listing the tasks there are when
// name is not one of this Nexus's tasks.
func (a *App) CheckTask(name string) error {
	if _, err := a.tasks.Task(name, false); err != nil {
		return a.unknownTask(err)
	}
	return nil
}

// unknownTask turns the driver's ErrUnknownTask into a not-found fault
// that lists the tasks there are.
func (a *App) unknownTask(err error) error {
	if !errors.Is(err, bgtasks.ErrUnknownTask) {
		return err
	}
	return fault.Wrap(err, fault.NotFound, api.CodeUnknownBackgroundTask, "%s; this Nexus runs: %s",
		err.Error(), strings.Join(a.tasks.Names(), ", "))
}

// ActivateTasks asks for an explicit activation of every named task on
// behalf of requester (a component name or request id, shown to
// operators); when any name is unknown, nothing is activated. It returns
// the names activated, without repeats, in the order given.
func (a *App) ActivateTasks(ctx context.Context, requester string, names ...string) ([]string, error) {
	err := a.audited(ctx, model.RoleAdmin, "task.activate", "tasks "+strings.Join(names, ","), func(ctx context.Context) error {
		if err := a.tasks.Activate(requester, names...); err != nil {
			return a.unknownTask(fmt.Errorf("%w; nothing was activated", err))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := []string{}
	seen := map[string]bool{}
	for _, n := range names {
		if !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	return out, nil
}

// SetTaskEnabled flips the database switch and activates the task here,
// so its status shows the change at once; other Nexus instances see it at
// their next activation.
func (a *App) SetTaskEnabled(ctx context.Context, name string, enabled bool, requester string) error {
	action := "task.disable"
	if enabled {
		action = "task.enable"
	}
	return a.audited(ctx, model.RoleAdmin, action, "task "+name, func(ctx context.Context) error {
		if err := a.CheckTask(name); err != nil {
			return err
		}
		if err := a.taskdb.SetEnabled(ctx, name, enabled, requester); err != nil {
			return translate(err)
		}
		zerolog.Ctx(ctx).Info().Str("task", name).Bool("enabled", enabled).Str("requester", requester).
			Msg("background task switched")
		return a.tasks.Activate(requester, name)
	})
}
