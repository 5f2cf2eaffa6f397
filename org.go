package agentd

import "time"

// Org is an organization: a tenant with a balance. Every key, agent, session and
// ledger row belongs to exactly one.
type Org struct {
	ID        string
	Name      string
	Balance   Micros
	CreatedAt time.Time
}

// DefaultOrgName is the organization the bootstrap operator key belongs to.
const DefaultOrgName = "default"

// Key is a stored API key: never its secret, only the secret's SHA-256 and a
// display prefix.
type Key struct {
	ID      string
	OrgID   string
	OrgName string
	Name    string
	// Owner scopes sessions: keys of one owner share them. By default a key is its
	// own owner (Owner == ID).
	Owner     string
	Prefix    string
	Hash      string // hex SHA-256 of the secret
	Scopes    []Scope
	CreatedAt time.Time
	RevokedAt *time.Time // nil while the key is live
	Budget    Budget
	// RateLimits are the key's own rate limits; unset ones are the defaults.
	RateLimits RateLimits
	// Agents is the key's allow-list of agents, by normalized name; empty: every
	// agent of its organization (Principal.MayUse).
	Agents []string
	// ExpiresAt is when the key stops working, as if revoked; nil: never.
	ExpiresAt *time.Time
}

// Revoked reports whether the key has been revoked.
func (k *Key) Revoked() bool { return k.RevokedAt != nil }

// Expired reports whether the key has expired by now.
func (k *Key) Expired(now time.Time) bool { return k.ExpiresAt != nil && !now.Before(*k.ExpiresAt) }

// Budget is a key's spending limit per period. What the key has spent in a period is
// not stored beside it: it is the sum of the key's charges in the ledger for that
// period, so it cannot disagree with the ledger.
type Budget struct {
	Set    bool   // false: no budget; the key spends from its organization alone
	Limit  Micros // what the key may spend per Period, when Set
	Period Period
}

// Period is the window a budget counts spending over.
type Period string

// Budget periods: UTC calendar days and months, or the key's whole life.
const (
	PeriodNone    Period = "none"
	PeriodDaily   Period = "daily"
	PeriodMonthly Period = "monthly"
)

// Valid reports whether p names a period.
func (p Period) Valid() bool { return p == PeriodNone || p == PeriodDaily || p == PeriodMonthly }
