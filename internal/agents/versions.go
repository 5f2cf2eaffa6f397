package agents

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/internal/store"
)

// Versions: every configuration change stores an immutable version; the agent
// points at the active one. A draft is stored without moving the pointer, and
// activating a version moves only the pointer (a rollback or a promotion), so no
// version is ever written twice. A run may pin any stored version, drafts
// included, so that a team can try a draft before it serves; a run that pins
// none goes to the active version, or to the canary with its share.

// cacheKey names a compiled agent: its name and the version pinned (0: the active
// one, which a change of the pointer replaces).
type cacheKey struct {
	name    string
	version int
}

// configChanged reports whether spec changes a versioned field, so that applying
// it makes a new version.
func configChanged(spec Spec) bool {
	return spec.Model != nil || spec.MaxTokens != nil || spec.Temperature != nil || spec.Instructions != nil || spec.Demonstrations != nil ||
		spec.Tools != nil || spec.ResponseFormat != nil
}

// checkCanary validates a's canary inside the transaction that stores it: a
// percent from 0 to 100 and, when it was just set (given), a stored version other
// than the active one.
func checkCanary(ctx context.Context, tx *store.Tx, a *agentd.Agent, given bool) error {
	c := a.Canary
	if c == nil {
		return nil
	}
	if math.IsNaN(c.Percent) || c.Percent < 0 || c.Percent > 100 {
		return agentd.Invalid("canary percent must be between 0 and 100", "value_error", "body", "canary", "percent")
	}
	if c.Version == a.Version.Number {
		return agentd.Invalid(fmt.Sprintf("canary version %d is the active version; a canary needs another one", c.Version), "value_error", "body", "canary", "version")
	}
	if !given {
		return nil
	}
	if _, err := tx.AgentVersion(ctx, a.OrgID, a.ID, c.Version); agentd.ErrorCode(err) == agentd.ENotFound {
		return agentd.Invalid(fmt.Sprintf("canary version %d does not exist (GET /api/v3/agents/%s/versions lists them)", c.Version, a.Name), "value_error", "body", "canary", "version")
	} else if err != nil {
		return err
	}
	return nil
}

// Versions returns the agent of p's organization named by idOrName (active or
// not) and one page of its versions, newest first, with the next page's cursor.
func (s *Service) Versions(ctx context.Context, p *agentd.Principal, idOrName, cursor string, limit int) (*agentd.Agent, []agentd.Version, string, error) {
	a, err := s.loadFor(ctx, p, idOrName, true)
	if err != nil {
		return nil, nil, "", err
	}
	vs, next, err := s.db.VersionsPage(ctx, p.OrgID, a.ID, cursor, limit)
	if err != nil {
		return nil, nil, "", err
	}
	return a, vs, next, nil
}

// Version returns the agent of p's organization named by idOrName with version n
// in the place of its active version, and the number of the active one.
func (s *Service) Version(ctx context.Context, p *agentd.Principal, idOrName string, n int) (*agentd.Agent, int, error) {
	a, err := s.loadFor(ctx, p, idOrName, true)
	if err != nil {
		return nil, 0, err
	}
	active := a.Version.Number
	if n != active {
		v, err := s.db.AgentVersion(ctx, p.OrgID, a.ID, n)
		if err != nil {
			return nil, 0, err
		}
		a.Version = *v
	}
	return a, active, nil
}

// AddVersion stores spec's configuration as a new version of the agent of p's
// organization named by idOrName. With activate it is Update; without, the
// version is a draft: stored, served to runs that pin it, but not active. A draft
// carries configuration only: a name, description, status, conversation saving
// or canary is refused. It returns the agent with the new version in the place
// of the active one.
func (s *Service) AddVersion(ctx context.Context, p *agentd.Principal, idOrName string, spec Spec, activate bool) (*agentd.Agent, error) {
	if activate {
		return s.Update(ctx, p, idOrName, spec)
	}
	for _, f := range []struct {
		name string
		set  bool
	}{
		{"agent_name", spec.Name != nil}, {"agent_description", spec.Description != nil}, {"status", spec.Status != nil},
		{"conversation_saving_enabled", spec.ConversationSaving != nil}, {"canary", spec.Canary != nil || spec.RemoveCanary},
	} {
		if f.set {
			return nil, agentd.Invalid(f.name+" belongs to the agent, not to a version: a draft (activate false) stores configuration only; PATCH the agent to change it", "value_error", "body", f.name)
		}
	}
	if !configChanged(spec) {
		return nil, agentd.Invalid("a version needs at least one configuration field (model, max_token, temperature, instructions, demonstrations, tools, response_format)", "missing", "body")
	}
	a, err := s.loadFor(ctx, p, idOrName, true)
	if err != nil {
		return nil, err
	}
	old := *a
	var errs violations
	if err := s.apply(a, spec, &errs); err != nil {
		return nil, err
	}
	now := s.now()
	a.Version.CreatedAt = now
	a.Version.Note, a.Version.AuthorKeyID, a.Version.EvalStatus = "", p.KeyID, ""
	if spec.Note != nil {
		a.Version.Note = *spec.Note
	}
	if err := s.db.Tx(ctx, func(tx *store.Tx) error {
		if err := tx.AddVersion(ctx, a.OrgID, a.ID, &a.Version); err != nil {
			return err
		}
		e := auditUpdated(&old, a, true)
		e.CreatedAt = now
		e.Detail = agentd.AuditDetail(map[string]any{"name": a.Name, "changed": changedFields(&old, a), "version": a.Version.Number, "draft": true})
		if err := tx.Audit(ctx, e.By(p)); err != nil {
			return err
		}
		return changed(ctx, tx, a.OrgID)
	}); err != nil {
		return nil, err
	}
	s.invalidate(a.OrgID)
	return a, nil
}

