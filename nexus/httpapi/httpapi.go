// Package httpapi is Nexus's HTTP edge for its two JSON APIs: the external
// (operator) API and the internal API that sled agents call. A handler
// decodes the request, calls the application layer (nexus/app) and writes
// the wire type built from the model it returns; errors are mapped to
// statuses once, by kind, in internal/httpx. No rule of the system lives
// here.
package httpapi

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"
	"github.com/rs/zerolog/hlog"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/api/openapi"
	"github.com/rackplane/rackplane/internal/buildinfo"
	"github.com/rackplane/rackplane/internal/fault"
	"github.com/rackplane/rackplane/internal/httpx"
	"github.com/rackplane/rackplane/internal/rackpki"
	"github.com/rackplane/rackplane/internal/reqid"
	"github.com/rackplane/rackplane/nexus/app"
)

// API serves the JSON APIs of one Nexus.
type API struct {
	app *app.App
}

// New returns the HTTP edge over a.
func New(a *app.App) *API { return &API{app: a} }

// h adapts a handler that returns its error.
var h = httpx.Handlers{}.H

// MountExternal mounts the operator API (api/openapi/nexus-external.json)
// on r; metrics serves /metrics. Everything but /healthz and the document
// itself needs an operator token (see Operators).
func (s *API) MountExternal(r chi.Router, metrics http.Handler) {
	r.Group(func(r chi.Router) {
		r.Use(s.Operators)
		s.mountExternalOps(r, metrics)
	})
}

// MountInternal mounts the sled agents' API (nexus-internal.json) and this
// Nexus's depot (repo-depot.json: its local copies in the same shape as a
// sled's depot, so sleds copy from a Nexus exactly as from another sled).
//
// The listener serves mutual TLS and accepts only sleds and Nexus
// instances; the caller's identity, from its certificate, rides in the
// context as its actor, and each operation decides what it may do (a sled
// may only register itself).
func (s *API) MountInternal(r chi.Router) {
	r.Group(func(r chi.Router) {
		r.Use(peers)
		s.mountInternalOps(r)
		s.mountDepotOps(r)
	})
}

// rackSetupPath is the one route the rack-setup service may call.
const rackSetupPath = "/v1/rack-setup"

// peers puts the internal caller's identity in the context. The
// rack-setup service passes the listener's handshake only to hand the
// rack over: every other route refuses it, as the handshake refuses
// anyone but sleds and Nexus instances.
func peers(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, err := rackpki.PeerIdentity(r.TLS)
		if err != nil {
			httpx.WriteError(w, r, fault.New(fault.Forbidden, api.CodeMTLSRequired,
				"the internal API needs mutual TLS with a certificate of the rack CA"))
			return
		}
		if id.Kind == rackpki.KindRSS && r.URL.Path != rackSetupPath {
			httpx.WriteError(w, r, fault.New(fault.Forbidden, api.CodeForbiddenIdentity,
				"the rack-setup service may only hand the rack over (PUT %s)", rackSetupPath))
			return
		}
		next.ServeHTTP(w, r.WithContext(app.WithActor(r.Context(), app.PeerActor(id))))
	})
}

// healthz answers 200 when this Nexus can reach its database and 503 when
// it cannot. It answers anyone, so it says only ok or unhealthy per check:
// what went wrong (which may name a database user, host or socket) goes to
// the log under the request id, for operators.
//
// An authenticated caller (any operator token) also learns which build
// answers.
func (s *API) healthz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
	defer cancel()
	hl := api.Health{Status: "ok", Checks: map[string]string{"database": "ok"}}
	status := http.StatusOK
	if err := s.app.Ping(ctx); err != nil {
		hlog.FromRequest(r).Warn().Err(err).Msg("healthz: the database is unreachable")
		hl.Status, hl.Checks["database"] = "unhealthy", "unhealthy"
		status = http.StatusServiceUnavailable
	}
	if s.operator(r) {
		b := apiBuildInfo()
		hl.Build = &b
	}
	httpx.WriteJSON(w, status, hl)
}

