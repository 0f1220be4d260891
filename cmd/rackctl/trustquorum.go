package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/api/client"
	"github.com/rackplane/rackplane/internal/humanize"
)

// The trust-quorum commands: what the rack's trust quorum is, and the
// membership changes (add, remove, the LRTQ upgrade, abort) an operator
// asks Nexus for. Nexus's trust_quorum_manager task does the work; --wait
// follows it (through automatic retries) until the change is committed.

func trustQuorumCommands() []command {
	var wait bool
	var waitFor time.Duration
	waitFlags := func(fs *flag.FlagSet) {
		fs.BoolVar(&wait, "wait", false, "show progress until the change is committed (or given up)")
		fs.DurationVar(&waitFor, "wait-timeout", 10*time.Minute, "how long --wait waits")
	}
	started := func(fn func(context.Context, *env, []string) (api.TrustQuorumConfig, error)) func(context.Context, *env, []string) error {
		return func(ctx context.Context, e *env, args []string) error {
			if wait && waitFor <= 0 {
				return usageError("--wait-timeout must be positive")
			}
			c, err := fn(ctx, e, args)
			if err != nil {
				return err
			}
			return tqStarted(ctx, e, c, wait, waitFor)
		}
	}
	return []command{{
		group: "trust-quorum", verb: "status", summary: "show the trust quorum: latest epochs, nodes, uninitialised sleds",
		run: tqStatus,
	}, {
		group: "trust-quorum", verb: "show", args: "EPOCH", summary: "show one trust-quorum epoch and its members",
		run: tqShow,
	}, {
		group: "trust-quorum", verb: "add", args: "SERIAL...", summary: "add sleds to the trust quorum (a new epoch)",
		flags: waitFlags, run: started(func(ctx context.Context, e *env, args []string) (api.TrustQuorumConfig, error) {
			return tqChange(ctx, e, "add", args)
		}),
	}, {
		group: "trust-quorum", verb: "remove", args: "SERIAL...", summary: "remove sleds from the trust quorum (a new epoch)",
		flags: waitFlags, run: started(func(ctx context.Context, e *env, args []string) (api.TrustQuorumConfig, error) {
			return tqChange(ctx, e, "remove", args)
		}),
	}, {
		group: "trust-quorum", verb: "upgrade-from-lrtq", summary: "upgrade a rack set up with LRTQ to the trust quorum",
		flags: waitFlags, run: started(func(ctx context.Context, e *env, args []string) (api.TrustQuorumConfig, error) {
			if len(args) > 0 {
				return api.TrustQuorumConfig{}, usageError(fmt.Sprintf("trust-quorum upgrade-from-lrtq takes no arguments, got %q", args))
			}
			return e.nexus.TrustQuorumLrtqUpgrade(withRequester(ctx))
		}),
	}, {
		group: "trust-quorum", verb: "abort", args: "EPOCH", summary: "abort the trust-quorum epoch being prepared",
		run: tqAbort,
	}}
}

func epochArg(verb string, args []string) (uint64, error) {
	if len(args) != 1 {
		return 0, usageError(fmt.Sprintf("trust-quorum %s takes one epoch, got %d arguments", verb, len(args)))
	}
	e, err := strconv.ParseUint(args[0], 10, 64)
	if err != nil || e == 0 {
		return 0, usageError(fmt.Sprintf("trust-quorum %s: %q is not an epoch (a whole number from 1)", verb, args[0]))
	}
	return e, nil
}

