package main

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/internal/humanize"
)

func sledCommands() []command {
	return []command{{
		group: "sleds", verb: "list", summary: "list the sleds registered with Nexus",
		run: sledsList,
	}, {
		group: "sleds", verb: "show", args: "SLED", summary: "show one sled (by serial or id): state, inventory, M.2 devices",
		run: sledsShow, complete: completeSledSerials,
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
	// Operators know sleds by serial; the API lists them by id.
	sort.SliceStable(sleds, func(i, j int) bool { return sleds[i].Baseboard.Serial < sleds[j].Baseboard.Serial })
	if e.json {
		return printJSON(e.out, sleds)
	}
	now := e.now()
	rows := make([][]string, 0, len(sleds))
	var problems []string
	for _, s := range sleds {
		rows = append(rows, []string{s.ID.String(), s.Baseboard.Serial, s.Baseboard.Part, s.SledAgentAddress,
			strconv.Itoa(s.RepoDepotPort), s.Policy, s.State, healthCell(s.Health), m2Cell(s.Health),
			humanize.Ago(now, s.TimeLastSeen)})
		for _, p := range s.Health.Problems {
			problems = append(problems, fmt.Sprintf("! %s: %s", s.Baseboard.Serial, p))
		}
	}
	if err := table(e.out, []string{"ID", "SERIAL", "PART", "ADDRESS", "DEPOT PORT", "POLICY", "STATE", "HEALTH", "M.2", "LAST SEEN"},
		rows); err != nil {
		return err
	}
	// Below the table, where a wide table cannot truncate them.
	for _, p := range problems {
		fmt.Fprintln(e.out, p)
	}
	fmt.Fprintf(e.out, "%d sled(s)\n", len(sleds))
	return nil
}

// healthCell is a sled's health state, shouted when it needs attention.
func healthCell(h api.SledHealth) string {
	switch h.State {
	case api.SledHealthOK, api.SledHealthUnknown:
		return h.State
	case "":
		return "-"
	}
	return strings.ToUpper(h.State) + " (!)"
}

// m2Cell renders a sled's M.2s as "present/expected" (every sled should
// have two, whatever it has configured), marking a missing one; "-"
// before the sled has reported them.
func m2Cell(h api.SledHealth) string {
	if h.State == api.SledHealthUnknown || h.M2Expected == 0 {
		return "-"
	}
	cell := fmt.Sprintf("%d/%d", h.M2Present, h.M2Expected)
	if h.M2Present < h.M2Expected {
		cell += " MISSING (!)"
	}
	return cell
}

// findSled finds a sled by id or baseboard serial.
func findSled(ctx context.Context, e *env, arg string) (api.Sled, error) {
	if id, err := uuid.Parse(arg); err == nil {
		return e.nexus.SledGet(ctx, id)
	}
	sleds, err := e.nexus.SledList(ctx)
	if err != nil {
		return api.Sled{}, err
	}
	var fold []api.Sled
	for _, s := range sleds {
		if s.Baseboard.Serial == arg {
			return s, nil
		}
		if strings.EqualFold(s.Baseboard.Serial, arg) {
			fold = append(fold, s)
		}
	}
	if len(fold) == 1 {
		return fold[0], nil
	}
	return api.Sled{}, fail(api.CodeNotFound, "no sled has the serial or id %q (rackctl sleds list shows them)", arg)
}

func sledsShow(ctx context.Context, e *env, args []string) error {
	if len(args) != 1 {
		return usageError("sleds show takes one argument: the sled's serial or id")
	}
	s, err := findSled(ctx, e, args[0])
	if err != nil {
		return err
	}
	if e.json {
		return printJSON(e.out, s)
	}
	now := e.now()
	artifacts := "not reported yet"
	if s.ArtifactGeneration != nil {
		artifacts = fmt.Sprintf("config generation %d", *s.ArtifactGeneration)
		if s.ArtifactsComplete != nil {
			artifacts += fmt.Sprintf(", %d artifact(s) on every M.2 in use", *s.ArtifactsComplete)
		}
	}
	if err := facts(e.out, [][2]string{
		{"id", s.ID.String()},
		{"serial", s.Baseboard.Serial},
		{"part", s.Baseboard.Part},
		{"sled API", s.SledAgentAddress},
		{"depot port", strconv.Itoa(s.RepoDepotPort)},
		{"policy", s.Policy},
		{"state", s.State},
		{"last seen", agoAt(now, s.TimeLastSeen)},
		{"registered", agoAt(now, s.TimeCreated)},
		{"artifacts", artifacts},
		{"health", healthCell(s.Health)},
		{"M.2", m2Cell(s.Health)},
		{"storage lock", storageLockText(s.Health.StorageLock)},
	}); err != nil {
		return err
	}
	// What is wrong, each missing M.2 by name (the table below marks
	// them too).
	for _, p := range s.Health.Problems {
		fmt.Fprintln(e.out, "! "+p)
	}
	if len(s.M2s) == 0 {
		return nil
	}
	fmt.Fprintln(e.out)
	rows := make([][]string, 0, len(s.M2s))
	for _, m := range s.M2s {
		present, free, total := "yes", humanize.Bytes(int64(m.FreeBytes)), humanize.Bytes(int64(m.TotalBytes))
		if !m.Present {
			present, free, total = "MISSING (!)", "-", "-"
		}
		errText := m.Error
		if errText == "" {
			errText = "-"
		}
		rows = append(rows, []string{m.Path, present, free, total, errText})
	}
	return table(e.out, []string{"M.2", "PRESENT", "FREE", "SIZE", "ERROR"}, rows)
}

// storageLockText says what the storage lock state means.
func storageLockText(lock string) string {
	if lock == "unknown" {
		return "unknown (this sled does not report it yet)"
	}
	if lock == "" {
		return "-"
	}
	return lock
}

// agoAt renders a time as "5s ago (2006-01-02 15:04:05 UTC)".
func agoAt(now, t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return humanize.Ago(now, t) + " (" + t.UTC().Format("2006-01-02 15:04:05 UTC") + ")"
}

func completeSledSerials(ctx context.Context, e *env, args []string) ([]string, error) {
	if len(args) > 0 {
		return nil, nil
	}
	sleds, err := e.nexus.SledList(ctx)
	var out []string
	for _, s := range sleds {
		out = append(out, s.Baseboard.Serial)
	}
	return out, err
}
