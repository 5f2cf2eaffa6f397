package store

import (
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strconv"
	"strings"

	"github.com/agentd/agentd"
)

const agentColumns = `a.id, a.org_id, a.name, a.description, a.active, a.creator, a.conversation_saving,
	a.usage_count, a.failed_count, a.total_latency_ms, a.last_used, a.created_at, a.updated_at, a.canary_version, a.canary_percent,
	` + versionColumns

const agentFrom = ` FROM agents a JOIN agent_versions v ON v.agent_id = a.id AND v.version = a.version`

func scanAgent(s interface{ Scan(...any) error }) (*agentd.Agent, error) {
	var a agentd.Agent
	var lastUsed sql.NullInt64
	var created, updated, vcreated int64
	var demos string
	var tools, format, eval sql.NullString
	var canary sql.NullInt64
	var percent float64
	err := s.Scan(&a.ID, &a.OrgID, &a.Name, &a.Description, &a.Active, &a.Creator, &a.ConversationSaving,
		&a.UsageCount, &a.FailedCount, &a.TotalLatencyMS, &lastUsed, &created, &updated, &canary, &percent,
		&a.Version.Number, &a.Version.Model, &a.Version.Instructions, &demos, &a.Version.Temperature, &a.Version.MaxTokens, &vcreated,
		&tools, &format, &a.Version.Note, &a.Version.AuthorKeyID, &eval)
	if err != nil {
		return nil, err
	}
	if canary.Valid {
		a.Canary = &agentd.Canary{Version: int(canary.Int64), Percent: percent}
	}
	a.LastUsed = nullTime(lastUsed)
	a.CreatedAt, a.UpdatedAt = fromMicros(created), fromMicros(updated)
	if err := fillVersion(&a.Version, vcreated, demos, tools, format, eval); err != nil {
		return nil, err
	}
	return &a, nil
}

// Agent returns the agent of org with the given id, active or not.
func (db *DB) Agent(ctx context.Context, orgID, id string) (_ *agentd.Agent, err error) {
	defer wrap(&err, "store.Agent(%q)", id)
	a, err := scanAgent(db.queryRow(ctx, `SELECT `+agentColumns+agentFrom+` WHERE a.org_id = ? AND a.id = ?`, orgID, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, agentd.Errorf(agentd.ENotFound, "agent %q not found", id)
	}
	return a, err
}

// AgentByName returns the agent of org with the given normalized name, active or not.
func (db *DB) AgentByName(ctx context.Context, orgID, name string) (_ *agentd.Agent, err error) {
	defer wrap(&err, "store.AgentByName(%q)", name)
	a, err := scanAgent(db.queryRow(ctx, `SELECT `+agentColumns+agentFrom+` WHERE a.org_id = ? AND a.name = ?`, orgID, name))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, agentd.Errorf(agentd.ENotFound, "agent %q not found", name)
	}
	return a, err
}

// AgentsPage returns up to limit agents of org (50 when limit ≤ 0) in creation
// order after cursor ("" for the first page), and the cursor of the next page (""
// after the last). A malformed cursor is EInvalid. With names, only the agents
// of those normalized names (a key's allow-list).
func (db *DB) AgentsPage(ctx context.Context, orgID string, includeInactive bool, cursor string, limit int, names ...string) (agents []*agentd.Agent, next string, err error) {
	defer wrap(&err, "store.AgentsPage(%q)", orgID)
	if limit <= 0 {
		limit = defaultPage
	}
	q, args, err := agentPageQuery(orgID, includeInactive, cursor, names)
	if err != nil {
		return nil, "", err
	}
	rows, err := db.query(ctx, `SELECT `+agentColumns+agentFrom+q+` LIMIT ?`, append(args, limit+1)...)
	if err != nil {
		return nil, "", err
	}
	defer rows.Close()
	agents = []*agentd.Agent{}
	for rows.Next() {
		a, err := scanAgent(rows)
		if err != nil {
			return nil, "", err
		}
		agents = append(agents, a)
	}
	if err := rows.Err(); err != nil {
		return nil, "", err
	}
	if len(agents) > limit {
		agents = agents[:limit]
		last := agents[limit-1]
		next = agentCursor(micros(last.CreatedAt), last.ID)
	}
	return agents, next, nil
}

