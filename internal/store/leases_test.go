package store

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentd/agentd/internal/store/storetest"
)

// settable is a clock for replicas that only moves when a test sets it.
type settable struct{ t atomic.Int64 }

func newSettable() *settable {
	s := &settable{}
	s.set(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	return s
}

func (s *settable) set(t time.Time)                 { s.t.Store(t.UnixMicro()) }
func (s *settable) add(d time.Duration)             { s.set(s.now().Add(d)) }
func (s *settable) now() time.Time                  { return time.UnixMicro(s.t.Load()).UTC() }
func (s *settable) after(d time.Duration) time.Time { return s.now().Add(d) }

// openReplicas opens n store.DBs of one fresh PostgreSQL schema (skipping t
// without a server) and a replica on each, heartbeat off, on clk.
func openReplicas(t *testing.T, n int, clk *settable, ttl time.Duration) []*Replica {
	t.Helper()
	dsn := storetest.Postgres(t)
	var reps []*Replica
	for i := range n {
		db, err := Open(context.Background(), dsn, Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		r, err := db.NewReplica(ReplicaOptions{ID: fmt.Sprint("r", i), TTL: ttl, Every: -1, Now: clk.now})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close(context.Background()) })
		reps = append(reps, r)
	}
	return reps
}

// expiresAt reads a ticket's expiry, or -1 when it is gone.
func expiresAt(t *testing.T, r *Replica, table, where string, arg any) int64 {
	t.Helper()
	var v int64 = -1
	rows, err := r.db.query(context.Background(), `SELECT expires_at FROM `+table+` WHERE `+where+` = ?`, arg)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		if err := rows.Scan(&v); err != nil {
			t.Fatal(err)
		}
	}
	return v
}

