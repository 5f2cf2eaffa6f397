package store

import (
	"context"
	"encoding/base64"
	"strconv"
	"strings"

	"github.com/agentd/agentd"
)

// Audit records e in the write's transaction: the audit row commits with the
// change it records, or neither does. e.ID is set when empty. The owner of the
// change decides what e says; the store only keeps it.
func (t *Tx) Audit(ctx context.Context, e *agentd.AuditEntry) (err error) {
	defer wrap(&err, "store.Audit(%q)", e.Action)
	if e.ID == "" {
		e.ID = agentd.NewID("audit")
	}
	detail := e.Detail
	if len(detail) == 0 {
		detail = []byte("{}")
	}
	_, err = t.exec(ctx, `INSERT INTO audit_log (id, created_at, org_id, actor_key_id, actor_owner, actor_org_id, client_ip, request_id,
		action, target_type, target_id, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		e.ID, micros(e.CreatedAt), e.OrgID, e.ActorKeyID, e.ActorOwner, e.ActorOrgID, e.ClientIP, e.RequestID,
		string(e.Action), e.TargetType, e.TargetID, string(detail))
	return err
}

const auditColumns = `id, created_at, org_id, actor_key_id, actor_owner, actor_org_id, client_ip, request_id,
	action, target_type, target_id, detail`

// AuditPage returns one page of the audit entries matching f, newest first
// ((created_at, id) descending), and the cursor of the next page ("" after the
// last). Pages are keyset-paginated over an index of (org_id, created_at, id), or
// of (created_at, id) for every organization. A cursor AuditPage did not make is
// EInvalid.
func (db *DB) AuditPage(ctx context.Context, f agentd.AuditFilter) (entries []agentd.AuditEntry, next string, err error) {
	defer wrap(&err, "store.AuditPage(%q)", f.OrgID)
	limit := f.Limit
	if limit <= 0 {
		limit = agentd.DefaultAuditPage
	}
	limit = min(limit, agentd.MaxAuditPage)
	var q strings.Builder
	q.WriteString(`SELECT ` + auditColumns + ` FROM audit_log WHERE 1 = 1`)
	var args []any
	cond := func(sql string, v ...any) {
		q.WriteString(" AND " + sql)
		args = append(args, v...)
	}
	if f.OrgID != "" {
		cond("org_id = ?", f.OrgID)
	}
	if !f.From.IsZero() {
		cond("created_at >= ?", micros(f.From))
	}
	if !f.To.IsZero() {
		cond("created_at < ?", micros(f.To))
	}
	if f.Action != "" {
		cond("action = ?", string(f.Action))
	}
	if f.ActorKeyID != "" {
		cond("actor_key_id = ?", f.ActorKeyID)
	}
	if f.Cursor != "" {
		created, id, err := parseAuditCursor(f.Cursor)
		if err != nil {
			return nil, "", err
		}
		cond("(created_at, id) < (?, ?)", created, id)
	}
	// One row more than the page tells whether another page follows.
	q.WriteString(" ORDER BY created_at DESC, id DESC LIMIT ?")
	args = append(args, limit+1)
	rows, err := db.query(ctx, q.String(), args...)
	if err != nil {
		return nil, "", err
	}
	defer rows.Close()
	entries = make([]agentd.AuditEntry, 0, min(limit, 64))
	for rows.Next() {
		var e agentd.AuditEntry
		var created int64
		var action, detail string
		if err := rows.Scan(&e.ID, &created, &e.OrgID, &e.ActorKeyID, &e.ActorOwner, &e.ActorOrgID, &e.ClientIP, &e.RequestID,
			&action, &e.TargetType, &e.TargetID, &detail); err != nil {
			return nil, "", err
		}
		e.CreatedAt, e.Action, e.Detail = fromMicros(created), agentd.AuditAction(action), []byte(detail)
		entries = append(entries, e)
	}
	if err := rows.Err(); err != nil {
		return nil, "", err
	}
	if len(entries) > limit {
		entries = entries[:limit]
		last := entries[limit-1]
		next = auditCursor(micros(last.CreatedAt), last.ID)
	}
	return entries, next, nil
}

// auditCursor makes the opaque cursor that resumes after the entry (created, id).
func auditCursor(created int64, id string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(created, 10) + "|" + id))
}

func parseAuditCursor(c string) (int64, string, error) {
	bad := agentd.Invalid("cursor is malformed: pass next_cursor from a previous page unchanged", "value_error", "query", "cursor")
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return 0, "", bad
	}
	num, id, ok := strings.Cut(string(b), "|")
	created, err := strconv.ParseInt(num, 10, 64)
	if !ok || err != nil || created < 0 || !strings.HasPrefix(id, "audit-") {
		return 0, "", bad
	}
	return created, id, nil
}
