package config

import (
	"net/url"
	"strings"
)

// RateLimits are the default rate limits (README, "Rate limits"): Key applies
// to every key, field by field, unless the key has its own (PATCH
// /api/v3/keys/{id} rate_limits); Org to every organization, over all its keys.
//
//	limits:
//	  rate:
//	    key: {rpm: 600, tpm: 200000, concurrent: 20}
//	    org: {rpm: 3000, tpm: 1000000, concurrent: 100}
type RateLimits struct {
	Key RateLimit `yaml:"key"`
	Org RateLimit `yaml:"org"`
}

// RateLimit is one set of limits; 0 (the default) is unlimited.
type RateLimit struct {
	// RPM counts requests per minute on the routes that do work: runs, chat and
	// text completions, embeddings, estimates.
	RPM int64 `yaml:"rpm"`
	// TPM counts tokens per minute of runs (and embeddings): a run is admitted
	// for the most it may use, then counts what it used.
	TPM int64 `yaml:"tpm"`
	// Concurrent counts runs in flight, streams included.
	Concurrent int64 `yaml:"concurrent"`
}

// maxRateLimit is agentd.MaxRateLimit (config imports nothing of agentd).
const maxRateLimit = 1_000_000_000_000

// validateRateLimits checks limits.rate and redis.
func (c *Config) validateRateLimits(bad func(string, ...any)) {
	for _, l := range []struct {
		name string
		v    int64
	}{
		{"key.rpm", c.Limits.Rate.Key.RPM}, {"key.tpm", c.Limits.Rate.Key.TPM}, {"key.concurrent", c.Limits.Rate.Key.Concurrent},
		{"org.rpm", c.Limits.Rate.Org.RPM}, {"org.tpm", c.Limits.Rate.Org.TPM}, {"org.concurrent", c.Limits.Rate.Org.Concurrent},
	} {
		if l.v < 0 || l.v > maxRateLimit {
			bad("limits.rate.%s %d must be between 0 (unlimited) and %d", l.name, l.v, int64(maxRateLimit))
		}
	}
	if c.Redis == "" {
		return
	}
	u, err := url.Parse(c.Redis)
	switch {
	case err != nil:
		bad("redis: %q is not a URL like redis://host:6379/0", redactURL(c.Redis))
	case u.Scheme == "unix":
		if u.Path == "" {
			bad("redis: %q names no socket (unix:///path/to/redis.sock)", redactURL(c.Redis))
		}
	case u.Scheme != "redis" && u.Scheme != "rediss":
		bad("redis: %q: want redis://, rediss:// or unix://", redactURL(c.Redis))
	case u.Host == "" || strings.HasPrefix(u.Host, ":"):
		bad("redis: %q names no host (redis://host:6379/0)", redactURL(c.Redis))
	}
}
