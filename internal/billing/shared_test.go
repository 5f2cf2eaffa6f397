package billing_test

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/internal/billing"
	"github.com/agentd/agentd/internal/billing/billingtest"
	"github.com/agentd/agentd/internal/clock/clocktest"
	"github.com/agentd/agentd/internal/store"
	"github.com/agentd/agentd/internal/store/storetest"

	_ "github.com/jackc/pgx/v5/stdlib"
)

const replicas = 3

// cluster is replicas sharing one PostgreSQL schema: each its own store.DB (its
// own writer and pools) and its own Accounts, and one clock.
type cluster struct {
	ctx   context.Context
	clock *clocktest.Fake
	dbs   []*store.DB
	accts []*billing.Accounts
	org   string
	key   string
}

const clusterTTL = time.Minute

func newCluster(t *testing.T, budget agentd.Budget) *cluster {
	t.Helper()
	dsn := storetest.Postgres(t)
	c := &cluster{ctx: context.Background(), clock: clocktest.New(billingtest.Day)}
	for range replicas {
		db := openReplica(t, dsn)
		c.dbs = append(c.dbs, db)
		c.accts = append(c.accts, billing.NewShared(db, c.clock, clusterTTL))
	}
	o := &agentd.Org{ID: agentd.NewID("org"), Name: "acme", CreatedAt: c.clock.Now()}
	k := &agentd.Key{ID: agentd.NewID("key"), OrgID: o.ID, Name: "k", Prefix: "agd_x", Hash: agentd.NewID("h"),
		Scopes: []agentd.Scope{agentd.ScopeRun}, CreatedAt: c.clock.Now(), Budget: budget}
	k.Owner = k.ID
	if err := c.dbs[0].Tx(c.ctx, func(tx *store.Tx) error {
		if err := tx.CreateOrg(c.ctx, o); err != nil {
			return err
		}
		return tx.CreateKey(c.ctx, k)
	}); err != nil {
		t.Fatal(err)
	}
	c.org, c.key = o.ID, k.ID
	return c
}

// grant grants amount in three parts, one from each replica.
func (c *cluster) grant(t *testing.T, amount agentd.Micros) {
	t.Helper()
	parts := []agentd.Micros{amount - amount/3 - amount/4, amount / 3, amount / 4}
	for i, p := range parts {
		if _, err := c.accts[i].Grant(c.ctx, c.org, p, &agentd.Principal{KeyID: "key-test"}); err != nil {
			t.Fatal(err)
		}
	}
}

// settle records a run of the cluster's key costing cost on replica r and settles
// h in the same write, as a run does.
func (c *cluster) settle(r int, h billing.Hold, cost agentd.Micros) error {
	rec := &store.Run{LedgerRow: agentd.LedgerRow{RunID: agentd.NewID("run"), CreatedAt: c.clock.Now().UTC().Truncate(time.Microsecond),
		OrgID: c.org, KeyID: c.key, Owner: c.key, Model: "m", UsageSource: agentd.UsageProvider, Cost: cost, Outcome: agentd.OutcomeOK}}
	return c.dbs[r].Tx(c.ctx, func(tx *store.Tx) error {
		if _, err := tx.RecordRun(c.ctx, rec); err != nil {
			return err
		}
		h.Settle(tx, cost, rec.CreatedAt)
		return nil
	})
}

// verify checks, from every replica, that nothing is held, that the balance is
// the grants minus the ledger's charges, that the key has spent what the ledger
// charged it, and that both checks are clean; it returns the ledger's totals.
func (c *cluster) verify(t *testing.T) store.Totals {
	t.Helper()
	totals, err := c.dbs[0].LedgerTotals(c.ctx, c.org)
	if err != nil {
		t.Fatal(err)
	}
	for r, a := range c.accts {
		st, err := a.State(c.ctx, c.org)
		if want := (billing.State{Balance: totals.Grants - totals.Cost}); err != nil || st != want {
			t.Errorf("replica %d: State = %+v, %v; want %+v (grants %s − charges %s, nothing held)", r, st, err, want, totals.Grants, totals.Cost)
		}
		ks, err := a.KeyState(c.ctx, c.org, c.key)
		if err != nil {
			t.Fatal(err)
		}
		if ks.Held != 0 || (ks.Budget.Set && ks.Spent != totals.Cost) {
			t.Errorf("replica %d: KeyState = %+v; want nothing held and %s spent", r, ks, totals.Cost)
		}
	}
	problems, err := c.dbs[1].Check(c.ctx)
	if err != nil {
		t.Fatal(err)
	}
	more, err := billing.Check(c.ctx, c.dbs[2], c.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	if problems = append(problems, more...); len(problems) > 0 {
		t.Errorf("check: %q", problems)
	}
	return totals
}

// TestSharedReplicasNeverOverspend: three replicas race 200 holds for a balance,
// or a key budget, that covers exactly 37 of them. Exactly 37 are taken, whichever
// replicas took them; once each is settled on its replica (charging up to what it
// held, the rest released), nothing is held and the balance is the grants minus
// the ledger's charges.
func TestSharedReplicasNeverOverspend(t *testing.T) {
	const cost, fits, runs = agentd.Micros(1_234_567), 37, 200
	for _, tc := range []struct {
		name    string
		balance agentd.Micros
		budget  agentd.Budget
		limit   string
	}{
		{"Balance", cost * fits, agentd.Budget{}, "balance"},
		{"KeyBudget", cost * runs, agentd.Budget{Set: true, Limit: cost * fits, Period: agentd.PeriodMonthly}, "key_budget"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t, tc.budget)
			c.grant(t, tc.balance)
			holds := make([]billing.Hold, runs)
			errs := make([]error, runs)
			start := make(chan struct{})
			var wg sync.WaitGroup
			for i := range runs {
				wg.Go(func() {
					<-start
					holds[i], errs[i] = c.accts[i%replicas].Hold(c.ctx, c.org, c.key, cost)
				})
			}
			close(start)
			wg.Wait()
			taken := 0
			for _, err := range errs {
				if err == nil {
					taken++
					continue
				}
				var e *agentd.Error
				if !errors.As(err, &e) || e.Code != agentd.EInsufficientQuota || e.Fields["limit"] != tc.limit ||
					e.Fields["required"] != cost || e.Fields["available"] != agentd.Micros(0) {
					t.Errorf("a refused hold: %v %#v, want %s with limit %q, required %d, available 0", err, e, agentd.EInsufficientQuota, tc.limit, cost)
				}
			}
			if taken != fits {
				t.Fatalf("%d holds taken, want exactly %d", taken, fits)
			}
			for r, a := range c.accts {
				if st, err := a.State(c.ctx, c.org); err != nil || st.Held != cost*fits || st.Holds != fits {
					t.Errorf("replica %d sees %+v, %v; want %d holds of %s", r, st, err, fits, cost*fits)
				}
			}
			for i, h := range holds {
				if h == nil {
					continue
				}
				wg.Go(func() {
					defer h.Release() // a run's deferred release: nothing left to do
					if err := c.settle(i%replicas, h, cost-agentd.Micros(i)); err != nil {
						t.Error(err)
					}
				})
			}
			wg.Wait()
			if totals := c.verify(t); totals.Runs != fits {
				t.Errorf("%d runs recorded, want %d", totals.Runs, fits)
			}
		})
	}
}

