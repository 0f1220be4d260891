package datastore

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/internal/fault"
	"github.com/rackplane/rackplane/nexus/model"
)

// ErrGenerationMoved is returned by a fenced change when the generation is
// no longer the one its caller planned against.
var ErrGenerationMoved = errors.New("tuf generation moved")

// ErrGenerationNotBehind is TufGenerationFastForward's refusal: the
// database's generation is not behind the one a sled reported, so the
// caller's own view was stale (another Nexus moved the generation), not
// the database.
var ErrGenerationNotBehind = errors.New("tuf generation not behind the sleds")

// Trust roots -------------------------------------------------------------

// TrustRootRow is a live trust root as verification needs it.
type TrustRootRow struct {
	ID     uuid.UUID
	SHA256 string
	JSON   []byte
}

const trustRootColumns = `id, time_created, sha256, root_version, expires, root_json`

func scanTrustRoot(row pgx.Row) (model.TrustRoot, error) {
	var t model.TrustRoot
	var raw string
	err := row.Scan(&t.ID, &t.TimeCreated, &t.SHA256, &t.Version, &t.Expires, &raw)
	t.JSON = []byte(raw)
	return t, err
}

// TrustRootCreate registers a root document, or returns the live one with
// the same hash (created false).
func (d *Datastore) TrustRootCreate(ctx context.Context, t model.TrustRoot) (model.TrustRoot, bool, error) {
	var out model.TrustRoot
	var created bool
	err := d.InTx(ctx, "trust_root_create", func(ctx context.Context, tx pgx.Tx) error {
		var err error
		out, err = scanTrustRoot(tx.QueryRow(ctx, `SELECT `+trustRootColumns+` FROM tuf_trust_root
			WHERE sha256 = $1 AND time_deleted IS NULL`, t.SHA256))
		if err == nil {
			created = false
			return nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		created = true
		out, err = scanTrustRoot(tx.QueryRow(ctx, `INSERT INTO tuf_trust_root
			(id, time_created, sha256, root_version, expires, root_json) VALUES ($1, now(), $2, $3, $4, $5)
			RETURNING `+trustRootColumns, t.ID, t.SHA256, t.Version, t.Expires, string(t.JSON)))
		return err
	}, AppliedIf(func(ctx context.Context, tx pgx.Tx) (bool, error) {
		// An attempt that found the root wrote nothing; one that inserted
		// it committed if its row (the id is the caller's) is there. A
		// second run would report created false.
		if !created {
			return true, nil
		}
		return exists(ctx, tx, `SELECT EXISTS (SELECT 1 FROM tuf_trust_root WHERE id = $1::UUID)`, out.ID)
	}))
	return out, created, err
}

// TrustRootList returns live trust roots with ids after `after`, in id
// order.
func (d *Datastore) TrustRootList(ctx context.Context, after uuid.UUID, limit int) ([]model.TrustRoot, error) {
	rows, err := d.pool.Query(ctx, `SELECT `+trustRootColumns+` FROM tuf_trust_root
		WHERE time_deleted IS NULL AND id > $1 ORDER BY id LIMIT $2`, after, limit)
	if err != nil {
		return nil, classify(err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (model.TrustRoot, error) { return scanTrustRoot(r) })
	return out, classify(err)
}

// TrustRootsLive returns every live trust root, oldest first: the order
// verification tries them in.
func (d *Datastore) TrustRootsLive(ctx context.Context) ([]TrustRootRow, error) {
	rows, err := d.pool.Query(ctx, `SELECT id, sha256, root_json FROM tuf_trust_root
		WHERE time_deleted IS NULL ORDER BY time_created, id`)
	if err != nil {
		return nil, classify(err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (TrustRootRow, error) {
		var t TrustRootRow
		var raw string
		err := r.Scan(&t.ID, &t.SHA256, &raw)
		t.JSON = []byte(raw)
		return t, err
	})
	return out, classify(err)
}

// TrustRootGet returns a live trust root, or ErrNotFound.
func (d *Datastore) TrustRootGet(ctx context.Context, id uuid.UUID) (model.TrustRoot, error) {
	t, err := scanTrustRoot(d.pool.QueryRow(ctx, `SELECT `+trustRootColumns+` FROM tuf_trust_root
		WHERE id = $1 AND time_deleted IS NULL`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return t, fmt.Errorf("%w: no trust root with id %s", ErrNotFound, id)
	}
	return t, classify(err)
}

// ErrTrustRootInUse is returned by TrustRootDelete when live repos were
// verified against the root and the caller did not insist.
var ErrTrustRootInUse = errors.New("trust root signs live repos")

// TrustRootDeleteResult is what deleting a trust root did.
type TrustRootDeleteResult struct {
	Root model.TrustRoot
	// LiveRepos are the system versions of the live repos verified
	// against the root, sorted.
	LiveRepos []string
	// Remaining counts the live trust roots left.
	Remaining int
}

// TrustRootDelete soft-deletes a live trust root, or returns ErrNotFound.
// Unless force is set it refuses, with ErrTrustRootInUse and the repos in
// the result, a root that live (unpruned) repos were verified against. The
// check and the delete are one transaction, so an upload verified against
// the root cannot slip in between.
func (d *Datastore) TrustRootDelete(ctx context.Context, id uuid.UUID, force bool) (TrustRootDeleteResult, error) {
	var res TrustRootDeleteResult
	err := d.InTx(ctx, "trust_root_delete", func(ctx context.Context, tx pgx.Tx) error {
		res = TrustRootDeleteResult{}
		var err error
		res.Root, err = scanTrustRoot(tx.QueryRow(ctx, `SELECT `+trustRootColumns+` FROM tuf_trust_root
			WHERE id = $1 AND time_deleted IS NULL`, id))
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("%w: no trust root with id %s", ErrNotFound, id)
		}
		if err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `SELECT system_version FROM tuf_repo
			WHERE trust_root_id = $1 AND time_pruned IS NULL ORDER BY system_version`, id)
		if err != nil {
			return err
		}
		if res.LiveRepos, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
			return err
		}
		if len(res.LiveRepos) > 0 && !force {
			return ErrTrustRootInUse
		}
		if _, err := tx.Exec(ctx, `UPDATE tuf_trust_root SET time_deleted = now() WHERE id = $1`, id); err != nil {
			return err
		}
		return tx.QueryRow(ctx, `SELECT count(*) FROM tuf_trust_root WHERE time_deleted IS NULL`).Scan(&res.Remaining)
	}, AppliedIf(func(ctx context.Context, tx pgx.Tx) (bool, error) {
		// The attempt found the root live and deleted it (res holds what
		// it saw); run again, it would say "not found".
		return exists(ctx, tx, `SELECT EXISTS (SELECT 1 FROM tuf_trust_root
			WHERE id = $1::UUID AND time_deleted IS NOT NULL)`, id)
	}))
	return res, err
}

// TufVersions are metadata versions: a repo's, or a lineage's floors.
type TufVersions struct {
	Root, Timestamp, Snapshot, Targets int64
}

// TufFloors returns the rollback floors of every lineage, by root hash.
func (d *Datastore) TufFloors(ctx context.Context) (map[string]TufVersions, error) {
	rows, err := d.pool.Query(ctx, `SELECT root_sha256, root_version, timestamp_version, snapshot_version,
		targets_version FROM tuf_trust_root_lineage`)
	if err != nil {
		return nil, classify(err)
	}
	out := map[string]TufVersions{}
	var key string
	var v TufVersions
	_, err = pgx.ForEachRow(rows, []any{&key, &v.Root, &v.Timestamp, &v.Snapshot, &v.Targets}, func() error {
		out[key] = v
		return nil
	})
	return out, classify(err)
}

// Repos ---------------------------------------------------------------------

const repoColumns = `r.id, r.system_version, r.file_name, r.sha256, r.time_created, r.valid_until, r.time_pruned,
	coalesce(r.pruned_by, ''), r.kept, r.state::TEXT, r.state_reason, r.trust_root_id,
	r.root_version, r.timestamp_version, r.snapshot_version, r.targets_version,
	(SELECT count(*) FROM tuf_repo_artifact ra WHERE ra.repo_id = r.id),
	(SELECT coalesce(sum(a.length), 0)::INT8 FROM tuf_repo_artifact ra JOIN tuf_artifact a ON a.id = ra.artifact_id
		WHERE ra.repo_id = r.id)`

func scanRepo(row pgx.Row) (model.TufRepo, error) {
	var r model.TufRepo
	var count int64
	err := row.Scan(&r.ID, &r.SystemVersion, &r.FileName, &r.SHA256, &r.TimeCreated, &r.ValidUntil, &r.TimePruned,
		&r.PrunedBy, &r.Kept, &r.State, &r.StateReason, &r.TrustRootID,
		&r.RootVersion, &r.TimestampVersion, &r.SnapshotVersion, &r.TargetsVersion, &count, &r.TotalBytes)
	r.ArtifactCount = int(count)
	return r, err
}

// TufArtifactInsert is an artifact of a repo being recorded.
type TufArtifactInsert struct {
	Name, Version, Kind string
	TargetName          string
	SHA256              string
	Length              int64
	Tags                map[string]string
}

// TufPartInsert is a part of a composite artifact of a repo being
// recorded.
type TufPartInsert struct {
	TufArtifactInsert
	// Composite indexes TufRepoInsert.Artifacts.
	Composite int
	// Path is where the part was in the composite's tarball.
	Path string
}

// TufRepoInsert is a verified upload to record.
type TufRepoInsert struct {
	// NexusID is the instance whose depot now holds the artifacts.
	NexusID          uuid.UUID
	SystemVersion    string
	FileName         string
	SHA256           string
	ValidUntil       time.Time
	TrustRootID      uuid.UUID
	Versions         TufVersions
	TargetsSHA256    string
	ManifestFormat   int
	ManifestMetadata map[string]string
	Artifacts        []TufArtifactInsert
	// Parts are the composite artifacts' parts; each is recorded as an
	// artifact of the repo too (wanted on sleds like any other).
	Parts []TufPartInsert
	// LineageKey names the trust-root lineage (the root's hash) whose
	// rollback floors apply; CheckFloor refuses versions below them. Both
	// are ignored for a re-upload of a known repo.
	LineageKey string
	CheckFloor func(floor TufVersions) error
	// AuditDetail is the upload's audit detail; recording adds what it
	// did beyond inserting (the pruned record it replaced).
	AuditDetail string
}

// TufRepoInsert records a verified upload in one transaction: the repo,
// its artifacts (reusing rows for identical artifacts), this Nexus's local
// copies, the lineage's rollback floors, and a generation bump when the
// set of artifacts wanted on sleds grows.
//
// A re-upload of the same archive refreshes the copy records, and restores
// the repo if it was pruned (see reupload). A different archive of a
// system version whose repo is pruned replaces that record: its row and
// its artifact links are deleted in the same transaction, and what it was
// goes into the upload's audit entry (the history). A different archive of
// a live system version is a conflict.
func (d *Datastore) TufRepoInsert(ctx context.Context, in TufRepoInsert) (model.UploadResult, error) {
	var res model.UploadResult
	err := d.InTx(ctx, "tuf_repo_insert", func(ctx context.Context, tx pgx.Tx) error {
		res = model.UploadResult{}
		// Every upload may change the generation: take its row first, so
		// that concurrent uploads queue here instead of all doing their
		// work and then failing on it.
		generation, err := lockGeneration(ctx, tx)
		if err != nil {
			return err
		}
		existing, err := scanRepo(tx.QueryRow(ctx, `SELECT `+repoColumns+` FROM tuf_repo r WHERE r.sha256 = $1`, in.SHA256))
		switch {
		case err == nil:
			return reupload(ctx, tx, in, existing, generation, &res)
		case !errors.Is(err, pgx.ErrNoRows):
			return err
		}
		UpdateAudit(ctx, func(e *model.AuditEntry) { e.Detail = in.AuditDetail })
		replaced, err := checkSameVersion(ctx, tx, in)
		if err != nil {
			return err
		}
		if replaced != nil {
			if err := replacePruned(ctx, tx, *replaced); err != nil {
				return err
			}
			res.Replaced = replaced
			UpdateAudit(ctx, func(e *model.AuditEntry) {
				e.Detail = in.AuditDetail + "; replaced the pruned record of " + replaced.SystemVersion + ": " +
					describeRecord(*replaced)
			})
		}
		if err := advanceFloors(ctx, tx, in); err != nil {
			return err
		}
		hashes := distinctHashes(in.all())
		newToSleds, err := countNotWanted(ctx, tx, hashes, uuid.Nil)
		if err != nil {
			return err
		}
		repoID := uuid.New()
		meta := in.ManifestMetadata
		if meta == nil {
			meta = map[string]string{}
		}
		if _, err := tx.Exec(ctx, `INSERT INTO tuf_repo (id, time_created, sha256, system_version, file_name,
				valid_until, trust_root_id, root_version, timestamp_version, snapshot_version, targets_version,
				targets_sha256, manifest_format, manifest_metadata)
			VALUES ($1, now(), $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)`,
			repoID, in.SHA256, in.SystemVersion, in.FileName, in.ValidUntil, in.TrustRootID,
			in.Versions.Root, in.Versions.Timestamp, in.Versions.Snapshot, in.Versions.Targets,
			in.TargetsSHA256, in.ManifestFormat, meta); err != nil {
			return err
		}
		ids := make([]uuid.UUID, len(in.Artifacts))
		for i, a := range in.Artifacts {
			id, err := artifactRow(ctx, tx, in.SystemVersion, a)
			if err != nil {
				return err
			}
			ids[i] = id
			if _, err := tx.Exec(ctx, `INSERT INTO tuf_repo_artifact (repo_id, artifact_id, target_name)
				VALUES ($1, $2, $3)`, repoID, id, a.TargetName); err != nil {
				return err
			}
		}
		if err := insertParts(ctx, tx, in, repoID, ids); err != nil {
			return err
		}
		if err := recordCopies(ctx, tx, in.NexusID, hashes); err != nil {
			return err
		}
		res.Status = model.UploadInserted
		if replaced != nil {
			res.Status = model.UploadReplaced
		}
		res.Generation = generation
		if newToSleds > 0 {
			if res.Generation, err = bumpGeneration(ctx, tx, res.Generation); err != nil {
				return err
			}
			res.GenerationBumped = true
		}
		res.Repo, err = scanRepo(tx.QueryRow(ctx, `SELECT `+repoColumns+` FROM tuf_repo r WHERE r.id = $1`, repoID))
		return err
	}, AppliedIf(func(ctx context.Context, tx pgx.Tx) (bool, error) {
		// Run again after it committed, an insert would find the archive
		// and report a re-upload, and a re-upload would not report its
		// generation bump.
		if res.Status == model.UploadInserted || res.Status == model.UploadReplaced {
			return exists(ctx, tx, `SELECT EXISTS (SELECT 1 FROM tuf_repo WHERE id = $1::UUID)`, res.Repo.ID)
		}
		// A re-upload restored the repo (when it was pruned) and recorded
		// this Nexus's copies; with both in place its result holds.
		var n int
		err := tx.QueryRow(ctx, `SELECT count(*) FROM nexus_artifact_copy WHERE nexus_id = $1::UUID
			AND sha256 = ANY($2::TEXT[])`, in.NexusID, distinctHashes(in.all())).Scan(&n)
		if err != nil || n < len(distinctHashes(in.all())) {
			return false, err
		}
		return exists(ctx, tx, `SELECT EXISTS (SELECT 1 FROM tuf_repo WHERE id = $1::UUID AND time_pruned IS NULL)`,
			res.Repo.ID)
	}))
	return res, err
}

// reupload handles an archive already recorded: this Nexus's copies are
// recorded again, and a pruned repo is restored. A restored repo is marked
// kept: the operator brought it back on purpose, and the pruner, which
// keeps the newest uploads, would otherwise prune it again at its next run
// (its upload time is its first upload's, older than the newest). Keeping
// its upload time, rather than counting the restore as a fresh upload,
// leaves the newest uploads where they are: restoring an old release does
// not push a newer one out of the pruner's window.
func reupload(ctx context.Context, tx pgx.Tx, in TufRepoInsert, existing model.TufRepo, generation int64,
	res *model.UploadResult) error {
	res.Status = model.UploadAlreadyExists
	res.Generation = generation
	UpdateAudit(ctx, func(e *model.AuditEntry) { e.Detail = in.AuditDetail })
	var err error
	if existing.TimePruned != nil {
		res.Status = model.UploadRestored
		pruned := existing
		res.Restored = &pruned
		UpdateAudit(ctx, func(e *model.AuditEntry) {
			e.Detail = in.AuditDetail + "; restored (it was pruned " + existing.TimePruned.UTC().Format(time.RFC3339) +
				" by " + existing.PrunedBy + ") and marked kept"
		})
		hashes, err := repoHashes(ctx, tx, existing.ID)
		if err != nil {
			return err
		}
		back, err := countNotWanted(ctx, tx, hashes, uuid.Nil)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE tuf_repo SET time_pruned = NULL, pruned_by = NULL, kept = true WHERE id = $1`,
			existing.ID); err != nil {
			return err
		}
		if back > 0 {
			if res.Generation, err = bumpGeneration(ctx, tx, res.Generation); err != nil {
				return err
			}
			res.GenerationBumped = true
		}
	}
	if err := recordCopies(ctx, tx, in.NexusID, distinctHashes(in.all())); err != nil {
		return err
	}
	res.Repo, err = scanRepo(tx.QueryRow(ctx, `SELECT `+repoColumns+` FROM tuf_repo r WHERE r.id = $1`, existing.ID))
	return err
}

// all is every artifact of the upload, parts included.
func (in TufRepoInsert) all() []TufArtifactInsert {
	out := append([]TufArtifactInsert{}, in.Artifacts...)
	for _, p := range in.Parts {
		out = append(out, p.TufArtifactInsert)
	}
	return out
}

// insertParts records the parts: each an artifact of the repo (a row of
// its own, reused for identical bytes as any artifact's is), linked to
// the composite it came from.
func insertParts(ctx context.Context, tx pgx.Tx, in TufRepoInsert, repoID uuid.UUID, composites []uuid.UUID) error {
	for _, p := range in.Parts {
		if p.Composite < 0 || p.Composite >= len(composites) {
			return fmt.Errorf("datastore: part %s names composite %d of %d artifacts", p.Path, p.Composite, len(composites))
		}
		id, err := artifactRow(ctx, tx, in.SystemVersion, p.TufArtifactInsert)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO tuf_repo_artifact (repo_id, artifact_id, target_name)
			VALUES ($1, $2, $3)`, repoID, id, p.TargetName); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO tuf_artifact_part (composite_id, part_id, path) VALUES ($1, $2, $3)
			ON CONFLICT (composite_id, part_id) DO NOTHING`, composites[p.Composite], id, p.Path); err != nil {
			return err
		}
	}
	return nil
}

// checkSameVersion looks for a recorded repo of the upload's system
// version (a different archive: the same one was found by hash). A pruned
// one is returned, to be replaced; a live one is a conflict naming what
// differs.
func checkSameVersion(ctx context.Context, tx pgx.Tx, in TufRepoInsert) (*model.TufRepo, error) {
	rec, err := scanRepo(tx.QueryRow(ctx, `SELECT `+repoColumns+` FROM tuf_repo r WHERE r.system_version = $1`,
		in.SystemVersion))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if rec.TimePruned != nil {
		return &rec, nil
	}
	id, sha := rec.ID, rec.SHA256
	var targetsSHA string
	if err := tx.QueryRow(ctx, `SELECT targets_sha256 FROM tuf_repo WHERE id = $1`, id).Scan(&targetsSHA); err != nil {
		return nil, err
	}
	targetsVersion := rec.TargetsVersion
	var diffs []string
	diffs = append(diffs, fmt.Sprintf("archive sha256 %s was recorded, this upload is %s", short(sha), short(in.SHA256)))
	if targetsSHA != in.TargetsSHA256 {
		diffs = append(diffs, fmt.Sprintf("signed targets metadata differs (recorded version %d, uploaded version %d)",
			targetsVersion, in.Versions.Targets))
	}
	rows, err := tx.Query(ctx, `SELECT a.name, a.version, a.kind, a.sha256 FROM tuf_repo_artifact ra
		JOIN tuf_artifact a ON a.id = ra.artifact_id WHERE ra.repo_id = $1`, id)
	if err != nil {
		return nil, err
	}
	recorded := map[string]string{}
	var name, version, kind, asha string
	if _, err := pgx.ForEachRow(rows, []any{&name, &version, &kind, &asha}, func() error {
		recorded[name+" "+version+" ("+kind+")"] = asha
		return nil
	}); err != nil {
		return nil, err
	}
	uploaded := map[string]string{}
	for _, a := range in.all() {
		uploaded[a.Name+" "+a.Version+" ("+a.Kind+")"] = a.SHA256
	}
	var artDiffs []string
	for k, s := range uploaded {
		switch r, ok := recorded[k]; {
		case !ok:
			artDiffs = append(artDiffs, "artifact "+k+" is new in this upload")
		case r != s:
			artDiffs = append(artDiffs, fmt.Sprintf("artifact %s has sha256 %s, recorded %s", k, short(s), short(r)))
		}
	}
	for k := range recorded {
		if _, ok := uploaded[k]; !ok {
			artDiffs = append(artDiffs, "artifact "+k+" is missing from this upload")
		}
	}
	sort.Strings(artDiffs)
	if len(artDiffs) > 5 {
		artDiffs = append(artDiffs[:5], fmt.Sprintf("and %d more artifact differences", len(artDiffs)-5))
	}
	diffs = append(diffs, artDiffs...)
	if len(artDiffs) == 0 && targetsSHA == in.TargetsSHA256 {
		diffs = append(diffs, "the signed contents are the same; only the zip differs")
	}
	return nil, fault.Conflictf(api.CodeRepoConflict,
		"system version %s is already uploaded with different content: %s. To replace it, delete (prune) it first "+
			"(`rackctl repo delete %s`), then upload this archive again: it replaces the pruned record, which stays "+
			"in the audit log", in.SystemVersion, strings.Join(diffs, "; "), in.SystemVersion)
}

// replacePruned deletes a pruned repo's record so that a new archive of
// its system version can take it: its artifact links, the row, and the
// artifact rows no other repo links to any more. Nothing it held is wanted
// on sleds (it was pruned), so the generation does not move.
func replacePruned(ctx context.Context, tx pgx.Tx, old model.TufRepo) error {
	rows, err := tx.Query(ctx, `DELETE FROM tuf_repo_artifact WHERE repo_id = $1 RETURNING artifact_id`, old.ID)
	if err != nil {
		return err
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
	if err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `DELETE FROM tuf_repo WHERE id = $1 AND time_pruned IS NOT NULL`, old.ID); err != nil {
		return err
	}
	// The artifacts no other repo names go, and with them their links to
	// the composites they were parts of (or the parts read out of them).
	rows, err = tx.Query(ctx, `SELECT a.id FROM tuf_artifact a WHERE a.id = ANY($1::UUID[])
		AND NOT EXISTS (SELECT 1 FROM tuf_repo_artifact ra WHERE ra.artifact_id = a.id)`, ids)
	if err != nil {
		return err
	}
	orphans, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
	if err != nil || len(orphans) == 0 {
		return err
	}
	if _, err := tx.Exec(ctx, `DELETE FROM tuf_artifact_part WHERE composite_id = ANY($1::UUID[])
		OR part_id = ANY($1::UUID[])`, orphans); err != nil {
		return err
	}
	_, err = tx.Exec(ctx, `DELETE FROM tuf_artifact WHERE id = ANY($1::UUID[])`, orphans)
	return err
}

// describeRecord says what a repo record was, for the history.
func describeRecord(r model.TufRepo) string {
	s := fmt.Sprintf("repo id %s, archive sha256 %s, file %s, %d artifacts (%d bytes), uploaded %s",
		r.ID, r.SHA256, r.FileName, r.ArtifactCount, r.TotalBytes, r.TimeCreated.UTC().Format(time.RFC3339))
	if r.TimePruned != nil {
		s += ", pruned " + r.TimePruned.UTC().Format(time.RFC3339) + " by " + r.PrunedBy
	}
	return s
}

// advanceFloors applies the lineage's rollback check and raises its floors
// to this upload's versions.
func advanceFloors(ctx context.Context, tx pgx.Tx, in TufRepoInsert) error {
	var f TufVersions
	err := tx.QueryRow(ctx, `SELECT root_version, timestamp_version, snapshot_version, targets_version
		FROM tuf_trust_root_lineage WHERE root_sha256 = $1`, in.LineageKey).
		Scan(&f.Root, &f.Timestamp, &f.Snapshot, &f.Targets)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return err
	}
	if in.CheckFloor != nil {
		if err := in.CheckFloor(f); err != nil {
			return err
		}
	}
	v := in.Versions
	_, err = tx.Exec(ctx, `INSERT INTO tuf_trust_root_lineage
			(root_sha256, root_version, timestamp_version, snapshot_version, targets_version, time_modified)
		VALUES ($1, $2, $3, $4, $5, now())
		ON CONFLICT (root_sha256) DO UPDATE SET
			root_version = greatest(tuf_trust_root_lineage.root_version, excluded.root_version),
			timestamp_version = greatest(tuf_trust_root_lineage.timestamp_version, excluded.timestamp_version),
			snapshot_version = greatest(tuf_trust_root_lineage.snapshot_version, excluded.snapshot_version),
			targets_version = greatest(tuf_trust_root_lineage.targets_version, excluded.targets_version),
			time_modified = now()`,
		in.LineageKey, v.Root, v.Timestamp, v.Snapshot, v.Targets)
	return err
}

// artifactRow returns the id of the row for a, inserting it if new, and
// refuses a hash that another repo recorded with a different length or
// version.
func artifactRow(ctx context.Context, tx pgx.Tx, systemVersion string, a TufArtifactInsert) (uuid.UUID, error) {
	rows, err := tx.Query(ctx, `SELECT a.id, a.name, a.version, a.kind, a.length,
			coalesce((SELECT min(r.system_version) FROM tuf_repo_artifact ra JOIN tuf_repo r ON r.id = ra.repo_id
				WHERE ra.artifact_id = a.id), '')
		FROM tuf_artifact a WHERE a.sha256 = $1`, a.SHA256)
	if err != nil {
		return uuid.Nil, err
	}
	var found uuid.UUID
	var id uuid.UUID
	var name, version, kind, repo string
	var length int64
	_, err = pgx.ForEachRow(rows, []any{&id, &name, &version, &kind, &length, &repo}, func() error {
		if length != a.Length || version != a.Version {
			return fault.Conflictf(api.CodeArtifactConflict,
				"artifact %s (%s) in %s has sha256 %s, which repo %s recorded as %s version %s of %d bytes; "+
					"the same bytes cannot be two versions", a.Name, a.Kind, systemVersion, short(a.SHA256),
				repo, name, version, length)
		}
		if name == a.Name && kind == a.Kind {
			found = id
		}
		return nil
	})
	if err != nil || found != uuid.Nil {
		return found, err
	}
	tags := a.Tags
	if tags == nil {
		tags = map[string]string{}
	}
	id = uuid.New()
	_, err = tx.Exec(ctx, `INSERT INTO tuf_artifact (id, time_created, name, version, kind, sha256, length, tags)
		VALUES ($1, now(), $2, $3, $4, $5, $6, $7)`, id, a.Name, a.Version, a.Kind, a.SHA256, a.Length, tags)
	return id, err
}

func distinctHashes(arts []TufArtifactInsert) []string {
	set := map[string]bool{}
	var out []string
	for _, a := range arts {
		if !set[a.SHA256] {
			set[a.SHA256] = true
			out = append(out, a.SHA256)
		}
	}
	sort.Strings(out)
	return out
}

func repoHashes(ctx context.Context, tx pgx.Tx, repoID uuid.UUID) ([]string, error) {
	rows, err := tx.Query(ctx, `SELECT DISTINCT a.sha256 FROM tuf_repo_artifact ra
		JOIN tuf_artifact a ON a.id = ra.artifact_id WHERE ra.repo_id = $1`, repoID)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// countNotWanted counts the hashes no live repo (other than except) holds:
// adding them, or dropping them with except, changes the wanted set.
func countNotWanted(ctx context.Context, tx pgx.Tx, hashes []string, except uuid.UUID) (int, error) {
	var wanted int
	err := tx.QueryRow(ctx, `SELECT count(DISTINCT a.sha256) FROM tuf_artifact a
		JOIN tuf_repo_artifact ra ON ra.artifact_id = a.id
		JOIN tuf_repo r ON r.id = ra.repo_id
		WHERE r.time_pruned IS NULL AND r.id <> $2::UUID AND a.sha256 = ANY($1::TEXT[])`, hashes, except).Scan(&wanted)
	return len(hashes) - wanted, err
}

func recordCopies(ctx context.Context, tx pgx.Tx, nexusID uuid.UUID, hashes []string) error {
	// $1 is typed: CockroachDB infers no type for a placeholder that is a
	// bare select-list item.
	_, err := tx.Exec(ctx, `INSERT INTO nexus_artifact_copy (nexus_id, sha256, time_created)
		SELECT $1::UUID, h, now() FROM unnest($2::TEXT[]) AS h
		ON CONFLICT (nexus_id, sha256) DO NOTHING`, nexusID, hashes)
	return err
}

// lockGeneration reads the generation and locks its row until the
// transaction ends. Every writer of the wanted set reads, then
// compares-and-swaps, this one row; without the lock concurrent writers
// all proceed and all but one fail at the end (a serialization failure on
// PostgreSQL, a retry error at commit on CockroachDB) and redo their work.
// With it the second waits for the first and, on CockroachDB, reads its
// result without a retry. Taken first in each writer, so that they all lock
// in one order.
func lockGeneration(ctx context.Context, tx pgx.Tx) (int64, error) {
	var g int64
	err := tx.QueryRow(ctx, `SELECT generation FROM tuf_generation WHERE singleton FOR UPDATE`).Scan(&g)
	return g, err
}

// bumpGeneration moves the generation from expect to expect+1, or fails
// with ErrGenerationMoved.
func bumpGeneration(ctx context.Context, tx pgx.Tx, expect int64) (int64, error) {
	var g int64
	err := tx.QueryRow(ctx, `UPDATE tuf_generation SET generation = generation + 1, time_modified = now()
		WHERE singleton AND generation = $1 RETURNING generation`, expect).Scan(&g)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, fmt.Errorf("%w: expected %d", ErrGenerationMoved, expect)
	}
	return g, err
}

// TufGenerationFastForward moves the wanted-set generation to seen+1 when
// the database's own generation, read in the same transaction, is below
// seen, the highest generation a sled reported. That happens only when the
// database lost changes its sleds saw (restored from a backup, or a dev
// rack's database recreated under kept sleds): without it every sled
// would refuse every config as older than its own, forever. The wanted
// set itself is left as the database has it; sleds converge to it at the
// new generation. When the database is not behind it changes nothing and
// returns ErrGenerationNotBehind.
func (d *Datastore) TufGenerationFastForward(ctx context.Context, seen int64) (before, after int64, err error) {
	err = d.InTx(ctx, "tuf_generation_fast_forward", func(ctx context.Context, tx pgx.Tx) error {
		// Locked like every other writer of the generation takes it: the
		// row first, until the transaction ends.
		cur, err := lockGeneration(ctx, tx)
		if err != nil {
			return err
		}
		if cur >= seen {
			return fmt.Errorf("%w: the database holds generation %d, the sled %d", ErrGenerationNotBehind, cur, seen)
		}
		before, after = cur, seen+1
		_, err = tx.Exec(ctx, `UPDATE tuf_generation SET generation = $2, time_modified = now()
			WHERE singleton AND generation = $1`, cur, after)
		return err
	}, AppliedIf(func(ctx context.Context, tx pgx.Tx) (bool, error) {
		// A second run would find the database no longer behind and
		// refuse, hiding that the first one moved it: the attempt
		// committed when the generation has reached what it set.
		var g int64
		err := tx.QueryRow(ctx, `SELECT generation FROM tuf_generation WHERE singleton`).Scan(&g)
		return err == nil && g >= after, err
	}))
	return before, after, err
}

// TufRepoKnown reports whether an archive with this hash is recorded.
func (d *Datastore) TufRepoKnown(ctx context.Context, sha256 string) (bool, error) {
	var known bool
	err := d.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM tuf_repo WHERE sha256 = $1)`, sha256).Scan(&known)
	return known, classify(err)
}

