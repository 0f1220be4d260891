package app

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"time"
	"unicode"

	"github.com/google/uuid"
	"github.com/rs/zerolog"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/internal/fault"
	"github.com/rackplane/rackplane/internal/logging"
	"github.com/rackplane/rackplane/internal/reqid"
	"github.com/rackplane/rackplane/nexus/datastore"
	"github.com/rackplane/rackplane/nexus/model"
	"github.com/rackplane/rackplane/nexus/tufrepo"
)

// copyBufferSize is the buffer uploads are streamed and copied through:
// large enough to keep syscalls few, small enough that memory stays flat.
const copyBufferSize = 1 << 20

// Upload is one repository archive arriving.
type Upload struct {
	// FileName is the archive's file name, kept for the record.
	FileName string
	// Body is the archive's bytes; it is read once, to its end.
	Body io.Reader
	// ContentLength is the declared length, or -1 when unknown: an
	// archive declared larger than the limit is refused before any byte
	// is read.
	ContentLength int64
}

// CheckFileName checks an upload's file name.
func CheckFileName(name string) error {
	if name == "" {
		return fault.Invalidf(api.CodeMissingFileName,
			"query parameter file_name is required: the archive's file name, kept for the record")
	}
	if len(name) > 255 {
		return fault.Invalidf(api.CodeInvalidParameter, "file_name must be at most 255 bytes")
	}
	for _, c := range name {
		if !unicode.IsPrint(c) {
			return fault.Invalidf(api.CodeInvalidParameter, "file_name must be printable, got %q", name)
		}
	}
	return nil
}

func (a *App) tooLarge() error {
	return fault.New(fault.TooLarge, api.CodeBodyTooLarge,
		"the upload is larger than this Nexus accepts (%d bytes; see --upload-max-bytes)", a.cfg.UploadMaxBytes)
}

// UploadRepo receives, verifies and records a TUF repository archive.
//
// The body is streamed to a temp file in the depot directory while it is
// hashed; the archive is then verified from that file, each artifact's
// bytes checked as they are copied into the depot; only then are rows
// written, in one transaction. Every failure removes the temp file and any
// artifact file this upload created.
//
// While it runs, Uploads shows it (its phase and the bytes received); the
// metrics count its bytes, its outcome and its duration.
func (a *App) UploadRepo(ctx context.Context, up Upload) (model.UploadResult, error) {
	var res model.UploadResult
	start := a.cfg.Now()
	a.metrics.inProgress.Inc()
	defer a.metrics.inProgress.Dec()
	err := a.audited(ctx, model.RoleAdmin, "repo.upload", "file "+up.FileName, func(ctx context.Context) error {
		tr := a.uploads.start(ctx, up, a.cfg.Now, a.metrics.bytes)
		defer a.uploads.done(tr)
		up.Body = tr.body(up.Body)
		var err error
		res, err = a.uploadRepo(ctx, up, tr)
		return err
	})
	outcome := uploadOutcome(res, err)
	a.metrics.total.WithLabelValues(outcome).Inc()
	a.metrics.duration.WithLabelValues(outcome).Observe(a.cfg.Now().Sub(start).Seconds())
	return res, err
}

