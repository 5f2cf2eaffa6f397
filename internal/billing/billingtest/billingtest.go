// Package billingtest is the conformance suite of the accounts that hold money for
// runs (run.Accounts): every implementation, in memory on one node or in the
// database across replicas, must pass Run.
package billingtest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/internal/billing"
	"github.com/agentd/agentd/internal/clock/clocktest"
	"github.com/agentd/agentd/internal/store"
)

// Accounts is what the suite exercises: run.Accounts and the money operations
// around it.
type Accounts interface {
	Hold(ctx context.Context, orgID, keyID string, amount agentd.Micros) (billing.Hold, error)
	Available(ctx context.Context, orgID, keyID string) (agentd.Micros, error)
	Grant(ctx context.Context, orgID string, amount agentd.Micros, by *agentd.Principal) (billing.State, error)
	SetBudget(ctx context.Context, orgID, keyID string, b agentd.Budget, by *agentd.Principal) (billing.KeyState, error)
	Orgs(ctx context.Context, cursor string, limit int) ([]billing.OrgAccount, string, error)
}

// Harness is one implementation under test, over a database of its own.
type Harness struct {
	Accounts Accounts
	DB       *store.DB
	// Clock is the clock the implementation decides periods and expiry by.
	Clock *clocktest.Fake
	// TTL is how long an abandoned hold lasts; Sweep releases expired ones.
	TTL   time.Duration
	Sweep func()
	// Restart returns a new instance over the same database, as after a restart:
	// everything it knows comes from the database.
	Restart func() Accounts
}

// Run runs the suite; newHarness returns a fresh implementation on an empty
// database.
func Run(t *testing.T, newHarness func(t *testing.T) Harness) {
	for _, tc := range []struct {
		name string
		fn   func(*testing.T, *world)
	}{
		{"HoldWithinBalance", testHoldWithinBalance},
		{"ConcurrentHoldsNeverOverspend", testConcurrentHolds},
		{"SettleChargesOnce", testSettleChargesOnce},
		{"RolledBackSettleKeepsTheHold", testRolledBackSettle},
		{"GrowIsCapped", testGrow},
		{"KeyBudgetConcurrent", testKeyBudgetConcurrent},
		{"KeyBudgetPeriods", testKeyBudgetPeriods},
		{"BudgetChangeKeepsSpending", testBudgetChange},
		{"BudgetToLifetime", testBudgetToLifetime},
		{"BudgetChangeRacesCharges", testBudgetChangeRacesCharges},
		{"Grants", testGrants},
		{"ChangesAreAudited", testAudited},
		{"OrgsShowWhatIsHeld", testOrgs},
		{"AbandonedHoldExpires", testAbandonedHold},
		{"RestartRebuildsFromTheDatabase", testRestart},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newWorld(t, newHarness(t))) })
	}
}

// Day is the suite's starting time: 23:00 UTC, an hour before a day ends, in the
// middle of a month.
var Day = time.Date(2026, 11, 28, 23, 0, 0, 0, time.UTC)

type world struct {
	Harness
	ctx   context.Context
	orgID string
}

func newWorld(t *testing.T, h Harness) *world {
	t.Helper()
	w := &world{Harness: h, ctx: context.Background()}
	o := &agentd.Org{ID: agentd.NewID("org"), Name: "acme", CreatedAt: h.Clock.Now()}
	if err := h.DB.Tx(w.ctx, func(tx *store.Tx) error { return tx.CreateOrg(w.ctx, o) }); err != nil {
		t.Fatal(err)
	}
	w.orgID = o.ID
	return w
}

// by is the principal the suite's administrative changes are made by.
func (w *world) by() *agentd.Principal {
	return &agentd.Principal{OrgID: w.orgID, KeyID: "key-test", Owner: "owner-test", ClientIP: "192.0.2.7", RequestID: "req-test"}
}

func (w *world) grant(t *testing.T, amount agentd.Micros) {
	t.Helper()
	if _, err := w.Accounts.Grant(w.ctx, w.orgID, amount, w.by()); err != nil {
		t.Fatalf("grant %d: %v", amount, err)
	}
}

