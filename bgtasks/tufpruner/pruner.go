// Package tufpruner is the tuf_repo_pruner background task: it keeps the
// newest uploaded TUF repos (and any an operator marked kept) and prunes
// the rest, one per activation, oldest first, fenced by the generation of
// the wanted artifact set.
package tufpruner

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/rs/zerolog"

	"github.com/rackplane/rackplane/bgtasks"
	"github.com/rackplane/rackplane/nexus/app"
	"github.com/rackplane/rackplane/nexus/datastore"
)

// Name is the task's name in the driver and on status pages.
const Name = "tuf_repo_pruner"

// Reasons a repo is kept or pruned, as the status shows them.
const (
	ReasonNewest   = "among the newest"
	ReasonKept     = "kept by an operator"
	ReasonTooOld   = "older than the newest"
	ReasonDeferred = "prunable; at most one repo is pruned per activation"
)

// DefaultPeriod is how often the pruner looks; pruning one repo per
// activation, a backlog clears over a few periods.
const DefaultPeriod = 5 * time.Minute

// Description is the one-line summary operators see.
const Description = "prunes the oldest TUF repos beyond the newest few (and those kept by operators)"

// Task is the pruner. It is safe to run in every Nexus at once: each
// prune is a compare-and-swap on the generation it planned against.
// Operators turn it off with the background-task switch
// (rackctl bgtasks disable tuf_repo_pruner), which every Nexus honours.
type Task struct {
	app  *app.App
	keep int
	log  zerolog.Logger
}

// New returns the pruner keeping the newest keep repos.
func New(a *app.App, keep int, log zerolog.Logger) *Task {
	return &Task{app: a, keep: max(keep, 1), log: log.With().Str("task", Name).Logger()}
}

// Decision is one repo's fate in an activation.
type Decision struct {
	SystemVersion string `json:"system_version"`
	Reason        string `json:"reason"`
}

// Status is what an activation saw and did.
type Status struct {
	// KeepNewest is the configured number of newest repos kept.
	KeepNewest int `json:"keep_newest"`
	// Generation is the wanted-set generation the plan was made at, and
	// GenerationAfter the one after pruning (equal when nothing changed).
	Generation      int64      `json:"generation"`
	GenerationAfter int64      `json:"generation_after"`
	Kept            []Decision `json:"kept"`
	// Pruned is the repo pruned by this activation, if any.
	Pruned *Decision `json:"pruned,omitempty"`
	// Waiting lists repos that later activations will prune.
	Waiting []Decision `json:"waiting,omitempty"`
	// Skipped says why nothing was pruned although something could be.
	Skipped string `json:"skipped,omitempty"`
}

var _ bgtasks.Task = (*Task)(nil)

// Activate plans against the live repos and prunes at most the oldest
// prunable one.
func (t *Task) Activate(ctx context.Context, act bgtasks.Activation) (any, error) {
	log := t.log.With().Str("run_id", act.RunID).Logger()
	// The pruner changes repos on its own account: the audit log says so.
	ctx = app.WithActor(ctx, app.TaskActor(Name))
	st := Status{KeepNewest: t.keep, Kept: []Decision{}}
	// Read the generation before the repos: if a change lands in between,
	// the prune's compare-and-swap fails and the next run plans again.
	gen, err := t.app.Datastore().TufGeneration(ctx)
	if err != nil {
		return st, fmt.Errorf("read generation: %w", err)
	}
	st.Generation, st.GenerationAfter = gen, gen
	repos, err := t.app.LiveRepos(ctx)
	if err != nil {
		return st, fmt.Errorf("list repos: %w", err)
	}
	// repos is newest first; the newest keep are kept, and so are repos an
	// operator marked. The rest are prunable, oldest first.
	var prunable []Decision
	for i, r := range repos {
		switch {
		case i < t.keep:
			st.Kept = append(st.Kept, Decision{r.SystemVersion, ReasonNewest})
		case r.Kept:
			st.Kept = append(st.Kept, Decision{r.SystemVersion, ReasonKept})
		default:
			prunable = append(prunable, Decision{r.SystemVersion, ReasonTooOld})
		}
	}
	for i, j := 0, len(prunable)-1; i < j; i, j = i+1, j-1 {
		prunable[i], prunable[j] = prunable[j], prunable[i]
	}
	if len(prunable) == 0 {
		return st, nil
	}
	for _, d := range prunable[1:] {
		st.Waiting = append(st.Waiting, Decision{d.SystemVersion, ReasonDeferred})
	}
	victim := prunable[0]
	res, err := t.app.PruneRepo(ctx, victim.SystemVersion, "pruner", &gen)
	switch {
	case errors.Is(err, datastore.ErrGenerationMoved):
		st.Skipped = "the generation moved while planning; the next activation plans again"
		st.Waiting = append([]Decision{{victim.SystemVersion, ReasonTooOld}}, st.Waiting...)
		log.Info().Int64("generation", gen).Msg("tuf repo pruner: generation moved; not pruning")
		return st, nil
	case err != nil:
		return st, fmt.Errorf("prune %s: %w", victim.SystemVersion, err)
	}
	st.Pruned = &victim
	st.GenerationAfter = res.Generation
	// The wanted set shrank: tasks that depend on the pruner (replication)
	// run now rather than at their next period.
	act.MarkChanged()
	return st, nil
}