// TufGeneration returns the current generation of the wanted artifact set.
func (d *Datastore) TufGeneration(ctx context.Context) (int64, error) {
	var g int64
	err := d.pool.QueryRow(ctx, `SELECT generation FROM tuf_generation WHERE singleton`).Scan(&g)
	return g, classify(err)
}

func short(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}

// RepoCursor is a position in the newest-first repo listing.
type RepoCursor struct {
	TimeCreated time.Time
	ID          uuid.UUID
}

// String encodes the cursor as a page token.
func (c RepoCursor) String() string {
	return strconv.FormatInt(c.TimeCreated.UnixMicro(), 10) + "_" + c.ID.String()
}

// ParseRepoCursor decodes a page token made by RepoCursor.String.
func ParseRepoCursor(s string) (RepoCursor, error) {
	ts, id, ok := strings.Cut(s, "_")
	if !ok {
		return RepoCursor{}, errors.New("malformed page token")
	}
	us, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return RepoCursor{}, errors.New("malformed page token")
	}
	uid, err := uuid.Parse(id)
	if err != nil {
		return RepoCursor{}, errors.New("malformed page token")
	}
	return RepoCursor{TimeCreated: time.UnixMicro(us), ID: uid}, nil
}

// TufRepoList returns up to limit repos, newest first, after the cursor
// (nil for the first page). Pruned repos are included only when asked.
func (d *Datastore) TufRepoList(ctx context.Context, includePruned bool, after *RepoCursor, limit int) ([]model.TufRepo, error) {
	q := `SELECT ` + repoColumns + ` FROM tuf_repo r WHERE ($1::BOOL OR r.time_pruned IS NULL)`
	args := []any{includePruned, limit}
	if after != nil {
		q += ` AND (r.time_created, r.id) < ($3::TIMESTAMPTZ, $4::UUID)`
		args = append(args, after.TimeCreated, after.ID)
	}
	q += ` ORDER BY r.time_created DESC, r.id DESC LIMIT $2`
	rows, err := d.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, classify(err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (model.TufRepo, error) { return scanRepo(r) })
	return out, classify(err)
}

