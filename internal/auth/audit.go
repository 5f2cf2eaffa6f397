package auth

import (
	"context"

	"github.com/agentd/agentd"
)

// AuditPage returns one page of the audit trail as p may read it (f's cursor and
// limit; store.DB.AuditPage): an operator reads every organization's entries, or
// those of org (an id or a name) when it is not ""; an admin reads its own
// organization's, and naming another organization is EForbidden; any other key is
// EForbidden. Each owner of state writes its own changes' entries; who may read
// them is an authority over the organization, which this package decides.
func (s *Service) AuditPage(ctx context.Context, p *agentd.Principal, org string, f agentd.AuditFilter) ([]agentd.AuditEntry, string, error) {
	mine := AuthorityOf(p.Scopes)
	if mine < AuthorityAdmin {
		return nil, "", agentd.Errorf(agentd.EForbidden, "this key lacks the %q scope", agentd.ScopeAdmin)
	}
	f.OrgID = p.OrgID
	switch {
	case org != "" && org != p.OrgID && org != p.OrgName:
		if mine < AuthorityOperator {
			return nil, "", agentd.Errorf(agentd.EForbidden, "only an operator key can read another organization's audit trail")
		}
		o, err := s.db.Org(ctx, org)
		if err != nil {
			return nil, "", err
		}
		f.OrgID = o.ID
	case org == "" && mine == AuthorityOperator:
		f.OrgID = "" // every organization
	}
	return s.db.AuditPage(ctx, f)
}