func (a *App) uploadRepo(ctx context.Context, up Upload, tr *tracked) (model.UploadResult, error) {
	var res model.UploadResult
	log := zerolog.Ctx(ctx)
	if err := CheckFileName(up.FileName); err != nil {
		return res, err
	}
	if up.ContentLength > a.cfg.UploadMaxBytes {
		return res, a.tooLarge()
	}
	roots, err := a.ds.TrustRootsLive(ctx)
	if err != nil {
		return res, translate(err)
	}
	if len(roots) == 0 {
		return res, fault.Invalidf(api.CodeNoTrustRoots,
			"no trust roots are registered; add the release's root.json with `rackctl trust-root add FILE` first")
	}

	leave, err := a.gate.enter()
	if err != nil {
		return res, err
	}
	defer leave()
	resv, err := a.admitUpload(up.ContentLength)
	if err != nil {
		return res, err
	}
	defer resv.release()

	start := time.Now()
	tmp, err := a.depot.CreateTemp("upload")
	if err != nil {
		return res, fmt.Errorf("create upload file: %w", err)
	}
	defer func() {
		tmp.Close()
		os.Remove(tmp.Name())
	}()
	buf := make([]byte, copyBufferSize)
	h := sha256.New()
	// One byte past the limit tells "exactly at the limit" from "over";
	// no byte reaches the temp file before the budget grants it.
	body := &budgetedReader{r: io.LimitReader(up.Body, a.cfg.UploadMaxBytes+1), res: resv}
	// A body that does not start as a repository archive is refused
	// after its first few KiB, not after all of it is on disk.
	first := buf[:tufrepo.PrefixLen]
	n, err := io.ReadFull(body, first)
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF):
		err = nil
	case err != nil:
		return res, a.bodyError(ctx, err, int64(n))
	}
	if perr := tufrepo.CheckPrefix(first[:n]); perr != nil {
		return res, perr
	}
	if _, err := tmp.Write(first[:n]); err != nil {
		return res, diskError(err, "write upload file")
	}
	h.Write(first[:n])
	rest, err := io.CopyBuffer(io.MultiWriter(writeErrors{tmp}, h), body, buf)
	size := int64(n) + rest
	if err != nil {
		var werr *writeError
		if errors.As(err, &werr) {
			return res, diskError(werr.err, "write upload file")
		}
		return res, a.bodyError(ctx, err, size)
	}
	if size > a.cfg.UploadMaxBytes {
		return res, a.tooLarge()
	}
	archiveSHA := hex.EncodeToString(h.Sum(nil))
	received := time.Since(start)

	tr.phase(model.UploadWaiting)
	err = a.depot.Exclusive(func() error {
		tr.phase(model.UploadVerifying)
		res, err = a.verifyAndRecord(ctx, tmp, size, archiveSHA, up.FileName, roots, buf, tr)
		return err
	})
	if err != nil {
		return res, translate(err)
	}
	res.Message = uploadMessage(res)
	log.Info().Str("system_version", res.Repo.SystemVersion).Str("sha256", archiveSHA).Int64("bytes", size).
		Str("outcome", res.Status).Int64("generation", res.Generation).Float64("receive_ms", logging.Millis(received)).
		Float64("duration_ms", logging.Millis(time.Since(start))).Msg("tuf repo uploaded")
	a.notify(ReposChanged, reqid.From(ctx))
	return res, nil
}

