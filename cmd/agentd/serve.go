package main

import (
	"context"
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
	"github.com/agentd/agentd/internal/config"
	"github.com/agentd/agentd/internal/llm"
	"github.com/agentd/agentd/internal/llm/anthropic"
	"github.com/agentd/agentd/internal/llm/offline"
	"github.com/agentd/agentd/internal/llm/openai"
	agentrun "github.com/agentd/agentd/internal/run"
	"github.com/agentd/agentd/internal/session"
	"github.com/agentd/agentd/internal/store"
	"github.com/agentd/agentd/internal/tokens"
)

// serve runs the server until ctx is done. ready, when not nil, receives the
// listening address once /healthz would answer 200.
func serve(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer, ready chan<- string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o config.Overrides
	fs.StringVar(&o.Addr, "addr", "", "listen address (default 127.0.0.1:8080; env AGENTD_ADDR)")
	fs.StringVar(&o.AdminAddr, "admin-addr", "", "serve /debug/pprof on this address (default off; env AGENTD_ADMIN_ADDR)")
	fs.StringVar(&o.DB, "db", "", "database: sqlite:PATH (default sqlite:agentd.db; env AGENTD_DB)")
	fs.StringVar(&o.ConfigFile, "config", "", "YAML configuration file (env AGENTD_CONFIG)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("serve: unexpected argument %q", fs.Arg(0))
	}
	cfg, err := config.Load(o, getenv)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))

	db, err := store.Open(ctx, cfg.DB, store.Options{Synchronous: cfg.SQLite.Synchronous, MaxBytes: cfg.SQLite.MaxMB << 20})
	if err != nil {
		return err
	}
	defer db.Close()

	if err := bootstrap(ctx, db, cfg.BootstrapKey, stdout); err != nil {
		return err
	}

	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return err
	}
	publicURL := strings.TrimRight(cfg.PublicURL, "/")
	if publicURL == "" {
		publicURL = "http://" + ln.Addr().String()
	}
	srv := newServer(cfg, db, log, publicURL)
	sweepCtx, stopSweeps := context.WithCancel(ctx)
	sweepsDone := make(chan struct{})
	go func() {
		defer close(sweepsDone)
		sweepLoop(sweepCtx, cfg, srv, log)
	}()
	defer func() { stopSweeps(); <-sweepsDone }()
	// inflight counts handlers still running, so that the database outlives every
	// request even when a shutdown has to cut streams.
	var inflight sync.WaitGroup
	handler := srv.Handler()
	hs := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			inflight.Add(1)
			defer inflight.Done()
			handler.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       60 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 2)
	// api.Listener: what net/http answers itself (431, malformed requests) is JSON too.
	go func() { errc <- hs.Serve(api.Listener(ln)) }()
	if cfg.AdminAddr != "" {
		admin, err := adminServer(cfg.AdminAddr, log, stdout)
		if err != nil {
			return err
		}
		defer admin.Close()
		go func() {
			if err := admin.Serve(api.Listener(admin.ln)); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- err
			}
		}()
	}
	log.Info("agentd serving", "addr", ln.Addr().String(), "db", cfg.DB, "models", len(cfg.Models))
	fmt.Fprintf(stdout, "agentd listening on http://%s\n", ln.Addr())
	if ready != nil {
		ready <- ln.Addr().String()
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

// newServer wires the services.
func newServer(cfg *config.Config, db *store.DB, log *slog.Logger, publicURL string) *api.Server {
	now := time.Now
	cat := buildCatalog(cfg)
	ag := agents.New(db, cat, now)
	accts := billing.New(db, time.Duration(cfg.Limits.RunTimeout)+time.Minute)
	runner := &agentrun.Runner{
		Agents: ag, Catalog: cat, DB: db, Accounts: accts, Leases: session.NewLeases(time.Duration(cfg.Limits.RunTimeout) + time.Minute),
		SessionWait: time.Duration(cfg.Limits.SessionWait), Timeout: time.Duration(cfg.Limits.RunTimeout),
		Backoff: agentrun.Backoff{Initial: time.Duration(cfg.Retry.InitialBackoff), Max: time.Duration(cfg.Retry.MaxBackoff)},
		IdemTTL: time.Duration(cfg.Idempotency.TTL),
		Now:     now, Log: log,
	}
	return &api.Server{
		Auth: auth.New(db), Agents: ag, Runner: runner, DB: db, Accounts: accts, Catalog: cat,
		Log: log, Now: now, PublicURL: publicURL,
		MaxBodyBytes: cfg.Limits.MaxBodyBytes, MaxMessageChars: cfg.Limits.MaxMessageChars,
		StreamKeepAlive: time.Duration(cfg.Limits.StreamKeepAlive),
	}
}

// admin is the private listener for profiling.
type admin struct {
	*http.Server
	ln net.Listener
}

// adminServer listens on addr for /debug/pprof (CPU, heap, goroutine, mutex and
// block profiles, execution traces), apart from the API so that it is never
// exposed with it.
func adminServer(addr string, log *slog.Logger, stdout io.Writer) (*admin, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("admin listener: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	fmt.Fprintf(stdout, "agentd admin listening on http://%s/debug/pprof/\n", ln.Addr())
	return &admin{Server: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}, ln: ln}, nil
}

// sweepLoop runs the sweepers every cfg.SweepInterval until ctx is done: holds
// and session leases whose run died, expired idempotency records, idle sessions,
// ledger rows past retention. Each sweep deletes in bounded batches so that it
// never holds the writer for long.
func sweepLoop(ctx context.Context, cfg *config.Config, srv *api.Server, log *slog.Logger) {
	const batch = 1000
	t := time.NewTicker(time.Duration(cfg.SweepInterval))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		if n := srv.Accounts.Sweep(); n > 0 {
			log.Warn("released holds of runs that never finished", "holds", n)
		}
		if n := srv.Runner.Leases.Sweep(); n > 0 {
			log.Warn("took back session leases of runs that never finished", "leases", n)
		}
		if _, err := srv.DB.SweepIdempotency(ctx, now.UnixMicro(), batch); err != nil && ctx.Err() == nil {
			log.Error("sweep idempotency records", "err", err)
		}
		idle := now.Add(-time.Duration(cfg.Sessions.IdleTTL)).UnixMicro()
		if n, err := srv.DB.SweepIdleSessions(ctx, idle, batch); err != nil && ctx.Err() == nil {
			log.Error("sweep idle sessions", "err", err)
		} else if n > 0 {
			srv.Runner.ForgetSessions() // no cached turns may outlive their rows
			log.Info("deleted idle sessions", "sessions", n)
		}
		if cfg.Ledger.Retention > 0 {
			before := now.Add(-time.Duration(cfg.Ledger.Retention)).UnixMicro()
			if n, err := srv.DB.PruneLedger(ctx, before, batch); err != nil && ctx.Err() == nil {
				log.Error("prune ledger", "err", err)
			} else if n > 0 {
				log.Info("pruned ledger rows past retention", "rows", n)
			}
		}
	}
}