// key adds a key with budget b (Set false: none).
func (w *world) key(t *testing.T, b agentd.Budget) string {
	t.Helper()
	k := &agentd.Key{ID: agentd.NewID("key"), OrgID: w.orgID, Name: "k", Prefix: "agd_x", Hash: agentd.NewID("h"),
		Scopes: []agentd.Scope{agentd.ScopeRun}, CreatedAt: w.Clock.Now(), Budget: b}
	k.Owner = k.ID
	if err := w.DB.Tx(w.ctx, func(tx *store.Tx) error { return tx.CreateKey(w.ctx, k) }); err != nil {
		t.Fatal(err)
	}
	return k.ID
}

func (w *world) hold(t *testing.T, a Accounts, keyID string, amount agentd.Micros) billing.Hold {
	t.Helper()
	h, err := a.Hold(w.ctx, w.orgID, keyID, amount)
	if err != nil {
		t.Fatalf("hold %d: %v", amount, err)
	}
	return h
}

// settle records a run by keyID costing cost at the clock's time, and settles h
// in the same transaction, as a run does.
func (w *world) settle(t *testing.T, h billing.Hold, keyID string, cost agentd.Micros) {
	t.Helper()
	if err := w.settleAt(h, keyID, cost, w.Clock.Now()); err != nil {
		t.Fatalf("settle %d: %v", cost, err)
	}
}

func (w *world) settleAt(h billing.Hold, keyID string, cost agentd.Micros, at time.Time) error {
	rec := &store.Run{LedgerRow: agentd.LedgerRow{RunID: agentd.NewID("run"), CreatedAt: at.UTC().Truncate(time.Microsecond),
		OrgID: w.orgID, KeyID: keyID, Owner: keyID, Model: "m", UsageSource: agentd.UsageProvider, Cost: cost, Outcome: agentd.OutcomeOK}}
	return w.DB.Tx(w.ctx, func(tx *store.Tx) error {
		if _, err := tx.RecordRun(w.ctx, rec); err != nil {
			return err
		}
		h.Settle(tx, cost, rec.CreatedAt)
		return nil
	})
}

func (w *world) available(t *testing.T, a Accounts, keyID string) agentd.Micros {
	t.Helper()
	v, err := a.Available(w.ctx, w.orgID, keyID)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func (w *world) balance(t *testing.T) agentd.Micros {
	t.Helper()
	b, err := w.DB.Balance(w.ctx, w.orgID)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func wantQuota(t *testing.T, err error, required, available agentd.Micros, limit string) {
	t.Helper()
	var e *agentd.Error
	if !errors.As(err, &e) || e.Code != agentd.EInsufficientQuota {
		t.Fatalf("err = %v, want %s", err, agentd.EInsufficientQuota)
	}
	if e.Fields["required"] != required || e.Fields["available"] != available || e.Fields["limit"] != limit {
		t.Errorf("402 fields %#v, want required %d, available %d, limit %q", e.Fields, required, available, limit)
	}
}

func testHoldWithinBalance(t *testing.T, w *world) {
	w.grant(t, 1000)
	h := w.hold(t, w.Accounts, "", 600)
	if h.Amount() != 600 {
		t.Errorf("hold amount %d", h.Amount())
	}
	_, err := w.Accounts.Hold(w.ctx, w.orgID, "", 401)
	wantQuota(t, err, 401, 400, "balance")
	if got := w.available(t, w.Accounts, ""); got != 400 {
		t.Errorf("available %d with 600 of 1000 held", got)
	}
	h.Release()
	h.Release() // ending an ended hold does nothing
	if got := w.available(t, w.Accounts, ""); got != 1000 {
		t.Errorf("available %d after the release", got)
	}
	if _, err := w.Accounts.Hold(w.ctx, w.orgID, "", -1); err == nil {
		t.Error("a negative hold was taken")
	}
	if _, err := w.Accounts.Hold(w.ctx, "org-unknown", "", 1); agentd.ErrorCode(err) != agentd.ENotFound {
		t.Errorf("hold on an unknown organization: %v", err)
	}
}

// testConcurrentHolds: 100 runs race for a balance that covers exactly 37 of them.
func testConcurrentHolds(t *testing.T, w *world) {
	const cost, fits, n = agentd.Micros(1_234_567), 37, 100
	w.grant(t, cost*fits)
	var wg sync.WaitGroup
	holds := make([]billing.Hold, n)
	errs := make([]error, n)
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			holds[i], errs[i] = w.Accounts.Hold(w.ctx, w.orgID, "", cost)
		})
	}
	close(start)
	wg.Wait()
	ok := 0
	for i, err := range errs {
		if err == nil {
			ok++
			continue
		}
		wantQuota(t, errs[i], cost, 0, "balance")
	}
	if ok != fits {
		t.Fatalf("%d holds succeeded, want exactly %d", ok, fits)
	}
	// Settling and releasing concurrently gives back exactly what was not charged.
	settled := 0
	var mu sync.Mutex
	for i, h := range holds {
		if h == nil {
			continue
		}
		wg.Go(func() {
			if i%2 == 0 {
				if err := w.settleAt(h, "", 1000, w.Clock.Now()); err != nil {
					t.Error(err)
				}
				mu.Lock()
				settled++
				mu.Unlock()
			}
			h.Release() // after a settle: a no-op
		})
	}
	wg.Wait()
	want := cost*fits - 1000*agentd.Micros(settled)
	if b := w.balance(t); b != want {
		t.Errorf("stored balance %d, want %d", b, want)
	}
	if got := w.available(t, w.Accounts, ""); got != want {
		t.Errorf("available %d, want %d: every hold ended", got, want)
	}
}

