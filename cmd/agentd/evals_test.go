package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/client"
	"github.com/agentd/agentd/internal/clock/clocktest"
	"github.com/agentd/agentd/internal/store"
)

// TestEvals runs an offline agent's evals from the CLI and on the server: its
// demonstrations pass (the offline model answers from them), a case with a
// wrong equals fails, the report is stored and sets the version's eval status,
// and the server's eval runs are marked in the database.
func TestEvals(t *testing.T) {
	s := startServer(t, "", nil)
	ctx := context.Background()
	op := s.client(s.Key)
	if _, err := op.CreateAgent(ctx, supportBot()); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"AGENTD_URL": s.URL, "AGENTD_KEY": s.Key}
	if r := agentdCLI(env, "", "credits", "grant", "default", "10"); r.err != nil {
		t.Fatal(r.err)
	}
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(good, []byte(`
- name: hours, asked twice
  session:
    - {user: "What are your opening hours?", assistant: "8:00 to 20:00 every day."}
  input: What are your opening hours today?
  expect: {contains: ["8:00", "20:00"], regex: 'every day\.$', max_output_tokens: 50}
`), 0o600)
	os.WriteFile(bad, []byte(`
- name: wrong
  input: How do I reset my password?
  expect: {equals: "Call us."}
`), 0o600)

	t.Run("CLI passes", func(t *testing.T) {
		r := s.mustCLI(t, s.Key, "eval", "support_bot", "-f", good)
		for _, want := range []string{"[1/3] pass demonstration 1", "[3/3] pass hours, asked twice", "support_bot version 1: 3 passed, 0 failed"} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("stdout lacks %q:\n%s", want, r.stdout)
			}
		}
	})
	t.Run("CLI fails", func(t *testing.T) {
		r := s.cli(s.Key, "eval", "support_bot", "--version", "1", "-f", bad, "--json")
		wantCLIError(t, r, "eval: 1 of 3 cases failed")
		var rep struct {
			Status         string
			Passed, Failed int
			Cases          []struct {
				Name     string
				Passed   bool
				Failures []string
				RunID    string `json:"run_id"`
			}
		}
		if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
			t.Fatalf("--json: %v\n%s", err, r.stdout)
		}
		if rep.Status != "failed" || rep.Passed != 2 || rep.Failed != 1 || rep.Cases[2].Passed || !strings.Contains(rep.Cases[2].Failures[0], "equals:") || rep.Cases[0].RunID == "" {
			t.Fatalf("report = %+v", rep)
		}
	})
	t.Run("CLI file errors name the case", func(t *testing.T) {
		f := filepath.Join(dir, "broken.yaml")
		os.WriteFile(f, []byte("- input: x\n  expect: {regex: '('}\n"), 0o600)
		wantCLIError(t, s.cli(s.Key, "eval", "support_bot", "-f", f), "broken.yaml:1: case 1: expect.regex")
	})

	t.Run("server", func(t *testing.T) {
		if _, err := op.LatestEvals(ctx, "support_bot", 1); statusOf(err) != 404 {
			t.Fatalf("latest before any eval: %v, want 404", err)
		}
		cases, _ := json.Marshal([]map[string]any{{"name": "wrong", "input": "How do I reset my password?", "expect": map[string]any{"equals": "Call us."}}})
		raw, err := op.RunEvals(ctx, "support_bot", 1, cases)
		if err != nil {
			t.Fatal(err)
		}
		var rep struct {
			ID, Status     string
			Passed, Failed int
			KeyID          string `json:"key_id"`
		}
		json.Unmarshal(raw, &rep)
		if rep.Status != "failed" || rep.Passed != 2 || rep.Failed != 1 || rep.ID == "" {
			t.Fatalf("report = %s", raw)
		}
		if got := evalStatusOf(t, s, ctx); got != "failed" {
			t.Fatalf("eval_status = %q, want failed", got)
		}
		raw, err = op.RunEvals(ctx, "support_bot", 1, nil)
		if err != nil {
			t.Fatal(err)
		}
		json.Unmarshal(raw, &rep)
		if rep.Status != "passed" || rep.Passed != 2 {
			t.Fatalf("report = %s", raw)
		}
		if got := evalStatusOf(t, s, ctx); got != "passed" {
			t.Fatalf("eval_status = %q, want passed", got)
		}
		latest, err := op.LatestEvals(ctx, "support_bot", 1)
		if err != nil || !strings.Contains(string(latest), rep.ID) {
			t.Fatalf("latest = %s, %v; want eval %s", latest, err, rep.ID)
		}
		if _, err := op.RunEvals(ctx, "support_bot", 9, nil); statusOf(err) != 404 {
			t.Fatalf("version 9: %v, want 404", err)
		}
		if _, err := op.RunEvals(ctx, "support_bot", 1, json.RawMessage(`[{"input": "x"}]`)); statusOf(err) != 422 {
			t.Fatalf("a case without expect: %v, want 422", err)
		}
		db, err := store.Open(ctx, "sqlite:"+s.dbPath, store.Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		runs, err := db.EvalRuns(ctx, rep.ID)
		if err != nil || len(runs) != 2 {
			t.Fatalf("eval runs = %v, %v; want 2", runs, err)
		}
	})
}

