package nexus

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/rs/zerolog"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/bgtasks"
	"github.com/rackplane/rackplane/bgtasks/heartbeat"
	"github.com/rackplane/rackplane/bgtasks/taskdb"
	"github.com/rackplane/rackplane/internal/httpx"
	"github.com/rackplane/rackplane/internal/reqid"
)

// setupTasks creates the driver, registers every task and checks the set
// (including Config.TaskPeriods), so bad config stops New before anything
// listens. Run starts the tasks.
func (s *Server) setupTasks() error {
	s.metrics = newMetricsRegistry()
	m, err := bgtasks.NewMetrics(s.metrics)
	if err != nil {
		return fmt.Errorf("nexus: background-task metrics: %w", err)
	}
	s.taskdb = taskdb.New(s.ds)
	s.tasks = bgtasks.NewDriver(bgtasks.Options{
		Log:     s.log.With().Str("component", "bgtasks").Logger(),
		Enabled: s.taskdb.Enabled,
		Periods: s.cfg.TaskPeriods,
		Metrics: m,
	})
	if err := s.registerTasks(); err != nil {
		return fmt.Errorf("nexus: %w", err)
	}
	if err := s.tasks.Check(); err != nil {
		return fmt.Errorf("nexus: %w", err)
	}
	return nil
}

// ActivateTask asks for an explicit activation of the named task on behalf
// of requester (a component name or request id, shown to operators). It
// returns an error wrapping bgtasks.ErrUnknownTask for a name no task has.
// The activation runs asynchronously, after any activation in progress.
func (s *Server) ActivateTask(name, requester string) error {
	return s.tasks.Activate(requester, name)
}

// Tasks exposes the driver to tests (WaitCompleted, Task).
func (s *Server) Tasks() *bgtasks.Driver { return s.tasks }

// taskSummaries is what the heartbeat writes: this Nexus's view.
func (s *Server) taskSummaries() []api.TaskSummary {
	tasks := s.tasks.Tasks()
	out := make([]api.TaskSummary, len(tasks))
	for i, t := range tasks {
		out[i] = t.Summary()
	}
	return out
}

// heartbeatStaleAfter is how old another Nexus's heartbeat may grow before
// it is shown as stale: a few of this Nexus's heartbeat periods.
func (s *Server) heartbeatStaleAfter() time.Duration {
	period := heartbeat.DefaultPeriod
	if t, err := s.tasks.Task(heartbeat.Name, false); err == nil {
		period = time.Duration(t.PeriodSeconds * float64(time.Second))
	}
	return max(3*period, 3*time.Second)
}

// taskList gathers this Nexus's live tasks with the database's switches,
// and every Nexus's heartbeat. When the database cannot be read, the live
// tasks are still returned, with a warning saying what is missing.
func (s *Server) taskList(ctx context.Context) api.BackgroundTaskList {
	out := api.BackgroundTaskList{NexusID: s.cfg.ID, Tasks: s.tasks.Tasks(), Instances: []api.NexusTaskHeartbeat{}}
	if w := s.applySwitches(ctx, out.Tasks); w != "" {
		out.Warnings = append(out.Warnings, w)
	}
	hbs, err := s.taskdb.Heartbeats(ctx, s.heartbeatStaleAfter())
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
func (s *Server) applySwitches(ctx context.Context, tasks []api.BackgroundTask) string {
	sw, err := s.taskdb.Switches(ctx)
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

// taskDetail is one task with history and its switch from the database.
func (s *Server) taskDetail(ctx context.Context, name string) (api.BackgroundTask, string, error) {
	t, err := s.tasks.Task(name, true)
	if err != nil {
		return t, "", s.unknownTask(err)
	}
	one := []api.BackgroundTask{t}
	w := s.applySwitches(ctx, one)
	return one[0], w, nil
}

// unknownTask turns the driver's ErrUnknownTask into a 404 that lists the
// tasks there are.
func (s *Server) unknownTask(err error) error {
	if !errors.Is(err, bgtasks.ErrUnknownTask) {
		return err
	}
	return httpx.Errorf(http.StatusNotFound, api.CodeUnknownBackgroundTask, "%s; this Nexus runs: %s",
		err.Error(), strings.Join(s.tasks.Names(), ", "))
}

// setTaskEnabled flips the database switch and activates the task here,
// so its status shows the change at once; other Nexus instances see it at
// their next activation.
func (s *Server) setTaskEnabled(ctx context.Context, name string, enabled bool, requester string) error {
	if _, err := s.tasks.Task(name, false); err != nil {
		return s.unknownTask(err)
	}
	if err := s.taskdb.SetEnabled(ctx, name, enabled, requester); err != nil {
		return err
	}
	zerolog.Ctx(ctx).Info().Str("task", name).Bool("enabled", enabled).Str("requester", requester).
		Msg("background task switched")
	return s.tasks.Activate(requester, name)
}

func (s *Server) mountBackgroundTasks(r chi.Router) {
	r.Get("/v1/system/background-tasks", handlers.H(s.bgtaskList))
	r.Post("/v1/system/background-tasks/activate", handlers.H(s.bgtaskActivate))
	r.Get("/v1/system/background-tasks/{name}", handlers.H(s.bgtaskGet))
	r.Put("/v1/system/background-tasks/{name}/enabled", handlers.H(s.bgtaskSetEnabled))
}

func (s *Server) bgtaskList(w http.ResponseWriter, r *http.Request) error {
	httpx.WriteJSON(w, http.StatusOK, s.taskList(r.Context()))
	return nil
}

func (s *Server) bgtaskGet(w http.ResponseWriter, r *http.Request) error {
	t, _, err := s.taskDetail(r.Context(), chi.URLParam(r, "name"))
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, t)
	return nil
}

func (s *Server) bgtaskActivate(w http.ResponseWriter, r *http.Request) error {
	var req api.BackgroundTaskActivate
	if err := httpx.DecodeJSON(r, &req, 0); err != nil {
		return err
	}
	if err := s.tasks.Activate(apiRequester(r), req.Names...); err != nil {
		return s.unknownTask(fmt.Errorf("%w; nothing was activated", err))
	}
	out := api.BackgroundTaskActivated{Activated: []string{}}
	seen := map[string]bool{}
	for _, n := range req.Names {
		if !seen[n] {
			seen[n] = true
			out.Activated = append(out.Activated, n)
		}
	}
	httpx.WriteJSON(w, http.StatusAccepted, out)
	return nil
}

func (s *Server) bgtaskSetEnabled(w http.ResponseWriter, r *http.Request) error {
	name := chi.URLParam(r, "name")
	if _, err := s.tasks.Task(name, false); err != nil {
		return s.unknownTask(err)
	}
	var req api.BackgroundTaskEnabled
	if err := httpx.DecodeJSON(r, &req, 0); err != nil {
		return err
	}
	if err := s.setTaskEnabled(r.Context(), name, *req.Enabled, apiRequester(r)); err != nil {
		return err
	}
	t, _, err := s.taskDetail(r.Context(), name)
	if err != nil {
		return err
	}
	t.History = nil
	httpx.WriteJSON(w, http.StatusOK, t)
	return nil
}

// apiRequester names the caller of an API request in activation records:
// its request id, which rackctl prefixes with its own name.
func apiRequester(r *http.Request) string { return "api:" + reqid.From(r.Context()) }
