package run_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/internal/clock/clocktest"
	"github.com/agentd/agentd/internal/run"
	"github.com/agentd/agentd/internal/run/inflighttest"
	"github.com/agentd/agentd/internal/store"
	"github.com/agentd/agentd/internal/store/storetest"
)

const replicaTTL = 5 * time.Second

var epoch = time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)

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

// newReplica is a replica whose heartbeat is the test's to call.
func newReplica(t *testing.T, db *store.DB, clk *clocktest.Fake) *store.Replica {
	t.Helper()
	rep, err := db.NewReplica(store.ReplicaOptions{TTL: replicaTTL, Every: -1, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rep.Close(context.Background()) })
	return rep
}

// prefixed gives a set ids of its own in a database that sets share.
type prefixed struct {
	run.InFlight
	prefix string
}

func (p prefixed) Begin(ctx context.Context, id string) (func(), error) {
	return p.InFlight.Begin(ctx, p.prefix+id)
}

// TestDBInFlight runs the in-flight set's conformance suite on the database set.
func TestDBInFlight(t *testing.T) {
	db := openSchema(t, 1)[0]
	inflighttest.Run(t, func(t *testing.T) run.InFlight {
		clk := clocktest.New(epoch)
		rep := newReplica(t, db, clk)
		t.Cleanup(func() {
			if _, n := rep.Tracked(); n != 0 {
				t.Errorf("%d marks still in flight after the test", n)
			}
		})
		return prefixed{run.NewDBInFlight(rep, clk), agentd.NewID("h") + "\x00"}
	})
}

func wantInFlight(t *testing.T, err error, why string) {
	t.Helper()
	var e *agentd.Error
	if !errors.As(err, &e) || e.Code != agentd.EConflict || e.Fields["retry_after"] != 1 {
		t.Fatalf("%s: %v, want conflict with retry_after 1", why, err)
	}
}

// TestDBInFlightReplicas: a key in flight on one replica is refused on another
// until it ends; a dead replica's mark is taken over once its TTL has passed,
// and its late end removes nothing.
func TestDBInFlightReplicas(t *testing.T) {
	ctx := context.Background()
	clk := clocktest.New(epoch)
	dbs := openSchema(t, 2)
	repA, repB := newReplica(t, dbs[0], clk), newReplica(t, dbs[1], clk)
	a, b := run.NewDBInFlight(repA, clk), run.NewDBInFlight(repB, clk)
	const id = "org\x00key\x00idem"

	endA, err := a.Begin(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	_, err = b.Begin(ctx, id)
	wantInFlight(t, err, "Begin on b while a runs")
	endA()
	endB, err := b.Begin(ctx, id)
	if err != nil {
		t.Fatalf("Begin on b after a ended: %v", err)
	}

	// b beats for three TTLs: its mark holds.
	for range 6 {
		clk.Advance(replicaTTL / 2)
		if err := repB.Beat(ctx); err != nil {
			t.Fatal(err)
		}
		_, err = a.Begin(ctx, id)
		wantInFlight(t, err, "Begin on a while b runs and beats")
	}
	// b dies; past its last beat's TTL, a takes the key over.
	clk.Advance(replicaTTL + time.Second)
	endA, err = a.Begin(ctx, id)
	if err != nil {
		t.Fatalf("Begin on a after b died: %v", err)
	}
	endB() // too late: must not end a's mark
	_, err = b.Begin(ctx, id)
	wantInFlight(t, err, "Begin on b after its late end")
	endA()
}
