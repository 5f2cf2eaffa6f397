package store

import (
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strconv"

	"github.com/agentd/agentd"
)

// An agent's versions are immutable rows of agent_versions; agents.version points
// at the active one. A draft is a version stored without moving the pointer, and
// activating a version (a rollback, a promotion) moves only the pointer.

const versionColumns = `v.version, v.model, v.instructions, v.demonstrations, v.temperature, v.max_tokens, v.created_at,
	v.tools, v.response_format, v.note, v.author_key_id, v.eval_status`

// fillVersion completes a scanned version with its columns that need decoding.
func fillVersion(v *agentd.Version, created int64, demos string, tools, format, eval sql.NullString) error {
	if tools.Valid {
		v.Tools = []byte(tools.String)
	}
	if format.Valid {
		v.ResponseFormat = []byte(format.String)
	}
	v.EvalStatus = eval.String
	v.CreatedAt = fromMicros(created)
	return json.Unmarshal([]byte(demos), &v.Demonstrations)
}

func scanVersion(s interface{ Scan(...any) error }) (*agentd.Version, error) {
	var v agentd.Version
	var created int64
	var demos string
	var tools, format, eval sql.NullString
	if err := s.Scan(&v.Number, &v.Model, &v.Instructions, &demos, &v.Temperature, &v.MaxTokens, &created,
		&tools, &format, &v.Note, &v.AuthorKeyID, &eval); err != nil {
		return nil, err
	}
	if err := fillVersion(&v, created, demos, tools, format, eval); err != nil {
		return nil, err
	}
	return &v, nil
}

// canaryColumns are the canary_version and canary_percent of c (NULL, 0 for none).
func canaryColumns(c *agentd.Canary) (any, float64) {
	if c == nil {
		return nil, 0
	}
	return c.Version, c.Percent
}

func versionNotFound(agentID string, n int) error {
	return agentd.Errorf(agentd.ENotFound, "agent %q has no version %d", agentID, n)
}

// versionQuery reads version n of the agent of org agentID, a draft or not.
const versionQuery = `SELECT ` + versionColumns + ` FROM agent_versions v JOIN agents a ON a.id = v.agent_id
	WHERE a.org_id = ? AND v.agent_id = ? AND v.version = ?`

// AgentVersion returns version n of the agent of org with the given id, active,
// past or draft. A version the agent does not have is ENotFound.
func (db *DB) AgentVersion(ctx context.Context, orgID, agentID string, n int) (_ *agentd.Version, err error) {
	defer wrap(&err, "store.AgentVersion(%q, %d)", agentID, n)
	v, err := scanVersion(db.queryRow(ctx, versionQuery, orgID, agentID, n))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, versionNotFound(agentID, n)
	}
	return v, err
}

// AgentVersion is DB.AgentVersion inside the write transaction.
func (t *Tx) AgentVersion(ctx context.Context, orgID, agentID string, n int) (_ *agentd.Version, err error) {
	defer wrap(&err, "store.AgentVersion(%q, %d)", agentID, n)
	v, err := scanVersion(t.queryRow(ctx, versionQuery, orgID, agentID, n))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, versionNotFound(agentID, n)
	}
	return v, err
}

// VersionsPage returns up to limit versions of the agent of org (50 when limit ≤
// 0), newest first, after cursor ("" for the first page), and the cursor of the
// next page ("" after the last). A malformed cursor is EInvalid.
func (db *DB) VersionsPage(ctx context.Context, orgID, agentID, cursor string, limit int) (vs []agentd.Version, next string, err error) {
	defer wrap(&err, "store.VersionsPage(%q)", agentID)
	if limit <= 0 {
		limit = defaultPage
	}
	q := `SELECT ` + versionColumns + ` FROM agent_versions v JOIN agents a ON a.id = v.agent_id WHERE a.org_id = ? AND v.agent_id = ?`
	args := []any{orgID, agentID}
	if cursor != "" {
		b, err := base64.RawURLEncoding.DecodeString(cursor)
		n, perr := strconv.Atoi(string(b))
		if err != nil || perr != nil || n < 1 {
			return nil, "", badCursor()
		}
		q += ` AND v.version < ?`
		args = append(args, n)
	}
	rows, err := db.query(ctx, q+` ORDER BY v.version DESC LIMIT ?`, append(args, limit+1)...)
	if err != nil {
		return nil, "", err
	}
	defer rows.Close()
	vs = []agentd.Version{}
	for rows.Next() {
		v, err := scanVersion(rows)
		if err != nil {
			return nil, "", err
		}
		vs = append(vs, *v)
	}
	if err := rows.Err(); err != nil {
		return nil, "", err
	}
	if len(vs) > limit {
		vs = vs[:limit]
		next = encodeCursor(strconv.Itoa(vs[limit-1].Number))
	}
	return vs, next, nil
}

// AddVersion stores v as the next version of the agent of org agentID without
// making it active (a draft; v.Number is set). An agent that does not exist is
// ENotFound.
func (t *Tx) AddVersion(ctx context.Context, orgID, agentID string, v *agentd.Version) (err error) {
	defer wrap(&err, "store.AddVersion(%q)", agentID)
	if err := t.queryRow(ctx, `SELECT COALESCE(max(v.version), 0) + 1 FROM agent_versions v JOIN agents a ON a.id = v.agent_id
		WHERE v.agent_id = ? AND a.org_id = ?`, agentID, orgID).Scan(&v.Number); err != nil {
		return err
	}
	if v.Number == 1 {
		return agentd.Errorf(agentd.ENotFound, "agent %q not found", agentID)
	}
	return t.insertVersion(ctx, agentID, v)
}

// SetEvalStatus records how the evaluation of version n of agent agentID ended:
// agentd.EvalPassed, agentd.EvalFailed, or "" (never evaluated). A version that
// does not exist is ENotFound; another status is EInvalid.
func (t *Tx) SetEvalStatus(ctx context.Context, agentID string, version int, status string) (err error) {
	defer wrap(&err, "store.SetEvalStatus(%q, %d)", agentID, version)
	var st any
	switch status {
	case "":
	case agentd.EvalPassed, agentd.EvalFailed:
		st = status
	default:
		return agentd.Errorf(agentd.EInvalid, "eval status must be %q, %q or empty; got %q", agentd.EvalPassed, agentd.EvalFailed, status)
	}
	res, err := t.exec(ctx, `UPDATE agent_versions SET eval_status = ? WHERE agent_id = ? AND version = ?`, st, agentID, version)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return versionNotFound(agentID, version)
	}
	return nil
}
