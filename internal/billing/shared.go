package billing

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/internal/clock"
	"github.com/agentd/agentd/internal/store"
)

// Shared accounts: the database is the only copy. With several replicas on one
// PostgreSQL database, memory of one replica cannot know what another holds, so a
// hold is a row and a conditional update of orgs.held and api_keys.held
// (store.Tx.TakeHoldLater), taken in one writer transaction: the replicas' writers run
// one at a time (store's advisory lock), so each hold sees every hold, release and
// charge committed before it, wherever it was made, and a replica's writer still
// commits the holds of many runs at once. Settling happens in the transaction of
// the run's own record, so the charge, the ledger row and the end of the hold
// commit together. What billing decides stays here: which budget a hold answers
// to and the first day of its period, how much a grow asks for, what a grant may
// do; the store applies the numbers.

// sweepBatch is how many expired holds one write of Sweep ends.
const sweepBatch = 1000

// NewShared returns Accounts that keep holds and budgets in the database, for
// replicas sharing one PostgreSQL database (db must be one: SQLite has no holds
// table). Holds expire ttl after they are taken (ttl ≤ 0: never); Sweep, on any
// replica, ends expired ones.
func NewShared(db *store.DB, clk clock.Clock, ttl time.Duration) *Accounts {
	if db.Dialect() != "postgres" {
		panic("billing: NewShared needs PostgreSQL, whose schema has the holds table; use New on " + db.Dialect())
	}
	return &Accounts{db: db, clock: clk, ttl: ttl, shared: true}
}

// expiry is when a hold taken at now expires.
func (a *Accounts) expiry(now time.Time) int64 {
	if a.ttl <= 0 {
		return math.MaxInt64
	}
	return now.Add(a.ttl).UnixMicro()
}

// budgetAt reads keyID's budget inside tx and returns it with the first rollup day
// of its period containing now: what a hold of the key answers to. It returns nil
// for no key or a key without a budget.
func budgetAt(ctx context.Context, tx *store.Tx, keyID string, now time.Time) (*agentd.Budget, string, error) {
	if keyID == "" {
		return nil, "", nil
	}
	b, err := tx.KeyBudget(ctx, keyID)
	if err != nil || !b.Set {
		return nil, "", err
	}
	return &b, fromDay(PeriodStart(b.Period, now)), nil
}

// refusal is the EInsufficientQuota error for a hold of required that short
// refused, as memory mode words it.
func refusal(required agentd.Micros, short *store.Shortfall, b *agentd.Budget) error {
	if short.KeyBudget && b != nil {
		return overBudget(required, max(short.Available, 0), *b)
	}
	return insufficient(required, short.Available)
}

func (a *Accounts) sharedHold(ctx context.Context, orgID, keyID string, amount agentd.Micros) (Hold, error) {
	now := a.clock.Now()
	row := &store.Hold{ID: agentd.NewID("hold"), OrgID: orgID, KeyID: keyID, Amount: amount,
		Created: now.UnixMicro(), Expires: a.expiry(now)}
	// Billing's rule gives the first day of each kind of period; the key's stored
	// period picks one, in the same statement that reads it and takes the hold.
	days := store.PeriodDays{
		Daily:   fromDay(PeriodStart(agentd.PeriodDaily, now)),
		Monthly: fromDay(PeriodStart(agentd.PeriodMonthly, now)),
	}
	// The outcome is known once the write has run, before Tx returns: on
	// PostgreSQL the batch's holds are taken by one call, in the batch's order.
	var res store.HoldResult
	err := a.db.TxRecords(ctx, func(tx *store.Tx) error {
		res = store.HoldResult{} // the writer may run this again
		tx.TakeHoldLater(ctx, row, days, &res)
		return nil // a refusal writes nothing
	})
	if err == nil {
		err = res.Err
	}
	if err != nil {
		return nil, fmt.Errorf("billing: hold %s for org %s: %w", amount, orgID, err)
	}
	if res.Short != nil {
		return nil, refusal(amount, res.Short, &res.Budget)
	}
	return &dbHold{a: a, ctx: context.WithoutCancel(ctx), id: row.ID, keyID: keyID, amount: amount}, nil
}

// dbHold is a hold whose truth is its row. Its amount here is what this run
// asked for and grew to; the row's amount is what ending it gives back.
type dbHold struct {
	a     *Accounts
	ctx   context.Context // the run's, without its cancellation: a gone client still ends the hold
	id    string
	keyID string

	mu     sync.Mutex // serializes Grow
	amount agentd.Micros
	// ended is set once a settle or release has committed; written from the
	// writer's commit hook, so it is not guarded by mu (a hook must never wait).
	ended atomic.Bool
}

func (h *dbHold) Amount() agentd.Micros {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.amount
}

