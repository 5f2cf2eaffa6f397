package session

import (
	"context"
	"strconv"
	"sync"
	"time"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/internal/clock"
)

// Leases grants one turn at a time per session key, in arrival order. It is the
// seam between a session's turns and where their serialization lives: in memory on
// a single node (MemoryLeases), in the database across replicas. Every
// implementation passes sessiontest.RunLeases.
type Leases interface {
	// Acquire waits up to wait for the session named key to be free and takes it;
	// waiters are granted it in the order they arrived. It returns ESessionBusy
	// (with retry_after seconds) when the wait runs out, or ctx's error. The
	// returned release must be called once; calling it after the lease expired
	// (and went to someone else) does nothing.
	Acquire(ctx context.Context, key string, wait time.Duration) (release func(), err error)
}

// MemoryLeases is Leases in memory, for a single node: a crash releases every lease
// by construction. A lease whose holder stopped without releasing it (a stuck or
// leaked run) expires after its TTL: Sweep hands it to the next waiter.
type MemoryLeases struct {
	ttl   time.Duration
	clock clock.Clock

	mu   sync.Mutex
	held map[string]*lease
}

var _ Leases = (*MemoryLeases)(nil)

// lease is one session's current holder and its queue of waiters.
type lease struct {
	gen     uint64    // the holder's grant; a release with another gen is stale
	expires time.Time // when Sweep may take the lease back
	queue   []*waiter
}

type waiter struct {
	granted chan uint64 // receives the grant when the lease is handed over
}

// NewMemoryLeases returns an empty lease table whose leases expire ttl after they
// are granted (ttl ≤ 0: never), by clk. The ttl must exceed the longest turn: the
// run deadline plus the time to store the turn.
func NewMemoryLeases(ttl time.Duration, clk clock.Clock) *MemoryLeases {
	return &MemoryLeases{ttl: ttl, clock: clk, held: map[string]*lease{}}
}

// Acquire implements Leases.
func (l *MemoryLeases) Acquire(ctx context.Context, key string, wait time.Duration) (release func(), err error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	l.mu.Lock()
	ls, taken := l.held[key]
	if !taken {
		ls = &lease{gen: 1}
		ls.expires = l.expiry()
		l.held[key] = ls
		l.mu.Unlock()
		return l.releaser(key, ls.gen), nil
	}
	if wait <= 0 {
		l.mu.Unlock()
		return nil, busy(wait)
	}
	w := &waiter{granted: make(chan uint64, 1)}
	ls.queue = append(ls.queue, w)
	timer := l.clock.NewTimer(wait) // armed before unlocking: a test that sees it armed sees us queued
	l.mu.Unlock()
	defer timer.Stop()

	var fail error
	select {
	case gen := <-w.granted:
		return l.releaser(key, gen), nil
	case <-timer.C():
		fail = busy(wait)
	case <-ctx.Done():
		fail = ctx.Err()
	}
	// Leave the queue, unless the lease was handed to us meanwhile: then pass it on.
	l.mu.Lock()
	if i := indexOf(ls.queue, w); i >= 0 {
		ls.queue = append(ls.queue[:i], ls.queue[i+1:]...)
		l.mu.Unlock()
		return nil, fail
	}
	l.mu.Unlock()
	gen := <-w.granted // handed over before we left: it is in the channel
	l.releaser(key, gen)()
	return nil, fail
}

func indexOf(q []*waiter, w *waiter) int {
	for i, x := range q {
		if x == w {
			return i
		}
	}
	return -1
}

func (l *MemoryLeases) expiry() time.Time {
	if l.ttl <= 0 {
		return time.Time{}
	}
	return l.clock.Now().Add(l.ttl)
}

func (l *MemoryLeases) releaser(key string, gen uint64) func() {
	var once sync.Once
	return func() { once.Do(func() { l.release(key, gen) }) }
}

// release ends grant gen of key's lease: the next waiter gets it, or it is freed.
func (l *MemoryLeases) release(key string, gen uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	ls := l.held[key]
	if ls == nil || ls.gen != gen {
		return // expired and taken back by Sweep
	}
	l.handOver(key, ls)
}

// handOver gives ls to its first waiter, or frees it. l.mu is held.
func (l *MemoryLeases) handOver(key string, ls *lease) {
	if len(ls.queue) == 0 {
		delete(l.held, key)
		return
	}
	next := ls.queue[0]
	ls.queue[0] = nil
	ls.queue = ls.queue[1:]
	ls.gen++
	ls.expires = l.expiry()
	next.granted <- ls.gen
}

// Sweep takes back every lease held past its expiry and hands it on, so a holder
// that died without releasing does not block its session forever. It returns how
// many leases it took back.
func (l *MemoryLeases) Sweep() int {
	now := l.clock.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for key, ls := range l.held {
		if !ls.expires.IsZero() && now.After(ls.expires) {
			l.handOver(key, ls)
			n++
		}
	}
	return n
}

// Held returns how many sessions are leased now.
func (l *MemoryLeases) Held() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.held)
}

func busy(wait time.Duration) error {
	retry := max(1, int(wait.Seconds()/4))
	return &agentd.Error{
		Code:    agentd.ESessionBusy,
		Message: "another turn of this session is still running; retry in " + strconv.Itoa(retry) + "s",
		Fields:  map[string]any{"retry_after": retry},
	}
}

// Key returns the lease and cache key of a conversation.
func Key(k agentd.SessionKey) string {
	return k.OrgID + "\x00" + k.AgentID + "\x00" + k.Owner + "\x00" + k.SessionID
}