// readyz answers 200 when this Nexus can do its work (its database
// answers and no background task keeps failing) and 503 when it cannot.
// Anyone may ask and learns only which check fails; an authenticated
// caller also learns why (the database's error, each failing task's),
// which can name internals.
func (s *API) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
	defer cancel()
	rd := s.app.Readiness(ctx)
	out := api.Readiness{Status: api.ReadyStatus, Checks: map[string]string{"database": api.CheckOK,
		"background_tasks": api.CheckOK}}
	status := http.StatusOK
	if rd.DatabaseErr != nil {
		out.Checks["database"] = api.CheckFailing
	}
	if len(rd.FailingTasks) > 0 {
		out.Checks["background_tasks"] = api.CheckFailing
	}
	if !rd.Ready() {
		out.Status, status = api.NotReadyStatus, http.StatusServiceUnavailable
		ev := hlog.FromRequest(r).Warn().AnErr("database", rd.DatabaseErr)
		names := make([]string, len(rd.FailingTasks))
		for i, t := range rd.FailingTasks {
			names[i] = t.Name
		}
		ev.Strs("failing_tasks", names).Msg("readyz: not ready")
	}
	if s.operator(r) {
		d := api.ReadinessDetail{Database: api.CheckOK, FailingTasks: []api.FailingTask{}, Build: apiBuildInfo()}
		if rd.DatabaseErr != nil {
			d.Database = rd.DatabaseErr.Error()
		}
		for _, t := range rd.FailingTasks {
			d.FailingTasks = append(d.FailingTasks, api.FailingTask(t))
		}
		out.Detail = &d
	}
	httpx.WriteJSON(w, status, out)
}

// operator reports whether a public path's caller sent a valid operator
// token (any role). A missing or bad one is not an error there: the
// answer is the public one.
func (s *API) operator(r *http.Request) bool {
	tok := httpx.BearerToken(r)
	if tok == "" {
		return false
	}
	_, err := s.app.Authenticate(r.Context(), tok)
	return err == nil
}

func apiBuildInfo() api.BuildInfo {
	b := buildinfo.Read()
	return api.BuildInfo{Version: b.Version, Commit: b.Commit, CommitTime: b.CommitTime, Modified: b.Modified,
		GoVersion: b.GoVersion}
}

// listByID serves a listing ordered by UUID: ?limit= and ?page_token=,
// where the token is the last id of the previous page. list returns up to
// limit items with ids after `after`; conv builds each item's wire form.
func listByID[M, W any](w http.ResponseWriter, r *http.Request,
	list func(ctx context.Context, after uuid.UUID, limit int) ([]M, error), conv func(M) W, id func(M) uuid.UUID) error {
	page, err := httpx.PageParams(r)
	if err != nil {
		return err
	}
	after, err := page.UUIDToken()
	if err != nil {
		return err
	}
	// One more than asked tells whether a next page exists.
	items, err := list(r.Context(), after, page.Limit+1)
	if err != nil {
		return err
	}
	writePage(w, items, page.Limit, conv, func(m M) string { return id(m).String() })
	return nil
}

// writePage writes up to limit of items (which may hold one more, to tell
// whether a next page exists) with the next page's token.
func writePage[M, W any](w http.ResponseWriter, items []M, limit int, conv func(M) W, token func(M) string) {
	out := api.Page[W]{Items: []W{}}
	if len(items) > limit {
		out.NextPage = token(items[limit-1])
		items = items[:limit]
	}
	for _, it := range items {
		out.Items = append(out.Items, conv(it))
	}
	httpx.WriteJSON(w, http.StatusOK, out)
}

// openapiDocument serves the external API's OpenAPI document.
func (s *API) openapiDocument(w http.ResponseWriter, _ *http.Request) {
	doc := openapi.NexusExternal
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(doc)))
	_, _ = w.Write(doc)
}

// apiRequester names the caller of an API request in activation records:
// its request id, which rackctl prefixes with its own name.
func apiRequester(r *http.Request) string { return "api:" + reqid.From(r.Context()) }
