package nexus

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"time"
	"unicode"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"
	"github.com/rs/zerolog"
	"github.com/theupdateframework/go-tuf/v2/metadata/trustedmetadata"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/bgtasks/tufreplication"
	"github.com/rackplane/rackplane/internal/httpx"
	"github.com/rackplane/rackplane/internal/reqid"
	"github.com/rackplane/rackplane/nexus/datastore"
	"github.com/rackplane/rackplane/nexus/depot"
	"github.com/rackplane/rackplane/nexus/tufrepo"
)

// ReplicationTask is the background task that spreads artifacts to sleds;
// uploads and prunes change its inputs.
const ReplicationTask = tufreplication.Name

// maxTrustRootBytes bounds a root.json body.
const maxTrustRootBytes = 1 << 20

// copyBufferSize is the buffer uploads are streamed and copied through:
// large enough to keep syscalls few, small enough that memory stays flat.
const copyBufferSize = 1 << 20

func (s *Server) mountUpdate(r chi.Router) {
	r.Post("/v1/system/update/trust-roots", handlers.H(s.trustRootCreate))
	r.Get("/v1/system/update/trust-roots", handlers.H(s.trustRootList))
	r.Get("/v1/system/update/trust-roots/{id}", handlers.H(s.trustRootGet))
	r.Delete("/v1/system/update/trust-roots/{id}", handlers.H(s.trustRootDelete))
	r.Put("/v1/system/update/repositories", handlers.H(s.repoUpload))
	r.Get("/v1/system/update/repositories", handlers.H(s.repoList))
	r.Get("/v1/system/update/repositories/{system_version}", handlers.H(s.repoGet))
	r.Delete("/v1/system/update/repositories/{system_version}", handlers.H(s.repoPrune))
	r.Put("/v1/system/update/repositories/{system_version}/kept", handlers.H(s.repoSetKept))
	r.Get("/v1/system/update/artifacts", handlers.H(s.artifactList))
}

// openDepot opens <data-dir>/depot and makes it agree with the database:
// temp files are removed, and so is any artifact this instance is not
// recorded as holding (a crash between copying an upload's artifacts and
// recording them leaves such files).
func (s *Server) openDepot(ctx context.Context) error {
	d, temps, err := depot.Open(filepath.Join(s.cfg.DataDir, "depot"))
	if err != nil {
		return fmt.Errorf("nexus: %w", err)
	}
	held, err := s.ds.NexusArtifactCopies(ctx, s.cfg.ID)
	if err != nil {
		return fmt.Errorf("nexus: read local artifact copies: %w", err)
	}
	stray, err := d.RemoveExcept(held)
	if err != nil {
		return fmt.Errorf("nexus: %w", err)
	}
	if temps > 0 || len(stray) > 0 {
		s.log.Info().Int("temp_files", temps).Strs("unrecorded", stray).Str("dir", d.Dir()).
			Msg("removed depot files left by an interrupted upload")
	}
	s.depot = d
	return nil
}

// Depot exposes the local artifact depot (tests, and a later replication
// task that serves from it).
func (s *Server) Depot() *depot.Depot { return s.depot }

func (s *Server) trustRootCreate(w http.ResponseWriter, r *http.Request) error {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxTrustRootBytes))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return httpx.Errorf(http.StatusRequestEntityTooLarge, api.CodeBodyTooLarge,
			"a root.json larger than %d bytes is not a TUF root", maxTrustRootBytes)
	case err != nil:
		return httpx.BadRequest(api.CodeInvalidBody, "the request body could not be read: %v", err)
	}
	var te *tufrepo.Error
	if errors.As(tufrepo.CheckTrustRoot(body), &te) {
		return &httpx.Error{Status: http.StatusBadRequest, Code: te.Code, Message: te.Message}
	}
	tm, err := trustedmetadata.New(body)
	if err != nil {
		return httpx.BadRequest(api.CodeInvalidTrustRoot,
			"the body is not a TUF root.json signed by a threshold of its own root keys: %v", err)
	}
	sum := sha256.Sum256(body)
	root, created, err := s.ds.TrustRootCreate(r.Context(), api.TrustRoot{ID: uuid.New(), SHA256: hex.EncodeToString(sum[:]),
		Version: tm.Root.Signed.Version, Expires: tm.Root.Signed.Expires, Root: body})
	if err != nil {
		return err
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
		zerolog.Ctx(r.Context()).Info().Str("trust_root_id", root.ID.String()).Str("sha256", root.SHA256).
			Int64("root_version", root.Version).Msg("trust root registered")
	}
	httpx.WriteJSON(w, status, root)
	return nil
}