// TufRepoGet returns a repo (pruned or not) with its artifacts.
func (d *Datastore) TufRepoGet(ctx context.Context, systemVersion string) (model.TufRepoDetail, error) {
	var out model.TufRepoDetail
	var err error
	out.Repo, err = scanRepo(d.pool.QueryRow(ctx, `SELECT `+repoColumns+` FROM tuf_repo r WHERE r.system_version = $1`,
		systemVersion))
	if errors.Is(err, pgx.ErrNoRows) {
		return out, fmt.Errorf("%w: no repo with system version %q", ErrNotFound, systemVersion)
	}
	if err != nil {
		return out, classify(err)
	}
	rows, err := d.pool.Query(ctx, `SELECT a.id, a.name, a.version, a.kind, a.sha256, a.length, a.tags, ra.target_name,
			(SELECT count(*) FROM nexus_artifact_copy c WHERE c.sha256 = a.sha256)
		FROM tuf_repo_artifact ra JOIN tuf_artifact a ON a.id = ra.artifact_id
		WHERE ra.repo_id = $1 ORDER BY a.kind, a.name, a.version, a.id`, out.Repo.ID)
	if err != nil {
		return out, classify(err)
	}
	out.Artifacts, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (model.TufRepoArtifact, error) {
		var a model.TufRepoArtifact
		var copies int64
		err := r.Scan(&a.ID, &a.Name, &a.Version, &a.Kind, &a.SHA256, &a.Length, &a.Tags, &a.TargetName, &copies)
		a.NexusCopies = int(copies)
		return a, err
	})
	if err != nil {
		return out, classify(err)
	}
	return out, classify(repoParts(ctx, d.pool, &out))
}

