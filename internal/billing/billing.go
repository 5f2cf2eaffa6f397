// Package billing owns every number of money: balances and what runs hold of them,
// key budgets and their periods, charges, grants, and the ledger's queries. A run
// takes a hold for the most it could cost before the model is called, and settles
// it (the actual cost is charged in the same transaction as the run's ledger row)
// or releases it. Available balance is balance − held and never goes below zero.
//
// The database is the truth: a balance is grants minus charges, and what a key's
// budget has spent in its period is the sum of the key's charges in the ledger for
// that period (the daily rollups), so there is no second copy to disagree with it.
// Accounts has two modes. On a single node (New, SQLite) it keeps in memory a
// mirror of those numbers plus the holds of runs in flight (a reservation: agentd
// serve is the only writer of its database, so a crash releases holds by
// construction). The mirror changes only in commit hooks (store.Tx.OnCommit),
// which the writer runs in commit order, so that it moves exactly as the database
// did; it never applies a rule of its own, and whatever it holds can be rebuilt
// from the database (a new Accounts over it). Across replicas (NewShared,
// PostgreSQL) the holds are rows in the database too and nothing is kept in
// memory: see shared.go.
package billing

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/internal/clock"
	"github.com/agentd/agentd/internal/store"
)

// PeriodStart is the start of the budget period of kind p that contains t: the UTC
// day or month, or the zero time for PeriodNone (a budget over the key's whole
// life). It is the one rule that says when a period rolls over.
func PeriodStart(p agentd.Period, t time.Time) time.Time {
	t = t.UTC()
	switch p {
	case agentd.PeriodDaily:
		return time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
	case agentd.PeriodMonthly:
		return time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
	}
	return time.Time{}
}

// fromDay is the first rollup day of the period starting at start ("" for all).
func fromDay(start time.Time) string {
	if start.IsZero() {
		return ""
	}
	return start.Format(time.DateOnly)
}

// Accounts holds every organization's live balance and holds, and the budgets of
// its keys: in memory on a single node (New), or in the database for replicas
// (NewShared).
type Accounts struct {
	db    *store.DB
	clock clock.Clock
	ttl   time.Duration
	// shared: holds and budgets are read and written in the database, and the
	// memory below is unused.
	shared bool

	mu    sync.Mutex
	accts map[string]*account
}

type account struct {
	id      string
	mu      sync.Mutex
	loaded  bool
	balance agentd.Micros          // as committed
	held    agentd.Micros          // by runs in flight
	keys    map[string]*keyAccount // guarded by mu: a key belongs to one organization
	holds   map[*memHold]struct{}  // open holds, for Sweep
}

// keyAccount mirrors a key's budget and what it has spent in the period that
// periodStart starts, plus what its runs hold now.
type keyAccount struct {
	budget      agentd.Budget
	periodStart time.Time
	spent       agentd.Micros // charges committed in the period of periodStart; tracked while the budget is set
	held        agentd.Micros
}

// spentAt is what k has spent in the period containing now: nothing yet when that
// period is newer than the one k has counted.
func (k *keyAccount) spentAt(now time.Time) agentd.Micros {
	if PeriodStart(k.budget.Period, now).After(k.periodStart) {
		return 0
	}
	return k.spent
}

// available is what k may still hold in the period containing now.
func (k *keyAccount) available(now time.Time) agentd.Micros {
	return max(k.budget.Limit-k.spentAt(now)-k.held, 0)
}

// charge counts a committed charge of cost, recorded at at, as the rollups do: in
// the period containing at. A charge in a period older than the one counted belongs
// to a period that is over; one in a newer period starts its count.
func (k *keyAccount) charge(cost agentd.Micros, at time.Time) {
	if !k.budget.Set || cost == 0 {
		return
	}
	switch ps := PeriodStart(k.budget.Period, at); {
	case ps.Equal(k.periodStart):
		k.spent += cost
	case ps.After(k.periodStart):
		k.periodStart, k.spent = ps, cost
	}
}