func (s *Server) trustRootList(w http.ResponseWriter, r *http.Request) error {
	return listByID(w, r, s.ds.TrustRootList, func(t api.TrustRoot) uuid.UUID { return t.ID })
}

func (s *Server) trustRootGet(w http.ResponseWriter, r *http.Request) error {
	id, err := httpx.PathUUID(r, "id")
	if err != nil {
		return err
	}
	root, err := s.ds.TrustRootGet(r.Context(), id)
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, root)
	return nil
}

func (s *Server) trustRootDelete(w http.ResponseWriter, r *http.Request) error {
	id, err := httpx.PathUUID(r, "id")
	if err != nil {
		return err
	}
	if err := s.ds.TrustRootDelete(r.Context(), id); err != nil {
		return err
	}
	zerolog.Ctx(r.Context()).Info().Str("trust_root_id", id.String()).Msg("trust root deleted")
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func checkFileName(name string) error {
	if name == "" {
		return httpx.BadRequest(api.CodeMissingFileName,
			"query parameter file_name is required: the archive's file name, kept for the record")
	}
	if len(name) > 255 {
		return httpx.BadRequest(api.CodeInvalidParameter, "file_name must be at most 255 bytes")
	}
	for _, c := range name {
		if !unicode.IsPrint(c) {
			return httpx.BadRequest(api.CodeInvalidParameter, "file_name must be printable, got %q", name)
		}
	}
	return nil
}

func (s *Server) tooLarge() error {
	return httpx.Errorf(http.StatusRequestEntityTooLarge, api.CodeBodyTooLarge,
		"the upload is larger than this Nexus accepts (%d bytes; see --upload-max-bytes)", s.cfg.UploadMaxBytes)
}

// repoUpload receives, verifies and records a TUF repository archive.
//
// The body is streamed to a temp file in the depot directory while it is
// hashed; the archive is then verified from that file, each artifact's
// bytes checked as they are copied into the depot; only then are rows
// written, in one transaction. Every failure removes the temp file and any
// artifact file this upload created.
func (s *Server) repoUpload(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	log := zerolog.Ctx(ctx)
	fileName := r.URL.Query().Get("file_name")
	if err := checkFileName(fileName); err != nil {
		return err
	}
	if r.ContentLength > s.cfg.UploadMaxBytes {
		return s.tooLarge()
	}
	roots, err := s.ds.TrustRootsLive(ctx)
	if err != nil {
		return err
	}
	if len(roots) == 0 {
		return httpx.BadRequest(api.CodeNoTrustRoots,
			"no trust roots are registered; add the release's root.json with `rackctl trust-root add FILE` first")
	}

	start := time.Now()
	tmp, err := s.depot.CreateTemp("upload")
	if err != nil {
		return fmt.Errorf("create upload file: %w", err)
	}
	defer func() {
		tmp.Close()
		os.Remove(tmp.Name())
	}()
	buf := make([]byte, copyBufferSize)
	h := sha256.New()
	size, err := io.CopyBuffer(io.MultiWriter(tmp, h), http.MaxBytesReader(w, r.Body, s.cfg.UploadMaxBytes), buf)
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return s.tooLarge()
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return httpx.BadRequest(api.CodeInvalidBody, "the upload ended early after %d bytes (%v); send it again", size, err)
	}
	archiveSHA := hex.EncodeToString(h.Sum(nil))
	received := time.Since(start)

	s.uploadMu.Lock()
	defer s.uploadMu.Unlock()
	res, err := s.verifyAndRecord(ctx, tmp, size, archiveSHA, fileName, roots, buf)
	if err != nil {
		var te *tufrepo.Error
		if errors.As(err, &te) {
			return &httpx.Error{Status: http.StatusBadRequest, Code: te.Code, Message: te.Message, Err: te.Err}
		}
		return err
	}
	log.Info().Str("system_version", res.Repo.SystemVersion).Str("sha256", archiveSHA).Int64("bytes", size).
		Str("status", res.Status).Int64("generation", res.Generation).Dur("receive", received).
		Dur("total", time.Since(start)).Msg("tuf repo uploaded")
	s.activateTask(ReplicationTask, reqid.From(ctx))
	httpx.WriteJSON(w, http.StatusOK, api.TufRepoUpload{Repo: res.Repo, Status: res.Status, Generation: res.Generation})
	return nil
}

