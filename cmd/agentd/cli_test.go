package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/client"
	"github.com/agentd/agentd/internal/clock/clocktest"
)

// cliResult is what one in-process run of agentd printed and returned.
type cliResult struct {
	stdout, stderr string
	err            error
}

// agentdCLI runs agentd in-process with args, the environment env (nothing else)
// and stdin.
func agentdCLI(env map[string]string, stdin string, args ...string) cliResult {
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), args, func(k string) string { return env[k] }, strings.NewReader(stdin), &stdout, &stderr)
	return cliResult{stdout.String(), stderr.String(), err}
}

// main is what the process prints for an error: agentd's own prefix once.
func (r cliResult) main() string {
	if r.err == nil {
		return ""
	}
	return "agentd: " + strings.TrimPrefix(r.err.Error(), "agentd: ")
}

// as runs agentd as a client of s with key.
func (s *testServer) cli(key string, args ...string) cliResult {
	return agentdCLI(map[string]string{"AGENTD_URL": s.URL, "AGENTD_KEY": key}, "", args...)
}

// mustCLI is s.cli that fails the test on an error.
func (s *testServer) mustCLI(t *testing.T, key string, args ...string) cliResult {
	t.Helper()
	r := s.cli(key, args...)
	if r.err != nil {
		t.Fatalf("agentd %s: %v\nstderr: %s", strings.Join(args, " "), r.err, r.stderr)
	}
	return r
}

// wantErr checks that r failed with an error that contains every part, reads
// as a sentence for a person (no doubled prefix) and shows no Go internals
// before its explanation.
func wantCLIError(t *testing.T, r cliResult, parts ...string) {
	t.Helper()
	if r.err == nil {
		t.Fatalf("succeeded, want an error with %q; stdout:\n%s", parts, r.stdout)
	}
	msg := r.main()
	for _, p := range parts {
		if !strings.Contains(msg, p) {
			t.Errorf("error %q does not contain %q", msg, p)
		}
	}
	if strings.Contains(msg, "agentd: agentd:") || strings.Contains(msg, "agentd: 4") || strings.Contains(msg, "agentd: 5") {
		t.Errorf("error %q has a doubled or raw prefix", msg)
	}
	for _, internal := range []string{"dial tcp", "json: cannot", "json: unknown", "yaml: unmarshal", "*client.", "<nil>", "%!"} {
		if i := strings.Index(msg, internal); i >= 0 && !strings.Contains(msg[:i], "(") {
			t.Errorf("error %q shows Go internals (%q) before it says what to do", msg, internal)
		}
	}
}

// leafCommands lists every command that runs (not a group), by its words.
func leafCommands() [][]string {
	var out [][]string
	var walk func([]*command)
	walk = func(cmds []*command) {
		for _, c := range cmds {
			if c.subs != nil {
				walk(c.subs)
				continue
			}
			out = append(out, strings.Fields(c.name))
		}
	}
	walk(commands())
	return out
}

