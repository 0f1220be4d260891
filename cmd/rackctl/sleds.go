package main

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/rackplane/rackplane/internal/humanize"
)

func sledCommands() []command {
	return []command{{
		group: "sleds", verb: "list", summary: "list the sleds registered with Nexus",
		run: sledsList,
	}}
}

func sledsList(ctx context.Context, e *env, args []string) error {
	if len(args) > 0 {
		return usageError(fmt.Sprintf("sleds list takes no arguments, got %q", args))
	}
	sleds, err := e.nexus.SledList(ctx)
	if err != nil {
		return err
	}
	if e.json {
		return printJSON(e.out, sleds)
	}
	now := time.Now()
	rows := make([][]string, 0, len(sleds))
	for _, s := range sleds {
		rows = append(rows, []string{s.ID.String(), s.Baseboard.Serial, s.Baseboard.Part, s.SledAgentAddress,
			strconv.Itoa(s.RepoDepotPort), s.Policy, s.State, humanize.Ago(now, s.TimeLastSeen)})
	}
	if err := table(e.out, []string{"ID", "SERIAL", "PART", "ADDRESS", "DEPOT PORT", "POLICY", "STATE", "LAST SEEN"}, rows); err != nil {
		return err
	}
	fmt.Fprintf(e.out, "%d sled(s)\n", len(sleds))
	return nil
}
