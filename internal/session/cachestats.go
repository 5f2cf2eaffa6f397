package session

import "sync/atomic"

// cacheStats counts a cache's lookups, for metrics.
type cacheStats struct{ hits, misses atomic.Uint64 }

func (c *cacheStats) hit()  { c.hits.Add(1) }
func (c *cacheStats) miss() { c.misses.Add(1) }

// CacheStats reports how many times the recent-turns cache answered a turn's history
// window from memory (hits) or it was read from the database (misses); both 0
// on PostgreSQL, which has no such cache.
func (s *Service) CacheStats() (hits, misses uint64) {
	if s.recent == nil {
		return 0, 0
	}
	return s.recent.stats.hits.Load(), s.recent.stats.misses.Load()
}
