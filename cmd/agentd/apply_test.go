package main

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/agentd/agentd/client"
)

// writeFiles writes files (relative path → content) under dir.
func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		f := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func wantOutput(t *testing.T, what, out string, parts ...string) {
	t.Helper()
	for _, p := range parts {
		if !strings.Contains(out, p) {
			t.Errorf("%s lacks %q:\n%s", what, p, out)
		}
	}
}

func agentNames(t *testing.T, s *testServer) []string {
	t.Helper()
	list, err := s.client(s.Key).Agents(context.Background(), true)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, a := range list {
		names = append(names, a.Name)
	}
	return names
}

const supportYAML = `agent_name: Support Bot
agent_description: Answers support questions
model: offline
temperature: 0.2
max_token: 200
instructions: |
  Be concise.
  Answer in English.
demonstrations:
  - input: How do I reset my password?
    output: Use Settings, then Reset password.
`

// TestApply: apply on a folder plans, applies and then finds nothing to do;
// --dry-run changes nothing (and --exit-code says whether it would); an update
// shows its field diff and changes only those fields; export then apply is a
// no-op; --prune deletes only the agents that no file defines.
func TestApply(t *testing.T) {
	s := startServer(t, "", nil)
	ctx := context.Background()
	if _, err := s.client(s.Key).CreateAgent(ctx, client.AgentSpec{Name: client.Ptr("legacy"), Description: client.Ptr("made by hand"), Model: client.Ptr("offline")}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"support.yaml": supportYAML,
		"team/faq.yml": "agent_name: faq\nagent_description: FAQ\nmodel: offline\nstatus: inactive\nconversation_saving_enabled: false\n",
		".git/x.yaml":  "not: an agent\n", // hidden folders are skipped
		"README.md":    "# agents\n",
	})

	dry := s.mustCLI(t, s.Key, "apply", "-f", dir, "--dry-run").stdout
	wantOutput(t, "apply --dry-run", dry, "+ create faq (", "+ create support_bot (", "temperature: 0.2", `instructions: "Be concise."… (2 lines)`,
		"left alone (--prune deletes them): legacy", "Plan: 2 to create, 0 to update, 0 to delete, 0 unchanged. Dry run: nothing was changed.")
	if strings.Index(dry, "create faq") > strings.Index(dry, "create support_bot") {
		t.Errorf("plan not in name order:\n%s", dry)
	}
	if names := agentNames(t, s); len(names) != 1 {
		t.Fatalf("a dry run changed the agents: %v", names)
	}
	r := s.cli(s.Key, "apply", "-f", dir, "--dry-run", "--exit-code")
	var ee *exitError
	if !errors.As(r.err, &ee) || ee.code != 2 {
		t.Errorf("apply --dry-run --exit-code with changes: %v, want exit status 2", r.err)
	}

	out := s.mustCLI(t, s.Key, "apply", "--file", dir).stdout
	wantOutput(t, "apply", out, "created faq (version 1)", "created support_bot (version 1)", "Applied: 2 created, 0 updated, 0 deleted, 0 unchanged.")
	sb, err := s.client(s.Key).Agent(ctx, "support_bot")
	if err != nil {
		t.Fatal(err)
	}
	if sb.Temperature != 0.2 || sb.MaxToken != 200 || sb.SystemPrompt != "Be concise.\nAnswer in English.\n" || len(sb.Demonstrations) != 1 {
		t.Errorf("support_bot as applied: %+v", sb)
	}
	again := s.mustCLI(t, s.Key, "apply", "-f", dir).stdout
	wantOutput(t, "apply again", again, "No changes", "= unchanged: faq, support_bot")
	if r := s.cli(s.Key, "apply", "-f", dir, "--dry-run", "--exit-code"); r.err != nil {
		t.Errorf("apply --dry-run --exit-code without changes: %v", r.err)
	}

	// An update: its field diff, line by line and item by item; only those fields change.
	writeFiles(t, dir, map[string]string{"support.yaml": strings.NewReplacer("temperature: 0.2", "temperature: 0.5", "Be concise.", "Be brief.").Replace(supportYAML) +
		"  - input: Opening hours?\n    output: 8:00 to 20:00.\n"})
	dry = s.mustCLI(t, s.Key, "apply", "-f", dir, "--dry-run").stdout
	wantOutput(t, "apply --dry-run of an update", dry, "~ update support_bot (", "temperature: 0.2 → 0.5", "instructions:", "- Be concise.", "+ Be brief.",
		"  Answer in English.", "demonstrations: 1 → 2", `+ [1] "Opening hours?" => "8:00 to 20:00."`, "= unchanged: faq", "Plan: 0 to create, 1 to update")
	if strings.Contains(dry, "max_token") || strings.Contains(dry, "agent_description") {
		t.Errorf("the diff shows unchanged fields:\n%s", dry)
	}
	var p plan
	if err := json.Unmarshal([]byte(s.mustCLI(t, s.Key, "apply", "-f", dir, "--dry-run", "--json").stdout), &p); err != nil {
		t.Fatal(err)
	}
	if p.Summary.Update != 1 || p.Summary.Unchanged != 1 || len(p.Items) != 2 || p.Items[0].Action != "update" || len(p.Items[0].Fields) != 3 ||
		string(p.Items[0].Fields[0].Old) != "0.2" || string(p.Items[0].Fields[0].New) != "0.5" {
		t.Errorf("apply --dry-run --json: %+v", p)
	}
	wantOutput(t, "apply of an update", s.mustCLI(t, s.Key, "apply", "-f", dir, "--note", "brief now").stdout, "updated support_bot (version 2)")
	if sb, _ := s.client(s.Key).Agent(ctx, "support_bot"); sb.Temperature != 0.5 || len(sb.Demonstrations) != 2 || sb.Description != "Answers support questions" {
		t.Errorf("support_bot after the update: %+v", sb)
	}

	// Export, then apply of the export: nothing to do.
	exported := t.TempDir()
	wantOutput(t, "export -o", s.mustCLI(t, s.Key, "export", "-o", exported).stdout, "wrote 3 agent files")
	for _, name := range []string{"faq.yaml", "legacy.yaml", "support_bot.yaml"} {
		if _, err := os.Stat(filepath.Join(exported, name)); err != nil {
			t.Error(err)
		}
	}
	wantOutput(t, "apply of the export", s.mustCLI(t, s.Key, "apply", "-f", exported).stdout, "No changes", "faq, legacy, support_bot")

	// --prune deletes the agent that no file defines, and only it.
	dry = s.mustCLI(t, s.Key, "apply", "-f", dir, "--prune", "--dry-run").stdout
	wantOutput(t, "apply --prune --dry-run", dry, "- delete legacy (on the server, in no file of "+dir+")", "0 to update, 1 to delete, 2 unchanged")
	wantOutput(t, "apply --prune", s.mustCLI(t, s.Key, "apply", "-f", dir, "--prune").stdout, "deleted legacy", "Applied: 0 created, 0 updated, 1 deleted, 2 unchanged.")
	if names := strings.Join(agentNames(t, s), ","); names != "support_bot,faq" && names != "faq,support_bot" {
		t.Errorf("after --prune: %s", names)
	}

	// --require-evals: the new version is a draft until its evals (the offline
	// model answers its demonstrations) pass; then it is active.
	writeFiles(t, dir, map[string]string{"support.yaml": strings.Replace(supportYAML, "temperature: 0.2", "temperature: 0.3", 1)})
	out = s.mustCLI(t, s.Key, "apply", "-f", dir, "--require-evals", "--note", "cooler").stdout
	wantOutput(t, "apply --require-evals", out, "temperature: 0.5 → 0.3", "updated support_bot (version 3)")
	if sb, _ := s.client(s.Key).Agent(ctx, "support_bot"); sb.Temperature != 0.3 || sb.Version != 3 {
		t.Errorf("support_bot after apply --require-evals: %+v", sb)
	}
	wantCLIError(t, s.cli(s.Key, "apply"), "apply: which agents?")
}

