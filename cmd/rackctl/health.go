package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strings"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/internal/buildinfo"
	"github.com/rackplane/rackplane/internal/humanize"
)

func healthCommands() []command {
	return []command{{
		group: "health", summary: "ask Nexus whether it can serve and do its work, check by check (needs no token)",
		long: "Shows /healthz (can this Nexus serve requests) and /readyz (can it do its work: its database answers\n" +
			"and no background task keeps failing). With an operator token, if one is at hand, Nexus also says\n" +
			"why a check fails and which build it runs. Exit status 1 when Nexus is unhealthy or not ready.",
		noToken: true, tokenIfAny: true,
		run: health,
	}}
}

// healthReport is health's --json output: /healthz's document with
// /readyz's beside it.
type healthReport struct {
	api.Health
	Readiness *api.Readiness `json:"readiness,omitempty"`
}

func health(ctx context.Context, e *env, args []string) error {
	if len(args) > 0 {
		return usageError(fmt.Sprintf("health takes no arguments, got %q", args))
	}
	h, err := e.nexus.Health(ctx)
	if h.Status == "" {
		// No health document came back: the request itself failed.
		return err
	}
	// A Nexus that is not ready answers with its document and an error.
	rd, rerr := e.nexus.Readiness(ctx)
	var ready *api.Readiness
	if rd.Status != "" {
		ready = &rd
	}
	if e.json {
		if err := printJSON(e.out, healthReport{h, ready}); err != nil {
			return err
		}
	} else if err := printHealth(e, h, ready); err != nil {
		return err
	}
	switch {
	case err != nil:
		return fail("unhealthy", "Nexus at %s is %s (%s)", e.baseURL, h.Status, failingChecks(h.Checks))
	case ready == nil && errors.As(rerr, new(*url.Error)):
		return rerr
	case ready == nil:
		// Healthy, but /readyz gave no document: say so rather than pass.
		return fail("readiness_unknown", "Nexus at %s is healthy but /readyz gave no readiness document (is Nexus older "+
			"than rackctl?)", e.baseURL)
	case ready != nil && ready.Status != api.ReadyStatus:
		return fail("not_ready", "Nexus at %s is healthy but not ready (%s)", e.baseURL, failingChecks(ready.Checks))
	}
	return nil
}

func printHealth(e *env, h api.Health, rd *api.Readiness) error {
	status := h.Status
	if rd != nil {
		status += ", " + strings.ReplaceAll(rd.Status, "_", " ")
	}
	fmt.Fprintf(e.out, "Nexus at %s: %s\n", e.baseURL, status)
	switch {
	case h.Build != nil:
		fmt.Fprintf(e.out, "build: %s\n", buildText(*h.Build))
	case rd != nil && rd.Detail != nil:
		fmt.Fprintf(e.out, "build: %s\n", buildText(rd.Detail.Build))
	}
	var rows [][]string
	for _, name := range sortedKeys(h.Checks) {
		rows = append(rows, []string{name, "health", h.Checks[name]})
	}
	if rd != nil {
		for _, name := range sortedKeys(rd.Checks) {
			v := rd.Checks[name]
			if d := rd.Detail; d != nil && name == "database" && d.Database != api.CheckOK && d.Database != "" {
				v += ": " + d.Database
			}
			rows = append(rows, []string{name, "readiness", v})
		}
	}
	if len(rows) > 0 {
		if err := table(e.out, []string{"CHECK", "OF", "STATUS"}, rows); err != nil {
			return err
		}
	}
	if rd == nil || rd.Detail == nil {
		return nil
	}
	for _, t := range rd.Detail.FailingTasks {
		fmt.Fprintf(e.out, "! background task %s failed %d times in a row, last started %s: %s (rackctl bgtasks show %s)\n",
			t.Name, t.ConsecutiveErrors, humanize.Ago(e.now(), t.LastStart), t.LastError, t.Name)
	}
	return nil
}

// buildText is a build as every binary's --version prints it.
func buildText(b api.BuildInfo) string {
	return buildinfo.Info{Version: b.Version, Commit: b.Commit, CommitTime: b.CommitTime, Modified: b.Modified,
		GoVersion: b.GoVersion}.String()
}

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// failingChecks lists the checks that are not ok, as "name: value".
func failingChecks(checks map[string]string) string {
	var bad []string
	for _, name := range sortedKeys(checks) {
		if v := checks[name]; v != api.CheckOK {
			bad = append(bad, name+": "+v)
		}
	}
	return strings.Join(bad, "; ")
}
