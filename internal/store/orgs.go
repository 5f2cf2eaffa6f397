package store

import (
	"context"
	"database/sql"
	"errors"
	"strings"

	"github.com/agentd/agentd"
)

// CreateOrg inserts an organization with a zero balance; a taken name is
// EAlreadyExists.
func (t *Tx) CreateOrg(ctx context.Context, o *agentd.Org) (err error) {
	defer wrap(&err, "store.CreateOrg(%q)", o.Name)
	_, err = t.exec(ctx, `INSERT INTO orgs (id, name, balance, created_at) VALUES (?, ?, 0, ?)`, o.ID, o.Name, micros(o.CreatedAt))
	if t.d.isUnique(err) {
		return agentd.Errorf(agentd.EAlreadyExists, "organization %q already exists", o.Name)
	}
	return err
}

// Org returns the organization whose id or name is idOrName.
func (db *DB) Org(ctx context.Context, idOrName string) (_ *agentd.Org, err error) {
	defer wrap(&err, "store.Org(%q)", idOrName)
	var o agentd.Org
	var created int64
	col := "name"
	if strings.HasPrefix(idOrName, "org-") {
		col = "id"
	}
	err = db.queryRow(ctx, `SELECT id, name, balance, created_at FROM orgs WHERE `+col+` = ?`, idOrName).
		Scan(&o.ID, &o.Name, &o.Balance, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, agentd.Errorf(agentd.ENotFound, "organization %q not found", idOrName)
	}
	o.CreatedAt = fromMicros(created)
	return &o, err
}

// Orgs lists every organization, by id.
func (db *DB) Orgs(ctx context.Context) (_ []*agentd.Org, err error) {
	defer wrap(&err, "store.Orgs")
	rows, err := db.query(ctx, `SELECT id, name, balance, created_at FROM orgs ORDER BY id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*agentd.Org
	for rows.Next() {
		var o agentd.Org
		var created int64
		if err := rows.Scan(&o.ID, &o.Name, &o.Balance, &created); err != nil {
			return nil, err
		}
		o.CreatedAt = fromMicros(created)
		out = append(out, &o)
	}
	return out, rows.Err()
}

// Balance returns the stored balance of an organization.
func (db *DB) Balance(ctx context.Context, orgID string) (b agentd.Micros, err error) {
	defer wrap(&err, "store.Balance(%q)", orgID)
	err = db.queryRow(ctx, `SELECT balance FROM orgs WHERE id = ?`, orgID).Scan(&b)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, agentd.Errorf(agentd.ENotFound, "organization %q not found", orgID)
	}
	return b, err
}

// Balance is DB.Balance inside a write transaction.
func (t *Tx) Balance(ctx context.Context, orgID string) (b agentd.Micros, err error) {
	defer wrap(&err, "store.Tx.Balance(%q)", orgID)
	err = t.queryRow(ctx, `SELECT balance FROM orgs WHERE id = ?`, orgID).Scan(&b)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, agentd.Errorf(agentd.ENotFound, "organization %q not found", orgID)
	}
	return b, err
}

// Grant is a credit grant or correction.
type Grant struct {
	ID      string
	OrgID   string
	Amount  agentd.Micros // may be negative
	KeyID   string        // who granted it
	Created int64
}

// GrantCredits records g and sets the organization's balance to balance, which
// billing computed from the balance this transaction read (Tx.Balance) and g's
// amount. The balance never goes below zero (the CHECK constraint refuses it).
func (t *Tx) GrantCredits(ctx context.Context, g *Grant, balance agentd.Micros) (err error) {
	defer wrap(&err, "store.GrantCredits(%q)", g.OrgID)
	res, err := t.exec(ctx, `UPDATE orgs SET balance = ? WHERE id = ?`, balance, g.OrgID)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return agentd.Errorf(agentd.ENotFound, "organization %q not found", g.OrgID)
	}
	_, err = t.exec(ctx, `INSERT INTO credit_grants (id, org_id, amount, key_id, created_at) VALUES (?, ?, ?, ?, ?)`,
		g.ID, g.OrgID, g.Amount, g.KeyID, g.Created)
	return err
}
