package session_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/internal/session"
)

func acquire(t *testing.T, l *session.Leases, key string) func() {
	t.Helper()
	release, err := l.Acquire(context.Background(), key, time.Second)
	if err != nil {
		t.Fatalf("Acquire(%q): %v", key, err)
	}
	return release
}

func TestAcquireWhileBusy(t *testing.T) {
	tests := []struct {
		name      string
		wait      time.Duration
		wantRetry int
	}{
		{"no wait", 0, 1},
		{"negative wait", -time.Second, 1},
		{"short wait", 30 * time.Millisecond, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := session.NewLeases(0)
			release := acquire(t, l, "k")
			defer release()
			start := time.Now()
			got, err := l.Acquire(context.Background(), "k", tt.wait)
			elapsed := time.Since(start)
			if err == nil {
				got()
				t.Fatal("a busy session was acquired twice")
			}
			var e *agentd.Error
			if !errors.As(err, &e) || e.Code != agentd.ESessionBusy {
				t.Fatalf("err = %v, want %s", err, agentd.ESessionBusy)
			}
			if r, ok := e.Fields["retry_after"].(int); !ok || r != tt.wantRetry {
				t.Errorf("retry_after = %#v, want %d", e.Fields["retry_after"], tt.wantRetry)
			}
			if elapsed < tt.wait {
				t.Errorf("gave up after %v, before the wait of %v", elapsed, tt.wait)
			}
			if elapsed > max(tt.wait, 0)+time.Second {
				t.Errorf("gave up after %v, long after the wait of %v", elapsed, tt.wait)
			}
		})
	}
}

func TestAcquireWaitsForRelease(t *testing.T) {
	l := session.NewLeases(0)
	release := acquire(t, l, "k")
	got := make(chan error, 1)
	var second func()
	go func() {
		var err error
		second, err = l.Acquire(context.Background(), "k", 10*time.Second)
		got <- err
	}()
	select {
	case err := <-got:
		t.Fatalf("second Acquire returned %v while the lease was held", err)
	case <-time.After(50 * time.Millisecond):
	}
	release()
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("second Acquire after release: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("second Acquire still waiting after release")
	}
	// The second holder now has it: a third caller is refused until it releases.
	if r, err := l.Acquire(context.Background(), "k", 0); err == nil {
		r()
		t.Fatal("third Acquire succeeded while the second held the lease")
	}
	second()
	acquire(t, l, "k")()
}

func TestAcquireContext(t *testing.T) {
	tests := []struct {
		name   string
		ctx    func() (context.Context, context.CancelFunc)
		cancel time.Duration // cancel after this long; <0: never
		want   error
	}{
		{"cancelled while waiting", func() (context.Context, context.CancelFunc) { return context.WithCancel(context.Background()) }, 20 * time.Millisecond, context.Canceled},
		{"deadline while waiting", func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 20*time.Millisecond)
		}, -1, context.DeadlineExceeded},
		{"already cancelled", func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return ctx, cancel
		}, -1, context.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := session.NewLeases(0)
			release := acquire(t, l, "k")
			defer release()
			ctx, cancel := tt.ctx()
			defer cancel()
			if tt.cancel >= 0 {
				time.AfterFunc(tt.cancel, cancel)
			}
			start := time.Now()
			_, err := l.Acquire(ctx, "k", time.Minute)
			if !errors.Is(err, tt.want) || err != ctx.Err() {
				t.Fatalf("err = %v, want ctx.Err() = %v", err, tt.want)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("returned after %v", d)
			}
		})
	}
}

func TestDifferentKeysDoNotBlock(t *testing.T) {
	l := session.NewLeases(0)
	keys := []string{
		session.Key("org1", "agent1", "alice", "s1"),
		session.Key("org1", "agent1", "alice", "s2"),
		session.Key("org1", "agent1", "bob", "s1"),
		session.Key("org1", "agent2", "alice", "s1"),
		session.Key("org2", "agent1", "alice", "s1"),
	}
	var releases []func()
	for _, k := range keys {
		r, err := l.Acquire(context.Background(), k, 0)
		if err != nil {
			t.Fatalf("Acquire(%q) with others held: %v", k, err)
		}
		releases = append(releases, r)
	}
	for _, r := range releases {
		r()
	}
}

