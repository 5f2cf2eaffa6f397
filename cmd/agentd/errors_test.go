package main

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/agentd/agentd/client"
)

// TestUpstreamErrors: each class of upstream failure, through the real OpenAI
// adapter, reaches the client with its own status on the OpenAI-compatible API
// (and NuGen's run route keeps its 500, but for the request's own faults), the run
// id and the class in the body, the provider's words only when they are about the
// request, never a key; and nothing is charged.
func TestUpstreamErrors(t *testing.T) {
	u := newUpstream(t, map[string][]int{
		"refuses":  {400},
		"no-auth":  {401},
		"limited":  {429},
		"broken":   {500},
		"too-long": {400},
	})
	cfg := fmt.Sprintf(`
retry:
  initial_backoff: 1ms
  max_backoff: 2ms
providers:
  - {name: compat, kind: openai, base_url: %[1]s/v1, api_key_env: UPSTREAM_KEY, max_retries: 1}
  - {name: slow, kind: openai, base_url: %[1]s/v1, api_key_env: UPSTREAM_KEY, max_retries: 0, timeout: 50ms}
models:
  - {id: refuses, provider: compat, upstream_model: refuses, context_window: 8192, max_output_tokens: 64, price: {input: 1, output: 1}}
  - {id: no-auth, provider: compat, upstream_model: no-auth, context_window: 8192, max_output_tokens: 64, price: {input: 1, output: 1}}
  - {id: limited, provider: compat, upstream_model: limited, context_window: 8192, max_output_tokens: 64, price: {input: 1, output: 1}}
  - {id: broken, provider: compat, upstream_model: broken, context_window: 8192, max_output_tokens: 64, price: {input: 1, output: 1}}
  - {id: hangs, provider: slow, upstream_model: hangs, context_window: 8192, max_output_tokens: 64, price: {input: 1, output: 1}}
`, u.URL)
	s, op := fundedServer(t, cfg, 10)
	ctx := context.Background()
	before, err := op.Billing(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		model       string
		status      int    // on /v1
		code, class string // on /v1
		nugen       int    // on NuGen's run route
		says        string // in the message
		retryAfter  string
	}{
		{model: "refuses", status: 400, code: "invalid_request", class: "invalid_request", nugen: 400,
			says: "Invalid value for 'top_logprobs': must be between 0 and 20"},
		{model: "no-auth", status: 502, code: "provider_auth", class: "provider_auth", nugen: 500,
			says: "provider compat refused agentd's credentials (upstream status 401)"},
		{model: "limited", status: 429, code: "rate_limit_exceeded", class: "rate_limited", nugen: 500,
			says: "provider compat is limiting agentd's rate", retryAfter: "1"},
		{model: "broken", status: 502, code: "upstream_error", class: "upstream_error", nugen: 500,
			says: "model broken failed (upstream status 500)"},
		{model: "hangs", status: 504, code: "timeout", class: "timeout", nugen: 500,
			says: "model hangs did not answer in time"},
	} {
		t.Run(tc.model, func(t *testing.T) {
			agent := "a_" + strings.ReplaceAll(tc.model, "-", "_")
			if _, err := op.CreateAgent(ctx, client.AgentSpec{Name: client.Ptr(agent), Description: client.Ptr("t"),
				Model: client.Ptr(tc.model), MaxToken: client.Ptr(16)}); err != nil {
				t.Fatal(err)
			}
			check := func(route string, status int, hdr map[string][]string, body []byte, wantStatus int, code string) {
				t.Helper()
				text := string(body)
				if status != wantStatus {
					t.Errorf("%s: status %d, want %d: %s", route, status, wantStatus, text)
				}
				if !strings.Contains(text, `"run_id":"run-`) || !strings.Contains(text, `"class":"`+tc.class+`"`) {
					t.Errorf("%s: body lacks the run id or class %q: %s", route, tc.class, text)
				}
				if code != "" && jsonField(text, "code") != code && !strings.Contains(text, `"code":"`+code+`"`) {
					t.Errorf("%s: code is not %q: %s", route, code, text)
				}
				if !strings.Contains(text, tc.says) || !strings.Contains(text, "nothing was charged") {
					t.Errorf("%s: message does not say %q: %s", route, tc.says, text)
				}
				for _, secret := range []string{"sk-proj-abcdefghij", "sk-upstr", "platform.openai.com", "Incorrect API key"} {
					if strings.Contains(text, secret) {
						t.Errorf("%s: body passes on %q: %s", route, secret, text)
					}
				}
				if got := strings.Join(hdr["Retry-After"], ","); got != tc.retryAfter {
					t.Errorf("%s: Retry-After %q, want %q", route, got, tc.retryAfter)
				}
			}
			status, hdr, body := rawCall(t, "POST", s.URL+"/v1/chat/completions", s.Key, nil,
				`{"model":"`+tc.model+`","messages":[{"role":"user","content":"hi"}]}`)
			check("/v1/chat/completions", status, hdr, body, tc.status, tc.code)
			status, hdr, body = rawCall(t, "POST", s.URL+"/v1/chat/completions", s.Key, nil,
				`{"model":"agent/`+agent+`","messages":[{"role":"user","content":"hi"}]}`)
			check("/v1 agent", status, hdr, body, tc.status, tc.code)
			nugenCode := "inference_failed"
			if tc.nugen == 400 {
				nugenCode = "bad_request"
			}
			status, hdr, body = rawCall(t, "POST", s.URL+"/api/v3/agents/run-agents/"+agent+"/run", s.Key, nil, `{"message":"hi"}`)
			check("run", status, hdr, body, tc.nugen, nugenCode)
		})
	}
	after, err := op.Billing(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if after.Balance != before.Balance || after.Held != 0 {
		t.Errorf("billing %+v after failed runs, want balance %v and nothing held", after, before.Balance)
	}
}
