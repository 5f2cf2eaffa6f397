package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sort"

	"github.com/agentd/agentd"
)

// Holds in the database, for replicas on PostgreSQL (migration 0002; SQLite has no
// holds table: there one process owns the file and keeps holds in memory). A hold
// is a row of holds plus its amount in orgs.held and, for a hold of a key, in
// api_keys.held; the three change together in one transaction. Taking or growing a
// hold is a conditional update (balance − held ≥ amount), and every replica's
// writer transaction runs under one advisory lock, so a hold sees every hold and
// charge committed before it by any replica, and many holds share one commit.
// The numbers that are billing's rules — which budget applies, the first day of
// its period, how much a grow may ask — come from billing; the store only applies
// them.

// Hold is a row of holds: money set aside for one run in flight.
type Hold struct {
	ID      string
	OrgID   string
	KeyID   string // "" for a hold charged to no key
	Amount  agentd.Micros
	Created int64 // Unix microseconds
	Expires int64 // Unix microseconds; ExpireHolds ends the hold once it is past
}

// Shortfall says why a hold could not take what it asked: which limit was short,
// and what that limit had available (negative when it is already overcommitted).
type Shortfall struct {
	KeyBudget bool // false: the organization's balance
	Available agentd.Micros
}

// ErrHoldGone is returned for a hold whose row is gone: it was settled, released
// or expired by the sweeper.
var ErrHoldGone = errors.New("store: the hold has ended or expired")

// GrowHold adds add to the open hold id under TakeHoldFor's conditions and returns
// its new amount; a refusal changes nothing and returns the hold's amount and the
// Shortfall. A hold whose row is gone is ErrHoldGone.
func (t *Tx) GrowHold(ctx context.Context, id string, add agentd.Micros, budget *agentd.Budget, fromDay string) (amount agentd.Micros, short *Shortfall, err error) {
	defer wrap(&err, "store.GrowHold(%q)", id)
	var orgID, keyID string
	err = t.queryRow(ctx, `SELECT org_id, key_id, amount FROM holds WHERE id = ?`, id).Scan(&orgID, &keyID, &amount)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil, ErrHoldGone
	}
	if err != nil {
		return 0, nil, err
	}
	if short, err := t.reserve(ctx, orgID, keyID, add, budget, fromDay); short != nil || err != nil {
		return amount, short, err
	}
	err = t.queryRow(ctx, `UPDATE holds SET amount = amount + ? WHERE id = ? RETURNING amount`, add, id).Scan(&amount)
	return amount, nil, err
}

// reserve adds amount to the held of orgID and, unless keyID is "", of keyID, if
// both have room; otherwise it changes nothing and says which had not.
func (t *Tx) reserve(ctx context.Context, orgID, keyID string, amount agentd.Micros, budget *agentd.Budget, fromDay string) (*Shortfall, error) {
	res, err := t.exec(ctx, `UPDATE orgs SET held = held + ? WHERE id = ? AND balance - held >= ?`, amount, orgID, amount)
	if err != nil {
		return nil, err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		var avail agentd.Micros
		err := t.queryRow(ctx, `SELECT balance - held FROM orgs WHERE id = ?`, orgID).Scan(&avail)
		if errors.Is(err, sql.ErrNoRows) {
			return nil, agentd.Errorf(agentd.ENotFound, "organization %q not found", orgID)
		}
		if err != nil {
			return nil, err
		}
		return &Shortfall{Available: avail}, nil
	}
	if keyID == "" {
		return nil, nil
	}
	if budget == nil {
		res, err = t.exec(ctx, `UPDATE api_keys SET held = held + ? WHERE id = ?`, amount, keyID)
	} else {
		res, err = t.exec(ctx, `UPDATE api_keys SET held = held + ? WHERE id = ? AND CAST(? AS BIGINT) - held - (`+keySpentQuery+`) >= ?`,
			amount, keyID, budget.Limit, keyID, fromDay, amount)
	}
	if err != nil {
		return nil, err
	}
	if n, _ := res.RowsAffected(); n == 1 {
		return nil, nil
	}
	// The key refused: give the organization's part back, so that a refusal
	// leaves nothing behind whatever the caller does with it.
	if _, err := t.exec(ctx, `UPDATE orgs SET held = held - ? WHERE id = ?`, amount, orgID); err != nil {
		return nil, err
	}
	if budget == nil {
		return nil, agentd.Errorf(agentd.ENotFound, "key %q not found", keyID)
	}
	var avail agentd.Micros
	err = t.queryRow(ctx, `SELECT CAST(? AS BIGINT) - held - (`+keySpentQuery+`) FROM api_keys WHERE id = ?`,
		budget.Limit, keyID, fromDay, keyID).Scan(&avail)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, agentd.Errorf(agentd.ENotFound, "key %q not found", keyID)
	}
	if err != nil {
		return nil, err
	}
	return &Shortfall{KeyBudget: true, Available: avail}, nil
}

