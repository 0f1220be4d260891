package bootnet

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	open      *prometheus.GaugeVec
	opened    *prometheus.CounterVec
	closed    *prometheus.CounterVec
	handshake *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		open: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "rackplane_bootstrap_connections",
			Help: "Open bootstrap-network connections, by the kind of peer (sled or rss).",
		}, []string{"peer_kind"}),
		opened: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rackplane_bootstrap_connections_opened_total",
			Help: "Bootstrap-network connections established, by direction (dialed or accepted).",
		}, []string{"direction"}),
		closed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rackplane_bootstrap_connections_closed_total",
			Help: "Bootstrap-network connections closed, by reason.",
		}, []string{"reason"}),
		handshake: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rackplane_bootstrap_handshake_failures_total",
			Help: "Bootstrap-network connections refused during the TLS handshake, by direction.",
		}, []string{"direction"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.open, m.opened, m.closed, m.handshake} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("bootnet: register metrics: %w", err)
			}
		}
	}
	return m, nil
}

func direction(dialed bool) string {
	if dialed {
		return "dialed"
	}
	return "accepted"
}
