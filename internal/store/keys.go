package store

import (
	"context"
	"database/sql"
	"errors"
	"strings"

	"github.com/agentd/agentd"
)

// CreateKey inserts a key.
func (t *Tx) CreateKey(ctx context.Context, k *agentd.Key) (err error) {
	defer wrap(&err, "store.CreateKey(%q)", k.Name)
	var budget any
	if k.Budget.Set {
		budget = int64(k.Budget.Limit)
	}
	period := k.Budget.Period
	if period == "" {
		period = agentd.PeriodNone
	}
	_, err = t.exec(ctx, `INSERT INTO api_keys (id, org_id, name, owner, prefix, hash, scopes, created_at, budget, budget_period, agents, expires_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		k.ID, k.OrgID, k.Name, k.Owner, k.Prefix, k.Hash, joinScopes(k.Scopes), micros(k.CreatedAt), budget, string(period),
		strings.Join(k.Agents, " "), expiresArg(k.ExpiresAt))
	if t.d.isUnique(err) {
		return agentd.Errorf(agentd.EAlreadyExists, "a key with this secret already exists")
	}
	return err
}

// RevokeKey marks a key revoked at at; revoking twice keeps the first time. An
// unknown key is ENotFound.
func (t *Tx) RevokeKey(ctx context.Context, id string, at int64) (err error) {
	defer wrap(&err, "store.RevokeKey(%q)", id)
	res, err := t.exec(ctx, `UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?`, at, id)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return agentd.Errorf(agentd.ENotFound, "key %q not found", id)
	}
	return nil
}

// SetKeyBudget stores a key's budget (limit and period) as billing decided it.
func (t *Tx) SetKeyBudget(ctx context.Context, keyID string, b agentd.Budget) (err error) {
	defer wrap(&err, "store.SetKeyBudget(%q)", keyID)
	var v any
	if b.Set {
		v = int64(b.Limit)
	}
	if b.Period == "" {
		b.Period = agentd.PeriodNone
	}
	res, err := t.exec(ctx, `UPDATE api_keys SET budget = ?, budget_period = ? WHERE id = ?`, v, string(b.Period), keyID)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return agentd.Errorf(agentd.ENotFound, "key %q not found", keyID)
	}
	return nil
}

const keyColumns = `k.id, k.org_id, o.name, k.name, k.owner, k.prefix, k.hash, k.scopes, k.created_at, k.revoked_at,
	k.budget, k.budget_period, ` + rateLimitColumns + `, ` + accessColumns

const keyFrom = ` FROM api_keys k JOIN orgs o ON o.id = k.org_id`

func scanKey(s interface{ Scan(...any) error }) (*agentd.Key, error) {
	var k agentd.Key
	var scopes, period string
	var created int64
	var revoked, budget sql.NullInt64
	var rl rateLimitsScan
	var acc accessScan
	if err := s.Scan(&k.ID, &k.OrgID, &k.OrgName, &k.Name, &k.Owner, &k.Prefix, &k.Hash, &scopes, &created, &revoked,
		&budget, &period, &rl.rpm, &rl.tpm, &rl.concurrent, &acc.agents, &acc.expires); err != nil {
		return nil, err
	}
	k.Agents, k.ExpiresAt = acc.agentList(), nullTime(acc.expires)
	k.RateLimits = rl.limits()
	k.CreatedAt, k.RevokedAt = fromMicros(created), nullTime(revoked)
	k.Budget = agentd.Budget{Set: budget.Valid, Limit: agentd.Micros(budget.Int64), Period: agentd.Period(period)}
	k.Scopes = splitScopes(scopes)
	return &k, nil
}

// KeyByHash returns the key with the given secret hash, revoked or not.
func (db *DB) KeyByHash(ctx context.Context, hash string) (_ *agentd.Key, err error) {
	defer wrap(&err, "store.KeyByHash")
	k, err := scanKey(db.queryRow(ctx, `SELECT `+keyColumns+keyFrom+` WHERE k.hash = ?`, hash))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, agentd.Errorf(agentd.ENotFound, "key not found")
	}
	return k, err
}

// KeyByID returns a key by id.
func (db *DB) KeyByID(ctx context.Context, id string) (_ *agentd.Key, err error) {
	defer wrap(&err, "store.KeyByID(%q)", id)
	k, err := scanKey(db.queryRow(ctx, `SELECT `+keyColumns+keyFrom+` WHERE k.id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, agentd.Errorf(agentd.ENotFound, "key %q not found", id)
	}
	return k, err
}

// Keys lists an organization's keys, newest first.
func (db *DB) Keys(ctx context.Context, orgID string) (_ []*agentd.Key, err error) {
	defer wrap(&err, "store.Keys(%q)", orgID)
	return db.keys(ctx, `SELECT `+keyColumns+keyFrom+` WHERE k.org_id = ? ORDER BY k.created_at DESC, k.id`, orgID)
}

// KeysOfOwner lists the keys of an organization that have the given owner.
func (t *Tx) KeysOfOwner(ctx context.Context, orgID, owner string) (_ []*agentd.Key, err error) {
	defer wrap(&err, "store.KeysOfOwner(%q)", owner)
	rows, err := t.query(ctx, `SELECT `+keyColumns+keyFrom+` WHERE k.org_id = ? AND k.owner = ? ORDER BY k.id`, orgID, owner)
	if err != nil {
		return nil, err
	}
	return collectKeys(rows)
}

func (db *DB) keys(ctx context.Context, q string, args ...any) ([]*agentd.Key, error) {
	rows, err := db.query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	return collectKeys(rows)
}

func collectKeys(rows *sql.Rows) ([]*agentd.Key, error) {
	defer rows.Close()
	var keys []*agentd.Key
	for rows.Next() {
		k, err := scanKey(rows)
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	return keys, rows.Err()
}

// CountKeys returns how many keys exist, revoked included.
func (db *DB) CountKeys(ctx context.Context) (n int, err error) {
	defer wrap(&err, "store.CountKeys")
	err = db.queryRow(ctx, `SELECT count(*) FROM api_keys`).Scan(&n)
	return n, err
}

// CountKeys is DB.CountKeys inside a write transaction, so that "create a key if
// there is none" holds when several replicas start at once.
func (t *Tx) CountKeys(ctx context.Context) (n int, err error) {
	defer wrap(&err, "store.Tx.CountKeys")
	err = t.queryRow(ctx, `SELECT count(*) FROM api_keys`).Scan(&n)
	return n, err
}

func joinScopes(ss []agentd.Scope) string {
	parts := make([]string, len(ss))
	for i, s := range ss {
		parts[i] = string(s)
	}
	return strings.Join(parts, " ")
}

func splitScopes(s string) []agentd.Scope {
	var out []agentd.Scope
	for _, f := range strings.Fields(s) {
		out = append(out, agentd.Scope(f))
	}
	return out
}
