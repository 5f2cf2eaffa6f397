package client

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
)

// AuditFilter selects audit entries; empty fields match everything.
type AuditFilter struct {
	Org      string // id or name; operator keys only
	Action   string // e.g. key.create, credits.grant, agent.update
	Actor    string // the acting key's id
	From, To string // a day (YYYY-MM-DD), an RFC 3339 time or Unix seconds
	Cursor   string // NextCursor of the previous page
	Limit    int    // 1–1000; the server's default (100) when 0
}

func (f AuditFilter) query() url.Values {
	q := url.Values{}
	setNonEmpty(q, "org", f.Org)
	setNonEmpty(q, "action", f.Action)
	setNonEmpty(q, "actor", f.Actor)
	setNonEmpty(q, "from", f.From)
	setNonEmpty(q, "to", f.To)
	setNonEmpty(q, "cursor", f.Cursor)
	if f.Limit != 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	return q
}

// AuditEntry is one administrative change: who made it (nil actor fields: agentd
// itself), when, from where, and what it did.
type AuditEntry struct {
	ID         string          `json:"id"`
	CreatedAt  string          `json:"created_at"`
	OrgID      string          `json:"org_id"`
	ActorKeyID *string         `json:"actor_key_id"`
	ActorOwner *string         `json:"actor_owner"`
	ActorOrgID *string         `json:"actor_org_id"`
	ClientIP   *string         `json:"client_ip"`
	RequestID  *string         `json:"request_id"`
	Action     string          `json:"action"`
	TargetType string          `json:"target_type"`
	TargetID   string          `json:"target_id"`
	Detail     json.RawMessage `json:"detail"`
}

// AuditPage is a page of audit entries, newest first; NextCursor is nil after
// the last page.
type AuditPage struct {
	Data       []AuditEntry `json:"data"`
	NextCursor *string      `json:"next_cursor"`
}

// Audit returns one page of the audit trail: every organization's for an operator
// key, its own organization's for an admin key.
func (c *Client) Audit(ctx context.Context, f AuditFilter) (*AuditPage, error) {
	var out AuditPage
	if err := c.Do(ctx, http.MethodGet, withQuery("/api/v3/admin/audit", f.query()), nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
