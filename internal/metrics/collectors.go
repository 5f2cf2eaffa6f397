package metrics

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentd/agentd/internal/store"
)

// cacheCollector reads the caches' counts at scrape time, so that a lookup
// costs its cache one atomic add and nothing here.
type cacheCollector struct {
	desc *prometheus.Desc

	mu     sync.Mutex
	caches []watchedCache
}

type watchedCache struct {
	name  string
	stats func() (hits, misses uint64)
}

func (c *cacheCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *cacheCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	caches := c.caches
	c.mu.Unlock()
	for _, w := range caches {
		hits, misses := w.stats()
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(hits), w.name, "hit")
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(misses), w.name, "miss")
	}
}

// WatchCache reports a cache's hits and misses as agentd_cache_requests_total
// with cache=name (keys, agents, sessions).
func (m *Metrics) WatchCache(name string, stats func() (hits, misses uint64)) {
	m.caches.mu.Lock()
	defer m.caches.mu.Unlock()
	m.caches.caches = append(m.caches.caches, watchedCache{name, stats})
}

// WatchDB reports the database's connection pools, as database/sql's stats
// are usually reported (go_sql_*, with db_name the pool: read or write), and
// the writer's queue (agentd_writer_queue_length).
func (m *Metrics) WatchDB(db *store.DB) {
	m.reg.MustRegister(newPoolCollector(db.PoolStats), prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "agentd_writer_queue_length",
		Help: "Writes queued for the store's writer.",
	}, func() float64 { return float64(db.WriterQueue()) }))
}

// poolCollector is the shape of client_golang's DBStats collector over
// store.PoolStats (no database/sql type leaves the store).
type poolCollector struct {
	stats func() []store.PoolStats

	maxOpen, open, inUse, idle                                *prometheus.Desc
	waitCount, waitDuration, maxIdleClosed, maxIdleTimeClosed *prometheus.Desc
	maxLifetimeClosed                                         *prometheus.Desc
}

func newPoolCollector(stats func() []store.PoolStats) *poolCollector {
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc("go_sql_"+name, help, []string{"db_name"}, nil)
	}
	return &poolCollector{
		stats:             stats,
		maxOpen:           d("max_open_connections", "Maximum number of open connections to the database."),
		open:              d("open_connections", "The number of established connections both in use and idle."),
		inUse:             d("in_use_connections", "The number of connections currently in use."),
		idle:              d("idle_connections", "The number of idle connections."),
		waitCount:         d("wait_count_total", "The total number of connections waited for."),
		waitDuration:      d("wait_duration_seconds_total", "The total time blocked waiting for a new connection."),
		maxIdleClosed:     d("max_idle_closed_total", "The total number of connections closed due to SetMaxIdleConns."),
		maxIdleTimeClosed: d("max_idle_time_closed_total", "The total number of connections closed due to SetConnMaxIdleTime."),
		maxLifetimeClosed: d("max_lifetime_closed_total", "The total number of connections closed due to SetConnMaxLifetime."),
	}
}

func (c *poolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.maxOpen, c.open, c.inUse, c.idle, c.waitCount, c.waitDuration, c.maxIdleClosed, c.maxIdleTimeClosed, c.maxLifetimeClosed} {
		ch <- d
	}
}

func (c *poolCollector) Collect(ch chan<- prometheus.Metric) {
	g, n := prometheus.GaugeValue, prometheus.CounterValue
	for _, s := range c.stats() {
		ch <- prometheus.MustNewConstMetric(c.maxOpen, g, float64(s.MaxOpen), s.Pool)
		ch <- prometheus.MustNewConstMetric(c.open, g, float64(s.Open), s.Pool)
		ch <- prometheus.MustNewConstMetric(c.inUse, g, float64(s.InUse), s.Pool)
		ch <- prometheus.MustNewConstMetric(c.idle, g, float64(s.Idle), s.Pool)
		ch <- prometheus.MustNewConstMetric(c.waitCount, n, float64(s.WaitCount), s.Pool)
		ch <- prometheus.MustNewConstMetric(c.waitDuration, n, s.WaitDuration.Seconds(), s.Pool)
		ch <- prometheus.MustNewConstMetric(c.maxIdleClosed, n, float64(s.MaxIdleClosed), s.Pool)
		ch <- prometheus.MustNewConstMetric(c.maxIdleTimeClosed, n, float64(s.MaxIdleTimeClosed), s.Pool)
		ch <- prometheus.MustNewConstMetric(c.maxLifetimeClosed, n, float64(s.MaxLifetimeClosed), s.Pool)
	}
}
