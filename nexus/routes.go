package nexus

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/api/openapi"
	"github.com/rackplane/rackplane/internal/httpx"
)

// externalRouter is the operator's API. Each capability mounts its routes
// from its own file.
func (s *Server) externalRouter() chi.Router {
	r := httpx.NewRouter(s.log.With().Str("api", "external").Logger())
	r.Get("/healthz", s.healthz)
	r.Get("/openapi.json", serveDocument(openapi.NexusExternal))
	s.mountSledsExternal(r)
	s.mountBackgroundTasks(r)
	s.mountMetrics(r)
	s.mountUI(r)
	s.mountUpdate(r)
	return r
}

// internalRouter is the API sled agents call.
func (s *Server) internalRouter() chi.Router {
	r := httpx.NewRouter(s.log.With().Str("api", "internal").Logger())
	r.Get("/healthz", s.healthz)
	s.mountSledsInternal(r)
	s.mountDepotServe(r)
	return r
}

// ExternalRouter is the external listener's router (tests walk the routes
// of both listeners and compare them with the OpenAPI documents).
func (s *Server) ExternalRouter() chi.Routes { return s.external }

// InternalRouter is the internal listener's router.
func (s *Server) InternalRouter() chi.Routes { return s.internal }

// serveDocument serves an OpenAPI document built into the binary.
func serveDocument(doc []byte) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(doc)))
		_, _ = w.Write(doc)
	}
}

// healthz answers 200 when this Nexus can reach its database and 503,
// naming what is wrong, when it cannot.
func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
	defer cancel()
	h := api.Health{Status: "ok", Checks: map[string]string{"database": "ok"}}
	status := http.StatusOK
	if err := s.ds.Ping(ctx); err != nil {
		h.Status, h.Checks["database"] = "unhealthy", "unreachable: "+err.Error()
		status = http.StatusServiceUnavailable
	}
	httpx.WriteJSON(w, status, h)
}
