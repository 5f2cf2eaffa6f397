// Package billing keeps organizations' money safe under concurrency: a run takes a
// hold for the most it could cost before the model is called, and settles it (the
// actual cost is charged in the same transaction as the run's ledger row) or releases
// it. Available balance is balance − held and never goes below zero.
//
// On a single node agentd serve is the only writer of its database, so holds live
// in memory: a crash releases them by construction, and only settlements reach the
// disk. Each organization's account mirrors its stored balance, loaded on first use
// and changed only after the database change it mirrors has committed.
package billing

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/internal/store"
)

// Balances reads stored balances and key budgets.
type Balances interface {
	Balance(ctx context.Context, orgID string) (agentd.Micros, error)
	KeyBudget(ctx context.Context, keyID string) (store.Budget, error)
}

// Accounts holds every organization's live balance and holds, and the budgets of
// its keys.
type Accounts struct {
	store Balances
	now   func() time.Time
	ttl   time.Duration

	mu    sync.Mutex
	accts map[string]*account
}

type account struct {
	mu      sync.Mutex
	loaded  bool
	balance agentd.Micros
	held    agentd.Micros
	keys    map[string]*keyAccount // guarded by mu: a key belongs to one organization
	holds   map[*Hold]struct{}     // open holds, for Sweep
}

// keyAccount mirrors a key's stored budget state, plus what its runs hold.
type keyAccount struct {
	budget store.Budget
	held   agentd.Micros
}

// New returns Accounts backed by store whose holds expire ttl after they are
// taken (ttl ≤ 0: never); Sweep releases expired holds.
func New(store Balances, ttl time.Duration) *Accounts {
	return &Accounts{store: store, now: time.Now, ttl: ttl, accts: map[string]*account{}}
}

// SetClock replaces the clock, for tests of expiry and budget periods.
func (a *Accounts) SetClock(now func() time.Time) { a.now = now }

func (a *Accounts) account(ctx context.Context, orgID string) (*account, error) {
	a.mu.Lock()
	acct := a.accts[orgID]
	if acct == nil {
		acct = &account{keys: map[string]*keyAccount{}, holds: map[*Hold]struct{}{}}
		a.accts[orgID] = acct
	}
	a.mu.Unlock()
	acct.mu.Lock()
	defer acct.mu.Unlock()
	if !acct.loaded {
		b, err := a.store.Balance(ctx, orgID)
		if err != nil {
			return nil, err
		}
		acct.balance, acct.loaded = b, true
	}
	return acct, nil
}

// key returns keyID's account, loading its budget on first use. acct.mu is held;
// the load happens under it, which only the first run of a key pays.
func (a *Accounts) key(ctx context.Context, acct *account, keyID string) (*keyAccount, error) {
	if k := acct.keys[keyID]; k != nil {
		return k, nil
	}
	b, err := a.store.KeyBudget(ctx, keyID)
	if err != nil {
		return nil, err
	}
	k := &keyAccount{budget: b}
	acct.keys[keyID] = k
	return k, nil
}

// PeriodStart returns the start (unix micros, UTC) of the budget period of that
// kind containing t; 0 for a budget without period.
func PeriodStart(period string, t time.Time) int64 {
	t = t.UTC()
	switch period {
	case store.PeriodDaily:
		return time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC).UnixMicro()
	case store.PeriodMonthly:
		return time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC).UnixMicro()
	}
	return 0
}

// roll moves k into the period containing now, if that period is newer.
func (k *keyAccount) roll(now time.Time) {
	if ps := PeriodStart(k.budget.Period, now); ps > k.budget.PeriodStart {
		k.budget.PeriodStart, k.budget.Spent = ps, 0
	}
}

// available is what k may still hold in its current period.
func (k *keyAccount) available() agentd.Micros {
	return max(k.budget.Limit-k.budget.Spent-k.held, 0)
}

// charge counts cost against k as the store's chargeKey does.
func (k *keyAccount) charge(cost agentd.Micros, periodStart int64) {
	switch {
	case k.budget.PeriodStart == periodStart:
		k.budget.Spent += cost
	case k.budget.PeriodStart < periodStart:
		k.budget.PeriodStart, k.budget.Spent = periodStart, cost
	}
}