// repoParts fills in which composite of the repo each part came from.
func repoParts(ctx context.Context, q interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}, d *model.TufRepoDetail) error {
	rows, err := q.Query(ctx, `SELECT p.part_id, p.composite_id, p.path FROM tuf_artifact_part p
		JOIN tuf_repo_artifact rc ON rc.artifact_id = p.composite_id AND rc.repo_id = $1
		JOIN tuf_repo_artifact rp ON rp.artifact_id = p.part_id AND rp.repo_id = $1
		ORDER BY p.part_id, p.path, p.composite_id`, d.Repo.ID)
	if err != nil {
		return err
	}
	byID := map[uuid.UUID]int{}
	for i, a := range d.Artifacts {
		byID[a.ID] = i
	}
	var part, comp uuid.UUID
	var path string
	_, err = pgx.ForEachRow(rows, []any{&part, &comp, &path}, func() error {
		pi, ok1 := byID[part]
		ci, ok2 := byID[comp]
		if !ok1 || !ok2 || d.Artifacts[pi].PartOf != nil {
			return nil
		}
		c := d.Artifacts[ci]
		d.Artifacts[pi].PartOf = &model.ArtifactPartOf{ID: c.ID, Kind: c.Kind, Name: c.Name, Version: c.Version,
			SHA256: c.SHA256, Path: path}
		return nil
	})
	return err
}