func evalStatusOf(t *testing.T, s *testServer, ctx context.Context) string {
	t.Helper()
	var out struct {
		Data struct {
			EvalStatus *string `json:"eval_status"`
		} `json:"data"`
	}
	if err := s.client(s.Key).Do(ctx, "GET", "/api/v3/agents/support_bot/versions/1", nil, nil, &out); err != nil {
		t.Fatal(err)
	}
	if out.Data.EvalStatus == nil {
		return ""
	}
	return *out.Data.EvalStatus
}

// evalUpstream is an OpenAI-compatible upstream for evals: it answers
// {"status":"ok"} when the system prompt asks for JSON and prose otherwise, always
// with 100 prompt and 20 completion tokens, and a message saying "slow" moves the
// server's clock on by 1.5 s while it answers (the run's latency, measured on that
// clock, without a sleep).
func evalUpstream(t *testing.T, clk *clocktest.Fake) *httptest.Server {
	u := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Model    string `json:"model"`
			Messages []struct{ Role, Content string }
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil || r.URL.Path != "/v1/chat/completions" || len(body.Messages) == 0 {
			http.Error(w, fmt.Sprintf("bad request %s: %v", r.URL.Path, err), 400)
			return
		}
		reply := "All is well."
		if strings.Contains(body.Messages[0].Content, "JSON") {
			reply = `{"status": "ok"}`
		}
		if strings.Contains(body.Messages[len(body.Messages)-1].Content, "slow") {
			clk.Advance(1500 * time.Millisecond)
		}
		content, _ := json.Marshal(reply)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id":"chatcmpl-E","object":"chat.completion","created":1741569952,"model":%q,"choices":[{"index":0,"message":{"role":"assistant","content":%s},"finish_reason":"stop"}],"usage":{"prompt_tokens":100,"completion_tokens":20,"total_tokens":120}}`, body.Model, content)
	}))
	t.Cleanup(u.Close)
	return u
}

