package auth

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/internal/store"
)

// MaxKeyAgents bounds a key's allow-list of agents.
const MaxKeyAgents = 100

// KeyAccess is what a key may reach: its allow-list of agents (normalized names;
// empty for every agent of its organization) and its expiry (nil: never).
type KeyAccess struct {
	Agents    []string
	ExpiresAt *time.Time
}

// checkAccess normalizes a as p grants it at now. Each name must normalize to a
// valid agent name (agents that do not exist yet may be named). A key cannot
// grant what it lacks: a key with an allow-list grants a non-empty subset of it,
// and a key that expires grants an expiry no later than its own (its own when
// none is asked). An expiry must be in the future.
func checkAccess(p *agentd.Principal, a KeyAccess, now time.Time) (KeyAccess, error) {
	var names []string
	if len(a.Agents) > MaxKeyAgents {
		return a, agentd.Invalid(fmt.Sprintf("agents may name at most %d agents", MaxKeyAgents), "too_long", "body", "agents")
	}
	for i, n := range a.Agents {
		nn := agentd.NormalizeName(n)
		if nn == "" || len(nn) > 64 {
			return a, agentd.Invalid(fmt.Sprintf("agents[%d] %q is not an agent name", i, n), "value_error", "body", "agents", i)
		}
		if !p.MayUse(nn) {
			return a, agentd.Errorf(agentd.EForbidden, "a key cannot grant agent %q, which it may not use itself", nn)
		}
		if !slices.Contains(names, nn) {
			names = append(names, nn)
		}
	}
	if len(names) == 0 && p.Restricted() {
		return a, agentd.Errorf(agentd.EForbidden, "this key is limited to agents %v: the keys it manages must name some of them in agents", p.Agents)
	}
	a.Agents = names
	if a.ExpiresAt != nil {
		t := a.ExpiresAt.UTC().Truncate(time.Microsecond)
		if !t.After(now) {
			return a, agentd.Invalid("expires_at must be in the future", "value_error", "body", "expires_at")
		}
		a.ExpiresAt = &t
	}
	if !p.ExpiresAt.IsZero() && (a.ExpiresAt == nil || a.ExpiresAt.After(p.ExpiresAt)) {
		if a.ExpiresAt != nil {
			return a, agentd.Errorf(agentd.EForbidden, "a key cannot grant an expiry later than its own (%s)", p.ExpiresAt.UTC().Format(time.RFC3339))
		}
		t := p.ExpiresAt
		a.ExpiresAt = &t
	}
	return a, nil
}

// accessDetail is the audit detail of a key's access.
func accessDetail(detail map[string]any, a KeyAccess) {
	detail["agents"] = a.Agents
	if a.Agents == nil {
		detail["agents"] = []string{}
	}
	detail["expires_at"] = nil
	if a.ExpiresAt != nil {
		detail["expires_at"] = a.ExpiresAt.UTC().Format(time.RFC3339Nano)
	}
}

// SetAccess sets key id's allow-list of agents and expiry to a, as p. Like a
// budget they bound the key, so they are set by a key above it (Manage with
// Access): no key lifts its own restriction or a peer's; and p grants only what
// it holds (checkAccess). A principal carries them, so the change evicts the key
// on every replica and applies from the next request on.
func (s *Service) SetAccess(ctx context.Context, p *agentd.Principal, id string, a KeyAccess) (*agentd.Key, error) {
	k, err := s.Manage(ctx, p, id, Access)
	if err != nil {
		return nil, err
	}
	now := s.clock.Now()
	if a, err = checkAccess(p, a, now); err != nil {
		return nil, err
	}
	detail := map[string]any{}
	accessDetail(detail, a)
	e := agentd.AuditEntry{CreatedAt: now, OrgID: k.OrgID, Action: agentd.AuditKeyUpdate,
		TargetType: agentd.TargetKey, TargetID: k.ID, Detail: agentd.AuditDetail(detail)}
	err = s.db.Tx(ctx, func(tx *store.Tx) error {
		if err := tx.SetKeyAccess(ctx, k.ID, a.Agents, a.ExpiresAt); err != nil {
			return err
		}
		if err := tx.Audit(ctx, e.By(p)); err != nil {
			return err
		}
		return s.changed(ctx, tx, k.ID)
	})
	if err != nil {
		return nil, err
	}
	k.Agents, k.ExpiresAt = a.Agents, a.ExpiresAt
	return k, nil
}

// CheckAccess checks a as SetAccess would for p now, so that a caller changing
// more than a key's access can refuse the caller's mistakes before it changes
// anything.
func (s *Service) CheckAccess(p *agentd.Principal, a KeyAccess) error {
	_, err := checkAccess(p, a, s.clock.Now())
	return err
}
