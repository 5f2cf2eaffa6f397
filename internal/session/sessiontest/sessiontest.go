// Package sessiontest is the conformance suite of session.Leases: every
// implementation (in memory on one node, in the database across replicas) must
// pass RunLeases.
package sessiontest

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/internal/clock/clocktest"
	"github.com/agentd/agentd/internal/session"
)

// Harness is one implementation under test.
type Harness struct {
	Leases session.Leases
	// Clock is the clock the implementation was given. Its waits must be timed by
	// it: a waiting Acquire arms one timer, which is how the suite knows a waiter
	// has queued.
	Clock *clocktest.Fake
	// TTL is how long after its grant a lease whose holder vanished is taken back.
	TTL time.Duration
	// Sweep takes back expired leases; nil when the implementation needs no call.
	Sweep func()
}

// RunLeases runs the suite; newHarness returns a fresh, empty implementation.
func RunLeases(t *testing.T, newHarness func(t *testing.T) Harness) {
	t.Run("Exclusive", func(t *testing.T) { testExclusive(t, newHarness(t)) })
	t.Run("BusyAfterWait", func(t *testing.T) { testBusyAfterWait(t, newHarness(t)) })
	t.Run("WaitsForRelease", func(t *testing.T) { testWaitsForRelease(t, newHarness(t)) })
	t.Run("Context", func(t *testing.T) { testContext(t, newHarness) })
	t.Run("KeysAreIndependent", func(t *testing.T) { testKeysIndependent(t, newHarness(t)) })
	t.Run("Serializes", func(t *testing.T) { testSerializes(t, newHarness(t)) })
	t.Run("FIFO", func(t *testing.T) { testFIFO(t, newHarness(t)) })
	t.Run("Expiry", func(t *testing.T) { testExpiry(t, newHarness(t)) })
	t.Run("TimedOutWaiterPassesOn", func(t *testing.T) { testTimedOutWaiter(t, newHarness) })
	t.Run("ReleaseTwice", func(t *testing.T) { testReleaseTwice(t, newHarness(t)) })
}

func acquire(t *testing.T, l session.Leases, key string) func() {
	t.Helper()
	release, err := l.Acquire(context.Background(), key, 0)
	if err != nil {
		t.Fatalf("Acquire(%q) of a free session: %v", key, err)
	}
	return release
}

func wantBusy(t *testing.T, err error) {
	t.Helper()
	var e *agentd.Error
	if !errors.As(err, &e) || e.Code != agentd.ESessionBusy {
		t.Fatalf("err = %v, want %s", err, agentd.ESessionBusy)
	}
	if r, ok := e.Fields["retry_after"].(int); !ok || r < 1 {
		t.Errorf("retry_after = %#v, want a positive number of seconds", e.Fields["retry_after"])
	}
}

// acquireAsync starts an Acquire with wait and returns where its outcome arrives.
func acquireAsync(ctx context.Context, l session.Leases, key string, wait time.Duration) <-chan result {
	c := make(chan result, 1)
	go func() {
		rel, err := l.Acquire(ctx, key, wait)
		c <- result{rel, err}
	}()
	return c
}

type result struct {
	release func()
	err     error
}

func testExclusive(t *testing.T, h Harness) {
	release := acquire(t, h.Leases, "k")
	defer release()
	for _, wait := range []time.Duration{0, -time.Second} {
		got, err := h.Leases.Acquire(context.Background(), "k", wait)
		if err == nil {
			got()
			t.Fatalf("a held session was acquired again (wait %v)", wait)
		}
		wantBusy(t, err)
	}
}

func testBusyAfterWait(t *testing.T, h Harness) {
	release := acquire(t, h.Leases, "k")
	defer release()
	c := acquireAsync(context.Background(), h.Leases, "k", 30*time.Second)
	h.Clock.WaitTimers(1)
	select {
	case r := <-c:
		t.Fatalf("the waiter returned (%v) before its wait ran out", r.err)
	default:
	}
	h.Clock.Advance(30 * time.Second)
	r := <-c
	if r.err == nil {
		r.release()
		t.Fatal("a held session was granted when the wait ran out")
	}
	wantBusy(t, r.err)
}

func testWaitsForRelease(t *testing.T, h Harness) {
	release := acquire(t, h.Leases, "k")
	c := acquireAsync(context.Background(), h.Leases, "k", time.Hour)
	h.Clock.WaitTimers(1)
	release()
	r := <-c
	if r.err != nil {
		t.Fatalf("the waiter after a release: %v", r.err)
	}
	// The second holder has it now: a third caller is refused until it releases.
	if third, err := h.Leases.Acquire(context.Background(), "k", 0); err == nil {
		third()
		t.Fatal("a third Acquire succeeded while the second held the lease")
	}
	r.release()
	acquire(t, h.Leases, "k")()
}

