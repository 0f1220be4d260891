package app

import (
	"context"
	"errors"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rackplane/rackplane/internal/fault"
	"github.com/rackplane/rackplane/internal/reqid"
	"github.com/rackplane/rackplane/nexus/model"
)

// Upload outcomes as the metrics count them: the four ways an upload is
// recorded (model.Upload*), and the ways it is not.
const (
	// UploadRefused: the request or archive was wrong (a 4xx).
	UploadRefused = "refused"
	// UploadFailed: something broke here (a 5xx).
	UploadFailed = "failed"
	// UploadCanceled: the client went away.
	UploadCanceled = "canceled"
)

// uploadOutcomes are every outcome, each counted from zero.
var uploadOutcomes = []string{model.UploadInserted, model.UploadAlreadyExists, model.UploadRestored,
	model.UploadReplaced, UploadRefused, UploadFailed, UploadCanceled}

// uploadMetrics count what uploads did.
type uploadMetrics struct {
	total      *prometheus.CounterVec
	duration   *prometheus.HistogramVec
	bytes      prometheus.Counter
	inProgress prometheus.Gauge
}

func newUploadMetrics(reg prometheus.Registerer) (*uploadMetrics, error) {
	m := &uploadMetrics{
		total: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rackplane_tuf_uploads_total",
			Help: "TUF repo uploads finished, by outcome: inserted, already_exists, restored, replaced, refused (4xx), failed (5xx), canceled.",
		}, []string{"outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "rackplane_tuf_upload_duration_seconds",
			Help: "Duration of TUF repo uploads, from the first byte to the answer, by outcome.",
			// From a refusal after a few KiB to a 3 GiB release on a slow link.
			Buckets: prometheus.ExponentialBuckets(0.01, 4, 10),
		}, []string{"outcome"}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rackplane_tuf_upload_received_bytes_total",
			Help: "Bytes of TUF repo upload bodies received, whatever became of the upload.",
		}),
		inProgress: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "rackplane_tuf_uploads_in_progress",
			Help: "TUF repo uploads being received or verified now.",
		}),
	}
	for _, o := range uploadOutcomes {
		m.total.WithLabelValues(o)
		m.duration.WithLabelValues(o)
	}
	for _, c := range []prometheus.Collector{m.total, m.duration, m.bytes, m.inProgress} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// outcome names how an upload ended.
func uploadOutcome(res model.UploadResult, err error) string {
	switch {
	case err == nil:
		return res.Status
	case errors.Is(err, context.Canceled), fault.KindOf(err) == fault.Canceled:
		return UploadCanceled
	}
	switch fault.KindOf(err) {
	case fault.Internal, fault.Unavailable, fault.InsufficientStorage, fault.Timeout:
		return UploadFailed
	}
	return UploadRefused
}

// uploadTracker holds the uploads in progress on this Nexus.
type uploadTracker struct {
	mu sync.Mutex
	m  map[uuid.UUID]*tracked
}

// tracked is one upload in progress.
type tracked struct {
	now      func() time.Time
	received atomic.Int64
	bytes    prometheus.Counter

	mu sync.Mutex
	p  model.UploadProgress
}

func (t *uploadTracker) start(ctx context.Context, up Upload, now func() time.Time, bytes prometheus.Counter) *tracked {
	actor, _ := ActorFrom(ctx)
	start := now()
	tr := &tracked{now: now, bytes: bytes, p: model.UploadProgress{ID: uuid.New(), FileName: up.FileName,
		Actor: actor.Name, RequestID: reqid.From(ctx), Started: start, Phase: model.UploadReceiving,
		PhaseStarted: start, ContentLength: up.ContentLength}}
	t.mu.Lock()
	if t.m == nil {
		t.m = map[uuid.UUID]*tracked{}
	}
	t.m[tr.p.ID] = tr
	t.mu.Unlock()
	return tr
}

func (t *uploadTracker) done(tr *tracked) {
	t.mu.Lock()
	delete(t.m, tr.p.ID)
	t.mu.Unlock()
}

func (t *uploadTracker) list() []model.UploadProgress {
	t.mu.Lock()
	trs := make([]*tracked, 0, len(t.m))
	for _, tr := range t.m {
		trs = append(trs, tr)
	}
	t.mu.Unlock()
	out := make([]model.UploadProgress, len(trs))
	for i, tr := range trs {
		out[i] = tr.progress()
	}
	slices.SortFunc(out, func(a, b model.UploadProgress) int { return a.Started.Compare(b.Started) })
	return out
}

func (tr *tracked) progress() model.UploadProgress {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	p := tr.p
	p.BytesReceived = tr.received.Load()
	return p
}

// phase moves the upload to its next phase.
func (tr *tracked) phase(phase string) {
	if tr == nil {
		return
	}
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.p.Phase, tr.p.PhaseStarted = phase, tr.now()
}

func (tr *tracked) systemVersion(v string) {
	if tr == nil {
		return
	}
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.p.SystemVersion = v
}

// body counts what is read of r as received.
func (tr *tracked) body(r io.Reader) io.Reader { return &countingBody{r: r, tr: tr} }

type countingBody struct {
	r  io.Reader
	tr *tracked
}

func (c *countingBody) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if n > 0 {
		c.tr.received.Add(int64(n))
		c.tr.bytes.Add(float64(n))
	}
	return n, err
}

// Uploads lists the uploads this Nexus is receiving or verifying, oldest
// first. Another Nexus's are not shown: each Nexus receives its own.
func (a *App) Uploads() []model.UploadProgress { return a.uploads.list() }
