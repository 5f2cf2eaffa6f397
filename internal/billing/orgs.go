package billing

import (
	"context"

	"github.com/agentd/agentd"
)

// OrgAccount is an organization with its money as agentd sees it now.
type OrgAccount struct {
	Org *agentd.Org
	State
}

// Orgs returns a page of up to limit organizations in name order after cursor
// ("" for the first page), each with its balance and what runs hold of it now,
// and the cursor of the next page ("" after the last). The names come from the
// database; the money from State, so that in memory (one node) the balance is the
// mirror's and the held amount the holds of runs in flight.
func (a *Accounts) Orgs(ctx context.Context, cursor string, limit int) ([]OrgAccount, string, error) {
	orgs, next, err := a.db.OrgsPage(ctx, cursor, limit)
	if err != nil {
		return nil, "", err
	}
	out := make([]OrgAccount, len(orgs))
	for i, o := range orgs {
		st, err := a.State(ctx, o.ID)
		if err != nil {
			return nil, "", err
		}
		o.Balance = st.Balance
		out[i] = OrgAccount{Org: o, State: st}
	}
	return out, next, nil
}

// Grants returns a page of up to limit of orgID's credit grants and corrections,
// the newest first, after cursor ("" for the first page), and the cursor of the
// next page ("" after the last); see store.DB.CreditGrants.
func (l *Ledger) Grants(ctx context.Context, orgID, cursor string, limit int) ([]agentd.CreditGrant, string, error) {
	return l.db.CreditGrants(ctx, orgID, cursor, limit)
}
