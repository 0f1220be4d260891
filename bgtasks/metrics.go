package bgtasks

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the driver's Prometheus metrics, labelled by task and
// activation outcome (ok, error, disabled).
type Metrics struct {
	activations *prometheus.CounterVec
	errors      *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	running     *prometheus.GaugeVec
	coalesced   *prometheus.CounterVec
}

// NewMetrics creates the metrics and registers them with reg. Each Nexus
// has its own registry, so several can run in one process (tests).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		activations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rackplane_bgtask_activations_total",
			Help: "Completed background-task activations, by task and outcome.",
		}, []string{"task", "outcome"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rackplane_bgtask_errors_total",
			Help: "Background-task activations that ended in an error (including panics), by task.",
		}, []string{"task"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "rackplane_bgtask_activation_duration_seconds",
			Help: "Duration of background-task activations, by task and outcome.",
			// From sub-millisecond no-ops to multi-minute replication runs.
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 11),
		}, []string{"task", "outcome"}),
		running: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "rackplane_bgtask_running",
			Help: "1 while a background task's activation runs.",
		}, []string{"task"}),
		coalesced: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rackplane_bgtask_coalesced_triggers_total",
			Help: "Activation triggers folded into an already pending activation, by task.",
		}, []string{"task"}),
	}
	for _, c := range []prometheus.Collector{m.activations, m.errors, m.duration, m.running, m.coalesced} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *Metrics) observe(task, outcome string, d time.Duration) {
	m.activations.WithLabelValues(task, outcome).Inc()
	m.duration.WithLabelValues(task, outcome).Observe(d.Seconds())
	if outcome == "error" {
		m.errors.WithLabelValues(task).Inc()
	}
}

// known creates task's series at zero, so that a task that never failed
// (or never ran) shows as such rather than not at all.
func (m *Metrics) known(task string) {
	for _, outcome := range []string{"ok", "error", "disabled"} {
		m.activations.WithLabelValues(task, outcome)
		m.duration.WithLabelValues(task, outcome)
	}
	m.errors.WithLabelValues(task)
	m.running.WithLabelValues(task)
	m.coalesced.WithLabelValues(task)
}
