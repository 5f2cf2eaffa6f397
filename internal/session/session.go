// Package session owns conversations: the window of history a turn sees, the
// serialization of a session's turns (leases), and a session's deletion and
// retention.
//
// A turn holds its session's lease from loading history until its own turn is
// stored (Begin … End), so that concurrent turns on one session never interleave
// or read a stale history, and waiting turns are served first come, first served.
// On SQLite the history window is cached in memory (recent.go; on PostgreSQL it
// is not, see New), and only the lease holder writes that cache: it fills it from
// the database and appends its own turn in the commit hook of the transaction
// that stores it. Readers without the lease (estimates) only read. Deleting a session takes its lease too, so a turn in
// flight is stored before the delete and none starts during it.
package session

import (
	"context"
	"time"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/internal/clock"
	"github.com/agentd/agentd/internal/store"
)

// Service is the owner of sessions.
type Service struct {
	db     *store.DB
	leases Leases
	clock  clock.Clock
	wait   time.Duration
	recent *recentTurns // nil on PostgreSQL (see New)
}

// Options tune a Service.
type Options struct {
	// Wait is how long a turn (or a delete) waits for a busy session before
	// ESessionBusy.
	Wait time.Duration
	// RecentBytes bounds the session turns kept in memory (DefaultRecentBytes
	// when 0). On PostgreSQL none are kept (see New).
	RecentBytes int
}

// DefaultRecentBytes bounds the text of recent session turns kept in memory when
// Options.RecentBytes is 0.
const DefaultRecentBytes = 16 << 20

// New returns the session service over db, serializing turns through leases.
func New(db *store.DB, leases Leases, clk clock.Clock, o Options) *Service {
	s := &Service{db: db, leases: leases, clock: clk, wait: o.Wait}
	// The recent-turns cache is exact only because the next holder of a session's
	// lease is the process that wrote the cache when it last held it. On
	// PostgreSQL the next holder may be another replica, and nothing makes the
	// notification of the previous holder's turn reach it before it reads its
	// cache: the lease is handed over through the database, the notification comes
	// later on the listener's own connection (or, after a drop, never). That
	// replica would build the prompt without the turn and store its own after it,
	// a conversation silently missing a turn; a TTL narrows the window but does not
	// close it. So on PostgreSQL every turn reads its history from the database,
	// under the lease. (An exact cache would have to check the session's newest
	// turn in the database at every turn: a round trip, like the read it saves.)
	if db.Dialect() != "postgres" {
		n := o.RecentBytes
		if n <= 0 {
			n = DefaultRecentBytes
		}
		s.recent = newRecentTurns(n)
	}
	return s
}

// Turn is a session held for one turn: the holder of its lease.
type Turn struct {
	s       *Service
	key     agentd.SessionKey
	ck      string
	release func()
}

// Begin takes the session's lease for one turn, waiting in arrival order up to the
// service's wait (then ESessionBusy). End must be called.
func (s *Service) Begin(ctx context.Context, k agentd.SessionKey) (*Turn, error) {
	ck := Key(k)
	release, err := s.leases.Acquire(ctx, ck, s.wait)
	if err != nil {
		return nil, err
	}
	return &Turn{s: s, key: k, ck: ck, release: release}, nil
}

// End releases the session for the next turn.
func (t *Turn) End() { t.release() }

// Window is the newest part of a session's history that fits a prompt.
type Window struct {
	Turns   []agentd.Turn // oldest first; not to be modified
	Trimmed int           // older turns left out
}

// History returns the newest turns whose cost, summed, is within budget (oldest
// first), and how many older turns it left out. It serves recently used sessions
// from memory and fills the cache otherwise: the turn holds the lease.
func (t *Turn) History(ctx context.Context, budget int, cost func(agentd.Turn) int) (Window, error) {
	return t.s.window(ctx, t.key, t.ck, budget, cost, true)
}

// Record stores nothing itself: it arranges for turn, which tx stores as the
// session's next turn (store.Tx.RecordRun reported it stored), to join the cached
// window when tx commits.
func (t *Turn) Record(tx *store.Tx, turn agentd.Turn) {
	if t.s.recent != nil {
		tx.OnCommit(func() { t.s.recent.add(t.ck, turn) })
	}
}

// Peek is History for a reader without the lease (an estimate): it reads the cache
// or the database and never writes the cache.
func (s *Service) Peek(ctx context.Context, k agentd.SessionKey, budget int, cost func(agentd.Turn) int) (Window, error) {
	return s.window(ctx, k, Key(k), budget, cost, false)
}

