package bootstrap

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	messages        *prometheus.CounterVec
	decodeErrors    prometheus.Counter
	alarms          *prometheus.CounterVec
	persistFailures prometheus.Counter
	persistSeconds  prometheus.Histogram
	stopped         prometheus.Gauge
	generation      prometheus.Gauge
	peers           prometheus.Gauge
	proxied         *prometheus.CounterVec
	served          *prometheus.CounterVec
	storageLock     *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rackplane_trust_quorum_messages_total",
			Help: "Trust-quorum peer messages, by direction (sent, received) and kind.",
		}, []string{"direction", "kind"}),
		decodeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rackplane_trust_quorum_message_decode_errors_total",
			Help: "Peer frames that did not decode as trust-quorum messages (dropped).",
		}),
		alarms: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rackplane_trust_quorum_alarms_total",
			Help: "Trust-quorum alarms raised by this node, by kind; any is a bug or an attack.",
		}, []string{"kind"}),
		persistFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rackplane_trust_quorum_persist_failures_total",
			Help: "Persists of the trust-quorum state that no M.2 took (each stops the node).",
		}),
		persistSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "rackplane_trust_quorum_persist_seconds",
			Help:    "Time to write the trust-quorum ledger to every present M.2.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		stopped: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "rackplane_trust_quorum_node_stopped",
			Help: "1 while the trust-quorum node is stopped because its state could not be persisted.",
		}),
		generation: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "rackplane_trust_quorum_ledger_generation",
			Help: "Generation of the trust-quorum ledger last written.",
		}),
		peers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "rackplane_trust_quorum_connected_peers",
			Help: "Sleds the trust-quorum node is connected to.",
		}),
		proxied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rackplane_trust_quorum_proxied_requests_total",
			Help: "Requests this sled forwarded to another over the bootstrap network, by op and outcome.",
		}, []string{"op", "outcome"}),
		served: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rackplane_trust_quorum_served_requests_total",
			Help: "Bootstrap-network requests executed here, by op, caller kind (sled, rss) and outcome.",
		}, []string{"op", "caller", "outcome"}),
		storageLock: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "rackplane_storage_lock_state",
			Help: "1 for the data disks' lock state (locked, unlocked, expunged), 0 for the others.",
		}, []string{"state"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.messages, m.decodeErrors, m.alarms, m.persistFailures,
			m.persistSeconds, m.stopped, m.generation, m.peers, m.proxied, m.served, m.storageLock} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("bootstrap: register metrics: %w", err)
			}
		}
	}
	return m, nil
}