// AgentRefs is AgentsPage without the agents' configuration: ids, names, models.
func (db *DB) AgentRefs(ctx context.Context, orgID string, includeInactive bool, cursor string, limit int, names ...string) (refs []agentd.AgentRef, next string, err error) {
	defer wrap(&err, "store.AgentRefs(%q)", orgID)
	if limit <= 0 {
		limit = defaultPage
	}
	refs = []agentd.AgentRef{}
	q, args, err := agentPageQuery(orgID, includeInactive, cursor, names)
	if err != nil {
		return nil, "", err
	}
	rows, err := db.query(ctx, `SELECT a.id, a.name, v.model, a.active, a.created_at`+agentFrom+q+` LIMIT ?`, append(args, limit+1)...)
	if err != nil {
		return nil, "", err
	}
	defer rows.Close()
	for rows.Next() {
		var r agentd.AgentRef
		var created int64
		if err := rows.Scan(&r.ID, &r.Name, &r.Model, &r.Active, &created); err != nil {
			return nil, "", err
		}
		r.CreatedAt = fromMicros(created)
		refs = append(refs, r)
	}
	if err := rows.Err(); err != nil {
		return nil, "", err
	}
	if len(refs) > limit {
		refs = refs[:limit]
		last := refs[limit-1]
		next = agentCursor(micros(last.CreatedAt), last.ID)
	}
	return refs, next, nil
}

// agentPageQuery is the WHERE and ORDER BY of a page of org's agents after cursor,
// an index range of agents_org_created.
func agentPageQuery(orgID string, includeInactive bool, cursor string, names []string) (string, []any, error) {
	q := ` WHERE a.org_id = ?`
	args := []any{orgID}
	if !includeInactive {
		q += ` AND a.active`
	}
	if len(names) > 0 {
		q += ` AND a.name IN (?` + strings.Repeat(`, ?`, len(names)-1) + `)`
		for _, n := range names {
			args = append(args, n)
		}
	}
	if cursor != "" {
		created, id, err := parseAgentCursor(cursor)
		if err != nil {
			return "", nil, err
		}
		q += ` AND (a.created_at, a.id) > (?, ?)`
		args = append(args, created, id)
	}
	return q + ` ORDER BY a.created_at, a.id`, args, nil
}

func agentCursor(created int64, id string) string {
	return encodeCursor(strconv.FormatInt(created, 10) + "|" + id)
}

func parseAgentCursor(c string) (int64, string, error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return 0, "", badCursor()
	}
	num, id, ok := strings.Cut(string(b), "|")
	created, err := strconv.ParseInt(num, 10, 64)
	if !ok || err != nil || !strings.HasPrefix(id, "agent-") {
		return 0, "", badCursor()
	}
	return created, id, nil
}

// CountAgents returns how many agents org has, inside the write transaction that is
// about to add one, so that a limit on their number holds under concurrency.
func (t *Tx) CountAgents(ctx context.Context, orgID string) (n int, err error) {
	defer wrap(&err, "store.CountAgents(%q)", orgID)
	err = t.queryRow(ctx, `SELECT count(*) FROM agents WHERE org_id = ?`, orgID).Scan(&n)
	return n, err
}

