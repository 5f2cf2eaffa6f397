package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"

	"github.com/agentd/agentd"
)

// History calls fn with the turns of a session, newest first, until fn returns false.
// Stopping early is cheap: rows are read lazily.
func (db *DB) History(ctx context.Context, k agentd.SessionKey, fn func(agentd.Turn) bool) (err error) {
	defer wrap(&err, "store.History")
	rows, err := db.query(ctx, `SELECT user_message, assistant_message, user_tokens, assistant_tokens, tools FROM session_turns
		WHERE org_id = ? AND agent_id = ? AND owner = ? AND session_id = ? ORDER BY id DESC`,
		k.OrgID, k.AgentID, k.Owner, k.SessionID)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var t agentd.Turn
		var tools sql.NullString
		if err := rows.Scan(&t.User, &t.Assistant, &t.UserTokens, &t.AssistantTokens, &tools); err != nil {
			return err
		}
		if err := readTools(tools, &t.TurnTools); err != nil {
			return err
		}
		if !fn(t) {
			break
		}
	}
	return rows.Err()
}

// Run is everything recorded about one run in one savepoint: its ledger row (with
// the charge billing decided) and, when it succeeded in a session that keeps
// conversations, its session turn and its idempotency record.
type Run struct {
	agentd.LedgerRow
	// Turn, when set, is stored as the session's next turn, unless the agent was
	// deleted while the run was in flight: then the turn is dropped (a deleted
	// agent has no sessions), and the ledger row and the charge stay.
	Turn *agentd.Turn
	// Idem, when set, stores the run's result for Idempotency-Key replays.
	Idem *Idem
}

