package session

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/agentd/agentd/internal/clock"
	"github.com/agentd/agentd/internal/store"
)

// DBLeases is Leases in PostgreSQL, for replicas sharing one database. A turn
// queues a ticket for its session (store.Replica.EnqueueLease); tickets are
// numbered in arrival order across replicas, and the session belongs to its
// smallest ticket that is alive. Waiters re-check when a release anywhere
// notifies the session's key, when notifications may have been missed, and
// every dbLeasePoll besides. A lease lives as long as its replica's heartbeat
// renews it: a replica that dies loses its leases within the replica's TTL,
// not after the longest run. No connection is held while a lease is held or
// awaited: every step is one short statement.
//
// Unlike MemoryLeases, a lease has no lifetime of its own: while its replica is
// alive it lasts until released, so every Acquire's release must be called (the
// runner defers it).
type DBLeases struct {
	rep   *store.Replica
	clock clock.Clock
	poll  time.Duration
	unsub func()

	mu      sync.Mutex
	waiting map[string]map[chan struct{}]struct{} // key → wake-ups of its waiters here
}

var _ Leases = (*DBLeases)(nil)

// dbLeasePoll is how often a waiter re-checks without being told: the bound on
// how late it notices a lease freed by a missed notification or by expiry. It
// is real time, not clk's: it decides nothing but when to look.
const dbLeasePoll = 200 * time.Millisecond

// NewDBLeases returns leases kept in the database through rep, which renews them
// while this process lives. Waits and expiries are decided by clk, which must be
// the clock rep was given (ReplicaOptions.Now). Close it before rep.
func NewDBLeases(rep *store.Replica, clk clock.Clock) *DBLeases {
	l := &DBLeases{rep: rep, clock: clk, poll: dbLeasePoll, waiting: map[string]map[chan struct{}]struct{}{}}
	l.unsub = rep.SubscribeLeases(l.wake)
	return l
}

// Close stops listening for released leases. Leases held or awaited are the
// replica's: Replica.Close deletes them.
func (l *DBLeases) Close() { l.unsub() }

// Acquire implements Leases.
func (l *DBLeases) Acquire(ctx context.Context, key string, wait time.Duration) (release func(), err error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	now := l.clock.Now()
	deadline := now.Add(wait)
	wake := l.listen(key) // before the ticket exists: no release after it goes unheard
	defer l.unlisten(key, wake)
	// Queued whatever ctx does: a statement cut short might leave a ticket behind
	// that nobody knows, in the session's way until it expires.
	ticket, err := l.rep.EnqueueLease(context.WithoutCancel(ctx), key, now)
	if err != nil {
		return nil, fmt.Errorf("session: queue for the lease: %w", err)
	}
	var timer clock.Timer
	var poll *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
		if poll != nil {
			poll.Stop()
		}
	}()
	for {
		head, alive, err := l.rep.LeaseHead(ctx, key, ticket, now)
		switch {
		case err != nil:
			l.leave(ticket)
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, fmt.Errorf("session: check the lease: %w", err)
		case !alive:
			// Our ticket went unrenewed for a TTL (the database or this process
			// stalled), so others may have passed it: it can never hold. Queue again.
			l.leave(ticket)
			if ticket, err = l.rep.EnqueueLease(context.WithoutCancel(ctx), key, now); err != nil {
				return nil, fmt.Errorf("session: queue for the lease: %w", err)
			}
			continue
		case head:
			return l.releaser(ticket), nil
		case wait <= 0:
			l.leave(ticket)
			return nil, busy(wait)
		}
		if timer == nil {
			// Armed once queued and refused: a test that sees it armed sees us queued.
			timer = l.clock.NewTimer(deadline.Sub(now))
			poll = time.NewTimer(l.poll)
		} else {
			poll.Reset(l.poll)
		}
		select {
		case <-wake:
		case <-poll.C:
		case <-timer.C():
			l.leave(ticket)
			return nil, busy(wait)
		case <-ctx.Done():
			l.leave(ticket)
			return nil, ctx.Err()
		}
		// A lease that reaches us at or after the deadline is passed on, as one
		// reaching us after the timer fired: the wait is judged by the clock.
		if now = l.clock.Now(); !now.Before(deadline) {
			l.leave(ticket)
			return nil, busy(wait)
		}
	}
}

// leave deletes ticket. A failure needs no retry: the ticket is no longer
// renewed, so it expires within the replica's TTL.
func (l *DBLeases) leave(ticket int64) {
	l.rep.DequeueLease(context.Background(), ticket)
}

func (l *DBLeases) releaser(ticket int64) func() {
	var once sync.Once
	// Deleting only its own ticket, a release after the lease expired frees
	// nobody else's.
	return func() { once.Do(func() { l.leave(ticket) }) }
}

// listen registers a waiter of key and returns its wake-up.
func (l *DBLeases) listen(key string) chan struct{} {
	c := make(chan struct{}, 1)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.waiting[key] == nil {
		l.waiting[key] = map[chan struct{}]struct{}{}
	}
	l.waiting[key][c] = struct{}{}
	return c
}

func (l *DBLeases) unlisten(key string, c chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.waiting[key], c)
	if len(l.waiting[key]) == 0 {
		delete(l.waiting, key)
	}
}

// wake tells the waiters of key (of every key for "") to check again.
func (l *DBLeases) wake(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if key != "" {
		signal(l.waiting[key])
		return
	}
	for _, ws := range l.waiting {
		signal(ws)
	}
}

func signal(ws map[chan struct{}]struct{}) {
	for c := range ws {
		select {
		case c <- struct{}{}:
		default: // told already
		}
	}
}
