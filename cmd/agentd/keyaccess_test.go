package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/client"
)

// call sends one request with key and returns its status and body.
func call(t *testing.T, s *testServer, key, method, path, body string) (int, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, s.URL+path, rd)
	req.Header.Set("Authorization", "Bearer "+key)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// mintKey mints a key with the operator key and returns its secret and id.
func mintKey(t *testing.T, s *testServer, body string) (secret, id string) {
	t.Helper()
	code, b := call(t, s, s.Key, "POST", "/api/v3/keys", body)
	if code != 200 {
		t.Fatalf("mint %s: %d %s", body, code, b)
	}
	var out struct {
		Data struct {
			ID, Key string
			Agents  []string `json:"agents"`
		}
	}
	json.Unmarshal([]byte(b), &out)
	return out.Data.Key, out.Data.ID
}

// TestKeyAgentAllowList: a key limited to support_bot uses it on every endpoint
// that names an agent, and gets 403 naming other_bot on each for other_bot;
// listings are filtered; catalog models are refused.
func TestKeyAgentAllowList(t *testing.T) {
	s, _, op := ratedServer(t, "")
	other := supportBot()
	other.Name = client.Ptr("Other Bot")
	if _, err := op.CreateAgent(context.Background(), other); err != nil {
		t.Fatal(err)
	}
	key, keyID := mintKey(t, s, `{"name": "limited", "scopes": ["agents:write", "run", "usage"], "agents": ["Support Bot"]}`)
	// Warm both agents' ledgers so that the usage endpoints have rows.
	for _, a := range []string{"support_bot", "other_bot"} {
		if code, b := call(t, s, s.Key, "POST", "/api/v3/agents/run-agents/"+a+"/run", runBody); code != 200 {
			t.Fatal(code, b)
		}
	}
	chat := func(model string) string {
		return `{"model": "` + model + `", "messages": [{"role": "user", "content": "how do i reset my password"}]}`
	}
	comp := func(model string) string { return `{"model": "` + model + `", "prompt": "how do i reset my password"}` }
	for _, c := range []struct {
		name, method, path, body string
	}{
		{"run", "POST", "/api/v3/agents/run-agents/%s/run", runBody},
		{"run by id route", "POST", "/api/v3/agents/%s/run", runBody},
		{"estimate", "POST", "/api/v3/agents/run-agents/%s/estimate", runBody},
		{"get", "GET", "/api/v3/agents/%s", ""},
		{"patch", "PATCH", "/api/v3/agents/%s", `{"agent_description": "changed"}`},
		{"sessions list", "GET", "/api/v3/agents/%s/sessions", ""},
		{"session get", "GET", "/api/v3/agents/%s/sessions/s1", ""},
		{"session delete", "DELETE", "/api/v3/agents/%s/sessions/s1", ""},
		{"chat completions", "POST", "/v1/chat/completions", chat("agent/%s")},
		{"completions", "POST", "/v1/completions", comp("agent/%s")},
		{"inference chat", "POST", "/api/v3/inference/chat/completions", chat("agent/%s")},
		{"inference completions", "POST", "/api/v3/inference/completions", comp("agent/%s")},
		{"model get", "GET", "/v1/models/agent/%s", ""},
		{"usage by agent", "GET", "/api/v3/agents/usage?agent=%s", ""},
		{"usage records by agent", "GET", "/api/v3/usage/records?agent=%s", ""},
		{"versions list", "GET", "/api/v3/agents/%s/versions", ""},
		{"version get", "GET", "/api/v3/agents/%s/versions/1", ""},
		{"version diff", "GET", "/api/v3/agents/%s/versions/1/diff?against=1", ""},
		{"version draft", "POST", "/api/v3/agents/%s/versions", `{"activate": false, "instructions": "Be brief."}`},
		{"version activate", "POST", "/api/v3/agents/%s/versions/1/activate", ""},
		{"evals run", "POST", "/api/v3/agents/%s/versions/1/evals", ""},
		{"evals latest", "GET", "/api/v3/agents/%s/versions/1/evals", ""},
		{"version activate gated", "POST", "/api/v3/agents/%s/versions/1/activate?require_evals=true", ""},
		{"pinned chat completions", "POST", "/v1/chat/completions", chat("agent/%s@1")},
	} {
		t.Run(c.name, func(t *testing.T) {
			for _, a := range []string{"support_bot", "other_bot"} {
				path, body := strings.ReplaceAll(c.path, "%s", a), strings.ReplaceAll(c.body, "%s", a)
				code, b := call(t, s, key, c.method, path, body)
				if a == "support_bot" && (code == 403 || code >= 500) {
					t.Errorf("%s %s: %d %s", c.method, path, code, b)
				}
				if a == "other_bot" && (code != 403 || !strings.Contains(b, "other_bot")) {
					t.Errorf("%s %s: %d %s; want 403 naming other_bot", c.method, path, code, b)
				}
			}
		})
	}
	t.Run("agentd eval", func(t *testing.T) {
		// The CLI's calls: the agent (or one version), then a pinned chat
		// completion per case.
		for _, args := range [][]string{{"eval", "support_bot"}, {"eval", "support_bot", "--version", "1"}} {
			if r := s.cli(key, args...); r.err != nil {
				t.Errorf("%v: %v\n%s", args, r.err, r.stdout)
			}
		}
		for _, args := range [][]string{{"eval", "other_bot"}, {"eval", "other_bot", "--version", "1"}} {
			wantCLIError(t, s.cli(key, args...), `may not use agent "other_bot"`)
		}
	})
	t.Run("delete", func(t *testing.T) {
		if code, b := call(t, s, key, "DELETE", "/api/v3/agents/other_bot", ""); code != 403 {
			t.Fatalf("%d %s", code, b)
		}
	})
	t.Run("create outside the list", func(t *testing.T) {
		if code, b := call(t, s, key, "POST", "/api/v3/agents/create", `{"agent_name": "third", "agent_description": "x", "model": "offline"}`); code != 403 {
			t.Fatalf("%d %s", code, b)
		}
	})
	for _, c := range []struct{ name, method, path, body, want, notWant string }{
		{"agents listed", "GET", "/api/v3/agents", "", "support_bot", "other_bot"},
		{"agents paged", "GET", "/api/v3/agents?limit=10", "", "support_bot", "other_bot"},
		{"models listed", "GET", "/v1/models", "", "agent/support_bot", `"id":"offline"`},
		{"usage records", "GET", "/api/v3/usage/records", "", "support_bot", "other_bot"},
		{"usage summary by agent", "GET", "/api/v3/usage/summary?group_by=agent", "", "support_bot", "other_bot"},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, b := call(t, s, key, c.method, c.path, c.body)
			if code != 200 || !strings.Contains(b, c.want) || strings.Contains(b, c.notWant) {
				t.Fatalf("%d %s; want %q and not %q", code, b, c.want, c.notWant)
			}
		})
	}
	for _, c := range []struct{ name, method, path, body string }{
		{"catalog model chat", "POST", "/v1/chat/completions", chat("offline")},
		{"catalog model get", "GET", "/v1/models/offline", ""},
		{"embeddings", "POST", "/v1/embeddings", `{"model": "offline-hash-embed", "input": "x"}`},
		{"usage totals unnamed", "GET", "/api/v3/agents/usage", ""},
		{"usage summary by model", "GET", "/api/v3/usage/summary?group_by=model", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			if code, b := call(t, s, key, c.method, c.path, c.body); code != 403 {
				t.Fatalf("%d %s; want 403", code, b)
			}
		})
	}
	t.Run("listing shows the key's agents", func(t *testing.T) {
		code, b := call(t, s, s.Key, "GET", "/api/v3/keys", "")
		if code != 200 || !strings.Contains(b, `"agents":["support_bot"]`) {
			t.Fatalf("%d %s", code, b)
		}
	})
	t.Run("patch lifts the list", func(t *testing.T) {
		code, b := call(t, s, s.Key, "PATCH", "/api/v3/keys/"+keyID, `{"agents": null}`)
		if code != 200 || !strings.Contains(b, `"agents":[]`) {
			t.Fatalf("%d %s", code, b)
		}
		if code, b := call(t, s, key, "GET", "/api/v3/agents/other_bot", ""); code != 200 {
			t.Fatalf("after the patch: %d %s", code, b)
		}
		code, b = call(t, s, s.Key, "GET", "/api/v3/admin/audit", "")
		if code != 200 || !strings.Contains(b, "key.update") || !strings.Contains(b, `"agents":[]`) {
			t.Fatalf("audit: %d %s", code, b)
		}
	})
	t.Run("a restricted admin grants only its agents", func(t *testing.T) {
		admin, _ := mintKey(t, s, `{"name": "ladmin", "scopes": ["admin"], "agents": ["support_bot"]}`)
		if code, b := call(t, s, admin, "POST", "/api/v3/keys", `{"name": "x", "agents": ["other_bot"]}`); code != 403 {
			t.Fatalf("%d %s", code, b)
		}
		if code, b := call(t, s, admin, "POST", "/api/v3/keys", `{"name": "x"}`); code != 403 {
			t.Fatalf("unrestricted from restricted: %d %s", code, b)
		}
	})
}

