package ratelimit

import (
	"context"
	"slices"
	"sync"
)

// windowMicros is Window in microseconds, the unit of the counters' times.
const windowMicros = int64(Window / 1000)

// memory keeps the counters of one process: used alone without Redis, and while
// Redis fails. Nothing of it survives the process, nor needs to: a restart
// forgets the last minute, and the runs in flight died with it.
type memory struct {
	mu      sync.Mutex
	windows map[string]*windowLog
	slots   map[string]int64
	pruned  int64 // when every window was last emptied of old entries (Unix µs)
}

// windowLog is one counter's entries of the last minute, oldest first, and their sum.
type windowLog struct {
	entries []entry
	sum     int64
}

type entry struct {
	at int64  // Unix µs
	n  int64  // 1 for a request; a run's tokens
	id string // the run's, to settle it; "" for a request
}

func newMemory() *memory {
	return &memory{windows: map[string]*windowLog{}, slots: map[string]int64{}}
}

var _ counters = (*memory)(nil)

// evict drops the entries a minute old or older at now.
func (w *windowLog) evict(now int64) {
	i := 0
	for i < len(w.entries) && w.entries[i].at <= now-windowMicros {
		w.sum -= w.entries[i].n
		i++
	}
	if i > 0 {
		clear(w.entries[:i])
		w.entries = w.entries[i:]
	}
}

// fit reports whether n more fit within limit, and if not, when they would
// (0: never).
func (w *windowLog) fit(now, n, limit int64) (ok bool, at int64) {
	if w.sum+n <= limit {
		return true, 0
	}
	if n > limit {
		return false, 0
	}
	need := w.sum + n - limit
	for _, e := range w.entries {
		if need -= e.n; need <= 0 {
			return false, e.at + windowMicros
		}
	}
	return false, now + windowMicros // unreachable while sum is the entries' sum
}

func (m *memory) take(_ context.Context, now int64, id string, asks []ask) (refusal, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.prune(now)
	r := refusal{index: -1}
	for i, a := range asks {
		ok, at := true, int64(0)
		switch a.kind {
		case slots:
			if m.slots[a.key]+a.n > a.limit {
				ok, at = false, now+slotRetry.Microseconds()
			}
		default:
			if w := m.windows[a.key]; w != nil {
				w.evict(now)
				ok, at = w.fit(now, a.n, a.limit)
			} else if a.n > a.limit {
				ok = false
			}
		}
		if !ok && r.worse(at) {
			r = refusal{index: i, at: at}
		}
	}
	if r.index >= 0 {
		return r, nil
	}
	for _, a := range asks {
		switch a.kind {
		case slots:
			m.slots[a.key] += a.n
		default:
			w := m.windows[a.key]
			if w == nil {
				w = &windowLog{}
				m.windows[a.key] = w
			}
			at := now
			if k := len(w.entries); k > 0 && w.entries[k-1].at > at {
				at = w.entries[k-1].at // a clock that stepped back: keep the log in order
			}
			e := entry{at: at, n: a.n}
			if a.kind == tokensWindow {
				e.id = id
			}
			w.entries = append(w.entries, e)
			w.sum += a.n
		}
	}
	return r, nil
}

func (m *memory) settle(_ context.Context, now int64, id string, asks []ask, used int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, a := range asks {
		switch a.kind {
		case slots:
			if m.slots[a.key] -= a.n; m.slots[a.key] <= 0 {
				delete(m.slots, a.key)
			}
		case tokensWindow:
			w := m.windows[a.key]
			if w == nil {
				continue // the entry left the window, which then emptied
			}
			for i := range w.entries {
				if e := &w.entries[i]; e.id == id && e.at > now-windowMicros {
					w.sum += used - e.n
					if e.n = used; used == 0 {
						w.entries = slices.Delete(w.entries, i, i+1)
					}
					break
				}
			}
		}
	}
	return nil
}

// prune empties, once a minute, the windows of every key and organization, and
// forgets those left empty, so that keys no longer used cost nothing.
func (m *memory) prune(now int64) {
	if now-m.pruned < windowMicros {
		return
	}
	m.pruned = now
	for k, w := range m.windows {
		if w.evict(now); len(w.entries) == 0 {
			delete(m.windows, k)
		}
	}
}
