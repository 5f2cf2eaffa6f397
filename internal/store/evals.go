package store

import (
	"context"
	"database/sql"
	"errors"

	"github.com/agentd/agentd"
)

// Eval is one stored evaluation of an agent's version: its totals, its cases'
// results as the JSON its owner (run) wrote, and the runs it made.
type Eval struct {
	ID         string
	OrgID      string
	AgentID    string
	Version    int
	Status     string // agentd.EvalPassed or agentd.EvalFailed
	Passed     int
	Failed     int
	Cost       agentd.Micros
	StartedAt  int64 // unix micros
	FinishedAt int64
	KeyID      string
	Cases      []byte   // JSON
	RunIDs     []string // not read back by LatestEval
}

// InsertEval stores e and marks its runs as an eval's.
func (t *Tx) InsertEval(ctx context.Context, e *Eval) (err error) {
	defer wrap(&err, "store.InsertEval(%q, %d)", e.AgentID, e.Version)
	if _, err := t.exec(ctx, `INSERT INTO evals (id, org_id, agent_id, version, status, passed, failed, cost, started_at, finished_at, key_id, cases)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		e.ID, e.OrgID, e.AgentID, e.Version, e.Status, e.Passed, e.Failed, e.Cost, e.StartedAt, e.FinishedAt, e.KeyID, string(e.Cases)); err != nil {
		return err
	}
	for _, id := range e.RunIDs {
		if _, err := t.exec(ctx, `INSERT INTO eval_runs (run_id, eval_id) VALUES (?, ?)`, id, e.ID); err != nil {
			return err
		}
	}
	return nil
}

// LatestEval is the newest evaluation of version n of agent agentID in
// organization orgID; ENotFound when it has none.
func (db *DB) LatestEval(ctx context.Context, orgID, agentID string, n int) (_ *Eval, err error) {
	defer wrap(&err, "store.LatestEval(%q, %d)", agentID, n)
	e := Eval{OrgID: orgID, AgentID: agentID, Version: n}
	var cases string
	err = db.queryRow(ctx, `SELECT id, status, passed, failed, cost, started_at, finished_at, key_id, cases FROM evals
		WHERE org_id = ? AND agent_id = ? AND version = ? ORDER BY finished_at DESC, id DESC LIMIT 1`, orgID, agentID, n).
		Scan(&e.ID, &e.Status, &e.Passed, &e.Failed, &e.Cost, &e.StartedAt, &e.FinishedAt, &e.KeyID, &cases)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, agentd.Errorf(agentd.ENotFound, "version %d of agent %q has not been evaluated", n, agentID)
	}
	if err != nil {
		return nil, err
	}
	e.Cases = []byte(cases)
	return &e, nil
}

// EvalRuns are the ids of the runs that evaluation id made.
func (db *DB) EvalRuns(ctx context.Context, id string) (_ []string, err error) {
	defer wrap(&err, "store.EvalRuns(%q)", id)
	rows, err := db.query(ctx, `SELECT run_id FROM eval_runs WHERE eval_id = ? ORDER BY run_id`, id)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var r string
		if err := rows.Scan(&r); err != nil {
			return nil, err
		}
		ids = append(ids, r)
	}
	return ids, rows.Err()
}
