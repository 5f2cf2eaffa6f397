package store

import (
	"database/sql"
	"time"
)

// CommitObserver is told about the writer's work, for metrics: each group
// commit, with the number of writes it took from the queue and how long
// committing them took (every write of the batch waited that long for it).
// It is called on the writer's goroutine: it must be quick and must not block.
type CommitObserver interface {
	ObserveCommit(writes int, took time.Duration)
}

// commitObserver boxes a CommitObserver for atomic.Pointer.
type commitObserver struct{ CommitObserver }

// ObserveCommits makes o the observer of the writer's commits (nil: none). A
// read-only database has no writer and ignores it.
func (db *DB) ObserveCommits(o CommitObserver) {
	if db.w == nil {
		return
	}
	if o == nil {
		db.w.obs.Store(nil)
		return
	}
	db.w.obs.Store(&commitObserver{o})
}

// observe tells the observer, if any, about a commit of writes begun at began.
func (w *writer) observe(writes int, began time.Time) {
	if o := w.obs.Load(); o != nil {
		o.ObserveCommit(writes, time.Since(began))
	}
}

// PoolStats are a connection pool's numbers (database/sql's DBStats).
type PoolStats struct {
	Pool              string // "read" or "write"
	MaxOpen           int    // the pool's limit (0: none)
	Open, InUse, Idle int
	WaitCount         int64 // connections waited for, in all
	WaitDuration      time.Duration
	MaxIdleClosed     int64
	MaxIdleTimeClosed int64
	MaxLifetimeClosed int64
}

// PoolStats returns the numbers of the read pool and, unless read-only, of
// the writer's.
func (db *DB) PoolStats() []PoolStats {
	out := make([]PoolStats, 0, 2)
	for _, p := range [...]struct {
		name string
		db   *sql.DB
	}{{"read", db.read}, {"write", db.write}} {
		if s, ok := statsOf(p.db); ok {
			s.Pool = p.name
			out = append(out, s)
		}
	}
	return out
}

// WriterQueue is how many writes wait for the writer (0 when read-only).
func (db *DB) WriterQueue() int {
	if db.w == nil {
		return 0
	}
	return len(db.w.queue)
}

func statsOf(p *sql.DB) (PoolStats, bool) {
	if p == nil {
		return PoolStats{}, false
	}
	s := p.Stats()
	return PoolStats{
		MaxOpen: s.MaxOpenConnections, Open: s.OpenConnections, InUse: s.InUse, Idle: s.Idle,
		WaitCount: s.WaitCount, WaitDuration: s.WaitDuration,
		MaxIdleClosed: s.MaxIdleClosed, MaxIdleTimeClosed: s.MaxIdleTimeClosed, MaxLifetimeClosed: s.MaxLifetimeClosed,
	}, true
}
