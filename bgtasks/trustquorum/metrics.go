package trustquorum

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rackplane/rackplane/nexus/datastore"
)

// metrics are the task's Prometheus metrics. The gauges describe the rack
// as the database records it (every Nexus reports the same); the counters
// count what this Nexus did.
type metrics struct {
	committed *prometheus.GaugeVec
	latest    prometheus.Gauge
	acked     *prometheus.GaugeVec
	required  *prometheus.GaugeVec
	aborts    *prometheus.CounterVec
	retries   prometheus.Counter
	alarms    prometheus.Gauge
	reached   *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		committed: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "rackplane_trust_quorum_epoch_committed",
			Help: "The newest trust-quorum epoch Nexus decided to commit (0: none), by its state."}, []string{"state"}),
		latest: prometheus.NewGauge(prometheus.GaugeOpts{Name: "rackplane_trust_quorum_epoch_latest",
			Help: "The newest trust-quorum epoch in any state."}),
		acked: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "rackplane_trust_quorum_members_acked",
			Help: "Members that acked the epoch in progress: its prepare (phase prepare) or its commit (phase commit)."},
			[]string{"phase"}),
		required: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "rackplane_trust_quorum_members_required",
			Help: "Acks the epoch in progress needs: K+Z prepares, or every member's commit."}, []string{"phase"}),
		aborts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rackplane_trust_quorum_aborts_total",
			Help: "Trust-quorum epochs this Nexus aborted on its own, by cause."}, []string{"cause"}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{Name: "rackplane_trust_quorum_retries_total",
			Help: "Trust-quorum changes this Nexus started again at the next epoch after an abort."}),
		alarms: prometheus.NewGauge(prometheus.GaugeOpts{Name: "rackplane_trust_quorum_node_alarms",
			Help: "Alarms the watched nodes report (conditions that must never happen)."}),
		reached: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "rackplane_trust_quorum_nodes",
			Help: "Watched nodes, by whether their status could be read this run."}, []string{"reached"}),
	}
	for _, c := range []prometheus.Collector{m.committed, m.latest, m.acked, m.required, m.aborts, m.retries, m.alarms, m.reached} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("trust-quorum manager metrics: %w", err)
		}
	}
	return m, nil
}

// observe records what a run saw of the nodes.
func (m *metrics) observe(c *collected) {
	alarms, reached := 0, 0
	for _, b := range c.watched {
		if o := c.nodes[b]; o.Reached() {
			reached++
			alarms += len(o.Status.Alarms)
		}
	}
	m.alarms.Set(float64(alarms))
	m.reached.WithLabelValues("true").Set(float64(reached))
	m.reached.WithLabelValues("false").Set(float64(len(c.watched) - reached))
}

// observeView records the rack's epochs as the database has them.
func (m *metrics) observeView(v *datastore.TQView) {
	m.committed.Reset()
	if lc := v.LatestCommitted; lc != nil {
		m.committed.WithLabelValues(string(lc.State)).Set(float64(lc.Epoch))
	}
	if v.Latest != nil {
		m.latest.Set(float64(v.Latest.Epoch))
	}
	m.acked.Reset()
	m.required.Reset()
	if c := v.Active; c != nil {
		phase := "prepare"
		if c.State.Committed() {
			phase = "commit"
		}
		m.acked.WithLabelValues(phase).Set(float64(c.Acked()))
		m.required.WithLabelValues(phase).Set(float64(c.Required()))
	}
}
