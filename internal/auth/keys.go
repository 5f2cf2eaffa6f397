package auth

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/internal/clock"
	"github.com/agentd/agentd/internal/store"
)

// Authority ranks what a key may do to other keys. The order is strict: no key
// mints, revokes, re-budgets or shares the sessions of a key above its own.
type Authority int

// Authorities, lowest first.
const (
	// AuthorityNone: a key that manages no keys (run, usage, agents:*).
	AuthorityNone Authority = iota
	// AuthorityAdmin manages the keys of its own organization, up to admin.
	AuthorityAdmin
	// AuthorityOperator manages every key of every organization.
	AuthorityOperator
)

// AuthorityOf is the authority that scopes carry.
func AuthorityOf(scopes []agentd.Scope) Authority {
	a := AuthorityNone
	for _, s := range scopes {
		switch s {
		case agentd.ScopeOperator:
			return AuthorityOperator
		case agentd.ScopeAdmin:
			a = AuthorityAdmin
		}
	}
	return a
}

// Service manages keys.
type Service struct {
	db    *store.DB
	auth  *Authenticator
	clock clock.Clock
}

// NewService returns the key service over db; changes to keys evict from a (and,
// through notifications, from the Authenticators of every replica).
func NewService(db *store.DB, a *Authenticator, clk clock.Clock) *Service {
	return &Service{db: db, auth: a, clock: clk}
}

// KeySpec is a key to mint.
type KeySpec struct {
	Name string
	// Scopes default to run. Each must be one p holds.
	Scopes []agentd.Scope
	// Org is the organization (id or name) the key belongs to; "" for p's own.
	// Only an operator names another.
	Org string
	// Owner scopes the key's sessions; "" makes the key its own owner. Keys that
	// share an owner share sessions, so an owner already used by keys above p's
	// authority, or one shaped like a key's own identity ("key-…"), is refused.
	Owner  string
	Budget agentd.Budget
	// Access is the key's allow-list of agents and expiry (checkAccess).
	Access KeyAccess
}

// MaxOwnerLen bounds an owner.
const MaxOwnerLen = 128

// Mint creates a key as p and returns it with its secret, which is never stored
// and never shown again.
func (s *Service) Mint(ctx context.Context, p *agentd.Principal, spec KeySpec) (*agentd.Key, string, error) {
	mine := AuthorityOf(p.Scopes)
	if mine < AuthorityAdmin {
		return nil, "", agentd.Errorf(agentd.EForbidden, "this key lacks the %q scope", agentd.ScopeAdmin)
	}
	name := strings.TrimSpace(spec.Name)
	if name == "" || len(spec.Name) > 128 {
		return nil, "", agentd.Invalid("name is required: 1 to 128 characters", "missing", "body", "name")
	}
	scopes := spec.Scopes
	if scopes == nil {
		scopes = []agentd.Scope{agentd.ScopeRun}
	}
	if len(scopes) == 0 {
		return nil, "", agentd.Invalid("scopes must name at least one scope", "too_short", "body", "scopes")
	}
	for i, sc := range scopes {
		if !agentd.ValidScope(sc) {
			return nil, "", agentd.Invalid("unknown scope "+string(sc)+"; scopes are operator, admin, agents:write, agents:read, run, usage", "enum", "body", "scopes", i)
		}
		if !p.Can(sc) {
			return nil, "", agentd.Errorf(agentd.EForbidden, "a key cannot grant the %q scope it does not hold", sc)
		}
	}
	orgID, orgName := p.OrgID, p.OrgName
	if spec.Org != "" && spec.Org != p.OrgID && spec.Org != p.OrgName {
		if mine < AuthorityOperator {
			return nil, "", agentd.Errorf(agentd.EForbidden, "only an operator key can create keys for another organization")
		}
		org, err := s.db.Org(ctx, spec.Org)
		if err != nil {
			return nil, "", err
		}
		orgID, orgName = org.ID, org.Name
	}
	if len(spec.Owner) > MaxOwnerLen {
		return nil, "", agentd.Invalid(fmt.Sprintf("owner must be at most %d characters", MaxOwnerLen), "string_too_long", "body", "owner")
	}
	if strings.HasPrefix(spec.Owner, "key-") {
		return nil, "", agentd.Invalid("owner may not start with \"key-\": that is the form of a key's own identity, which belongs to that key alone", "value_error", "body", "owner")
	}
	access, err := checkAccess(p, spec.Access, s.clock.Now())
	if err != nil {
		return nil, "", err
	}
	secret := Mint()
	k := &agentd.Key{
		ID: agentd.NewID("key"), OrgID: orgID, OrgName: orgName, Name: name, Prefix: Prefix(secret), Hash: Hash(secret),
		Scopes: scopes, CreatedAt: s.clock.Now().UTC().Truncate(time.Microsecond), Budget: spec.Budget,
	}
	k.Agents, k.ExpiresAt = access.Agents, access.ExpiresAt
	k.Owner = k.ID
	if spec.Owner != "" {
		k.Owner = spec.Owner
	}
	err = s.db.Tx(ctx, func(tx *store.Tx) error {
		if spec.Owner != "" {
			// Sharing an owner shares sessions: only with keys within p's authority.
			sharing, err := tx.KeysOfOwner(ctx, orgID, spec.Owner)
			if err != nil {
				return err
			}
			for _, o := range sharing {
				if AuthorityOf(o.Scopes) > mine {
					return agentd.Errorf(agentd.EForbidden, "owner %q is used by a key with more authority than this one; choose another owner", spec.Owner)
				}
			}
		}
		if err := tx.CreateKey(ctx, k); err != nil {
			return err
		}
		return tx.Audit(ctx, keyCreated(k, false).By(p))
	})
	if err != nil {
		return nil, "", err
	}
	return k, secret, nil
}