// SettleHold ends hold id as part of the write that records its run's charge
// (RecordRun): it deletes the row and takes exactly its amount out of what the
// organization and the key hold. A hold the sweeper already expired has no row
// and nothing is taken; the charge stands all the same. It reports whether the
// row was there. Its error is also the write's: the write fails with it even if
// the callback returns nil (billing's Hold.Settle has no error to return), so a
// charge never commits beside a hold left open by a failed statement.
func (t *Tx) SettleHold(ctx context.Context, id string) (ended bool, err error) {
	defer func() { t.fail(err) }() // runs after wrap: the write fails with the wrapped error
	defer wrap(&err, "store.SettleHold(%q)", id)
	if t.deferSettle(id) {
		return true, nil // ended with the batch's records (batch_postgres.go), whether or not the row is still there
	}
	return t.endHold(ctx, id)
}

// ReleaseHold ends hold id with no charge: it deletes the row and takes its amount
// out of what the organization and the key hold. It reports whether the row was
// there (an ended or expired hold has none, and nothing changes).
func (t *Tx) ReleaseHold(ctx context.Context, id string) (ended bool, err error) {
	defer wrap(&err, "store.ReleaseHold(%q)", id)
	return t.endHold(ctx, id)
}

func (t *Tx) endHold(ctx context.Context, id string) (bool, error) {
	var orgID, keyID string
	var amount agentd.Micros
	err := t.queryRow(ctx, `DELETE FROM holds WHERE id = ? RETURNING org_id, key_id, amount`, id).Scan(&orgID, &keyID, &amount)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return true, t.unhold(ctx, orgID, keyID, amount)
}

// unhold takes amount, which ended holds set aside, out of what orgID and keyID
// hold.
func (t *Tx) unhold(ctx context.Context, orgID, keyID string, amount agentd.Micros) error {
	if amount == 0 {
		return nil
	}
	if _, err := t.exec(ctx, `UPDATE orgs SET held = held - ? WHERE id = ?`, amount, orgID); err != nil {
		return err
	}
	if keyID == "" {
		return nil
	}
	_, err := t.exec(ctx, `UPDATE api_keys SET held = held - ? WHERE id = ?`, amount, keyID)
	return err
}

// ExpireHolds ends, in one write, up to limit holds that expired before now (Unix
// microseconds) — runs that never settled or released them — and returns how many.
// Sweepers of several replicas may run it at once: their writes run one at a time,
// and each finds only the rows the others left, so every hold ends once.
func (db *DB) ExpireHolds(ctx context.Context, now int64, limit int) (n int, err error) {
	defer wrap(&err, "store.ExpireHolds")
	err = db.Tx(ctx, func(t *Tx) error {
		n = 0
		rows, err := t.query(ctx, `DELETE FROM holds WHERE id IN
			(SELECT id FROM holds WHERE expires_at < ? ORDER BY expires_at LIMIT ?) RETURNING org_id, key_id, amount`, now, limit)
		if err != nil {
			return err
		}
		type account struct{ org, key string }
		sums := map[account]agentd.Micros{}
		for rows.Next() {
			var a account
			var amount agentd.Micros
			if err := rows.Scan(&a.org, &a.key, &amount); err != nil {
				rows.Close()
				return err
			}
			sums[a] += amount // at most what the account holds, a BIGINT
			n++
		}
		if err := rows.Close(); err != nil {
			return err
		}
		if err := rows.Err(); err != nil {
			return err
		}
		accts := make([]account, 0, len(sums))
		for a := range sums {
			accts = append(accts, a)
		}
		sort.Slice(accts, func(i, j int) bool { // a stable order of updates
			return accts[i].org < accts[j].org || accts[i].org == accts[j].org && accts[i].key < accts[j].key
		})
		for _, a := range accts {
			if err := t.unhold(ctx, a.org, a.key, sums[a]); err != nil {
				return err
			}
		}
		return nil
	})
	return n, err
}

// OrgMoney is an organization's balance and what its runs hold of it.
type OrgMoney struct {
	Balance agentd.Micros
	Held    agentd.Micros
	Holds   int // open holds
}

