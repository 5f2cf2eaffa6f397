package store

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/internal/store/storetest"
)

// holdsWorld is an organization with a balance and a key with a lifetime budget,
// on a PostgreSQL schema of the test's own (holds are PostgreSQL's only).
type holdsWorld struct {
	t      *testing.T
	ctx    context.Context
	db     *DB
	org    *agentd.Org
	key    string
	budget agentd.Budget
}

func newHoldsWorld(t *testing.T, balance, budget agentd.Micros) *holdsWorld {
	t.Helper()
	db, err := Open(context.Background(), storetest.Postgres(t), Options{MaxConns: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return newHoldsWorldOn(t, db, balance, budget)
}

// newHoldsWorldOn is newHoldsWorld on db.
func newHoldsWorldOn(t *testing.T, db *DB, balance, budget agentd.Micros) *holdsWorld {
	t.Helper()
	ctx := context.Background()
	w := &holdsWorld{t: t, ctx: ctx, db: db, org: newOrg(t, db, "acme", balance),
		budget: agentd.Budget{Set: true, Limit: budget, Period: agentd.PeriodDaily}}
	k := &agentd.Key{ID: agentd.NewID("key"), OrgID: w.org.ID, Name: "k", Owner: "alice", Prefix: "agd_x", Hash: agentd.NewID("h"),
		Scopes: []agentd.Scope{agentd.ScopeRun}, CreatedAt: now(), Budget: w.budget}
	mustTx(t, db, func(tx *Tx) error { return tx.CreateKey(ctx, k) })
	w.key = k.ID
	return w
}

// take takes a hold of amount, by the key (with its budget) when key is set, and
// returns its row or the refusal.
func (w *holdsWorld) take(amount agentd.Micros, key bool, fromDay string, expires int64) (*Hold, *Shortfall) {
	w.t.Helper()
	h := &Hold{ID: agentd.NewID("hold"), OrgID: w.org.ID, Amount: amount, Created: 1, Expires: expires}
	if key {
		h.KeyID = w.key
	}
	// The key's budget is daily: fromDay is the first day its spending counts from.
	var short *Shortfall
	mustTx(w.t, w.db, func(tx *Tx) (err error) {
		short, _, err = tx.TakeHoldFor(w.ctx, h, PeriodDays{Daily: fromDay})
		return err
	})
	return h, short
}

// mustTake is take, failing the test on a refusal.
func (w *holdsWorld) mustTake(amount agentd.Micros, key bool, fromDay string, expires int64) *Hold {
	w.t.Helper()
	h, short := w.take(amount, key, fromDay, expires)
	if short != nil {
		w.t.Fatalf("a hold of %d (key %v, from %q) refused: %+v", amount, key, fromDay, short)
	}
	return h
}

// want checks what the organization and the key hold, and the balance.
func (w *holdsWorld) want(balance, orgHeld agentd.Micros, holds int, keyHeld agentd.Micros) {
	w.t.Helper()
	m, err := w.db.OrgMoney(w.ctx, w.org.ID)
	if err != nil {
		w.t.Fatal(err)
	}
	if want := (OrgMoney{Balance: balance, Held: orgHeld, Holds: holds}); m != want {
		w.t.Errorf("OrgMoney = %+v, want %+v", m, want)
	}
	k, err := w.db.KeyMoney(w.ctx, w.key, "")
	if err != nil {
		w.t.Fatal(err)
	}
	if k.Held != keyHeld || k.Budget != w.budget {
		w.t.Errorf("KeyMoney = %+v, want held %d and budget %+v", k, keyHeld, w.budget)
	}
}

// charge records a run of the key costing cost on day, settling hold (if not "")
// in the same write, and returns the write's outcome.
func (w *holdsWorld) charge(cost agentd.Micros, day time.Time, hold string) error {
	r := &Run{LedgerRow: agentd.LedgerRow{RunID: agentd.NewID("run"), CreatedAt: day, OrgID: w.org.ID, KeyID: w.key, Owner: "alice",
		Model: "m", UsageSource: agentd.UsageProvider, Cost: cost, Outcome: agentd.OutcomeOK}}
	return w.db.Tx(w.ctx, func(tx *Tx) error {
		if _, err := tx.RecordRun(w.ctx, r); err != nil {
			return err
		}
		if hold != "" {
			tx.SettleHold(w.ctx, hold) // as billing does: no error returned here
		}
		return nil
	})
}

func (w *holdsWorld) exec(q string, args ...any) {
	w.t.Helper()
	mustTx(w.t, w.db, func(tx *Tx) error { _, err := tx.exec(w.ctx, q, args...); return err })
}

func (w *holdsWorld) check() []string {
	w.t.Helper()
	problems, err := w.db.CheckHolds(w.ctx)
	if err != nil {
		w.t.Fatal(err)
	}
	return problems
}

const never = int64(1) << 62

// TestPostgresHoldBatches: the holds of one writer batch come out as if taken one
// at a time in order, whether they all fit (one statement per table takes them) or
// some limit runs short on the way (hold by hold): exactly the affordable ones are
// taken, each refusal names what was left, and held matches the rows.
func TestPostgresHoldBatches(t *testing.T) {
	for _, tc := range []struct {
		name            string
		balance, budget agentd.Micros
		spent           agentd.Micros // charged to the key today before the batch
		key             bool
		n               int
		taken           int
		short           Shortfall
	}{
		{name: "all fit", balance: 1000, budget: 1000, key: true, n: 20, taken: 20},
		{name: "all fit without key", balance: 200, budget: 1, n: 20, taken: 20},
		{name: "balance short", balance: 95, budget: 1000, n: 10, taken: 9, short: Shortfall{Available: 5}},
		{name: "balance short with key", balance: 95, budget: 1000, key: true, n: 10, taken: 9, short: Shortfall{Available: 5}},
		{name: "key budget short", balance: 1000, budget: 95, key: true, n: 10, taken: 9, short: Shortfall{KeyBudget: true, Available: 5}},
		{name: "spending counts", balance: 2000, budget: 1000, spent: 950, key: true, n: 10, taken: 5, short: Shortfall{KeyBudget: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newHoldsWorldOn(t, batchingDB(t), tc.balance, tc.budget)
			day := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
			if tc.spent > 0 {
				if err := w.charge(tc.spent, day, ""); err != nil {
					t.Fatal(err)
				}
			}
			exps := expectations(w.db, tc.n)
			res := make([]HoldResult, tc.n)
			errs := make([]error, tc.n)
			var wg sync.WaitGroup
			for i := range tc.n {
				h := &Hold{ID: agentd.NewID("hold"), OrgID: w.org.ID, Amount: 10, Created: 1, Expires: never}
				if tc.key {
					h.KeyID = w.key
				}
				wg.Go(func() {
					errs[i] = exps[i].TxRecords(w.ctx, func(tx *Tx) error {
						res[i] = HoldResult{}
						tx.TakeHoldLater(w.ctx, h, PeriodDays{Daily: "2026-11-28"}, &res[i])
						return nil
					})
				})
			}
			wg.Wait()
			taken := 0
			for i := range tc.n {
				switch {
				case errs[i] != nil || res[i].Err != nil:
					t.Errorf("hold %d: %v, %v", i, errs[i], res[i].Err)
				case res[i].Short == nil:
					taken++
				case *res[i].Short != tc.short:
					t.Errorf("hold %d refused with %+v, want %+v", i, *res[i].Short, tc.short)
				}
			}
			if taken != tc.taken {
				t.Errorf("%d of %d holds taken, want %d", taken, tc.n, tc.taken)
			}
			keyHeld := agentd.Micros(0)
			if tc.key {
				keyHeld = agentd.Micros(10 * tc.taken)
			}
			w.want(tc.balance-tc.spent, agentd.Micros(10*tc.taken), tc.taken, keyHeld)
			if problems := w.check(); len(problems) != 0 {
				t.Errorf("check: %q", problems)
			}
		})
	}
}

// TestPostgresHolds: the hold SQL — conditional takes and grows that refuse
// without leaving anything behind, the key's budget counted from billing's first
// day, settles in the charge's own write (whose failure fails that write),
// bounded expiry, and the check that finds a held that disagrees with its rows.
func TestPostgresHolds(t *testing.T) {
	w := newHoldsWorld(t, 10_000, 1000)
	ctx := w.ctx
	day := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)

	h1 := w.mustTake(6000, false, "", never)
	if _, short := w.take(4001, false, "", never); short == nil || *short != (Shortfall{Available: 4000}) {
		t.Errorf("a hold of 4001 with 4000 available: %+v, want a balance shortfall of 4000", short)
	}
	w.want(10_000, 6000, 1, 0)

	h2 := w.mustTake(300, true, "", never)
	w.want(10_000, 6300, 2, 300)
	// Spending of the key on day: counted from any first day up to it, not after.
	if err := w.charge(200, day, ""); err != nil {
		t.Fatal(err)
	}
	if _, short := w.take(501, true, "", never); short == nil || *short != (Shortfall{KeyBudget: true, Available: 500}) {
		t.Errorf("a key hold of 501 with 1000 − 300 held − 200 spent left: %+v, want a key shortfall of 500", short)
	}
	// The refused key gave the organization's part back; counted from the day
	// after the charge, the key has room.
	w.want(9800, 6300, 2, 300)
	h3 := w.mustTake(501, true, "2026-11-29", never)
	w.want(9800, 6801, 3, 801)
	mustTx(t, w.db, func(tx *Tx) error {
		if ended, err := tx.ReleaseHold(ctx, h3.ID); err != nil || !ended {
			t.Errorf("ReleaseHold = %v, %v", ended, err)
		}
		if ended, err := tx.ReleaseHold(ctx, h3.ID); err != nil || ended {
			t.Errorf("ReleaseHold again = %v, %v; want nothing to end", ended, err)
		}
		return nil
	})
	w.want(9800, 6300, 2, 300)

	mustTx(t, w.db, func(tx *Tx) error {
		amount, short, err := tx.GrowHold(ctx, h2.ID, 1000, &w.budget, "")
		if err != nil || amount != 300 || short == nil || *short != (Shortfall{KeyBudget: true, Available: 500}) {
			t.Errorf("GrowHold(1000) past the key's budget = %d, %+v, %v", amount, short, err)
		}
		amount, short, err = tx.GrowHold(ctx, h2.ID, 500, &w.budget, "")
		if err != nil || amount != 800 || short != nil {
			t.Errorf("GrowHold(500) = %d, %+v, %v; want 800", amount, short, err)
		}
		return nil
	})
	w.want(9800, 6800, 2, 800)

	if err := w.charge(800, day, h2.ID); err != nil {
		t.Fatal(err)
	}
	w.want(9000, 6000, 1, 0)
	mustTx(t, w.db, func(tx *Tx) error {
		if ended, err := tx.SettleHold(ctx, h2.ID); err != nil || ended {
			t.Errorf("SettleHold of a settled hold = %v, %v", ended, err)
		}
		if _, _, err := tx.GrowHold(ctx, h2.ID, 1, nil, ""); !errors.Is(err, ErrHoldGone) {
			t.Errorf("GrowHold of a settled hold: %v, want ErrHoldGone", err)
		}
		return nil
	})

	// A settle that fails fails its write, although the write returned nil: no
	// charge without the hold's end.
	const later = "2026-11-29" // the key's budget is spent up to day; count from the next
	h4 := w.mustTake(100, true, later, never)
	w.exec(`UPDATE orgs SET held = 0 WHERE id = ?`, w.org.ID) // damage: the settle's subtraction breaks the CHECK
	if err := w.charge(100, day, h4.ID); err == nil || !strings.Contains(err.Error(), "SettleHold") {
		t.Errorf("a charge whose settle failed: %v, want the settle's error", err)
	}
	if totals, err := w.db.LedgerTotals(ctx, w.org.ID); err != nil || totals.Runs != 2 {
		t.Errorf("%d runs recorded (%v), want 2: the failed settle's charge was kept", totals.Runs, err)
	}
	if problems := w.check(); len(problems) != 1 || !strings.Contains(problems[0], "open holds sum to 0.0061") {
		t.Errorf("check after damage: %q, want the organization's held named", problems)
	}
	w.exec(`UPDATE orgs SET held = 6100 WHERE id = ?`, w.org.ID)
	if err := w.charge(100, day, h4.ID); err != nil {
		t.Fatal(err)
	}
	w.want(8900, 6000, 1, 0)

	for _, tc := range []struct {
		name   string
		amount agentd.Micros
		key    bool
	}{{"unknown organization", 1, false}, {"unknown key", 1, true}} {
		h := &Hold{ID: agentd.NewID("hold"), OrgID: w.org.ID, Amount: tc.amount, Expires: never}
		if tc.key {
			h.KeyID = "key-nope"
		} else {
			h.OrgID = "org-nope"
		}
		err := w.db.Tx(ctx, func(tx *Tx) error { _, _, err := tx.TakeHoldFor(ctx, h, PeriodDays{}); return err })
		if agentd.ErrorCode(err) != agentd.ENotFound {
			t.Errorf("%s: %v, want not_found", tc.name, err)
		}
	}
	w.want(8900, 6000, 1, 0)

	// Expiry: the holds past now, a bounded batch at a time, each once; h1 never.
	for i := range 5 {
		w.mustTake(10, i%2 == 0, later, 100+int64(i))
	}
	w.want(8900, 6050, 6, 30)
	for _, step := range []struct {
		now         int64
		limit, want int
	}{{102, 10, 2}, {104, 1, 1}, {104, 10, 1}, {104, 10, 0}, {1000, 10, 1}, {1000, 10, 0}} {
		if n, err := w.db.ExpireHolds(ctx, step.now, step.limit); err != nil || n != step.want {
			t.Errorf("ExpireHolds(%d, %d) = %d, %v; want %d", step.now, step.limit, n, err, step.want)
		}
	}
	w.want(8900, 6000, 1, 0)
	if problems := w.check(); len(problems) != 0 {
		t.Errorf("check: %q", problems)
	}
	mustTx(t, w.db, func(tx *Tx) error {
		_, err := tx.ReleaseHold(ctx, h1.ID)
		return err
	})
	w.want(8900, 0, 0, 0)

	// The check names every kind of disagreement.
	w.exec(`UPDATE api_keys SET held = 7 WHERE id = ?`, w.key)
	w.exec(`UPDATE orgs SET held = 9000 WHERE id = ?`, w.org.ID)
	w.exec(`INSERT INTO holds (id, org_id, key_id, amount, created_at, expires_at) VALUES ('hold-stray', 'org-nope', '', 1, 1, 1)`)
	problems := w.check()
	for _, want := range []string{"key " + w.key + " (org " + w.org.ID + "): holds 0.000007 credits", "balance − held is negative",
		"org " + w.org.ID + " (acme): holds 0.009 credits, but its 0 open holds sum to 0", "hold hold-stray"} {
		found := false
		for _, p := range problems {
			found = found || strings.Contains(p, want)
		}
		if !found {
			t.Errorf("check %q does not report %q", problems, want)
		}
	}
	if len(problems) != 4 {
		t.Errorf("check found %d problems, want 4: %q", len(problems), problems)
	}
}
