package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/internal/humanize"
	"github.com/rackplane/rackplane/internal/reqid"
)

func bgtaskCommands() []command {
	var all bool
	return []command{{
		group: "bgtasks", verb: "list", summary: "list background tasks (--all: of every Nexus instance)",
		flags: func(fs *flag.FlagSet) {
			fs.BoolVar(&all, "all", false, "show every Nexus instance's tasks from their heartbeats")
		},
		run: func(ctx context.Context, e *env, args []string) error { return bgtasksList(ctx, e, args, all) },
	}, {
		group: "bgtasks", verb: "show", args: "NAME", summary: "show one background task: state, status and history",
		run: bgtasksShow, complete: completeTaskNames(1),
	}, {
		group: "bgtasks", verb: "activate", args: "NAME...", summary: "run background tasks now",
		run: bgtasksActivate, complete: completeTaskNames(-1),
	}, {
		group: "bgtasks", verb: "enable", args: "NAME", summary: "switch a background task on, on every Nexus",
		run:      func(ctx context.Context, e *env, args []string) error { return bgtasksSwitch(ctx, e, args, true) },
		complete: completeTaskNames(1),
	}, {
		group: "bgtasks", verb: "disable", args: "NAME", summary: "switch a background task off, on every Nexus",
		run:      func(ctx context.Context, e *env, args []string) error { return bgtasksSwitch(ctx, e, args, false) },
		complete: completeTaskNames(1),
	}}
}

// completeTaskNames offers the task names for up to n arguments (n < 0:
// any number).
func completeTaskNames(n int) func(ctx context.Context, e *env, args []string) ([]string, error) {
	return func(ctx context.Context, e *env, args []string) ([]string, error) {
		if n >= 0 && len(args) >= n {
			return nil, nil
		}
		list, err := e.nexus.BackgroundTaskList(ctx)
		var out []string
		for _, t := range list.Tasks {
			out = append(out, t.Name)
		}
		return out, err
	}
}

// withRequester tags the request so activation records say rackctl asked.
func withRequester(ctx context.Context) context.Context {
	return reqid.With(ctx, "rackctl-"+reqid.New())
}

func bgtasksList(ctx context.Context, e *env, args []string, all bool) error {
	if len(args) > 0 {
		return usageError(fmt.Sprintf("bgtasks list takes no arguments, got %q", args))
	}
	list, err := e.nexus.BackgroundTaskList(ctx)
	if err != nil {
		return err
	}
	if e.json {
		// A task's status is its last real activation's: the listing
		// shows it once, as "status", not again under last_activation.
		for i := range list.Tasks {
			t := &list.Tasks[i]
			if l := t.LastActivation; l != nil && sameJSON(l.Status, t.Status) {
				l.Status = nil
			}
		}
		return printJSON(e.out, list)
	}
	for _, w := range list.Warnings {
		warn(e.errOut, false, w)
	}
	now := e.now()
	header := []string{"NAME", "STATE", "ENABLED", "ITER", "LAST RUN", "DURATION", "OUTCOME", "PERIOD", "ERROR"}
	if !all {
		rows := make([][]string, 0, len(list.Tasks))
		for _, t := range list.Tasks {
			rows = append(rows, summaryCells(t.Summary(), now))
		}
		if err := table(e.out, header, rows); err != nil {
			return err
		}
		fmt.Fprintf(e.out, "%d task(s) on Nexus %s\n", len(list.Tasks), list.NexusID)
		return nil
	}
	var rows [][]string
	for _, hb := range list.Instances {
		age := humanize.Duration(time.Duration(hb.AgeSeconds*float64(time.Second))) + " ago"
		if hb.Stale {
			age += " STALE"
		}
		for _, t := range hb.Tasks {
			rows = append(rows, append([]string{hb.NexusID.String()[:8], age}, summaryCells(t, now)...))
		}
	}
	if err := table(e.out, append([]string{"NEXUS", "HEARTBEAT"}, header...), rows); err != nil {
		return err
	}
	fmt.Fprintf(e.out, "%d Nexus instance(s) from heartbeats\n", len(list.Instances))
	return nil
}

func summaryCells(t api.TaskSummary, now time.Time) []string {
	last, dur := "never", "-"
	if t.LastStart != nil {
		last, dur = humanize.Ago(now, *t.LastStart), fmtMS(t.LastDurationMS)
	}
	state := t.State
	if t.RunningSince != nil {
		state = "running " + now.Sub(*t.RunningSince).Round(time.Second).String()
	}
	outcome := t.LastOutcome
	if outcome == "" {
		outcome = "-"
	}
	if t.ConsecutiveErrors > 1 {
		outcome += fmt.Sprintf(" (x%d)", t.ConsecutiveErrors)
	}
	enabled := "yes"
	if !t.Enabled {
		enabled = "NO"
	}
	errText := t.LastError
	if len(errText) > 60 {
		errText = errText[:60] + "..."
	}
	return []string{t.Name, state, enabled, strconv.FormatUint(t.Iteration, 10), last, dur, outcome,
		(time.Duration(t.PeriodSeconds * float64(time.Second))).String(), errText}
}

func fmtMS(ms float64) string {
	if ms < 1 {
		return fmt.Sprintf("%.0fµs", ms*1000)
	}
	if ms < 1000 {
		return fmt.Sprintf("%.1fms", ms)
	}
	return (time.Duration(ms * float64(time.Millisecond))).Round(10 * time.Millisecond).String()
}

