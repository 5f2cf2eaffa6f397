package store

import (
	"context"
	"database/sql"
	"strings"
	"time"

	"github.com/agentd/agentd"
)

// accessColumns are a key's allow-list of agents and its expiry (migration
// sqlite 0012, postgres 0014).
const accessColumns = `k.agents, k.expires_at`

// accessScan reads accessColumns.
type accessScan struct {
	agents  string
	expires sql.NullInt64
}

func (a *accessScan) agentList() []string { return strings.Fields(a.agents) }

func expiresArg(t *time.Time) any {
	if t == nil {
		return nil
	}
	return micros(*t)
}

// SetKeyAccess stores a key's allow-list of agents (normalized names; empty for
// every agent) and its expiry (nil: never) as auth decided them. An unknown key
// is ENotFound.
func (t *Tx) SetKeyAccess(ctx context.Context, keyID string, agents []string, expires *time.Time) (err error) {
	defer wrap(&err, "store.SetKeyAccess(%q)", keyID)
	res, err := t.exec(ctx, `UPDATE api_keys SET agents = ?, expires_at = ? WHERE id = ?`,
		strings.Join(agents, " "), expiresArg(expires), keyID)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return agentd.Errorf(agentd.ENotFound, "key %q not found", keyID)
	}
	return nil
}

// DefaultLatencyDays and MaxLatencyRuns bound AgentLatencies' read of the
// ledger: the successful runs of the last days, the newest first, at most so many.
const (
	DefaultLatencyDays = 30
	MaxLatencyRuns     = 10000
)

// AgentLatencies returns the latencies in milliseconds of agent's successful
// runs created at or after since, the newest first and at most MaxLatencyRuns:
// an index range of ledger_agent_time. Rows pruned by retention are gone, so
// this reads what the ledger still holds.
func (db *DB) AgentLatencies(ctx context.Context, agentID string, since time.Time) (_ []int64, err error) {
	defer wrap(&err, "store.AgentLatencies(%q)", agentID)
	rows, err := db.query(ctx, `SELECT latency_ms FROM ledger WHERE agent_id = ? AND created_at >= ? AND outcome = ?
		ORDER BY created_at DESC LIMIT ?`, agentID, micros(since), string(agentd.OutcomeOK), MaxLatencyRuns)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []int64
	for rows.Next() {
		var v int64
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}