func (s *Server) verifyAndRecord(ctx context.Context, archive *os.File, size int64, archiveSHA, fileName string,
	roots []datastore.TrustRootRow, buf []byte) (datastore.TufUploadResult, error) {
	var res datastore.TufUploadResult
	// A re-upload of a recorded archive is not held to the rollback
	// floors: it is the same release, verified before.
	known, err := s.ds.TufRepoKnown(ctx, archiveSHA)
	if err != nil {
		return res, err
	}
	floors := map[uuid.UUID]tufrepo.Floor{}
	trust := make([]tufrepo.TrustRoot, len(roots))
	lineage := map[uuid.UUID]string{}
	byLineage, err := s.ds.TufFloors(ctx)
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
	a, err := tufrepo.Open(archive, size, tufrepo.Options{MaxExpansion: s.cfg.TufMaxExpansion,
		EnforceExpiry: s.cfg.TufEnforceExpiry, Now: s.now()})
	if err != nil {
		return res, err
	}
	v, err := a.Verify(trust, floors)
	if err != nil {
		return res, err
	}

	// Copy every artifact into the depot, checking its bytes; ones the
	// depot already holds are still read and checked, so every byte of
	// the archive that names an artifact is verified. The batch flushes
	// each artifact to disk while the next one is read.
	batch := s.depot.NewBatch()
	var created []string
	ok := false
	defer func() {
		if !ok {
			if created == nil {
				batch.Abort()
				return
			}
			for _, sha := range created {
				if rerr := s.depot.Remove(sha); rerr != nil {
					s.log.Error().Err(rerr).Str("sha256", sha).Msg("could not remove artifact of a failed upload")
				}
			}
		}
	}()
	for _, target := range v.Targets() {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		sha := v.TargetSHA256(target)
		have, err := s.depot.Has(sha, v.TargetLength(target))
		if err != nil {
			return res, err
		}
		if have {
			if err := a.CopyTarget(v, target, io.Discard, buf); err != nil {
				return res, err
			}
			continue
		}
		if err := batch.Put(sha, func(w io.Writer) error { return a.CopyTarget(v, target, w, buf) }); err != nil {
			return res, err
		}
	}
	stored, err := batch.Wait()
	created = append([]string{}, stored...)
	if err != nil {
		return res, err
	}

	in := datastore.TufRepoInsert{
		NexusID: s.cfg.ID, SystemVersion: v.SystemVersion, FileName: fileName, SHA256: archiveSHA,
		ValidUntil: v.ValidUntil, TrustRootID: v.TrustRootID, Versions: datastore.TufVersions(v.Versions),
		TargetsSHA256: v.TargetsSHA256, ManifestFormat: v.ManifestFormat, ManifestMetadata: v.Metadata,
		LineageKey: lineage[v.TrustRootID],
		CheckFloor: func(f datastore.TufVersions) error { return tufrepo.CheckFloor(v.Versions, tufrepo.Floor(f)) },
	}
	for _, art := range v.Artifacts {
		in.Artifacts = append(in.Artifacts, datastore.TufArtifactInsert{Name: art.Name, Version: art.Version,
			Kind: art.Kind, TargetName: art.TargetName, SHA256: art.SHA256, Length: art.Length, Tags: art.Tags})
	}
	res, err = s.ds.TufRepoInsert(ctx, in)
	if err != nil {
		return res, err
	}
	ok = true
	return res, nil
}