func TestKeyIsUnambiguous(t *testing.T) {
	tests := []struct {
		name string
		a, b [4]string
	}{
		{"shifted boundary", [4]string{"o", "a", "ab", "c"}, [4]string{"o", "a", "a", "bc"}},
		{"org and agent", [4]string{"o1", "a", "x", "s"}, [4]string{"o", "1a", "x", "s"}},
		{"empty parts", [4]string{"", "a", "", "s"}, [4]string{"a", "", "", "s"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ka := session.Key(tt.a[0], tt.a[1], tt.a[2], tt.a[3])
			kb := session.Key(tt.b[0], tt.b[1], tt.b[2], tt.b[3])
			if ka == kb {
				t.Errorf("Key%v == Key%v", tt.a, tt.b)
			}
		})
	}
}

// TestLeaseSerializes: 50 turns on one session, each a non-atomic read-modify-write
// under the lease, never overlap and lose no update.
func TestLeaseSerializes(t *testing.T) {
	l := session.NewLeases(0)
	const n = 50
	var (
		inside   atomic.Int32
		overlaps atomic.Int32
		counter  int // guarded by the lease alone
		wg       sync.WaitGroup
	)
	for range n {
		wg.Go(func() {
			release, err := l.Acquire(context.Background(), "shared", 10*time.Second)
			if err != nil {
				t.Error(err)
				return
			}
			if inside.Add(1) > 1 {
				overlaps.Add(1)
			}
			v := counter
			time.Sleep(100 * time.Microsecond)
			counter = v + 1
			inside.Add(-1)
			release()
		})
	}
	wg.Wait()
	if o := overlaps.Load(); o != 0 {
		t.Errorf("%d turns entered while another was inside the lease", o)
	}
	if counter != n {
		t.Errorf("counter = %d, want %d", counter, n)
	}
	// Every lease was released: the key is free again.
	acquire(t, l, "shared")()
}

// TestFIFO: turns waiting on one session get it in the order they arrived.
func TestFIFO(t *testing.T) {
	l := session.NewLeases(0)
	release := acquire(t, l, "k")
	const n = 20
	var order []int
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rel, err := l.Acquire(context.Background(), "k", 10*time.Second)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
			rel()
		}()
		// Let waiter i queue before waiter i+1 arrives.
		for l.Waiting("k") != i+1 {
			time.Sleep(100 * time.Microsecond)
		}
	}
	release()
	wg.Wait()
	for i, got := range order {
		if got != i {
			t.Fatalf("grant order %v, want arrival order", order)
		}
	}
	if l.Held() != 0 {
		t.Errorf("%d leases held after every release", l.Held())
	}
}

// TestSweepExpiredLease: a holder that never releases loses the lease after its
// TTL, the next waiter gets it, and the dead holder's late release is a no-op.
func TestSweepExpiredLease(t *testing.T) {
	l := session.NewLeases(50 * time.Millisecond)
	dead := acquire(t, l, "k") // never released in time
	got := make(chan func(), 1)
	go func() {
		rel, err := l.Acquire(context.Background(), "k", 10*time.Second)
		if err != nil {
			t.Error(err)
		}
		got <- rel
	}()
	for l.Waiting("k") != 1 {
		time.Sleep(100 * time.Microsecond)
	}
	if n := l.Sweep(); n != 0 {
		t.Fatalf("swept %d fresh leases", n)
	}
	time.Sleep(60 * time.Millisecond)
	if n := l.Sweep(); n != 1 {
		t.Fatalf("swept %d expired leases, want 1", n)
	}
	next := <-got
	dead() // stale: must not free the waiter's lease
	if _, err := l.Acquire(context.Background(), "k", 0); agentd.ErrorCode(err) != agentd.ESessionBusy {
		t.Fatalf("after a stale release the session is free: %v", err)
	}
	next()
	if l.Held() != 0 {
		t.Errorf("%d leases held", l.Held())
	}
}

// TestTimedOutWaiterPassesOn: a waiter that gives up just as the lease reaches it
// passes the lease on instead of keeping it.
func TestTimedOutWaiterPassesOn(t *testing.T) {
	for range 200 {
		l := session.NewLeases(0)
		release := acquire(t, l, "k")
		done := make(chan struct{})
		go func() {
			if rel, err := l.Acquire(context.Background(), "k", time.Millisecond); err == nil {
				rel()
			}
			close(done)
		}()
		time.Sleep(time.Millisecond)
		release()
		<-done
		if l.Held() != 0 {
			t.Fatalf("%d leases held after the only waiter left", l.Held())
		}
	}
}
