// Package session serializes the turns of a conversation. A turn holds its
// session's lease from loading history until its own turn is stored, so that
// concurrent turns on one session never interleave or read a stale history.
//
// On a single node (SQLite) the leases live in memory, and a crash releases them by
// construction.
package session

import (
	"context"
	"strconv"
	"sync"
	"time"

	"github.com/agentd/agentd"
)

// Leases grants one turn at a time per session key.
type Leases struct {
	mu   sync.Mutex
	busy map[string]*lease
}

type lease struct {
	// queue is closed and replaced each time the lease is released, waking waiters.
	free chan struct{}
}

// NewLeases returns an empty lease table.
func NewLeases() *Leases { return &Leases{busy: map[string]*lease{}} }

// Acquire waits up to wait for the session named key to be free and takes it. It
// returns ESessionBusy (with retry_after seconds) when the wait runs out, or ctx's
// error. The returned release must be called exactly once.
func (l *Leases) Acquire(ctx context.Context, key string, wait time.Duration) (release func(), err error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var timer *time.Timer
	for {
		l.mu.Lock()
		cur, taken := l.busy[key]
		if !taken {
			ls := &lease{free: make(chan struct{})}
			l.busy[key] = ls
			l.mu.Unlock()
			if timer != nil {
				timer.Stop()
			}
			return func() { l.release(key, ls) }, nil
		}
		l.mu.Unlock()
		if timer == nil {
			if wait <= 0 {
				return nil, busy(wait)
			}
			timer = time.NewTimer(wait)
		}
		select {
		case <-cur.free:
		case <-timer.C:
			return nil, busy(wait)
		case <-ctx.Done():
			timer.Stop()
			return nil, ctx.Err()
		}
	}
}

func (l *Leases) release(key string, ls *lease) {
	l.mu.Lock()
	if l.busy[key] == ls {
		delete(l.busy, key)
	}
	l.mu.Unlock()
	close(ls.free)
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
