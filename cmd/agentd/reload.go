package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/agentd/agentd/internal/api"
	"github.com/agentd/agentd/internal/config"
)

// watchReload reloads the configuration on SIGHUP (or hooks.reload) until ctx
// ends: the file and environment are read and validated again as at start,
// and the catalog's models and providers are replaced at once. Runs in flight
// finish on the models they started with; agents find their model anew on
// their next run. A configuration that does not load is refused, with a log
// line, and the running one kept. Settings read only at start (listeners, the
// database, TLS files, limits) wait for a restart, and the log says so.
func watchReload(ctx context.Context, hooks *serveHooks, o config.Overrides, getenv func(string) string, running *config.Config, srv *api.Server, log *slog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		case <-hooks.reload:
		}
		err := reload(o, getenv, running, srv, log)
		if hooks.reloaded != nil {
			hooks.reloaded(err)
		}
	}
}

func reload(o config.Overrides, getenv func(string) string, running *config.Config, srv *api.Server, log *slog.Logger) error {
	next, err := config.Load(o, getenv)
	if err != nil {
		log.Error("reload refused: the configuration does not load; the running one is kept", "err", err)
		return err
	}
	for _, s := range []struct{ name, was, now string }{
		{"addr", running.Addr, next.Addr}, {"admin_addr", running.AdminAddr, next.AdminAddr}, {"db", running.DB, next.DB},
		{"tls.cert_file", running.TLS.CertFile, next.TLS.CertFile}, {"tls.key_file", running.TLS.KeyFile, next.TLS.KeyFile},
	} {
		if s.was != s.now {
			log.Warn("reload: this setting takes effect at the next start", "setting", s.name)
		}
	}
	srv.Catalog.Replace(buildModels(next)...)
	srv.Agents.ForgetAll()
	log.Info("configuration reloaded: models and providers replaced", "models", len(next.Models), "providers", len(next.Providers))
	return nil
}
