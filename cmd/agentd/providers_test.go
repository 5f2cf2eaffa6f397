package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/client"
	"github.com/agentd/agentd/internal/store"
)

// upstream is an OpenAI-compatible chat-completions server and an Anthropic
// Messages server in one, speaking their documented wire formats. Each upstream
// model name follows a script: a list of statuses, one per request, the last one
// repeating (200 answers). Model echo-slow answers the last user message back
// once echoGate is closed (at once when it is nil).
type upstream struct {
	*httptest.Server
	mu       sync.Mutex
	scripts  map[string][]int
	calls    map[string]int
	bodies   map[string][]map[string]any
	headers  map[string][]http.Header
	arrived  tally // requests by upstream model, counted as they arrive
	echoGate chan struct{}
}

func newUpstream(t testing.TB, scripts map[string][]int) *upstream {
	u := &upstream{scripts: scripts, calls: map[string]int{}, bodies: map[string][]map[string]any{}, headers: map[string][]http.Header{}}
	u.Server = httptest.NewServer(http.HandlerFunc(u.serve))
	t.Cleanup(u.Close)
	return u
}

func (u *upstream) serve(w http.ResponseWriter, r *http.Request) {
	var body map[string]any
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		http.Error(w, err.Error(), 400)
		return
	}
	model, _ := body["model"].(string)
	u.mu.Lock()
	n := u.calls[model]
	u.calls[model]++
	if n < 100 { // enough for any test; a benchmark must not grow without bound
		u.bodies[model] = append(u.bodies[model], body)
		u.headers[model] = append(u.headers[model], r.Header.Clone())
	}
	script := u.scripts[model]
	u.mu.Unlock()
	u.arrived.add(model)
	status := 200
	if len(script) > 0 {
		status = script[min(n, len(script)-1)]
	}
	w.Header().Set("Content-Type", "application/json")
	anthropic := r.URL.Path == "/v1/messages"
	if model == "echo-slow" {
		// Held until the test opens the gate, so that turns queue behind it.
		if u.echoGate != nil {
			select {
			case <-u.echoGate:
			case <-r.Context().Done():
				return
			}
		}
		msgs, _ := body["messages"].([]any)
		last, _ := msgs[len(msgs)-1].(map[string]any)
		reply, _ := json.Marshal("echo: " + fmt.Sprint(last["content"]))
		fmt.Fprintf(w, `{"id":"chatcmpl-1","object":"chat.completion","created":1741569952,"model":"echo-slow","choices":[{"index":0,"message":{"role":"assistant","content":%s},"finish_reason":"stop"}],"usage":{"prompt_tokens":10,"completion_tokens":3,"total_tokens":13}}`, reply)
		return
	}
	if r.URL.Path == "/v1/embeddings" { // a vector [i+1, 0.5, -0.25] per input, 7 tokens each
		inputs, _ := body["input"].([]any)
		var data []string
		for i := range inputs {
			data = append(data, fmt.Sprintf(`{"object":"embedding","index":%d,"embedding":[%d,0.5,-0.25]}`, i, i+1))
		}
		fmt.Fprintf(w, `{"object":"list","data":[%s],"model":%q,"usage":{"prompt_tokens":%d,"total_tokens":%d}}`,
			strings.Join(data, ","), model, 7*len(inputs), 7*len(inputs))
		return
	}
	if model == "gpt-n" { // n choices, "choice i", 5 completion tokens each
		n := 1
		if v, ok := body["n"].(float64); ok {
			n = int(v)
		}
		var choices []string
		for i := n - 1; i >= 0; i-- { // out of order: the index orders them
			choices = append(choices, fmt.Sprintf(`{"index":%d,"message":{"role":"assistant","content":"choice %d"},"finish_reason":"stop"}`, i, i))
		}
		fmt.Fprintf(w, `{"id":"chatcmpl-N","object":"chat.completion","created":1741569952,"model":"gpt-n","choices":[%s],"usage":{"prompt_tokens":20,"completion_tokens":%d,"total_tokens":%d}}`,
			strings.Join(choices, ","), 5*n, 20+5*n)
		return
	}
	switch model { // providers that report cached and reasoning tokens
	case "gpt-cached":
		fmt.Fprint(w, `{"id":"chatcmpl-C","object":"chat.completion","created":1741569952,"model":"gpt-cached","choices":[{"index":0,"message":{"role":"assistant","content":"cached hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1000,"completion_tokens":200,"total_tokens":1200,"prompt_tokens_details":{"cached_tokens":600,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":150,"audio_tokens":0}}}`)
		return
	case "claude-json": // a forced tool's input: what a response format asked for
		fmt.Fprint(w, `{"id":"msg_J","type":"message","role":"assistant","content":[{"type":"tool_use","id":"toolu_J","name":"answer","input":{"n":4}}],"model":"claude-json","stop_reason":"tool_use","stop_sequence":null,"usage":{"input_tokens":40,"output_tokens":12}}`)
		return
	case "claude-cached":
		fmt.Fprint(w, `{"id":"msg_C","type":"message","role":"assistant","content":[{"type":"text","text":"cached hi"}],"model":"claude-cached","stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":100,"cache_creation_input_tokens":100,"cache_read_input_tokens":800,"output_tokens":50}}`)
		return
	}
	if model == "gpt-tools" || model == "claude-tools" {
		serveTools(w, body, anthropic, n)
		return
	}
	if model == "hangs" {
		<-r.Context().Done() // never answers: the caller's deadline ends it
		return
	}
	switch {
	case status == 200 && anthropic:
		fmt.Fprintf(w, `{"id":"msg_01XFDUDYJgAACzvnptvVoYEL","type":"message","role":"assistant","content":[{"type":"text","text":"Claude says hi (%s)"}],"model":%q,"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":31,"output_tokens":7}}`, model, model)
	case status == 200:
		fmt.Fprintf(w, `{"id":"chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT","object":"chat.completion","created":1741569952,"model":%q,"choices":[{"index":0,"message":{"role":"assistant","content":"Upstream says hi (%s)","refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":42,"completion_tokens":8,"total_tokens":50,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},"service_tier":"default"}`, model, model)
	case anthropic:
		w.WriteHeader(status)
		fmt.Fprint(w, `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_011CSHoEeqs5C35K2UUqR7Fy"}`)
	case status == 400:
		w.WriteHeader(status)
		fmt.Fprint(w, `{"error":{"message":"Invalid value for 'top_logprobs': must be between 0 and 20 (sent by key sk-proj-abcdefghij).","type":"invalid_request_error","param":"top_logprobs","code":"integer_above_max_value"}}`)
	case status == 401:
		w.WriteHeader(status)
		fmt.Fprint(w, `{"error":{"message":"Incorrect API key provided: sk-upstr*****cret. You can find your API key at https://platform.openai.com/account/api-keys.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}`)
	case status == 429:
		w.Header().Set("Retry-After-Ms", "20")
		w.WriteHeader(status)
		fmt.Fprint(w, `{"error":{"message":"Rate limit reached for gpt-4o-mini in organization org-123 on requests per min (RPM): Limit 3, Used 3, Requested 1. Please try again in 20ms.","type":"requests","param":null,"code":"rate_limit_exceeded"}}`)
	default:
		w.WriteHeader(status)
		fmt.Fprint(w, `{"error":{"message":"The server had an error while processing your request. Sorry about that!","type":"server_error","param":null,"code":null}}`)
	}
}