func testSettleChargesOnce(t *testing.T, w *world) {
	w.grant(t, 10_000)
	h := w.hold(t, w.Accounts, "", 5000)
	w.settle(t, h, "", 1234)
	h.Release() // the deferred release of a settled run
	if b := w.balance(t); b != 10_000-1234 {
		t.Errorf("stored balance %d", b)
	}
	if got := w.available(t, w.Accounts, ""); got != 10_000-1234 {
		t.Errorf("available %d after the settle, want %d", got, 10_000-1234)
	}
}

// testRolledBackSettle: a settle whose transaction rolls back charges nothing and
// leaves the hold open until it is released.
func testRolledBackSettle(t *testing.T, w *world) {
	w.grant(t, 10_000)
	h := w.hold(t, w.Accounts, "", 5000)
	err := w.DB.Tx(w.ctx, func(tx *store.Tx) error {
		h.Settle(tx, 1000, w.Clock.Now())
		return fmt.Errorf("the ledger write fails")
	})
	if err == nil {
		t.Fatal("the failing write succeeded")
	}
	if got := w.available(t, w.Accounts, ""); got != 5000 {
		t.Errorf("available %d: the rolled-back settle ended the hold or charged", got)
	}
	h.Release()
	if got := w.available(t, w.Accounts, ""); got != 10_000 || w.balance(t) != 10_000 {
		t.Errorf("available %d, balance %d after the release", got, w.balance(t))
	}
}

// testGrow: a run that cost more than it held grows its hold from what is
// available, never past it.
func testGrow(t *testing.T, w *world) {
	w.grant(t, 1000)
	key := w.key(t, agentd.Budget{Set: true, Limit: 800, Period: agentd.PeriodNone})
	h := w.hold(t, w.Accounts, key, 500)
	if got := h.Grow(100); got != 600 {
		t.Errorf("Grow(100) = %d, want 600", got)
	}
	if got := h.Grow(10_000); got != 800 {
		t.Errorf("Grow beyond the key's budget = %d, want 800", got)
	}
	w.settle(t, h, key, 800)
	if got := w.available(t, w.Accounts, key); got != 0 {
		t.Errorf("the key's available %d after spending its budget", got)
	}
}

// testKeyBudgetConcurrent: 100 holds race for a key budget that covers exactly
// 37, with a balance that covers all of them.
func testKeyBudgetConcurrent(t *testing.T, w *world) {
	w.grant(t, 1_000_000)
	key := w.key(t, agentd.Budget{Set: true, Limit: 37 * 100, Period: agentd.PeriodNone})
	var wg sync.WaitGroup
	var mu sync.Mutex
	granted := 0
	for range 100 {
		wg.Go(func() {
			_, err := w.Accounts.Hold(w.ctx, w.orgID, key, 100)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				var e *agentd.Error
				if !errors.As(err, &e) || e.Code != agentd.EInsufficientQuota || e.Fields["limit"] != "key_budget" {
					t.Errorf("err = %v", err)
				}
				return
			}
			granted++
		})
	}
	wg.Wait()
	if granted != 37 {
		t.Fatalf("granted %d holds, want 37", granted)
	}
}