// TestKeyExpiry: a key works until expires_at on the injected clock, then is
// refused with 401 saying it expired, also while its principal is cached.
func TestKeyExpiry(t *testing.T) {
	s, clk, _ := ratedServer(t, "")
	at := clk.Now().Add(time.Hour).Format(time.RFC3339)
	key, id := mintKey(t, s, `{"name": "short", "scopes": ["run"], "expires_at": "`+at+`"}`)
	if code, b := call(t, s, key, "POST", "/api/v3/agents/run-agents/support_bot/run", runBody); code != 200 {
		t.Fatal(code, b)
	}
	if code, b := call(t, s, s.Key, "POST", "/api/v3/keys", `{"name": "past", "expires_at": "2001-01-01T00:00:00Z"}`); code != 422 {
		t.Fatalf("past expiry: %d %s", code, b)
	}
	clk.Advance(2 * time.Hour)
	code, b := call(t, s, key, "POST", "/api/v3/agents/run-agents/support_bot/run", runBody)
	if code != 401 || !strings.Contains(b, "expired") {
		t.Fatalf("after expiry: %d %s", code, b)
	}
	// Extending it (by a key above it) brings it back.
	later := clk.Now().Add(time.Hour).Format(time.RFC3339)
	if code, b := call(t, s, s.Key, "PATCH", "/api/v3/keys/"+id, `{"expires_at": "`+later+`"}`); code != 200 || !strings.Contains(b, later[:16]) {
		t.Fatalf("extend: %d %s", code, b)
	}
	if code, b := call(t, s, key, "POST", "/api/v3/agents/run-agents/support_bot/run", runBody); code != 200 {
		t.Fatalf("extended: %d %s", code, b)
	}
}