// OrgMoney reads orgID's balance, held and number of open holds in one snapshot.
func (db *DB) OrgMoney(ctx context.Context, orgID string) (m OrgMoney, err error) {
	defer wrap(&err, "store.OrgMoney(%q)", orgID)
	err = db.queryRow(ctx, `SELECT balance, held, (SELECT count(*) FROM holds WHERE org_id = o.id) FROM orgs o WHERE id = ?`, orgID).
		Scan(&m.Balance, &m.Held, &m.Holds)
	if errors.Is(err, sql.ErrNoRows) {
		return m, agentd.Errorf(agentd.ENotFound, "organization %q not found", orgID)
	}
	return m, err
}

// Held reads orgID's balance and held inside a write transaction.
func (t *Tx) Held(ctx context.Context, orgID string) (balance, held agentd.Micros, err error) {
	defer wrap(&err, "store.Tx.Held(%q)", orgID)
	err = t.queryRow(ctx, `SELECT balance, held FROM orgs WHERE id = ?`, orgID).Scan(&balance, &held)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, 0, agentd.Errorf(agentd.ENotFound, "organization %q not found", orgID)
	}
	return balance, held, err
}

// KeyMoney is a key's budget, what its runs hold and what it has been charged.
type KeyMoney struct {
	Budget agentd.Budget
	Held   agentd.Micros
	Spent  agentd.Micros // on the days from the fromDay asked for
}

// KeyMoney reads keyID's budget, held, and charges on the days from fromDay
// (KeySpent), in one snapshot.
func (db *DB) KeyMoney(ctx context.Context, keyID, fromDay string) (m KeyMoney, err error) {
	defer wrap(&err, "store.KeyMoney(%q)", keyID)
	var limit sql.NullInt64
	var period string
	err = db.queryRow(ctx, `SELECT budget, budget_period, held, (`+keySpentQuery+`) FROM api_keys WHERE id = ?`, keyID, fromDay, keyID).
		Scan(&limit, &period, &m.Held, &m.Spent)
	if errors.Is(err, sql.ErrNoRows) {
		return m, agentd.Errorf(agentd.ENotFound, "key %q not found", keyID)
	}
	m.Budget = agentd.Budget{Set: limit.Valid, Limit: agentd.Micros(limit.Int64), Period: agentd.Period(period)}
	return m, err
}

// CheckHolds verifies the holds, for agentd check: every organization's and key's
// held equals the sum of its open holds, no organization holds more than its
// balance, and every hold belongs to an organization and key that exist. It
// returns one line per disagreement. Each query reads one snapshot, so a live
// database shows no transient difference.
func (db *DB) CheckHolds(ctx context.Context) (problems []string, err error) {
	defer wrap(&err, "store.CheckHolds")
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	queries := []struct {
		sql    string
		report func(scan func(...any) error) error
	}{
		{`SELECT o.id, o.name, o.balance, o.held, COALESCE(h.sum, 0), COALESCE(h.n, 0) FROM orgs o
			LEFT JOIN (SELECT org_id, sum(amount) AS sum, count(*) AS n FROM holds GROUP BY org_id) h ON h.org_id = o.id
			WHERE o.held <> COALESCE(h.sum, 0) OR o.balance < o.held ORDER BY o.id`, func(scan func(...any) error) error {
			var id, name string
			var balance, held, sum agentd.Micros
			var n int
			if err := scan(&id, &name, &balance, &held, &sum, &n); err != nil {
				return err
			}
			if held != sum {
				add("org %s (%s): holds %s credits, but its %d open holds sum to %s", id, name, held, n, sum)
			}
			if balance < held {
				add("org %s (%s): holds %s credits of a balance of %s: balance − held is negative", id, name, held, balance)
			}
			return nil
		}},
		{`SELECT k.id, k.org_id, k.held, COALESCE(h.sum, 0), COALESCE(h.n, 0) FROM api_keys k
			LEFT JOIN (SELECT key_id, sum(amount) AS sum, count(*) AS n FROM holds GROUP BY key_id) h ON h.key_id = k.id
			WHERE k.held <> COALESCE(h.sum, 0) ORDER BY k.id`, func(scan func(...any) error) error {
			var id, org string
			var held, sum agentd.Micros
			var n int
			if err := scan(&id, &org, &held, &sum, &n); err != nil {
				return err
			}
			add("key %s (org %s): holds %s credits, but its %d open holds sum to %s", id, org, held, n, sum)
			return nil
		}},
		{`SELECT h.id, h.org_id, h.key_id FROM holds h WHERE NOT EXISTS (SELECT 1 FROM orgs o WHERE o.id = h.org_id)
			OR (h.key_id <> '' AND NOT EXISTS (SELECT 1 FROM api_keys k WHERE k.id = h.key_id AND k.org_id = h.org_id)) ORDER BY h.id`,
			func(scan func(...any) error) error {
				var id, org, key string
				if err := scan(&id, &org, &key); err != nil {
					return err
				}
				add("hold %s names org %s and key %q, which do not exist together", id, org, key)
				return nil
			}},
	}
	for _, q := range queries {
		rows, err := db.query(ctx, q.sql)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			if err := q.report(rows.Scan); err != nil {
				rows.Close()
				return nil, err
			}
		}
		if err := rows.Close(); err != nil {
			return nil, err
		}
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return problems, nil
}