func testContext(t *testing.T, newHarness func(*testing.T) Harness) {
	t.Run("cancelled while waiting", func(t *testing.T) {
		h := newHarness(t)
		defer acquire(t, h.Leases, "k")()
		ctx, cancel := context.WithCancel(context.Background())
		c := acquireAsync(ctx, h.Leases, "k", time.Hour)
		h.Clock.WaitTimers(1)
		cancel()
		if r := <-c; !errors.Is(r.err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", r.err)
		}
		// The cancelled waiter left the queue: a release frees the session.
	})
	t.Run("already cancelled", func(t *testing.T) {
		h := newHarness(t)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if rel, err := h.Leases.Acquire(ctx, "free", time.Hour); !errors.Is(err, context.Canceled) {
			if rel != nil {
				rel()
			}
			t.Fatalf("err = %v, want context.Canceled", err)
		}
	})
	t.Run("a cancelled waiter does not keep the session", func(t *testing.T) {
		h := newHarness(t)
		release := acquire(t, h.Leases, "k")
		ctx, cancel := context.WithCancel(context.Background())
		c := acquireAsync(ctx, h.Leases, "k", time.Hour)
		h.Clock.WaitTimers(1)
		cancel()
		<-c
		release()
		acquire(t, h.Leases, "k")()
	})
}

func testKeysIndependent(t *testing.T, h Harness) {
	keys := []agentd.SessionKey{
		{OrgID: "org1", AgentID: "agent1", Owner: "alice", SessionID: "s1"},
		{OrgID: "org1", AgentID: "agent1", Owner: "alice", SessionID: "s2"},
		{OrgID: "org1", AgentID: "agent1", Owner: "bob", SessionID: "s1"},
		{OrgID: "org1", AgentID: "agent2", Owner: "alice", SessionID: "s1"},
		{OrgID: "org2", AgentID: "agent1", Owner: "alice", SessionID: "s1"},
	}
	var releases []func()
	for _, k := range keys {
		releases = append(releases, acquire(t, h.Leases, session.Key(k)))
	}
	for _, r := range releases {
		r()
	}
}

// testSerializes: 50 turns on one session, each a non-atomic read-modify-write
// under the lease, never overlap and lose no update.
func testSerializes(t *testing.T, h Harness) {
	const n = 50
	var (
		inside   atomic.Int32
		overlaps atomic.Int32
		counter  int // guarded by the lease alone
		wg       sync.WaitGroup
	)
	for range n {
		wg.Go(func() {
			release, err := h.Leases.Acquire(context.Background(), "shared", time.Hour)
			if err != nil {
				t.Error(err)
				return
			}
			if inside.Add(1) > 1 {
				overlaps.Add(1)
			}
			v := counter
			for range 100 {
				_ = inside.Load() // give other goroutines a chance to break in
			}
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
	acquire(t, h.Leases, "shared")()
}

// testFIFO: turns waiting on one session get it in the order they arrived.
func testFIFO(t *testing.T, h Harness) {
	release := acquire(t, h.Leases, "k")
	const n = 20
	var order []int
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			rel, err := h.Leases.Acquire(context.Background(), "k", time.Hour)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
			rel()
		})
		h.Clock.WaitTimers(i + 1) // waiter i has queued before waiter i+1 arrives
	}
	release()
	wg.Wait()
	for i, got := range order {
		if got != i {
			t.Fatalf("grant order %v, want arrival order", order)
		}
	}
	acquire(t, h.Leases, "k")()
}

// testExpiry: a holder that never releases loses the lease after the TTL, the next
// waiter gets it, and the dead holder's late release is a no-op.
func testExpiry(t *testing.T, h Harness) {
	dead := acquire(t, h.Leases, "k") // never released in time
	c := acquireAsync(context.Background(), h.Leases, "k", 100*h.TTL)
	h.Clock.WaitTimers(1)
	if h.Sweep != nil {
		h.Sweep() // nothing has expired yet
	}
	select {
	case r := <-c:
		t.Fatalf("the waiter got the lease (%v) before the holder's expired", r.err)
	default:
	}
	h.Clock.Advance(h.TTL + time.Second)
	if h.Sweep != nil {
		h.Sweep()
	}
	r := <-c
	if r.err != nil {
		t.Fatalf("the waiter after the holder's lease expired: %v", r.err)
	}
	dead() // stale: must not free the waiter's lease
	if other, err := h.Leases.Acquire(context.Background(), "k", 0); err == nil {
		other()
		t.Fatal("after a stale release the session is free while its new holder runs")
	}
	r.release()
	acquire(t, h.Leases, "k")()
}

// testTimedOutWaiter: a waiter that gives up just as the lease reaches it passes
// the lease on instead of keeping it.
func testTimedOutWaiter(t *testing.T, newHarness func(*testing.T) Harness) {
	for range 100 {
		h := newHarness(t)
		release := acquire(t, h.Leases, "k")
		c := acquireAsync(context.Background(), h.Leases, "k", time.Second)
		h.Clock.WaitTimers(1)
		var wg sync.WaitGroup
		wg.Go(release)
		wg.Go(func() { h.Clock.Advance(time.Second) })
		wg.Wait()
		if r := <-c; r.err == nil {
			r.release()
		}
		acquire(t, h.Leases, "k")() // free, whichever won
	}
}

func testReleaseTwice(t *testing.T, h Harness) {
	first := acquire(t, h.Leases, "k")
	first()
	second := acquire(t, h.Leases, "k")
	first() // a second call of an ended lease's release does nothing
	if other, err := h.Leases.Acquire(context.Background(), "k", 0); err == nil {
		other()
		t.Fatal("a repeated release freed the next holder's lease")
	}
	second()
}
