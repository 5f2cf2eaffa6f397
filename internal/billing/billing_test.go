package billing_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"
	"time"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/internal/billing"
	"github.com/agentd/agentd/internal/billing/billingtest"
	"github.com/agentd/agentd/internal/clock/clocktest"
	"github.com/agentd/agentd/internal/store"
	"github.com/agentd/agentd/internal/store/storetest"

	_ "modernc.org/sqlite"
)

func openDB(t *testing.T) *store.DB {
	db, _ := openDBFile(t)
	return db
}

func openDBFile(t *testing.T) (*store.DB, string) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "agentd.db")
	db, err := store.Open(context.Background(), "sqlite:"+file, store.Options{Synchronous: "OFF"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db, file
}

// TestMemoryAccounts runs the accounts' conformance suite on the in-memory
// accounts of a single node.
func TestMemoryAccounts(t *testing.T) {
	billingtest.Run(t, func(t *testing.T) billingtest.Harness {
		db := openDB(t)
		clk := clocktest.New(billingtest.Day)
		const ttl = time.Minute
		a := billing.New(db, clk, ttl)
		return billingtest.Harness{
			Accounts: a, DB: db, Clock: clk, TTL: ttl, Sweep: func() { a.Sweep(context.Background()) },
			Restart: func() billingtest.Accounts { return billing.New(db, clk, ttl) },
		}
	})
}

// TestSharedAccounts runs the accounts' conformance suite on the accounts that
// replicas share through PostgreSQL; a restart is another replica: a store.DB of
// its own on the same schema, with nothing but the database in common.
func TestSharedAccounts(t *testing.T) {
	storetest.Postgres(t) // skips, saying why, when no server is configured
	billingtest.Run(t, func(t *testing.T) billingtest.Harness {
		dsn := storetest.Postgres(t)
		db := openReplica(t, dsn)
		clk := clocktest.New(billingtest.Day)
		const ttl = time.Minute
		a := billing.NewShared(db, clk, ttl)
		return billingtest.Harness{
			Accounts: a, DB: db, Clock: clk, TTL: ttl,
			Sweep: func() {
				if _, err := a.Sweep(context.Background()); err != nil {
					t.Error(err)
				}
			},
			Restart: func() billingtest.Accounts { return billing.NewShared(openReplica(t, dsn), clk, ttl) },
		}
	})
}

// openReplica opens dsn as one more replica does, closed when t ends; its read
// pool is small, since tests open many.
func openReplica(t *testing.T, dsn string) *store.DB {
	t.Helper()
	db, err := store.Open(context.Background(), dsn, store.Options{MaxConns: 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func TestPeriodStart(t *testing.T) {
	at := time.Date(2026, 11, 28, 23, 59, 59, 999_999_000, time.FixedZone("CET", 3600))
	tests := []struct {
		p    agentd.Period
		want time.Time
	}{
		{agentd.PeriodDaily, time.Date(2026, 11, 28, 0, 0, 0, 0, time.UTC)}, // 22:59:59 UTC
		{agentd.PeriodMonthly, time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)},
		{agentd.PeriodNone, time.Time{}},
	}
	for _, tt := range tests {
		if got := billing.PeriodStart(tt.p, at); !got.Equal(tt.want) {
			t.Errorf("PeriodStart(%s, %v) = %v, want %v", tt.p, at, got, tt.want)
		}
	}
}

// TestKeyState: what the billing endpoint shows of a key: its budget, the period,
// what it spent in it and what it holds.
func TestKeyState(t *testing.T) {
	db, file := openDBFile(t)
	clk := clocktest.New(billingtest.Day)
	a := billing.New(db, clk, 0)
	ctx := context.Background()
	org := &agentd.Org{ID: agentd.NewID("org"), Name: "acme", CreatedAt: clk.Now()}
	key := &agentd.Key{ID: "key-1", OrgID: org.ID, Name: "k", Owner: "key-1", Prefix: "p", Hash: "h", Scopes: []agentd.Scope{agentd.ScopeRun},
		CreatedAt: clk.Now(), Budget: agentd.Budget{Set: true, Limit: 1000, Period: agentd.PeriodMonthly}}
	if err := db.Tx(ctx, func(tx *store.Tx) error {
		if err := tx.CreateOrg(ctx, org); err != nil {
			return err
		}
		return tx.CreateKey(ctx, key)
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Grant(ctx, org.ID, 5000, &agentd.Principal{KeyID: "key-1"}); err != nil {
		t.Fatal(err)
	}
	h, err := a.Hold(ctx, org.ID, key.ID, 300)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Tx(ctx, func(tx *store.Tx) error {
		if _, err := tx.RecordRun(ctx, &store.Run{LedgerRow: agentd.LedgerRow{RunID: "run-1", CreatedAt: clk.Now(), OrgID: org.ID,
			KeyID: key.ID, Owner: key.ID, Cost: 120, Outcome: agentd.OutcomeOK}}); err != nil {
			return err
		}
		h.Settle(tx, 120, clk.Now())
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	open, err := a.Hold(ctx, org.ID, key.ID, 200)
	if err != nil {
		t.Fatal(err)
	}
	defer open.Release()
	ks, err := a.KeyState(ctx, org.ID, key.ID)
	want := billing.KeyState{Budget: key.Budget, PeriodStart: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC), Spent: 120, Held: 200, Available: 680}
	if err != nil || ks != want {
		t.Errorf("KeyState = %+v, %v; want %+v", ks, err, want)
	}
	st, err := a.State(ctx, org.ID)
	if want := (billing.State{Balance: 4880, Held: 200, Holds: 1}); err != nil || st != want {
		t.Errorf("State = %+v, %v; want %+v", st, err, want)
	}
	if problems, err := billing.Check(ctx, db, clk.Now()); err != nil || len(problems) != 0 {
		t.Errorf("Check = %q, %v", problems, err)
	}
	// Damage the rollup the budget reads, behind the store's back: Check names the key.
	raw, err := sql.Open("sqlite", file)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if _, err := raw.Exec(`UPDATE usage_daily SET cost = cost + 1 WHERE key_id = 'key-1'`); err != nil {
		t.Fatal(err)
	}
	if problems, err := billing.Check(ctx, db, clk.Now()); err != nil || len(problems) != 1 {
		t.Errorf("Check after damage = %q, %v; want one problem", problems, err)
	}
}
