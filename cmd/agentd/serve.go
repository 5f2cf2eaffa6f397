package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"sync"
	"time"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/internal/agents"
	"github.com/agentd/agentd/internal/api"
	"github.com/agentd/agentd/internal/auth"
	"github.com/agentd/agentd/internal/billing"
	"github.com/agentd/agentd/internal/catalog"
	"github.com/agentd/agentd/internal/clock"
	"github.com/agentd/agentd/internal/config"
	"github.com/agentd/agentd/internal/llm"
	"github.com/agentd/agentd/internal/llm/anthropic"
	"github.com/agentd/agentd/internal/llm/offline"
	"github.com/agentd/agentd/internal/llm/openai"
	agentrun "github.com/agentd/agentd/internal/run"
	"github.com/agentd/agentd/internal/session"
	"github.com/agentd/agentd/internal/store"
	"github.com/agentd/agentd/internal/tokens"
	"github.com/agentd/agentd/internal/tracing"
)

// serveHooks let tests (and demo) watch and steer a server; nil in production.
type serveHooks struct {
	// ready receives the listening address once /healthz would answer 200.
	ready chan<- string
	// swept is called after each round of the sweepers.
	swept func()
	// clock replaces the system clock for everything that decides by time.
	clock clock.Clock
	// handled is called after each request's handler has returned.
	handled func(*http.Request)
	// httpServer is called with the API server before it serves.
	httpServer func(*http.Server)
	// reload, when it receives, reloads the configuration as SIGHUP does;
	// reloaded is called with each reload's outcome.
	reload   <-chan struct{}
	reloaded func(error)
}