// Grow asks for delta and, refused, for what the short limit has left, until a
// grow is taken or nothing is left: at most once per limit, since a refusal names
// the limit's available amount, which the next try then fits. An expired hold, or
// a failed write, does not grow (the run's charge is then capped to the hold).
func (h *dbHold) Grow(delta agentd.Micros) agentd.Micros {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.ended.Load() || delta <= 0 {
		return h.amount
	}
	now := h.a.clock.Now()
	grown := h.amount
	err := h.a.db.Tx(h.ctx, func(tx *store.Tx) error {
		grown = h.amount
		budget, from, err := budgetAt(h.ctx, tx, h.keyID, now)
		if err != nil {
			return err
		}
		for add := delta; add > 0; {
			amount, short, err := tx.GrowHold(h.ctx, h.id, add, budget, from)
			if errors.Is(err, store.ErrHoldGone) {
				return nil // expired by the sweeper: a late settle still charges
			}
			if err != nil {
				return err
			}
			if short == nil {
				grown = amount
				return nil
			}
			next := max(short.Available, 0)
			if next >= add { // cannot be, the refusal said so; never loop on it
				return nil
			}
			add = next
		}
		return nil
	})
	if err != nil {
		return h.amount
	}
	h.amount = grown
	return grown
}

// Settle ends the hold in tx, the write that records the run's charge: the row's
// amount leaves what is held in the same commit as the charge. A settle whose
// write rolls back leaves the hold open for Release. cost and at are the charge's,
// which the run's record writes; the database counts them.
func (h *dbHold) Settle(tx *store.Tx, cost agentd.Micros, at time.Time) {
	if h.ended.Load() {
		return
	}
	tx.SettleHold(h.ctx, h.id) // its error fails tx
	tx.OnCommit(func() { h.ended.Store(true) })
}

// Release ends the hold with no charge in a write of its own. If that write
// fails (the database unreachable), the row stays until the sweeper expires it.
func (h *dbHold) Release() {
	if h.ended.Load() {
		return
	}
	err := h.a.db.Tx(h.ctx, func(tx *store.Tx) error {
		_, err := tx.ReleaseHold(h.ctx, h.id)
		return err
	})
	if err == nil {
		h.ended.Store(true)
	}
}

// sharedSweep ends the holds that expired before now, a batch per write, until a
// batch comes back short.
func (a *Accounts) sharedSweep(ctx context.Context) (int, error) {
	now := a.clock.Now().UnixMicro()
	total := 0
	for {
		n, err := a.db.ExpireHolds(ctx, now, sweepBatch)
		total += n
		if err != nil {
			return total, fmt.Errorf("billing: sweep expired holds: %w", err)
		}
		if n < sweepBatch {
			return total, nil
		}
	}
}

func (a *Accounts) sharedState(ctx context.Context, orgID string) (State, error) {
	m, err := a.db.OrgMoney(ctx, orgID)
	if err != nil {
		return State{}, err
	}
	return State{Balance: m.Balance, Held: m.Held, Holds: m.Holds}, nil
}

func (a *Accounts) sharedKeyState(ctx context.Context, keyID string) (KeyState, error) {
	now := a.clock.Now()
	b, err := a.db.KeyBudget(ctx, keyID)
	if err != nil {
		return KeyState{}, err
	}
	// Held and spent must come from one snapshot (a settle moves money from one to
	// the other), and what counts as spent depends on the period, read before it:
	// read again in the rare case that a budget change came between the two.
	for try := 0; ; try++ {
		start := PeriodStart(b.Period, now)
		m, err := a.db.KeyMoney(ctx, keyID, fromDay(start))
		if err != nil {
			return KeyState{}, err
		}
		if m.Budget.Period != b.Period && try < 3 {
			b = m.Budget
			continue
		}
		ks := KeyState{Budget: m.Budget, PeriodStart: PeriodStart(m.Budget.Period, now), Held: m.Held}
		if m.Budget.Set { // spending is counted while a budget is set, as in memory
			ks.Spent = m.Spent
		}
		ks.Available = max(m.Budget.Limit-ks.Spent-ks.Held, 0)
		return ks, nil
	}
}

// sharedSetBudget stores the budget; nothing else is kept that could disagree.
func (a *Accounts) sharedSetBudget(ctx context.Context, keyID string, b agentd.Budget, audit *agentd.AuditEntry) (KeyState, error) {
	if err := a.db.Tx(ctx, func(tx *store.Tx) error {
		if err := tx.SetKeyBudget(ctx, keyID, b); err != nil {
			return err
		}
		return tx.Audit(ctx, audit)
	}); err != nil {
		return KeyState{}, err
	}
	return a.sharedKeyState(ctx, keyID)
}

// sharedGrant is Grant in one transaction: the balance and held it reads are the
// latest of every replica (the writers run one at a time), so a correction is
// checked against what runs hold now without a hold of its own.
func (a *Accounts) sharedGrant(ctx context.Context, orgID string, amount agentd.Micros, by *agentd.Principal) (State, error) {
	g := newGrant(orgID, amount, by, a.clock.Now())
	err := a.db.Tx(ctx, func(tx *store.Tx) error {
		bal, held, err := tx.Held(ctx, orgID)
		if err != nil {
			return err
		}
		if avail := max(bal-held, 0); amount < 0 && -amount > avail {
			return correctionTooLarge(amount, avail)
		}
		next, err := granted(bal, amount)
		if err != nil {
			return err
		}
		return recordGrant(ctx, tx, g, next, by)
	})
	if err != nil {
		return State{}, err
	}
	return a.sharedState(ctx, orgID)
}