// window reads newest first and stops at the first turn that cannot fit, so its
// cost does not grow with the length of the session, and only then counts the
// rest. cache says whether the caller holds the lease and may fill the cache.
func (s *Service) window(ctx context.Context, k agentd.SessionKey, ck string, budget int, cost func(agentd.Turn) int, cache bool) (Window, error) {
	if cached, total, ok := s.recent.get(ck); ok {
		used, n := 0, 0
		for i := len(cached) - 1; i >= 0; i-- {
			if used += cost(cached[i]); used > budget {
				break
			}
			n++
		}
		// Enough: the budget ran out inside the cache, or the cache is the session.
		if n < len(cached) || len(cached) == total {
			s.recent.stats.hit()
			return Window{Turns: cached[len(cached)-n:], Trimmed: total - n}, nil
		}
	}
	if s.recent != nil { // none on PostgreSQL
		s.recent.stats.miss()
	}
	var turns []agentd.Turn
	used, full := 0, false
	err := s.db.History(ctx, k, func(t agentd.Turn) bool {
		if used += cost(t); used > budget {
			full = true
			return false
		}
		turns = append(turns, t)
		return true
	})
	if err != nil {
		return Window{}, err
	}
	total := len(turns)
	if full {
		if total, err = s.db.CountTurns(ctx, k); err != nil {
			return Window{}, err
		}
	}
	for i, j := 0, len(turns)-1; i < j; i, j = i+1, j-1 {
		turns[i], turns[j] = turns[j], turns[i]
	}
	if cache {
		s.recent.put(ck, turns, total)
	}
	return Window{Turns: turns, Trimmed: total - len(turns)}, nil
}

// List returns a page of the sessions of (org, agent, owner), the most recently
// active first, and the next page's cursor ("" after the last).
func (s *Service) List(ctx context.Context, orgID, agentID, owner, cursor string, limit int) ([]agentd.SessionInfo, string, error) {
	return s.db.Sessions(ctx, orgID, agentID, owner, cursor, limit)
}

// Turns returns a page of a session's turns, oldest first (ENotFound for a session
// with no turns).
func (s *Service) Turns(ctx context.Context, k agentd.SessionKey, cursor string, limit int) ([]agentd.SessionTurn, string, error) {
	return s.db.SessionTurns(ctx, k, cursor, limit)
}

// Delete deletes every turn of a session and returns how many there were; a
// session with no turns is ENotFound. It holds the session's lease, waiting for a
// turn in flight to be stored first, and forgets the cached window when the
// delete commits.
func (s *Service) Delete(ctx context.Context, k agentd.SessionKey) (int, error) {
	t, err := s.Begin(ctx, k)
	if err != nil {
		return 0, err
	}
	defer t.End()
	var n int
	err = s.db.Tx(ctx, func(tx *store.Tx) error {
		var err error
		if n, err = tx.DeleteSession(ctx, k); err != nil {
			return err
		}
		tx.OnCommit(func() { s.recent.forget(t.ck) })
		return nil
	})
	if err != nil {
		return 0, err
	}
	if n == 0 {
		return 0, agentd.Errorf(agentd.ENotFound, "session %q not found", k.SessionID)
	}
	return n, nil
}

// sweepChunk is how many sessions one write of a sweep deletes: the writer commits
// other callers' writes between chunks instead of waiting out a whole sweep.
const sweepChunk = 64

// SweepIdle deletes up to limit sessions whose newest turn is older than
// idleBefore, each under its lease (a session whose turn is in flight is not idle
// and is skipped), forgetting exactly the sessions it deleted. It returns how many
// it deleted and how many idle candidates it found; a caller sweeps again while
// candidates come back in full batches.
func (s *Service) SweepIdle(ctx context.Context, idleBefore time.Time, limit int) (deleted, found int, err error) {
	idle, err := s.db.IdleSessions(ctx, idleBefore.UnixMicro(), limit)
	if err != nil {
		return 0, 0, err
	}
	found = len(idle)
	for len(idle) > 0 {
		chunk := idle[:min(len(idle), sweepChunk)]
		idle = idle[len(chunk):]
		var held []*Turn
		for _, k := range chunk {
			ck := Key(k)
			release, err := s.leases.Acquire(ctx, ck, 0)
			if err != nil {
				continue // busy: a turn is running, so the session is not idle
			}
			held = append(held, &Turn{s: s, key: k, ck: ck, release: release})
		}
		n := 0
		err := s.db.Tx(ctx, func(tx *store.Tx) error {
			n = 0
			for _, t := range held {
				ok, err := tx.DeleteIdleSession(ctx, t.key, idleBefore.UnixMicro())
				if err != nil {
					return err
				}
				if ok {
					n++
					tx.OnCommit(func() { s.recent.forget(t.ck) })
				}
			}
			return nil
		})
		for _, t := range held {
			t.End()
		}
		if err != nil {
			return deleted, found, err
		}
		deleted += n
	}
	return deleted, found, nil
}
