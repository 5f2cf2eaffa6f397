package main

import (
	"io"
	"log/slog"
	"net/http"

	"github.com/agentd/agentd/internal/api"
	"github.com/agentd/agentd/internal/config"
	"github.com/agentd/agentd/internal/metrics"
	"github.com/agentd/agentd/internal/reqlog"
	"github.com/agentd/agentd/internal/store"
)

// newLogger is serve's log on w as log.* configures it: text or JSON, at its
// level, every line of a request carrying the request's id, route,
// organization and key, secrets masked and contents kept out
// (reqlog.NewHandler).
func newLogger(w io.Writer, c config.Log) *slog.Logger {
	level := slog.LevelInfo
	switch c.Level {
	case "debug":
		level = slog.LevelDebug
	case "warn":
		level = slog.LevelWarn
	case "error":
		level = slog.LevelError
	}
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler = slog.NewTextHandler(w, opts)
	if c.Format == config.LogJSON {
		h = slog.NewJSONHandler(w, opts)
	}
	return slog.New(reqlog.NewHandler(h, reqlog.HandlerOptions{Contents: c.Contents}))
}

// newMetrics is the metrics registry when metrics.enabled; nil otherwise.
func newMetrics(cfg *config.Config) *metrics.Metrics {
	if !cfg.Metrics.Enabled {
		return nil
	}
	return metrics.New(metrics.Options{PerOrg: cfg.Metrics.PerOrg})
}

// metricsHandler is what the admin listener serves at /metrics: nil without metrics.
func metricsHandler(m *metrics.Metrics) http.Handler {
	if m == nil {
		return nil
	}
	return m.Handler()
}

// instrument connects the metrics to what they observe: the run path, the
// store's writer and pools, the caches, and /metrics on the API listener when
// a token guards it. Without metrics it only sets log.contents.
func instrument(m *metrics.Metrics, cfg *config.Config, db *store.DB, srv *api.Server, replicas bool) {
	srv.Runner.LogContents = cfg.Log.Contents
	if m == nil {
		return
	}
	srv.Runner.Observer = m
	db.ObserveCommits(m)
	m.WatchDB(db)
	m.WatchCache("keys", srv.Auth.CacheStats)
	m.WatchCache("agents", srv.Agents.CacheStats)
	if !replicas { // on PostgreSQL no history window is cached
		m.WatchCache("sessions", srv.Sessions.CacheStats)
	}
	if cfg.Metrics.Token != "" {
		srv.Metrics, srv.MetricsToken = m.Handler(), cfg.Metrics.Token
	}
}

// requestLog wraps the API's handler: request ids, the access log (log.access)
// and the HTTP metrics.
func requestLog(h http.Handler, cfg *config.Config, log *slog.Logger, m *metrics.Metrics) http.Handler {
	o := reqlog.Options{Log: log, Access: cfg.Log.Access}
	if m != nil {
		o.Observe = m.ObserveHTTP
	}
	return reqlog.Middleware(h, o)
}
