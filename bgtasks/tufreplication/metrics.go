package tufreplication

import (
	"github.com/prometheus/client_golang/prometheus"
)

// The replication metrics come from the task's last run on this Nexus,
// read when /metrics is scraped; before the first run every gauge is 0
// and the time since convergence counts from the task's start.
var (
	wantedDesc = prometheus.NewDesc("rackplane_replication_artifacts_wanted",
		"Artifacts every sled should hold (those of the live repos), as the last replication run saw them.", nil, nil)
	heldDesc = prometheus.NewDesc("rackplane_replication_artifacts_fully_replicated",
		"Wanted artifacts every in-service sled holds on every M.2 it should have.", nil, nil)
	inFlightDesc = prometheus.NewDesc("rackplane_replication_copies_in_flight",
		"Sled-to-sled copies running when the last run looked.", nil, nil)
	sledsDesc = prometheus.NewDesc("rackplane_replication_sleds",
		"In-service sleds the last run looked at, by whether they answered at its generation.", []string{"answered"}, nil)
	degradedDesc = prometheus.NewDesc("rackplane_replication_degraded_sleds",
		"Answering sleds with fewer M.2s present than they should have.", nil, nil)
	convergedDesc = prometheus.NewDesc("rackplane_replication_converged",
		"1 when the last run found every sled holding every wanted artifact on every M.2, else 0.", nil, nil)
	sinceDesc = prometheus.NewDesc("rackplane_replication_seconds_since_converged",
		"0 while the last run converged; otherwise seconds since a run last did (or since this Nexus started, if none has).",
		nil, nil)
	bytesDesc = prometheus.NewDesc("rackplane_replication_bytes_total",
		"Bytes of artifacts moved since this Nexus started on its requests: seeded (a sled copying from Nexus's depot) or copied sled to sled.",
		[]string{"path"}, nil)
	generationDesc = prometheus.NewDesc("rackplane_replication_generation",
		"The wanted-artifact generation the last run worked at.", nil, nil)
)

// Collector returns the task's metrics, for the Nexus's registry.
func (t *Task) Collector() prometheus.Collector { return collector{t} }

type collector struct{ t *Task }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{wantedDesc, heldDesc, inFlightDesc, sledsDesc, degradedDesc, convergedDesc,
		sinceDesc, bytesDesc, generationDesc} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	t := c.t
	t.mu.Lock()
	st, life, since := t.last, t.lifetime, t.lastConverged
	if since.IsZero() {
		since = t.started
	}
	t.mu.Unlock()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	answered := 0
	for _, s := range st.SledStates {
		if s.Error == "" && s.Generation == uint64(st.Generation) {
			answered++
		}
	}
	gauge(wantedDesc, float64(st.Artifacts))
	gauge(heldDesc, float64(st.FullyReplicated))
	gauge(inFlightDesc, float64(st.InFlight))
	gauge(sledsDesc, float64(answered), "true")
	gauge(sledsDesc, float64(len(st.SledStates)-answered), "false")
	gauge(degradedDesc, float64(st.DegradedSleds))
	gauge(generationDesc, float64(st.Generation))
	if st.Converged {
		gauge(convergedDesc, 1)
		gauge(sinceDesc, 0)
	} else {
		gauge(convergedDesc, 0)
		gauge(sinceDesc, t.cfg.Now().Sub(since).Seconds())
	}
	ch <- prometheus.MustNewConstMetric(bytesDesc, prometheus.CounterValue, float64(life.BytesSeeded), "nexus_seed")
	ch <- prometheus.MustNewConstMetric(bytesDesc, prometheus.CounterValue, float64(life.BytesCopied), "sled_copy")
}