// TestCLIHelp: every command and group prints its usage to stdout and succeeds
// for -h and --help, flags as they are typed (--name VALUE); agentd alone prints
// the usage and fails; the top usage names every command.
func TestCLIHelp(t *testing.T) {
	var paths [][]string
	for _, c := range commands() {
		if c.subs != nil {
			paths = append(paths, []string{c.name})
		}
	}
	paths = append(paths, leafCommands()...)
	for _, path := range paths {
		for _, h := range []string{"-h", "--help"} {
			name := strings.Join(path, " ")
			t.Run(name+" "+h, func(t *testing.T) {
				r := agentdCLI(nil, "", append(slices.Clone(path), h)...)
				if r.err != nil || r.stderr != "" {
					t.Fatalf("agentd %s %s: %v, stderr %q", name, h, r.err, r.stderr)
				}
				if !strings.HasPrefix(r.stdout, "Usage: agentd "+name) {
					t.Errorf("agentd %s %s printed:\n%s", name, h, r.stdout)
				}
				if m := regexp.MustCompile(`(?m)^\s+-[a-z]`).FindString(r.stdout); m != "" {
					t.Errorf("a flag shown with one dash (%q):\n%s", m, r.stdout)
				}
				if regexp.MustCompile(`--[a-z-]+ (string|int|float|value)\b`).MatchString(r.stdout) {
					t.Errorf("a flag's value is named by its Go type:\n%s", r.stdout)
				}
			})
		}
	}
	t.Run("client commands show --url and --key", func(t *testing.T) {
		for _, path := range [][]string{{"keys", "create"}, {"orgs", "list"}, {"credits", "history"}, {"agents", "get"}, {"run"}, {"usage"}} {
			out := agentdCLI(nil, "", append(path, "--help")...).stdout
			for _, want := range []string{"--url URL", "--key KEY", "AGENTD_URL", "AGENTD_KEY", "--json"} {
				if !strings.Contains(out, want) {
					t.Errorf("agentd %s --help lacks %q:\n%s", strings.Join(path, " "), want, out)
				}
			}
		}
	})
	t.Run("help COMMAND is COMMAND --help", func(t *testing.T) {
		a, b := agentdCLI(nil, "", "help", "keys", "create"), agentdCLI(nil, "", "keys", "create", "--help")
		if a.err != nil || a.stdout != b.stdout {
			t.Errorf("agentd help keys create: %v\n%s\nwant\n%s", a.err, a.stdout, b.stdout)
		}
	})
	t.Run("no command", func(t *testing.T) {
		r := agentdCLI(nil, "")
		if r.err == nil || !strings.Contains(r.stderr, "Usage:") || r.stdout != "" {
			t.Errorf("agentd alone: %v, stdout %q, stderr %q", r.err, r.stdout, r.stderr)
		}
	})
	t.Run("a group without its command", func(t *testing.T) {
		r := agentdCLI(nil, "", "keys")
		wantCLIError(t, r, "keys: which one? create, list, revoke or update")
		wantCLIError(t, agentdCLI(nil, "", "keys", "mint"), `unknown command "mint"`, "create, list, revoke or update")
	})
	t.Run("the usage names every command", func(t *testing.T) {
		top := agentdCLI(nil, "", "--help").stdout
		for _, c := range commands() {
			if !strings.Contains(top, "agentd "+c.name+" ") {
				t.Errorf("the usage does not list %q:\n%s", c.name, top)
			}
		}
		for _, path := range leafCommands() {
			if len(path) == 2 && !strings.Contains(top, path[1]) {
				t.Errorf("the usage does not list %q", strings.Join(path, " "))
			}
		}
	})
	t.Run("a bad flag names the command", func(t *testing.T) {
		wantCLIError(t, agentdCLI(nil, "", "keys", "list", "--nope"), "keys list", "--nope", "agentd keys list --help")
	})
}

// TestCLIKeys: keys create prints the secret once and it works; list, update
// (budget and its removal) and revoke, in tables and as JSON.
func TestCLIKeys(t *testing.T) {
	s := startServer(t, "", nil)
	ctx := context.Background()

	r := s.mustCLI(t, s.Key, "keys", "create", "--name", "ci", "--scopes", "run,usage", "--budget", "5", "--budget-period", "daily")
	secret := regexp.MustCompile(`(?m)^    (agd_\S+)$`).FindStringSubmatch(r.stdout)
	if secret == nil || !strings.Contains(r.stdout, "shown only this once") || !strings.Contains(r.stdout, "5 daily") {
		t.Fatalf("keys create printed:\n%s", r.stdout)
	}
	b, err := s.client(secret[1]).Billing(ctx)
	if err != nil || b.OrgID == "" {
		t.Fatalf("the printed secret does not work: %v", err)
	}
	id := regexp.MustCompile(`key-\S+`).FindString(r.stdout)

	list := s.mustCLI(t, s.Key, "keys", "list").stdout
	if !strings.HasPrefix(list, "ID ") || !strings.Contains(list, id) || !strings.Contains(list, "bootstrap") || strings.Contains(list, secret[1]) {
		t.Errorf("keys list:\n%s", list)
	}
	var keys []map[string]any
	if err := json.Unmarshal([]byte(s.mustCLI(t, s.Key, "keys", "list", "--json").stdout), &keys); err != nil || len(keys) != 2 {
		t.Fatalf("keys list --json: %v, %d keys", err, len(keys))
	}
	for _, k := range keys {
		if _, ok := k["key"]; ok {
			t.Errorf("keys list --json shows a secret: %v", k)
		}
	}

	// Flags after the argument work as well as before it.
	if out := s.mustCLI(t, s.Key, "keys", "update", id, "--budget", "7.5").stdout; !strings.Contains(out, "7.5 daily") {
		t.Errorf("keys update --budget 7.5:\n%s", out)
	}
	var k client.Key
	if err := json.Unmarshal([]byte(s.mustCLI(t, s.Key, "keys", "update", "--budget", "none", id, "--json").stdout), &k); err != nil || k.Budget != nil || k.ID != id {
		t.Errorf("keys update --budget none --json: %+v %v", k, err)
	}
	wantCLIError(t, s.cli(s.Key, "keys", "update", id), "nothing to change", "--budget")
	wantCLIError(t, s.cli(s.Key, "keys", "update", id, "--budget", "lots"), `--budget "lots" is not a number`)
	wantCLIError(t, s.cli(s.Key, "keys", "update", id, "--budget-period", "weekly"), "budget_period must be none, daily or monthly")

	if out := s.mustCLI(t, s.Key, "keys", "revoke", id).stdout; !strings.Contains(out, "revoked key "+id) {
		t.Errorf("keys revoke: %s", out)
	}
	// The revoked key is refused, and the error says which setting to change.
	wantCLIError(t, s.cli(secret[1], "keys", "list"), "keys list: the server refused the key", "--key or AGENTD_KEY")
	wantCLIError(t, s.cli(s.Key, "keys", "revoke"), "missing KEY_ID")

	// The key's secret goes nowhere else: --json carries it once, at creation.
	var created client.Key
	if err := json.Unmarshal([]byte(s.mustCLI(t, s.Key, "keys", "create", "--name", "j", "--json").stdout), &created); err != nil ||
		!strings.HasPrefix(created.Secret, "agd_") || !slices.Equal(created.Scopes, []string{"run"}) {
		t.Errorf("keys create --json: %+v %v", created, err)
	}
	// A run key may not mint keys: the API's words, and the scope it takes.
	wantCLIError(t, s.cli(created.Secret, "keys", "create", "--name", "x"), "admin scope")
}