// New returns Accounts over db whose holds expire ttl after they are taken (ttl ≤ 0:
// never; Sweep releases expired holds), deciding time by clk.
func New(db *store.DB, clk clock.Clock, ttl time.Duration) *Accounts {
	return &Accounts{db: db, clock: clk, ttl: ttl, accts: map[string]*account{}}
}

// account returns orgID's account, loading its balance on first use. The load
// happens under acct.mu, which the commit hooks also take, so that no committed
// change can slip between the load and the mirror.
func (a *Accounts) account(ctx context.Context, orgID string) (*account, error) {
	a.mu.Lock()
	acct := a.accts[orgID]
	if acct == nil {
		acct = &account{id: orgID, keys: map[string]*keyAccount{}, holds: map[*memHold]struct{}{}}
		a.accts[orgID] = acct
	}
	a.mu.Unlock()
	acct.mu.Lock()
	defer acct.mu.Unlock()
	if !acct.loaded {
		b, err := a.db.Balance(ctx, orgID)
		if err != nil {
			return nil, err
		}
		acct.balance, acct.loaded = b, true
	}
	return acct, nil
}

// key returns keyID's account, loading its budget (and, when it has one, what it
// has spent this period) on first use. acct.mu is held.
func (a *Accounts) key(ctx context.Context, acct *account, keyID string) (*keyAccount, error) {
	if k := acct.keys[keyID]; k != nil {
		return k, nil
	}
	b, err := a.db.KeyBudget(ctx, keyID)
	if err != nil {
		return nil, err
	}
	k := &keyAccount{budget: b, periodStart: PeriodStart(b.Period, a.clock.Now())}
	if b.Set {
		if k.spent, err = a.db.KeySpent(ctx, keyID, fromDay(k.periodStart)); err != nil {
			return nil, err
		}
	}
	acct.keys[keyID] = k
	return k, nil
}

// Hold is money set aside for one run. Exactly one of Settle (in the transaction
// that records the run) or Release ends it.
type Hold interface {
	// Amount is what the hold sets aside now.
	Amount() agentd.Micros
	// Grow adds up to delta from the available balance (and key budget), for a
	// run that turned out to cost more than it held, and returns the new amount.
	Grow(delta agentd.Micros) agentd.Micros
	// Settle ends the hold with a charge of cost recorded at at, as part of tx,
	// whose writes must include the charge (store.Tx.RecordRun): when tx commits
	// the balance and the key's budget drop by cost and the rest is released; if
	// tx rolls back nothing happens and the hold stays open for Release.
	Settle(tx *store.Tx, cost agentd.Micros, at time.Time)
	// Release ends the hold with no charge. Releasing an ended hold does nothing,
	// so deferring Release after a Settle is safe.
	Release()
}

// memHold is a hold in memory.
type memHold struct {
	a       *Accounts
	acct    *account
	key     *keyAccount // nil for a hold without key (credit corrections)
	amount  agentd.Micros
	expires time.Time
	done    bool
	swept   bool // released by Sweep; a late Settle still charges
}

// Hold sets amount aside for a run by keyID from orgID's available balance and,
// when the key has a budget, from what the budget has left in its period. It fails
// with EInsufficientQuota whose Fields carry required and available (in credits)
// and which limit was short.
func (a *Accounts) Hold(ctx context.Context, orgID, keyID string, amount agentd.Micros) (Hold, error) {
	if amount < 0 || amount > agentd.MaxMicros {
		return nil, fmt.Errorf("billing: hold of %d out of range", amount)
	}
	if a.shared {
		return a.sharedHold(ctx, orgID, keyID, amount)
	}
	h, err := a.hold(ctx, orgID, keyID, amount)
	if err != nil {
		return nil, err
	}
	return h, nil
}

