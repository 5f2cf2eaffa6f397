package store

import (
	"context"
	"database/sql"
	"errors"

	"github.com/agentd/agentd"
)

// Budget periods.
const (
	PeriodNone    = "none"
	PeriodDaily   = "daily"
	PeriodMonthly = "monthly"
)

// Budget is a key's spending limit and what it has spent in its current period.
type Budget struct {
	Limit       agentd.Micros // meaningful only when Set
	Set         bool
	Period      string
	Spent       agentd.Micros
	PeriodStart int64 // unix micros of the period Spent counts
}

// KeyBudget returns a key's budget state.
func (db *DB) KeyBudget(ctx context.Context, keyID string) (b Budget, err error) {
	defer wrap(&err, "store.KeyBudget(%q)", keyID)
	var limit sql.NullInt64
	err = db.queryRow(ctx, `SELECT budget, budget_period, budget_spent, budget_period_start FROM api_keys WHERE id = ?`, keyID).
		Scan(&limit, &b.Period, &b.Spent, &b.PeriodStart)
	if errors.Is(err, sql.ErrNoRows) {
		return b, agentd.Errorf(agentd.ENotFound, "key %q not found", keyID)
	}
	b.Limit, b.Set = agentd.Micros(limit.Int64), limit.Valid
	return b, err
}

// SetKeyBudget sets (set=true) or removes a key's budget and period. Spending
// already counted in the current period stays counted.
func (t *Tx) SetKeyBudget(ctx context.Context, orgID, keyID string, set bool, limit agentd.Micros, period string) (err error) {
	defer wrap(&err, "store.SetKeyBudget(%q)", keyID)
	var v any
	if set {
		v = int64(limit)
	}
	res, err := t.exec(ctx, `UPDATE api_keys SET budget = ?, budget_period = ? WHERE id = ? AND org_id = ?`, v, period, keyID, orgID)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return agentd.Errorf(agentd.ENotFound, "key %q not found", keyID)
	}
	return nil
}

// chargeKey adds cost to a key's spending in the period starting at periodStart.
// A charge for a period older than the stored one is not counted against the
// current period (it belonged to a period that is over); a newer period starts
// the count again.
func (t *Tx) chargeKey(ctx context.Context, keyID string, cost agentd.Micros, periodStart int64) error {
	_, err := t.exec(ctx, `UPDATE api_keys SET
		budget_spent = CASE WHEN budget_period_start = ? THEN budget_spent + ?
		                    WHEN budget_period_start < ? THEN ? ELSE budget_spent END,
		budget_period_start = MAX(budget_period_start, ?)
		WHERE id = ?`, periodStart, cost, periodStart, cost, periodStart, keyID)
	return err
}

// Idem is a stored idempotent result.
type Idem struct {
	OrgID, KeyID, Key string
	RequestHash       string
	RunID             string
	Result            []byte
	Created, Expires  int64
}

// Idempotent returns the live record of an Idempotency-Key, or nil.
func (db *DB) Idempotent(ctx context.Context, orgID, keyID, idemKey string, now int64) (_ *Idem, err error) {
	defer wrap(&err, "store.Idempotent")
	r := &Idem{OrgID: orgID, KeyID: keyID, Key: idemKey}
	err = db.queryRow(ctx, `SELECT request_hash, run_id, result, created_at, expires_at FROM idempotency
		WHERE org_id = ? AND key_id = ? AND idem_key = ? AND expires_at > ?`, orgID, keyID, idemKey, now).
		Scan(&r.RequestHash, &r.RunID, &r.Result, &r.Created, &r.Expires)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	return r, err
}

// putIdempotent stores a finished run's result under its key, replacing an
// expired record of the same key.
func (t *Tx) putIdempotent(ctx context.Context, r *Idem) error {
	_, err := t.exec(ctx, `INSERT INTO idempotency (org_id, key_id, idem_key, request_hash, run_id, result, created_at, expires_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (org_id, key_id, idem_key) DO UPDATE SET request_hash = excluded.request_hash, run_id = excluded.run_id,
		result = excluded.result, created_at = excluded.created_at, expires_at = excluded.expires_at
		WHERE idempotency.expires_at <= excluded.created_at`,
		r.OrgID, r.KeyID, r.Key, r.RequestHash, r.RunID, r.Result, r.Created, r.Expires)
	return err
}

// SweepIdempotency deletes up to limit records expired before now.
func (db *DB) SweepIdempotency(ctx context.Context, now int64, limit int) (n int, err error) {
	defer wrap(&err, "store.SweepIdempotency")
	err = db.Tx(ctx, func(t *Tx) error {
		res, err := t.exec(ctx, `DELETE FROM idempotency WHERE rowid IN (SELECT rowid FROM idempotency WHERE expires_at <= ? LIMIT ?)`, now, limit)
		if err != nil {
			return err
		}
		c, _ := res.RowsAffected()
		n = int(c)
		return nil
	})
	return n, err
}