// TestCLIOrgsAndCredits: organizations and credits through the CLI, and an
// organization's admin refused the operator's commands.
func TestCLIOrgsAndCredits(t *testing.T) {
	clk := clocktest.New(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	s := startServerWith(t, "", nil, &serveHooks{clock: clk})
	if out := s.mustCLI(t, s.Key, "orgs", "create", "acme").stdout; !strings.Contains(out, "created organization acme (org-") {
		t.Errorf("orgs create: %s", out)
	}
	if out := s.mustCLI(t, s.Key, "credits", "grant", "acme", "5").stdout; !strings.Contains(out, "granted 5 credits: acme (org-") || !strings.Contains(out, "balance of 5,") {
		t.Errorf("credits grant: %s", out)
	}
	// A correction is a negative amount, not a flag.
	clk.Advance(time.Minute)
	if out := s.mustCLI(t, s.Key, "credits", "grant", "acme", "-1.5").stdout; !strings.Contains(out, "took back 1.5 credits") || !strings.Contains(out, "balance of 3.5,") {
		t.Errorf("credits grant -1.5: %s", out)
	}
	wantCLIError(t, s.cli(s.Key, "credits", "grant", "acme", "-100"), "would take the available balance", "below zero")
	wantCLIError(t, s.cli(s.Key, "credits", "grant", "acme", "five"), `AMOUNT "five" is not a number`)
	wantCLIError(t, s.cli(s.Key, "credits", "grant", "nowhere", "1"), `organization "nowhere" not found`)

	list := s.mustCLI(t, s.Key, "orgs", "list").stdout
	lines := strings.Split(strings.TrimSpace(list), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "NAME ") || !strings.HasPrefix(lines[1], "acme ") || !strings.HasPrefix(lines[2], "default ") ||
		strings.Join(strings.Fields(lines[1])[2:5], " ") != "3.5 0 3.5" {
		t.Errorf("orgs list:\n%s", list)
	}
	var orgs []client.Org
	if err := json.Unmarshal([]byte(s.mustCLI(t, s.Key, "orgs", "list", "--json").stdout), &orgs); err != nil || len(orgs) != 2 || orgs[0].Available != 3.5 {
		t.Errorf("orgs list --json: %+v %v", orgs, err)
	}
	if out := s.mustCLI(t, s.Key, "orgs", "list", "--limit", "1").stdout; strings.Count(out, "\n") != 2 {
		t.Errorf("orgs list --limit 1:\n%s", out)
	}

	hist := s.mustCLI(t, s.Key, "credits", "history", "acme").stdout
	lines = strings.Split(strings.TrimSpace(hist), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "WHEN ") || strings.Fields(lines[1])[1] != "-1.5" || strings.Fields(lines[2])[1] != "5" ||
		!strings.Contains(lines[1], "bootstrap (key-") {
		t.Errorf("credits history, newest first, by the bootstrap key:\n%s", hist)
	}
	var grants []client.CreditGrant
	if err := json.Unmarshal([]byte(s.mustCLI(t, s.Key, "credits", "history", "acme", "--json", "--limit", "1").stdout), &grants); err != nil ||
		len(grants) != 1 || grants[0].Amount != -1.5 {
		t.Errorf("credits history --json --limit 1: %+v %v", grants, err)
	}

	// acme's admin manages acme's keys, but the operator's commands are refused.
	r := s.mustCLI(t, s.Key, "keys", "create", "--org", "acme", "--name", "acme admin", "--scopes", "admin")
	admin := regexp.MustCompile(`(?m)^    (agd_\S+)$`).FindStringSubmatch(r.stdout)[1]
	if out := s.mustCLI(t, admin, "keys", "list").stdout; !strings.Contains(out, "acme admin") || strings.Contains(out, "bootstrap") {
		t.Errorf("acme's admin lists:\n%s", out)
	}
	for _, args := range [][]string{{"orgs", "list"}, {"orgs", "create", "other"}, {"credits", "grant", "acme", "1"}, {"credits", "history", "acme"}} {
		wantCLIError(t, s.cli(admin, args...), strings.Join(args[:2], " ")+": ", "operator scope")
	}
}

// TestCLIAgents: agents from flags and from JSON and YAML files, listed, shown,
// updated and deleted.
func TestCLIAgents(t *testing.T) {
	s := startServer(t, "", nil)
	dir := t.TempDir()
	write := func(name, content string) string {
		f := filepath.Join(dir, name)
		if err := os.WriteFile(f, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}

	out := s.mustCLI(t, s.Key, "agents", "create", "--name", "Support Bot", "--description", "Answers support questions",
		"--model", "offline", "--instructions", "Be concise.", "--max-tokens", "200",
		"--demo", "How do I reset my password? => Use Settings, then Reset password.",
		"--demo", "What are your opening hours? => 8:00 to 20:00 every day.").stdout
	for _, want := range []string{"name:            support_bot", "model:           offline", "max tokens:      200", "demonstrations:   2", "=> 8:00 to 20:00 every day."} {
		if !strings.Contains(out, want) {
			t.Errorf("agents create lacks %q:\n%s", want, out)
		}
	}

	yamlFile := write("faq.yaml", `agent_name: FAQ
agent_description: From a YAML file
model: offline
instructions: |
  Answer from the FAQ.
max_tokens: 300
conversation_saving_enabled: false
demonstrations:
  - {user_input: ping, model_output: pong}
`)
	// A flag wins over the file.
	var faq client.Agent
	if err := json.Unmarshal([]byte(s.mustCLI(t, s.Key, "agents", "create", "--file", yamlFile, "--temperature", "0.2", "--json").stdout), &faq); err != nil {
		t.Fatal(err)
	}
	if faq.Name != "faq" || faq.MaxToken != 300 || faq.Temperature != 0.2 || faq.ConversationSavingEnabled || len(faq.Demonstrations) != 1 || faq.Demonstrations[0].Output != "pong" {
		t.Errorf("agents create --file faq.yaml: %+v", faq)
	}
	jsonFile := write("update.json", `{"agent_description": "From a JSON file", "status": "inactive"}`)
	if out := s.mustCLI(t, s.Key, "agents", "update", "faq", "--file", jsonFile).stdout; !strings.Contains(out, "From a JSON file") || !strings.Contains(out, "INACTIVE") {
		t.Errorf("agents update --file update.json:\n%s", out)
	}
	stdinFile := agentdCLI(map[string]string{"AGENTD_URL": s.URL, "AGENTD_KEY": s.Key}, "agent_name: piped\nagent_description: d\nmodel: offline\n", "agents", "create", "--file", "-")
	if stdinFile.err != nil || !strings.Contains(stdinFile.stdout, "piped") {
		t.Errorf("agents create --file -: %v\n%s", stdinFile.err, stdinFile.stdout)
	}

	list := s.mustCLI(t, s.Key, "agents", "list").stdout
	if !strings.Contains(list, "support_bot ") || strings.Contains(list, "faq ") {
		t.Errorf("agents list (active only):\n%s", list)
	}
	if list := s.mustCLI(t, s.Key, "agents", "list", "--all").stdout; !strings.Contains(list, "faq ") || !strings.Contains(list, "INACTIVE") {
		t.Errorf("agents list --all:\n%s", list)
	}
	var all []client.Agent
	if err := json.Unmarshal([]byte(s.mustCLI(t, s.Key, "agents", "list", "--all", "--json").stdout), &all); err != nil || len(all) != 3 {
		t.Errorf("agents list --all --json: %d agents, %v", len(all), err)
	}
	if out := s.mustCLI(t, s.Key, "agents", "get", "support_bot").stdout; !strings.Contains(out, "Be concise.") {
		t.Errorf("agents get:\n%s", out)
	}
	if out := s.mustCLI(t, s.Key, "agents", "update", "support_bot", "--temperature", "1.5").stdout; !strings.Contains(out, "temperature:     1.5") || !strings.Contains(out, "version:         2") {
		t.Errorf("agents update --temperature:\n%s", out)
	}

	// Bad files name the file and the field; the API's refusals come in its words.
	for _, tt := range []struct{ name, content, want string }{
		{"unknown.yaml", "agent_name: x\nmodle: offline\n", `unknown.yaml: unknown field "modle"`},
		{"type.json", `{"agent_name": "x", "temperature": "hot"}`, "type.json: temperature: a string is not a number"},
		{"list.yaml", "- agent_name: x\n", "list.yaml: an agent file is a mapping"},
		{"broken.json", `{"agent_name": `, "broken.json is neither JSON nor YAML"},
		{"demo.yaml", "demonstrations:\n  - {input: only}\n", "demo.yaml: demonstrations[0]: a demonstration needs input and output"},
	} {
		wantCLIError(t, s.cli(s.Key, "agents", "create", "--file", write(tt.name, tt.content)), "agents create: ", tt.want)
	}
	wantCLIError(t, s.cli(s.Key, "agents", "create", "--file", filepath.Join(dir, "missing.yaml")), "missing.yaml")
	wantCLIError(t, s.cli(s.Key, "agents", "create", "--name", "x"), "agents create: ", "Field required")
	wantCLIError(t, s.cli(s.Key, "agents", "create", "--name", "y", "--description", "d", "--model", "nope"), "nope")
	wantCLIError(t, s.cli(s.Key, "agents", "create", "--demo", "no arrow"), "INPUT => OUTPUT")
	wantCLIError(t, s.cli(s.Key, "agents", "update", "support_bot"), "nothing to change")

	if out := s.mustCLI(t, s.Key, "agents", "delete", "support_bot").stdout; !strings.Contains(out, "deleted agent support_bot") {
		t.Errorf("agents delete: %s", out)
	}
	wantCLIError(t, s.cli(s.Key, "agents", "get", "support_bot"), `agents get: agent "support_bot" not found`)
}

// TestCLIRun: agentd run streams the reply as it arrives, prints the usage to
// stderr, continues sessions, and answers whole with --no-stream or --json.
func TestCLIRun(t *testing.T) {
	u := newSlowStream(t, []string{"one ", "two ", "three"}, 0).gated(t, 1)
	s := startServer(t, streamConfig(u, ""), nil)
	newStreamAgents(t, s)
	env := map[string]string{"AGENTD_URL": s.URL, "AGENTD_KEY": s.Key}
	if r := agentdCLI(env, "", "credits", "grant", "default", "10"); r.err != nil {
		t.Fatal(r.err)
	}

	t.Run("streams as the reply arrives", func(t *testing.T) {
		// The upstream holds the rest of the reply until the first piece has
		// reached agentd run's stdout: a run that waited for the whole reply
		// would never get it.
		seen := make(chan struct{})
		stdout := &firstWrite{seen: seen}
		var stderr bytes.Buffer
		done := make(chan error, 1)
		go func() {
			done <- run(context.Background(), []string{"run", "slow", "ping"}, func(k string) string { return env[k] }, strings.NewReader(""), stdout, &stderr)
		}()
		await(t, seen, "the first piece of the reply on stdout")
		u.open()
		if err := <-done; err != nil {
			t.Fatalf("agentd run: %v\n%s", err, stderr.String())
		}
		if got := stdout.String(); got != "one two three\n" || stdout.first != "one " {
			t.Errorf("stdout %q (first write %q)", got, stdout.first)
		}
		if !regexp.MustCompile(`^slow: 12 input \+ 3 output = 15 tokens \(provider\), run run-\S+\n$`).MatchString(stderr.String()) {
			t.Errorf("stderr %q", stderr.String())
		}
	})
	t.Run("a session continues", func(t *testing.T) {
		for i, want := range []string{"0 earlier turns", "1 earlier turns"} {
			r := agentdCLI(env, "", "run", "offline", "ping", "--session", "chat-1")
			if r.err != nil || r.stdout != "pong and a few more words to stream\n" || !strings.Contains(r.stderr, "session chat-1 ("+want+")") {
				t.Errorf("turn %d: %v, stdout %q, stderr %q", i, r.err, r.stdout, r.stderr)
			}
		}
	})
	t.Run("--no-stream and --json", func(t *testing.T) {
		r := agentdCLI(env, "", "run", "--no-stream", "offline", "ping")
		if r.err != nil || r.stdout != "pong and a few more words to stream\n" || !strings.HasPrefix(r.stderr, "offline: ") {
			t.Errorf("--no-stream: %v, %q, %q", r.err, r.stdout, r.stderr)
		}
		r = agentdCLI(env, "", "run", "offline", "ping", "--json")
		var res client.RunResult
		if r.err != nil || json.Unmarshal([]byte(r.stdout), &res) != nil || res.Response != "pong and a few more words to stream" || res.RunID == "" {
			t.Errorf("--json: %v, %q", r.err, r.stdout)
		}
	})
	t.Run("the message from stdin", func(t *testing.T) {
		r := agentdCLI(env, "ping", "run", "offline", "-")
		if r.err != nil || r.stdout != "pong and a few more words to stream\n" {
			t.Errorf("run offline -: %v, %q", r.err, r.stdout)
		}
	})
	t.Run("errors", func(t *testing.T) {
		wantCLIError(t, agentdCLI(env, "", "run", "Slow", "ping"), `run: agent "Slow" not found`, `did you mean "slow"`)
		wantCLIError(t, agentdCLI(env, "", "run", "offline"), `missing "message"`)
		wantCLIError(t, agentdCLI(env, "", "run", "offline", "ping", "--session", "bad id!"), "X-Session-ID must be 1 to 128 characters")
		wantCLIError(t, agentdCLI(env, "", "run", "offline", "two", "words"), `unexpected argument "words"`)
	})
}

// firstWrite is a stdout that closes seen at its first write, and keeps it.
type firstWrite struct {
	buf    bytes.Buffer
	first  string
	seen   chan struct{}
	closed bool
}

func (w *firstWrite) Write(p []byte) (int, error) {
	if !w.closed {
		w.first, w.closed = string(p), true
		close(w.seen)
	}
	return w.buf.Write(p)
}

func (w *firstWrite) String() string { return w.buf.String() }

// TestCLIErrors: what a person sees when the server is not there, the key is
// missing or wrong, or the URL is not one.
func TestCLIErrors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gone := "http://" + ln.Addr().String()
	ln.Close() // nothing listens there now
	for _, args := range [][]string{{"keys", "list"}, {"orgs", "list"}, {"agents", "list"}, {"run", "a", "hi"}, {"run", "a", "hi", "--no-stream"}, {"usage"}, {"credits", "history", "x"}} {
		r := agentdCLI(map[string]string{"AGENTD_URL": gone, "AGENTD_KEY": "agd_whatever"}, "", args...)
		wantCLIError(t, r, "cannot reach agentd at "+gone+": is it running? (set --url or AGENTD_URL")
	}
	wantCLIError(t, agentdCLI(nil, "", "keys", "list", "--url", gone), "keys list: no API key: set --key or AGENTD_KEY", "admin scope")
	wantCLIError(t, agentdCLI(nil, "", "agents", "list", "--url", "localhost:8080", "--key", "k"), `"localhost:8080" is not a URL like http://localhost:8080`)

	s := startServer(t, "", nil)
	r := agentdCLI(map[string]string{"AGENTD_KEY": "agd_not_a_key_at_all_0123456789"}, "", "agents", "list", "--url", s.URL)
	wantCLIError(t, r, "agents list: the server refused the key", "set --key or AGENTD_KEY")
	if r := s.cli(s.Key, "agents", "get", "nobody"); !strings.HasPrefix(r.main(), `agentd: agents get: agent "nobody" not found`) {
		t.Errorf("an API error: %q", r.main())
	}
	// A client.Error does not carry agentd's prefix: the CLI adds it once.
	if _, err := s.client(s.Key).Agent(context.Background(), "nobody"); err == nil || strings.HasPrefix(err.Error(), "agentd") {
		t.Errorf("client error %q", err)
	}
	var ce *client.Error
	if _, err := s.client(s.Key).Agent(context.Background(), "nobody"); !errors.As(err, &ce) || ce.Error() != `404 not_found: agent "nobody" not found` {
		t.Errorf("client error %q", err)
	}
}

// TestCLIConfigCheck: agentd config check accepts every example configuration
// and names the file, the entry and the problem of broken ones; it opens no
// database.
func TestCLIConfigCheck(t *testing.T) {
	files, _ := filepath.Glob("../../examples/*.yaml")
	more, _ := filepath.Glob("../../examples/providers/*.yaml")
	files = append(files, more...)
	if len(files) < 6 {
		t.Fatalf("found %d example configurations", len(files))
	}
	keys := map[string]string{"OPENAI_API_KEY": "sk-x", "ANTHROPIC_API_KEY": "sk-ant-x", "VLLM_API_KEY": "x"}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			r := agentdCLI(keys, "", "config", "check", f)
			if r.err != nil || !regexp.MustCompile(`^config \S+ is valid: \d+ providers? \(offline built in\), \d+ models, addr \S+, db \S+\n$`).MatchString(r.stdout) {
				t.Errorf("config check %s: %v\n%s", f, r.err, r.stdout)
			}
		})
	}

	dir := t.TempDir()
	dbFile := filepath.Join(dir, "never.db")
	tests := []struct {
		name, yaml string
		want       []string // besides the file's path
	}{
		{"bad YAML", "models:\n  - id: a\n   bad: [\n", []string{"line 1: not valid YAML"}},
		{"unknown field", "providers:\n  - name: up\n    kind: openai\n    base_ur1: http://x\n",
			[]string{"line 4", `providers[0] "up"`, `unknown field "base_ur1"`, "base_url"}},
		{"unknown top-level field", "adress: 127.0.0.1:1\n", []string{"line 1", `unknown field "adress"`, "addr"}},
		{"bad value", "models:\n  - id: big\n    provider: offline\n    context_window: lots\n",
			[]string{"line 4", `models[0] "big": context_window: "lots" is not an integer`}},
		{"bad duration", "limits:\n  run_timeout: soon\n", []string{"line 2", `limits.run_timeout: "soon" is not a duration`}},
		{"invalid setting", "models:\n  - {id: m, provider: nowhere}\n", []string{`models[0] "m": unknown provider "nowhere"`}},
		{"missing key variable", "providers:\n  - {name: openai, kind: openai, api_key_env: NOT_SET_ANYWHERE}\n",
			[]string{`providers[0] "openai": environment variable NOT_SET_ANYWHERE (api_key_env) is not set`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "_")+".yaml")
			if err := os.WriteFile(f, []byte(tt.yaml+"db: sqlite:"+dbFile+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			wantCLIError(t, agentdCLI(nil, "", "config", "check", f), append([]string{"config " + f + ": "}, tt.want...)...)
		})
	}
	wantCLIError(t, agentdCLI(nil, "", "config", "check", filepath.Join(dir, "absent.yaml")), "absent.yaml")
	wantCLIError(t, agentdCLI(nil, "", "config", "check"), "missing FILE")
	if r := agentdCLI(nil, "", "config", "check", writeCheckedConfig(t, dir, "db: sqlite:"+dbFile+"\n")); r.err != nil {
		t.Fatal(r.err)
	}
	if _, err := os.Stat(dbFile); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("config check touched the database %s: %v", dbFile, err)
	}
}