// RecordRun writes a run's ledger row and its daily rollup, charges its cost to the
// organization, stores its session turn and idempotency record and updates the
// agent's stats, all in one savepoint of one transaction: all of it happens once, or
// none of it. A charge the balance cannot cover fails the whole record (holds make
// that unreachable; the CHECK makes it safe). It reports whether the turn was stored.
func (t *Tx) RecordRun(ctx context.Context, r *Run) (turnStored bool, err error) {
	defer wrap(&err, "store.RecordRun(%q)", r.RunID)
	if t.deferRun(r) {
		// Written with the batch's other records just before the commit
		// (DB.TxRecords); the turn is stored then unless its agent is gone by then.
		return r.Outcome == agentd.OutcomeOK && r.Turn != nil, nil
	}
	row := &r.LedgerRow
	created := micros(row.CreatedAt)
	if _, err := t.exec(ctx, `INSERT INTO ledger (run_id, created_at, org_id, key_id, owner, agent_id, agent_name, agent_version,
		session_id, model_requested, model, input_tokens, output_tokens, usage_source, cost, latency_ms, outcome, error_code,
		cached_input_tokens, cache_write_tokens, reasoning_tokens)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		row.RunID, created, row.OrgID, row.KeyID, row.Owner, row.AgentID, row.AgentName, row.AgentVersion,
		row.SessionID, row.ModelRequested, row.Model, row.InputTokens, row.OutputTokens, row.UsageSource, row.Cost,
		row.LatencyMS, string(row.Outcome), row.ErrorCode,
		row.CachedInputTokens, row.CacheWriteTokens, row.ReasoningTokens); err != nil {
		return false, err
	}
	if err := t.rollup(ctx, row); err != nil {
		return false, err
	}
	if row.Cost > 0 {
		res, err := t.exec(ctx, `UPDATE orgs SET balance = balance - ? WHERE id = ?`, row.Cost, row.OrgID)
		if err != nil {
			return false, err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return false, fmt.Errorf("organization %q not found", row.OrgID)
		}
	}
	if row.Outcome != agentd.OutcomeOK {
		if row.AgentID != "" {
			_, err = t.exec(ctx, `UPDATE agents SET failed_count = failed_count + 1 WHERE id = ?`, row.AgentID)
		}
		return false, err
	}
	if r.Idem != nil {
		if err := t.putIdempotent(ctx, r.Idem); err != nil {
			return false, err
		}
	}
	if r.Turn != nil {
		// Only while the agent exists: its deletion took its sessions with it. The
		// casts type the parameters of a SELECT list for PostgreSQL.
		res, err := t.exec(ctx, `INSERT INTO session_turns (org_id, owner, agent_id, session_id, run_id, user_message, assistant_message,
			user_tokens, assistant_tokens, input_tokens, output_tokens, created_at, tools)
			SELECT ?, ?, ?, ?, ?, ?, ?, CAST(? AS BIGINT), CAST(? AS BIGINT), CAST(? AS BIGINT), CAST(? AS BIGINT), CAST(? AS BIGINT), NULLIF(CAST(? AS TEXT), '')
			WHERE EXISTS (SELECT 1 FROM agents WHERE id = ? AND org_id = ?)`,
			row.OrgID, row.Owner, row.AgentID, row.SessionID, row.RunID, r.Turn.User, r.Turn.Assistant,
			r.Turn.UserTokens, r.Turn.AssistantTokens, row.InputTokens, row.OutputTokens, created, toolsText(&r.Turn.TurnTools),
			row.AgentID, row.OrgID)
		if err != nil {
			return false, err
		}
		n, _ := res.RowsAffected()
		turnStored = n == 1
	}
	if row.AgentID != "" {
		_, err = t.exec(ctx, `UPDATE agents SET usage_count = usage_count + 1, total_latency_ms = total_latency_ms + ?, last_used = ? WHERE id = ?`,
			row.LatencyMS, created, row.AgentID)
	}
	return turnStored, err
}

// Totals are sums over the ledger of an organization, for consistency checks.
type Totals struct {
	Runs   int
	Cost   agentd.Micros
	Grants agentd.Micros
}

// LedgerTotals sums an organization's ledger costs and credit grants.
func (db *DB) LedgerTotals(ctx context.Context, orgID string) (t Totals, err error) {
	defer wrap(&err, "store.LedgerTotals(%q)", orgID)
	if err := db.queryRow(ctx, `SELECT count(*), COALESCE(sum(cost), 0) FROM ledger WHERE org_id = ? AND outcome = 'ok'`, orgID).Scan(&t.Runs, &t.Cost); err != nil {
		return t, err
	}
	err = db.queryRow(ctx, `SELECT COALESCE(sum(amount), 0) FROM credit_grants WHERE org_id = ?`, orgID).Scan(&t.Grants)
	return t, err
}

// Ledger returns an organization's ledger rows, oldest first. It reads every row:
// it is for checks and small exports; LedgerPage pages.
func (db *DB) Ledger(ctx context.Context, orgID string) (runs []agentd.LedgerRow, err error) {
	defer wrap(&err, "store.Ledger(%q)", orgID)
	rows, err := db.query(ctx, `SELECT `+ledgerColumns+` FROM ledger WHERE org_id = ? ORDER BY created_at, run_id`, orgID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var r agentd.LedgerRow
		if err := scanRow(rows, &r); err != nil {
			return nil, err
		}
		runs = append(runs, r)
	}
	return runs, rows.Err()
}

// CountTurns returns how many turns a session has.
func (db *DB) CountTurns(ctx context.Context, k agentd.SessionKey) (n int, err error) {
	defer wrap(&err, "store.CountTurns")
	err = db.queryRow(ctx, `SELECT count(*) FROM session_turns WHERE org_id = ? AND agent_id = ? AND owner = ? AND session_id = ?`,
		k.OrgID, k.AgentID, k.Owner, k.SessionID).Scan(&n)
	return n, err
}

// toolsText is the tools column of a turn: JSON, or "" (stored as NULL) for a
// plain exchange.
func toolsText(t *agentd.TurnTools) string {
	if t.Empty() {
		return ""
	}
	b, err := json.Marshal(t)
	if err != nil {
		panic("store: encode turn tools: " + err.Error()) // strings and slices of them cannot fail
	}
	return string(b)
}

// readTools decodes a tools column into t.
func readTools(col sql.NullString, t *agentd.TurnTools) error {
	if !col.Valid || col.String == "" {
		return nil
	}
	if err := json.Unmarshal([]byte(col.String), t); err != nil {
		return fmt.Errorf("session turn tools: %w", err)
	}
	return nil
}