// hold is Hold in memory; amount is in range.
func (a *Accounts) hold(ctx context.Context, orgID, keyID string, amount agentd.Micros) (*memHold, error) {
	acct, err := a.account(ctx, orgID)
	if err != nil {
		return nil, err
	}
	acct.mu.Lock()
	defer acct.mu.Unlock()
	var k *keyAccount
	if keyID != "" {
		if k, err = a.key(ctx, acct, keyID); err != nil {
			return nil, err
		}
	}
	now := a.clock.Now()
	if avail := acct.balance - acct.held; amount > avail {
		return nil, insufficient(amount, avail)
	}
	if k != nil && k.budget.Set {
		if avail := k.available(now); amount > avail {
			return nil, overBudget(amount, avail, k.budget)
		}
	}
	h := &memHold{a: a, acct: acct, key: k, amount: amount}
	acct.held += amount
	if k != nil {
		k.held += amount
	}
	if a.ttl > 0 {
		h.expires = now.Add(a.ttl)
	}
	acct.holds[h] = struct{}{}
	return h, nil
}

func insufficient(required, available agentd.Micros) error {
	available = max(available, 0)
	return &agentd.Error{
		Code:    agentd.EInsufficientQuota,
		Message: "insufficient balance: this run may cost up to " + required.String() + " credits and " + available.String() + " are available",
		Fields:  map[string]any{"required": required, "available": available, "limit": "balance"},
	}
}

func overBudget(required, available agentd.Micros, b agentd.Budget) error {
	per := ""
	switch b.Period {
	case agentd.PeriodDaily:
		per = " this day"
	case agentd.PeriodMonthly:
		per = " this month"
	}
	return &agentd.Error{
		Code: agentd.EInsufficientQuota,
		Message: "key budget exceeded: this run may cost up to " + required.String() + " credits and the key's budget of " +
			b.Limit.String() + " credits has " + available.String() + " left" + per,
		Fields: map[string]any{"required": required, "available": available, "limit": "key_budget"},
	}
}

func (h *memHold) Amount() agentd.Micros {
	h.acct.mu.Lock()
	defer h.acct.mu.Unlock()
	return h.amount
}

func (h *memHold) Grow(delta agentd.Micros) agentd.Micros {
	h.acct.mu.Lock()
	defer h.acct.mu.Unlock()
	if h.done || h.swept || delta <= 0 {
		return h.amount
	}
	add := min(delta, max(h.acct.balance-h.acct.held, 0))
	if h.key != nil && h.key.budget.Set {
		add = min(add, h.key.available(h.a.clock.Now()))
	}
	h.acct.held += add
	if h.key != nil {
		h.key.held += add
	}
	h.amount += add
	return h.amount
}

func (h *memHold) Settle(tx *store.Tx, cost agentd.Micros, at time.Time) {
	tx.OnCommit(func() { h.end(cost, at) })
}

func (h *memHold) Release() { h.end(0, time.Time{}) }

// end ends the hold, charging cost (committed at at) to the mirror. A hold the
// sweeper released is still charged: the database has recorded the charge.
func (h *memHold) end(cost agentd.Micros, at time.Time) {
	h.acct.mu.Lock()
	defer h.acct.mu.Unlock()
	if h.done {
		return
	}
	h.done = true
	if !h.swept {
		h.unhold()
	}
	h.acct.balance -= cost
	if h.key != nil {
		h.key.charge(cost, at)
	}
}

// unhold takes the hold's amount out of what is held. acct.mu is held.
func (h *memHold) unhold() {
	h.acct.held -= h.amount
	if h.key != nil {
		h.key.held -= h.amount
	}
	delete(h.acct.holds, h)
}

// Sweep releases every hold older than the TTL whose run never settled or
// released it (a run stuck past any deadline, or a bug), so that a dead run does
// not freeze balance forever. It returns how many holds it released. In memory it
// cannot fail; shared, it ends them in the database in bounded batches, and the
// sweepers of several replicas may run at once (each hold ends once).
func (a *Accounts) Sweep(ctx context.Context) (int, error) {
	if a.shared {
		return a.sharedSweep(ctx)
	}
	now := a.clock.Now()
	a.mu.Lock()
	accts := make([]*account, 0, len(a.accts))
	for _, acct := range a.accts {
		accts = append(accts, acct)
	}
	a.mu.Unlock()
	n := 0
	for _, acct := range accts {
		acct.mu.Lock()
		for h := range acct.holds {
			if !h.expires.IsZero() && now.After(h.expires) {
				h.unhold()
				h.swept = true
				n++
			}
		}
		acct.mu.Unlock()
	}
	return n, nil
}