// TufRepoPrune marks a repo pruned and bumps the generation when that
// shrinks the wanted artifact set. With expect set, it fails with
// ErrGenerationMoved unless the generation is still *expect (the pruner's
// fence). Pruning a pruned repo changes nothing.
func (d *Datastore) TufRepoPrune(ctx context.Context, systemVersion, by string, expect *int64) (model.PruneResult, error) {
	var out model.PruneResult
	err := d.InTx(ctx, "tuf_repo_prune", func(ctx context.Context, tx pgx.Tx) error {
		out = model.PruneResult{}
		var err error
		if out.Generation, err = lockGeneration(ctx, tx); err != nil {
			return err
		}
		repo, err := scanRepo(tx.QueryRow(ctx, `SELECT `+repoColumns+` FROM tuf_repo r WHERE r.system_version = $1`,
			systemVersion))
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("%w: no repo with system version %q", ErrNotFound, systemVersion)
		}
		if err != nil {
			return err
		}
		if expect != nil && *expect != out.Generation {
			return fmt.Errorf("%w: planned at %d, now %d", ErrGenerationMoved, *expect, out.Generation)
		}
		if repo.TimePruned != nil {
			out.Repo, out.AlreadyPruned = repo, true
			return nil
		}
		hashes, err := repoHashes(ctx, tx, repo.ID)
		if err != nil {
			return err
		}
		gone, err := countNotWanted(ctx, tx, hashes, repo.ID)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE tuf_repo SET time_pruned = now(), pruned_by = $2 WHERE id = $1`,
			repo.ID, by); err != nil {
			return err
		}
		if gone > 0 {
			if out.Generation, err = bumpGeneration(ctx, tx, out.Generation); err != nil {
				return err
			}
		}
		out.Repo, err = scanRepo(tx.QueryRow(ctx, `SELECT `+repoColumns+` FROM tuf_repo r WHERE r.id = $1`, repo.ID))
		return err
	}, AppliedIf(func(ctx context.Context, tx pgx.Tx) (bool, error) {
		// Run again after it committed, a prune would report "already
		// pruned" and lose its generation bump.
		if out.AlreadyPruned {
			return true, nil
		}
		return exists(ctx, tx, `SELECT EXISTS (SELECT 1 FROM tuf_repo WHERE id = $1::UUID AND time_pruned IS NOT NULL)`,
			out.Repo.ID)
	}))
	return out, err
}

// TufRepoSetKept marks a repo kept (or not) by the operator.
func (d *Datastore) TufRepoSetKept(ctx context.Context, systemVersion string, kept bool) (model.TufRepo, error) {
	var r model.TufRepo
	err := d.InTx(ctx, "tuf_repo_set_kept", func(ctx context.Context, tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE tuf_repo SET kept = $2 WHERE system_version = $1`, systemVersion, kept)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("%w: no repo with system version %q", ErrNotFound, systemVersion)
		}
		r, err = scanRepo(tx.QueryRow(ctx, `SELECT `+repoColumns+` FROM tuf_repo r WHERE r.system_version = $1`, systemVersion))
		return err
	}, Idempotent) // it sets an absolute value
	return r, err
}

