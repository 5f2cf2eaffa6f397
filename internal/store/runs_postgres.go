package store

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"github.com/agentd/agentd"
)

// recordRunOne is RecordRun as one statement, for PostgreSQL: every write of the
// run (ledger row, rollup, charge, agent stats, idempotency record, session turn)
// is a data-modifying CTE of one INSERT, so the run costs the writer one round
// trip instead of five. The parts touch different tables, so that they share one
// snapshot changes nothing; the turn is still stored only while the agent exists.
func (t *Tx) recordRunOne(ctx context.Context, r *Run) (turnStored bool, err error) {
	row := &r.LedgerRow
	created := micros(row.CreatedAt)
	ok := row.Outcome == agentd.OutcomeOK
	v := runVariant{charge: row.Cost > 0, ok: ok, agent: row.AgentID != "", idem: ok && r.Idem != nil, turn: ok && r.Turn != nil}
	runs, failed, latency := int64(1), int64(0), row.LatencyMS
	if !ok {
		runs, failed, latency = 0, 1, 0
	}
	args := []any{
		row.RunID, created, row.OrgID, row.KeyID, row.Owner, row.AgentID, row.AgentName, row.AgentVersion,
		row.SessionID, row.ModelRequested, row.Model, row.InputTokens, row.OutputTokens, row.UsageSource, row.Cost,
		row.LatencyMS, string(row.Outcome), row.ErrorCode,
		row.OrgID, dayOf(created), row.AgentID, row.AgentName, row.Model, row.KeyID,
		runs, failed, row.InputTokens, row.OutputTokens, row.Cost, latency,
	}
	if v.charge {
		args = append(args, row.Cost, row.OrgID)
	}
	if v.agent {
		if ok {
			args = append(args, row.LatencyMS, created, row.AgentID)
		} else {
			args = append(args, row.AgentID)
		}
	}
	if v.idem {
		i := r.Idem
		args = append(args, i.OrgID, i.KeyID, i.Key, i.RequestHash, i.RunID, string(i.Result), i.Created, i.Expires)
	}
	if v.turn {
		args = append(args, row.OrgID, row.Owner, row.AgentID, row.SessionID, row.RunID, r.Turn.User, r.Turn.Assistant,
			r.Turn.UserTokens, r.Turn.AssistantTokens, row.InputTokens, row.OutputTokens, created, row.AgentID, row.OrgID)
	}
	var charged, turns int
	if err := t.queryRow(ctx, v.query(), args...).Scan(&charged, &turns); err != nil {
		return false, err
	}
	if v.charge && charged != 1 {
		return false, fmt.Errorf("organization %q not found", row.OrgID)
	}
	return turns == 1, nil
}

// runVariant is which parts a run's statement has.
type runVariant struct{ charge, ok, agent, idem, turn bool }

var runQueries sync.Map // runVariant → query

func (v runVariant) query() string {
	if q, ok := runQueries.Load(v); ok {
		return q.(string)
	}
	var b strings.Builder
	b.WriteString(`WITH l AS (INSERT INTO ledger (run_id, created_at, org_id, key_id, owner, agent_id, agent_name, agent_version,
		session_id, model_requested, model, input_tokens, output_tokens, usage_source, cost, latency_ms, outcome, error_code)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)),
	r AS (INSERT INTO usage_daily (org_id, day, agent_id, agent_name, model, key_id,
		runs, failed, input_tokens, output_tokens, cost, latency_ms)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (org_id, day, agent_id, model, key_id) DO UPDATE SET
		agent_name = excluded.agent_name,
		runs = usage_daily.runs + excluded.runs,
		failed = usage_daily.failed + excluded.failed,
		input_tokens = usage_daily.input_tokens + excluded.input_tokens,
		output_tokens = usage_daily.output_tokens + excluded.output_tokens,
		cost = usage_daily.cost + excluded.cost,
		latency_ms = usage_daily.latency_ms + excluded.latency_ms)`)
	charged, turns := "0", "0"
	if v.charge {
		b.WriteString(`,
	o AS (UPDATE orgs SET balance = balance - ? WHERE id = ? RETURNING 1)`)
		charged = "(SELECT count(*) FROM o)"
	}
	if v.agent && v.ok {
		b.WriteString(`,
	a AS (UPDATE agents SET usage_count = usage_count + 1, total_latency_ms = total_latency_ms + ?, last_used = ? WHERE id = ?)`)
	} else if v.agent {
		b.WriteString(`,
	a AS (UPDATE agents SET failed_count = failed_count + 1 WHERE id = ?)`)
	}
	if v.idem {
		b.WriteString(`,
	i AS (INSERT INTO idempotency (org_id, key_id, idem_key, request_hash, run_id, result, created_at, expires_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (org_id, key_id, idem_key) DO UPDATE SET request_hash = excluded.request_hash, run_id = excluded.run_id,
		result = excluded.result, created_at = excluded.created_at, expires_at = excluded.expires_at
		WHERE idempotency.expires_at <= excluded.created_at)`)
	}
	if v.turn {
		b.WriteString(`,
	t AS (INSERT INTO session_turns (org_id, owner, agent_id, session_id, run_id, user_message, assistant_message,
		user_tokens, assistant_tokens, input_tokens, output_tokens, created_at)
		SELECT ?, ?, ?, ?, ?, ?, ?, CAST(? AS BIGINT), CAST(? AS BIGINT), CAST(? AS BIGINT), CAST(? AS BIGINT), CAST(? AS BIGINT)
		WHERE EXISTS (SELECT 1 FROM agents WHERE id = ? AND org_id = ?) RETURNING 1)`)
		turns = "(SELECT count(*) FROM t)"
	}
	b.WriteString("\n\tSELECT " + charged + ", " + turns)
	q := b.String()
	runQueries.Store(v, q)
	return q
}
