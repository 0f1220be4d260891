package httpx

import (
	"net/http"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/prometheus/client_golang/prometheus"
)

// HTTPMetrics count a server's requests by route pattern (the chi
// pattern, so "/v1/system/update/repositories/{system_version}" rather
// than one series per version), method and status, and time them.
type HTTPMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

// unmatched is the route label of requests no route took (404s of
// unknown paths): their paths are whatever the caller sent, so they are
// not labels.
const unmatched = "unmatched"

// NewHTTPMetrics creates the metrics and registers them with reg.
func NewHTTPMetrics(reg prometheus.Registerer) (*HTTPMetrics, error) {
	m := &HTTPMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rackplane_http_requests_total",
			Help: "HTTP requests answered, by listener, method, route pattern and status code.",
		}, []string{"api", "method", "route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "rackplane_http_request_duration_seconds",
			Help: "Time to answer HTTP requests, by listener, method and route pattern (uploads included).",
			// From a cached status page to a multi-GiB upload.
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 12),
		}, []string{"api", "method", "route"}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// Middleware records every request of the listener named api. It belongs
// on the router itself (chi's Use), so that the route pattern is known
// once the request has been routed.
func (m *HTTPMetrics) Middleware(api string) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			start := time.Now()
			ww := middleware.NewWrapResponseWriter(w, r.ProtoMajor)
			next.ServeHTTP(ww, r)
			route := unmatched
			if rc := chi.RouteContext(r.Context()); rc != nil && rc.RoutePattern() != "" {
				route = rc.RoutePattern()
			}
			status := ww.Status()
			if status == 0 {
				status = http.StatusOK // the handler wrote nothing
			}
			m.requests.WithLabelValues(api, r.Method, route, strconv.Itoa(status)).Inc()
			m.duration.WithLabelValues(api, r.Method, route).Observe(time.Since(start).Seconds())
		})
	}
}

// Known creates the series of every route of routes at zero, so a route
// that was never called shows as such rather than not at all.
func (m *HTTPMetrics) Known(api string, routes chi.Routes) error {
	return chi.Walk(routes, func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		m.duration.WithLabelValues(api, method, route)
		return nil
	})
}
