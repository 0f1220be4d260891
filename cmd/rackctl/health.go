package main

import (
	"context"
	"fmt"
	"sort"
	"strings"
)

func healthCommands() []command {
	return []command{{
		group: "health", summary: "ask Nexus whether it can serve, check by check (needs no token)",
		noToken: true,
		run:     health,
	}}
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
	if e.json {
		if err := printJSON(e.out, h); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(e.out, "Nexus at %s: %s\n", e.baseURL, h.Status)
		names := make([]string, 0, len(h.Checks))
		for name := range h.Checks {
			names = append(names, name)
		}
		sort.Strings(names)
		rows := make([][]string, 0, len(names))
		for _, name := range names {
			rows = append(rows, []string{name, h.Checks[name]})
		}
		if len(rows) > 0 {
			if err := table(e.out, []string{"CHECK", "STATUS"}, rows); err != nil {
				return err
			}
		}
	}
	if err != nil {
		var bad []string
		for name, v := range h.Checks {
			if v != "ok" {
				bad = append(bad, name+": "+v)
			}
		}
		sort.Strings(bad)
		return fail("unhealthy", "Nexus at %s is %s (%s)", e.baseURL, h.Status, strings.Join(bad, "; "))
	}
	return nil
}
