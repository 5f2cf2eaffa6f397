package main

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/agentd/agentd/internal/clock"
	"github.com/agentd/agentd/internal/config"
	"github.com/agentd/agentd/internal/ratelimit"
)

// rateLimiter makes the rate limiter of cfg: limits.rate's defaults, in this
// process's memory or, with redis, in Redis, shared by the replicas. Its slots
// of runs in flight outlive any run, as holds do. Metrics read its Degraded and
// Transitions.
func rateLimiter(cfg *config.Config, log *slog.Logger, clk clock.Clock) (*ratelimit.Limiter, error) {
	runTimeout := time.Duration(cfg.Limits.RunTimeout)
	limits := func(l config.RateLimit) ratelimit.Limits {
		return ratelimit.Limits{RPM: l.RPM, TPM: l.TPM, Concurrent: l.Concurrent}
	}
	rl, err := ratelimit.New(ratelimit.Options{
		Key: limits(cfg.Limits.Rate.Key), Org: limits(cfg.Limits.Rate.Org),
		Redis: cfg.Redis, SlotTTL: runTimeout + min(runTimeout, time.Minute),
		Clock: clk, Log: log,
	})
	if err != nil {
		return nil, err
	}
	if cfg.Limits.Rate != (config.RateLimits{}) || cfg.Redis != "" {
		where := "in this process: each replica limits alone"
		if rl.Shared() {
			where = "in Redis, shared by the replicas"
		}
		show := func(l config.RateLimit) string {
			return fmt.Sprintf("rpm %d, tpm %d, concurrent %d (0: unlimited)", l.RPM, l.TPM, l.Concurrent)
		}
		log.Info("rate limits", "key", show(cfg.Limits.Rate.Key), "org", show(cfg.Limits.Rate.Org), "counted", where)
	}
	return rl, nil
}
