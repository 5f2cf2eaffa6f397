package agents

import (
	"context"

	"github.com/agentd/agentd"
)

// loadFor is load as p may see it: an agent of p's organization that p's key
// may use (agentd.Principal.MayUse), else EForbidden naming it. Every method that
// takes a principal and names an agent goes through it, so a key's allow-list
// is decided here, by the owner of agents, and not in each HTTP handler.
func (s *Service) loadFor(ctx context.Context, p *agentd.Principal, idOrName string, includeInactive bool) (*agentd.Agent, error) {
	if p.Restricted() && !isID(idOrName) {
		// By name: refuse before reading, so that a restricted key learns
		// nothing about agents it may not use.
		if err := p.CheckAgent(agentd.NormalizeName(idOrName)); err != nil {
			return nil, err
		}
	}
	a, err := s.load(ctx, p.OrgID, idOrName, includeInactive)
	if err != nil {
		return nil, err
	}
	if err := p.CheckAgent(a.Name); err != nil {
		return nil, err
	}
	return a, nil
}

func isID(idOrName string) bool { return len(idOrName) > 6 && idOrName[:6] == "agent-" }
