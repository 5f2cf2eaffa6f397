package billing_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/internal/billing"
	"github.com/agentd/agentd/internal/store"
)

// newOrg opens a database in t's temporary directory with one organization holding
// balance, and returns Accounts over it.
func newOrg(t *testing.T, balance agentd.Micros) (*store.DB, *billing.Accounts, string) {
	t.Helper()
	ctx := context.Background()
	db, err := store.Open(ctx, "sqlite:"+filepath.Join(t.TempDir(), "agentd.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	o := &store.Org{ID: agentd.NewID("org"), Name: "acme", Created: time.Now().UnixMicro()}
	err = db.Tx(ctx, func(tx *store.Tx) error {
		if err := tx.CreateOrg(ctx, o); err != nil {
			return err
		}
		_, err := tx.GrantCredits(ctx, &store.Grant{ID: agentd.NewID("grant"), OrgID: o.ID, Amount: balance, KeyID: "key-test", Created: 1})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return db, billing.New(db, 0), o.ID
}

func state(t *testing.T, a *billing.Accounts, orgID string) billing.State {
	t.Helper()
	st, err := a.State(context.Background(), orgID)
	if err != nil {
		t.Fatal(err)
	}
	st.Holds = 0 // the count of holds is checked where it matters
	return st
}

// TestHoldConcurrent: 100 runs race for a balance that covers exactly 37 of them.
func TestHoldConcurrent(t *testing.T) {
	const cost, fits, n = agentd.Micros(1_234_567), 37, 100
	_, accts, orgID := newOrg(t, cost*fits)
	ctx := context.Background()
	var (
		wg    sync.WaitGroup
		holds = make([]*billing.Hold, n)
		errs  = make([]error, n)
	)
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			holds[i], errs[i] = accts.Hold(ctx, orgID, cost)
		})
	}
	close(start)
	wg.Wait()

	ok := 0
	for i, err := range errs {
		if err == nil {
			ok++
			if holds[i] == nil || holds[i].Amount != cost {
				t.Errorf("hold %d = %+v", i, holds[i])
			}
			continue
		}
		var e *agentd.Error
		if !errors.As(err, &e) || e.Code != agentd.EInsufficientQuota {
			t.Fatalf("hold %d: %v, want %s", i, err, agentd.EInsufficientQuota)
		}
		req, ok1 := e.Fields["required"].(agentd.Micros)
		avail, ok2 := e.Fields["available"].(agentd.Micros)
		if !ok1 || !ok2 || req != cost || avail != 0 {
			t.Errorf("hold %d: fields %#v, want required %d and available 0 as agentd.Micros", i, e.Fields, cost)
		}
	}
	if ok != fits {
		t.Fatalf("%d holds succeeded, want exactly %d", ok, fits)
	}
	if st := state(t, accts, orgID); st.Balance != cost*fits || st.Held != cost*fits {
		t.Errorf("state %+v, want everything held", st)
	}

	// Settling and releasing concurrently gives back exactly what was not charged.
	var live []*billing.Hold
	for _, h := range holds {
		if h != nil {
			live = append(live, h)
		}
	}
	for i, h := range live {
		wg.Go(func() {
			if i%2 == 0 {
				h.Settle(1000)
			} else {
				h.Release()
			}
			h.Release() // no-op
		})
	}
	wg.Wait()
	settled := agentd.Micros((fits + 1) / 2)
	want := billing.State{Balance: cost*fits - 1000*settled, Held: 0}
	if st := state(t, accts, orgID); st != want {
		t.Errorf("after settling: %+v, want %+v", st, want)
	}
}

func TestHoldLifecycle(t *testing.T) {
	type step struct {
		op     string // hold, settle, release
		amount agentd.Micros
		want   billing.State
		err    string // error code of a hold
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"settle smaller cost", []step{
			{"hold", 400, billing.State{Balance: 1000, Held: 400}, ""},
			{"settle", 150, billing.State{Balance: 850, Held: 0}, ""},
		}},
		{"settle full hold", []step{
			{"hold", 1000, billing.State{Balance: 1000, Held: 1000}, ""},
			{"settle", 1000, billing.State{Balance: 0, Held: 0}, ""},
		}},
		{"release", []step{
			{"hold", 400, billing.State{Balance: 1000, Held: 400}, ""},
			{"release", 0, billing.State{Balance: 1000, Held: 0}, ""},
		}},
		{"release after settle is a no-op", []step{
			{"hold", 400, billing.State{Balance: 1000, Held: 400}, ""},
			{"settle", 100, billing.State{Balance: 900, Held: 0}, ""},
			{"release", 0, billing.State{Balance: 900, Held: 0}, ""},
		}},
		{"settle twice charges once", []step{
			{"hold", 400, billing.State{Balance: 1000, Held: 400}, ""},
			{"settle", 100, billing.State{Balance: 900, Held: 0}, ""},
			{"settle", 100, billing.State{Balance: 900, Held: 0}, ""},
		}},
		{"settle after release charges nothing", []step{
			{"hold", 400, billing.State{Balance: 1000, Held: 400}, ""},
			{"release", 0, billing.State{Balance: 1000, Held: 0}, ""},
			{"settle", 100, billing.State{Balance: 1000, Held: 0}, ""},
		}},
		{"hold beyond available", []step{
			{"hold", 700, billing.State{Balance: 1000, Held: 700}, ""},
			{"hold", 301, billing.State{Balance: 1000, Held: 700}, agentd.EInsufficientQuota},
			{"hold", 300, billing.State{Balance: 1000, Held: 1000}, ""},
			{"hold", 1, billing.State{Balance: 1000, Held: 1000}, agentd.EInsufficientQuota},
		}},
		{"zero hold always fits", []step{
			{"hold", 1000, billing.State{Balance: 1000, Held: 1000}, ""},
			{"hold", 0, billing.State{Balance: 1000, Held: 1000}, ""},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, accts, orgID := newOrg(t, 1000)
			var h *billing.Hold
			for i, s := range tt.steps {
				switch s.op {
				case "hold":
					nh, err := accts.Hold(context.Background(), orgID, s.amount)
					if got := agentd.ErrorCode(err); got != s.err {
						t.Fatalf("step %d: hold %d: code %q, want %q (%v)", i, s.amount, got, s.err, err)
					}
					if err == nil {
						h = nh
					}
				case "settle":
					h.Settle(s.amount)
				case "release":
					h.Release()
				}
				if st := state(t, accts, orgID); st != s.want {
					t.Errorf("step %d (%s %d): state %+v, want %+v", i, s.op, s.amount, st, s.want)
				}
			}
		})
	}
}

