package bench

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/agentd/agentd/client"
)

// bootstrapKey is agentd's operator key in the runs the tool starts.
const bootstrapKey = "agd_bench_operator_key_0123456789"

// agentd builds (unless given) and starts agentd on a new SQLite database, with
// the bench models on the built-in upstreams, and creates the bench agent. It
// does so once; a failure is remembered.
func (e *env) agentd() (*child, error) {
	if e.ad != nil || e.adErr != nil {
		return e.ad, e.adErr
	}
	e.ad, e.adErr = e.startAgentd()
	return e.ad, e.adErr
}

func (e *env) startAgentd() (*child, error) {
	bin := e.o.Agentd
	if bin == "" {
		root := e.o.ModuleRoot
		if root == "" {
			var err error
			if root, err = moduleRoot(); err != nil {
				return nil, err
			}
		}
		bin = filepath.Join(e.dir, "agentd")
		fmt.Fprintf(e.o.Progress, "building agentd from %s\n", root)
		cmd := exec.CommandContext(e.ctx, "go", "build", "-o", bin, "./cmd/agentd")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("go build ./cmd/agentd: %v\n%s", err, out)
		}
	}
	cfg := filepath.Join(e.dir, "agentd.yaml")
	if err := os.WriteFile(cfg, []byte(agentdConfig(e.fast.URL, e.slow.URL, e.o.ContextWindow)), 0o600); err != nil {
		return nil, err
	}
	c, err := startChild(e.ctx, "agentd",
		[]string{bin, "serve", "--addr", "127.0.0.1:0", "--db", "sqlite:" + filepath.Join(e.dir, "agentd.db"), "--config", cfg},
		[]string{"AGENTD_BOOTSTRAP_KEY=" + bootstrapKey}, filepath.Join(e.dir, "agentd.log"))
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(e.o.Progress, "agentd (pid %d) listening on %s\n", c.Pid(), c.URL)
	e.key = bootstrapKey
	api := client.New(c.URL, e.key)
	api.HTTP = e.client
	if _, err := api.CreateAgent(e.ctx, client.AgentSpec{
		Name: client.Ptr(benchAgent), Description: client.Ptr("agentd-bench"), Model: client.Ptr(benchModel), MaxToken: client.Ptr(64),
		Instructions:   client.Ptr("Answer briefly."),
		Demonstrations: []client.Demonstration{{Input: "ping", Output: "pong"}, {Input: "status?", Output: "all systems nominal"}},
	}); err != nil {
		c.stop(10 * time.Second)
		return nil, fmt.Errorf("create the bench agent: %w", err)
	}
	// The bench models are free, so no run needs credits; a grant keeps it so
	// if a price is ever added to them.
	if _, err := api.GrantCredits(e.ctx, "default", 1_000_000); err != nil {
		c.stop(10 * time.Second)
		return nil, fmt.Errorf("grant credits: %w", err)
	}
	return c, nil
}

// agentdConfig is the configuration of the agentd under test: two providers on
// the built-in upstreams, no retries (an upstream error must show as one), free
// models, durable commits.
func agentdConfig(fast, slow string, window int) string {
	return fmt.Sprintf(`# written by agentd-bench
sqlite:
  synchronous: FULL
providers:
  - {name: bench, kind: openai, base_url: %s/v1, max_retries: 0}
  - {name: bench-slow, kind: openai, base_url: %s/v1, max_retries: 0}
models:
  - {id: %s, provider: bench, upstream_model: gpt-4o-mini, context_window: %d, max_output_tokens: 1024, price: {input: 0, output: 0}}
  - {id: %s, provider: bench-slow, upstream_model: gpt-4o-mini, context_window: %d, max_output_tokens: 1024, price: {input: 0, output: 0}}
`, fast, slow, benchModel, window, benchSlowModel, window)
}

// moduleRoot is the directory of the main module of the working directory.
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %v (pass --agentd PATH)", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside the agentd module: run from the repository, or pass --agentd PATH")
	}
	data, err := os.ReadFile(mod)
	if err != nil || !bytes.Contains(data, []byte("module github.com/agentd/agentd\n")) {
		return "", fmt.Errorf("%s is not agentd's go.mod: run from the repository, or pass --agentd PATH", mod)
	}
	return filepath.Dir(mod), nil
}

// logNotes adds agentd's warnings and errors (at most five of each message) to
// the notes.
func (e *env) logNotes(file string) {
	data, err := os.ReadFile(file)
	if err != nil {
		return
	}
	seen := map[string]int{}
	for line := range strings.Lines(string(data)) {
		if !strings.Contains(line, "level=WARN") && !strings.Contains(line, "level=ERROR") {
			continue
		}
		msg := line
		if _, m, ok := strings.Cut(line, " msg="); ok {
			if q, err := strconv.QuotedPrefix(m); err == nil {
				msg = q
			} else {
				msg, _, _ = strings.Cut(m, " ")
			}
		}
		seen[msg]++
		if seen[msg] <= 5 {
			e.note("agentd log: %s", strings.TrimSpace(line))
		}
	}
	for msg, n := range seen {
		if n > 5 {
			e.note("agentd log: %d lines like %q", n, msg)
		}
	}
}
