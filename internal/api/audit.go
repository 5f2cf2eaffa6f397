package api

import (
	"encoding/json"
	"net"
	"net/http"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/internal/reqlog"
)

// The audit trail: every administrative change is recorded by the package that
// owns it, in the change's transaction, with the principal that made it. The API's
// part is to say where each request came from (withOrigin) and to list the trail.

// withOrigin returns a copy of p (the Authenticator's is cached and shared) that
// says where r came from: the client's address and r's request id.
func withOrigin(r *http.Request, p *agentd.Principal) *agentd.Principal {
	c := *p
	c.ClientIP, c.RequestID = clientIP(r), originRequestID(r)
	return &c
}

// clientIP is the address of r's client: the host of the connection's remote
// address. agentd has no trusted-proxy setting, so X-Forwarded-For, which any
// client may send, is not believed.
func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// originRequestID is r's request id: the one reqlog.Middleware gave it (the
// client's X-Request-ID when well formed, else a new one, answered in
// X-Request-ID), or without the middleware the client's X-Request-ID when
// reqlog.ValidID; "" otherwise (nothing unbounded or unprintable a client sends
// goes into the audit trail).
func originRequestID(r *http.Request) string {
	if id := reqlog.ID(r.Context()); id != "" {
		return id
	}
	if v := r.Header.Get(reqlog.Header); reqlog.ValidID(v) {
		return v
	}
	return ""
}

// auditEntry is one audit entry as the API shows it.
type auditEntry struct {
	ID         string          `json:"id"`
	CreatedAt  string          `json:"created_at"`
	OrgID      string          `json:"org_id"`
	ActorKeyID *string         `json:"actor_key_id"` // null for agentd itself
	ActorOwner *string         `json:"actor_owner"`
	ActorOrgID *string         `json:"actor_org_id"`
	ClientIP   *string         `json:"client_ip"`
	RequestID  *string         `json:"request_id"`
	Action     string          `json:"action"`
	TargetType string          `json:"target_type"`
	TargetID   string          `json:"target_id"`
	Detail     json.RawMessage `json:"detail"`
}

// auditLog answers GET /api/v3/admin/audit: the audit trail, newest first, a page
// at a time; auth decides whose entries the key may read.
func (s *Server) auditLog(w http.ResponseWriter, r *http.Request, p *agentd.Principal) error {
	q := r.URL.Query()
	limit, err := pageLimit(r, agentd.DefaultAuditPage, agentd.MaxAuditPage)
	if err != nil {
		return err
	}
	from, to, err := timeRange(r)
	if err != nil {
		return err
	}
	f := agentd.AuditFilter{Action: agentd.AuditAction(q.Get("action")), ActorKeyID: q.Get("actor"),
		From: from, To: to, Cursor: q.Get("cursor"), Limit: limit}
	if f.Action != "" && !f.Action.Valid() {
		return agentd.Invalid("action must be one of "+auditActionList(), "enum", "query", "action")
	}
	entries, next, err := s.Keys.AuditPage(r.Context(), p, q.Get("org"), f)
	if err != nil {
		return err
	}
	data := make([]auditEntry, len(entries))
	for i, e := range entries {
		data[i] = auditEntry{ID: e.ID, CreatedAt: recordTime(e.CreatedAt), OrgID: e.OrgID,
			ActorKeyID: nonEmpty(e.ActorKeyID), ActorOwner: nonEmpty(e.ActorOwner), ActorOrgID: nonEmpty(e.ActorOrgID),
			ClientIP: nonEmpty(e.ClientIP), RequestID: nonEmpty(e.RequestID),
			Action: string(e.Action), TargetType: e.TargetType, TargetID: e.TargetID, Detail: e.Detail}
	}
	return writeJSON(w, http.StatusOK, map[string]any{"data": data, "next_cursor": nonEmpty(next)})
}

func auditActionList() string {
	var s string
	for i, a := range agentd.AuditActions {
		if i > 0 {
			s += ", "
		}
		s += string(a)
	}
	return s
}