// testKeyBudgetPeriods: a daily budget spent today is whole again tomorrow; a
// charge recorded in yesterday's period does not count against today's; a restart
// on either day agrees.
func testKeyBudgetPeriods(t *testing.T, w *world) {
	w.Clock.Set(Day)
	w.grant(t, 1_000_000)
	key := w.key(t, agentd.Budget{Set: true, Limit: 1000, Period: agentd.PeriodDaily})
	h := w.hold(t, w.Accounts, key, 1000)
	_, err := w.Accounts.Hold(w.ctx, w.orgID, key, 1)
	wantQuota(t, err, 1, 0, "key_budget")
	w.settle(t, h, key, 600)
	if got := w.available(t, w.Accounts, key); got != 400 {
		t.Errorf("available %d after spending 600 of 1000 today", got)
	}
	if got := w.available(t, w.Restart(), key); got != 400 {
		t.Errorf("after a restart: available %d, want 400", got)
	}
	late := w.hold(t, w.Accounts, key, 400)
	w.Clock.Advance(2 * time.Hour) // the next day
	if got := w.available(t, w.Accounts, key); got != 600 {
		t.Errorf("next day, with yesterday's hold of 400 open: available %d, want 600", got)
	}
	if err := w.settleAt(late, key, 400, Day.Add(30*time.Minute)); err != nil { // recorded yesterday
		t.Fatal(err)
	}
	if got := w.available(t, w.Accounts, key); got != 1000 {
		t.Errorf("yesterday's charge counted today: available %d", got)
	}
	if got := w.available(t, w.Restart(), key); got != 1000 {
		t.Errorf("after a restart today: available %d, want 1000", got)
	}
}

// testBudgetChange is the overspend across a restart: a daily budget of 1000 has
// spent 300 today, becomes monthly, spends up to its budget; neither this instance
// nor a restarted one lets the month's spending pass 1000.
func testBudgetChange(t *testing.T, w *world) {
	w.Clock.Set(Day)
	w.grant(t, 1_000_000)
	key := w.key(t, agentd.Budget{Set: true, Limit: 1000, Period: agentd.PeriodDaily})
	// 200 spent earlier this month, 300 today.
	w.settleAtOrFail(t, w.hold(t, w.Accounts, key, 200), key, 200, Day.AddDate(0, 0, -5))
	w.settle(t, w.hold(t, w.Accounts, key, 300), key, 300)
	if got := w.available(t, w.Accounts, key); got != 700 {
		t.Fatalf("daily budget: available %d, want 700", got)
	}
	ks, err := w.Accounts.SetBudget(w.ctx, w.orgID, key, agentd.Budget{Set: true, Limit: 1000, Period: agentd.PeriodMonthly}, w.by())
	if err != nil {
		t.Fatal(err)
	}
	if ks.Spent != 500 || ks.Available != 500 {
		t.Errorf("monthly budget after the change: spent %d, available %d; want the month's 500 and 500", ks.Spent, ks.Available)
	}
	spent := w.spendAll(t, w.Accounts, key, 100)
	if spent != 500 {
		t.Errorf("spent %d more after the change, want 500", spent)
	}
	if again := w.spendAll(t, w.Restart(), key, 100); again != 0 {
		t.Errorf("after a restart the key spent %d more past its monthly budget", again)
	}
}

func (w *world) settleAtOrFail(t *testing.T, h billing.Hold, key string, cost agentd.Micros, at time.Time) {
	t.Helper()
	if err := w.settleAt(h, key, cost, at); err != nil {
		t.Fatal(err)
	}
}

// spendAll spends step at a time until the key's budget refuses, and returns how
// much it spent.
func (w *world) spendAll(t *testing.T, a Accounts, key string, step agentd.Micros) agentd.Micros {
	t.Helper()
	var spent agentd.Micros
	for range 1000 {
		h, err := a.Hold(w.ctx, w.orgID, key, step)
		if agentd.ErrorCode(err) == agentd.EInsufficientQuota {
			return spent
		}
		if err != nil {
			t.Fatal(err)
		}
		w.settle(t, h, key, step)
		spent += step
	}
	t.Fatal("the budget never refused")
	return spent
}