// serve runs the server until ctx is done.
//
// The order matters: the configuration is validated and the listeners are bound
// before the database is opened (and locked), and only then is the bootstrap key
// minted, so a start that fails prints no key that would then be lost.
func serve(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer, hooks *serveHooks) error {
	if hooks == nil {
		hooks = &serveHooks{}
	}
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	var o config.Overrides
	fs.StringVar(&o.Addr, "addr", "", "listen address (default 127.0.0.1:8080; env AGENTD_ADDR)")
	fs.StringVar(&o.AdminAddr, "admin-addr", "", "serve /debug/pprof and /metrics on this address (default off; env AGENTD_ADMIN_ADDR)")
	fs.StringVar(&o.DB, "db", "", "database `DSN`: sqlite:PATH or postgres://… (default sqlite:agentd.db; env AGENTD_DB)")
	fs.StringVar(&o.ConfigFile, "config", "", "YAML configuration `FILE` (env AGENTD_CONFIG)")
	fs.StringVar(&o.Redis, "redis", "", "share the rate limits among replicas in this Redis: redis://host:6379/0 (env AGENTD_REDIS)")
	fs.StringVar(&o.TLSCert, "tls-cert", "", "serve HTTPS with this PEM certificate, read again when it changes (env AGENTD_TLS_CERT)")
	fs.StringVar(&o.TLSKey, "tls-key", "", "the certificate's PEM private key (env AGENTD_TLS_KEY)")
	if err := parseFlags(ctx, fs, args, stdout); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("serve: unexpected argument %q", fs.Arg(0))
	}
	cfg, err := config.Load(o, getenv)
	if err != nil {
		return err
	}
	log := newLogger(stderr, cfg.Log) // metrics.go
	mtr := newMetrics(cfg)
	var certs *certReloader // before anything is opened: a bad pair is a start-up error
	if cfg.TLS.CertFile != "" {
		if certs, err = newCertReloader(cfg.TLS.CertFile, cfg.TLS.KeyFile, log); err != nil {
			return err
		}
	}
	tr, err := tracing.Setup(ctx, getenv, shortVersion())
	if err != nil {
		return err
	}
	defer func() { // after the drain: the spans of the last runs go out too
		c, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := tr.Shutdown(c); err != nil {
			log.Warn("tracing: spans not exported at shutdown", "err", err)
		}
	}()
	if tr.Enabled {
		log.Info("tracing on: OTLP export", "to", tr.Describe)
	}

	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Addr, err)
	}
	defer ln.Close()
	var admin *adminListener
	if cfg.AdminAddr != "" {
		if admin, err = adminServer(cfg.AdminAddr, log, metricsHandler(mtr)); err != nil {
			return err
		}
		defer admin.Close()
	}

	clk := hooks.clock
	if clk == nil {
		clk = clock.Real
	}
	limits, err := rateLimiter(cfg, log, clk) // ratelimits.go
	if err != nil {
		return err
	}
	defer limits.Close()
	db, err := store.Open(ctx, cfg.DB, store.Options{
		Synchronous: cfg.SQLite.Synchronous, MaxBytes: cfg.SQLite.MaxMB << 20, Now: clk.Now,
		MaxConns: cfg.Postgres.MaxConns, StatementTimeout: time.Duration(cfg.Postgres.StatementTimeout),
		ApplicationName: cfg.Postgres.ApplicationName,
	})
	if err != nil {
		return err
	}
	defer db.Close()

	publicURL := strings.TrimRight(cfg.PublicURL, "/")
	if publicURL == "" {
		publicURL = "http://" + ln.Addr().String()
		if cfg.TLS.CertFile != "" {
			publicURL = "https://" + ln.Addr().String()
		}
	}
	// Replicas on PostgreSQL share session leases and in-flight marks as rows kept
	// alive by this replica's heartbeat; closing it (after the drain, before the
	// database) gives them back at once rather than when they expire.
	var rep *store.Replica
	if db.Dialect() == "postgres" {
		rep, err = db.NewReplica(store.ReplicaOptions{Now: clk.Now, OnBeat: func(err error) {
			if err != nil {
				log.Warn("replica heartbeat failed: leases of this replica expire unless it recovers", "err", err)
			}
		}})
		if err != nil {
			return err
		}
		defer rep.Close(context.WithoutCancel(ctx))
	}
	srv, sweeps := newServer(cfg, db, rep, log, clk, publicURL)
	srv.Limits, srv.Runner.Limits = limits, limits // requests per minute; a run's tokens and slot
	instrument(mtr, cfg, db, srv, rep != nil)
	srv.Propagator, srv.Runner.Tracer = tr.Propagator, tr.Provider.Tracer("github.com/agentd/agentd")
	sweeps.swept = hooks.swept
	minted, note, err := bootstrap(ctx, srv, cfg.BootstrapKey)
	if err != nil {
		return fmt.Errorf("bootstrap: %w", err)
	}
	if note != "" {
		log.Warn(note)
	}
	if minted != "" {
		fmt.Fprintf(stdout, "\nagentd: created the operator key of organization %q; it is shown only this once:\n\n    %s\n\n", agentd.DefaultOrgName, minted)
	}

	reloadCtx, stopReloads := context.WithCancel(ctx)
	reloadsDone := make(chan struct{})
	go func() {
		defer close(reloadsDone)
		watchReload(reloadCtx, hooks, o, getenv, cfg, srv, log)
	}()
	defer func() { stopReloads(); <-reloadsDone }()

	sweepCtx, stopSweeps := context.WithCancel(ctx)
	sweepsDone := make(chan struct{})
	go func() {
		defer close(sweepsDone)
		sweeps.loop(sweepCtx)
	}()
	defer func() { stopSweeps(); <-sweepsDone }()
	// inflight counts handlers still running, so that the database outlives every
	// request even when a shutdown has to cut streams.
	var inflight sync.WaitGroup
	handler := requestLog(srv.Handler(), cfg, log, mtr) // request ids, access log, HTTP metrics
	hs := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			inflight.Add(1)
			defer inflight.Done()
			if hooks.handled != nil {
				defer hooks.handled(r)
			}
			handler.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: time.Duration(cfg.Server.ReadHeaderTimeout),
		ReadTimeout:       time.Duration(cfg.Server.ReadTimeout),
		WriteTimeout:      time.Duration(cfg.Server.WriteTimeout),
		IdleTimeout:       time.Duration(cfg.Server.IdleTimeout),
		MaxHeaderBytes:    cfg.Server.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	if hooks.httpServer != nil {
		hooks.httpServer(hs)
	}
	errc := make(chan error, 2)
	// api.Listener: what net/http answers itself (431, malformed requests) is JSON too.
	scheme, serveLn := "http", ln
	if certs != nil {
		scheme, serveLn = "https", tls.NewListener(ln, &tls.Config{GetCertificate: certs.GetCertificate, MinVersion: tls.VersionTLS12})
	}
	go func() { errc <- hs.Serve(api.Listener(serveLn)) }()
	if admin != nil {
		fmt.Fprintf(stdout, "agentd admin listening on http://%s/debug/pprof/\n", admin.ln.Addr())
		go func() {
			if err := admin.Serve(api.Listener(admin.ln)); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- err
			}
		}()
	}
	log.Info("agentd serving", "addr", ln.Addr().String(), "db", store.Redact(cfg.DB), "models", len(cfg.Models))
	fmt.Fprintf(stdout, "agentd listening on %s://%s\n", scheme, ln.Addr())
	if hooks.ready != nil {
		hooks.ready <- ln.Addr().String()
	}

	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	// Drain: stop accepting, let requests and streams in flight finish for up to
	// limits.shutdown_timeout, then cut the rest. A cut stream's run sees its
	// context cancelled, charges what was generated and records it, so every
	// handler is waited for before the database closes.
	srv.Draining.Store(true)
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Duration(cfg.Limits.ShutdownTimeout))
	defer cancel()
	err = hs.Shutdown(shutdownCtx)
	if errors.Is(err, context.DeadlineExceeded) {
		log.Warn("shutdown timeout: closing connections still open", "timeout", time.Duration(cfg.Limits.ShutdownTimeout))
		err = hs.Close()
	}
	inflight.Wait()
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	log.Info("agentd stopped")
	return nil
}

