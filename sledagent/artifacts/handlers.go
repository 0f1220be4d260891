package artifacts

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/rs/zerolog"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/api/gen/depot"
	"github.com/rackplane/rackplane/api/gen/sled"
	"github.com/rackplane/rackplane/internal/fault"
	"github.com/rackplane/rackplane/internal/httpx"
)

// bodyIdleTimeout aborts an artifact upload that sends nothing for this
// long, so a stalled client cannot hold a write open forever.
const bodyIdleTimeout = time.Minute

// Agent is what the sled agent serves itself on the store's listeners:
// the operations of the sled API (and the depot's health) that are not
// the artifact store's — health, metrics and the trust-quorum routes.
type Agent interface {
	Healthz(w http.ResponseWriter, r *http.Request)
	Metrics(w http.ResponseWriter, r *http.Request)
	TrustQuorumOps
}

// TrustQuorumOps are the sled API's /trust-quorum/ operations, served by
// the sled agent for its bootstrap agent.
type TrustQuorumOps interface {
	TqStatus(w http.ResponseWriter, r *http.Request)
	TqCoordinatorStatus(w http.ResponseWriter, r *http.Request)
	TqReconfigure(w http.ResponseWriter, r *http.Request)
	TqLrtqUpgrade(w http.ResponseWriter, r *http.Request)
	TqCommit(w http.ResponseWriter, r *http.Request)
	TqPrepareAndCommit(w http.ResponseWriter, r *http.Request)
	TqLoadRackSecret(w http.ResponseWriter, r *http.Request)
	TqProxyStatus(w http.ResponseWriter, r *http.Request, params sled.TqProxyStatusParams)
	TqProxyCommit(w http.ResponseWriter, r *http.Request)
	TqProxyPrepareAndCommit(w http.ResponseWriter, r *http.Request)
	TqProxyStartSledAgent(w http.ResponseWriter, r *http.Request)
}

// paramRules word the generated wrappers' parameter errors as these
// handlers always have.
var paramRules = httpx.ParamRules{
	"generation": {
		Missing: "query parameter generation is required: the artifact config generation this request belongs to",
		Invalid: "query parameter generation must be a non-negative integer, not %q",
	},
}

// sledAPI is the sled API's generated interface: the agent's own
// operations and the store's.
type sledAPI struct {
	Agent
	apiHandlers
}

// depotAPI is the repo depot's generated interface.
type depotAPI struct {
	Agent
	depotHandlers
}

// Mount serves the sled API (api/openapi/sled-agent.json) on r through
// its generated routes: the artifact store's operations here, healthz and
// metrics from agent.
func (s *Store) Mount(r chi.Router, agent Agent) {
	sled.HandlerWithOptions(sledAPI{Agent: agent, apiHandlers: apiHandlers{s}}, sled.ChiServerOptions{
		BaseRouter: r, ErrorHandlerFunc: httpx.ParamErrorHandler(paramRules)})
}

// MountDepot serves the repo depot (api/openapi/repo-depot.json) on r
// through its generated routes, with healthz from agent.
func (s *Store) MountDepot(r chi.Router, agent Agent) {
	depot.HandlerWithOptions(depotAPI{Agent: agent, depotHandlers: depotHandlers{s}}, depot.ChiServerOptions{
		BaseRouter: r, ErrorHandlerFunc: httpx.ParamErrorHandler(paramRules)})
}

// apiHandlers implements the store's part of sled.ServerInterface.
type apiHandlers struct{ s *Store }

// depotHandlers implements the store's part of depot.ServerInterface.
type depotHandlers struct{ s *Store }

// fail writes a handler's error, if any. A generation conflict's fault
// carries held_generation, so its body is an api.GenerationConflict.
func fail(w http.ResponseWriter, r *http.Request, err error) {
	if err != nil {
		httpx.WriteError(w, r, err)
	}
}

func checkPathSHA(sha string) error {
	if err := api.CheckSHA256(sha); err != nil {
		return fault.Invalidf(api.CodeInvalidSHA256, "path: %v", err)
	}
	return nil
}

func (h apiHandlers) ArtifactConfigPut(w http.ResponseWriter, r *http.Request) {
	fail(w, r, h.s.handlePutConfig(w, r))
}

func (s *Store) handlePutConfig(w http.ResponseWriter, r *http.Request) error {
	var cfg api.ArtifactConfig
	if err := httpx.DecodeJSON(r, &cfg, 16<<20); err != nil {
		return err
	}
	held, _, err := s.PutConfig(r.Context(), cfg)
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, held)
	return nil
}

func (h apiHandlers) ArtifactConfigGet(w http.ResponseWriter, r *http.Request) {
	httpx.WriteJSON(w, http.StatusOK, h.s.Config())
}

func (h apiHandlers) ArtifactList(w http.ResponseWriter, r *http.Request) {
	httpx.WriteJSON(w, http.StatusOK, h.s.List())
}

