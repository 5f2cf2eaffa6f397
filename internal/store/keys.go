package store

import (
	"context"
	"database/sql"
	"errors"
	"strings"

	"github.com/agentd/agentd"
)

// Key is a stored API key: never the secret, only its SHA-256 and display prefix.
type Key struct {
	ID      string
	OrgID   string
	OrgName string
	Name    string
	Owner   string
	Prefix  string
	Hash    string // hex SHA-256 of the secret
	Scopes  []agentd.Scope
	Created int64
	Revoked sql.NullInt64
	Budget  Budget
}

// CreateKey inserts a key.
func (t *Tx) CreateKey(ctx context.Context, k *Key) (err error) {
	defer wrap(&err, "store.CreateKey(%q)", k.Name)
	var budget any
	if k.Budget.Set {
		budget = int64(k.Budget.Limit)
	}
	period := k.Budget.Period
	if period == "" {
		period = PeriodNone
	}
	_, err = t.exec(ctx, `INSERT INTO api_keys (id, org_id, name, owner, prefix, hash, scopes, created_at, budget, budget_period, budget_period_start)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		k.ID, k.OrgID, k.Name, k.Owner, k.Prefix, k.Hash, joinScopes(k.Scopes), k.Created, budget, period, k.Budget.PeriodStart)
	if t.d.isUnique(err) {
		return agentd.Errorf(agentd.EAlreadyExists, "a key with this secret already exists")
	}
	return err
}

// RevokeKey marks a key of org revoked; revoking twice is not an error. A key of
// another organization is not found.
func (t *Tx) RevokeKey(ctx context.Context, orgID, id string, at int64) (err error) {
	defer wrap(&err, "store.RevokeKey(%q)", id)
	q := `UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?`
	args := []any{at, id}
	if orgID != "" {
		q += ` AND org_id = ?`
		args = append(args, orgID)
	}
	res, err := t.exec(ctx, q, args...)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return agentd.Errorf(agentd.ENotFound, "key %q not found", id)
	}
	return nil
}

const keyColumns = `k.id, k.org_id, o.name, k.name, k.owner, k.prefix, k.hash, k.scopes, k.created_at, k.revoked_at,
	k.budget, k.budget_period, k.budget_spent, k.budget_period_start`

func scanKey(s interface{ Scan(...any) error }) (*Key, error) {
	var k Key
	var scopes string
	var budget sql.NullInt64
	if err := s.Scan(&k.ID, &k.OrgID, &k.OrgName, &k.Name, &k.Owner, &k.Prefix, &k.Hash, &scopes, &k.Created, &k.Revoked,
		&budget, &k.Budget.Period, &k.Budget.Spent, &k.Budget.PeriodStart); err != nil {
		return nil, err
	}
	k.Budget.Limit, k.Budget.Set = agentd.Micros(budget.Int64), budget.Valid
	k.Scopes = splitScopes(scopes)
	return &k, nil
}

// KeyByHash returns the key with the given secret hash, revoked or not.
func (db *DB) KeyByHash(ctx context.Context, hash string) (_ *Key, err error) {
	defer wrap(&err, "store.KeyByHash")
	k, err := scanKey(db.queryRow(ctx, `SELECT `+keyColumns+` FROM api_keys k JOIN orgs o ON o.id = k.org_id WHERE k.hash = ?`, hash))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, agentd.Errorf(agentd.ENotFound, "key not found")
	}
	return k, err
}

// KeyByID returns a key by id.
func (db *DB) KeyByID(ctx context.Context, id string) (_ *Key, err error) {
	defer wrap(&err, "store.KeyByID(%q)", id)
	k, err := scanKey(db.queryRow(ctx, `SELECT `+keyColumns+` FROM api_keys k JOIN orgs o ON o.id = k.org_id WHERE k.id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, agentd.Errorf(agentd.ENotFound, "key %q not found", id)
	}
	return k, err
}

// Keys lists an organization's keys, newest first.
func (db *DB) Keys(ctx context.Context, orgID string) (_ []*Key, err error) {
	defer wrap(&err, "store.Keys(%q)", orgID)
	rows, err := db.query(ctx, `SELECT `+keyColumns+` FROM api_keys k JOIN orgs o ON o.id = k.org_id WHERE k.org_id = ? ORDER BY k.created_at DESC, k.id`, orgID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var keys []*Key
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