// newServer wires the owners' services: one per piece of state (DESIGN.md "State:
// one owner each"), each taking the clock.
func newServer(cfg *config.Config, db *store.DB, rep *store.Replica, log *slog.Logger, clk clock.Clock, publicURL string) (*api.Server, *sweeper) {
	cat := buildCatalog(cfg)
	ag := agents.New(db, cat, clk, agents.Options{
		MaxPerOrg: cfg.Agents.MaxPerOrg, MaxBytes: cfg.Agents.MaxBytes, Reserved: api.ReservedAgentNames(),
	})
	// A hold outlives any run that could still settle it: the run's deadline plus a
	// margin for recording it (as long as the deadline, at most a minute).
	runTimeout := time.Duration(cfg.Limits.RunTimeout)
	ttl := runTimeout + min(runTimeout, time.Minute)
	// One node owns a SQLite file and keeps holds, leases and in-flight marks in
	// memory; replicas on PostgreSQL keep them in the database.
	var (
		accts     *billing.Accounts
		leases    session.Leases
		inflight  agentrun.InFlight
		memLeases *session.MemoryLeases
	)
	if rep != nil {
		accts = billing.NewShared(db, clk, ttl)
		leases = session.NewDBLeases(rep, clk)
		inflight = agentrun.NewDBInFlight(rep, clk)
	} else {
		accts = billing.New(db, clk, ttl)
		memLeases = session.NewMemoryLeases(ttl, clk)
		leases, inflight = memLeases, agentrun.NewMemoryInFlight()
	}
	sessions := session.New(db, leases, clk, session.Options{Wait: time.Duration(cfg.Limits.SessionWait)})
	runner := &agentrun.Runner{
		Agents: ag, Catalog: cat, DB: db, Accounts: accts, Sessions: sessions, InFlight: inflight,
		Timeout: time.Duration(cfg.Limits.RunTimeout),
		Backoff: agentrun.Backoff{Initial: time.Duration(cfg.Retry.InitialBackoff), Max: time.Duration(cfg.Retry.MaxBackoff)},
		IdemTTL: time.Duration(cfg.Idempotency.TTL),
		Clock:   clk, Log: log,
	}
	authn := auth.New(db, clk, auth.Options{})
	srv := &api.Server{
		Auth: authn, Keys: auth.NewService(db, authn, clk), Agents: ag, Runner: runner, Sessions: sessions,
		Accounts: accts, Ledger: billing.NewLedger(db, clk), Catalog: cat, Ready: db.Ready,
		Log: log, Clock: clk, PublicURL: publicURL,
		MaxBodyBytes: cfg.Limits.MaxBodyBytes, MaxMessageChars: cfg.Limits.MaxMessageChars,
		StreamKeepAlive: time.Duration(cfg.Limits.StreamKeepAlive),
	}
	sw := &sweeper{
		every: time.Duration(cfg.SweepInterval), clock: clk, log: log, db: db,
		accounts: accts, leases: memLeases, sessions: sessions,
		idleTTL: time.Duration(cfg.Sessions.IdleTTL), retention: time.Duration(cfg.Ledger.Retention),
	}
	return srv, sw
}

// adminListener is the private listener for profiling.
type adminListener struct {
	*http.Server
	ln net.Listener
}