// TufArtifactList returns up to limit artifacts with ids after `after`, in
// id order, each with the system versions of the repos carrying it.
func (d *Datastore) TufArtifactList(ctx context.Context, after uuid.UUID, limit int) ([]model.ArtifactListItem, error) {
	rows, err := d.pool.Query(ctx, `SELECT a.id, a.name, a.version, a.kind, a.sha256, a.length, a.tags,
			coalesce((SELECT array_agg(r.system_version ORDER BY r.system_version) FROM tuf_repo_artifact ra
				JOIN tuf_repo r ON r.id = ra.repo_id WHERE ra.artifact_id = a.id), ARRAY[]::TEXT[]),
			EXISTS (SELECT 1 FROM tuf_artifact a2 JOIN tuf_repo_artifact ra ON ra.artifact_id = a2.id
				JOIN tuf_repo r ON r.id = ra.repo_id WHERE a2.sha256 = a.sha256 AND r.time_pruned IS NULL)
		FROM tuf_artifact a WHERE a.id > $1 ORDER BY a.id LIMIT $2`, after, limit)
	if err != nil {
		return nil, classify(err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (model.ArtifactListItem, error) {
		var a model.ArtifactListItem
		err := r.Scan(&a.ID, &a.Name, &a.Version, &a.Kind, &a.SHA256, &a.Length, &a.Tags, &a.SystemVersions, &a.WantedOnSleds)
		return a, err
	})
	return out, classify(err)
}

// NexusArtifactCopies returns the hashes a Nexus instance is recorded as
// holding locally.
func (d *Datastore) NexusArtifactCopies(ctx context.Context, nexusID uuid.UUID) (map[string]bool, error) {
	rows, err := d.pool.Query(ctx, `SELECT sha256 FROM nexus_artifact_copy WHERE nexus_id = $1`, nexusID)
	if err != nil {
		return nil, classify(err)
	}
	hashes, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, classify(err)
	}
	out := make(map[string]bool, len(hashes))
	for _, h := range hashes {
		out[h] = true
	}
	return out, nil
}