// verifyAndRecord runs inside the depot's exclusive section.
func (a *App) verifyAndRecord(ctx context.Context, archive *os.File, size int64, archiveSHA, fileName string,
	roots []datastore.TrustRootRow, buf []byte, tr *tracked) (model.UploadResult, error) {
	var res model.UploadResult
	// A re-upload of a recorded archive is not held to the rollback
	// floors: it is the same release, verified before.
	known, err := a.ds.TufRepoKnown(ctx, archiveSHA)
	if err != nil {
		return res, err
	}
	floors := map[uuid.UUID]tufrepo.Floor{}
	trust := make([]tufrepo.TrustRoot, len(roots))
	lineage := map[uuid.UUID]string{}
	byLineage, err := a.ds.TufFloors(ctx)
	if err != nil {
		return res, err
	}
	for i, tr := range roots {
		trust[i] = tufrepo.TrustRoot{ID: tr.ID, JSON: tr.JSON}
		lineage[tr.ID] = tr.SHA256
		if f, ok := byLineage[tr.SHA256]; ok && !known {
			floors[tr.ID] = tufrepo.Floor(f)
		}
	}
	arch, err := tufrepo.Open(archive, size, tufrepo.Options{MaxExpansion: a.cfg.TufMaxExpansion,
		EnforceExpiry: a.cfg.TufEnforceExpiry, Now: a.cfg.Now()})
	if err != nil {
		return res, err
	}
	v, err := arch.Verify(trust, floors)
	if err != nil {
		return res, err
	}
	tr.systemVersion(v.SystemVersion)

	// Copy every artifact into the depot, checking its bytes; ones the
	// depot already holds are still read and checked, so every byte of
	// the archive that names an artifact is verified. The batch flushes
	// each artifact to disk while the next one is read.
	batch := a.depot.NewBatch()
	var created []string
	ok := false
	defer func() {
		if !ok {
			if created == nil {
				batch.Abort()
				return
			}
			for _, sha := range created {
				if rerr := a.depot.Remove(sha); rerr != nil {
					a.log.Error().Err(rerr).Str("sha256", sha).Msg("could not remove artifact of a failed upload")
				}
			}
		}
	}()
	for _, target := range v.Targets() {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		sha := v.TargetSHA256(target)
		have, err := a.depot.Has(sha, v.TargetLength(target))
		if err != nil {
			return res, err
		}
		if have {
			if err := arch.CopyTarget(v, target, io.Discard, buf); err != nil {
				return res, err
			}
			continue
		}
		if err := batch.Put(sha, func(w io.Writer) error { return arch.CopyTarget(v, target, w, buf) }); err != nil {
			return res, err
		}
	}
	stored, err := batch.Wait()
	created = append([]string{}, stored...)
	if err != nil {
		return res, err
	}

	in := datastore.TufRepoInsert{
		NexusID: a.cfg.NexusID, SystemVersion: v.SystemVersion, FileName: fileName, SHA256: archiveSHA,
		ValidUntil: v.ValidUntil, TrustRootID: v.TrustRootID, Versions: datastore.TufVersions(v.Versions),
		TargetsSHA256: v.TargetsSHA256, ManifestFormat: v.ManifestFormat, ManifestMetadata: v.Metadata,
		LineageKey: lineage[v.TrustRootID],
		CheckFloor: func(f datastore.TufVersions) error { return tufrepo.CheckFloor(v.Versions, tufrepo.Floor(f)) },
	}
	for _, art := range v.Artifacts {
		in.Artifacts = append(in.Artifacts, datastore.TufArtifactInsert{Name: art.Name, Version: art.Version,
			Kind: art.Kind, TargetName: art.TargetName, SHA256: art.SHA256, Length: art.Length, Tags: art.Tags})
	}
	in.AuditDetail = fmt.Sprintf("file %s, sha256 %s, %d bytes", fileName, archiveSHA, size)
	datastore.UpdateAudit(ctx, func(e *model.AuditEntry) { e.Target = "repo " + v.SystemVersion })
	tr.phase(model.UploadRecording)
	res, err = a.ds.TufRepoInsert(ctx, in)
	if err != nil {
		return res, err
	}
	ok = true
	return res, nil
}

// uploadMessage says what an upload did, in an operator's terms.
func uploadMessage(res model.UploadResult) string {
	v := res.Repo.SystemVersion
	switch res.Status {
	case model.UploadAlreadyExists:
		return fmt.Sprintf("system version %s was already uploaded from this archive; nothing changed", v)
	case model.UploadRestored:
		m := fmt.Sprintf("system version %s was pruned", v)
		if r := res.Restored; r != nil && r.TimePruned != nil {
			m += fmt.Sprintf(" (by %s, %s)", r.PrunedBy, r.TimePruned.UTC().Format(time.RFC3339))
		}
		return m + fmt.Sprintf(" and is restored from the same archive: its artifacts are wanted on every sled again "+
			"(generation %d). It is marked kept, so the pruner leaves it alone; `rackctl repo unkeep %s` hands it "+
			"back to the pruner", res.Generation, v)
	case model.UploadReplaced:
		m := fmt.Sprintf("system version %s uploaded (%d artifacts, generation %d), replacing its pruned record", v,
			res.Repo.ArtifactCount, res.Generation)
		if r := res.Replaced; r != nil {
			m += fmt.Sprintf(" (archive sha256 %s, uploaded %s)", shortHash(r.SHA256), r.TimeCreated.UTC().Format(time.RFC3339))
		}
		return m + "; the audit log keeps what that record was"
	}
	return fmt.Sprintf("system version %s uploaded (%d artifacts, generation %d); replication to the sleds has started",
		v, res.Repo.ArtifactCount, res.Generation)
}

func shortHash(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}
