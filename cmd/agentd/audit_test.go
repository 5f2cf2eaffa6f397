package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/client"
	"github.com/agentd/agentd/internal/auth"
)

// auditAll reads every audit entry c may see that matches f, a page at a time,
// newest first.
func auditAll(t *testing.T, c *client.Client, f client.AuditFilter) []client.AuditEntry {
	t.Helper()
	var all []client.AuditEntry
	for pages := 0; ; pages++ {
		if pages > 1000 {
			t.Fatal("audit pages never end")
		}
		p, err := c.Audit(context.Background(), f)
		if err != nil {
			t.Fatalf("audit %+v: %v", f, err)
		}
		all = append(all, p.Data...)
		if p.NextCursor == nil {
			return all
		}
		f.Cursor = *p.NextCursor
	}
}

func str(p *string) string {
	if p == nil {
		return "<nil>"
	}
	return *p
}

// auditActor is a key as the audit trail names it.
type auditActor struct{ id, owner, org string }

// TestAuditEveryAdminEndpoint calls every administrative endpoint of the route
// table (internal/api/routes.go; TestAuditedRoutes in internal/api keeps the
// list whole) through the real server, each change answered by exactly one audit
// entry naming the action, the acting key, the target, where the request came
// from and what changed; and every refused or failed change by none.
func TestAuditEveryAdminEndpoint(t *testing.T) {
	s := startServer(t, "", nil)
	ctx := context.Background()
	op := s.client(s.Key)

	// At start, agentd itself created the default organization and the bootstrap
	// operator key.
	boot := auditAll(t, op, client.AuditFilter{})
	if len(boot) != 2 || boot[0].Action != "key.create" || boot[1].Action != "org.create" {
		t.Fatalf("entries at start: %+v", boot)
	}
	for _, e := range boot {
		if e.ActorKeyID != nil || e.ActorOwner != nil || e.ClientIP != nil || e.RequestID != nil {
			t.Errorf("bootstrap entry %+v: want no actor and no origin", e)
		}
	}
	defaultOrg := boot[1].TargetID
	opKey := auditActor{boot[0].TargetID, boot[0].TargetID, defaultOrg}
	if !strings.Contains(string(boot[0].Detail), `"bootstrap":true`) || !strings.Contains(string(boot[0].Detail), `"scopes":["operator"]`) {
		t.Errorf("bootstrap key entry detail %s", boot[0].Detail)
	}

	// ids and secrets made along the way
	var tenant, admKey, admSecret, runKey, runSecret, agentID, otherAgent, writerSecret string
	var writer auditActor
	admin := func() *client.Client { return s.client(admSecret) }
	adm := func() auditActor { return auditActor{admKey, admKey, tenant} }
	var secrets []string

	type want struct {
		action, targetType string
		targetID           func() string
		org                func() string
		actor              func() auditActor
		detail             map[string]any // exact, after JSON decoding
	}
	// A step makes one request as as() with its own X-Request-ID: a change (want)
	// or a refusal (status).
	type step struct {
		name    string
		route   string // the route table's pattern
		as      func() *client.Client
		method  string
		path    func() string
		body    any
		rawBody string // sent as it is instead of body
		status  int    // of a refused change; 0 for a change
		want    *want
		setup   func()                     // before the request
		after   func(data json.RawMessage) // with the response's data
	}
	fixed := func(s string) func() string { return func() string { return s } }
	tenantID := func() string { return tenant }
	steps := []step{
		{name: "create an organization", route: "POST /api/v3/admin/orgs", as: func() *client.Client { return op }, method: "POST",
			path: fixed("/api/v3/admin/orgs"), body: map[string]any{"name": "tenant"},
			want: &want{action: "org.create", targetType: "org", targetID: tenantID, org: tenantID, actor: func() auditActor { return opKey },
				detail: map[string]any{"name": "tenant"}},
			after: func(d json.RawMessage) { tenant = field(t, d, "id") }},
		{name: "create a taken organization name", route: "POST /api/v3/admin/orgs", as: func() *client.Client { return op }, method: "POST",
			path: fixed("/api/v3/admin/orgs"), body: map[string]any{"name": "tenant"}, status: 400},
		{name: "create an organization with a bad name", route: "POST /api/v3/admin/orgs", as: func() *client.Client { return op }, method: "POST",
			path: fixed("/api/v3/admin/orgs"), body: map[string]any{"name": "org-x"}, status: 422},
		{name: "grant credits", route: "POST /api/v3/admin/orgs/{org}/credits", as: func() *client.Client { return op }, method: "POST",
			path: fixed("/api/v3/admin/orgs/tenant/credits"), body: map[string]any{"amount": 12.5},
			want: &want{action: "credits.grant", targetType: "org", targetID: tenantID, org: tenantID, actor: func() auditActor { return opKey },
				detail: map[string]any{"amount": 12.5, "balance": 12.5}}},
		{name: "correct credits", route: "POST /api/v3/admin/orgs/{org}/credits", as: func() *client.Client { return op }, method: "POST",
			path: func() string { return "/api/v3/admin/orgs/" + tenant + "/credits" }, body: map[string]any{"amount": -2.5},
			want: &want{action: "credits.grant", targetType: "org", targetID: tenantID, org: tenantID, actor: func() auditActor { return opKey },
				detail: map[string]any{"amount": -2.5, "balance": 10.0, "correction": true}}},
		{name: "correct more credits than there are", route: "POST /api/v3/admin/orgs/{org}/credits", as: func() *client.Client { return op }, method: "POST",
			path: fixed("/api/v3/admin/orgs/tenant/credits"), body: map[string]any{"amount": -100}, status: 400},
		{name: "grant zero credits", route: "POST /api/v3/admin/orgs/{org}/credits", as: func() *client.Client { return op }, method: "POST",
			path: fixed("/api/v3/admin/orgs/tenant/credits"), body: map[string]any{"amount": 0}, status: 422},
		{name: "grant credits to no organization", route: "POST /api/v3/admin/orgs/{org}/credits", as: func() *client.Client { return op }, method: "POST",
			path: fixed("/api/v3/admin/orgs/nowhere/credits"), body: map[string]any{"amount": 1}, status: 404},
		{name: "mint a key for another organization", route: "POST /api/v3/keys", as: func() *client.Client { return op }, method: "POST",
			path: fixed("/api/v3/keys"), body: map[string]any{"name": "tenant admin", "org_id": "tenant", "scopes": []string{"admin"}},
			want: &want{action: "key.create", targetType: "key", targetID: func() string { return admKey }, org: tenantID, actor: func() auditActor { return opKey },
				detail: map[string]any{"name": "tenant admin", "scopes": []any{"admin"}, "owner": nil, "budget": nil, "budget_period": "none", "agents": []any{}, "expires_at": nil}},
			after: func(d json.RawMessage) {
				admKey, admSecret = field(t, d, "id"), field(t, d, "key")
				secrets = append(secrets, admSecret)
			}},
		{name: "mint a key with a budget", route: "POST /api/v3/keys", as: admin, method: "POST",
			path: fixed("/api/v3/keys"), body: map[string]any{"name": "ci", "scopes": []string{"run"}, "owner": "ci-bot", "budget": 3, "budget_period": "daily"},
			want: &want{action: "key.create", targetType: "key", targetID: func() string { return runKey }, org: tenantID, actor: adm,
				detail: map[string]any{"name": "ci", "scopes": []any{"run"}, "owner": "ci-bot", "budget": 3.0, "budget_period": "daily", "agents": []any{}, "expires_at": nil}},
			after: func(d json.RawMessage) {
				runKey, runSecret = field(t, d, "id"), field(t, d, "key")
				secrets = append(secrets, runSecret)
			}},
		{name: "mint a key above the minter's scopes", route: "POST /api/v3/keys", as: admin, method: "POST",
			path: fixed("/api/v3/keys"), body: map[string]any{"name": "up", "scopes": []string{"operator"}}, status: 403},
		{name: "mint a key without a name", route: "POST /api/v3/keys", as: admin, method: "POST",
			path: fixed("/api/v3/keys"), body: map[string]any{"scopes": []string{"run"}}, status: 422},
		{name: "mint a key as a run key", route: "POST /api/v3/keys", as: func() *client.Client { return s.client(runSecret) }, method: "POST",
			path: fixed("/api/v3/keys"), body: map[string]any{"name": "x"}, status: 403},
		{name: "change a key's budget", route: "PATCH /api/v3/keys/{id}", as: admin, method: "PATCH",
			path: func() string { return "/api/v3/keys/" + runKey }, body: map[string]any{"budget": 5},
			want: &want{action: "key.update", targetType: "key", targetID: func() string { return runKey }, org: tenantID, actor: adm,
				detail: map[string]any{"budget": 5.0, "budget_period": "daily"}}},
		{name: "lift a key's budget", route: "PATCH /api/v3/keys/{id}", as: func() *client.Client { return op }, method: "PATCH",
			path: func() string { return "/api/v3/keys/" + runKey }, body: map[string]any{"budget": nil, "budget_period": "none"},
			want: &want{action: "key.update", targetType: "key", targetID: func() string { return runKey }, org: tenantID, actor: func() auditActor { return opKey },
				detail: map[string]any{"budget": nil, "budget_period": "none"}}},
		{name: "change a key's rate limits", route: "PATCH /api/v3/keys/{id}", as: admin, method: "PATCH",
			path: func() string { return "/api/v3/keys/" + runKey }, body: map[string]any{"rate_limits": map[string]any{"rpm": 60}},
			want: &want{action: "key.update", targetType: "key", targetID: func() string { return runKey }, org: tenantID, actor: adm,
				detail: map[string]any{"rate_limits": map[string]any{"rpm": 60.0, "tpm": nil, "concurrent": nil}}}},
		{name: "change a peer's rate limits", route: "PATCH /api/v3/keys/{id}", as: admin, method: "PATCH",
			path: func() string { return "/api/v3/keys/" + admKey }, body: map[string]any{"rate_limits": map[string]any{"rpm": 1}}, status: 403},
		{name: "change a peer's budget", route: "PATCH /api/v3/keys/{id}", as: admin, method: "PATCH",
			path: func() string { return "/api/v3/keys/" + admKey }, body: map[string]any{"budget": 1}, status: 403},
		{name: "change a budget to a bad period", route: "PATCH /api/v3/keys/{id}", as: admin, method: "PATCH",
			path: func() string { return "/api/v3/keys/" + runKey }, body: map[string]any{"budget_period": "weekly"}, status: 422},
		{name: "change another organization's key", route: "PATCH /api/v3/keys/{id}", as: admin, method: "PATCH",
			path: func() string { return "/api/v3/keys/" + opKey.id }, body: map[string]any{"budget": 1}, status: 404},
		{name: "create an agent", route: "POST /api/v3/agents/create", as: admin, method: "POST",
			path: fixed("/api/v3/agents/create"), body: supportBot(),
			want: &want{action: "agent.create", targetType: "agent", targetID: func() string { return agentID }, org: tenantID, actor: adm,
				detail: map[string]any{"name": "support_bot", "model": "offline", "version": 1.0, "status": "ACTIVE"}},
			after: func(d json.RawMessage) { agentID = field(t, d, "id") }},
		{name: "create an agent of a taken name", route: "POST /api/v3/agents/create", as: admin, method: "POST",
			path: fixed("/api/v3/agents/create"), body: supportBot(), status: 400},
		{name: "create an agent of no model", route: "POST /api/v3/agents/create", as: admin, method: "POST",
			path: fixed("/api/v3/agents/create"), body: map[string]any{"agent_name": "x", "agent_description": "x", "model": "nope"}, status: 400},
		{name: "create an agent as a run key", route: "POST /api/v3/agents/create", as: func() *client.Client { return s.client(runSecret) }, method: "POST",
			path: fixed("/api/v3/agents/create"), body: supportBot(), status: 403},
		{name: "change an agent's configuration", route: "PATCH /api/v3/agents/{agent_id}", as: admin, method: "PATCH",
			path: func() string { return "/api/v3/agents/" + agentID }, body: map[string]any{"temperature": 1.2, "instructions": "A secret plan."},
			want: &want{action: "agent.update", targetType: "agent", targetID: func() string { return agentID }, org: tenantID, actor: adm,
				detail: map[string]any{"name": "support_bot", "changed": []any{"temperature", "instructions"}, "version": 2.0}}},
		{name: "deactivate an agent", route: "PATCH /api/v3/agents/{agent_id}", as: admin, method: "PATCH",
			path: fixed("/api/v3/agents/support_bot"), body: map[string]any{"status": "inactive"},
			want: &want{action: "agent.deactivate", targetType: "agent", targetID: func() string { return agentID }, org: tenantID, actor: adm,
				detail: map[string]any{"name": "support_bot", "changed": []any{"status"}, "status": "INACTIVE"}}},
		{name: "activate an agent", route: "PATCH /api/v3/agents/{agent_id}", as: admin, method: "PATCH",
			path: func() string { return "/api/v3/agents/" + agentID }, body: map[string]any{"status": "ACTIVE"},
			want: &want{action: "agent.activate", targetType: "agent", targetID: func() string { return agentID }, org: tenantID, actor: adm,
				detail: map[string]any{"name": "support_bot", "changed": []any{"status"}, "status": "ACTIVE"}}},
		{name: "rename an agent and deactivate it", route: "PATCH /api/v3/agents/{agent_id}", as: admin, method: "PATCH",
			path: func() string { return "/api/v3/agents/" + agentID }, body: map[string]any{"agent_name": "Helper", "status": "INACTIVE"},
			want: &want{action: "agent.update", targetType: "agent", targetID: func() string { return agentID }, org: tenantID, actor: adm,
				detail: map[string]any{"name": "helper", "previous_name": "support_bot", "changed": []any{"agent_name", "status"}, "status": "INACTIVE"}}},
		{name: "change an agent to a bad temperature", route: "PATCH /api/v3/agents/{agent_id}", as: admin, method: "PATCH",
			path: func() string { return "/api/v3/agents/" + agentID }, body: map[string]any{"temperature": 5}, status: 422},
		{name: "create a second agent", route: "POST /api/v3/agents/create", as: func() *client.Client { return s.client(writerSecret) }, method: "POST",
			path: fixed("/api/v3/agents/create"), body: map[string]any{"agent_name": "other", "agent_description": "d", "model": "offline"},
			want: &want{action: "agent.create", targetType: "agent", targetID: func() string { return otherAgent }, org: tenantID,
				actor:  func() auditActor { return writer },
				detail: map[string]any{"name": "other", "model": "offline", "version": 1.0, "status": "ACTIVE"}},
			setup: func() {
				// An agents:write key's changes name it.
				k, err := admin().CreateKey(ctx, client.KeySpec{Name: "writer", Scopes: []string{"agents:write"}, Owner: "writers"})
				if err != nil {
					t.Fatal(err)
				}
				writerSecret, writer = k.Secret, auditActor{k.ID, "writers", tenant}
				secrets = append(secrets, k.Secret)
			},
			after: func(d json.RawMessage) { otherAgent = field(t, d, "id") }},
		{name: "rename an agent to a taken name", route: "PATCH /api/v3/agents/{agent_id}", as: admin, method: "PATCH",
			path: func() string { return "/api/v3/agents/" + agentID }, body: map[string]any{"agent_name": "other"}, status: 400},
		{name: "change an unknown agent", route: "PATCH /api/v3/agents/{agent_id}", as: admin, method: "PATCH",
			path: fixed("/api/v3/agents/agent-nope"), body: map[string]any{"temperature": 1}, status: 404},
		{name: "store a draft version", route: "POST /api/v3/agents/{agent_id}/versions", as: admin, method: "POST",
			path: func() string { return "/api/v3/agents/" + agentID + "/versions" }, body: map[string]any{"temperature": 1.9, "activate": false, "note": "try"},
			want: &want{action: "agent.update", targetType: "agent", targetID: func() string { return agentID }, org: tenantID, actor: adm,
				detail: map[string]any{"name": "helper", "changed": []any{"temperature"}, "version": 3.0, "draft": true}}},
		{name: "store a draft that renames", route: "POST /api/v3/agents/{agent_id}/versions", as: admin, method: "POST",
			path: func() string { return "/api/v3/agents/" + agentID + "/versions" }, body: map[string]any{"agent_name": "x", "temperature": 1, "activate": false}, status: 422},
		{name: "roll back to version 1", route: "POST /api/v3/agents/{agent_id}/versions/{n}/activate", as: admin, method: "POST",
			path: func() string { return "/api/v3/agents/" + agentID + "/versions/1/activate" },
			want: &want{action: "agent.activate_version", targetType: "agent", targetID: func() string { return agentID }, org: tenantID, actor: adm,
				detail: map[string]any{"name": "helper", "version": 1.0, "previous_version": 2.0, "require_evals": false}}},
		{name: "activate a version never evaluated with require_evals", route: "POST /api/v3/agents/{agent_id}/versions/{n}/activate", as: admin, method: "POST",
			path: func() string { return "/api/v3/agents/" + agentID + "/versions/3/activate?require_evals=true" }, status: 409},
		{name: "activate an unknown version", route: "POST /api/v3/agents/{agent_id}/versions/{n}/activate", as: admin, method: "POST",
			path: func() string { return "/api/v3/agents/" + agentID + "/versions/9/activate" }, status: 404},
		{name: "delete an agent", route: "DELETE /api/v3/agents/{agent_id}", as: admin, method: "DELETE",
			path: fixed("/api/v3/agents/other"),
			want: &want{action: "agent.delete", targetType: "agent", targetID: func() string { return otherAgent }, org: tenantID, actor: adm,
				detail: map[string]any{"name": "other"}}},
		{name: "delete an unknown agent", route: "DELETE /api/v3/agents/{agent_id}", as: admin, method: "DELETE",
			path: fixed("/api/v3/agents/other"), status: 404},
		{name: "delete an agent as a run key", route: "DELETE /api/v3/agents/{agent_id}", as: func() *client.Client { return s.client(runSecret) }, method: "DELETE",
			path: func() string { return "/api/v3/agents/" + agentID }, status: 403},
		{name: "revoke a key", route: "DELETE /api/v3/keys/{id}", as: admin, method: "DELETE",
			path: func() string { return "/api/v3/keys/" + runKey },
			want: &want{action: "key.revoke", targetType: "key", targetID: func() string { return runKey }, org: tenantID, actor: adm,
				detail: map[string]any{"name": "ci"}}},
		{name: "revoke a revoked key", route: "DELETE /api/v3/keys/{id}", as: admin, method: "DELETE",
			path: func() string { return "/api/v3/keys/" + runKey },
			want: &want{action: "key.revoke", targetType: "key", targetID: func() string { return runKey }, org: tenantID, actor: adm,
				detail: map[string]any{"name": "ci", "already_revoked": true}}},
		{name: "revoke another organization's key", route: "DELETE /api/v3/keys/{id}", as: admin, method: "DELETE",
			path: func() string { return "/api/v3/keys/" + opKey.id }, status: 404},
		{name: "revoke with a revoked key", route: "DELETE /api/v3/keys/{id}", as: func() *client.Client { return s.client(runSecret) }, method: "DELETE",
			path: func() string { return "/api/v3/keys/" + admKey }, status: 401},
		{name: "create an organization as an admin", route: "POST /api/v3/admin/orgs", as: admin, method: "POST",
			path: fixed("/api/v3/admin/orgs"), body: map[string]any{"name": "sneaky"}, status: 403},
		{name: "grant credits as an admin", route: "POST /api/v3/admin/orgs/{org}/credits", as: admin, method: "POST",
			path: fixed("/api/v3/admin/orgs/tenant/credits"), body: map[string]any{"amount": 100}, status: 403},
		{name: "malformed body", route: "POST /api/v3/keys", as: admin, method: "POST", path: fixed("/api/v3/keys"), rawBody: `{"name":`, status: 422},
	}

	routes := map[string]bool{}
	for i, st := range steps {
		routes[st.route] = true
		if st.setup != nil {
			st.setup()
		}
		before := auditAll(t, op, client.AuditFilter{})
		reqID := fmt.Sprintf("audit-step-%02d", i)
		start := time.Now().UTC().Truncate(time.Microsecond)
		var out struct{ Data json.RawMessage }
		var err error
		if st.rawBody != "" {
			err = rawRequest(s.URL, admSecret, st.method, st.path(), reqID, st.rawBody)
		} else {
			err = st.as().Do(ctx, st.method, st.path(), http.Header{"X-Request-ID": {reqID}}, st.body, &out)
		}
		end := time.Now().UTC()
		after := auditAll(t, op, client.AuditFilter{})
		if st.want == nil {
			if statusOf(err) != st.status {
				t.Errorf("%s: %v, want status %d", st.name, err, st.status)
			}
			if len(after) != len(before) {
				t.Errorf("%s (refused: %v): %d audit entries, want %d; newest %+v", st.name, err, len(after), len(before), after[0])
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if st.after != nil {
			st.after(out.Data)
		}
		if len(after) != len(before)+1 || after[1].ID != before[0].ID {
			t.Fatalf("%s: %d audit entries after %d; want exactly one new, the newest", st.name, len(after), len(before))
		}
		e, w := after[0], st.want
		actor := w.actor()
		if e.Action != w.action || e.TargetType != w.targetType || e.TargetID != w.targetID() || e.OrgID != w.org() {
			t.Errorf("%s: entry %s %s %s in %s, want %s %s %s in %s", st.name, e.Action, e.TargetType, e.TargetID, e.OrgID,
				w.action, w.targetType, w.targetID(), w.org())
		}
		if str(e.ActorKeyID) != actor.id || str(e.ActorOwner) != actor.owner || str(e.ActorOrgID) != actor.org {
			t.Errorf("%s: actor %s/%s/%s, want %+v", st.name, str(e.ActorKeyID), str(e.ActorOwner), str(e.ActorOrgID), actor)
		}
		if str(e.ClientIP) != "127.0.0.1" || str(e.RequestID) != reqID {
			t.Errorf("%s: from %s with request id %s, want 127.0.0.1 and %s", st.name, str(e.ClientIP), str(e.RequestID), reqID)
		}
		if at, err := time.Parse(time.RFC3339Nano, e.CreatedAt); err != nil || at.Before(start) || at.After(end) {
			t.Errorf("%s: created_at %s (%v), want between %s and %s", st.name, e.CreatedAt, err, start, end)
		}
		var detail map[string]any
		if err := json.Unmarshal(e.Detail, &detail); err != nil {
			t.Fatalf("%s: detail %s: %v", st.name, e.Detail, err)
		}
		wd := w.detail
		if w.action == "key.create" && wd["owner"] == nil {
			wd["owner"] = w.targetID() // a key is its own owner by default
		}
		if w.action == "credits.grant" {
			delete(detail, "grant_id") // checked below
		}
		if !reflect.DeepEqual(detail, wd) {
			t.Errorf("%s: detail %s, want %v", st.name, e.Detail, wd)
		}
	}

	all := auditAll(t, op, client.AuditFilter{})
	t.Run("no secret, hash or instructions in the trail", func(t *testing.T) {
		body, _ := json.Marshal(all)
		for _, sec := range secrets {
			for _, leak := range []string{sec, auth.Hash(sec), sec[4:20]} {
				if strings.Contains(string(body), leak) {
					t.Errorf("the audit trail contains a key's secret or hash %q", leak)
				}
			}
		}
		if strings.Contains(string(body), "secret plan") {
			t.Error("the audit trail contains an agent's instructions")
		}
	})
	t.Run("a request without an id gets the one it was answered with", func(t *testing.T) {
		req, _ := http.NewRequest("POST", s.URL+"/api/v3/admin/orgs", strings.NewReader(`{"name": "anonymous"}`))
		req.Header.Set("Authorization", "Bearer "+s.Key)
		req.Header.Set("X-Request-ID", "not a valid id") // replaced, not echoed
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		id := resp.Header.Get("X-Request-ID")
		newest := auditAll(t, op, client.AuditFilter{Limit: 1, Action: "org.create"})[0]
		if resp.StatusCode != 200 || id == "" || id == "not a valid id" || str(newest.RequestID) != id {
			t.Errorf("status %d, X-Request-ID %q; entry's request id %s", resp.StatusCode, id, str(newest.RequestID))
		}
	})
	t.Run("grants name their grant", func(t *testing.T) {
		for _, e := range all {
			if e.Action == "credits.grant" && !strings.Contains(string(e.Detail), `"grant_id":"grant-`) {
				t.Errorf("grant entry %s", e.Detail)
			}
		}
	})
	t.Run("every administrative route is in the table", func(t *testing.T) {
		for _, r := range auditedRoutes {
			if !routes[r] {
				t.Errorf("no step calls %s", r)
			}
		}
	})
}

// auditedRoutes are the routes whose changes are audited; internal/api's
// TestAuditedRoutes holds the route table to the same list.
var auditedRoutes = []string{
	"POST /api/v3/agents/create",
	"PATCH /api/v3/agents/{agent_id}",
	"DELETE /api/v3/agents/{agent_id}",
	"POST /api/v3/agents/{agent_id}/versions",
	"POST /api/v3/agents/{agent_id}/versions/{n}/activate",
	"POST /api/v3/admin/orgs",
	"POST /api/v3/admin/orgs/{org}/credits",
	"POST /api/v3/keys",
	"DELETE /api/v3/keys/{id}",
	"PATCH /api/v3/keys/{id}",
}

// field is the string field name of a JSON object.
func field(t *testing.T, data json.RawMessage, name string) string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatalf("%s: %v", data, err)
	}
	v, _ := m[name].(string)
	if v == "" {
		t.Fatalf("no %q in %s", name, data)
	}
	return v
}

