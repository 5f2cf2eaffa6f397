package store

import (
	"context"
	"fmt"

	"github.com/agentd/agentd"
)

// Check verifies the money and memory invariants across the whole database and
// returns one line per offending row (none: consistent):
//   - every organization's balance is its credit grants minus what its runs were
//     charged (summed over the daily rollups, which outlive ledger retention), and
//     is not negative;
//   - failed runs cost nothing (cancelled ones pay for what they generated), and
//     no run costs less than nothing;
//   - every session turn and every idempotency record belongs to a successful
//     ledger row (no memory or replay without a charge record), as far as the
//     ledger is whole: a turn older than its organization's ledger_pruned mark may
//     have lost its row to retention and is not reported;
//   - the rollups agree with the raw ledger rows they summarize (CheckRollups);
//     key budgets are sums of the rollups, so this is also the check of every
//     budget's spending (billing.Check reports them per key and period).
//
// It reads only, so it can run against a live database (SQLite allows readers
// beside the writer); a run settling during the check can show as a transient
// difference, so run it twice before believing one.
func (db *DB) Check(ctx context.Context) (problems []string, err error) {
	defer wrap(&err, "store.Check")
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	type query struct {
		sql    string
		report func(scan func(...any) error) error
	}
	queries := []query{
		{`SELECT o.id, o.name, o.balance,
			COALESCE((SELECT sum(amount) FROM credit_grants g WHERE g.org_id = o.id), 0),
			COALESCE((SELECT sum(cost) FROM usage_daily u WHERE u.org_id = o.id), 0)
			FROM orgs o ORDER BY o.id`, func(scan func(...any) error) error {
			var id, name string
			var balance, grants, charged agentd.Micros
			if err := scan(&id, &name, &balance, &grants, &charged); err != nil {
				return err
			}
			if balance != grants-charged {
				add("org %s (%s): balance %s credits, but grants %s − charges %s = %s", id, name, balance, grants, charged, grants-charged)
			}
			if balance < 0 {
				add("org %s (%s): negative balance %s", id, name, balance)
			}
			return nil
		}},
		{`SELECT run_id, outcome, cost FROM ledger WHERE cost < 0 OR (outcome = 'failed' AND cost <> 0) OR outcome NOT IN ('ok', 'failed', 'cancelled')`,
			func(scan func(...any) error) error {
				var id, outcome string
				var cost agentd.Micros
				if err := scan(&id, &outcome, &cost); err != nil {
					return err
				}
				add("ledger %s: outcome %q with cost %s", id, outcome, cost)
				return nil
			}},
		{`SELECT t.run_id, t.session_id FROM session_turns t LEFT JOIN ledger l ON l.run_id = t.run_id AND l.outcome = 'ok'
			WHERE l.run_id IS NULL AND t.created_at >= COALESCE((SELECT pruned_before FROM ledger_pruned p WHERE p.org_id = t.org_id), 0)`,
			func(scan func(...any) error) error {
				var run, sid string
				if err := scan(&run, &sid); err != nil {
					return err
				}
				add("session turn of run %s (session %q) has no successful ledger row", run, sid)
				return nil
			}},
		{`SELECT i.idem_key, i.run_id FROM idempotency i LEFT JOIN ledger l ON l.run_id = i.run_id AND l.outcome = 'ok'
			WHERE l.run_id IS NULL AND i.created_at >= COALESCE((SELECT pruned_before FROM ledger_pruned p WHERE p.org_id = i.org_id), 0)`,
			func(scan func(...any) error) error {
				var key, run string
				if err := scan(&key, &run); err != nil {
					return err
				}
				add("idempotency record %q names run %s, which has no successful ledger row", key, run)
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
	more, err := db.CheckRollups(ctx)
	return append(problems, more...), err
}
