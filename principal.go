package agentd

import "slices"

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