// PeriodDays are the first rollup days (YYYY-MM-DD) of the current daily and
// monthly budget periods, as billing computed them; a key's stored period picks
// the one its budget answers to.
type PeriodDays struct{ Daily, Monthly string }

// TakeHoldFor takes h, in one statement (agentd_take_hold, migration 0004;
// PostgreSQL only): it adds h.Amount to the organization's held if its balance −
// held covers it and, when h has a key, to the key's held — and, when the key has a
// budget, only if the budget minus what the key holds and has been charged since
// the first day of its period covers it too. That day is days' entry for the
// budget's stored period (billing computes both). Then it inserts h's row. A
// refusal changes nothing and returns the Shortfall; an organization or key that
// does not exist is ENotFound. It returns the budget it read (Set false: none), for
// the refusal's message.
func (t *Tx) TakeHoldFor(ctx context.Context, h *Hold, days PeriodDays) (short *Shortfall, b agentd.Budget, err error) {
	defer wrap(&err, "store.TakeHoldFor(%q)", h.OrgID)
	if t.d.name != "postgres" {
		return nil, b, errors.New("holds in the database need PostgreSQL")
	}
	var o holdOutcome
	err = t.queryRow(ctx, `SELECT taken, key_short, available, budget, period FROM agentd_take_hold(?, ?, ?, ?, ?, ?, ?, ?)`,
		h.ID, h.OrgID, h.KeyID, h.Amount, h.Created, h.Expires, days.Daily, days.Monthly).
		Scan(&o.taken, &o.keyShort, &o.avail, &o.limit, &o.period)
	if err != nil {
		return nil, b, err
	}
	return o.result(h)
}

// HoldResult is the outcome of TakeHoldLater, known once the write's transaction
// has taken the hold: before its Tx call returns.
type HoldResult struct {
	Short  *Shortfall
	Budget agentd.Budget
	Err    error
}

// TakeHoldLater is TakeHoldFor whose outcome is set in res rather than returned:
// in a write made with TxRecords the batch's holds are then
// taken by one call for all of them, in the batch's order, just before the
// commit; otherwise at once.
func (t *Tx) TakeHoldLater(ctx context.Context, h *Hold, days PeriodDays, res *HoldResult) {
	if t.deferred != nil && t.deferOK {
		t.deferred.holds = append(t.deferred.holds, pendingHold{h: h, days: days, res: res})
		return
	}
	res.Short, res.Budget, res.Err = t.TakeHoldFor(ctx, h, days)
}

// holdOutcome is a row of agentd_take_hold(s).
type holdOutcome struct {
	taken, keyShort bool
	avail, limit    sql.NullInt64
	period          sql.NullString
}

func (o holdOutcome) result(h *Hold) (*Shortfall, agentd.Budget, error) {
	var b agentd.Budget
	taken, keyShort, avail, limit, period := o.taken, o.keyShort, o.avail, o.limit, o.period
	if limit.Valid {
		b = agentd.Budget{Set: true, Limit: agentd.Micros(limit.Int64), Period: agentd.Period(period.String)}
	}
	switch {
	case taken:
		return nil, b, nil
	case !avail.Valid && keyShort:
		return nil, b, agentd.Errorf(agentd.ENotFound, "key %q not found", h.KeyID)
	case !avail.Valid:
		return nil, b, agentd.Errorf(agentd.ENotFound, "organization %q not found", h.OrgID)
	}
	return &Shortfall{KeyBudget: keyShort, Available: agentd.Micros(avail.Int64)}, b, nil
}
