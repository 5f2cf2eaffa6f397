package store

import (
	"context"
	"fmt"

	"github.com/agentd/agentd"
)

// SessionKey names one conversation. Every part scopes it: the same session id
// used by another owner, agent or organization is another conversation.
type SessionKey struct {
	OrgID, AgentID, Owner, SessionID string
}

// Turn is one stored exchange, with token counts cached so that prompt assembly does
// not count history again.
type Turn struct {
	User, Assistant             string
	UserTokens, AssistantTokens int
}

// History calls fn with the turns of a session, newest first, until fn returns false.
// Stopping early is cheap: rows are read lazily.
func (db *DB) History(ctx context.Context, k SessionKey, fn func(Turn) bool) (err error) {
	defer wrap(&err, "store.History")
	rows, err := db.query(ctx, `SELECT user_message, assistant_message, user_tokens, assistant_tokens FROM session_turns
		WHERE org_id = ? AND agent_id = ? AND owner = ? AND session_id = ? ORDER BY id DESC`,
		k.OrgID, k.AgentID, k.Owner, k.SessionID)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var t Turn
		if err := rows.Scan(&t.User, &t.Assistant, &t.UserTokens, &t.AssistantTokens); err != nil {
			return err
		}
		if !fn(t) {
			break
		}
	}
	return rows.Err()
}

// Run is everything recorded about one run: its ledger row, its charge and, when it
// succeeded in a session that saves conversations, its turn.
type Run struct {
	ID             string
	Created        int64
	OrgID          string
	KeyID          string
	Owner          string
	AgentID        string
	AgentName      string
	AgentVersion   int
	SessionID      string // "" when none
	ModelRequested string
	Model          string
	InputTokens    int
	OutputTokens   int
	UsageSource    string
	Cost           agentd.Micros
	LatencyMS      int64
	Outcome        string // "ok" or "failed"
	ErrorCode      string

	// SaveTurn asks for the session turn to be stored (success, session id given,
	// the agent saves conversations).
	SaveTurn        bool
	UserMessage     string
	Reply           string
	UserTokens      int
	AssistantTokens int

	// KeyBudget asks for the cost to count against the key's budget, in the
	// period starting at KeyPeriodStart.
	KeyBudget      bool
	KeyPeriodStart int64
	// Idem, when set, stores the run's result for Idempotency-Key replays.
	Idem *Idem
}

// Run outcomes.
const (
	OutcomeOK     = "ok"
	OutcomeFailed = "failed"
	// OutcomeCancelled: the client went away mid-stream; the tokens generated
	// until then are charged, and no session turn is stored.
	OutcomeCancelled = "cancelled"
)

// RecordRun writes a run's ledger row, charges its cost to the organization, stores
// its session turn and updates the agent's stats, all in one savepoint of one
// transaction: all of it happens once, or none of it. A charge the balance cannot
// cover fails the whole record (holds make that unreachable; the CHECK makes it safe).
func (t *Tx) RecordRun(ctx context.Context, r *Run) (err error) {
	defer wrap(&err, "store.RecordRun(%q)", r.ID)
	if _, err := t.exec(ctx, `INSERT INTO ledger (run_id, created_at, org_id, key_id, owner, agent_id, agent_name, agent_version,
		session_id, model_requested, model, input_tokens, output_tokens, usage_source, cost, latency_ms, outcome, error_code)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		r.ID, r.Created, r.OrgID, r.KeyID, r.Owner, r.AgentID, r.AgentName, r.AgentVersion,
		r.SessionID, r.ModelRequested, r.Model, r.InputTokens, r.OutputTokens, r.UsageSource, r.Cost, r.LatencyMS, r.Outcome, r.ErrorCode); err != nil {
		return err
	}
	if err := t.rollup(ctx, r); err != nil {
		return err
	}
	if r.Cost > 0 {
		res, err := t.exec(ctx, `UPDATE orgs SET balance = balance - ? WHERE id = ?`, r.Cost, r.OrgID)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return fmt.Errorf("organization %q not found", r.OrgID)
		}
		if r.KeyBudget {
			if err := t.chargeKey(ctx, r.KeyID, r.Cost, r.KeyPeriodStart); err != nil {
				return err
			}
		}
	}
	if r.Idem != nil && r.Outcome == OutcomeOK {
		if err := t.putIdempotent(ctx, r.Idem); err != nil {
			return err
		}
	}
	if r.Outcome == OutcomeOK {
		if r.SaveTurn {
			if _, err := t.exec(ctx, `INSERT INTO session_turns (org_id, owner, agent_id, session_id, run_id, user_message, assistant_message,
				user_tokens, assistant_tokens, input_tokens, output_tokens, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
				r.OrgID, r.Owner, r.AgentID, r.SessionID, r.ID, r.UserMessage, r.Reply,
				r.UserTokens, r.AssistantTokens, r.InputTokens, r.OutputTokens, r.Created); err != nil {
				return err
			}
		}
		_, err = t.exec(ctx, `UPDATE agents SET usage_count = usage_count + 1, total_latency_ms = total_latency_ms + ?, last_used = ? WHERE id = ?`,
			r.LatencyMS, r.Created, r.AgentID)
	} else {
		_, err = t.exec(ctx, `UPDATE agents SET failed_count = failed_count + 1 WHERE id = ?`, r.AgentID)
	}
	return err
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
// it is for checks and small exports; filtered, paginated queries come with the
// usage API.
func (db *DB) Ledger(ctx context.Context, orgID string) (runs []Run, err error) {
	defer wrap(&err, "store.Ledger(%q)", orgID)
	rows, err := db.query(ctx, `SELECT run_id, created_at, org_id, key_id, owner, agent_id, agent_name, agent_version,
		session_id, model_requested, model, input_tokens, output_tokens, usage_source, cost, latency_ms, outcome, error_code
		FROM ledger WHERE org_id = ? ORDER BY created_at, run_id`, orgID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var r Run
		if err := rows.Scan(&r.ID, &r.Created, &r.OrgID, &r.KeyID, &r.Owner, &r.AgentID, &r.AgentName, &r.AgentVersion,
			&r.SessionID, &r.ModelRequested, &r.Model, &r.InputTokens, &r.OutputTokens, &r.UsageSource, &r.Cost, &r.LatencyMS,
			&r.Outcome, &r.ErrorCode); err != nil {
			return nil, err
		}
		runs = append(runs, r)
	}
	return runs, rows.Err()
}

// CountTurns returns how many turns a session has.
func (db *DB) CountTurns(ctx context.Context, k SessionKey) (n int, err error) {
	defer wrap(&err, "store.CountTurns")
	err = db.queryRow(ctx, `SELECT count(*) FROM session_turns WHERE org_id = ? AND agent_id = ? AND owner = ? AND session_id = ?`,
		k.OrgID, k.AgentID, k.Owner, k.SessionID).Scan(&n)
	return n, err
}