// rawRequest sends body as it is, with a request id.
func rawRequest(base, key, method, path, reqID, body string) error {
	req, err := http.NewRequest(method, base+path, strings.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("X-Request-ID", reqID)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return &client.Error{Status: resp.StatusCode}
	}
	return nil
}

// TestAuditListing: who reads which entries (an operator every organization's,
// an admin its own, no one else any), newest first, a page at a time, with the
// filters; and the listing's errors.
func TestAuditListing(t *testing.T) {
	s := startServer(t, "", nil)
	ctx := context.Background()
	op := s.client(s.Key)
	mustKey := func(c *client.Client, spec client.KeySpec) *client.Key {
		t.Helper()
		k, err := c.CreateKey(ctx, spec)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	var admins [2]*client.Client
	var adminKeys [2]*client.Key
	var orgs [2]*client.Org
	for i, name := range []string{"north", "south"} {
		o, err := op.CreateOrg(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		orgs[i] = o
		if _, err := op.GrantCredits(ctx, name, float64(i+1)); err != nil {
			t.Fatal(err)
		}
		adminKeys[i] = mustKey(op, client.KeySpec{Name: name + " admin", OrgID: o.ID, Scopes: []string{"admin"}})
		admins[i] = s.client(adminKeys[i].Secret)
		for j := range 3 {
			if _, err := admins[i].CreateAgent(ctx, client.AgentSpec{Name: client.Ptr(fmt.Sprint("bot ", j)), Description: client.Ptr("d"),
				Model: client.Ptr("offline")}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := admins[i].UpdateAgent(ctx, "bot_0", client.AgentSpec{Temperature: client.Ptr(0.1)}); err != nil {
			t.Fatal(err)
		}
	}
	runKey := mustKey(admins[0], client.KeySpec{Name: "runner", Scopes: []string{"run"}})
	writerKey := mustKey(admins[0], client.KeySpec{Name: "writer", Scopes: []string{"agents:write", "usage"}})

	all := auditAll(t, op, client.AuditFilter{})
	// default: org + bootstrap key; each org: org, grant, admin key, 3 agents, 1
	// update; north: 2 keys more.
	if want := 2 + 2*7 + 2; len(all) != want {
		t.Fatalf("operator reads %d entries, want %d", len(all), want)
	}
	for i := 1; i < len(all); i++ {
		if all[i].CreatedAt > all[i-1].CreatedAt {
			t.Fatalf("entries not newest first: %s after %s", all[i].CreatedAt, all[i-1].CreatedAt)
		}
	}
	ofOrg := func(orgID string) []string {
		var ids []string
		for _, e := range all {
			if e.OrgID == orgID {
				ids = append(ids, e.ID)
			}
		}
		return ids
	}
	ids := func(es []client.AuditEntry) []string {
		out := []string{}
		for _, e := range es {
			out = append(out, e.ID)
		}
		return out
	}

	t.Run("who reads what", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			c    *client.Client
			f    client.AuditFilter
			want []string
		}{
			{"an admin reads its organization's", admins[0], client.AuditFilter{}, ofOrg(orgs[0].ID)},
			{"the other admin reads its own", admins[1], client.AuditFilter{}, ofOrg(orgs[1].ID)},
			{"an admin naming its own organization", admins[1], client.AuditFilter{Org: "south"}, ofOrg(orgs[1].ID)},
			{"an operator by organization name", op, client.AuditFilter{Org: "north"}, ofOrg(orgs[0].ID)},
			{"an operator by organization id", op, client.AuditFilter{Org: orgs[1].ID}, ofOrg(orgs[1].ID)},
		} {
			t.Run(tc.name, func(t *testing.T) {
				got := ids(auditAll(t, tc.c, tc.f))
				if len(tc.want) == 0 || !slices.Equal(got, tc.want) {
					t.Errorf("reads %v, want %v", got, tc.want)
				}
			})
		}
		// The operator's grant to north is north's: its admin sees who made it.
		var grant *client.AuditEntry
		for _, e := range auditAll(t, admins[0], client.AuditFilter{Action: "credits.grant"}) {
			grant = &e
		}
		if grant == nil || grant.OrgID != orgs[0].ID || str(grant.ActorOrgID) == orgs[0].ID {
			t.Errorf("north's grant entry %+v: want north's, made by the default organization's operator", grant)
		}
		for _, tc := range []struct {
			name   string
			c      *client.Client
			f      client.AuditFilter
			status int
		}{
			{"an admin naming another organization", admins[0], client.AuditFilter{Org: "south"}, 403},
			{"an admin naming the default organization", admins[1], client.AuditFilter{Org: "default"}, 403},
			{"a run key", s.client(runKey.Secret), client.AuditFilter{}, 403},
			{"an agents:write and usage key", s.client(writerKey.Secret), client.AuditFilter{}, 403},
			{"no key", s.client(""), client.AuditFilter{}, 401},
			{"an operator naming no organization", op, client.AuditFilter{Org: "nowhere"}, 404},
		} {
			t.Run(tc.name, func(t *testing.T) {
				if _, err := tc.c.Audit(ctx, tc.f); statusOf(err) != tc.status {
					t.Errorf("%v, want %d", err, tc.status)
				}
			})
		}
	})

	t.Run("pages", func(t *testing.T) {
		for _, limit := range []int{1, 3, 1000} {
			got := ids(auditAll(t, op, client.AuditFilter{Limit: limit}))
			if !slices.Equal(got, ids(all)) {
				t.Errorf("limit %d: pages read %v, want %v", limit, got, ids(all))
			}
		}
		p, err := op.Audit(ctx, client.AuditFilter{Limit: 5})
		if err != nil || len(p.Data) != 5 || p.NextCursor == nil {
			t.Fatalf("first page of 5: %+v %v", p, err)
		}
		p, err = op.Audit(ctx, client.AuditFilter{Limit: len(all)})
		if err != nil || len(p.Data) != len(all) || p.NextCursor != nil {
			t.Errorf("one page of all: %d entries, next %v, %v", len(p.Data), p.NextCursor, err)
		}
		// An admin's cursor pages its own organization only.
		got := ids(auditAll(t, admins[1], client.AuditFilter{Limit: 2}))
		if !slices.Equal(got, ofOrg(orgs[1].ID)) {
			t.Errorf("south's admin, pages of 2: %v", got)
		}
	})

	t.Run("filters", func(t *testing.T) {
		mid := all[len(all)/2].CreatedAt
		for _, tc := range []struct {
			name  string
			c     *client.Client
			f     client.AuditFilter
			match func(e client.AuditEntry) bool
		}{
			{"action", op, client.AuditFilter{Action: "agent.create"}, func(e client.AuditEntry) bool { return e.Action == "agent.create" }},
			{"actor", op, client.AuditFilter{Actor: adminKeys[1].ID}, func(e client.AuditEntry) bool { return str(e.ActorKeyID) == adminKeys[1].ID }},
			{"from", op, client.AuditFilter{From: mid}, func(e client.AuditEntry) bool { return e.CreatedAt >= mid }},
			{"to", op, client.AuditFilter{To: mid}, func(e client.AuditEntry) bool { return e.CreatedAt < mid }},
			{"org, action and actor", op, client.AuditFilter{Org: "north", Action: "key.create", Actor: adminKeys[0].ID},
				func(e client.AuditEntry) bool {
					return e.OrgID == orgs[0].ID && e.Action == "key.create" && str(e.ActorKeyID) == adminKeys[0].ID
				}},
			{"an admin's actor filter", admins[0], client.AuditFilter{Actor: adminKeys[1].ID}, func(e client.AuditEntry) bool { return false }},
			{"an action in no entry", op, client.AuditFilter{Action: "agent.delete"}, func(e client.AuditEntry) bool { return false }},
		} {
			t.Run(tc.name, func(t *testing.T) {
				want := []string{}
				for _, e := range all {
					if tc.match(e) {
						want = append(want, e.ID)
					}
				}
				got := ids(auditAll(t, tc.c, tc.f))
				if !slices.Equal(got, want) {
					t.Errorf("got %v, want %v", got, want)
				}
			})
		}
	})

	t.Run("bad queries", func(t *testing.T) {
		for _, q := range []string{"limit=0", "limit=1001", "limit=x", "cursor=nope", "action=key.eat", "from=yesterday",
			"from=2026-02-02&to=2026-02-01"} {
			var out any
			err := op.Do(ctx, http.MethodGet, "/api/v3/admin/audit?"+q, nil, nil, &out)
			if statusOf(err) != 422 {
				t.Errorf("%s: %v, want 422", q, err)
			}
		}
		// Reading writes nothing.
		if got := auditAll(t, op, client.AuditFilter{}); len(got) != len(all) {
			t.Errorf("%d entries after reads, want %d", len(got), len(all))
		}
	})
}
