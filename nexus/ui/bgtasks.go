package ui

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"
	"github.com/rs/zerolog/hlog"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/internal/fault"
	"github.com/rackplane/rackplane/internal/humanize"
	"github.com/rackplane/rackplane/internal/reqid"
)

func (s *Pages) mountBackgroundTaskPages(r chi.Router) {
	r.Get("/ui/background-tasks", s.uiTaskList)
	r.Get("/ui/background-tasks/{name}", s.uiTask)
	r.Post("/ui/background-tasks/{name}/activate", s.uiTaskActivate)
	r.Post("/ui/background-tasks/{name}/enabled", s.uiTaskSetEnabled)
}

// taskRow is one line of a task table.
type taskRow struct {
	Name, Link string
	// Class marks the row: "failing", "disabled", "running".
	Class                 string
	State, StateTitle     string
	LastRun, LastRunTitle string
	Duration              string
	Outcome, OutcomeClass string
	Failing               string // "failing ×3"
	Disabled              bool
	Iteration             uint64
	Period                string
	Error                 string
	ErrorShort            string
	// NexusID, HeartbeatAge and HeartbeatStale describe where a row of
	// another Nexus came from.
	NexusID, HeartbeatAge string
	HeartbeatStale        bool
}

// nexusGroup is one Nexus instance's table.
type nexusGroup struct {
	NexusID      string
	Self, Stale  bool
	HeartbeatAge string
	Rows         []taskRow
}

type taskListPage struct {
	Warnings []string
	Groups   []nexusGroup
	Failing  int
	Disabled int
	Total    int
}

