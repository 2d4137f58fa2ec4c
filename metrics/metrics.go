// Package metrics holds ekm's Prometheus collectors. One *Metrics is made per
// server and passed to the packages that record into it; nil is allowed
// everywhere and records nothing, which keeps library use and tests simple.
package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics are the collectors of one server.
type Metrics struct {
	Registry     *prometheus.Registry
	KMSCalls     *prometheus.HistogramVec // provider, op, outcome
	CacheHits    prometheus.Counter
	CacheMisses  prometheus.Counter
	HTTPRequests *prometheus.HistogramVec // route, method, code
	KeyStatus    *prometheus.GaugeVec     // status → number of external keys
	ProbeRound   prometheus.Gauge         // seconds the last complete probe round took
	KeyEvents    *prometheus.CounterVec   // event (unavailable, restored, degraded, rotated)
}

// New registers every collector in a fresh registry.
func New() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		KMSCalls: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "ekm_kms_call_duration_seconds", Help: "KMS calls by provider, operation and outcome.",
			Buckets: []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"provider", "op", "outcome"}),
		CacheHits:   prometheus.NewCounter(prometheus.CounterOpts{Name: "ekm_project_key_cache_hits_total", Help: "Project key cache hits."}),
		CacheMisses: prometheus.NewCounter(prometheus.CounterOpts{Name: "ekm_project_key_cache_misses_total", Help: "Project key cache misses (each leads to at most one KMS unwrap)."}),
		HTTPRequests: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "ekm_http_request_duration_seconds", Help: "HTTP requests by route pattern, method and status code.",
			Buckets: prometheus.DefBuckets,
		}, []string{"route", "method", "code"}),
		KeyStatus:  prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ekm_external_keys", Help: "External keys in use by health status, as seen by this replica's probe."}, []string{"status"}),
		ProbeRound: prometheus.NewGauge(prometheus.GaugeOpts{Name: "ekm_probe_round_seconds", Help: "How long this replica's last complete health probe round took (checks, then rewraps after KEK rotations)."}),
		KeyEvents:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ekm_external_key_events_total", Help: "External key health transitions seen by this replica."}, []string{"event"}),
	}
	m.Registry.MustRegister(m.KMSCalls, m.CacheHits, m.CacheMisses, m.HTTPRequests, m.KeyStatus, m.ProbeRound, m.KeyEvents,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// ObserveKMS records one KMS call.
func (m *Metrics) ObserveKMS(provider, op, outcome string, d time.Duration) {
	if m != nil {
		m.KMSCalls.WithLabelValues(provider, op, outcome).Observe(d.Seconds())
	}
}

// CacheHit / CacheMiss count project key cache lookups.
func (m *Metrics) CacheHit() {
	if m != nil {
		m.CacheHits.Inc()
	}
}
func (m *Metrics) CacheMiss() {
	if m != nil {
		m.CacheMisses.Inc()
	}
}

// KeyEvent counts a health transition.
func (m *Metrics) KeyEvent(event string) {
	if m != nil {
		m.KeyEvents.WithLabelValues(event).Inc()
	}
}
