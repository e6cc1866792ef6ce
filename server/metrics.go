package server

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/kindling-vm/kindling/sandbox"
)

// metrics are the server's Prometheus metrics, in a registry of its own
// (served on /metrics).
type metrics struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	expiries *prometheus.CounterVec
}

func newMetrics(s *Server) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kindlingd_requests_total",
		Help: "API requests answered, by API (native, e2b, sandbox traffic) and HTTP status code.",
	}, []string{"api", "code"})
	m.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "kindlingd_request_duration_seconds",
		Help:    "Time to answer API requests (to the end of the body), by API.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
	}, []string{"api"})
	m.expiries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kindlingd_lease_expiries_total",
		Help: "Sandbox lifetimes that ended, by what was done (kill, pause) and whether it worked.",
	}, []string{"action", "result"})
	m.reg.MustRegister(m.requests, m.latency, m.expiries, sandboxCollector{s},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// sandboxCollector counts the state root's sandboxes by status at each
// scrape (one List of the runtime), and the leases armed.
type sandboxCollector struct{ s *Server }

var (
	sandboxesDesc = prometheus.NewDesc("kindlingd_sandboxes", "Sandboxes of the state root, by status.", []string{"status"}, nil)
	leasesDesc    = prometheus.NewDesc("kindlingd_leases", "Sandbox lifetimes the server has armed.", nil, nil)
	sparesDesc    = prometheus.NewDesc("kindlingd_spare_monitors", "Monitor processes started ahead of need, ready for the next starts (--spare-monitors).", nil, nil)
)

func (c sandboxCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- sandboxesDesc
	ch <- leasesDesc
	ch <- sparesDesc
}

func (c sandboxCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	counts := map[string]int{}
	for _, st := range []sandbox.Status{sandbox.Created, sandbox.Starting, sandbox.Running, sandbox.Paused, sandbox.Exited, sandbox.Orphaned} {
		counts[string(st)] = 0
	}
	if infos, err := c.s.lister.list(ctx); err == nil {
		for _, in := range infos {
			st := string(in.Status)
			if strings.HasPrefix(st, "broken") {
				st = "broken"
			}
			counts[st]++
		}
	}
	for st, n := range counts {
		ch <- prometheus.MustNewConstMetric(sandboxesDesc, prometheus.GaugeValue, float64(n), st)
	}
	ch <- prometheus.MustNewConstMetric(leasesDesc, prometheus.GaugeValue, float64(c.s.leases.armed()))
	ch <- prometheus.MustNewConstMetric(sparesDesc, prometheus.GaugeValue, float64(c.s.rt.SpareMonitors()))
}

// handler serves /metrics in Prometheus' text format.
func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// observe wraps h, counting each request by api and status and timing it;
// it returns the status.
func (m *metrics) observe(api string, w http.ResponseWriter, r *http.Request, h func(http.ResponseWriter, *http.Request)) int {
	rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
	start := time.Now()
	h(rec, r)
	m.latency.WithLabelValues(api).Observe(time.Since(start).Seconds())
	m.requests.WithLabelValues(api, strconv.Itoa(rec.status)).Inc()
	return rec.status
}

// statusRecorder remembers the status a handler answered.
type statusRecorder struct {
	http.ResponseWriter
	status      int
	wroteHeader bool
}

func (r *statusRecorder) WriteHeader(code int) {
	if !r.wroteHeader {
		r.status, r.wroteHeader = code, true
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	r.wroteHeader = true
	return r.ResponseWriter.Write(b)
}

// Flush passes streaming flushes on (process output, log streams).
func (r *statusRecorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }
