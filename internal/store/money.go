package store

import (
	"context"
	"database/sql"
	"errors"

	"github.com/agentd/agentd"
)

// KeySpent returns what a key has been charged on the UTC days from fromDay
// (YYYY-MM-DD; "" for all days), summed over the daily rollups: the ledger's own
// record, kept whole when raw rows are pruned. It is billing's source for what a
// budget has spent in its period; there is no other copy to disagree with it.
func (db *DB) KeySpent(ctx context.Context, keyID, fromDay string) (spent agentd.Micros, err error) {
	defer wrap(&err, "store.KeySpent(%q)", keyID)
	err = db.queryRow(ctx, keySpentQuery, keyID, fromDay).Scan(&spent)
	return spent, err
}

// KeySpent is DB.KeySpent inside a write transaction: it sees every write committed
// before this one and the writes of this transaction before it.
func (t *Tx) KeySpent(ctx context.Context, keyID, fromDay string) (spent agentd.Micros, err error) {
	defer wrap(&err, "store.Tx.KeySpent(%q)", keyID)
	err = t.queryRow(ctx, keySpentQuery, keyID, fromDay).Scan(&spent)
	return spent, err
}

const keySpentQuery = `SELECT COALESCE(sum(cost), 0) FROM usage_daily WHERE key_id = ? AND day >= ?`

// KeyBudget returns a key's stored budget.
func (db *DB) KeyBudget(ctx context.Context, keyID string) (b agentd.Budget, err error) {
	defer wrap(&err, "store.KeyBudget(%q)", keyID)
	return scanBudget(db.queryRow(ctx, keyBudgetQuery, keyID), keyID)
}

// KeyBudget is DB.KeyBudget inside a write transaction.
func (t *Tx) KeyBudget(ctx context.Context, keyID string) (b agentd.Budget, err error) {
	defer wrap(&err, "store.Tx.KeyBudget(%q)", keyID)
	return scanBudget(t.queryRow(ctx, keyBudgetQuery, keyID), keyID)
}

const keyBudgetQuery = `SELECT budget, budget_period FROM api_keys WHERE id = ?`

func scanBudget(row *sql.Row, keyID string) (agentd.Budget, error) {
	var limit sql.NullInt64
	var period string
	err := row.Scan(&limit, &period)
	if errors.Is(err, sql.ErrNoRows) {
		return agentd.Budget{}, agentd.Errorf(agentd.ENotFound, "key %q not found", keyID)
	}
	return agentd.Budget{Set: limit.Valid, Limit: agentd.Micros(limit.Int64), Period: agentd.Period(period)}, err
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
		res, err := t.exec(ctx, `DELETE FROM idempotency WHERE (org_id, key_id, idem_key) IN
			(SELECT org_id, key_id, idem_key FROM idempotency WHERE expires_at <= ? LIMIT ?)`, now, limit)
		if err != nil {
			return err
		}
		c, _ := res.RowsAffected()
		n = int(c)
		return nil
	})
	return n, err
}
