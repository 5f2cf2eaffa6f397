package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/agentd/agentd/internal/billing"
	"github.com/agentd/agentd/internal/clock"
	"github.com/agentd/agentd/internal/session"
	"github.com/agentd/agentd/internal/store"
)

// sweeper runs the periodic sweeps: holds and session leases whose run died,
// expired idempotency records, idle sessions, ledger rows past retention. Each
// sweep deletes in bounded batches (the writer commits other writes between them)
// and drains: it repeats until a batch comes back short, so that retention keeps up
// however fast rows arrive.
type sweeper struct {
	every     time.Duration
	clock     clock.Clock
	log       *slog.Logger
	db        *store.DB
	accounts  *billing.Accounts
	leases    *session.MemoryLeases // nil on PostgreSQL, where the replica's heartbeat sweeps its rows
	sessions  *session.Service
	idleTTL   time.Duration
	retention time.Duration // 0: keep the ledger forever
	// swept, when set, is told after each round (tests wait on it).
	swept func()
}

// sweepBatch is how much one write of a sweep deletes.
const sweepBatch = 1000

// loop sweeps every s.every until ctx is done.
func (s *sweeper) loop(ctx context.Context) {
	for {
		t := s.clock.NewTimer(s.every)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C():
		}
		s.round(ctx)
		if s.swept != nil {
			s.swept()
		}
	}
}

// round runs every sweep once, each until it has drained.
func (s *sweeper) round(ctx context.Context) {
	now := s.clock.Now()
	n, err := s.accounts.Sweep(ctx)
	if err != nil && ctx.Err() == nil {
		s.log.Error("sweep expired holds", "err", err)
	}
	if n > 0 {
		s.log.Warn("released holds of runs that never finished", "holds", n)
	}
	if s.leases != nil {
		if n := s.leases.Sweep(); n > 0 {
			s.log.Warn("took back session leases of runs that never finished", "leases", n)
		}
	}
	s.drain(ctx, "expired idempotency records", func() (int, int, error) {
		n, err := s.db.SweepIdempotency(ctx, now.UnixMicro(), sweepBatch)
		return n, n, err
	})
	s.drain(ctx, "idle sessions", func() (int, int, error) {
		return s.sessions.SweepIdle(ctx, now.Add(-s.idleTTL), sweepBatch)
	})
	if s.retention > 0 {
		before := now.Add(-s.retention).UnixMicro()
		s.drain(ctx, "ledger rows past retention", func() (int, int, error) {
			n, err := s.db.PruneLedger(ctx, before, sweepBatch)
			return n, n, err
		})
	}
}

// drain repeats batch while it finds a full batch of work and makes progress.
// batch returns how many items it removed and how many it found.
func (s *sweeper) drain(ctx context.Context, what string, batch func() (removed, found int, err error)) {
	total := 0
	for ctx.Err() == nil {
		removed, found, err := batch()
		total += removed
		if err != nil {
			if ctx.Err() == nil {
				s.log.Error("sweep "+what, "err", err)
			}
			break
		}
		if found < sweepBatch || removed == 0 {
			break
		}
	}
	if total > 0 {
		s.log.Info("swept "+what, "count", total)
	}
}
