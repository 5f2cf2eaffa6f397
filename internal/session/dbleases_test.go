package session_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/internal/clock/clocktest"
	"github.com/agentd/agentd/internal/session"
	"github.com/agentd/agentd/internal/session/sessiontest"
	"github.com/agentd/agentd/internal/store"
	"github.com/agentd/agentd/internal/store/storetest"
)

const replicaTTL = 5 * time.Second

// openSchema opens n databases (replicas) of one fresh PostgreSQL schema, or
// skips t without a server.
func openSchema(t *testing.T, n int) []*store.DB {
	t.Helper()
	dsn := storetest.Postgres(t)
	var dbs []*store.DB
	for range n {
		db, err := store.Open(context.Background(), dsn, store.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		dbs = append(dbs, db)
	}
	return dbs
}

// dbReplica is one replica's leases; its heartbeat is the test's to call
// (Beat), so that a replica the test stops beating is dead.
type dbReplica struct {
	rep    *store.Replica
	leases *session.DBLeases
}

func newDBReplica(t *testing.T, db *store.DB, clk *clocktest.Fake) *dbReplica {
	t.Helper()
	rep, err := db.NewReplica(store.ReplicaOptions{TTL: replicaTTL, Every: -1, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	l := session.NewDBLeases(rep, clk)
	t.Cleanup(func() {
		l.Close()
		rep.Close(context.Background())
	})
	return &dbReplica{rep: rep, leases: l}
}

func (r *dbReplica) beat(t *testing.T) {
	t.Helper()
	if err := r.rep.Beat(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// prefixed gives a harness keys of its own in a database that harnesses share,
// each with its own fake clock.
type prefixed struct {
	session.Leases
	prefix string
}

func (p prefixed) Acquire(ctx context.Context, key string, wait time.Duration) (func(), error) {
	return p.Leases.Acquire(ctx, p.prefix+key, wait)
}

// TestDBLeases runs the leases' conformance suite on the database leases of one
// replica whose heartbeat is off: a holder that never releases is one whose
// replica died, and its lease expires TTL after it was taken.
func TestDBLeases(t *testing.T) {
	db := openSchema(t, 1)[0]
	sessiontest.RunLeases(t, func(t *testing.T) sessiontest.Harness {
		clk := clocktest.New(epoch)
		r := newDBReplica(t, db, clk)
		t.Cleanup(func() {
			if n, _ := r.rep.Tracked(); n != 0 {
				t.Errorf("%d tickets still queued after the test", n)
			}
		})
		return sessiontest.Harness{Leases: prefixed{r.leases, agentd.NewID("h") + "\x00"}, Clock: clk, TTL: replicaTTL}
	})
}

func wantBusy(t *testing.T, l session.Leases, key, why string) {
	t.Helper()
	rel, err := l.Acquire(context.Background(), key, 0)
	if err == nil {
		rel()
		t.Fatalf("%s: the session was free", why)
	}
	if agentd.ErrorCode(err) != agentd.ESessionBusy {
		t.Fatalf("%s: %v, want %s", why, err, agentd.ESessionBusy)
	}
}

// TestDBLeasesReplicasFIFO: 20 turns of one session waiting on three replicas
// are granted one at a time, in the order they queued.
func TestDBLeasesReplicasFIFO(t *testing.T) {
	clk := clocktest.New(epoch)
	var reps []*dbReplica
	for _, db := range openSchema(t, 3) {
		reps = append(reps, newDBReplica(t, db, clk))
	}
	release, err := reps[0].leases.Acquire(context.Background(), "k", 0)
	if err != nil {
		t.Fatal(err)
	}
	const n = 20
	var (
		inside, overlaps atomic.Int32
		mu               sync.Mutex
		order            []int
		wg               sync.WaitGroup
	)
	for i := range n {
		l := reps[i%len(reps)].leases
		wg.Go(func() {
			rel, err := l.Acquire(context.Background(), "k", time.Hour)
			if err != nil {
				t.Error(err)
				return
			}
			if inside.Add(1) > 1 {
				overlaps.Add(1)
			}
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
			inside.Add(-1)
			rel()
		})
		clk.WaitTimers(i + 1) // turn i has queued before turn i+1 arrives
	}
	release()
	wg.Wait()
	if o := overlaps.Load(); o != 0 {
		t.Errorf("%d turns held the session while another did", o)
	}
	for i, got := range order {
		if got != i {
			t.Fatalf("grant order %v, want the order of arrival", order)
		}
	}
	if len(order) != n {
		t.Fatalf("%d of %d turns were granted", len(order), n)
	}
}

// TestDBLeasesReplicasSerialize: turns racing on three replicas never overlap
// and lose no update of what the lease guards.
func TestDBLeasesReplicasSerialize(t *testing.T) {
	clk := clocktest.New(epoch)
	var reps []*dbReplica
	for _, db := range openSchema(t, 3) {
		reps = append(reps, newDBReplica(t, db, clk))
	}
	const n = 60
	var (
		inside, overlaps atomic.Int32
		counter          int // guarded by the lease alone
		wg               sync.WaitGroup
	)
	for i := range n {
		l := reps[i%len(reps)].leases
		wg.Go(func() {
			rel, err := l.Acquire(context.Background(), "shared", time.Hour)
			if err != nil {
				t.Error(err)
				return
			}
			if inside.Add(1) > 1 {
				overlaps.Add(1)
			}
			v := counter
			for range 100 {
				_ = inside.Load()
			}
			counter = v + 1
			inside.Add(-1)
			rel()
		})
	}
	wg.Wait()
	if o := overlaps.Load(); o != 0 {
		t.Errorf("%d turns held the session while another did", o)
	}
	if counter != n {
		t.Errorf("counter = %d, want %d", counter, n)
	}
}

// TestDBLeasesDeadReplica: a lease whose replica keeps beating outlives many
// TTLs; once its replica stops, a waiter on another replica gets it within the
// TTL of the last beat, and the dead holder's late release frees nothing.
func TestDBLeasesDeadReplica(t *testing.T) {
	clk := clocktest.New(epoch)
	dbs := openSchema(t, 3)
	a, b, probe := newDBReplica(t, dbs[0], clk), newDBReplica(t, dbs[1], clk), newDBReplica(t, dbs[2], clk)
	deadRelease, err := a.leases.Acquire(context.Background(), "k", 0)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	var bRelease func()
	go func() {
		var err error
		bRelease, err = b.leases.Acquire(context.Background(), "k", time.Hour)
		got <- err
	}()
	clk.WaitTimers(1) // b waits
	for i := range 6 {
		clk.Advance(replicaTTL / 2)
		a.beat(t)
		b.beat(t)
		wantBusy(t, probe.leases, "k", fmt.Sprintf("%v after a's lease was taken, a beating", time.Duration(i+1)*replicaTTL/2))
	}
	select {
	case err := <-got:
		t.Fatalf("the waiter returned (%v) while the holder's replica was alive", err)
	default:
	}

	// a dies: it beats no more. Just before its last beat's TTL runs out the
	// lease is still a's; past it, b's.
	clk.Advance(replicaTTL - time.Second)
	b.beat(t)
	wantBusy(t, probe.leases, "k", "within the TTL of a's last beat")
	clk.Advance(2 * time.Second)
	b.beat(t)
	if err := <-got; err != nil {
		t.Fatalf("the waiter after the holder's replica died: %v", err)
	}
	deadRelease() // a comes back too late: its release must not free b's lease
	wantBusy(t, probe.leases, "k", "after the dead holder's late release")
	bRelease()
	rel, err := probe.leases.Acquire(context.Background(), "k", 0)
	if err != nil {
		t.Fatalf("after the last holder released: %v", err)
	}
	rel()
}

// TestDBLeasesReplicaClose: a replica that shuts down frees its leases at once,
// without waiting for them to expire.
func TestDBLeasesReplicaClose(t *testing.T) {
	clk := clocktest.New(epoch)
	dbs := openSchema(t, 2)
	a, b := newDBReplica(t, dbs[0], clk), newDBReplica(t, dbs[1], clk)
	if _, err := a.leases.Acquire(context.Background(), "k", 0); err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() {
		rel, err := b.leases.Acquire(context.Background(), "k", time.Hour)
		if err == nil {
			rel()
		}
		got <- err
	}()
	clk.WaitTimers(1)
	if err := a.rep.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("the waiter after the holder's replica closed: %v", err)
	}
	// A closed replica takes no new leases.
	if rel, err := a.leases.Acquire(context.Background(), "other", 0); err == nil {
		rel()
		t.Fatal("Acquire on a closed replica succeeded")
	}
}
