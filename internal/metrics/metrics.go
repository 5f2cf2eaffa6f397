// Package metrics is agentd's Prometheus instrumentation: one registry (no
// global state) holding the collectors, the observers that the HTTP layer,
// the run path and the store's writer call (ObserveHTTP, run.Observer,
// store.CommitObserver), collectors read at scrape time (caches, database
// pools, the Go runtime and the process), and the /metrics handler.
//
// Every label is bounded by something an operator controls: routes are the
// route table's patterns (never the raw path), models and providers come from
// the configuration, outcomes, classes and status codes are closed sets. No
// run, session, agent or key id is ever a label; agents are named by callers,
// so they are not labels either. Organizations are created through the API,
// so they label tokens and credits only when Options.PerOrg says so.
package metrics

import (
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/agentd/agentd/internal/run"
	"github.com/agentd/agentd/internal/store"
)

// Options shape the metrics.
type Options struct {
	// PerOrg labels tokens and credits by organization (its name, label org)
	// as well as by model: one series per organization and model. Leave it off
	// unless organizations are few; every new organization adds series.
	PerOrg bool
}

// Metrics is agentd's registry and its instruments.
type Metrics struct {
	reg    *prometheus.Registry
	perOrg bool

	httpRequests *prometheus.CounterVec   // route, code
	httpDuration *prometheus.HistogramVec // route

	runs      *prometheus.CounterVec   // model, outcome, class
	tokens    *prometheus.CounterVec   // model, kind [, org]
	credits   *prometheus.CounterVec   // model [, org]
	upstream  *prometheus.HistogramVec // provider, model
	upErrors  *prometheus.CounterVec   // provider, class
	retries   *prometheus.CounterVec   // provider, model
	fallbacks *prometheus.CounterVec   // provider, model
	holds     prometheus.Gauge
	leases    prometheus.Gauge

	batch  prometheus.Histogram
	commit prometheus.Histogram

	caches *cacheCollector

	// Children resolved once per label set: the run path looks them up in a
	// sync.Map instead of hashing label values on every observation.
	httpSeries sync.Map // httpKey → *httpSeries
	runSeries  sync.Map // seriesKey → *runSeries
	callSeries sync.Map // seriesKey → *callSeries
}

// latencyBuckets suit requests and model calls: milliseconds for the API, up
// to minutes for a long reply or stream.
var latencyBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120}

// Token kinds, the tokens metric's kind label. cached_input and cache_write
// are parts of input, reasoning a part of output.
var tokenKinds = [...]string{"input", "output", "cached_input", "cache_write", "reasoning"}

// New returns the metrics, registered with the Go runtime's and the process's
// collectors.
func New(o Options) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry(), perOrg: o.PerOrg}
	orgLabels := func(ls ...string) []string {
		if o.PerOrg {
			return append(ls, "org")
		}
		return ls
	}
	m.httpRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "agentd_http_requests_total",
		Help: "HTTP requests answered, by route (the route table's pattern; \"unmatched\" when none) and status code.",
	}, []string{"route", "code"})
	m.httpDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "agentd_http_request_duration_seconds",
		Help:    "Time from a request's arrival to the end of its answer (a stream's whole life), by route.",
		Buckets: latencyBuckets,
	}, []string{"route"})
	m.runs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "agentd_runs_total",
		Help: "Runs and embeddings calls that found their model, by the model that answered (or was tried last; for rejected runs, the one asked for), outcome (ok, failed, cancelled, rejected) and class (a failed run's failure class, a rejected run's error code, client_closed for cancelled).",
	}, []string{"model", "outcome", "class"})
	m.tokens = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "agentd_tokens_total",
		Help: "Tokens charged, by the model that answered and kind: input, output, and the parts cached_input and cache_write (of input) and reasoning (of output).",
	}, orgLabels("model", "kind"))
	m.credits = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "agentd_credits_charged_total",
		Help: "Credits charged for runs, by the model that answered.",
	}, orgLabels("model"))
	m.upstream = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "agentd_upstream_request_duration_seconds",
		Help:    "Duration of each call of a provider (every attempt, answered or failed), by provider and catalog model.",
		Buckets: latencyBuckets,
	}, []string{"provider", "model"})
	m.upErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "agentd_upstream_errors_total",
		Help: "Failed calls of a provider, by provider and class (rate_limited, upstream_error, timeout, provider_auth, provider_quota, invalid_request, context_length_exceeded, client_closed).",
	}, []string{"provider", "class"})
	m.retries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "agentd_upstream_retries_total",
		Help: "Failed provider calls retried on the same model, by provider and model.",
	}, []string{"provider", "model"})
	m.fallbacks = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "agentd_upstream_fallbacks_total",
		Help: "Runs that fell back from a model to the next of its chain, by the provider and model fallen back from.",
	}, []string{"provider", "model"})
	m.holds = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "agentd_holds_in_flight",
		Help: "Credit holds of runs in flight in this process.",
	})
	m.leases = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "agentd_session_leases_in_flight",
		Help: "Session turn leases held by runs in flight in this process.",
	})
	m.batch = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "agentd_writer_batch_writes",
		Help:    "Writes the store's writer grouped into one commit.",
		Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256},
	})
	m.commit = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "agentd_writer_commit_duration_seconds",
		Help:    "Time the store's writer took to commit one batch (every write of the batch waited that long).",
		Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
	})
	m.caches = &cacheCollector{desc: prometheus.NewDesc("agentd_cache_requests_total",
		"Lookups of agentd's caches, by cache (keys, agents, sessions) and result (hit, miss).", []string{"cache", "result"}, nil)}
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.httpRequests, m.httpDuration, m.runs, m.tokens, m.credits, m.upstream, m.upErrors, m.retries, m.fallbacks,
		m.holds, m.leases, m.batch, m.commit, m.caches,
	)
	return m
}

