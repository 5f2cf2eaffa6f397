package agentd

import (
	"slices"
	"strings"
	"time"
)

// Scope is a permission carried by a key.
type Scope string

// Scopes. Operator is the service's owner (every organization); Admin manages one
// organization; the rest are narrow grants within an organization.
const (
	ScopeOperator    Scope = "operator"
	ScopeAdmin       Scope = "admin"
	ScopeAgentsRead  Scope = "agents:read"
	ScopeAgentsWrite Scope = "agents:write"
	ScopeRun         Scope = "run"
	ScopeUsage       Scope = "usage"
)

// AllScopes lists every scope, in order of decreasing power.
var AllScopes = []Scope{ScopeOperator, ScopeAdmin, ScopeAgentsWrite, ScopeAgentsRead, ScopeRun, ScopeUsage}

// ValidScope reports whether s names a scope.
func ValidScope(s Scope) bool { return slices.Contains(AllScopes, s) }

// Principal is who is calling: resolved from a key on every request.
type Principal struct {
	OrgID   string
	KeyID   string
	Owner   string // sessions are scoped by owner; keys of one owner share them
	Scopes  []Scope
	OrgName string
	// ClientIP and RequestID say where the request that presented the key came
	// from: the client's address and its request id. The API sets them on its own
	// copy of the principal for each request (a cached principal is shared); the
	// audit trail records them. "" outside a request.
	ClientIP  string
	RequestID string
	// RateLimits are the key's own rate limits (internal/ratelimit applies
	// them, the configured defaults where unset).
	RateLimits RateLimits
	// Agents is the key's allow-list (normalized names); empty: every agent of
	// the organization. MayUse decides; the owners of agents and runs call it.
	Agents []string
	// ExpiresAt is when the key expires (zero: never). auth refuses the key from
	// then on, checked at each request, also for a cached principal.
	ExpiresAt time.Time
}

// MayUse reports whether p may use (run, read, change, see the sessions and
// usage of) the agent with the normalized name: every agent unless p's key has
// an allow-list.
func (p *Principal) MayUse(agent string) bool {
	return len(p.Agents) == 0 || slices.Contains(p.Agents, agent)
}

// Restricted reports whether p's key is limited to an allow-list of agents:
// such a key calls no catalog model directly and reads only its agents.
func (p *Principal) Restricted() bool { return len(p.Agents) > 0 }

// CheckAgent is MayUse as an error: EForbidden naming the agent.
func (p *Principal) CheckAgent(agent string) error {
	if p.MayUse(agent) {
		return nil
	}
	return Errorf(EForbidden, "this key may not use agent %q: it is limited to %s", agent, strings.Join(p.Agents, ", "))
}

// Can reports whether p holds scope s, directly or through a broader one.
func (p *Principal) Can(s Scope) bool {
	for _, have := range p.Scopes {
		if have == s || have == ScopeOperator {
			return true
		}
		if have == ScopeAdmin && s != ScopeOperator {
			return true
		}
		if have == ScopeAgentsWrite && s == ScopeAgentsRead {
			return true
		}
	}
	return false
}