// evalServer is a server on a fake clock with model gpt-eval on evalUpstream (1000
// credits per million input tokens, 5000 per million output: 0.2 credits a run),
// credits granted and agent json_bot on it, asked for JSON.
func evalServer(t *testing.T) (*testServer, *client.Client) {
	clk := clocktest.New(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	return clockedServer(t, clk, evalUpstream(t, clk).URL, "gpt-eval", "json_bot", "Answers in JSON", "Answer in JSON.")
}

// clockedServer is a server on clk with model (upstream model model-1) on the
// OpenAI-compatible upstream at baseURL, priced 1000 credits per million input
// tokens and 5000 per million output, 10 credits granted, and agent name on it.
func clockedServer(t *testing.T, clk *clocktest.Fake, baseURL, model, name, description, instructions string) (*testServer, *client.Client) {
	t.Helper()
	cfg := fmt.Sprintf(`
providers:
  - {name: compat, kind: openai, base_url: %s/v1, api_key_env: UPSTREAM_KEY, max_retries: 0}
models:
  - {id: %s, provider: compat, upstream_model: %s-1, context_window: 8192, max_output_tokens: 1024, price: {input: 1000, output: 5000}}
`, baseURL, model, model)
	s := startServerWith(t, cfg, map[string]string{"UPSTREAM_KEY": "sk-upstream-secret"}, &serveHooks{clock: clk})
	op := s.client(s.Key)
	if r := agentdCLI(map[string]string{"AGENTD_URL": s.URL, "AGENTD_KEY": s.Key}, "", "credits", "grant", "default", "10"); r.err != nil {
		t.Fatal(r.err)
	}
	if _, err := op.CreateAgent(context.Background(), client.AgentSpec{Name: client.Ptr(name), Description: client.Ptr(description),
		Model: client.Ptr(model), Instructions: client.Ptr(instructions)}); err != nil {
		t.Fatal(err)
	}
	return s, op
}

// evalReport is the part of a report the tests read.
type evalReport struct {
	Status         string
	Passed, Failed int
	Cost           json.Number
	Cases          []struct {
		Name         string
		Passed       bool
		Failures     []string
		Error        string
		OutputTokens int         `json:"output_tokens"`
		Cost         json.Number `json:"cost"`
		LatencyMS    int64       `json:"latency_ms"`
	}
}

// TestEvalsOnUpstream runs cases on a model of an OpenAI-compatible upstream and
// checks json_schema, max_cost, max_latency_ms and max_output_tokens against the
// runs' real usage: one case passing and one failing each, on the server and
// (but for the latency, which the CLI measures on its own clock) from the CLI.
func TestEvalsOnUpstream(t *testing.T) {
	s, op := evalServer(t)
	ctx := context.Background()
	schema := map[string]any{"type": "object", "required": []string{"status"}, "properties": map[string]any{"status": map[string]any{"enum": []string{"ok"}}}}
	strict := map[string]any{"type": "object", "required": []string{"status", "detail"}}
	cases := []map[string]any{
		{"name": "schema ok", "input": "status?", "expect": map[string]any{"json_schema": schema}},
		{"name": "schema missing detail", "input": "status?", "expect": map[string]any{"json_schema": strict}},
		{"name": "cost ok", "input": "status?", "expect": map[string]any{"max_cost": 0.5}},
		{"name": "cost over", "input": "status?", "expect": map[string]any{"max_cost": 0.1}},
		{"name": "tokens ok", "input": "status?", "expect": map[string]any{"max_output_tokens": 20}},
		{"name": "tokens over", "input": "status?", "expect": map[string]any{"max_output_tokens": 19}},
		{"name": "latency ok", "input": "status?", "expect": map[string]any{"max_latency_ms": 1000}},
		{"name": "latency over", "input": "status, slow", "expect": map[string]any{"max_latency_ms": 1000}},
	}
	body, _ := json.Marshal(cases)
	raw, err := op.RunEvals(ctx, "json_bot", 1, body)
	if err != nil {
		t.Fatal(err)
	}
	var rep evalReport
	if err := json.Unmarshal(raw, &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Status != "failed" || rep.Passed != 4 || rep.Failed != 4 || len(rep.Cases) != 8 || rep.Cost.String() != "1.6" {
		t.Fatalf("report = %s", raw)
	}
	wantFailure := map[string]string{
		"schema missing detail": "json_schema:",
		"cost over":             "max_cost: cost 0.2 credits, at most 0.1",
		"tokens over":           "max_output_tokens: 20 output tokens, at most 19",
		"latency over":          "max_latency_ms: 1500 ms, at most 1000",
	}
	for _, c := range rep.Cases {
		if c.Error != "" || c.OutputTokens != 20 || c.Cost.String() != "0.2" {
			t.Errorf("%s: the run's usage = %+v, want 20 output tokens and 0.2 credits", c.Name, c)
		}
		want, fails := wantFailure[c.Name]
		switch {
		case !fails && !c.Passed:
			t.Errorf("%s failed: %v", c.Name, c.Failures)
		case fails && (c.Passed || len(c.Failures) != 1 || !strings.Contains(c.Failures[0], want)):
			t.Errorf("%s: failures %q, want one with %q", c.Name, c.Failures, want)
		}
	}
	if lat := rep.Cases[7].LatencyMS; lat != 1500 {
		t.Errorf("the slow case's latency is %d ms, want 1500", lat)
	}
	if got := versionEvalStatus(t, op, "json_bot", 1); got != "failed" {
		t.Errorf("eval_status = %q, want failed", got)
	}

	t.Run("CLI", func(t *testing.T) {
		f := filepath.Join(t.TempDir(), "cases.yaml")
		os.WriteFile(f, []byte(`
- {name: schema ok, input: "status?", expect: {json_schema: {type: object, required: [status], properties: {status: {enum: [ok]}}}}}
- {name: schema wrong enum, input: "status?", expect: {json_schema: {type: object, properties: {status: {enum: [down]}}}}}
- {name: cost ok, input: "status?", expect: {max_cost: 0.2}}
- {name: cost over, input: "status?", expect: {max_cost: 0.19}}
- {name: tokens ok, input: "status?", expect: {max_output_tokens: 50}}
- {name: tokens over, input: "status?", expect: {max_output_tokens: 10}}
`), 0o600)
		r := s.cli(s.Key, "eval", "json_bot", "-f", f)
		wantCLIError(t, r, "eval: 3 of 6 cases failed")
		for _, want := range []string{"[1/6] pass schema ok", "[2/6] FAIL schema wrong enum", "[3/6] pass cost ok", "[4/6] FAIL cost over",
			"[5/6] pass tokens ok", "[6/6] FAIL tokens over", "cost over: max_cost: cost 0.2 credits, at most 0.19",
			"tokens over: max_output_tokens: 20 output tokens, at most 10", "schema wrong enum: json_schema:", "json_bot version 1: 3 passed, 3 failed, 1.2 credits"} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("stdout lacks %q:\n%s", want, r.stdout)
			}
		}
	})
}

