package auth

import "sync/atomic"

// cacheStats counts a cache's lookups, for metrics.
type cacheStats struct{ hits, misses atomic.Uint64 }

func (c *cacheStats) hit()  { c.hits.Add(1) }
func (c *cacheStats) miss() { c.misses.Add(1) }

// CacheStats reports how many times the principal cache answered a key's lookup from
// memory (hits) or read the key from the database (misses).
func (a *Authenticator) CacheStats() (hits, misses uint64) {
	return a.stats.hits.Load(), a.stats.misses.Load()
}