// TufReposLive returns every repo not pruned, newest first: what the
// pruner chooses from.
func (d *Datastore) TufReposLive(ctx context.Context) ([]model.TufRepo, error) {
	rows, err := d.pool.Query(ctx, `SELECT `+repoColumns+` FROM tuf_repo r WHERE r.time_pruned IS NULL
		ORDER BY r.time_created DESC, r.id DESC`)
	if err != nil {
		return nil, classify(err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (model.TufRepo, error) { return scanRepo(r) })
	return out, classify(err)
}

// TufArtifactLabels returns a label for each of hashes that is recorded,
// in one query.
func (d *Datastore) TufArtifactLabels(ctx context.Context, hashes []string) (map[string]model.ArtifactLabel, error) {
	out := make(map[string]model.ArtifactLabel, len(hashes))
	if len(hashes) == 0 {
		return out, nil
	}
	rows, err := d.pool.Query(ctx, `SELECT a.sha256, min(a.name), min(a.version), min(a.kind), count(DISTINCT a.id),
			coalesce(array_agg(DISTINCT r.system_version) FILTER (WHERE r.time_pruned IS NULL), ARRAY[]::TEXT[])
		FROM tuf_artifact a
		LEFT JOIN tuf_repo_artifact ra ON ra.artifact_id = a.id
		LEFT JOIN tuf_repo r ON r.id = ra.repo_id
		WHERE a.sha256 = ANY($1::TEXT[])
		GROUP BY a.sha256`, hashes)
	if err != nil {
		return nil, classify(err)
	}
	var sha string
	var l model.ArtifactLabel
	var names int64
	_, err = pgx.ForEachRow(rows, []any{&sha, &l.Name, &l.Version, &l.Kind, &names, &l.SystemVersions}, func() error {
		l.Names = int(names)
		sort.Strings(l.SystemVersions)
		out[sha] = l
		l = model.ArtifactLabel{}
		return nil
	})
	return out, classify(err)
}

// TufRepoHashes returns the distinct artifact hashes of each of the repos,
// in one query.
func (d *Datastore) TufRepoHashes(ctx context.Context, repoIDs []uuid.UUID) (map[uuid.UUID][]string, error) {
	out := make(map[uuid.UUID][]string, len(repoIDs))
	if len(repoIDs) == 0 {
		return out, nil
	}
	rows, err := d.pool.Query(ctx, `SELECT DISTINCT ra.repo_id, a.sha256 FROM tuf_repo_artifact ra
		JOIN tuf_artifact a ON a.id = ra.artifact_id WHERE ra.repo_id = ANY($1::UUID[]) ORDER BY ra.repo_id, a.sha256`, repoIDs)
	if err != nil {
		return nil, classify(err)
	}
	var id uuid.UUID
	var sha string
	_, err = pgx.ForEachRow(rows, []any{&id, &sha}, func() error {
		out[id] = append(out[id], sha)
		return nil
	})
	return out, classify(err)
}

// TufRepoStateCounts counts repos by state, a pruned repo as "pruned"
// whatever its recorded replication state.
func (d *Datastore) TufRepoStateCounts(ctx context.Context) (map[string]int, error) {
	rows, err := d.pool.Query(ctx, `SELECT CASE WHEN time_pruned IS NOT NULL THEN 'pruned' ELSE state::TEXT END, count(*)
		FROM tuf_repo GROUP BY 1`)
	if err != nil {
		return nil, classify(err)
	}
	out := map[string]int{}
	var state string
	var n int64
	_, err = pgx.ForEachRow(rows, []any{&state, &n}, func() error {
		out[state] = int(n)
		return nil
	})
	return out, classify(err)
}
