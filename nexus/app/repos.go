package app

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/rs/zerolog"

	"github.com/rackplane/rackplane/internal/reqid"
	"github.com/rackplane/rackplane/nexus/datastore"
	"github.com/rackplane/rackplane/nexus/model"
)

// ListRepos returns up to limit repos, newest first, after the cursor (nil
// for the first page); pruned repos only when asked.
func (a *App) ListRepos(ctx context.Context, includePruned bool, after *datastore.RepoCursor, limit int) ([]model.TufRepo, error) {
	repos, err := a.ds.TufRepoList(ctx, includePruned, after, limit)
	return repos, translate(err)
}

// LiveRepos returns every repo not pruned, newest first.
func (a *App) LiveRepos(ctx context.Context) ([]model.TufRepo, error) {
	repos, err := a.ds.TufReposLive(ctx)
	return repos, translate(err)
}

// Repo returns a repo (pruned or not) with its artifacts, each with its
// replication as this Nexus's replication task last observed it.
func (a *App) Repo(ctx context.Context, systemVersion string) (model.TufRepoDetail, error) {
	d, err := a.ds.TufRepoGet(ctx, systemVersion)
	if err != nil {
		return d, translate(err)
	}
	m := a.ReplicationMatrix()
	index := MatrixIndex(m)
	for i, art := range d.Artifacts {
		if col, ok := index[art.SHA256]; ok {
			rep := ArtifactReplication(m, col)
			d.Artifacts[i].Replication = &rep
		}
	}
	return d, nil
}

// MatrixIndex maps each artifact hash of m to its column; it is empty
// before the replication task's first run.
func MatrixIndex(m model.ReplicationMatrix) map[string]int {
	if m.Time.IsZero() {
		return nil
	}
	out := make(map[string]int, len(m.Artifacts))
	for i, art := range m.Artifacts {
		out[art.SHA256] = i
	}
	return out
}

// ArtifactReplication summarises column col of m. A sled whose holdings
// are unknown (it did not answer at the run's generation) counts as in
// service but not observed.
func ArtifactReplication(m model.ReplicationMatrix, col int) model.ArtifactReplication {
	r := model.ArtifactReplication{TimeObserved: m.Time, Generation: m.Generation, SledsInService: len(m.Sleds)}
	for s := range m.Sleds {
		c := m.Copies[s][col]
		if c < 0 {
			continue
		}
		r.SledsObserved++
		if c > 0 {
			r.SledsHolding++
			if int(c) >= FullCopies(m.Sleds[s]) {
				r.SledsHoldingAllM2s++
			}
		}
		if m.InFlight[s][col] {
			r.SledsCopying++
		}
	}
	return r
}

// FullCopies is how many copies a sled must hold of an artifact for it to
// be fully replicated there: one on every M.2 it should have, so a sled
// with an M.2 missing holds nothing fully.
func FullCopies(s model.MatrixSled) int { return max(s.M2Present, s.M2Expected, 1) }

// PruneRepo marks a repo pruned: it stays recorded but its artifacts stop
// being wanted on sleds unless another live repo carries them. Uploading
// the same archive again restores it; uploading another archive of the
// same system version replaces the pruned record (UploadRepo). by names who pruned it
// ("operator", "pruner"); with expect set, the prune happens only while
// the wanted-artifact generation is still *expect (the pruner's fence;
// datastore.ErrGenerationMoved otherwise).
func (a *App) PruneRepo(ctx context.Context, systemVersion, by string, expect *int64) (model.PruneResult, error) {
	var res model.PruneResult
	err := a.audited(ctx, model.RoleAdmin, "repo.prune", "repo "+systemVersion, func(ctx context.Context) error {
		var err error
		res, err = a.ds.TufRepoPrune(ctx, systemVersion, by, expect)
		return err
	})
	if err != nil {
		return res, translate(err)
	}
	res.Message = pruneMessage(res)
	if !res.AlreadyPruned {
		zerolog.Ctx(ctx).Info().Str("system_version", systemVersion).Int64("generation", res.Generation).
			Str("by", by).Msg("tuf repo pruned")
		a.notify(ReposChanged, reqid.From(ctx))
	}
	return res, nil
}

// SetRepoKept marks a repo kept (never pruned automatically) or not.
func (a *App) SetRepoKept(ctx context.Context, systemVersion string, kept bool) (model.TufRepo, error) {
	var r model.TufRepo
	action := "repo.keep"
	if !kept {
		action = "repo.unkeep"
	}
	err := a.audited(ctx, model.RoleAdmin, action, "repo "+systemVersion, func(ctx context.Context) error {
		var err error
		r, err = a.ds.TufRepoSetKept(ctx, systemVersion, kept)
		return translate(err)
	})
	return r, err
}

// ListArtifacts returns up to limit artifacts with ids after `after`.
func (a *App) ListArtifacts(ctx context.Context, after uuid.UUID, limit int) ([]model.ArtifactListItem, error) {
	out, err := a.ds.TufArtifactList(ctx, after, limit)
	return out, translate(err)
}

// ArtifactLabels names artifact hashes for people (status pages).
func (a *App) ArtifactLabels(ctx context.Context, hashes []string) (map[string]model.ArtifactLabel, error) {
	out, err := a.ds.TufArtifactLabels(ctx, hashes)
	return out, translate(err)
}

// RepoHashes returns the distinct artifact hashes of each of the repos.
func (a *App) RepoHashes(ctx context.Context, repoIDs []uuid.UUID) (map[uuid.UUID][]string, error) {
	out, err := a.ds.TufRepoHashes(ctx, repoIDs)
	return out, translate(err)
}

// pruneMessage says what a prune did and the two ways back.
func pruneMessage(res model.PruneResult) string {
	v := res.Repo.SystemVersion
	back := fmt.Sprintf("Upload the same archive to restore it, or another archive of %s to replace it", v)
	if res.AlreadyPruned {
		m := fmt.Sprintf("system version %s was already pruned", v)
		if r := res.Repo; r.TimePruned != nil {
			m += fmt.Sprintf(" (by %s, %s)", r.PrunedBy, r.TimePruned.UTC().Format(time.RFC3339))
		}
		return m + "; nothing changed. " + back + "."
	}
	return fmt.Sprintf("system version %s pruned (generation %d): its artifacts leave the sleds unless another live "+
		"repo carries them. %s.", v, res.Generation, back)
}