// TestActivateRequireEvals: activate?require_evals=true refuses (409) a version
// whose evals failed, and one never evaluated, leaving the active version where
// it is; it promotes a version whose evals passed. The same cases decide: the
// draft asked for prose fails the JSON schema that the draft asked for JSON meets.
func TestActivateRequireEvals(t *testing.T) {
	s, op := evalServer(t)
	ctx := context.Background()
	draft := func(instructions string) int {
		t.Helper()
		var out struct{ Data struct{ Version int } }
		if err := op.Do(ctx, "POST", "/api/v3/agents/json_bot/versions", nil,
			map[string]any{"activate": false, "instructions": instructions}, &out); err != nil {
			t.Fatal(err)
		}
		return out.Data.Version
	}
	prose, strictJSON := draft("Answer in prose."), draft("Answer in JSON, nothing else.")
	cases := json.RawMessage(`[{"name": "status as JSON", "input": "status?", "expect": {"json_schema": {"type": "object", "required": ["status"]}, "max_cost": 0.5}}]`)
	for n, want := range map[int]string{prose: "failed", strictJSON: "passed"} {
		raw, err := op.RunEvals(ctx, "json_bot", n, cases)
		if err != nil {
			t.Fatal(err)
		}
		var rep evalReport
		if json.Unmarshal(raw, &rep); rep.Status != want {
			t.Fatalf("version %d: report %s, want %s", n, raw, want)
		}
	}
	activate := func(n int) (int, string) {
		return call(t, s, s.Key, "POST", fmt.Sprintf("/api/v3/agents/json_bot/versions/%d/activate?require_evals=true", n), "")
	}
	never := draft("Never evaluated.")
	for n, why := range map[int]string{prose: "(failed)", never: "(never evaluated)"} {
		code, b := activate(n)
		if code != 409 || !strings.Contains(b, fmt.Sprintf("version %d of agent", n)) || !strings.Contains(b, why) {
			t.Errorf("activate version %d: %d %s; want 409 saying %s", n, code, b, why)
		}
		if a, err := op.Agent(ctx, "json_bot"); err != nil || a.Version != 1 {
			t.Fatalf("after a refused activation the active version is %v (%v), want 1", a.Version, err)
		}
	}
	if code, b := activate(strictJSON); code != 200 {
		t.Fatalf("activate the passing version %d: %d %s", strictJSON, code, b)
	}
	if a, err := op.Agent(ctx, "json_bot"); err != nil || a.Version != strictJSON || a.SystemPrompt != "Answer in JSON, nothing else." {
		t.Fatalf("after promotion: %+v, %v; want version %d active", a, err, strictJSON)
	}
	// Without the gate an operator may still activate anything (a rollback).
	if code, b := call(t, s, s.Key, "POST", "/api/v3/agents/json_bot/versions/1/activate", ""); code != 200 {
		t.Fatalf("rollback: %d %s", code, b)
	}
	if got := versionEvalStatus(t, op, "json_bot", prose); got != "failed" {
		t.Errorf("version %d eval_status = %q, want failed", prose, got)
	}
}

// versionEvalStatus is version n's eval_status ("" when never evaluated).
func versionEvalStatus(t *testing.T, c *client.Client, agent string, n int) string {
	t.Helper()
	var out struct {
		Data struct {
			EvalStatus *string `json:"eval_status"`
		} `json:"data"`
	}
	if err := c.Do(context.Background(), "GET", fmt.Sprintf("/api/v3/agents/%s/versions/%d", agent, n), nil, nil, &out); err != nil {
		t.Fatal(err)
	}
	if out.Data.EvalStatus == nil {
		return ""
	}
	return *out.Data.EvalStatus
}
