package nexus

import (
	"github.com/go-chi/chi/v5"

	"github.com/rackplane/rackplane/internal/httpx"
	"github.com/rackplane/rackplane/nexus/httpapi"
	"github.com/rackplane/rackplane/nexus/ui"
)

// externalRouter is the operator's listener: the external API, the status
// pages and /metrics.
func (s *Server) externalRouter() (chi.Router, error) {
	r := httpx.NewRouter(s.log.With().Str("api", "external").Logger())
	r.Use(s.httpMetrics.Middleware("external"))
	httpapi.New(s.app).MountExternal(r, s.metricsHandler())
	pages := ui.New(s.app)
	pages.Mount(r)
	// A person's browser gets an HTML page for / and unknown /ui paths
	// (and its favicon); the API keeps its JSON 404s.
	r.NotFound(pages.NotFound(httpx.NotFoundJSON))
	return r, s.httpMetrics.Known("external", r)
}

// internalRouter is the listener sled agents call.
func (s *Server) internalRouter() (chi.Router, error) {
	r := httpx.NewRouter(s.log.With().Str("api", "internal").Logger())
	r.Use(s.httpMetrics.Middleware("internal"))
	httpapi.New(s.app).MountInternal(r)
	return r, s.httpMetrics.Known("internal", r)
}

// ExternalRouter is the external listener's router (tests walk the routes
// of both listeners and compare them with the OpenAPI documents).
func (s *Server) ExternalRouter() chi.Routes { return s.external }

// InternalRouter is the internal listener's router.
func (s *Server) InternalRouter() chi.Routes { return s.internal }
