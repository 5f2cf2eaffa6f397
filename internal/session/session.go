// Package session serializes the turns of a conversation. A turn holds its
// session's lease from loading history until its own turn is stored, so that
// concurrent turns on one session never interleave or read a stale history, and
// waiting turns are served first come, first served.
//
// On a single node (SQLite) the leases live in memory, and a crash releases them by
// construction. A lease whose holder stopped without releasing it (a stuck or
// leaked run) expires after its TTL: Sweep hands it to the next waiter.
package session

import (
	"context"
	"strconv"
	"sync"
	"time"

	"github.com/agentd/agentd"
)

// Leases grants one turn at a time per session key, in arrival order.
type Leases struct {
	ttl time.Duration
	now func() time.Time

	mu   sync.Mutex
	held map[string]*lease
}

// lease is one session's current holder and its queue of waiters.
type lease struct {
	gen     uint64    // the holder's grant; a release with another gen is stale
	expires time.Time // when Sweep may take the lease back
	queue   []*waiter
}

type waiter struct {
	granted chan uint64 // receives the grant when the lease is handed over
}

// NewLeases returns an empty lease table whose leases expire ttl after they are
// granted (ttl ≤ 0: never). The ttl must exceed the longest turn: the run deadline
// plus the time to store the turn.
func NewLeases(ttl time.Duration) *Leases {
	return &Leases{ttl: ttl, now: time.Now, held: map[string]*lease{}}
}

// Acquire waits up to wait for the session named key to be free and takes it;
// waiters are granted the lease in the order they arrived. It returns ESessionBusy
// (with retry_after seconds) when the wait runs out, or ctx's error. The returned
// release must be called once; calling it after the lease expired does nothing.
func (l *Leases) Acquire(ctx context.Context, key string, wait time.Duration) (release func(), err error) {
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
	l.mu.Unlock()

	timer := time.NewTimer(wait)
	defer timer.Stop()
	var fail error
	select {
	case gen := <-w.granted:
		return l.releaser(key, gen), nil
	case <-timer.C:
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

func (l *Leases) expiry() time.Time {
	if l.ttl <= 0 {
		return time.Time{}
	}
	return l.now().Add(l.ttl)
}

func (l *Leases) releaser(key string, gen uint64) func() {
	var once sync.Once
	return func() { once.Do(func() { l.release(key, gen) }) }
}

// release ends grant gen of key's lease: the next waiter gets it, or it is freed.
func (l *Leases) release(key string, gen uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	ls := l.held[key]
	if ls == nil || ls.gen != gen {
		return // expired and taken back by Sweep
	}
	l.handOver(key, ls)
}

// handOver gives ls to its first waiter, or frees it. l.mu is held.
func (l *Leases) handOver(key string, ls *lease) {
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
func (l *Leases) Sweep() int {
	now := l.now()
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

// Waiting returns how many turns wait for key.
func (l *Leases) Waiting(key string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if ls := l.held[key]; ls != nil {
		return len(ls.queue)
	}
	return 0
}

// Held returns how many sessions are leased now.
func (l *Leases) Held() int {
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

// Key returns the lease key of a conversation.
func Key(orgID, agentID, owner, sessionID string) string {
	return orgID + "\x00" + agentID + "\x00" + owner + "\x00" + sessionID
}