// ActivateVersion makes version n the active version of the agent of p's
// organization named by idOrName: a rollback to an older version or the
// promotion of a newer one (a draft, a canary). Only the pointer moves; no
// version is made. A canary on n is removed (n now serves everyone). With
// requireEvals, a version whose evaluation has not passed is EConflict. It is
// audited as agent.activate_version; activating the active version changes
// nothing and records nothing.
func (s *Service) ActivateVersion(ctx context.Context, p *agentd.Principal, idOrName string, n int, requireEvals bool) (*agentd.Agent, error) {
	a, err := s.loadFor(ctx, p, idOrName, true)
	if err != nil {
		return nil, err
	}
	now := s.now()
	err = s.db.Tx(ctx, func(tx *store.Tx) error {
		v, err := tx.AgentVersion(ctx, a.OrgID, a.ID, n)
		if err != nil {
			return err
		}
		if requireEvals && v.EvalStatus != agentd.EvalPassed {
			status := v.EvalStatus
			if status == "" {
				status = "never evaluated"
			}
			return agentd.Errorf(agentd.EConflict, "version %d of agent %q has not passed its evaluation (%s); activate it without require_evals, or evaluate it first", n, a.Name, status)
		}
		if n == a.Version.Number {
			return nil
		}
		previous := a.Version.Number
		a.Version = *v
		a.UpdatedAt = now
		if a.Canary != nil && a.Canary.Version == n {
			a.Canary = nil
		}
		if err := tx.UpdateAgent(ctx, a, false); err != nil {
			return err
		}
		if err := tx.Audit(ctx, auditActivatedVersion(a, previous, requireEvals, now).By(p)); err != nil {
			return err
		}
		return changed(ctx, tx, a.OrgID)
	})
	if err != nil {
		return nil, err
	}
	s.invalidate(a.OrgID)
	return a, nil
}

// auditActivatedVersion is the audit entry of making a.Version active in place of
// version previous.
func auditActivatedVersion(a *agentd.Agent, previous int, requireEvals bool, now time.Time) agentd.AuditEntry {
	return agentd.AuditEntry{CreatedAt: now, OrgID: a.OrgID, Action: agentd.AuditAgentActivateVersion,
		TargetType: agentd.TargetAgent, TargetID: a.ID, Detail: agentd.AuditDetail(map[string]any{
			"name": a.Name, "version": a.Version.Number, "previous_version": previous, "require_evals": requireEvals,
		})}
}

// ResolveFor is Resolve for one run: the version pinned (pin > 0, any stored
// version, drafts included; an unknown one is ENotFound), else the canary's
// version when the run falls in its share, else the active version. With a
// session id the share is decided by a hash of the agent and the session, so a
// conversation keeps its version while the canary's percent stays; without,
// at random per run.
func (s *Service) ResolveFor(ctx context.Context, orgID, name string, pin int, sessionID string) (*Compiled, error) {
	c, err := s.resolve(ctx, orgID, name, pin)
	if err != nil || pin != 0 {
		return c, err
	}
	canary := c.Agent.Canary
	if canary == nil || canary.Percent <= 0 {
		return c, nil
	}
	bucket := rand.IntN(agentd.CanaryBuckets)
	if sessionID != "" {
		bucket = Bucket(c.Agent.ID, sessionID)
	}
	if !canary.InCanary(bucket) {
		return c, nil
	}
	cc, err := s.resolve(ctx, orgID, name, canary.Version)
	if agentd.ErrorCode(err) == agentd.ENotFound {
		return c, nil // the canary's version went with a change that raced this run: the active one serves
	}
	return cc, err
}

// Bucket is the canary bucket of a session of an agent, 0 ≤ Bucket < CanaryBuckets:
// the same for every run of the session.
func Bucket(agentID, sessionID string) int {
	// FNV-1a over agentID, a zero byte and sessionID, without allocating.
	const offset, prime = 14695981039346656037, 1099511628211
	h := uint64(offset)
	for i := 0; i < len(agentID); i++ {
		h = (h ^ uint64(agentID[i])) * prime
	}
	h *= prime // ^ 0
	for i := 0; i < len(sessionID); i++ {
		h = (h ^ uint64(sessionID[i])) * prime
	}
	return int(h % agentd.CanaryBuckets)
}