func oneName(verb string, args []string) (string, error) {
	if len(args) != 1 {
		return "", usageError(fmt.Sprintf("bgtasks %s takes one task name, got %d arguments", verb, len(args)))
	}
	return args[0], nil
}

func bgtasksShow(ctx context.Context, e *env, args []string) error {
	name, err := oneName("show", args)
	if err != nil {
		return err
	}
	t, err := e.nexus.BackgroundTaskGet(ctx, name)
	if err != nil {
		return err
	}
	if e.json {
		return printJSON(e.out, t)
	}
	now := e.now()
	enabled := "yes"
	if !t.Enabled {
		enabled = "NO (disabled on every Nexus)"
	}
	state := t.Current.State
	if c := t.Current; c.State == api.TaskStateRunning && c.Since != nil {
		state = fmt.Sprintf("running iteration %d for %s (%s %s)", c.Iteration, now.Sub(*c.Since).Round(time.Millisecond),
			c.Reason, c.Requester)
	}
	if t.Current.Pending != "" {
		state += "; " + t.Current.Pending + " activation queued"
	}
	deps := strings.Join(t.DependsOn, ", ")
	if deps == "" {
		deps = "-"
	}
	facts := [][]string{
		{"name:", t.Name},
		{"description:", t.Description},
		{"enabled:", enabled},
		{"period:", (time.Duration(t.PeriodSeconds * float64(time.Second))).String()},
		{"depends on:", deps},
		{"state:", state},
		{"activations:", fmt.Sprintf("%d (%d failed, %d failing in a row)", t.Activations, t.Errors, t.ConsecutiveErrors)},
	}
	if l := t.LastActivation; l != nil {
		facts = append(facts, []string{"last:", fmt.Sprintf("iteration %d, %s, %s, %s, %s", l.Iteration, l.Reason,
			humanize.Ago(now, l.Start), fmtMS(l.DurationMS), l.Outcome)})
		if l.Error != "" {
			facts = append(facts, []string{"last error:", l.Error})
		}
	}
	// The first fact stands in the header row's place.
	if err := table(e.out, facts[0], facts[1:]); err != nil {
		return err
	}
	r := statusRenderer{now: now}
	if raw, _ := json.Marshal(t); uuidInJSON.Match(raw) {
		// Serials read better than ids; without the list, ids it is.
		if sleds, err := e.nexus.SledList(ctx); err == nil {
			r.sleds = map[uuid.UUID]string{}
			for _, s := range sleds {
				r.sleds[s.ID] = s.Baseboard.Serial
			}
		}
	}
	if len(t.Status) > 0 {
		if err := showStatus(e, t, r); err != nil {
			return err
		}
	}
	fmt.Fprintln(e.out, "\nhistory (newest first):")
	rows := make([][]string, 0, len(t.History))
	for _, a := range t.History {
		reason := a.Reason
		if a.Requester != "" {
			reason += " (" + r.serials(a.Requester) + ")"
		}
		outcome := a.Outcome
		if a.Changed {
			outcome += ", changed"
		}
		errText := a.Error
		if len(errText) > 80 {
			errText = errText[:80] + "..."
		}
		rows = append(rows, []string{strconv.FormatUint(a.Iteration, 10), reason, humanize.Ago(now, a.Start), fmtMS(a.DurationMS), outcome, errText})
	}
	return table(e.out, []string{"ITER", "REASON", "STARTED", "DURATION", "OUTCOME", "ERROR"}, rows)
}

func bgtasksActivate(ctx context.Context, e *env, args []string) error {
	if len(args) == 0 {
		return usageError("bgtasks activate needs at least one task name")
	}
	got, err := e.nexus.BackgroundTaskActivate(withRequester(ctx), args...)
	if err != nil {
		return err
	}
	if e.json {
		return printJSON(e.out, got)
	}
	fmt.Fprintf(e.out, "activation requested: %s\n", strings.Join(got.Activated, ", "))
	return nil
}

func bgtasksSwitch(ctx context.Context, e *env, args []string, enabled bool) error {
	verb := map[bool]string{true: "enable", false: "disable"}[enabled]
	name, err := oneName(verb, args)
	if err != nil {
		return err
	}
	t, err := e.nexus.BackgroundTaskSetEnabled(withRequester(ctx), name, enabled)
	if err != nil {
		return err
	}
	if e.json {
		return printJSON(e.out, t)
	}
	fmt.Fprintf(e.out, "%s %sd on every Nexus\n", t.Name, verb)
	return nil
}

// showStatus writes a task's status field by field (see bgstatus.go).
func showStatus(e *env, t api.BackgroundTask, r statusRenderer) error {
	v, err := parseStatus(t.Status)
	if err != nil {
		return fail("bad_status", "task %s reported a status that is not JSON; rackctl --json bgtasks show %s shows it raw", t.Name, t.Name)
	}
	when := ""
	if a, ok := t.HistoryEntry(t.StatusIteration); ok {
		when = ", " + humanize.Ago(r.now, a.Start)
	}
	fmt.Fprintf(e.out, "\nstatus (iteration %d%s):\n", t.StatusIteration, when)
	return r.render(e.out, "  ", v)
}

// sameJSON reports whether two JSON documents are equal once compacted.
func sameJSON(a, b json.RawMessage) bool {
	var ca, cb bytes.Buffer
	if json.Compact(&ca, a) != nil || json.Compact(&cb, b) != nil {
		return false
	}
	return bytes.Equal(ca.Bytes(), cb.Bytes())
}
