package agents

import "sync/atomic"

// cacheStats counts a cache's lookups, for metrics.
type cacheStats struct{ hits, misses atomic.Uint64 }

func (c *cacheStats) hit()  { c.hits.Add(1) }
func (c *cacheStats) miss() { c.misses.Add(1) }

// CacheStats reports how many times the compiled-agent cache answered a run's agent
// from memory (hits) or read it from the database (misses).
func (s *Service) CacheStats() (hits, misses uint64) {
	return s.stats.hits.Load(), s.stats.misses.Load()
}