// tqChange resolves each argument (SERIAL, or PART:SERIAL) to a sled
// Nexus knows and asks for the change.
func tqChange(ctx context.Context, e *env, verb string, args []string) (api.TrustQuorumConfig, error) {
	if len(args) == 0 {
		return api.TrustQuorumConfig{}, usageError(fmt.Sprintf("trust-quorum %s needs at least one sled serial", verb))
	}
	known, err := knownSleds(ctx, e, verb == "add")
	if err != nil {
		return api.TrustQuorumConfig{}, err
	}
	var boards []api.Baseboard
	for _, a := range args {
		b, err := resolveSled(a, known)
		if err != nil {
			return api.TrustQuorumConfig{}, err
		}
		if b.Part == "" && verb == "add" {
			return api.TrustQuorumConfig{}, fail(api.CodeNotFound, "no sled with serial %s is registered or seen on the bootstrap "+
				"network (rackctl trust-quorum status lists the uninitialised sleds)", a)
		}
		if b.Part == "" {
			return api.TrustQuorumConfig{}, fail(api.CodeNotFound, "no member of the latest committed epoch has serial %s "+
				"(rackctl trust-quorum status lists them)", a)
		}
		boards = append(boards, b)
	}
	req := api.TrustQuorumMembership{Add: boards}
	if verb == "remove" {
		req = api.TrustQuorumMembership{Remove: boards}
	}
	return e.nexus.TrustQuorumMembership(withRequester(ctx), req)
}

// knownSleds are the baseboards a serial may name: for an add, the
// registered and the uninitialised sleds; for a remove, the members of the
// latest committed epoch.
func knownSleds(ctx context.Context, e *env, add bool) ([]api.Baseboard, error) {
	var out []api.Baseboard
	if !add {
		st, err := e.nexus.TrustQuorumStatus(ctx)
		if err != nil {
			return nil, err
		}
		if st.LatestCommitted != nil {
			for _, m := range st.LatestCommitted.Members {
				out = append(out, api.Baseboard{Part: m.Part, Serial: m.Serial})
			}
		}
		return out, nil
	}
	uninit, err := e.nexus.SledsUninitialized(ctx)
	if err != nil {
		return nil, err
	}
	for _, u := range uninit {
		out = append(out, api.Baseboard{Part: u.Part, Serial: u.Serial})
	}
	sleds, err := e.nexus.SledList(ctx)
	if err != nil {
		return nil, err
	}
	for _, s := range sleds {
		out = append(out, s.Baseboard)
	}
	return out, nil
}

func resolveSled(arg string, known []api.Baseboard) (api.Baseboard, error) {
	if part, serial, ok := strings.Cut(arg, ":"); ok {
		return api.Baseboard{Part: part, Serial: serial}, nil
	}
	var match []api.Baseboard
	for _, b := range known {
		if b.Serial == arg && !containsBoard(match, b) {
			match = append(match, b)
		}
	}
	switch len(match) {
	case 0:
		return api.Baseboard{Serial: arg}, nil
	case 1:
		return match[0], nil
	}
	return api.Baseboard{}, usageError(fmt.Sprintf("serial %s names %d sleds (%s); name one as PART:SERIAL", arg, len(match),
		boardsText(match)))
}

func containsBoard(bs []api.Baseboard, b api.Baseboard) bool {
	for _, x := range bs {
		if x == b {
			return true
		}
	}
	return false
}

func boardsText(bs []api.Baseboard) string {
	s := make([]string, len(bs))
	for i, b := range bs {
		s[i] = b.Part + ":" + b.Serial
	}
	return strings.Join(s, ", ")
}

// tqStarted reports a change Nexus started, and with wait follows it.
func tqStarted(ctx context.Context, e *env, c api.TrustQuorumConfig, wait bool, waitFor time.Duration) error {
	if !wait {
		if e.json {
			return printJSON(e.out, c)
		}
		fmt.Fprintf(e.out, "epoch %d started: %s over %d members, coordinator %s (follow it with rackctl trust-quorum show %d)\n",
			c.Epoch, c.State, len(c.Members), c.Coordinator.Serial, c.Epoch)
		return nil
	}
	final, err := tqWait(ctx, e, c, waitFor)
	if err != nil {
		return err
	}
	if e.json {
		return printJSON(e.out, final)
	}
	fmt.Fprintf(e.out, "epoch %d %s (attempt %d): %d of %d acked, %d members\n", final.Epoch, final.State, final.Attempt,
		final.Acked, final.Required, len(final.Members))
	return nil
}

