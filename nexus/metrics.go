package nexus

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// newMetricsRegistry is this Nexus's own registry (not the global one), so
// that several Nexus instances in one test process do not collide. The
// background-task driver's metrics are registered on it (setupApp), and
// it is handed to the application layer (app.Deps.Metrics), where each
// task registers its own (the trust-quorum manager's epochs, acks, aborts
// and retries).
func newMetricsRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// metricsHandler serves everything registered in s.metrics.
func (s *Server) metricsHandler() http.Handler {
	return promhttp.HandlerFor(s.metrics, promhttp.HandlerOpts{Registry: s.metrics})
}