// buildCatalog turns the configured providers and models into catalog entries.
// Config.Validate has checked every reference, so lookups cannot miss.
func buildCatalog(cfg *config.Config) *catalog.Catalog {
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
				BaseURL: p.BaseURL, APIKey: p.APIKey, Version: p.AnthropicVersion, Headers: p.Headers,
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
		p := kinds[m.Provider]
		retries := 0
		if p.MaxRetries != nil {
			retries = *p.MaxRetries
		}
		cm := &catalog.Model{
			ID: m.ID, Name: m.Name, ProviderName: m.Provider, Provider: providers[m.Provider], UpstreamModel: m.UpstreamModel,
			ContextWindow: m.ContextWindow, MaxOutputTokens: m.MaxOutputTokens,
			Price:     agentd.Price{InputPerM: in, OutputPerM: out},
			Count:     counter(m.Tokenizer),
			Tokenizer: m.Tokenizer,
			Timeout:   time.Duration(p.Timeout), MaxRetries: retries,
		}
		byID[m.ID] = cm
		models = append(models, cm)
	}
	for _, m := range cfg.Models {
		for _, f := range m.Fallbacks {
			byID[m.ID].Fallbacks = append(byID[m.ID].Fallbacks, byID[f])
		}
	}
	return catalog.New(models...)
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

// bootstrap makes sure the default organization exists and that someone can log in:
// the key in AGENTD_BOOTSTRAP_KEY, or on first start a new operator key printed once.
func bootstrap(ctx context.Context, db *store.DB, key string, stdout io.Writer) error {
	now := time.Now().UnixMicro()
	org, err := db.Org(ctx, store.DefaultOrgName)
	if agentd.ErrorCode(err) == agentd.ENotFound {
		org = &store.Org{ID: agentd.NewID("org"), Name: store.DefaultOrgName, Created: now}
		err = db.Tx(ctx, func(tx *store.Tx) error { return tx.CreateOrg(ctx, org) })
	}
	if err != nil {
		return fmt.Errorf("bootstrap: %w", err)
	}
	if key != "" {
		if len(key) < 16 {
			return fmt.Errorf("bootstrap: AGENTD_BOOTSTRAP_KEY must be at least 16 characters")
		}
		if _, err := db.KeyByHash(ctx, auth.Hash(key)); err == nil {
			return nil // already there (and if revoked, it stays revoked)
		}
	} else {
		n, err := db.CountKeys(ctx)
		if err != nil {
			return fmt.Errorf("bootstrap: %w", err)
		}
		if n > 0 {
			return nil
		}
		key = auth.Mint()
		defer fmt.Fprintf(stdout, "\nagentd: created the operator key of organization %q; it is shown only this once:\n\n    %s\n\n", store.DefaultOrgName, key)
	}
	k := &store.Key{
		ID: agentd.NewID("key"), OrgID: org.ID, Name: "bootstrap", Prefix: auth.Prefix(key), Hash: auth.Hash(key),
		Scopes: []agentd.Scope{agentd.ScopeOperator}, Created: now,
	}
	k.Owner = k.ID
	if err := db.Tx(ctx, func(tx *store.Tx) error { return tx.CreateKey(ctx, k) }); err != nil {
		return fmt.Errorf("bootstrap: %w", err)
	}
	return nil
}