// lastBody is the body of the last request for model.
func (u *upstream) lastBody(t testing.TB, model string) map[string]any {
	t.Helper()
	u.mu.Lock()
	defer u.mu.Unlock()
	bodies := u.bodies[model]
	if len(bodies) == 0 {
		t.Fatalf("upstream %s got no request", model)
	}
	return bodies[len(bodies)-1]
}

// asJSON is v encoded, for comparing what an upstream received.
func asJSON(v any) string { b, _ := json.Marshal(v); return string(b) }

func (u *upstream) count(model string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.calls[model]
}

// deadURL is an address nothing listens on: connections are refused.
func deadURL(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr + "/v1"
}

// providerConfig is a catalog with an OpenAI-compatible provider, an Anthropic one
// and a dead one, all priced so that charges are visible.
func providerConfig(u *upstream, dead string) string {
	return fmt.Sprintf(`
retry:
  initial_backoff: 5ms
  max_backoff: 20ms
providers:
  - name: compat
    kind: openai
    base_url: %[1]s/v1
    api_key_env: UPSTREAM_KEY
    max_retries: 2
  - name: claude
    kind: anthropic
    base_url: %[1]s
    api_key_env: ANTHROPIC_KEY
    max_retries: 0
  - name: gone
    kind: openai
    base_url: %[2]s
    max_retries: 1
    timeout: 2s
models:
  - {id: gpt-test, provider: compat, upstream_model: gpt-4o-mini-2024-07-18, context_window: 128000, max_output_tokens: 16384, price: {input: 150, output: 600}}
  - {id: flaky, provider: compat, upstream_model: flaky-model, context_window: 8192, max_output_tokens: 1024, price: {input: 150, output: 600}}
  - {id: primary, provider: gone, upstream_model: gpt-4o, context_window: 128000, max_output_tokens: 4096, price: {input: 100, output: 100}, fallbacks: [claude-test]}
  - {id: claude-test, provider: claude, upstream_model: claude-haiku-4-5, context_window: 200000, max_output_tokens: 8192, price: {input: 1000, output: 5000}}
  - {id: doomed, provider: compat, upstream_model: always-500, context_window: 8192, max_output_tokens: 1024, price: {input: 1, output: 1}, fallbacks: [claude-down]}
  - {id: claude-down, provider: claude, upstream_model: claude-529, context_window: 200000, max_output_tokens: 8192, price: {input: 1, output: 1}}
`, u.URL, dead)
}