// keyCreated is the audit entry of k's creation: what the key may do, never its
// secret or hash.
func keyCreated(k *agentd.Key, bootstrap bool) agentd.AuditEntry {
	detail := map[string]any{"name": k.Name, "scopes": k.Scopes, "owner": k.Owner, "budget": nil, "budget_period": k.Budget.Period}
	if k.Budget.Set {
		detail["budget"] = k.Budget.Limit
	}
	if k.Budget.Period == "" {
		detail["budget_period"] = agentd.PeriodNone
	}
	accessDetail(detail, KeyAccess{Agents: k.Agents, ExpiresAt: k.ExpiresAt})
	if bootstrap {
		detail["bootstrap"] = true
	}
	return agentd.AuditEntry{CreatedAt: k.CreatedAt, OrgID: k.OrgID, Action: agentd.AuditKeyCreate,
		TargetType: agentd.TargetKey, TargetID: k.ID, Detail: agentd.AuditDetail(detail)}
}

// Action is what a key does to another.
type Action int

// Actions on keys.
const (
	// Revoke: a key of p's authority or below (an admin may revoke a fellow admin,
	// or itself).
	Revoke Action = iota
	// Budget: a key strictly below p's authority, or any key for an operator: a
	// budget is set by someone the key answers to, so no key lifts its own limit
	// or a peer's.
	Budget
	// Limits: as Budget, for a key's own rate limits (SetRateLimits).
	Limits
	// Access: as Budget, for a key's allow-list of agents and expiry (SetAccess).
	Access
)

// Manage returns the key named id if p may do act to it: a key of p's organization
// (any organization for an operator) within p's authority for act. Another
// organization's key is ENotFound, as if it did not exist; one beyond p's authority
// is EForbidden.
func (s *Service) Manage(ctx context.Context, p *agentd.Principal, id string, act Action) (*agentd.Key, error) {
	mine := AuthorityOf(p.Scopes)
	if mine < AuthorityAdmin {
		return nil, agentd.Errorf(agentd.EForbidden, "this key lacks the %q scope", agentd.ScopeAdmin)
	}
	k, err := s.db.KeyByID(ctx, id)
	if err != nil {
		return nil, err
	}
	if k.OrgID != p.OrgID && mine < AuthorityOperator {
		return nil, agentd.Errorf(agentd.ENotFound, "key %q not found", id)
	}
	theirs := AuthorityOf(k.Scopes)
	if theirs > mine {
		return nil, agentd.Errorf(agentd.EForbidden, "key %q has more authority than this key; only an operator key can change it", id)
	}
	if (act == Budget || act == Limits || act == Access) && theirs == mine && mine < AuthorityOperator {
		what := "budget is"
		switch act {
		case Limits:
			what = "rate limits are"
		case Access:
			what = "agents and expiry are"
		}
		return nil, agentd.Errorf(agentd.EForbidden, "key %q has as much authority as this key; its %s set by a key above it", id, what)
	}
	return k, nil
}