// summaryRow renders one task summary; link makes the name a link to the
// task's page.
func summaryRow(t api.TaskSummary, now time.Time, link bool) taskRow {
	row := taskRow{Name: t.Name, State: t.State, Iteration: t.Iteration, Period: formatSeconds(t.PeriodSeconds),
		Outcome: t.LastOutcome, OutcomeClass: t.LastOutcome, Disabled: !t.Enabled, Error: t.LastError,
		Duration: "—", LastRun: "never"}
	if link {
		row.Link = "/ui/background-tasks/" + url.PathEscape(t.Name)
	}
	if t.State == api.TaskStateRunning && t.RunningSince != nil {
		row.State = "running " + humanize.Duration(now.Sub(*t.RunningSince))
		row.StateTitle = "since " + t.RunningSince.UTC().Format(time.RFC3339)
		row.Class = "running"
	}
	if t.LastStart != nil {
		row.LastRun = humanize.Ago(now, *t.LastStart)
		row.LastRunTitle = t.LastStart.UTC().Format(time.RFC3339Nano)
		row.Duration = formatMS(t.LastDurationMS)
	}
	if row.Outcome == "" {
		row.Outcome, row.OutcomeClass = "not run yet", "none"
	}
	row.ErrorShort = truncate(t.LastError, 120)
	if t.LastOutcome == api.TaskOutcomeError {
		row.Class = "failing"
		row.Failing = "failing"
		if t.ConsecutiveErrors > 1 {
			row.Failing = fmt.Sprintf("failing ×%d", t.ConsecutiveErrors)
		}
	}
	if row.Disabled {
		row.Class = "disabled"
	}
	return row
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

func (s *Pages) taskListPage(r *http.Request) taskListPage {
	list := s.app.TaskList(r.Context())
	now := time.Now()
	p := taskListPage{Warnings: list.Warnings}
	enabled := map[string]bool{}
	self := nexusGroup{NexusID: s.app.NexusID().String(), Self: true}
	for _, t := range list.Tasks {
		enabled[t.Name] = t.Enabled
		self.Rows = append(self.Rows, summaryRow(t.Summary(), now, true))
	}
	p.Groups = append(p.Groups, self)
	for _, hb := range list.Instances {
		if hb.NexusID == s.app.NexusID() {
			continue
		}
		g := nexusGroup{NexusID: hb.NexusID.String(), Stale: hb.Stale,
			HeartbeatAge: humanize.Duration(time.Duration(hb.AgeSeconds * float64(time.Second)))}
		for _, t := range hb.Tasks {
			// The switch is shared: show the database's, not what that
			// Nexus last saw, when this Nexus knows the task.
			if on, ok := enabled[t.Name]; ok {
				t.Enabled = on
			}
			g.Rows = append(g.Rows, summaryRow(t, now, false))
		}
		p.Groups = append(p.Groups, g)
	}
	for _, g := range p.Groups {
		for _, row := range g.Rows {
			p.Total++
			if row.Failing != "" {
				p.Failing++
			}
			if row.Disabled {
				p.Disabled++
			}
		}
	}
	return p
}

func (s *Pages) uiTaskList(w http.ResponseWriter, r *http.Request) {
	s.renderPage(w, r, http.StatusOK, "bgtasks", uiPage{Title: "Background tasks", Body: s.taskListPage(r)})
}

// taskPage is one task's page.
type taskPage struct {
	Task       api.BackgroundTask
	Row        taskRow
	Warnings   []string
	State      string
	Last       *activationRow
	History    []activationRow
	Status     []statusSection
	StatusRaw  string
	StatusFrom string
	Others     []taskRow
	Dependents []string
	// Page is a status page made for this task, if there is one.
	Page, PageLabel string
}

type activationRow struct {
	api.TaskActivation
	Started, StartedTitle, Duration, Requester string
}

func activationView(a api.TaskActivation, now time.Time) activationRow {
	return activationRow{TaskActivation: a, Started: humanize.Ago(now, a.Start),
		StartedTitle: a.Start.UTC().Format(time.RFC3339Nano), Duration: formatMS(a.DurationMS),
		Requester: a.Requester}
}

func (s *Pages) uiTask(w http.ResponseWriter, r *http.Request) {
	name := chi.URLParam(r, "name")
	t, warning, err := s.app.Task(r.Context(), name)
	if err != nil {
		s.uiError(w, r, http.StatusNotFound, fmt.Sprintf("There is no background task named %q. This Nexus runs: %s.",
			name, strings.Join(s.app.Tasks().Names(), ", ")))
		return
	}
	now := time.Now()
	p := taskPage{Task: t, Row: summaryRow(t.Summary(), now, false)}
	if pg, ok := s.taskPages()[name]; ok {
		p.Page, p.PageLabel = pg.Path, pg.Label
	}
	if warning != "" {
		p.Warnings = append(p.Warnings, warning)
	}
	p.State = "idle"
	if c := t.Current; c.State == api.TaskStateRunning && c.Since != nil {
		p.State = fmt.Sprintf("running iteration %d for %s (%s", c.Iteration, humanize.Duration(now.Sub(*c.Since)), c.Reason)
		if c.Requester != "" {
			p.State += " by " + c.Requester
		}
		p.State += ")"
	}
	if t.Current.Pending != "" {
		p.State += "; another activation (" + t.Current.Pending + ") is queued"
	}
	if u := t.Current.BackoffUntil; u != nil {
		p.State += "; backing off after a failed or stalled run: the next run starts in " +
			humanize.Duration(u.Sub(now)) + ", however it is triggered"
	}
	if t.LastActivation != nil {
		last := activationView(*t.LastActivation, now)
		p.Last = &last
	}
	for _, a := range t.History {
		p.History = append(p.History, activationView(a, now))
	}
	if len(t.Status) > 0 {
		p.Status = renderStatus(t.Status, now, s.statusFormat(r, name))
		var pretty strings.Builder
		enc := json.NewEncoder(&pretty)
		enc.SetIndent("", "  ")
		var v any
		if json.Unmarshal(t.Status, &v) == nil && enc.Encode(v) == nil {
			p.StatusRaw = pretty.String()
		}
		p.StatusFrom = fmt.Sprintf("iteration %d", t.StatusIteration)
		if h, ok := t.HistoryEntry(t.StatusIteration); ok {
			p.StatusFrom += ", " + humanize.Ago(now, h.Start)
		}
	}
	for _, other := range s.app.Tasks().Tasks() {
		for _, dep := range other.DependsOn {
			if dep == name {
				p.Dependents = append(p.Dependents, other.Name)
			}
		}
	}
	if hbs, err := s.app.Heartbeats(r.Context()); err != nil {
		p.Warnings = append(p.Warnings, "other Nexus instances are not shown: "+err.Error())
	} else {
		for _, hb := range hbs {
			if hb.NexusID == s.app.NexusID() {
				continue
			}
			for _, ts := range hb.Tasks {
				if ts.Name == name {
					ts.Enabled = t.Enabled
					row := summaryRow(ts, now, false)
					row.NexusID, row.HeartbeatStale = hb.NexusID.String(), hb.Stale
					row.HeartbeatAge = humanize.Duration(time.Duration(hb.AgeSeconds * float64(time.Second)))
					p.Others = append(p.Others, row)
				}
			}
		}
	}
	flash := map[string]string{
		"activated": "Activation requested. It runs now, or right after the run in progress.",
		"enabled":   "Enabled on every Nexus; it runs again here now, elsewhere at their next activation.",
		"disabled":  "Disabled on every Nexus; each reports \"disabled\" from its next activation on.",
	}[r.URL.Query().Get("done")]
	s.renderPage(w, r, http.StatusOK, "bgtask", uiPage{Title: name + " · Background tasks", Flash: flash, Body: p})
}

// uiRequester names a status-page user in activation records.
func uiRequester(r *http.Request) string { return "ui:" + reqid.From(r.Context()) }

func (s *Pages) uiTaskActivate(w http.ResponseWriter, r *http.Request) {
	name := chi.URLParam(r, "name")
	if _, err := s.app.ActivateTasks(r.Context(), uiRequester(r), name); err != nil {
		if fault.KindOf(err) == fault.NotFound {
			s.uiError(w, r, http.StatusNotFound, fmt.Sprintf("There is no background task named %q; nothing was activated.", name))
			return
		}
		hlog.FromRequest(r).Error().Err(err).Str("task", name).Msg("activating a background task")
		s.uiError(w, r, http.StatusServiceUnavailable, fmt.Sprintf("The task could not be activated; try again "+
			"shortly (the server log has details under request %s).", reqid.From(r.Context())))
		return
	}
	// Post/redirect/get: reloading the page does not activate again.
	http.Redirect(w, r, "/ui/background-tasks/"+url.PathEscape(name)+"?done=activated", http.StatusSeeOther)
}

func (s *Pages) uiTaskSetEnabled(w http.ResponseWriter, r *http.Request) {
	name := chi.URLParam(r, "name")
	r.Body = http.MaxBytesReader(w, r.Body, 4096)
	var enabled bool
	switch v := r.PostFormValue("enabled"); v {
	case "true", "false":
		enabled = v == "true"
	default:
		s.uiError(w, r, http.StatusBadRequest, fmt.Sprintf("The form field enabled must be true or false, not %q.", v))
		return
	}
	err := s.app.SetTaskEnabled(r.Context(), name, enabled, uiRequester(r))
	switch {
	case fault.KindOf(err) == fault.NotFound:
		s.uiError(w, r, http.StatusNotFound, fmt.Sprintf("There is no background task named %q; nothing was changed.", name))
		return
	case err != nil:
		hlog.FromRequest(r).Error().Err(err).Str("task", name).Msg("storing a background-task switch")
		s.uiError(w, r, http.StatusServiceUnavailable, fmt.Sprintf("The switch could not be stored, so nothing "+
			"changed; try again shortly (the server log has details under request %s).", reqid.From(r.Context())))
		return
	}
	done := "disabled"
	if enabled {
		done = "enabled"
	}
	http.Redirect(w, r, "/ui/background-tasks/"+url.PathEscape(name)+"?done="+done, http.StatusSeeOther)
}

// statusFormat is how task name's status is rendered: the sleds' serials
// for their ids, and the units the replication task's field names leave
// out (an artifact's length is bytes).
func (s *Pages) statusFormat(r *http.Request, name string) statusFormat {
	f := statusFormat{Sleds: map[string]string{}}
	if name == s.app.ReplicationTask() {
		f.Units = map[string]string{"length": unitBytes}
	}
	sleds, err := s.app.ListSleds(r.Context(), uuid.Nil, sledListLimit)
	if err != nil {
		// Ids instead of serials: the page is still right.
		hlog.FromRequest(r).Warn().Err(err).Msg("task page: reading sled serials")
	}
	for _, sl := range sleds {
		if sl.Baseboard.Serial != "" {
			f.Sleds[sl.ID.String()] = sl.Baseboard.Serial
		}
	}
	return f
}