func writeCheckedConfig(t *testing.T, dir, content string) string {
	t.Helper()
	f := filepath.Join(dir, "ok.yaml")
	if err := os.WriteFile(f, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// TestCLIVersion: the -ldflags stamp wins over the module's version; the VCS
// revision and state are shown when the build has them.
func TestCLIVersion(t *testing.T) {
	bi := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: "github.com/agentd/agentd", Version: "v1.2.3"},
		Settings: []debug.BuildSetting{{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: "0123456789abcdef"}, {Key: "vcs.time", Value: "2026-01-02T03:04:05Z"}, {Key: "vcs.modified", Value: "true"}}}
	tests := []struct {
		name  string
		stamp string
		bi    *debug.BuildInfo
		want  string
	}{
		{"module version and revision", "", bi, "agentd v1.2.3 (revision 0123456789abcdef, 2026-01-02T03:04:05Z, modified) go1.26.8"},
		{"the stamp wins", "v9.9.9", bi, "agentd v9.9.9 (revision 0123456789abcdef, 2026-01-02T03:04:05Z, modified) go1.26.8"},
		{"no VCS information", "", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}}, "agentd (devel) go1.26.8"},
		{"no build information", "", nil, "agentd (devel)"},
		{"a clean tree", "", &debug.BuildInfo{Main: debug.Module{Version: "v1.0.0"}, Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "abc"}, {Key: "vcs.modified", Value: "false"}}}, "agentd v1.0.0 (revision abc)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := versionString(tt.stamp, tt.bi); got != tt.want {
				t.Errorf("versionString = %q, want %q", got, tt.want)
			}
		})
	}
	a, b := agentdCLI(nil, "", "version"), agentdCLI(nil, "", "--version")
	if a.err != nil || a.stdout != b.stdout || !strings.HasPrefix(a.stdout, "agentd ") {
		t.Errorf("version %q %v, --version %q", a.stdout, a.err, b.stdout)
	}
}