// testBudgetToLifetime: a daily budget switched to none counts every charge the
// key ever made, also after a restart.
func testBudgetToLifetime(t *testing.T, w *world) {
	w.Clock.Set(Day)
	w.grant(t, 1_000_000)
	key := w.key(t, agentd.Budget{Set: true, Limit: 1000, Period: agentd.PeriodDaily})
	w.settleAtOrFail(t, w.hold(t, w.Accounts, key, 400), key, 400, Day.AddDate(0, -2, 0))
	w.settle(t, w.hold(t, w.Accounts, key, 100), key, 100)
	if _, err := w.Accounts.SetBudget(w.ctx, w.orgID, key, agentd.Budget{Set: true, Limit: 760, Period: agentd.PeriodNone}, w.by()); err != nil {
		t.Fatal(err)
	}
	if got := w.available(t, w.Accounts, key); got != 260 {
		t.Errorf("lifetime budget of 760 with 500 spent: available %d", got)
	}
	w.spendAll(t, w.Accounts, key, 10)
	w.Clock.Advance(48 * time.Hour)
	if again := w.spendAll(t, w.Restart(), key, 10); again != 0 {
		t.Errorf("after a restart two days later the key spent %d more past its lifetime budget", again)
	}
}

// testBudgetChangeRacesCharges: budget changes committed while charges of the
// same key commit around them never lose or double a charge: afterwards what this
// instance counts equals what a restarted one reads from the database.
func testBudgetChangeRacesCharges(t *testing.T, w *world) {
	w.Clock.Set(Day)
	w.grant(t, 100_000_000)
	key := w.key(t, agentd.Budget{Set: true, Limit: 90_000_000, Period: agentd.PeriodDaily})
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Go(func() {
			h, err := w.Accounts.Hold(w.ctx, w.orgID, key, 1000)
			if err != nil {
				t.Error(err)
				return
			}
			if err := w.settleAt(h, key, agentd.Micros(i+1), w.Clock.Now()); err != nil {
				t.Error(err)
			}
		})
		if i%20 == 0 {
			p := []agentd.Period{agentd.PeriodMonthly, agentd.PeriodDaily, agentd.PeriodNone}[i/20%3]
			wg.Go(func() {
				if _, err := w.Accounts.SetBudget(w.ctx, w.orgID, key, agentd.Budget{Set: true, Limit: 90_000_000, Period: p}, w.by()); err != nil {
					t.Error(err)
				}
			})
		}
	}
	wg.Wait()
	if got, want := w.available(t, w.Accounts, key), w.available(t, w.Restart(), key); got != want {
		t.Errorf("available %d here, %d rebuilt from the database", got, want)
	}
}

func testGrants(t *testing.T, w *world) {
	st, err := w.Accounts.Grant(w.ctx, w.orgID, 5000, w.by())
	if err != nil || st.Balance != 5000 {
		t.Fatalf("grant: %+v %v", st, err)
	}
	h := w.hold(t, w.Accounts, "", 3000)
	if _, err := w.Accounts.Grant(w.ctx, w.orgID, -2001, w.by()); agentd.ErrorCode(err) != agentd.EBadRequest {
		t.Errorf("a correction below the available balance: %v, want bad_request", err)
	}
	if st, err := w.Accounts.Grant(w.ctx, w.orgID, -2000, w.by()); err != nil || st.Balance != 3000 {
		t.Errorf("a correction of exactly what is available: %+v %v", st, err)
	}
	h.Release()
	// Money is checked arithmetic: a grant past the largest balance is refused and
	// changes nothing, however it is split.
	if _, err := w.Accounts.Grant(w.ctx, w.orgID, agentd.MaxMicros-3000, w.by()); err != nil {
		t.Fatalf("a grant up to the largest balance: %v", err)
	}
	for _, amount := range []agentd.Micros{1, agentd.MaxMicros, agentd.MaxMicros + 1, -agentd.MaxMicros - 1} {
		if _, err := w.Accounts.Grant(w.ctx, w.orgID, amount, w.by()); agentd.ErrorCode(err) != agentd.EInvalid {
			t.Errorf("grant of %d on a full balance: %v, want invalid", amount, err)
		}
	}
	if b := w.balance(t); b != agentd.MaxMicros {
		t.Errorf("stored balance %d, want the largest balance", b)
	}
	if got := w.available(t, w.Restart(), ""); got != agentd.MaxMicros {
		t.Errorf("after a restart: available %d", got)
	}
	if _, err := w.Accounts.Grant(w.ctx, w.orgID, 0, w.by()); agentd.ErrorCode(err) != agentd.EInvalid {
		t.Errorf("a zero grant: %v, want invalid", err)
	}
}