// TestPerformanceMetrics: the agent's metrics follow its runs.
func TestPerformanceMetrics(t *testing.T) {
	s, _, _ := ratedServer(t, "")
	for range 3 {
		if code, b := call(t, s, s.Key, "POST", "/api/v3/agents/run-agents/support_bot/run", runBody); code != 200 {
			t.Fatal(code, b)
		}
	}
	code, b := call(t, s, s.Key, "GET", "/api/v3/agents/support_bot", "")
	if code != 200 {
		t.Fatal(code, b)
	}
	var out struct {
		Data struct {
			PM struct {
				Total   int64    `json:"total_requests"`
				Success *float64 `json:"success_rate"`
				Avg     *float64 `json:"average_response_time"`
				P95     *float64 `json:"p95_response_time"`
				Last    *string  `json:"last_used"`
			} `json:"performance_metrics"`
		}
	}
	if err := json.Unmarshal([]byte(b), &out); err != nil {
		t.Fatal(err)
	}
	pm := out.Data.PM
	// The fake clock stands still during a run: every latency is 0 ms, in the
	// histogram's first bucket (up to 50 ms), whose bound is the p95.
	if pm.Total != 3 || pm.Success == nil || *pm.Success != 1 || pm.Avg == nil || *pm.Avg != 0 || pm.P95 == nil || *pm.P95 != 50 || pm.Last == nil {
		t.Fatalf("performance_metrics = %s", b)
	}
}
