-- A key's own rate limits (agentd.RateLimits), set through the keys API:
-- requests per minute, tokens per minute, runs in flight. NULL: the configured
-- default for keys applies; 0: unlimited. The counters behind them are not
-- stored: they live in memory or in Redis (internal/ratelimit).
ALTER TABLE api_keys ADD COLUMN rate_rpm BIGINT CHECK (rate_rpm >= 0);
ALTER TABLE api_keys ADD COLUMN rate_tpm BIGINT CHECK (rate_tpm >= 0);
ALTER TABLE api_keys ADD COLUMN rate_concurrent BIGINT CHECK (rate_concurrent >= 0);