// testAbandonedHold: a run that died after taking its hold stops freezing the
// balance once its TTL has passed; a late settle of a swept hold still charges.
func testAbandonedHold(t *testing.T, w *world) {
	w.grant(t, 10_000)
	w.hold(t, w.Accounts, "", 7000) // abandoned
	late := w.hold(t, w.Accounts, "", 2000)
	_, err := w.Accounts.Hold(w.ctx, w.orgID, "", 2000)
	wantQuota(t, err, 2000, 1000, "balance")
	w.Sweep()
	if got := w.available(t, w.Accounts, ""); got != 1000 {
		t.Errorf("a sweep before the TTL released holds: available %d", got)
	}
	w.Clock.Advance(w.TTL + time.Second)
	w.Sweep()
	if got := w.available(t, w.Accounts, ""); got != 10_000 {
		t.Errorf("after the sweep: available %d, want 10000", got)
	}
	w.settle(t, late, "", 1500) // its ledger row committed after all
	if got := w.available(t, w.Accounts, ""); got != 8500 || w.balance(t) != 8500 {
		t.Errorf("after the late settle: available %d, balance %d", got, w.balance(t))
	}
}

// testRestart: after grants, charges and budget changes, a restarted instance
// offers exactly what this one offers once every hold has ended.
func testRestart(t *testing.T, w *world) {
	w.Clock.Set(Day)
	w.grant(t, 50_000)
	key := w.key(t, agentd.Budget{Set: true, Limit: 20_000, Period: agentd.PeriodMonthly})
	free := w.key(t, agentd.Budget{})
	for i := range 5 {
		w.settle(t, w.hold(t, w.Accounts, key, 1000), key, agentd.Micros(100*i+1))
		w.settle(t, w.hold(t, w.Accounts, free, 1000), free, 7)
	}
	if _, err := w.Accounts.SetBudget(w.ctx, w.orgID, free, agentd.Budget{Set: true, Limit: 100, Period: agentd.PeriodDaily}, w.by()); err != nil {
		t.Fatal(err)
	}
	r := w.Restart()
	for _, k := range []string{"", key, free} {
		if got, want := w.available(t, r, k), w.available(t, w.Accounts, k); got != want {
			t.Errorf("key %q: restarted instance offers %d, this one %d", k, got, want)
		}
	}
	if got := w.available(t, r, free); got != 65 {
		t.Errorf("the newly budgeted key offers %d, want 100 − 35 spent today", got)
	}
}

// testOrgs: the listing of organizations pages by name and shows each one's
// balance and what runs in flight hold of it, here and rebuilt from the database.
func testOrgs(t *testing.T, w *world) {
	for _, name := range []string{"zulu", "beta"} {
		o := &agentd.Org{ID: agentd.NewID("org"), Name: name, CreatedAt: w.Clock.Now()}
		if err := w.DB.Tx(w.ctx, func(tx *store.Tx) error { return tx.CreateOrg(w.ctx, o) }); err != nil {
			t.Fatal(err)
		}
	}
	w.grant(t, 10_000)
	h := w.hold(t, w.Accounts, "", 4000)
	list := func(a Accounts) map[string]billing.State {
		t.Helper()
		got, cursor := map[string]billing.State{}, ""
		var names []string
		for {
			page, next, err := a.Orgs(w.ctx, cursor, 2)
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range page {
				names = append(names, o.Org.Name)
				got[o.Org.Name] = o.State
				if o.Org.Balance != o.Balance {
					t.Errorf("%s: the organization's balance %d, its state's %d", o.Org.Name, o.Org.Balance, o.Balance)
				}
			}
			if next == "" {
				break
			}
			cursor = next
		}
		if fmt.Sprint(names) != "[acme beta zulu]" {
			t.Errorf("organizations %v, want [acme beta zulu]", names)
		}
		return got
	}
	if got := list(w.Accounts)["acme"]; got.Balance != 10_000 || got.Held != 4000 || got.Holds != 1 {
		t.Errorf("acme with a hold in flight: %+v, want balance 10000, held 4000, 1 hold", got)
	}
	if got := list(w.Accounts)["beta"]; got != (billing.State{}) {
		t.Errorf("beta, never granted anything: %+v", got)
	}
	h.Release()
	if got := list(w.Accounts)["acme"]; got.Balance != 10_000 || got.Held != 0 || got.Holds != 0 {
		t.Errorf("acme after the release: %+v", got)
	}
	if got := list(w.Restart())["acme"]; got.Balance != 10_000 || got.Held != 0 {
		t.Errorf("acme rebuilt from the database: %+v", got)
	}
}
