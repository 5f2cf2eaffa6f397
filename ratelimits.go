package agentd

// RateLimits are a key's own rate limits, set through the keys API: requests
// per minute, tokens per minute and runs in flight. A nil field is not set, and
// the configured default for keys (limits.rate.key) applies; 0 is unlimited.
// An organization's limits are the configured ones (limits.rate.org).
type RateLimits struct {
	RPM        *int64
	TPM        *int64
	Concurrent *int64
}

// MaxRateLimit bounds each rate limit, so that sums of tokens stay far inside
// int64 and inside the exact integers of a double (Redis scripts count in Lua
// numbers).
const MaxRateLimit = 1_000_000_000_000