// TestCLICompletion: the scripts know every command and flag; bash's completes
// commands, subcommands, flags and file arguments.
func TestCLICompletion(t *testing.T) {
	scripts := map[string]string{}
	for _, sh := range []string{"bash", "zsh"} {
		r := agentdCLI(nil, "", "completion", sh)
		if r.err != nil {
			t.Fatal(r.err)
		}
		scripts[sh] = r.stdout
		for _, path := range leafCommands() {
			if !strings.Contains(r.stdout, "'"+strings.Join(path, " ")+"'") {
				t.Errorf("the %s script lacks %q", sh, strings.Join(path, " "))
			}
		}
		for _, flag := range []string{"--budget-period", "--no-stream", "--file", "--url", "--key", "--json", "--group-by", "--addr"} {
			if !strings.Contains(r.stdout, flag) {
				t.Errorf("the %s script lacks %s", sh, flag)
			}
		}
	}
	if !strings.HasPrefix(scripts["zsh"], "#compdef agentd\n") {
		t.Errorf("the zsh script does not start with #compdef")
	}
	wantCLIError(t, agentdCLI(nil, "", "completion", "fish"), `unknown shell "fish"; want bash or zsh`)

	dir := t.TempDir()
	script := filepath.Join(dir, "agentd.bash")
	if err := os.WriteFile(script, []byte(scripts["bash"]), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "agent.yaml"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if zsh, err := exec.LookPath("zsh"); err == nil {
		zf := filepath.Join(dir, "_agentd")
		if err := os.WriteFile(zf, []byte(scripts["zsh"]), 0o600); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(zsh, "-n", zf).CombinedOutput(); err != nil {
			t.Errorf("zsh -n: %v\n%s", err, out)
		}
	} else {
		t.Log("no zsh here: its script is checked as text only")
	}
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash here: the bash script is checked as text only")
	}
	complete := func(words ...string) []string {
		t.Helper()
		cmd := `source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 )); _agentd; printf '%s\n' "${COMPREPLY[@]}"`
		out, err := exec.Command(bash, append([]string{"-c", cmd, "bash", script}, words...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("bash completion of %q: %v\n%s", words, err, out)
		}
		return strings.Fields(string(out))
	}
	tests := []struct {
		words []string
		want  []string
	}{
		{[]string{"agentd", "ke"}, []string{"keys"}},
		{[]string{"agentd", "keys", ""}, []string{"create", "list", "revoke", "update", "--help"}},
		{[]string{"agentd", "keys", "create", "--budget-p"}, []string{"--budget-period"}},
		{[]string{"agentd", "--url", "http://x", "credits", "h"}, []string{"history"}},
		{[]string{"agentd", "agents", "create", "--file", filepath.Join(dir, "agent.")}, []string{filepath.Join(dir, "agent.yaml")}},
		{[]string{"agentd", "config", "check", filepath.Join(dir, "agent.")}, []string{filepath.Join(dir, "agent.yaml")}},
		{[]string{"agentd", "completion", ""}, []string{"bash", "zsh", "--help"}},
		{[]string{"agentd", "usage", "--group-by", "m"}, []string{"model"}},
		{[]string{"agentd", "keys", "create", "--name", ""}, nil},
	}
	for _, tt := range tests {
		if got := complete(tt.words...); !slices.Equal(got, tt.want) {
			t.Errorf("completion of %q = %q, want %q", tt.words, got, tt.want)
		}
	}
}
