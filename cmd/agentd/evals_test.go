package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

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
