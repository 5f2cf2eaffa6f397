package billing

import (
	"context"
	"fmt"
	"time"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/internal/clock"
	"github.com/agentd/agentd/internal/store"
)

// Ledger answers questions about organizations and the money record: the usage
// endpoints, organizations and `agentd check`'s view of budgets.
type Ledger struct {
	db    *store.DB
	clock clock.Clock
}

// NewLedger returns the ledger queries over db.
func NewLedger(db *store.DB, clk clock.Clock) *Ledger { return &Ledger{db: db, clock: clk} }

// Page returns one page of ledger rows (store.DB.LedgerPage).
func (l *Ledger) Page(ctx context.Context, f agentd.LedgerFilter) ([]agentd.LedgerRow, string, error) {
	return l.db.LedgerPage(ctx, f)
}

// Summary sums an organization's daily rollups by group (store.DB.UsageSummary).
func (l *Ledger) Summary(ctx context.Context, orgID, groupBy, fromDay, toDay string) ([]agentd.UsageRow, error) {
	return l.db.UsageSummary(ctx, orgID, groupBy, fromDay, toDay)
}

// Totals sums an organization's daily rollups (store.DB.UsageTotals).
func (l *Ledger) Totals(ctx context.Context, orgID, fromDay, toDay, agentID string) (*agentd.UsageTotals, error) {
	return l.db.UsageTotals(ctx, orgID, fromDay, toDay, agentID)
}

// Org returns the organization whose id or name is idOrName.
func (l *Ledger) Org(ctx context.Context, idOrName string) (*agentd.Org, error) {
	return l.db.Org(ctx, idOrName)
}

// CreateOrg creates an organization with a zero balance, audited (org.create) as
// made by by (nil: agentd itself) in the same transaction.
func (l *Ledger) CreateOrg(ctx context.Context, name string, by *agentd.Principal) (*agentd.Org, error) {
	o := &agentd.Org{ID: agentd.NewID("org"), Name: name, CreatedAt: l.clock.Now().UTC().Truncate(time.Microsecond)}
	e := agentd.AuditEntry{CreatedAt: o.CreatedAt, OrgID: o.ID, Action: agentd.AuditOrgCreate,
		TargetType: agentd.TargetOrg, TargetID: o.ID, Detail: agentd.AuditDetail(map[string]any{"name": name})}
	if err := l.db.Tx(ctx, func(tx *store.Tx) error {
		if err := tx.CreateOrg(ctx, o); err != nil {
			return err
		}
		return tx.Audit(ctx, e.By(by))
	}); err != nil {
		return nil, err
	}
	return o, nil
}

// EnsureOrg returns the organization named name, creating it if it does not exist
// (as agentd itself, in the audit trail).
func (l *Ledger) EnsureOrg(ctx context.Context, name string) (*agentd.Org, error) {
	o, err := l.db.Org(ctx, name)
	if agentd.ErrorCode(err) == agentd.ENotFound {
		if o, err = l.CreateOrg(ctx, name, nil); agentd.ErrorCode(err) == agentd.EAlreadyExists {
			o, err = l.db.Org(ctx, name)
		}
	}
	return o, err
}

// Check verifies what billing decides from the database, for `agentd check`: for
// every key with a budget, what billing counts as spent in the budget's current
// period (the key's rollups from the period's first day) equals the key's raw
// ledger rows in that period, wherever retention has left the period whole; and,
// on PostgreSQL, where holds are rows (NewShared), that what every organization
// and key holds is the sum of its open holds and that no organization holds more
// than its balance. It returns one line per disagreement.
func Check(ctx context.Context, db *store.DB, now time.Time) (problems []string, err error) {
	if db.Dialect() == "postgres" {
		if problems, err = db.CheckHolds(ctx); err != nil {
			return nil, fmt.Errorf("billing: check holds: %w", err)
		}
	}
	orgs, err := db.Orgs(ctx)
	if err != nil {
		return nil, err
	}
	for _, o := range orgs {
		keys, err := db.Keys(ctx, o.ID)
		if err != nil {
			return nil, err
		}
		for _, k := range keys {
			if !k.Budget.Set {
				continue
			}
			start := PeriodStart(k.Budget.Period, now)
			whole, err := db.LedgerWhole(ctx, o.ID, start)
			if err != nil {
				return nil, err
			}
			if !whole {
				continue
			}
			counted, err := db.KeySpent(ctx, k.ID, fromDay(start))
			if err != nil {
				return nil, err
			}
			rows, err := db.LedgerSpent(ctx, k.ID, start)
			if err != nil {
				return nil, err
			}
			if counted != rows {
				problems = append(problems, fmt.Sprintf("key %s (org %s): its %s budget counts %s credits spent since %s, but its ledger rows since then sum to %s",
					k.ID, o.Name, k.Budget.Period, counted, periodLabel(start), rows))
			}
		}
	}
	return problems, nil
}

func periodLabel(start time.Time) string {
	if start.IsZero() {
		return "the key was created"
	}
	return start.Format(time.DateOnly)
}