func TestHoldUnknownOrg(t *testing.T) {
	_, accts, _ := newOrg(t, 1000)
	_, err := accts.Hold(context.Background(), "org-nope", 1)
	if got := agentd.ErrorCode(err); got != agentd.ENotFound {
		t.Errorf("hold on an unknown org: %v (code %q), want %s", err, got, agentd.ENotFound)
	}
}

// TestAdjust changes balances through a real grant in the database.
func TestAdjust(t *testing.T) {
	ctx := context.Background()
	grant := func(db *store.DB, orgID string, delta agentd.Micros, calls *int) func() (agentd.Micros, error) {
		return func() (bal agentd.Micros, err error) {
			*calls++
			err = db.Tx(ctx, func(tx *store.Tx) error {
				bal, err = tx.GrantCredits(ctx, &store.Grant{ID: agentd.NewID("grant"), OrgID: orgID, Amount: delta, KeyID: "k", Created: 1})
				return err
			})
			return bal, err
		}
	}
	failing := func(calls *int) func() (agentd.Micros, error) {
		return func() (agentd.Micros, error) { *calls++; return 0, errors.New("disk full") }
	}
	tests := []struct {
		name       string
		held       agentd.Micros // held by a run in flight before the adjustment
		delta      agentd.Micros
		failCommit bool
		wantCode   string
		wantCalls  int
		wantStored agentd.Micros // stored balance afterwards
		wantState  billing.State
	}{
		{"grant", 0, 500, false, "", 1, 1500, billing.State{Balance: 1500}},
		{"grant while a run holds", 300, 500, false, "", 1, 1500, billing.State{Balance: 1500, Held: 300}},
		{"correction", 0, -400, false, "", 1, 600, billing.State{Balance: 600}},
		{"correction down to the held amount", 300, -700, false, "", 1, 300, billing.State{Balance: 300, Held: 300}},
		{"correction beyond available", 300, -701, false, agentd.EBadRequest, 0, 1000, billing.State{Balance: 1000, Held: 300}},
		{"correction beyond balance", 0, -1001, false, agentd.EBadRequest, 0, 1000, billing.State{Balance: 1000}},
		{"failed commit of a correction releases its hold", 300, -200, true, agentd.EInternal, 1, 1000, billing.State{Balance: 1000, Held: 300}},
		{"failed commit of a grant changes nothing", 0, 200, true, agentd.EInternal, 1, 1000, billing.State{Balance: 1000}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db, accts, orgID := newOrg(t, 1000)
			if tt.held > 0 {
				h, err := accts.Hold(ctx, orgID, tt.held)
				if err != nil {
					t.Fatal(err)
				}
				defer h.Release()
			}
			calls := 0
			commit := grant(db, orgID, tt.delta, &calls)
			if tt.failCommit {
				commit = failing(&calls)
			}
			stored, err := accts.Adjust(ctx, orgID, tt.delta, commit)
			if got := agentd.ErrorCode(err); got != tt.wantCode {
				t.Fatalf("Adjust(%d): %v (code %q), want code %q", tt.delta, err, got, tt.wantCode)
			}
			if calls != tt.wantCalls {
				t.Errorf("commit called %d times, want %d", calls, tt.wantCalls)
			}
			if err == nil && stored != tt.wantStored {
				t.Errorf("Adjust returned stored balance %d, want %d", stored, tt.wantStored)
			}
			if b, err := db.Balance(ctx, orgID); err != nil || b != tt.wantStored {
				t.Errorf("stored balance %d (%v), want %d", b, err, tt.wantStored)
			}
			if st := state(t, accts, orgID); st != tt.wantState {
				t.Errorf("state %+v, want %+v", st, tt.wantState)
			}
			// What is available can still be held, to the micro-credit.
			st := state(t, accts, orgID)
			if avail := st.Balance - st.Held; avail > 0 {
				h, err := accts.Hold(ctx, orgID, avail)
				if err != nil {
					t.Errorf("hold of the available %d: %v", avail, err)
				} else {
					h.Release()
				}
			}
			if _, err := accts.Hold(ctx, orgID, st.Balance-st.Held+1); agentd.ErrorCode(err) != agentd.EInsufficientQuota {
				t.Errorf("hold beyond available: %v", err)
			}
		})
	}
}