// adminServer listens on addr for /debug/pprof (CPU, heap, goroutine, mutex and
// block profiles, execution traces) and, with metrics, /metrics, apart from the
// API so that they are never exposed with it.
func adminServer(addr string, log *slog.Logger, metrics http.Handler) (*adminListener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("admin listener on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	if metrics != nil {
		mux.Handle("GET /metrics", metrics) // private like pprof: no token here
	}
	return &adminListener{Server: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}, ln: ln}, nil
}

// Close closes the admin server, or its listener when it never served.
func (a *adminListener) Close() error { return errors.Join(a.Server.Close(), a.ln.Close()) }

// buildCatalog turns the configured providers and models into a catalog.
func buildCatalog(cfg *config.Config) *catalog.Catalog { return catalog.New(buildModels(cfg)...) }

// buildModels turns the configured providers and models into catalog entries,
// each provider new. Config.Validate has checked every reference, so lookups
// cannot miss.
func buildModels(cfg *config.Config) []*catalog.Model {
	providers := map[string]llm.Provider{}
	kinds := map[string]config.Provider{config.OfflineProvider: {Kind: config.KindOffline, Timeout: config.Duration(config.DefaultProviderTimeout)}}
	offlineModel := func() llm.Provider {
		c := tokens.O200k()
		return offline.New(offline.Options{Count: c.Count, Truncate: c.Truncate})
	}
	providers[config.OfflineProvider] = offlineModel()
	for _, p := range cfg.Providers {
		kinds[p.Name] = p
		switch p.Kind {
		case config.KindOpenAI:
			providers[p.Name] = openai.New(openai.Options{
				BaseURL: p.BaseURL, APIKey: p.APIKey, Headers: p.Headers, MaxTokensField: p.MaxTokensField,
			})
		case config.KindAnthropic:
			providers[p.Name] = anthropic.New(anthropic.Options{
				BaseURL: p.BaseURL, APIKey: p.APIKey, Version: p.AnthropicVersion, Headers: p.Headers, DropParams: p.DropParams,
			})
		case config.KindOffline:
			providers[p.Name] = providers[config.OfflineProvider]
		}
	}
	byID := map[string]*catalog.Model{}
	var models []*catalog.Model
	for _, m := range cfg.Models {
		in, _ := agentd.CreditsToMicros(m.Price.Input)
		out, _ := agentd.CreditsToMicros(m.Price.Output)
		cached, _ := agentd.CreditsToMicros(m.Price.Cached())
		written, _ := agentd.CreditsToMicros(m.Price.CacheWriting())
		p := kinds[m.Provider]
		retries := 0
		if p.MaxRetries != nil {
			retries = *p.MaxRetries
		}
		cm := &catalog.Model{
			ID: m.ID, Name: m.Name, ProviderName: m.Provider, ProviderKind: string(p.Kind), Provider: providers[m.Provider], UpstreamModel: m.UpstreamModel,
			ContextWindow: m.ContextWindow, MaxOutputTokens: m.MaxOutputTokens,
			Price:     agentd.Price{InputPerM: in, OutputPerM: out, CachedInputPerM: cached, CacheWritePerM: written},
			Count:     counter(m.Tokenizer),
			Tokenizer: m.Tokenizer,
			Timeout:   time.Duration(p.Timeout), MaxRetries: retries,
			Embedding: m.Type == config.TypeEmbedding,
		}
		byID[m.ID] = cm
		models = append(models, cm)
	}
	for _, m := range cfg.Models {
		for _, f := range m.Fallbacks {
			byID[m.ID].Fallbacks = append(byID[m.ID].Fallbacks, byID[f])
		}
	}
	return models
}

// counter returns the token counter of a tokenizer name.
func counter(name string) func(string) int {
	switch name {
	case config.TokenizerO200k:
		return tokens.O200k().Count
	case config.TokenizerCl100k:
		return tokens.Cl100k().Count
	}
	return tokens.Estimate
}

// bootstrap makes sure the default organization exists and that someone can sign
// in as its operator (auth.Service.Bootstrap). minted is a new key to show once.
func bootstrap(ctx context.Context, srv *api.Server, secret string) (minted, note string, err error) {
	org, err := srv.Ledger.EnsureOrg(ctx, agentd.DefaultOrgName)
	if err != nil {
		return "", "", err
	}
	return srv.Keys.Bootstrap(ctx, org, secret)
}
