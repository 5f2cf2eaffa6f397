package bench

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// stuck fires a little before the test binary's deadline (go test -timeout),
// so that a test waiting for an event that never comes fails with its own
// message instead of the timeout's panic. It is no time limit of its own:
// without a deadline it never fires.
func stuck(t *testing.T) <-chan time.Time {
	d, ok := t.Deadline()
	if !ok {
		return nil
	}
	return time.After(time.Until(d) - 10*time.Second)
}

// fakeClock is a clock that stands still until the test moves it, so that a
// load test's timetable, window and latencies follow the test's steps, not the
// machine's speed.
type fakeClock struct {
	t        *testing.T
	mu       sync.Mutex
	now      time.Time
	sleepers []*sleeper
	changed  chan struct{} // closed (and replaced) when sleepers change
}

type sleeper struct {
	until time.Time
	wake  chan struct{}
}

// epoch is where a fakeClock starts.
var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// at is the time d after epoch.
func at(d time.Duration) time.Time { return epoch.Add(d) }

func newFakeClock(t *testing.T) *fakeClock {
	return &fakeClock{t: t, now: epoch, changed: make(chan struct{})}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) SleepUntil(ctx context.Context, t time.Time) {
	c.mu.Lock()
	if !t.After(c.now) {
		c.mu.Unlock()
		return
	}
	s := &sleeper{until: t, wake: make(chan struct{})}
	c.sleepers = append(c.sleepers, s)
	c.notifyLocked()
	c.mu.Unlock()
	select {
	case <-s.wake:
	case <-ctx.Done():
		c.mu.Lock()
		for i, x := range c.sleepers {
			if x == s {
				c.sleepers = append(c.sleepers[:i], c.sleepers[i+1:]...)
				c.notifyLocked()
				break
			}
		}
		c.mu.Unlock()
	}
}

func (c *fakeClock) notifyLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// set moves the clock forward to t and wakes the sleepers whose time has come.
func (c *fakeClock) set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t.Before(c.now) {
		panic("fakeClock: time goes forward only")
	}
	c.now = t
	kept := c.sleepers[:0]
	for _, s := range c.sleepers {
		if t.Before(s.until) {
			kept = append(kept, s)
		} else {
			close(s.wake)
		}
	}
	clear(c.sleepers[len(kept):])
	c.sleepers = kept
	c.notifyLocked()
}

// advance moves the clock on by d.
func (c *fakeClock) advance(d time.Duration) { c.set(c.Now().Add(d)) }

// waitSleepers blocks until at least n goroutines sleep until exactly t. Call
// it from the test's goroutine.
func (c *fakeClock) waitSleepers(t time.Time, n int) {
	c.t.Helper()
	giveUp := stuck(c.t)
	for {
		c.mu.Lock()
		k := 0
		for _, s := range c.sleepers {
			if s.until.Equal(t) {
				k++
			}
		}
		ch := c.changed
		c.mu.Unlock()
		if k >= n {
			return
		}
		select {
		case <-ch:
		case <-giveUp:
			c.mu.Lock()
			var until []time.Duration
			for _, s := range c.sleepers {
				until = append(until, s.until.Sub(epoch))
			}
			now := c.now.Sub(epoch)
			c.mu.Unlock()
			c.t.Fatalf("at %v, still waiting for %d goroutines to sleep until %v; sleeping until %v", now, n, t.Sub(epoch), until)
		}
	}
}

// heldServer is a test server that holds every request until the test answers
// it (or closes the server): arrivals delivers each request as it comes.
type heldServer struct {
	*httptest.Server
	t        *testing.T
	arrivals chan *heldRequest
	closing  chan struct{}
}

type heldRequest struct {
	*http.Request
	status chan int
}

func newHeldServer(t *testing.T) *heldServer {
	s := &heldServer{t: t, arrivals: make(chan *heldRequest, 256), closing: make(chan struct{})}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Read the body: only then does the server watch the connection, and end
		// the request's context when the client leaves.
		io.Copy(io.Discard, r.Body)
		h := &heldRequest{Request: r, status: make(chan int, 1)}
		s.arrivals <- h
		select {
		case code := <-h.status:
			if code != http.StatusOK {
				http.Error(w, "boom", code)
				return
			}
			w.Write([]byte(`{"ok":true}`))
		case <-r.Context().Done():
		case <-s.closing:
		}
	}))
	return s
}

// Close lets go of the requests still held and closes the server.
func (s *heldServer) Close() {
	close(s.closing)
	s.Server.Close()
}

// next waits for the next request to arrive. Call it from the test's goroutine.
func (s *heldServer) next() *heldRequest {
	s.t.Helper()
	select {
	case r := <-s.arrivals:
		return r
	case <-stuck(s.t):
		s.t.Fatal("still waiting for a request")
		return nil
	}
}

// answer replies to the request with status code (200: a small JSON body; any
// other: an error) and returns at once.
func (h *heldRequest) answer(code int) { h.status <- code }
