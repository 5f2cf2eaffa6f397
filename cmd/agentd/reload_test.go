package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/agentd/agentd/client"
)

// TestReload: a reload (SIGHUP; here its test hook) replaces the catalog's
// models and providers at once — a run in flight finishes on the model it
// started with, the next run uses the new one, a new model is listed — and a
// configuration that does not load is refused with the running one kept.
func TestReload(t *testing.T) {
	u := newUpstream(t, nil)
	u.echoGate = make(chan struct{})
	config := func(upstreamModel, extra string) string {
		return fmt.Sprintf(`
providers:
  - {name: compat, kind: openai, base_url: %s/v1, api_key_env: UPSTREAM_KEY}
models:
  - {id: gpt-test, provider: compat, upstream_model: %s, context_window: 8192, max_output_tokens: 512, price: {input: 1, output: 1}}
%s`, u.URL, upstreamModel, extra)
	}
	reloads := make(chan struct{})
	outcomes := make(chan error, 1)
	hooks := &serveHooks{reload: reloads, reloaded: func(err error) { outcomes <- err }}
	dir := t.TempDir()
	s := startServerIn(t, dir, config("echo-slow", ""), providerEnv, hooks, nil)
	ctx := context.Background()
	op := s.client(s.Key)
	if _, err := op.GrantCredits(ctx, "default", 10); err != nil {
		t.Fatal(err)
	}
	if _, err := op.CreateAgent(ctx, client.AgentSpec{Name: client.Ptr("bot"), Description: client.Ptr("t"), Model: client.Ptr("gpt-test"), MaxToken: client.Ptr(64)}); err != nil {
		t.Fatal(err)
	}
	reload := func(cfg string) error {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, "agentd.yaml"), []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		reloads <- struct{}{}
		return <-outcomes
	}

	// A run in flight on the old model: its upstream holds it until the gate opens.
	inflight := make(chan error, 1)
	var inflightReply string
	go func() {
		res, err := op.Run(ctx, "bot", "before", "")
		if res != nil {
			inflightReply = res.Response
		}
		inflight <- err
	}()
	u.arrived.wait(t, "echo-slow", 1)

	if err := reload(config("gpt-new", "  - {id: gpt-more, provider: compat, upstream_model: gpt-more, context_window: 8192, max_output_tokens: 512}\n")); err != nil {
		t.Fatalf("reload: %v", err)
	}
	res, err := op.Run(ctx, "bot", "after", "")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(res.Response, "gpt-new") || u.count("gpt-new") != 1 {
		t.Errorf("the run after the reload answered %q (gpt-new called %d times), want the new upstream model", res.Response, u.count("gpt-new"))
	}
	close(u.echoGate)
	if err := <-inflight; err != nil || inflightReply != "echo: before" {
		t.Errorf("the run in flight during the reload: %q, %v; want it finished on the model it started with", inflightReply, err)
	}
	oc := newOpenAI(s, s.Key)
	if _, err := oc.Models.Get(ctx, "gpt-more"); err != nil {
		t.Errorf("the model the reload added is not served: %v", err)
	}

	// A broken file is refused; the running configuration stays.
	if err := reload(config("gpt-broken", "bogus_setting: 1\n")); err == nil || !strings.Contains(err.Error(), "bogus_setting") {
		t.Errorf("a broken reload: %v, want it refused naming the problem", err)
	}
	if res, err := op.Run(ctx, "bot", "still", ""); err != nil || !strings.Contains(res.Response, "gpt-new") {
		t.Errorf("after a refused reload: %v, %v; want the running configuration", res, err)
	}
	if _, err := oc.Models.Get(ctx, "gpt-more"); err != nil {
		t.Errorf("after a refused reload gpt-more is gone: %v", err)
	}
}

// TestReloadOnSIGHUP: the real signal, sent to agentd running as a process,
// reloads its configuration; the log says so, and the new model is served.
func TestReloadOnSIGHUP(t *testing.T) {
	if testing.Short() {
		t.Skip("builds agentd")
	}
	bin := agentdBinary(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "agentd.yaml")
	if err := os.WriteFile(cfg, []byte("models: []\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "serve", "--addr", "127.0.0.1:0", "--db", "sqlite:"+filepath.Join(dir, "agentd.db"), "--config", cfg)
	cmd.Env = append(os.Environ(), "AGENTD_BOOTSTRAP_KEY="+testKey)
	stdout, _ := cmd.StdoutPipe()
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	url := ""
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if u, ok := strings.CutPrefix(sc.Text(), "agentd listening on "); ok {
			url = u
			break
		}
	}
	if url == "" {
		t.Fatal("agentd did not start")
	}
	go io.Copy(io.Discard, stdout)
	logs := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			logs <- sc.Text()
		}
		close(logs)
	}()
	more := "models:\n  - {id: more, provider: offline, upstream_model: offline, context_window: 8192, max_output_tokens: 256}\n"
	if err := os.WriteFile(cfg, []byte(more), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	for line := range logs {
		if strings.Contains(line, "configuration reloaded") {
			break
		}
	}
	oc := openai.NewClient(option.WithBaseURL(url+"/v1/"), option.WithAPIKey(testKey), option.WithMaxRetries(0))
	if _, err := oc.Models.Get(context.Background(), "more"); err != nil {
		t.Errorf("after SIGHUP the new model is not served: %v", err)
	}
}