// Hold is money set aside for one run. Exactly one of Settle or Release ends it.
type Hold struct {
	acct        *account
	key         *keyAccount // nil: the key has no budget
	Amount      agentd.Micros
	periodStart int64
	expires     time.Time
	done        bool
	swept       bool // released by Sweep; a late Settle still charges
}

// Hold sets amount aside from orgID's available balance, or fails with
// EInsufficientQuota whose Fields carry required and available (in credits).
func (a *Accounts) Hold(ctx context.Context, orgID string, amount agentd.Micros) (*Hold, error) {
	return a.HoldKey(ctx, orgID, "", amount)
}

// HoldKey is Hold for a run by keyID (may be ""): when the key has a budget the
// amount must also fit what the budget has left in its period, and is held there
// too. A key without budget spends from its organization alone.
func (a *Accounts) HoldKey(ctx context.Context, orgID, keyID string, amount agentd.Micros) (*Hold, error) {
	acct, err := a.account(ctx, orgID)
	if err != nil {
		return nil, err
	}
	if amount < 0 {
		return nil, fmt.Errorf("billing: negative hold %d", amount)
	}
	acct.mu.Lock()
	defer acct.mu.Unlock()
	var k *keyAccount
	if keyID != "" {
		if k, err = a.key(ctx, acct, keyID); err != nil {
			return nil, err
		}
		if !k.budget.Set {
			k = nil
		}
	}
	now := a.now()
	if avail := acct.balance - acct.held; amount > avail {
		return nil, insufficient(amount, avail)
	}
	h := &Hold{acct: acct, Amount: amount}
	if k != nil {
		k.roll(now)
		if avail := k.available(); amount > avail {
			return nil, overBudget(amount, avail, k.budget)
		}
		k.held += amount
		h.key, h.periodStart = k, k.budget.PeriodStart
	}
	acct.held += amount
	if a.ttl > 0 {
		h.expires = now.Add(a.ttl)
	}
	acct.holds[h] = struct{}{}
	return h, nil
}

func insufficient(required, available agentd.Micros) error {
	return &agentd.Error{
		Code:    agentd.EInsufficientQuota,
		Message: "insufficient balance: this run may cost up to " + required.String() + " credits and " + available.String() + " are available",
		Fields:  map[string]any{"required": required, "available": available, "limit": "balance"},
	}
}

func overBudget(required, available agentd.Micros, b store.Budget) error {
	per := ""
	if b.Period != store.PeriodNone && b.Period != "" {
		per = " this " + map[string]string{store.PeriodDaily: "day", store.PeriodMonthly: "month"}[b.Period]
	}
	return &agentd.Error{
		Code: agentd.EInsufficientQuota,
		Message: "key budget exceeded: this run may cost up to " + required.String() + " credits and the key's budget of " +
			b.Limit.String() + " credits has " + available.String() + " left" + per,
		Fields: map[string]any{"required": required, "available": available, "limit": "key_budget"},
	}
}

// KeyCharge reports whether the hold's cost counts against a key budget, and the
// period it counts in: what the ledger write must record with the charge.
func (h *Hold) KeyCharge() (charged bool, periodStart int64) {
	return h.key != nil, h.periodStart
}

// Grow adds up to delta to the hold from the available balance (and key budget),
// for a run that turned out to cost more than it held, and returns the hold's new
// amount. It never takes either below zero.
func (h *Hold) Grow(delta agentd.Micros) agentd.Micros {
	h.acct.mu.Lock()
	defer h.acct.mu.Unlock()
	if h.done || h.swept || delta <= 0 {
		return h.Amount
	}
	add := min(delta, max(h.acct.balance-h.acct.held, 0))
	if h.key != nil {
		add = min(add, h.key.available())
		h.key.held += add
	}
	h.acct.held += add
	h.Amount += add
	return h.Amount
}

