package run

import (
	"context"
	"fmt"
	"sync"

	"github.com/agentd/agentd/internal/clock"
	"github.com/agentd/agentd/internal/store"
)

// DBInFlight is InFlight in PostgreSQL, for replicas sharing one database: a mark
// is a unique row (store.Replica.BeginInFlight), so a retry that reaches another
// replica while the first request runs gets the same 409 as on one node. The
// replica's heartbeat renews the row while the run lives; a dead replica's marks
// are taken over once its TTL has passed. The run's result is stored in the
// run's transaction before end deletes the mark, so a retry finds one or the
// other, never neither.
type DBInFlight struct {
	rep   *store.Replica
	clock clock.Clock
}

var _ InFlight = (*DBInFlight)(nil)

// NewDBInFlight returns an in-flight set kept in the database through rep, which
// renews the marks while this process lives. Expiry is decided by clk, which
// must be the clock rep was given (ReplicaOptions.Now).
func NewDBInFlight(rep *store.Replica, clk clock.Clock) *DBInFlight {
	return &DBInFlight{rep: rep, clock: clk}
}

// Begin implements InFlight.
func (s *DBInFlight) Begin(ctx context.Context, id string) (func(), error) {
	// Marked whatever ctx does: a statement cut short might leave a mark nobody
	// knows of, refusing the key's retries until it expires.
	token, ok, err := s.rep.BeginInFlight(context.WithoutCancel(ctx), id, s.clock.Now())
	if err != nil {
		return nil, fmt.Errorf("run: mark the Idempotency-Key in flight: %w", err)
	}
	if !ok {
		return nil, errInFlight
	}
	var once sync.Once
	return func() {
		// A failed delete needs no retry: the mark is no longer renewed, so it
		// expires within the replica's TTL.
		once.Do(func() { s.rep.EndInFlight(context.Background(), id, token) })
	}, nil
}
