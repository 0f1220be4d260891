package nexus

import (
	"context"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/internal/httpx"
)

// externalRouter is the operator's API. Each capability mounts its routes
// from its own file.
func (s *Server) externalRouter() chi.Router {
	r := httpx.NewRouter(s.log.With().Str("api", "external").Logger())
	r.Get("/healthz", s.healthz)
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