// tqWait polls the change c started until an epoch of it is committed,
// following Nexus's automatic retries (the next epoch with the same
// change id). Each step is a line on stderr (nothing under --json), as
// repo upload --wait shows replication.
func tqWait(ctx context.Context, e *env, c api.TrustQuorumConfig, timeout time.Duration) (api.TrustQuorumConfig, error) {
	begin := e.now()
	w := &waitLine{e: e}
	defer w.end()
	for {
		state := fmt.Sprintf("epoch %d (attempt %d): %s, %d of %d acked", c.Epoch, c.Attempt, c.State, c.Acked, c.Required)
		w.show(fmt.Sprintf("%s, %s elapsed", state, humanize.Duration(e.now().Sub(begin))), state)
		switch c.State {
		case "committed", "committed_partially":
			return c, nil
		case "aborted":
			next, err := e.nexus.TrustQuorumEpoch(ctx, c.Epoch+1)
			switch {
			case client.StatusCode(err) == http.StatusNotFound || err == nil && next.ChangeID != c.ChangeID:
				return c, fail("trust_quorum_aborted", "epoch %d was aborted and Nexus did not retry the change: %s "+
					"(rackctl trust-quorum status shows where the rack is)", c.Epoch, c.AbortReason)
			case err != nil:
				return c, err
			}
			retry := fmt.Sprintf("epoch %d aborted (%s); Nexus retries the change as epoch %d", c.Epoch, c.AbortReason, next.Epoch)
			w.show(retry, retry)
			c = next
			continue
		}
		if e.now().Sub(begin) >= timeout {
			return c, fail("not_committed", "epoch %d is still %s after %s (%d of %d acked); rackctl trust-quorum show %d follows it",
				c.Epoch, c.State, humanize.Duration(timeout), c.Acked, c.Required, c.Epoch)
		}
		if err := e.clock.Sleep(ctx, 250*time.Millisecond); err != nil {
			return c, err
		}
		next, err := e.nexus.TrustQuorumEpoch(ctx, c.Epoch)
		if err != nil {
			return c, err
		}
		c = next
	}
}

func tqAbort(ctx context.Context, e *env, args []string) error {
	epoch, err := epochArg("abort", args)
	if err != nil {
		return err
	}
	c, err := e.nexus.TrustQuorumAbort(withRequester(ctx), epoch)
	if err != nil {
		return err
	}
	if e.json {
		return printJSON(e.out, c)
	}
	fmt.Fprintf(e.out, "epoch %d %s: %s\n", c.Epoch, c.State, c.AbortReason)
	return nil
}

func tqShow(ctx context.Context, e *env, args []string) error {
	epoch, err := epochArg("show", args)
	if err != nil {
		return err
	}
	c, err := e.nexus.TrustQuorumEpoch(ctx, epoch)
	if err != nil {
		return err
	}
	if e.json {
		return printJSON(e.out, c)
	}
	return tqPrintConfig(e, c, e.now())
}

func tqPrintConfig(e *env, c api.TrustQuorumConfig, now time.Time) error {
	kind := ""
	switch {
	case c.Lrtq:
		kind = " (LRTQ)"
	case c.LrtqUpgrade:
		kind = " (upgrade from LRTQ)"
	}
	rows := [][2]string{
		{"epoch", fmt.Sprintf("%d%s", c.Epoch, kind)},
		{"state", fmt.Sprintf("%s, %d of %d acked", c.State, c.Acked, c.Required)},
		{"built on", builtOn(c)},
		{"threshold", fmt.Sprintf("K=%d, Z=%d, %d members", c.Threshold, c.CommitCrashTolerance, len(c.Members))},
		{"coordinator", c.Coordinator.Part + ":" + c.Coordinator.Serial},
		{"change", fmt.Sprintf("%s, attempt %d", c.ChangeID, c.Attempt)},
		{"created", agoAt(now, c.TimeCreated)},
	}
	if c.TimeCommitted != nil {
		rows = append(rows, [2]string{"committed", agoAt(now, *c.TimeCommitted)})
	}
	if c.TimeAborted != nil {
		rows = append(rows, [2]string{"aborted", agoAt(now, *c.TimeAborted) + ": " + c.AbortReason})
	}
	if err := facts(e.out, rows); err != nil {
		return err
	}
	fmt.Fprintln(e.out)
	members := make([][]string, 0, len(c.Members))
	for _, m := range c.Members {
		prepared, committed := "-", "-"
		if m.TimePrepared != nil {
			prepared = humanize.Ago(now, *m.TimePrepared)
		}
		if m.TimeCommitted != nil {
			committed = humanize.Ago(now, *m.TimeCommitted)
		}
		members = append(members, []string{m.Serial, m.Part, m.State, prepared, committed})
	}
	return table(e.out, []string{"SERIAL", "PART", "STATE", "PREPARED", "COMMITTED"}, members)
}

