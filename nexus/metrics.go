package nexus

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/rackplane/rackplane/internal/buildinfo"
)

// newMetricsRegistry is this Nexus's own registry (not the global one), so
// that several Nexus instances in one test process do not collide. It
// starts with the Go runtime's and the process's metrics and
// rackplane_build_info.
func newMetricsRegistry() (*prometheus.Registry, error) {
	reg := prometheus.NewRegistry()
	b := buildinfo.Read()
	info := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "rackplane_build_info",
		Help:        "Always 1; the labels say which build of Nexus this is.",
		ConstLabels: prometheus.Labels{"version": b.Version, "commit": b.ShortCommit(), "go_version": b.GoVersion},
	})
	info.Set(1)
	for _, c := range []prometheus.Collector{collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), info} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return reg, nil
}

// metricsHandler serves everything registered in s.metrics. A collector
// that cannot read the database drops its metrics from the scrape (and
// says so in the log) rather than failing it: the other metrics, the task
// metrics among them, matter most while something is broken.
func (s *Server) metricsHandler() http.Handler {
	return promhttp.HandlerFor(s.metrics, promhttp.HandlerOpts{Registry: s.metrics,
		ErrorHandling: promhttp.ContinueOnError, ErrorLog: promLog{s}})
}

// promLog hands the metrics handler's complaints to the Nexus log.
type promLog struct{ s *Server }

func (l promLog) Println(v ...any) { l.s.log.Warn().Str("subsystem", "metrics").Msgf("%v", v) }
