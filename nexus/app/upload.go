package app

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
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
// The body is read once (tufrepo.Receive): each entry's bytes are hashed
// as they are written to a temp file in the depot, where they will live,
// and composite artifacts are expanded into their parts on the way. Only
// once the whole archive, its directory and its signed metadata check out
// are the verified files renamed into place, and then the rows written in
// one transaction. Every failure removes every file this upload made.
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
	// One byte past the limit tells "exactly at the limit" from "over";
	// no byte reaches the depot before the budget grants it.
	body := &budgetedReader{r: io.LimitReader(up.Body, a.cfg.UploadMaxBytes+1), res: resv}
	// A body that does not start as a repository archive is refused
	// after its first few KiB, before anything is written.
	first := make([]byte, tufrepo.PrefixLen)
	n, err := io.ReadFull(body, first)
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF):
	case err != nil:
		return res, a.bodyError(ctx, err, int64(n))
	}
	if perr := tufrepo.CheckPrefix(first[:n]); perr != nil {
		return res, perr
	}
	rcv, err := tufrepo.Receive(io.MultiReader(bytes.NewReader(first[:n]), body), a.depot, tufrepo.ReceiveOptions{
		Options: a.tufOptions()})
	if err != nil {
		return res, a.receiveError(ctx, err)
	}
	defer rcv.Close()
	if rcv.Size() > a.cfg.UploadMaxBytes {
		return res, a.tooLarge()
	}
	received := time.Since(start)

	tr.phase(model.UploadWaiting)
	err = a.depot.Exclusive(func() error {
		tr.phase(model.UploadVerifying)
		res, err = a.verifyAndRecord(ctx, rcv, up.FileName, roots, tr)
		return err
	})
	if err != nil {
		return res, translate(err)
	}
	res.Message = uploadMessage(res)
	log.Info().Str("system_version", res.Repo.SystemVersion).Str("sha256", rcv.SHA256()).Int64("bytes", rcv.Size()).
		Str("outcome", res.Status).Int64("generation", res.Generation).Float64("receive_ms", logging.Millis(received)).
		Float64("duration_ms", logging.Millis(time.Since(start))).Msg("tuf repo uploaded")
	a.notify(ReposChanged, reqid.From(ctx))
	return res, nil
}

func (a *App) tufOptions() tufrepo.Options {
	return tufrepo.Options{MaxExpansion: a.cfg.TufMaxExpansion, EnforceExpiry: a.cfg.TufEnforceExpiry, Now: a.cfg.Now()}
}

// receiveError is what a failed receive tells the client.
func (a *App) receiveError(ctx context.Context, err error) error {
	var re *tufrepo.ReadError
	var we *tufrepo.WriteError
	switch {
	case errors.As(err, &we):
		return diskError(we.Err, "write upload file")
	case errors.As(err, &re):
		return a.bodyError(ctx, re.Err, re.N)
	}
	return err
}

// verifyAndRecord runs inside the depot's exclusive section.
func (a *App) verifyAndRecord(ctx context.Context, rcv *tufrepo.Received, fileName string,
	roots []datastore.TrustRootRow, tr *tracked) (model.UploadResult, error) {
	var res model.UploadResult
	// A re-upload of a recorded archive is not held to the rollback
	// floors: it is the same release, verified before.
	known, err := a.ds.TufRepoKnown(ctx, rcv.SHA256())
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
	v, err := rcv.Verify(trust, floors)
	if err != nil {
		var we *tufrepo.WriteError
		if errors.As(err, &we) {
			return res, diskError(we.Err, "write upload file")
		}
		return res, err
	}
	tr.systemVersion(v.SystemVersion)

	// The verified bytes go into place: a temp file is renamed (it was
	// written in the depot's directory, fsynced already), a small one in
	// memory is written. An artifact the depot holds already stays.
	var created []string
	ok := false
	defer func() {
		if ok {
			return
		}
		for _, sha := range created {
			if rerr := a.depot.Remove(sha); rerr != nil {
				a.log.Error().Err(rerr).Str("sha256", sha).Msg("could not remove artifact of a failed upload")
			}
		}
		_ = a.depot.Sync()
	}()
	for _, b := range rcv.Blobs() {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		have, err := a.depot.Has(b.SHA256, b.Length)
		if err != nil {
			return res, err
		}
		if have {
			continue
		}
		if b.Path != "" {
			err = a.depot.Adopt(b.SHA256, b.Path)
		} else {
			err = a.depot.Put(b.SHA256, func(w io.Writer) error {
				_, err := w.Write(b.Data)
				return err
			})
		}
		if err != nil {
			return res, diskError(err, "store artifact")
		}
		created = append(created, b.SHA256)
	}
	if err := a.depot.Sync(); err != nil {
		return res, diskError(err, "store artifacts")
	}

	in := datastore.TufRepoInsert{
		NexusID: a.cfg.NexusID, SystemVersion: v.SystemVersion, FileName: fileName, SHA256: rcv.SHA256(),
		ValidUntil: v.ValidUntil, TrustRootID: v.TrustRootID, Versions: datastore.TufVersions(v.Versions),
		TargetsSHA256: v.TargetsSHA256, ManifestFormat: v.ManifestFormat, ManifestMetadata: v.Metadata,
		LineageKey: lineage[v.TrustRootID],
		CheckFloor: func(f datastore.TufVersions) error { return tufrepo.CheckFloor(v.Versions, tufrepo.Floor(f)) },
	}
	for _, art := range v.Artifacts {
		in.Artifacts = append(in.Artifacts, datastore.TufArtifactInsert{Name: art.Name, Version: art.Version,
			Kind: art.Kind, TargetName: art.TargetName, SHA256: art.SHA256, Length: art.Length, Tags: art.Tags})
	}
	for _, p := range v.Parts {
		in.Parts = append(in.Parts, datastore.TufPartInsert{TufArtifactInsert: datastore.TufArtifactInsert{Name: p.Name,
			Version: p.Version, Kind: p.Kind, TargetName: p.TargetName, SHA256: p.SHA256, Length: p.Length},
			Composite: p.Composite, Path: p.Path})
	}
	in.AuditDetail = fmt.Sprintf("file %s, sha256 %s, %d bytes, %d artifacts", fileName, rcv.SHA256(), rcv.Size(),
		len(v.Artifacts))
	if len(v.Parts) > 0 {
		in.AuditDetail += fmt.Sprintf(" and %d parts read out of its composites", len(v.Parts))
	}
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