// TestAdjustRacesHolds: corrections and runs race; money is never over-committed
// and memory agrees with the database at the end.
func TestAdjustRacesHolds(t *testing.T) {
	ctx := context.Background()
	db, accts, orgID := newOrg(t, 10_000)
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Go(func() {
			if i%4 == 0 {
				delta := agentd.Micros(-300)
				_, err := accts.Adjust(ctx, orgID, delta, func() (bal agentd.Micros, err error) {
					err = db.Tx(ctx, func(tx *store.Tx) error {
						bal, err = tx.GrantCredits(ctx, &store.Grant{ID: agentd.NewID("grant"), OrgID: orgID, Amount: delta, KeyID: "k", Created: 1})
						return err
					})
					return bal, err
				})
				if err != nil && agentd.ErrorCode(err) != agentd.EBadRequest {
					t.Errorf("adjust: %v", err)
				}
				return
			}
			h, err := accts.Hold(ctx, orgID, 500)
			if err != nil {
				if agentd.ErrorCode(err) != agentd.EInsufficientQuota {
					t.Errorf("hold: %v", err)
				}
				return
			}
			if st := state(t, accts, orgID); st.Held > st.Balance {
				t.Errorf("over-committed: %+v", st)
			}
			h.Release()
		})
	}
	wg.Wait()
	st := state(t, accts, orgID)
	stored, err := db.Balance(ctx, orgID)
	if err != nil {
		t.Fatal(err)
	}
	if st.Held != 0 || st.Balance != stored {
		t.Errorf("state %+v, stored balance %d", st, stored)
	}
}

// budgetKey adds a key with a budget (micro-credits per period) to orgID.
func budgetKey(t *testing.T, db *store.DB, orgID string, budget agentd.Micros, period string) string {
	t.Helper()
	ctx := context.Background()
	id := agentd.NewID("key")
	if err := db.Tx(ctx, func(tx *store.Tx) error {
		return tx.CreateKey(ctx, &store.Key{ID: id, OrgID: orgID, Name: "k", Owner: id, Prefix: "agd_x", Hash: agentd.NewID("h"),
			Scopes: []agentd.Scope{agentd.ScopeRun}, Created: 1, Budget: store.Budget{Set: budget >= 0, Limit: budget, Period: period}})
	}); err != nil {
		t.Fatal(err)
	}
	return id
}