// State is an organization's money as agentd sees it now.
type State struct {
	Balance agentd.Micros
	Held    agentd.Micros
	Holds   int // runs holding money now
}

// State returns orgID's balance and the amount held by runs in flight.
func (a *Accounts) State(ctx context.Context, orgID string) (State, error) {
	if a.shared {
		return a.sharedState(ctx, orgID)
	}
	acct, err := a.account(ctx, orgID)
	if err != nil {
		return State{}, err
	}
	acct.mu.Lock()
	defer acct.mu.Unlock()
	return State{Balance: acct.balance, Held: acct.held, Holds: len(acct.holds)}, nil
}

// KeyState is a key's budget as agentd sees it now.
type KeyState struct {
	Budget      agentd.Budget
	PeriodStart time.Time     // of the current period; zero for PeriodNone
	Spent       agentd.Micros // in the current period
	Held        agentd.Micros
	Available   agentd.Micros // what the budget has left for new holds
}

// KeyState returns keyID's budget state (Budget.Set false: no budget).
func (a *Accounts) KeyState(ctx context.Context, orgID, keyID string) (KeyState, error) {
	if a.shared {
		return a.sharedKeyState(ctx, keyID)
	}
	acct, err := a.account(ctx, orgID)
	if err != nil {
		return KeyState{}, err
	}
	acct.mu.Lock()
	defer acct.mu.Unlock()
	k, err := a.key(ctx, acct, keyID)
	if err != nil {
		return KeyState{}, err
	}
	now := a.clock.Now()
	return KeyState{Budget: k.budget, PeriodStart: PeriodStart(k.budget.Period, now), Spent: k.spentAt(now),
		Held: k.held, Available: k.available(now)}, nil
}

// Available is what a run by keyID may hold now: the organization's available
// balance, or the key's budget's remainder when that is less.
func (a *Accounts) Available(ctx context.Context, orgID, keyID string) (agentd.Micros, error) {
	st, err := a.State(ctx, orgID)
	if err != nil {
		return 0, err
	}
	avail := max(st.Balance-st.Held, 0)
	if keyID == "" {
		return avail, nil
	}
	ks, err := a.KeyState(ctx, orgID, keyID)
	if err != nil {
		return 0, err
	}
	if ks.Budget.Set {
		avail = min(avail, ks.Available)
	}
	return avail, nil
}

// SetBudget stores keyID's new budget (a key of orgID) and moves the mirror to it
// in the same commit: what the key has spent is re-read for the new budget's period
// inside the transaction, so no charge committed around it is lost or counted twice.
// Changing a budget never forgets spending: a budget counts the key's charges in
// the ledger for its current period, whatever the key's budget was when they were
// made.
//
// The change is audited (key.update) as made by by, in its own transaction.
func (a *Accounts) SetBudget(ctx context.Context, orgID, keyID string, b agentd.Budget, by *agentd.Principal) (KeyState, error) {
	if !b.Period.Valid() {
		return KeyState{}, agentd.Invalid("budget_period must be none, daily or monthly", "enum", "body", "budget_period")
	}
	if b.Set && (b.Limit < 0 || b.Limit > agentd.MaxMicros) {
		return KeyState{}, agentd.Invalid(fmt.Sprintf("budget must be between 0 and %d credits", agentd.MaxMicros/agentd.MicrosPerCredit), "less_than_equal", "body", "budget")
	}
	if !b.Set {
		b.Limit = 0 // what the store keeps of no budget
	}
	audit := budgetChanged(orgID, keyID, b, a.clock.Now()).By(by)
	if a.shared {
		return a.sharedSetBudget(ctx, keyID, b, audit)
	}
	acct, err := a.account(ctx, orgID)
	if err != nil {
		return KeyState{}, err
	}
	start := PeriodStart(b.Period, a.clock.Now())
	err = a.db.Tx(ctx, func(tx *store.Tx) error {
		if err := tx.SetKeyBudget(ctx, keyID, b); err != nil {
			return err
		}
		if err := tx.Audit(ctx, audit); err != nil {
			return err
		}
		var spent agentd.Micros // tracked while the key has a budget
		if b.Set {
			var err error
			if spent, err = tx.KeySpent(ctx, keyID, fromDay(start)); err != nil {
				return err
			}
		}
		tx.OnCommit(func() {
			acct.mu.Lock()
			defer acct.mu.Unlock()
			if k := acct.keys[keyID]; k != nil {
				k.budget, k.periodStart, k.spent = b, start, spent
			}
		})
		return nil
	})
	if err != nil {
		return KeyState{}, err
	}
	return a.KeyState(ctx, orgID, keyID)
}