func (s *Server) repoList(w http.ResponseWriter, r *http.Request) error {
	page, err := httpx.PageParams(r)
	if err != nil {
		return err
	}
	var after *datastore.RepoCursor
	if page.Token != "" {
		c, err := datastore.ParseRepoCursor(page.Token)
		if err != nil {
			return httpx.BadRequest(api.CodeInvalidParameter, "page_token %q is not one this server issued", page.Token)
		}
		after = &c
	}
	includePruned := r.URL.Query().Get("include_pruned") == "true"
	repos, err := s.ds.TufRepoList(r.Context(), includePruned, after, page.Limit+1)
	if err != nil {
		return err
	}
	writePage(w, repos, page.Limit, func(t api.TufRepo) string {
		return datastore.RepoCursor{TimeCreated: t.TimeCreated, ID: t.ID}.String()
	})
	return nil
}

func (s *Server) repoGet(w http.ResponseWriter, r *http.Request) error {
	d, err := s.repoDetail(r.Context(), chi.URLParam(r, "system_version"))
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, d)
	return nil
}

// repoDetail is a repo with its artifacts, each with its replication as
// this Nexus's replication task last observed it.
func (s *Server) repoDetail(ctx context.Context, systemVersion string) (api.TufRepoDetail, error) {
	d, err := s.ds.TufRepoGet(ctx, systemVersion)
	if err != nil {
		return d, err
	}
	m := s.replicationMatrix()
	index := matrixIndex(m)
	for i, a := range d.Artifacts {
		if col, ok := index[a.SHA256]; ok {
			rep := artifactReplication(m, col)
			d.Artifacts[i].Replication = &rep
		}
	}
	return d, nil
}

// replicationMatrix is the replication task's last collected holdings
// (empty before its first run).
func (s *Server) replicationMatrix() tufreplication.Matrix {
	if s.replication == nil {
		return tufreplication.Matrix{}
	}
	return s.replication.Matrix()
}

// matrixIndex maps each artifact hash of m to its index; it is empty
// before the first run.
func matrixIndex(m tufreplication.Matrix) map[string]int {
	if m.Time.IsZero() {
		return nil
	}
	out := make(map[string]int, len(m.Artifacts))
	for i, a := range m.Artifacts {
		out[string(a.SHA256)] = i
	}
	return out
}

// artifactReplication summarises artifact a's column of m. A sled whose
// holdings are unknown (it did not answer at the run's generation) counts
// as in service but not observed.
func artifactReplication(m tufreplication.Matrix, a int) api.ArtifactReplication {
	r := api.ArtifactReplication{TimeObserved: m.Time, Generation: m.Generation, SledsInService: len(m.Sleds)}
	for s := range m.Sleds {
		c := m.Copies[s][a]
		if c < 0 {
			continue
		}
		r.SledsObserved++
		if c > 0 {
			r.SledsHolding++
			if int(c) >= m.Sleds[s].M2Present {
				r.SledsHoldingAllM2s++
			}
		}
		if m.InFlight[s][a] {
			r.SledsCopying++
		}
	}
	return r
}

// repoPrune is the operator's prune: the repo stays recorded (and can be
// brought back by uploading it again) but its artifacts stop being wanted
// on sleds unless another live repo carries them.
func (s *Server) repoPrune(w http.ResponseWriter, r *http.Request) error {
	v := chi.URLParam(r, "system_version")
	res, err := s.ds.TufRepoPrune(r.Context(), v, "operator", nil)
	if err != nil {
		return err
	}
	if !res.AlreadyPruned {
		zerolog.Ctx(r.Context()).Info().Str("system_version", v).Int64("generation", res.Generation).
			Msg("tuf repo pruned by operator")
		s.activateTask(ReplicationTask, reqid.From(r.Context()))
	}
	httpx.WriteJSON(w, http.StatusOK, res)
	return nil
}

func (s *Server) repoSetKept(w http.ResponseWriter, r *http.Request) error {
	var body api.TufRepoKeep
	if err := httpx.DecodeJSON(r, &body, 0); err != nil {
		return err
	}
	repo, err := s.ds.TufRepoSetKept(r.Context(), chi.URLParam(r, "system_version"), body.Kept)
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, repo)
	return nil
}

func (s *Server) artifactList(w http.ResponseWriter, r *http.Request) error {
	return listByID(w, r, s.ds.TufArtifactList, func(a api.ArtifactListItem) uuid.UUID { return a.ID })
}