// TestApplyBadFiles: a file that is not YAML, an unknown field, a value of the
// wrong type, an agent defined twice and a value the server refuses are errors
// that name the file, the agent and the field.
func TestApplyBadFiles(t *testing.T) {
	s := startServer(t, "", nil)
	for _, tt := range []struct {
		name  string
		files map[string]string
		want  []string
	}{
		{"syntax", map[string]string{"bad.yaml": "agent_name: x\n  model: [offline\n"}, []string{"bad.yaml is not YAML: line"}},
		{"unknown field", map[string]string{"x.yaml": "agent_name: X Bot\nmodle: offline\n"}, []string{`x.yaml: agent x_bot: line 2: unknown field "modle"; an agent has agent_name,`}},
		{"wrong type", map[string]string{"t.yaml": "agent_name: t\ntemperature: hot\n"}, []string{`t.yaml: agent t: line 2: temperature: want a number, not the string "hot"`}},
		{"demonstration", map[string]string{"d.yaml": "agent_name: d\ndemonstrations:\n  - {input: a, answer: b}\n"}, []string{`d.yaml: agent d: line 3: demonstrations: [0] (line 3): unknown field "answer"`}},
		{"no name", map[string]string{"n.yaml": "model: offline\n"}, []string{"n.yaml:1: an agent needs agent_name"}},
		{"twice", map[string]string{"a.yaml": "agent_name: same\n", "b/c.yaml": "agent_name: Same\n"}, []string{"c.yaml: agent same is defined twice: here and in ", "a.yaml:1"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFiles(t, dir, tt.files)
			wantCLIError(t, s.cli(s.Key, "apply", "-f", dir, "--dry-run"), append([]string{"apply: "}, tt.want...)...)
		})
	}

	// A value the server refuses: the error names the file, the agent and the
	// field; the other agents are applied and the exit status says it failed.
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"hot.yaml": "agent_name: hot\nagent_description: d\nmodel: offline\ntemperature: 5\n",
		"ok.yaml":  "agent_name: ok\nagent_description: d\nmodel: offline\n",
	})
	r := s.cli(s.Key, "apply", "-f", dir)
	wantCLIError(t, r, "apply: 1 of 2 changes failed", "hot.yaml: agent hot: temperature: temperature must be between 0 and 2")
	wantOutput(t, "apply with a refused value", r.stdout, "failed to create hot", "created ok", "Applied 1 of 2 changes; 1 failed.")
}