// Grant records a credit grant (or, negative, a correction) of amount by the key
// of by to orgID and returns the organization's state after it. A correction is
// held first so that no run can spend it meanwhile, and may not take the available
// balance below zero (400); a grant that would take the balance past
// agentd.MaxMicros is refused (422) and nothing changes. The grant is audited
// (credits.grant) in its own transaction.
func (a *Accounts) Grant(ctx context.Context, orgID string, amount agentd.Micros, by *agentd.Principal) (State, error) {
	if amount == 0 || amount > agentd.MaxMicros || amount < -agentd.MaxMicros {
		return State{}, agentd.Invalid(fmt.Sprintf("amount must be a non-zero number of credits of at most %d in size", agentd.MaxMicros/agentd.MicrosPerCredit), "value_error", "body", "amount")
	}
	if a.shared {
		return a.sharedGrant(ctx, orgID, amount, by)
	}
	acct, err := a.account(ctx, orgID)
	if err != nil {
		return State{}, err
	}
	var h *memHold
	if amount < 0 {
		if h, err = a.hold(ctx, orgID, "", -amount); err != nil {
			avail := agentd.Micros(0)
			if e, ok := err.(*agentd.Error); ok {
				avail, _ = e.Fields["available"].(agentd.Micros)
			}
			return State{}, correctionTooLarge(amount, avail)
		}
		defer h.Release() // no-op once committed
	}
	g := newGrant(orgID, amount, by, a.clock.Now())
	err = a.db.Tx(ctx, func(tx *store.Tx) error {
		bal, err := tx.Balance(ctx, orgID)
		if err != nil {
			return err
		}
		next, err := granted(bal, amount)
		if err != nil {
			return err
		}
		if err := recordGrant(ctx, tx, g, next, by); err != nil {
			return err
		}
		tx.OnCommit(func() {
			acct.mu.Lock()
			defer acct.mu.Unlock()
			if h != nil && !h.done {
				h.done = true
				if !h.swept {
					h.unhold()
				}
			}
			acct.balance += amount
		})
		return nil
	})
	if err != nil {
		return State{}, err
	}
	return a.State(ctx, orgID)
}

// granted is the balance after a grant of amount to a balance of bal, or the
// error that refuses it: past agentd.MaxMicros (422), or below zero (400).
func granted(bal, amount agentd.Micros) (agentd.Micros, error) {
	next, ok := agentd.AddMicros(bal, amount)
	if !ok {
		return 0, agentd.Invalid(fmt.Sprintf("this grant would take the balance past the largest balance agentd keeps (%d credits)", agentd.MaxMicros/agentd.MicrosPerCredit), "value_error", "body", "amount")
	}
	if next < 0 {
		return 0, agentd.Errorf(agentd.EBadRequest, "a correction of %s credits would take the balance (%s) below zero", amount, bal)
	}
	return next, nil
}

// correctionTooLarge refuses a correction (a negative amount) larger than the
// available balance avail: runs in flight hold the rest.
func correctionTooLarge(amount, avail agentd.Micros) error {
	return agentd.Errorf(agentd.EBadRequest, "a correction of %s credits would take the available balance (%s) below zero", amount, avail)
}