// Handler serves the registry in Prometheus's exposition formats.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// Registry is the registry, for tests and further collectors.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// httpKey and httpSeries are a request's label set and its instruments.
type httpKey struct {
	route string
	code  int
}

type httpSeries struct {
	count prometheus.Counter
	dur   prometheus.Observer
}

// ObserveHTTP counts a finished request (reqlog.Options.Observe): route is
// the pattern it matched, "" for none.
func (m *Metrics) ObserveHTTP(route string, status int, _ int64, took time.Duration) {
	if route == "" {
		route = "unmatched"
	}
	k := httpKey{route, status}
	s, ok := m.httpSeries.Load(k)
	if !ok {
		s, _ = m.httpSeries.LoadOrStore(k, &httpSeries{
			count: m.httpRequests.WithLabelValues(route, strconv.Itoa(status)),
			dur:   m.httpDuration.WithLabelValues(route),
		})
	}
	hs := s.(*httpSeries)
	hs.count.Inc()
	hs.dur.Observe(took.Seconds())
}

// seriesKey names a model's series (and an organization's, with PerOrg; a
// provider's for calls).
type seriesKey struct{ a, b string }

// runSeries are the instruments of a model's runs that end well.
type runSeries struct {
	ok      prometheus.Counter
	tokens  [len(tokenKinds)]prometheus.Counter
	credits prometheus.Counter
}

func (m *Metrics) runSeriesOf(model, org string) *runSeries {
	if !m.perOrg {
		org = ""
	}
	k := seriesKey{model, org}
	if s, ok := m.runSeries.Load(k); ok {
		return s.(*runSeries)
	}
	labels := func(ls ...string) []string {
		if m.perOrg {
			return append(ls, org)
		}
		return ls
	}
	s := &runSeries{ok: m.runs.WithLabelValues(model, "ok", ""), credits: m.credits.WithLabelValues(labels(model)...)}
	for i, kind := range tokenKinds {
		s.tokens[i] = m.tokens.WithLabelValues(labels(model, kind)...)
	}
	got, _ := m.runSeries.LoadOrStore(k, s)
	return got.(*runSeries)
}

// RunEnded counts a run, its tokens and its charge (run.Observer).
func (m *Metrics) RunEnded(e run.RunEvent) {
	s := m.runSeriesOf(e.Model, e.OrgName)
	if e.Outcome == "ok" {
		s.ok.Inc()
	} else {
		m.runs.WithLabelValues(e.Model, e.Outcome, e.Class).Inc()
	}
	u := e.Usage
	for i, n := range [len(tokenKinds)]int{u.InputTokens, u.OutputTokens, u.CachedInputTokens, u.CacheWriteTokens, u.ReasoningTokens} {
		if n > 0 {
			s.tokens[i].Add(float64(n))
		}
	}
	if e.Cost > 0 {
		s.credits.Add(float64(e.Cost) / 1e6)
	}
}

// callSeries are the instruments of a provider's calls for one model.
type callSeries struct {
	dur       prometheus.Observer
	retries   prometheus.Counter
	fallbacks prometheus.Counter
}

// ProviderCalled counts a call of a provider (run.Observer).
func (m *Metrics) ProviderCalled(c run.ProviderCall) {
	k := seriesKey{c.Provider, c.Model}
	s, ok := m.callSeries.Load(k)
	if !ok {
		s, _ = m.callSeries.LoadOrStore(k, &callSeries{
			dur:       m.upstream.WithLabelValues(c.Provider, c.Model),
			retries:   m.retries.WithLabelValues(c.Provider, c.Model),
			fallbacks: m.fallbacks.WithLabelValues(c.Provider, c.Model),
		})
	}
	cs := s.(*callSeries)
	cs.dur.Observe(c.Took.Seconds())
	if c.Class != "" {
		m.upErrors.WithLabelValues(c.Provider, c.Class).Inc()
	}
	switch c.Next {
	case run.NextRetry:
		cs.retries.Inc()
	case run.NextFallback:
		cs.fallbacks.Inc()
	}
}

// Reserved moves the gauges of holds and leases in flight (run.Observer).
func (m *Metrics) Reserved(what run.Reservation, delta int) {
	switch what {
	case run.ReservationHold:
		m.holds.Add(float64(delta))
	case run.ReservationLease:
		m.leases.Add(float64(delta))
	}
}

// ObserveCommit records a commit of the store's writer (store.CommitObserver).
func (m *Metrics) ObserveCommit(writes int, took time.Duration) {
	m.batch.Observe(float64(writes))
	m.commit.Observe(took.Seconds())
}

var (
	_ run.Observer         = (*Metrics)(nil)
	_ store.CommitObserver = (*Metrics)(nil)
)
