package store

import (
	"context"
	"database/sql"
	"errors"
	"strings"

	"github.com/agentd/agentd"
)

// Org is an organization: a tenant with a balance.
type Org struct {
	ID      string        `json:"id"`
	Name    string        `json:"name"`
	Balance agentd.Micros `json:"balance"`
	Created int64         `json:"-"`
}

// DefaultOrgName is the organization the bootstrap key belongs to.
const DefaultOrgName = "default"

// CreateOrg inserts an organization; a taken name is EAlreadyExists.
func (t *Tx) CreateOrg(ctx context.Context, o *Org) (err error) {
	defer wrap(&err, "store.CreateOrg(%q)", o.Name)
	_, err = t.exec(ctx, `INSERT INTO orgs (id, name, balance, created_at) VALUES (?, ?, 0, ?)`, o.ID, o.Name, o.Created)
	if t.d.isUnique(err) {
		return agentd.Errorf(agentd.EAlreadyExists, "organization %q already exists", o.Name)
	}
	return err
}

// Org returns the organization whose id or name is idOrName.
func (db *DB) Org(ctx context.Context, idOrName string) (_ *Org, err error) {
	defer wrap(&err, "store.Org(%q)", idOrName)
	var o Org
	col := "name"
	if strings.HasPrefix(idOrName, "org-") {
		col = "id"
	}
	err = db.queryRow(ctx, `SELECT id, name, balance, created_at FROM orgs WHERE `+col+` = ?`, idOrName).
		Scan(&o.ID, &o.Name, &o.Balance, &o.Created)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, agentd.Errorf(agentd.ENotFound, "organization %q not found", idOrName)
	}
	return &o, err
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

// Grant is a credit grant or correction.
type Grant struct {
	ID      string
	OrgID   string
	Amount  agentd.Micros // may be negative
	KeyID   string        // who granted it
	Created int64
}

// GrantCredits records g and moves the balance by its amount, in one savepoint. The
// balance never goes below zero (the CHECK constraint refuses it).
func (t *Tx) GrantCredits(ctx context.Context, g *Grant) (balance agentd.Micros, err error) {
	defer wrap(&err, "store.GrantCredits(%q)", g.OrgID)
	// The balance first: a missing organization is then ENotFound rather than a
	// foreign-key failure of the grant row.
	err = t.queryRow(ctx, `UPDATE orgs SET balance = balance + ? WHERE id = ? RETURNING balance`, g.Amount, g.OrgID).Scan(&balance)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, agentd.Errorf(agentd.ENotFound, "organization %q not found", g.OrgID)
	}
	if err != nil {
		return 0, err
	}
	_, err = t.exec(ctx, `INSERT INTO credit_grants (id, org_id, amount, key_id, created_at) VALUES (?, ?, ?, ?, ?)`,
		g.ID, g.OrgID, g.Amount, g.KeyID, g.Created)
	return balance, err
}
