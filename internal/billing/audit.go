package billing

import (
	"context"
	"time"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/internal/store"
)

// Billing's administrative changes are audited in their own transactions: credit
// grants (credits.grant), key budgets (key.update) and new organizations
// (org.create).

// newGrant is a grant of amount to orgID by the key of by (nil: agentd itself).
func newGrant(orgID string, amount agentd.Micros, by *agentd.Principal, now time.Time) *store.Grant {
	g := &store.Grant{ID: agentd.NewID("grant"), OrgID: orgID, Amount: amount, Created: now.UnixMicro()}
	if by != nil {
		g.KeyID = by.KeyID
	}
	return g
}

// recordGrant writes g, the organization's new balance and g's audit entry in tx.
func recordGrant(ctx context.Context, tx *store.Tx, g *store.Grant, balance agentd.Micros, by *agentd.Principal) error {
	if err := tx.GrantCredits(ctx, g, balance); err != nil {
		return err
	}
	detail := map[string]any{"grant_id": g.ID, "amount": g.Amount, "balance": balance}
	if g.Amount < 0 {
		detail["correction"] = true
	}
	e := agentd.AuditEntry{CreatedAt: time.UnixMicro(g.Created), OrgID: g.OrgID, Action: agentd.AuditCreditsGrant,
		TargetType: agentd.TargetOrg, TargetID: g.OrgID, Detail: agentd.AuditDetail(detail)}
	return tx.Audit(ctx, e.By(by))
}

// budgetChanged is the audit entry of keyID's budget set to b (credits, or null
// for none, per period).
func budgetChanged(orgID, keyID string, b agentd.Budget, now time.Time) agentd.AuditEntry {
	detail := map[string]any{"budget": nil, "budget_period": b.Period}
	if b.Set {
		detail["budget"] = b.Limit
	}
	return agentd.AuditEntry{CreatedAt: now, OrgID: orgID, Action: agentd.AuditKeyUpdate,
		TargetType: agentd.TargetKey, TargetID: keyID, Detail: agentd.AuditDetail(detail)}
}
