package api

import (
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/internal/reqlog"
)

// audited are the routes whose changes the audit trail records, each by the
// owner of the change (cmd/agentd's TestAuditEveryAdminEndpoint calls each one).
var audited = []string{
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

// notAdministrative are the routes that change state but are no administrative
// change: runs (their record is the ledger) and a caller's own sessions.
var notAdministrative = []string{
	"POST /api/v3/agents/run-agents/{agent_name}/run",
	"POST /api/v3/agents/run-agents/{agent_name}/estimate",
	"POST /api/v3/agents/{agent_id}/run",
	"DELETE /api/v3/agents/{agent_id}/sessions/{session_id}",
	// Evals are runs (ledgered); the stored report names the key that ran them.
	"POST /api/v3/agents/{agent_id}/versions/{n}/evals",
	"POST /v1/chat/completions",
	"POST /v1/completions",
	"POST /v1/embeddings",
	"POST /api/v3/inference/chat/completions",
	"POST /api/v3/inference/completions",
	"POST /api/v3/inference/embeddings",
}

// TestAuditedRoutes: every route that may change something is either audited or
// known not to be an administrative change, so that a new endpoint cannot slip
// past the audit trail unnoticed.
func TestAuditedRoutes(t *testing.T) {
	var ps patterns
	(&Server{}).routes(&ps)
	for _, p := range ps {
		method, _, ok := strings.Cut(p, " ")
		if !ok || method == http.MethodGet {
			continue // reads, and the /v1 catch-alls that answer no route
		}
		if !slices.Contains(audited, p) && !slices.Contains(notAdministrative, p) {
			t.Errorf("%s may change state: audit its changes (in the owner's transaction) and list it in audited, or list it in notAdministrative", p)
		}
	}
	for _, p := range append(slices.Clone(audited), notAdministrative...) {
		if !slices.Contains(ps, p) {
			t.Errorf("%s is listed but not routed", p)
		}
	}
}

func TestOrigin(t *testing.T) {
	long := strings.Repeat("r", reqlog.MaxIDLen)
	for _, tc := range []struct {
		name, remote, requestID string
		wantIP, wantRequestID   string
		served                  string // the id reqlog.Middleware gave the request, if any
	}{
		{"the middleware's id", "192.0.2.1:5555", "bad id", "192.0.2.1", "req-served", "req-served"},
		{"IPv4", "192.0.2.1:5555", "abc-123", "192.0.2.1", "abc-123", ""},
		{"IPv6", "[2001:db8::1]:443", "", "2001:db8::1", "", ""},
		{"no port", "192.0.2.9", "", "192.0.2.9", "", ""},
		{"longest request id", "192.0.2.1:1", long, "192.0.2.1", long, ""},
		{"request id too long", "192.0.2.1:1", long + "r", "192.0.2.1", "", ""},
		{"request id with a space", "192.0.2.1:1", "a b", "192.0.2.1", "", ""},
		{"request id with a control character", "192.0.2.1:1", "a\x01", "192.0.2.1", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/", nil)
			r.RemoteAddr = tc.remote
			r.Header.Set("X-Forwarded-For", "203.0.113.66") // no trusted proxy: not believed
			if tc.requestID != "" {
				r.Header.Set("X-Request-ID", tc.requestID)
			}
			if tc.served != "" {
				r = r.WithContext(reqlog.With(r.Context(), &reqlog.Info{ID: tc.served}))
			}
			cached := &agentd.Principal{OrgID: "org-a", KeyID: "key-a"}
			p := withOrigin(r, cached)
			if p.ClientIP != tc.wantIP || p.RequestID != tc.wantRequestID || p.KeyID != "key-a" {
				t.Errorf("origin %+v, want %s and %q", p, tc.wantIP, tc.wantRequestID)
			}
			if cached.ClientIP != "" || cached.RequestID != "" {
				t.Errorf("the cached principal changed: %+v", cached)
			}
		})
	}
}