func builtOn(c api.TrustQuorumConfig) string {
	if c.LastCommittedEpoch == 0 {
		return "nothing (the first epoch)"
	}
	return fmt.Sprintf("epoch %d", c.LastCommittedEpoch)
}

func tqStatus(ctx context.Context, e *env, args []string) error {
	if len(args) > 0 {
		return usageError(fmt.Sprintf("trust-quorum status takes no arguments, got %q", args))
	}
	st, err := e.nexus.TrustQuorumStatus(ctx)
	if err != nil {
		return err
	}
	uninit, err := e.nexus.SledsUninitialized(ctx)
	if err != nil {
		return err
	}
	if e.json {
		return printJSON(e.out, struct {
			api.TrustQuorumStatus
			Uninitialized []api.UninitializedSled `json:"uninitialized"`
		}{st, uninit})
	}
	now := e.now()
	if st.Latest == nil {
		fmt.Fprintln(e.out, "the trust quorum is not set up: rack setup has not handed the rack to Nexus")
		return nil
	}
	if lc := st.LatestCommitted; lc != nil && lc.Epoch != st.Latest.Epoch {
		fmt.Fprintf(e.out, "latest committed: epoch %d (%s, %d members)\n\n", lc.Epoch, lc.State, len(lc.Members))
	}
	fmt.Fprintln(e.out, "latest:")
	if err := tqPrintConfig(e, *st.Latest, now); err != nil {
		return err
	}
	fmt.Fprintln(e.out, "\nnodes (as Nexus last saw them):")
	rows := make([][]string, 0, len(st.Nodes))
	alarms := 0
	for _, n := range st.Nodes {
		committed, storage, alarm, note := "-", "-", "-", n.Error
		if s := n.Status; s != nil {
			committed = strconv.FormatUint(s.LatestCommittedEpoch, 10)
			if s.StorageLock != "" {
				storage = s.StorageLock
			}
			if s.StorageLockReason != "" && note == "" {
				note = s.StorageLockReason
			}
			if len(s.Alarms) > 0 {
				alarms += len(s.Alarms)
				var kinds []string
				for _, a := range s.Alarms {
					kinds = append(kinds, a.Kind)
				}
				alarm = "ALARM " + strings.Join(kinds, ",")
			}
			if s.Expunged != nil {
				note = fmt.Sprintf("expunged at epoch %d", s.Expunged.Epoch)
			}
		}
		if note == "" {
			note = "-"
		}
		rows = append(rows, []string{n.Serial, committed, storage, alarm, n.Via, humanize.Ago(now, n.TimeObserved), note})
	}
	if err := table(e.out, []string{"SERIAL", "COMMITTED", "STORAGE", "ALARMS", "VIA", "OBSERVED", "NOTE"}, rows); err != nil {
		return err
	}
	if alarms > 0 {
		fmt.Fprintf(e.out, "%d alarm(s): conditions that must never happen; see rackctl --json trust-quorum status\n", alarms)
	}
	if len(uninit) > 0 {
		fmt.Fprintln(e.out, "\nuninitialised sleds (rackctl trust-quorum add SERIAL):")
		rows = rows[:0]
		for _, u := range uninit {
			rows = append(rows, []string{u.Serial, u.Part, u.SeenBy.Serial, humanize.Ago(now, u.TimeSeen)})
		}
		return table(e.out, []string{"SERIAL", "PART", "SEEN BY", "SEEN"}, rows)
	}
	return nil
}
