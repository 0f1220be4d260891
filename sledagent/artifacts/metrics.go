package artifacts

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the store's Prometheus series. Each sled agent has its own
// registry, so several agents can run in one test process.
type metrics struct {
	generation     prometheus.Gauge
	bytesWritten   *prometheus.CounterVec // by source: put, depot, local
	stored         *prometheus.CounterVec // copies renamed into place, by source
	bytesServed    prometheus.Counter
	resumedBytes   prometheus.Counter
	deleted        prometheus.Counter
	copiesInFlight prometheus.Gauge
	copies         *prometheus.CounterVec // finished copy-from-depot requests, by result
	scrubPasses    prometheus.Counter
	scrubFiles     prometheus.Counter
	scrubBytes     prometheus.Counter
	corrupt        *prometheus.CounterVec // corrupt copies removed, by who found them
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	const ns = "rackplane_sled_artifact_"
	m := &metrics{
		generation: prometheus.NewGauge(prometheus.GaugeOpts{Name: ns + "config_generation",
			Help: "Artifact config generation the sled holds."}),
		bytesWritten: prometheus.NewCounterVec(prometheus.CounterOpts{Name: ns + "bytes_written_total",
			Help: "Bytes written to M.2 devices (each device counted), by source (put, depot, local)."}, []string{"source"}),
		stored: prometheus.NewCounterVec(prometheus.CounterOpts{Name: ns + "copies_stored_total",
			Help: "Verified artifact copies stored on an M.2, by source (put, depot, local)."}, []string{"source"}),
		bytesServed: prometheus.NewCounter(prometheus.CounterOpts{Name: ns + "bytes_served_total",
			Help: "Artifact bytes the repo depot served."}),
		resumedBytes: prometheus.NewCounter(prometheus.CounterOpts{Name: ns + "copy_resumed_bytes_total",
			Help: "Bytes of copies from depots found in partial copies kept from before (a restart) and not fetched again."}),
		deleted: prometheus.NewCounter(prometheus.CounterOpts{Name: ns + "deleted_total",
			Help: "Artifact copies deleted because the config no longer wants them."}),
		copiesInFlight: prometheus.NewGauge(prometheus.GaugeOpts{Name: ns + "copies_in_flight",
			Help: "Copy-from-depot requests queued or running."}),
		copies: prometheus.NewCounterVec(prometheus.CounterOpts{Name: ns + "copies_total",
			Help: "Finished copy-from-depot requests, by result (done, failed, already_present)."}, []string{"result"}),
		scrubPasses: prometheus.NewCounter(prometheus.CounterOpts{Name: ns + "scrub_passes_total",
			Help: "Completed scrub passes."}),
		scrubFiles: prometheus.NewCounter(prometheus.CounterOpts{Name: ns + "scrub_files_checked_total",
			Help: "Stored copies re-hashed by the scrub."}),
		scrubBytes: prometheus.NewCounter(prometheus.CounterOpts{Name: ns + "scrub_bytes_checked_total",
			Help: "Bytes re-hashed by the scrub."}),
		corrupt: prometheus.NewCounterVec(prometheus.CounterOpts{Name: ns + "corrupt_copies_total",
			Help: "Corrupt stored copies found and removed, by what found them (scrub, local_copy, depot_read)."}, []string{"found_by"}),
	}
	for _, l := range []string{"put", "depot", "local"} {
		m.bytesWritten.WithLabelValues(l)
		m.stored.WithLabelValues(l)
	}
	for _, l := range []string{"done", "failed", "already_present"} {
		m.copies.WithLabelValues(l)
	}
	for _, l := range []string{"scrub", "local_copy", "depot_read"} {
		m.corrupt.WithLabelValues(l)
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.generation, m.bytesWritten, m.stored, m.bytesServed, m.resumedBytes, m.deleted,
		m.copiesInFlight, m.copies, m.scrubPasses, m.scrubFiles, m.scrubBytes, m.corrupt} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("artifacts: register metrics: %w", err)
		}
	}
	return m, nil
}
