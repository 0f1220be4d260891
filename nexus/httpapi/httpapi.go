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

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/api/openapi"
	"github.com/rackplane/rackplane/internal/httpx"
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
func (s *API) MountInternal(r chi.Router) {
	s.mountInternalOps(r)
	s.mountDepotOps(r)
}

// healthz answers 200 when this Nexus can reach its database and 503,
// naming what is wrong, when it cannot.
func (s *API) healthz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
	defer cancel()
	hl := api.Health{Status: "ok", Checks: map[string]string{"database": "ok"}}
	status := http.StatusOK
	if err := s.app.Ping(ctx); err != nil {
		hl.Status, hl.Checks["database"] = "unhealthy", "unreachable: "+err.Error()
		status = http.StatusServiceUnavailable
	}
	httpx.WriteJSON(w, status, hl)
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