// TestSharedSweepersOfReplicas: sweepers of three replicas at once end every
// expired hold exactly once; a hold settled before its expiry is charged once,
// one settled after it is charged all the same.
func TestSharedSweepersOfReplicas(t *testing.T) {
	c := newCluster(t, agentd.Budget{Set: true, Limit: 1_000_000, Period: agentd.PeriodNone})
	c.grant(t, 1_000_000)
	const n, settledEarly = 150, 30
	holds := make([]billing.Hold, n)
	for i := range holds {
		key := ""
		if i%2 == 0 {
			key = c.key
		}
		h, err := c.accts[i%replicas].Hold(c.ctx, c.org, key, 1000)
		if err != nil {
			t.Fatal(err)
		}
		holds[i] = h
	}
	for i, h := range holds[:settledEarly] {
		if err := c.settle(i%replicas, h, 10); err != nil {
			t.Fatal(err)
		}
	}
	c.clock.Advance(clusterTTL + time.Second)
	swept := make([]int, replicas)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for r, a := range c.accts {
		wg.Go(func() {
			<-start
			var err error
			if swept[r], err = a.Sweep(c.ctx); err != nil {
				t.Error(err)
			}
		})
	}
	close(start)
	wg.Wait()
	if total := swept[0] + swept[1] + swept[2]; total != n-settledEarly {
		t.Errorf("the sweepers ended %v holds, %d in all; want %d", swept, total, n-settledEarly)
	}
	// A run that outlived its hold still records its charge; releasing after it
	// changes nothing.
	late := holds[n-1]
	if err := c.settle((n-1)%replicas, late, 20); err != nil {
		t.Fatal(err)
	}
	late.Release()
	totals := c.verify(t)
	if want := agentd.Micros(settledEarly*10 + 20); totals.Cost != want {
		t.Errorf("charged %s, want %s", totals.Cost, want)
	}
}

// TestSharedCheckFindsHeldDamage: billing.Check on PostgreSQL holds orgs.held and
// api_keys.held against the open holds rows.
func TestSharedCheckFindsHeldDamage(t *testing.T) {
	dsn := storetest.Postgres(t)
	db := openReplica(t, dsn)
	clk := clocktest.New(billingtest.Day)
	a := billing.NewShared(db, clk, clusterTTL)
	ctx := context.Background()
	o := &agentd.Org{ID: agentd.NewID("org"), Name: "acme", CreatedAt: clk.Now()}
	if err := db.Tx(ctx, func(tx *store.Tx) error { return tx.CreateOrg(ctx, o) }); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Grant(ctx, o.ID, 1000, &agentd.Principal{KeyID: "key-test"}); err != nil {
		t.Fatal(err)
	}
	h, err := a.Hold(ctx, o.ID, "", 600)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Release()
	if problems, err := billing.Check(ctx, db, clk.Now()); err != nil || len(problems) != 0 {
		t.Fatalf("Check = %q, %v", problems, err)
	}
	raw, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if _, err := raw.Exec(`UPDATE orgs SET held = 1200 WHERE id = $1`, o.ID); err != nil { // behind the store's back
		t.Fatal(err)
	}
	problems, err := billing.Check(ctx, db, clk.Now())
	if err != nil || len(problems) != 2 || !strings.Contains(problems[0], "open holds sum to 0.0006") || !strings.Contains(problems[1], "negative") {
		t.Errorf("Check after damage = %q, %v; want held ≠ its holds, and more held than the balance", problems, err)
	}
}