// CreateAgent inserts a and its version (a.Version.Number is set to 1). A taken
// name is EAlreadyExists.
func (t *Tx) CreateAgent(ctx context.Context, a *agentd.Agent) (err error) {
	defer wrap(&err, "store.CreateAgent(%q)", a.Name)
	a.Version.Number = 1
	cv, cp := canaryColumns(a.Canary)
	_, err = t.exec(ctx, `INSERT INTO agents (id, org_id, name, description, active, creator, conversation_saving, version, created_at, updated_at,
		canary_version, canary_percent) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		a.ID, a.OrgID, a.Name, a.Description, a.Active, a.Creator, a.ConversationSaving, a.Version.Number,
		micros(a.CreatedAt), micros(a.UpdatedAt), cv, cp)
	if t.d.isUnique(err) {
		return agentd.Errorf(agentd.EAlreadyExists, "an agent named %q already exists", a.Name)
	}
	if err != nil {
		return err
	}
	return t.insertVersion(ctx, a.ID, &a.Version)
}

func (t *Tx) insertVersion(ctx context.Context, agentID string, v *agentd.Version) error {
	demos := v.Demonstrations
	if demos == nil {
		demos = []agentd.Demonstration{}
	}
	js, err := json.Marshal(demos)
	if err != nil {
		return err
	}
	_, err = t.exec(ctx, `INSERT INTO agent_versions (agent_id, version, model, instructions, demonstrations, temperature, max_tokens, created_at,
		tools, response_format, note, author_key_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULLIF(CAST(? AS TEXT), ''), NULLIF(CAST(? AS TEXT), ''), ?, ?)`,
		agentID, v.Number, v.Model, v.Instructions, string(js), v.Temperature, v.MaxTokens, micros(v.CreatedAt),
		string(v.Tools), string(v.ResponseFormat), v.Note, v.AuthorKeyID)
	return err
}

// UpdateAgent stores a's identity fields and, when newVersion is true, a.Version as
// the next version (a.Version.Number is set). The agent must belong to a.OrgID.
func (t *Tx) UpdateAgent(ctx context.Context, a *agentd.Agent, newVersion bool) (err error) {
	defer wrap(&err, "store.UpdateAgent(%q)", a.ID)
	if newVersion {
		// COALESCE: an agent deleted meanwhile has no versions; that is a 404, not a NULL.
		if err := t.queryRow(ctx, `SELECT COALESCE(max(v.version), 0) + 1 FROM agent_versions v JOIN agents a ON a.id = v.agent_id
			WHERE v.agent_id = ? AND a.org_id = ?`, a.ID, a.OrgID).Scan(&a.Version.Number); err != nil {
			return err
		}
		if a.Version.Number == 1 {
			return agentd.Errorf(agentd.ENotFound, "agent %q not found", a.ID)
		}
		if err := t.insertVersion(ctx, a.ID, &a.Version); err != nil {
			return err
		}
	}
	cv, cp := canaryColumns(a.Canary)
	res, err := t.exec(ctx, `UPDATE agents SET name = ?, description = ?, active = ?, conversation_saving = ?, version = ?, updated_at = ?,
		canary_version = ?, canary_percent = ? WHERE id = ? AND org_id = ?`,
		a.Name, a.Description, a.Active, a.ConversationSaving, a.Version.Number, micros(a.UpdatedAt), cv, cp, a.ID, a.OrgID)
	if t.d.isUnique(err) {
		return agentd.Errorf(agentd.EAlreadyExists, "an agent named %q already exists", a.Name)
	}
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return agentd.Errorf(agentd.ENotFound, "agent %q not found", a.ID)
	}
	return nil
}

// DeleteAgent removes an agent of org with its versions and session history. Its
// ledger rows stay: they are the record of money spent.
func (t *Tx) DeleteAgent(ctx context.Context, orgID, id string) (err error) {
	defer wrap(&err, "store.DeleteAgent(%q)", id)
	if _, err := t.exec(ctx, `DELETE FROM session_turns WHERE agent_id = ? AND org_id = ?`, id, orgID); err != nil {
		return err
	}
	if _, err := t.exec(ctx, `DELETE FROM agent_versions WHERE agent_id = ? AND agent_id IN (SELECT id FROM agents WHERE org_id = ?)`, id, orgID); err != nil {
		return err
	}
	res, err := t.exec(ctx, `DELETE FROM agents WHERE id = ? AND org_id = ?`, id, orgID)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return agentd.Errorf(agentd.ENotFound, "agent %q not found", id)
	}
	return nil
}