func (h apiHandlers) ArtifactPut(w http.ResponseWriter, r *http.Request, sha string, params sled.ArtifactPutParams) {
	fail(w, r, h.s.handlePut(w, r, sha, params.Generation))
}

func (s *Store) handlePut(w http.ResponseWriter, r *http.Request, sha string, gen uint64) error {
	if err := checkPathSHA(sha); err != nil {
		return err
	}
	body := httpx.IdleBody(w, r.Body, bodyIdleTimeout)
	res, err := s.Put(r.Context(), sha, gen, body, r.ContentLength)
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, res)
	return nil
}

// readTracker remembers a body read error, to tell it from a write error.
type readTracker struct {
	r   io.Reader
	err error
}

func (t *readTracker) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if err != nil && err != io.EOF {
		t.err = err
	}
	return n, err
}

// Put streams body into every device in use that lacks sha, hashing as it
// writes, and keeps it only if the hash matches. length is the announced
// Content-Length (-1 when unknown).
func (s *Store) Put(ctx context.Context, sha string, gen uint64, body io.Reader, length int64) (api.ArtifactPutResult, error) {
	l := zerolog.Ctx(ctx).With().Str("sha256", sha).Uint64("generation", gen).Logger()
	log := &l
	devs, err := s.admit(sha, gen)
	if err != nil {
		return api.ArtifactPutResult{}, err
	}
	holders, lacking := split(devs, sha)
	sp := s.openSpool(sha, "put", lacking)
	if len(lacking) > 0 && sp.live() == 0 {
		return api.ArtifactPutResult{}, (&allFailedError{sp.failures()}).asFault()
	}
	body = &readTracker{r: body}
	n, err := sp.readFrom(body)
	if err != nil {
		sp.abort()
		var allFailed *allFailedError
		switch {
		case errors.As(err, &allFailed):
			return api.ArtifactPutResult{}, allFailed.asFault()
		case body.(*readTracker).err != nil && length > 0 && n < length:
			return api.ArtifactPutResult{}, fault.Invalidf(api.CodeLengthMismatch,
				"the body ended after %d of the %d bytes its Content-Length announced; nothing was kept", n, length)
		case body.(*readTracker).err != nil:
			return api.ArtifactPutResult{}, fault.Invalidf(api.CodeInvalidBody,
				"reading the body failed after %d bytes (%v); nothing was kept", n, err)
		}
		return api.ArtifactPutResult{}, err
	}
	res, err := sp.commit(log)
	var mismatch *hashMismatchError
	var allFailed *allFailedError
	switch {
	case errors.As(err, &mismatch):
		return api.ArtifactPutResult{}, fault.Invalidf(api.CodeHashMismatch,
			"the body (%d bytes) has sha256 %s, not %s: it is truncated, too long or not this artifact; nothing was kept",
			mismatch.n, mismatch.got, sha)
	case errors.As(err, &allFailed):
		return api.ArtifactPutResult{}, allFailed.asFault()
	case err != nil:
		return api.ArtifactPutResult{}, err
	}
	out := api.ArtifactPutResult{SHA256: sha, Generation: res.generation, Size: n,
		Written: nonNil(res.written), AlreadyHeld: paths(holders), Failed: res.failed}
	s.mu.RLock()
	for _, d := range s.active {
		if d.holds(sha) {
			out.Copies++
		}
	}
	s.mu.RUnlock()
	return out, nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func (h apiHandlers) ArtifactCopyFromDepot(w http.ResponseWriter, r *http.Request, sha string, params sled.ArtifactCopyFromDepotParams) {
	fail(w, r, h.s.handleCopyFromDepot(w, r, sha, params.Generation))
}

func (s *Store) handleCopyFromDepot(w http.ResponseWriter, r *http.Request, sha string, gen uint64) error {
	if err := checkPathSHA(sha); err != nil {
		return err
	}
	var req api.ArtifactCopyRequest
	if err := httpx.DecodeJSON(r, &req, 0); err != nil {
		return err
	}
	st, async, err := s.StartCopy(r.Context(), sha, gen, req)
	if err != nil {
		return err
	}
	status := http.StatusOK
	if async {
		status = http.StatusAccepted
	}
	httpx.WriteJSON(w, status, st)
	return nil
}

func (h apiHandlers) ArtifactCopyList(w http.ResponseWriter, r *http.Request) {
	httpx.WriteJSON(w, http.StatusOK, h.s.Copies())
}

func (h apiHandlers) ArtifactCopyGet(w http.ResponseWriter, r *http.Request, sha string) {
	fail(w, r, h.s.handleCopy(w, r, sha))
}

func (s *Store) handleCopy(w http.ResponseWriter, r *http.Request, sha string) error {
	if err := checkPathSHA(sha); err != nil {
		return err
	}
	st, ok := s.Copy(sha)
	if !ok {
		return fault.NotFoundf(api.CodeNotFound, "no copy of %s was requested recently (finished copies are kept for %s)",
			sha, s.opts.CopyRetention)
	}
	httpx.WriteJSON(w, http.StatusOK, st)
	return nil
}

func (h apiHandlers) ArtifactScrubStatus(w http.ResponseWriter, r *http.Request) {
	httpx.WriteJSON(w, http.StatusOK, h.s.ScrubStatus())
}

func (h apiHandlers) ArtifactScrubStart(w http.ResponseWriter, r *http.Request) {
	h.s.TriggerScrub()
	httpx.WriteJSON(w, http.StatusAccepted, h.s.ScrubStatus())
}

func (h depotHandlers) ArtifactGet(w http.ResponseWriter, r *http.Request, sha string, _ depot.ArtifactGetParams) {
	fail(w, r, h.s.handleDepotGet(w, r, sha))
}

// ArtifactHead answers as ArtifactGet does: http.ServeContent sends no
// body for HEAD.
func (h depotHandlers) ArtifactHead(w http.ResponseWriter, r *http.Request, sha string, _ depot.ArtifactHeadParams) {
	fail(w, r, h.s.handleDepotGet(w, r, sha))
}

// handleDepotGet serves a stored copy to another sled (or anyone copying
// from this depot), with Range support so an interrupted copy resumes.
// The ETag is the hash: the content of a name never changes. Every read
// is checked against the hash as it streams (verify.go); a copy found
// corrupt is removed and reported, and the transfer is cut short.
func (s *Store) handleDepotGet(w http.ResponseWriter, r *http.Request, sha string) error {
	if err := checkPathSHA(sha); err != nil {
		return err
	}
	s.mu.RLock()
	devs := s.activeLocked()
	s.mu.RUnlock()
	var f *os.File
	var dev *device
	for _, d := range devs {
		if c, err := os.Open(d.file(sha)); err == nil {
			f, dev = c, d
			break
		}
	}
	if f == nil {
		return fault.NotFoundf(api.CodeNotFound, "this sled holds no copy of artifact %s", sha)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return fmt.Errorf("stat stored copy: %w", err)
	}
	v := newVerifiedReader(f, info.Size(), sha)
	if rng := r.Header.Get("Range"); r.Method == http.MethodGet && rng != "" && !openEnded.MatchString(rng) {
		// This range stops before the end of the file: check it all first.
		if err := v.verifyAll(); err != nil {
			return s.depotReadFailed(dev, sha, info, v, err)
		}
	}
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("ETag", `"`+sha+`"`)
	dw := &depotWriter{ResponseWriter: w, r: r}
	http.ServeContent(dw, r, "", time.Time{}, v)
	s.metrics.bytesServed.Add(float64(dw.n))
	if v.err != nil {
		// The status and part of the body are out: the transfer ends short
		// of its length, which the reader sees.
		_ = s.depotReadFailed(dev, sha, info, v, v.err)
	}
	return nil
}

// depotReadFailed handles a depot read that could not be completed: a
// corrupt copy is removed and reported (the reader gets a 503 when nothing
// was sent yet), any other error is the caller's to report.
func (s *Store) depotReadFailed(d *device, sha string, info os.FileInfo, v *verifiedReader, err error) error {
	if !errors.Is(err, errCorruptCopy) {
		return fmt.Errorf("read stored copy: %w", err)
	}
	s.removeCorrupt(d, sha, info, "depot_read",
		fmt.Sprintf("a depot read found sha256 %s over %d bytes", v.got, v.size))
	return fault.New(fault.Unavailable, api.CodeServiceUnavailable,
		"this sled's copy of artifact %s is corrupt; it was removed, ask again or copy from another sled", sha)
}

// depotWriter counts the bytes served and turns http.ServeContent's
// plain-text 416 into our JSON error.
type depotWriter struct {
	http.ResponseWriter
	r       *http.Request
	n       int64
	swallow bool
}

func (d *depotWriter) WriteHeader(code int) {
	if code == http.StatusRequestedRangeNotSatisfiable {
		d.swallow = true
		httpx.WriteError(d.ResponseWriter, d.r, fault.New(fault.RangeNotSatisfiable, api.CodeInvalidRange,
			"Range %q cannot be served: %s", d.r.Header.Get("Range"), describeRange(d.Header().Get("Content-Range"))))
		return
	}
	d.ResponseWriter.WriteHeader(code)
}

func (d *depotWriter) Write(p []byte) (int, error) {
	if d.swallow {
		return len(p), nil
	}
	n, err := d.ResponseWriter.Write(p)
	d.n += int64(n)
	return n, err
}

func describeRange(contentRange string) string {
	if contentRange == "" {
		return "it is malformed"
	}
	return fmt.Sprintf("the artifact's extent is %q", contentRange)
}