// Revoke revokes the key id as p (see Manage for who may). From the commit on, the
// key is refused on every request.
func (s *Service) Revoke(ctx context.Context, p *agentd.Principal, id string) error {
	k, err := s.Manage(ctx, p, id, Revoke)
	if err != nil {
		return err
	}
	now := s.clock.Now()
	detail := map[string]any{"name": k.Name}
	if k.Revoked() {
		detail["already_revoked"] = true // the first revocation's time stays
	}
	e := agentd.AuditEntry{CreatedAt: now, OrgID: k.OrgID, Action: agentd.AuditKeyRevoke,
		TargetType: agentd.TargetKey, TargetID: k.ID, Detail: agentd.AuditDetail(detail)}
	return s.db.Tx(ctx, func(tx *store.Tx) error {
		if err := tx.RevokeKey(ctx, k.ID, now.UnixMicro()); err != nil {
			return err
		}
		if err := tx.Audit(ctx, e.By(p)); err != nil {
			return err
		}
		return s.changed(ctx, tx, k.ID)
	})
}

// changed makes every replica evict key id once tx commits, this one at once (its
// own notification comes back later, through the database). Every change to a
// key that a Principal reflects must call it in the change's transaction; today
// that is revocation, the key's rate limits (SetRateLimits) and its agents and
// expiry (SetAccess); scopes, owner
// and organization never change, and budgets are billing's, not the principal's.
func (s *Service) changed(ctx context.Context, tx *store.Tx, id string) error {
	tx.OnCommit(func() { s.auth.Evict(id) })
	return tx.Notify(ctx, keyTopic, id)
}

// List lists the keys of p's organization, or as an operator of the organization
// org (id or name; "" for p's own).
func (s *Service) List(ctx context.Context, p *agentd.Principal, org string) ([]*agentd.Key, error) {
	mine := AuthorityOf(p.Scopes)
	if mine < AuthorityAdmin {
		return nil, agentd.Errorf(agentd.EForbidden, "this key lacks the %q scope", agentd.ScopeAdmin)
	}
	orgID := p.OrgID
	if org != "" && org != p.OrgID && org != p.OrgName {
		if mine < AuthorityOperator {
			return nil, agentd.Errorf(agentd.EForbidden, "only an operator key can list another organization's keys")
		}
		o, err := s.db.Org(ctx, org)
		if err != nil {
			return nil, err
		}
		orgID = o.ID
	}
	keys, err := s.db.Keys(ctx, orgID)
	if keys == nil && err == nil {
		keys = []*agentd.Key{}
	}
	return keys, err
}

// Bootstrap makes sure someone can sign in as an operator of org, the default
// organization. With secret set (AGENTD_BOOTSTRAP_KEY), that key exists: it is
// created if new, even beside other keys, which is how a lost operator key is
// replaced; a key that was revoked stays revoked (its secret may have leaked), and
// note says so. With secret "", on the first start only (no key exists yet), a new
// operator key is minted and returned as minted, to be shown once.
func (s *Service) Bootstrap(ctx context.Context, org *agentd.Org, secret string) (minted, note string, err error) {
	if secret != "" {
		k, err := s.db.KeyByHash(ctx, Hash(secret))
		switch {
		case err == nil && k.Revoked():
			return "", "AGENTD_BOOTSTRAP_KEY names a key that was revoked; it stays revoked. Set AGENTD_BOOTSTRAP_KEY to a new secret (at least 16 characters) and restart to add a new operator key.", nil
		case err == nil:
			return "", "", nil
		case agentd.ErrorCode(err) != agentd.ENotFound:
			return "", "", err
		}
	} else {
		n, err := s.db.CountKeys(ctx)
		if err != nil || n > 0 {
			return "", "", err
		}
		secret = Mint()
		minted = secret
	}
	k := &agentd.Key{
		ID: agentd.NewID("key"), OrgID: org.ID, OrgName: org.Name, Name: "bootstrap", Prefix: Prefix(secret), Hash: Hash(secret),
		Scopes: []agentd.Scope{agentd.ScopeOperator}, CreatedAt: s.clock.Now().UTC().Truncate(time.Microsecond),
	}
	k.Owner = k.ID
	// Replicas starting together all try this: the count and the insert share one
	// transaction, which the writers of all replicas run one at a time, so exactly
	// one operator key is minted; a given secret's key is created once and the
	// others find it (its hash is unique).
	err = s.db.Tx(ctx, func(tx *store.Tx) error {
		if minted != "" {
			if n, err := tx.CountKeys(ctx); err != nil || n > 0 {
				minted = ""
				return err
			}
		}
		if err := tx.CreateKey(ctx, k); err != nil {
			return err
		}
		return tx.Audit(ctx, keyCreated(k, true).By(nil)) // by agentd itself
	})
	if agentd.ErrorCode(err) == agentd.EAlreadyExists && minted == "" {
		return "", "", nil
	}
	if err != nil {
		return "", "", err
	}
	return minted, "", nil
}
