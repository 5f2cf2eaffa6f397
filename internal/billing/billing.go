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

	"github.com/agentd/agentd"
)

// Balances reads stored balances.
type Balances interface {
	Balance(ctx context.Context, orgID string) (agentd.Micros, error)
}

// Accounts holds every organization's live balance and holds.
type Accounts struct {
	store Balances
	mu    sync.Mutex
	accts map[string]*account
}

type account struct {
	mu      sync.Mutex
	loaded  bool
	balance agentd.Micros
	held    agentd.Micros
}

// New returns Accounts backed by store.
func New(store Balances) *Accounts {
	return &Accounts{store: store, accts: map[string]*account{}}
}

func (a *Accounts) account(ctx context.Context, orgID string) (*account, error) {
	a.mu.Lock()
	acct := a.accts[orgID]
	if acct == nil {
		acct = &account{}
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

// Hold is money set aside for one run. Exactly one of Settle or Release ends it.
type Hold struct {
	acct   *account
	Amount agentd.Micros
	done   bool
}

// Hold sets amount aside from orgID's available balance, or fails with
// EInsufficientQuota whose Fields carry required and available (in credits).
func (a *Accounts) Hold(ctx context.Context, orgID string, amount agentd.Micros) (*Hold, error) {
	acct, err := a.account(ctx, orgID)
	if err != nil {
		return nil, err
	}
	if amount < 0 {
		return nil, fmt.Errorf("billing: negative hold %d", amount)
	}
	acct.mu.Lock()
	defer acct.mu.Unlock()
	if avail := acct.balance - acct.held; amount > avail {
		return nil, insufficient(amount, avail)
	}
	acct.held += amount
	return &Hold{acct: acct, Amount: amount}, nil
}

func insufficient(required, available agentd.Micros) error {
	return &agentd.Error{
		Code:    agentd.EInsufficientQuota,
		Message: "insufficient balance: this run may cost up to " + required.String() + " credits and " + available.String() + " are available",
		Fields:  map[string]any{"required": required, "available": available},
	}
}

// Grow adds up to delta to the hold from the available balance, for a run that
// turned out to cost more than it held, and returns the hold's new amount. It never
// takes available balance below zero.
func (h *Hold) Grow(delta agentd.Micros) agentd.Micros {
	h.acct.mu.Lock()
	defer h.acct.mu.Unlock()
	if h.done || delta <= 0 {
		return h.Amount
	}
	add := min(delta, max(h.acct.balance-h.acct.held, 0))
	h.acct.held += add
	h.Amount += add
	return h.Amount
}

// Settle ends the hold after the charge of cost has committed: the balance drops by
// cost and the rest of the hold is released.
func (h *Hold) Settle(cost agentd.Micros) {
	h.acct.mu.Lock()
	defer h.acct.mu.Unlock()
	if h.done {
		return
	}
	h.done = true
	h.acct.held -= h.Amount
	h.acct.balance -= cost
}

// Release ends the hold with no charge. Releasing an ended hold does nothing, so
// deferring Release after a Settle is safe.
func (h *Hold) Release() { h.Settle(0) }

// State is an organization's money as agentd sees it now.
type State struct {
	Balance agentd.Micros `json:"balance"`
	Held    agentd.Micros `json:"held"`
}

// State returns orgID's balance and the amount held by runs in flight.
func (a *Accounts) State(ctx context.Context, orgID string) (State, error) {
	acct, err := a.account(ctx, orgID)
	if err != nil {
		return State{}, err
	}
	acct.mu.Lock()
	defer acct.mu.Unlock()
	return State{Balance: acct.balance, Held: acct.held}, nil
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
		acct.held -= h.Amount
	}
	// Apply the delta, not the stored value: a settlement committed just before ours
	// may not have reached memory yet, and it applies its own delta.
	acct.balance += delta
	return stored, nil
}