func TestReplicaNeedsPostgres(t *testing.T) {
	db, err := Open(context.Background(), "sqlite:"+filepath.Join(t.TempDir(), "a.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if r, err := db.NewReplica(ReplicaOptions{}); err == nil {
		r.Close(context.Background())
		t.Fatal("NewReplica on SQLite succeeded")
	}
}

// TestPostgresLeaseQueue: the head of a key is its smallest live ticket; expired
// tickets are passed over and can never hold again; keys (with NUL bytes) are
// independent; a dequeue with tickets behind it notifies every replica.
func TestPostgresLeaseQueue(t *testing.T) {
	ctx := context.Background()
	clk := newSettable()
	const ttl = 5 * time.Second
	reps := openReplicas(t, 2, clk, ttl)
	a, b := reps[0], reps[1]
	freed := make(chan string, 16)
	defer b.SubscribeLeases(func(k string) { freed <- k })()

	key := "org\x00agent\x00owner\x00s1"
	enqueue := func(r *Replica, key string) int64 {
		t.Helper()
		tk, err := r.EnqueueLease(ctx, key, clk.now())
		if err != nil {
			t.Fatal(err)
		}
		return tk
	}
	head := func(r *Replica, key string, tk int64) (bool, bool) {
		t.Helper()
		h, alive, err := r.LeaseHead(ctx, key, tk, clk.now())
		if err != nil {
			t.Fatal(err)
		}
		return h, alive
	}
	t1 := enqueue(a, key)
	t2 := enqueue(b, key)
	other := enqueue(b, "org\x00agent\x00owner\x00s2")
	if h, alive := head(a, key, t1); !h || !alive {
		t.Fatalf("first ticket: head %v alive %v, want the lease", h, alive)
	}
	if h, alive := head(b, key, t2); h || !alive {
		t.Fatalf("second ticket: head %v alive %v, want a live waiter", h, alive)
	}
	if h, _ := head(b, "org\x00agent\x00owner\x00s2", other); !h {
		t.Fatal("another key's first ticket does not hold its lease")
	}

	// t2 renewed itself by checking; t1 did not: past t1's expiry, t2 holds.
	clk.add(ttl - time.Second)
	head(b, key, t2)
	clk.add(2 * time.Second)
	if h, alive := head(b, key, t2); !h || !alive {
		t.Fatalf("after the holder expired: head %v alive %v, want the lease", h, alive)
	}
	if h, alive := head(a, key, t1); h || alive {
		t.Fatalf("an expired ticket checked again: head %v alive %v, want dead", h, alive)
	}

	// A dequeue with a ticket behind it tells every replica; with none, nobody.
	t3 := enqueue(a, key)
	if err := b.DequeueLease(ctx, t2); err != nil {
		t.Fatal(err)
	}
	if k := <-freed; k != key {
		t.Fatalf("notified key %q, want %q", k, key)
	}
	if h, _ := head(a, key, t3); !h {
		t.Fatal("the ticket behind a dequeued holder does not hold")
	}
	for _, tk := range []int64{t3, t1, other} { // none with a ticket behind it
		if err := a.DequeueLease(ctx, tk); err != nil {
			t.Fatal(err)
		}
	}
	if n := count(t, a.db, `SELECT count(*) FROM session_queue`); n != 0 {
		t.Errorf("%d tickets left after every dequeue", n)
	}
	// The only notification was t2's: t1 and t3 had nobody behind them. A
	// notification to compare with proves none other is pending.
	if err := a.db.NotifyNow(ctx, leaseTopic, encodeKey("marker")); err != nil {
		t.Fatal(err)
	}
	if k := <-freed; k != "marker" {
		t.Fatalf("notified %q with nobody waiting", k)
	}
}

// TestPostgresLeaseArrivalOrder: tickets drawn concurrently on three replicas,
// each checked right after it is queued, with no ticket ever dequeued: exactly
// one is the head, the smallest. Without the per-key lock a larger ticket could
// commit and check before a smaller one was visible, and hold beside it.
func TestPostgresLeaseArrivalOrder(t *testing.T) {
	ctx := context.Background()
	clk := newSettable()
	reps := openReplicas(t, 3, clk, time.Hour)
	for round := range 20 {
		key := fmt.Sprint("k\x00", round)
		type got struct {
			ticket int64
			head   bool
		}
		res := make(chan got, 30)
		var wg sync.WaitGroup
		for i := range 30 {
			r := reps[i%len(reps)]
			wg.Go(func() {
				tk, err := r.EnqueueLease(ctx, key, clk.now())
				if err != nil {
					t.Error(err)
					return
				}
				h, _, err := r.LeaseHead(ctx, key, tk, clk.now())
				if err != nil {
					t.Error(err)
					return
				}
				res <- got{tk, h}
			})
		}
		wg.Wait()
		close(res)
		var heads []int64
		smallest := int64(-1)
		for g := range res {
			if g.head {
				heads = append(heads, g.ticket)
			}
			if smallest < 0 || g.ticket < smallest {
				smallest = g.ticket
			}
		}
		if len(heads) != 1 || heads[0] != smallest {
			t.Fatalf("round %d: heads %v, want only the smallest ticket %d", round, heads, smallest)
		}
	}
}

// TestPostgresInFlightMarks: one live mark per id across replicas; an expired mark
// is taken over; an end removes only its own mark.
func TestPostgresInFlightMarks(t *testing.T) {
	ctx := context.Background()
	clk := newSettable()
	const ttl = 5 * time.Second
	reps := openReplicas(t, 2, clk, ttl)
	a, b := reps[0], reps[1]
	id := "org\x00key\x00idem"
	begin := func(r *Replica) (string, bool) {
		t.Helper()
		tok, ok, err := r.BeginInFlight(ctx, id, clk.now())
		if err != nil {
			t.Fatal(err)
		}
		return tok, ok
	}
	first, ok := begin(a)
	if !ok {
		t.Fatal("the first Begin lost")
	}
	if _, ok := begin(b); ok {
		t.Fatal("a second replica marked a key in flight on another")
	}
	// Renewed by a's heartbeat, the mark outlives its first TTL.
	clk.add(ttl - time.Second)
	if err := a.Beat(ctx); err != nil {
		t.Fatal(err)
	}
	clk.add(2 * time.Second)
	if _, ok := begin(b); ok {
		t.Fatal("a renewed mark was taken over")
	}
	// a dies (no more beats): after TTL, b takes the mark over.
	clk.add(ttl)
	second, ok := begin(b)
	if !ok {
		t.Fatal("an expired mark was not taken over")
	}
	if err := a.EndInFlight(ctx, id, first); err != nil {
		t.Fatal(err)
	}
	if _, ok := begin(a); ok {
		t.Fatal("the dead replica's late end removed the mark that took over")
	}
	if err := b.EndInFlight(ctx, id, second); err != nil {
		t.Fatal(err)
	}
	if tok, ok := begin(a); !ok {
		t.Fatal("Begin after the mark ended lost")
	} else if err := a.EndInFlight(ctx, id, tok); err != nil {
		t.Fatal(err)
	}
}

// TestPostgresReplicaHeartbeat: the heartbeat renews the tickets and marks its
// replica knows of, not one it lost track of nor one already expired; the sweep
// deletes expired rows of every replica; Close deletes the replica's rows and
// refuses new ones.
func TestPostgresReplicaHeartbeat(t *testing.T) {
	ctx := context.Background()
	clk := newSettable()
	const ttl = time.Hour // beats renew by the settable clock, not by real time
	dsn := storetest.Postgres(t)
	db, err := Open(ctx, dsn, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if r, err := db.NewReplica(ReplicaOptions{TTL: time.Second, Every: time.Second}); err == nil {
		r.Close(ctx)
		t.Fatal("NewReplica accepted a heartbeat no faster than the TTL")
	}
	// The heartbeat waits for the test to take each beat's outcome, so that the
	// second beat taken began after the first was taken.
	beats, quit := make(chan error), make(chan struct{})
	r, err := db.NewReplica(ReplicaOptions{ID: "beating", TTL: ttl, Every: time.Millisecond, Now: clk.now,
		OnBeat: func(err error) {
			select {
			case beats <- err:
			case <-quit:
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(ctx)
	defer close(quit)
	// waitBeat returns once a beat that began after the call has ended.
	waitBeat := func() {
		t.Helper()
		for range 2 { // the first may have begun before
			if err := <-beats; err != nil {
				t.Fatal(err)
			}
		}
	}

	kept, err := r.EnqueueLease(ctx, "kept", clk.now())
	if err != nil {
		t.Fatal(err)
	}
	lost, err := r.EnqueueLease(ctx, "lost", clk.now())
	if err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	delete(r.tickets, lost) // as if its insert's answer had not arrived
	r.mu.Unlock()
	tok, ok, err := r.BeginInFlight(ctx, "mark", clk.now())
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	start := clk.now()
	clk.add(ttl / 2)
	waitBeat()
	want := clk.after(ttl).UnixMicro()
	if got := expiresAt(t, r, "session_queue", "ticket", kept); got != want {
		t.Errorf("tracked ticket expires at %d, want %d (renewed)", got, want)
	}
	if got := expiresAt(t, r, "inflight", "token", tok); got != want {
		t.Errorf("mark expires at %d, want %d (renewed)", got, want)
	}
	if got := expiresAt(t, r, "session_queue", "ticket", lost); got != start.Add(ttl).UnixMicro() {
		t.Errorf("untracked ticket expires at %d, want its first expiry %d", got, start.Add(ttl).UnixMicro())
	}

	// Past every expiry, nothing is renewed any more: an expired row stays dead.
	clk.add(2 * ttl)
	waitBeat()
	if got := expiresAt(t, r, "session_queue", "ticket", kept); got != want {
		t.Errorf("expired ticket renewed to %d", got)
	}

	// Another replica's live rows survive the sweep; every expired row goes.
	other, err := db.NewReplica(ReplicaOptions{ID: "other", TTL: ttl, Every: -1, Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	live, err := other.EnqueueLease(ctx, "live", clk.now())
	if err != nil {
		t.Fatal(err)
	}
	if n, err := other.Sweep(ctx); err != nil || n != 3 {
		t.Fatalf("Sweep deleted %d rows, %v; want the 3 expired", n, err)
	}
	if expiresAt(t, r, "session_queue", "ticket", live) < 0 {
		t.Fatal("the sweep deleted a live ticket")
	}
	if _, _, err := other.BeginInFlight(ctx, "mark2", clk.now()); err != nil {
		t.Fatal(err)
	}
	if err := other.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if n := count(t, db, `SELECT count(*) FROM session_queue`) + count(t, db, `SELECT count(*) FROM inflight`); n != 0 {
		t.Errorf("%d rows left after the sweep and Close", n)
	}
	if _, err := other.EnqueueLease(ctx, "late", clk.now()); err == nil {
		t.Error("EnqueueLease after Close succeeded")
	}
	if _, _, err := other.BeginInFlight(ctx, "late", clk.now()); err == nil {
		t.Error("BeginInFlight after Close succeeded")
	}
}