// TestExportRoundTrip: an agent with tools, a response format, demonstrations
// and instructions of several lines exports as readable YAML (block scalars;
// a text with trailing spaces is quoted, since a block would lose them) that
// applies as no change, and recreates the same agent.
func TestExportRoundTrip(t *testing.T) {
	s := startServer(t, `
providers:
  - {name: compat, kind: openai, base_url: "http://127.0.0.1:9/v1", api_key_env: UPSTREAM_KEY}
models:
  - {id: gpt-x, provider: compat, upstream_model: gpt-x, context_window: 8192, max_output_tokens: 512, price: {input: 1, output: 2}}
`, map[string]string{"UPSTREAM_KEY": "k"})
	ctx := context.Background()
	instructions := "You are the weather bot.\n\n  Indented line: with a colon\n---\n# not a comment\n\"quoted\" and 'single' ünïcode ✓"
	tools := `[{"type":"function","function":{"name":"get_weather","description":"The weather.\nIn a city.","parameters":{"type":"object","properties":{"city":{"type":"string","enum":["Paris","true","1.0"]},"days":{"type":"integer","minimum":1,"maximum":1.50}},"required":["city"]}}}]`
	format := `{"type":"json_schema","json_schema":{"name":"w","strict":true,"schema":{"type":"object","properties":{},"additionalProperties":false}}}`
	spec := client.AgentSpec{
		Name: client.Ptr("weather"), Description: client.Ptr("true"), Model: client.Ptr("gpt-x"),
		Temperature: client.Ptr(0.35), MaxToken: client.Ptr(300), Instructions: &instructions,
		Demonstrations: []client.Demonstration{{Input: "Paris?", Output: "Sunny.\nWarm."}, {Input: "- yes", Output: "null"}, {Input: "Trailing spaces   \nkept", Output: "  leading too"}},
		Tools:          json.RawMessage(tools), ResponseFormat: json.RawMessage(format),
	}
	before, err := s.client(s.Key).CreateAgent(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.client(s.Key).CreateAgent(ctx, client.AgentSpec{Name: client.Ptr("plain"), Description: client.Ptr(""), Model: client.Ptr("offline")}); err != nil {
		t.Fatal(err)
	}

	yml := s.mustCLI(t, s.Key, "export").stdout
	wantOutput(t, "export", yml, "agent_name: plain\n", "---\nagent_name: weather\n", "agent_description: \"true\"\n", "temperature: 0.35\n",
		"instructions: |-\n  You are the weather bot.\n", "tools:\n  - type: function\n", "maximum: 1.50\n", "demonstrations: []\n", "tools: []\n", "response_format: null\n")
	env := map[string]string{"AGENTD_URL": s.URL, "AGENTD_KEY": s.Key}
	if r := agentdCLI(env, yml, "apply", "-f", "-"); r.err != nil || !strings.Contains(r.stdout, "No changes") {
		t.Fatalf("apply of the export: %v\n%s", r.err, r.stdout)
	}

	// Deleted, then applied from the export: the same agent again.
	for _, name := range []string{"weather", "plain"} {
		if err := s.client(s.Key).DeleteAgent(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	if r := agentdCLI(env, yml, "apply", "-f", "-"); r.err != nil || !strings.Contains(r.stdout, "Applied: 2 created") {
		t.Fatalf("apply of the export after a delete: %v\n%s", r.err, r.stdout)
	}
	after, err := s.client(s.Key).Agent(ctx, "weather")
	if err != nil {
		t.Fatal(err)
	}
	if after.SystemPrompt != instructions || after.Description != "true" || after.Temperature != 0.35 || after.MaxToken != 300 ||
		string(after.Tools) != string(before.Tools) || string(after.ResponseFormat) != string(before.ResponseFormat) ||
		!slices.Equal(after.Demonstrations, spec.Demonstrations) {
		t.Errorf("after the round trip:\n%+v\nwant\n%+v", after, before)
	}
	if again := s.mustCLI(t, s.Key, "export").stdout; again != yml {
		t.Errorf("export after the round trip differs:\n%s\nwant\n%s", again, yml)
	}
}

// TestApplyCanary: canary {version, percent} in an agent file is planned as a
// field change, applied (also with --note, which goes with new versions only),
// compared by value (percent 10 is 10.0), exported and applied back as no
// change, and removed with null; a version the agent lacks is refused naming
// the file, the agent and the field.
func TestApplyCanary(t *testing.T) {
	s := startServer(t, "", nil)
	ctx := context.Background()
	op := s.client(s.Key)
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"support.yaml": supportYAML})
	s.mustCLI(t, s.Key, "apply", "-f", dir)
	var draft struct{ Data struct{ Version int } }
	if err := op.Do(ctx, "POST", "/api/v3/agents/support_bot/versions", nil, map[string]any{"activate": false, "instructions": "Be warm."}, &draft); err != nil || draft.Data.Version != 2 {
		t.Fatalf("draft: %+v, %v", draft, err)
	}
	canary := func() *client.Canary {
		t.Helper()
		a, err := op.Agent(ctx, "support_bot")
		if err != nil {
			t.Fatal(err)
		}
		return a.Canary
	}

	writeFiles(t, dir, map[string]string{"support.yaml": supportYAML + "canary: {version: 2, percent: 10}\n"})
	dry := s.mustCLI(t, s.Key, "apply", "-f", dir, "--dry-run").stdout
	wantOutput(t, "apply --dry-run of a canary", dry, "~ update support_bot (", `canary: null → {"version":2,"percent":10}`, "Plan: 0 to create, 1 to update")
	wantOutput(t, "apply of a canary", s.mustCLI(t, s.Key, "apply", "-f", dir, "--note", "try warmth").stdout, "updated support_bot (version 1)")
	if c := canary(); c == nil || *c != (client.Canary{Version: 2, Percent: 10}) {
		t.Fatalf("canary = %+v, want version 2 at 10 %%", c)
	}
	writeFiles(t, dir, map[string]string{"support.yaml": supportYAML + "canary:\n  percent: 10.0\n  version: 2\n"})
	wantOutput(t, "apply of the same canary", s.mustCLI(t, s.Key, "apply", "-f", dir).stdout, "No changes")

	exported := t.TempDir()
	s.mustCLI(t, s.Key, "export", "-o", exported)
	yml, err := os.ReadFile(filepath.Join(exported, "support_bot.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	wantOutput(t, "export of a canary", string(yml), "canary:\n  version: 2\n  percent: 10\n")
	wantOutput(t, "apply of the export", s.mustCLI(t, s.Key, "apply", "-f", exported).stdout, "No changes")

	writeFiles(t, dir, map[string]string{"support.yaml": supportYAML + "canary: {version: 9, percent: 10}\n"})
	wantCLIError(t, s.cli(s.Key, "apply", "-f", dir), "support.yaml: agent support_bot: canary", "canary version 9 does not exist")
	if c := canary(); c == nil || c.Version != 2 {
		t.Fatalf("a refused canary changed it: %+v", c)
	}

	writeFiles(t, dir, map[string]string{"support.yaml": supportYAML + "canary: null\n"})
	dry = s.mustCLI(t, s.Key, "apply", "-f", dir, "--dry-run").stdout
	wantOutput(t, "apply --dry-run of no canary", dry, `canary: {"version":2,"percent":10} → null`)
	s.mustCLI(t, s.Key, "apply", "-f", dir, "--note", "warmth is out")
	if c := canary(); c != nil {
		t.Fatalf("canary after null = %+v", c)
	}
	s.mustCLI(t, s.Key, "export", "-o", exported)
	if yml, _ := os.ReadFile(filepath.Join(exported, "support_bot.yaml")); !strings.Contains(string(yml), "canary: null\n") {
		t.Errorf("export without a canary:\n%s", yml)
	}
}

// TestApplyRequireEvalsRefuses: with --require-evals a new version whose evals
// (its demonstrations, run on the model of an OpenAI-compatible upstream) pass
// becomes active, and one whose evals fail is stored as a draft and left
// inactive, apply exiting non-zero and saying so.
func TestApplyRequireEvalsRefuses(t *testing.T) {
	s, op := evalServer(t)
	ctx := context.Background()
	dir := t.TempDir()
	file := func(instructions string) string {
		return "agent_name: json_bot\nmodel: gpt-eval\ninstructions: " + instructions + "\n" +
			"demonstrations:\n  - {input: \"status?\", output: '{\"status\": \"ok\"}'}\n"
	}
	writeFiles(t, dir, map[string]string{"json_bot.yaml": file("Answer in JSON.")})
	out := s.mustCLI(t, s.Key, "apply", "-f", dir, "--require-evals").stdout
	wantOutput(t, "apply --require-evals of a passing version", out, "updated json_bot (version 2)")
	if a, err := op.Agent(ctx, "json_bot"); err != nil || a.Version != 2 || len(a.Demonstrations) != 1 {
		t.Fatalf("after a passing gate: %+v, %v", a, err)
	}

	writeFiles(t, dir, map[string]string{"json_bot.yaml": file("Answer in prose.")})
	r := s.cli(s.Key, "apply", "-f", dir, "--require-evals", "--note", "prose")
	wantCLIError(t, r, "apply: 1 of 1 changes failed", "json_bot.yaml: agent json_bot: version 3 is stored as a draft, not active",
		`version 3 of agent "json_bot" has not passed its evaluation (failed)`)
	a, err := op.Agent(ctx, "json_bot")
	if err != nil || a.Version != 2 || a.SystemPrompt != "Answer in JSON." {
		t.Fatalf("after a failing gate: %+v, %v; want version 2 still active", a, err)
	}
	var v struct {
		Data struct {
			Instructions string `json:"system_prompt"`
			Note         string
			EvalStatus   string `json:"eval_status"`
			Active       bool
		}
	}
	if err := op.Do(ctx, "GET", "/api/v3/agents/json_bot/versions/3", nil, nil, &v); err != nil {
		t.Fatal(err)
	}
	if v.Data.Instructions != "Answer in prose." || v.Data.Note != "prose" || v.Data.EvalStatus != "failed" || v.Data.Active {
		t.Errorf("the refused version: %+v", v.Data)
	}
	// The plan still shows the change: the file is not what serves.
	wantOutput(t, "apply --dry-run after a refusal", s.mustCLI(t, s.Key, "apply", "-f", dir, "--dry-run").stdout, "~ update json_bot (", "instructions:")
}
