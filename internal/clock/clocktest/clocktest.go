// Package clocktest provides a clock that moves only when a test moves it, so that
// tests of expiry, periods and sweeps synchronize on events instead of sleeping.
package clocktest

import (
	"sync"
	"time"

	"github.com/agentd/agentd/internal/clock"
)

// Fake is a clock.Clock whose time changes only through Set and Advance. Timers
// fire when the time reaches their deadline.
type Fake struct {
	mu      sync.Mutex
	now     time.Time
	timers  []*timer
	changed chan struct{} // closed and replaced whenever a timer is armed or stopped
}

var _ clock.Clock = (*Fake)(nil)

// New returns a fake clock showing t.
func New(t time.Time) *Fake { return &Fake{now: t, changed: make(chan struct{})} }

// Now returns the fake time.
func (f *Fake) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

// Advance moves the time forward by d, firing the timers it passes in deadline order.
func (f *Fake) Advance(d time.Duration) { f.Set(f.Now().Add(d)) }

// Set moves the time to t (never backwards), firing the timers it passes.
func (f *Fake) Set(t time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if t.Before(f.now) {
		return
	}
	f.now = t
	kept := f.timers[:0]
	for _, tm := range f.timers {
		if !tm.at.After(t) {
			tm.c <- t // buffered(1); armed once
			continue
		}
		kept = append(kept, tm)
	}
	clear(f.timers[len(kept):])
	f.timers = kept
	f.notify()
}

// NewTimer arms a timer d from the fake time; d ≤ 0 fires at once.
func (f *Fake) NewTimer(d time.Duration) clock.Timer {
	f.mu.Lock()
	defer f.mu.Unlock()
	tm := &timer{f: f, at: f.now.Add(d), c: make(chan time.Time, 1)}
	if d <= 0 {
		tm.c <- f.now
		return tm
	}
	f.timers = append(f.timers, tm)
	f.notify()
	return tm
}

// Timers returns how many timers are armed and not yet fired or stopped.
func (f *Fake) Timers() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.timers)
}

// WaitTimers blocks until at least n timers are armed: a test calls it to know that
// the code under test is waiting on the clock before it moves the clock.
func (f *Fake) WaitTimers(n int) {
	for {
		f.mu.Lock()
		if len(f.timers) >= n {
			f.mu.Unlock()
			return
		}
		ch := f.changed
		f.mu.Unlock()
		<-ch
	}
}

func (f *Fake) notify() {
	close(f.changed)
	f.changed = make(chan struct{})
}

type timer struct {
	f  *Fake
	at time.Time
	c  chan time.Time
}

func (t *timer) C() <-chan time.Time { return t.c }

func (t *timer) Stop() bool {
	f := t.f
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, tm := range f.timers {
		if tm == t {
			f.timers = append(f.timers[:i], f.timers[i+1:]...)
			f.notify()
			return true
		}
	}
	return false
}