// TestKeyBudgetConcurrent: 100 holds race for a key budget that covers exactly
// 37, with a balance that covers all of them: exactly 37 are granted, and the
// refusals name the key's budget.
func TestKeyBudgetConcurrent(t *testing.T) {
	db, accts, orgID := newOrg(t, 1_000_000)
	key := budgetKey(t, db, orgID, 37*100, store.PeriodNone)
	var wg sync.WaitGroup
	var mu sync.Mutex
	granted, refused := 0, 0
	for range 100 {
		wg.Go(func() {
			h, err := accts.HoldKey(context.Background(), orgID, key, 100)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				var e *agentd.Error
				if !errors.As(err, &e) || e.Code != agentd.EInsufficientQuota || e.Fields["limit"] != "key_budget" {
					t.Errorf("err = %v", err)
				}
				refused++
				return
			}
			granted++
			_ = h
		})
	}
	wg.Wait()
	if granted != 37 || refused != 63 {
		t.Fatalf("granted %d, refused %d", granted, refused)
	}
	ks, err := accts.KeyState(context.Background(), orgID, key)
	if err != nil || ks.Held != 3700 || ks.Available != 0 {
		t.Errorf("key state %+v %v", ks, err)
	}
}

// TestKeyBudgetPeriods: a daily budget spent today is whole again tomorrow; a
// charge settling for yesterday's period does not count against today's.
func TestKeyBudgetPeriods(t *testing.T) {
	db, accts, orgID := newOrg(t, 1_000_000)
	key := budgetKey(t, db, orgID, 1000, store.PeriodDaily)
	day := time.Date(2026, 11, 28, 23, 0, 0, 0, time.UTC)
	accts.SetClock(func() time.Time { return day })
	ctx := context.Background()
	h, err := accts.HoldKey(ctx, orgID, key, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := accts.HoldKey(ctx, orgID, key, 1); agentd.ErrorCode(err) != agentd.EInsufficientQuota {
		t.Fatalf("over budget: %v", err)
	}
	h.Settle(600)
	if ks, _ := accts.KeyState(ctx, orgID, key); ks.Budget.Spent != 600 || ks.Available != 400 {
		t.Errorf("after settle: %+v", ks)
	}
	late, err := accts.HoldKey(ctx, orgID, key, 400)
	if err != nil {
		t.Fatal(err)
	}
	day = day.Add(2 * time.Hour) // the next day
	if ks, _ := accts.KeyState(ctx, orgID, key); ks.Budget.Spent != 0 || ks.Available != 600 {
		t.Errorf("next day, with yesterday's hold of 400 open: %+v", ks)
	}
	late.Settle(400) // belongs to yesterday
	if ks, _ := accts.KeyState(ctx, orgID, key); ks.Budget.Spent != 0 || ks.Available != 1000 {
		t.Errorf("yesterday's charge counted today: %+v", ks)
	}
	if PeriodStart := billing.PeriodStart(store.PeriodMonthly, day); PeriodStart != time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC).UnixMicro() {
		t.Errorf("monthly period start %d", PeriodStart)
	}
}

// TestSweepAbandonedHold: a run that died after taking its hold (never settled,
// never released) stops freezing the balance once the sweeper passes its TTL; a
// late settle of a swept hold still charges.
func TestSweepAbandonedHold(t *testing.T) {
	db, _, orgID := newOrg(t, 10_000)
	accts := billing.New(db, time.Minute)
	now := time.Now()
	accts.SetClock(func() time.Time { return now })
	ctx := context.Background()
	if _, err := accts.Hold(ctx, orgID, 7000); err != nil { // abandoned
		t.Fatal(err)
	}
	late, err := accts.Hold(ctx, orgID, 2000)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := accts.Hold(ctx, orgID, 2000); agentd.ErrorCode(err) != agentd.EInsufficientQuota {
		t.Fatalf("hold beyond available: %v", err)
	}
	if n := accts.Sweep(); n != 0 {
		t.Fatalf("swept %d live holds", n)
	}
	now = now.Add(2 * time.Minute)
	if n := accts.Sweep(); n != 2 {
		t.Fatalf("swept %d expired holds, want 2", n)
	}
	st, _ := accts.State(ctx, orgID)
	if st.Held != 0 || st.Holds != 0 || st.Balance != 10_000 {
		t.Errorf("after sweep: %+v", st)
	}
	late.Settle(1500) // its ledger row committed after all
	if st, _ := accts.State(ctx, orgID); st.Held != 0 || st.Balance != 8500 {
		t.Errorf("after the late settle: %+v", st)
	}
}