var providerEnv = map[string]string{"UPSTREAM_KEY": "sk-upstream-secret", "ANTHROPIC_KEY": "sk-ant-secret"}

// ledger returns the default organization's ledger rows and balance.
func ledger(t *testing.T, s *testServer) ([]agentd.LedgerRow, int64) {
	t.Helper()
	return ledgerAt(t, s.dbPath)
}

// ledgerAt is ledger for the database file at path.
func ledgerAt(t *testing.T, path string) ([]agentd.LedgerRow, int64) {
	t.Helper()
	ctx := context.Background()
	db, err := store.Open(ctx, "sqlite:"+path, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	o, err := db.Org(ctx, agentd.DefaultOrgName)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := db.Ledger(ctx, o.ID)
	if err != nil {
		t.Fatal(err)
	}
	return rows, int64(o.Balance)
}

// TestRealProviders runs agents on OpenAI-compatible and Anthropic upstreams
// through the run endpoint: usage from the provider, a retry after 429, a
// fallback from a dead provider, and an all-failed chain that charges nothing.
func TestRealProviders(t *testing.T) {
	u := newUpstream(t, map[string][]int{
		"flaky-model": {429, 200},
		"always-500":  {500},
		"claude-529":  {529},
	})
	s := startServer(t, providerConfig(u, deadURL(t)), providerEnv)
	c := s.client(s.Key)
	ctx := context.Background()
	if _, err := c.GrantCredits(ctx, agentd.DefaultOrgName, 100); err != nil {
		t.Fatal(err)
	}
	newAgent := func(name, model string) {
		t.Helper()
		if _, err := c.CreateAgent(ctx, client.AgentSpec{
			Name: client.Ptr(name), Description: client.Ptr("test"), Model: client.Ptr(model), MaxToken: client.Ptr(100),
			Temperature: client.Ptr(0.4), Instructions: client.Ptr("Be brief."),
			Demonstrations: []client.Demonstration{{Input: "ping", Output: "pong"}},
		}); err != nil {
			t.Fatal(err)
		}
	}
	newAgent("compat", "gpt-test")
	newAgent("flaky", "flaky")
	newAgent("falls", "primary")
	newAgent("doomed", "doomed")

	t.Run("models/base lists the catalog", func(t *testing.T) {
		var out struct {
			Models []struct {
				ID             string   `json:"id"`
				ModelID        string   `json:"model_id"`
				ModelName      string   `json:"model_name"`
				InferenceReady bool     `json:"inference_ready"`
				Type           string   `json:"type"`
				Provider       string   `json:"provider"`
				ContextWindow  int      `json:"context_window"`
				Tokenizer      string   `json:"tokenizer"`
				Fallbacks      []string `json:"fallbacks"`
				Price          struct {
					Input, Output float64
				} `json:"price"`
			} `json:"models"`
		}
		if err := c.Do(ctx, "GET", "/api/v3/models/base", nil, nil, &out); err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for _, m := range out.Models {
			if m.ModelID != m.ID || m.ModelName == "" || !m.InferenceReady || m.Type != map[bool]string{false: "chat", true: "embedding"}[m.ID == "offline-hash-embed"] {
				t.Errorf("%s: model_id %q, model_name %q, inference_ready %v, type %q", m.ID, m.ModelID, m.ModelName, m.InferenceReady, m.Type)
			}
			got[m.ID] = fmt.Sprintf("%s %d %s %v %v/%v", m.Provider, m.ContextWindow, m.Tokenizer, m.Fallbacks, m.Price.Input, m.Price.Output)
		}
		want := map[string]string{
			"gpt-test":    "compat 128000 o200k [] 150/600",
			"primary":     "gone 128000 o200k [claude-test] 100/100",
			"claude-test": "claude 200000 estimate [] 1000/5000",
			"offline":     "offline 32768 o200k [] 0/0",
		}
		for id, w := range want {
			if got[id] != w {
				t.Errorf("%s: %q, want %q", id, got[id], w)
			}
		}
	})

	t.Run("openai-compatible answers with its usage", func(t *testing.T) {
		res, err := c.Run(ctx, "compat", "hello", "s1")
		if err != nil {
			t.Fatal(err)
		}
		if res.Response != "Upstream says hi (gpt-4o-mini-2024-07-18)" || res.Model != "gpt-test" {
			t.Errorf("response %q from %q", res.Response, res.Model)
		}
		if res.Usage.InputTokens != 42 || res.Usage.OutputTokens != 8 || res.Usage.TotalTokens != 50 || res.Usage.Source != "provider" {
			t.Errorf("usage = %+v, want the provider's 42/8", res.Usage)
		}
		u.mu.Lock()
		body, hdr := u.bodies["gpt-4o-mini-2024-07-18"][0], u.headers["gpt-4o-mini-2024-07-18"][0]
		u.mu.Unlock()
		if hdr.Get("Authorization") != "Bearer sk-upstream-secret" {
			t.Errorf("Authorization = %q", hdr.Get("Authorization"))
		}
		msgs, _ := json.Marshal(body["messages"])
		want := `[{"content":"Be brief.","role":"system"},{"content":"ping","role":"user"},{"content":"pong","role":"assistant"},{"content":"hello","role":"user"}]`
		if string(msgs) != want || body["max_tokens"] != float64(100) || body["temperature"] != 0.4 {
			t.Errorf("upstream got messages %s, max_tokens %v, temperature %v", msgs, body["max_tokens"], body["temperature"])
		}
		// The session remembers: the second turn carries the first.
		if _, err := c.Run(ctx, "compat", "again", "s1"); err != nil {
			t.Fatal(err)
		}
		u.mu.Lock()
		second := u.bodies["gpt-4o-mini-2024-07-18"][1]
		u.mu.Unlock()
		if m, _ := json.Marshal(second["messages"]); !strings.Contains(string(m), `"Upstream says hi (gpt-4o-mini-2024-07-18)"`) {
			t.Errorf("second turn's messages lack the first reply: %s", m)
		}
	})

	t.Run("429 then 200 succeeds after a retry", func(t *testing.T) {
		res, err := c.Run(ctx, "flaky", "hello", "")
		if err != nil {
			t.Fatal(err)
		}
		if n := u.count("flaky-model"); n != 2 || res.Model != "flaky" {
			t.Errorf("%d upstream calls, model %q", n, res.Model)
		}
	})

	t.Run("dead primary falls back", func(t *testing.T) {
		res, err := c.Run(ctx, "falls", "hello", "")
		if err != nil {
			t.Fatal(err)
		}
		if res.Model != "claude-test" || res.Response != "Claude says hi (claude-haiku-4-5)" {
			t.Errorf("answered %q by %q", res.Response, res.Model)
		}
		if res.Usage.InputTokens != 31 || res.Usage.OutputTokens != 7 || res.Usage.Source != "provider" {
			t.Errorf("usage = %+v, want Anthropic's 31/7", res.Usage)
		}
		u.mu.Lock()
		hdr := u.headers["claude-haiku-4-5"][0]
		u.mu.Unlock()
		if hdr.Get("X-Api-Key") != "sk-ant-secret" || hdr.Get("Anthropic-Version") == "" {
			t.Errorf("anthropic headers: %v", hdr)
		}
	})

	t.Run("all failed charges nothing", func(t *testing.T) {
		_, before := ledger(t, s)
		_, err := c.Run(ctx, "doomed", "hello", "s2")
		var e *client.Error
		if !errorsAs(err, &e) || e.Status != 500 || e.Code != "inference_failed" {
			t.Fatalf("err = %v, want 500 inference_failed", err)
		}
		if body := fmt.Sprint(e.Body); strings.Contains(body, "Sorry about that") || strings.Contains(body, "Overloaded") {
			t.Errorf("upstream text leaked: %s", body)
		}
		if u.count("always-500") != 3 || u.count("claude-529") != 1 {
			t.Errorf("calls: primary %d (want 1+2 retries), fallback %d (want 1)", u.count("always-500"), u.count("claude-529"))
		}
		rows, after := ledger(t, s)
		last := rows[len(rows)-1]
		if after != before || last.Outcome != agentd.OutcomeFailed || last.Cost != 0 || last.ModelRequested != "doomed" {
			t.Errorf("balance %d → %d, last row %+v", before, after, last)
		}
		b, _ := c.Billing(ctx)
		if b.Held != 0 {
			t.Errorf("held = %v", b.Held)
		}
	})

	t.Run("ledger records who answered and what it cost", func(t *testing.T) {
		rows, balance := ledger(t, s)
		var sum int64
		byModel := map[string]agentd.LedgerRow{}
		for _, r := range rows {
			sum += int64(r.Cost)
			if r.Outcome == agentd.OutcomeOK {
				byModel[r.Model] = r
			}
		}
		if balance != 100_000_000-sum {
			t.Errorf("balance %d != grants - Σcost %d", balance, 100_000_000-sum)
		}
		fb := byModel["claude-test"]
		if fb.ModelRequested != "primary" || fb.InputTokens != 31 || fb.OutputTokens != 7 || fb.UsageSource != "provider" {
			t.Errorf("fallback row = %+v", fb)
		}
		// 31 × 1000 + 7 × 5000 credits per M tokens = 0.066 credits.
		if fb.Cost != 66_000 {
			t.Errorf("fallback cost = %d micro-credits, want 66000 at claude-test's price", fb.Cost)
		}
		if r := byModel["gpt-test"]; r.Cost != 42*150+8*600 {
			t.Errorf("gpt-test cost = %d, want %d", r.Cost, 42*150+8*600)
		}
	})
}

// TestProviderKeyMissing: a provider whose key variable is unset stops the start
// with a message naming the file, the entry and the variable.
func TestProviderKeyMissing(t *testing.T) {
	u := newUpstream(t, nil)
	var stderr strings.Builder
	err := run(context.Background(), []string{"serve", "--addr", "127.0.0.1:0", "--db", "sqlite:" + t.TempDir() + "/a.db", "--config", writeConfig(t, providerConfig(u, deadURL(t)))},
		func(k string) string { return map[string]string{"UPSTREAM_KEY": "x"}[k] }, strings.NewReader(""), &stderr, &stderr)
	if err == nil || !strings.Contains(err.Error(), `providers[1] "claude": environment variable ANTHROPIC_KEY (api_key_env) is not set`) {
		t.Errorf("err = %v", err)
	}
}

func writeConfig(t *testing.T, yaml string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "agentd.yaml")
	if err := os.WriteFile(f, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

func errorsAs(err error, target any) bool { return errors.As(err, target) }