// Settle ends the hold after the charge of cost has committed: the balance (and
// the key's budget) drop by cost and the rest of the hold is released. A hold the
// sweeper released is still charged: the database has recorded the charge.
func (h *Hold) Settle(cost agentd.Micros) {
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
	if h.key != nil && cost > 0 {
		h.key.charge(cost, h.periodStart)
	}
}

// unhold takes the hold's amount out of what is held. acct.mu is held.
func (h *Hold) unhold() {
	h.acct.held -= h.Amount
	if h.key != nil {
		h.key.held -= h.Amount
	}
	delete(h.acct.holds, h)
}

// Release ends the hold with no charge. Releasing an ended hold does nothing, so
// deferring Release after a Settle is safe.
func (h *Hold) Release() { h.Settle(0) }

// Sweep releases every hold older than the TTL whose run never settled or
// released it (a run stuck past any deadline, or a bug), so that a dead run does
// not freeze balance forever. It returns how many holds it released.
func (a *Accounts) Sweep() int {
	now := a.now()
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
	return n
}

// SetBudget updates the live budget of keyID after its stored budget changed.
// What the key has spent in its period stays counted.
func (a *Accounts) SetBudget(ctx context.Context, orgID, keyID string, set bool, limit agentd.Micros, period string) error {
	acct, err := a.account(ctx, orgID)
	if err != nil {
		return err
	}
	acct.mu.Lock()
	defer acct.mu.Unlock()
	k, err := a.key(ctx, acct, keyID)
	if err != nil {
		return err
	}
	if period != k.budget.Period {
		k.budget.PeriodStart, k.budget.Spent = PeriodStart(period, a.now()), 0
	}
	k.budget.Set, k.budget.Limit, k.budget.Period = set, limit, period
	return nil
}

// KeyState is a key's budget as agentd sees it now.
type KeyState struct {
	Budget      store.Budget
	Held        agentd.Micros
	Available   agentd.Micros
	PeriodStart time.Time
}

// KeyState returns keyID's budget state (Budget.Set false: no budget).
func (a *Accounts) KeyState(ctx context.Context, orgID, keyID string) (KeyState, error) {
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
	k.roll(a.now())
	return KeyState{Budget: k.budget, Held: k.held, Available: k.available(), PeriodStart: time.UnixMicro(k.budget.PeriodStart).UTC()}, nil
}

// State is an organization's money as agentd sees it now.
type State struct {
	Balance agentd.Micros `json:"balance"`
	Held    agentd.Micros `json:"held"`
	Holds   int           `json:"holds"` // runs holding money now
}

// State returns orgID's balance and the amount held by runs in flight.
func (a *Accounts) State(ctx context.Context, orgID string) (State, error) {
	acct, err := a.account(ctx, orgID)
	if err != nil {
		return State{}, err
	}
	acct.mu.Lock()
	defer acct.mu.Unlock()
	return State{Balance: acct.balance, Held: acct.held, Holds: len(acct.holds)}, nil
}

// Adjust changes orgID's balance by delta through commit, which must make the stored
// change and return the new stored balance (returned for display). A negative delta is held first so that
// no run can spend it meanwhile, and may not take available balance below zero.
func (a *Accounts) Adjust(ctx context.Context, orgID string, delta agentd.Micros, commit func() (agentd.Micros, error)) (agentd.Micros, error) {
	acct, err := a.account(ctx, orgID)
	if err != nil {
		return 0, err
	}
	var h *Hold
	if delta < 0 {
		if h, err = a.Hold(ctx, orgID, -delta); err != nil {
			avail := err.(*agentd.Error).Fields["available"].(agentd.Micros)
			return 0, agentd.Errorf(agentd.EBadRequest, "a correction of %s credits would take the available balance (%s) below zero", delta, avail)
		}
	}
	stored, err := commit()
	if err != nil {
		if h != nil {
			h.Release()
		}
		return 0, err
	}
	acct.mu.Lock()
	defer acct.mu.Unlock()
	if h != nil {
		h.done = true
		h.unhold()
	}
	// Apply the delta, not the stored value: a settlement committed just before ours
	// may not have reached memory yet, and it applies its own delta.
	acct.balance += delta
	return stored, nil
}
