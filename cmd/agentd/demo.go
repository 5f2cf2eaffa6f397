package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/agentd/agentd/client"
	"github.com/agentd/agentd/internal/auth"
)

// demoConfig adds a priced model on the offline provider, to show a 402.
const demoConfig = `models:
  - id: offline-premium
    provider: offline
    price: {input: 2.5, output: 10}
`

// demo starts agentd on a temporary database and walks through what the README's
// quickstart does with curl: create an agent, run it, talk to it in a session, and
// hit a 402 and a 404. It exits when done.
func demo(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	if err := parseFlags(ctx, fs, args, stdout); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("demo takes no arguments")
	}
	dir, err := os.MkdirTemp("", "agentd-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	cfgFile := filepath.Join(dir, "agentd.yaml")
	if err := os.WriteFile(cfgFile, []byte(demoConfig), 0o600); err != nil {
		return err
	}
	key := auth.Mint()
	env := func(k string) string {
		switch k {
		case "AGENTD_BOOTSTRAP_KEY":
			return key
		case "AGENTD_ADDR", "AGENTD_DB", "AGENTD_CONFIG":
			return ""
		}
		return getenv(k)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ready := make(chan string, 1)
	errc := make(chan error, 1)
	go func() {
		errc <- serve(ctx, []string{"--addr", "127.0.0.1:0", "--db", "sqlite:" + filepath.Join(dir, "agentd.db"), "--config", cfgFile},
			env, io.Discard, io.Discard, &serveHooks{ready: ready})
	}()
	var addr string
	select {
	case addr = <-ready:
	case err := <-errc:
		return err
	}
	c := client.New("http://"+addr, key)
	say := func(format string, args ...any) { fmt.Fprintf(stdout, format+"\n", args...) }
	show := func(v any) {
		b, _ := json.MarshalIndent(v, "    ", "  ")
		fmt.Fprintf(stdout, "    %s\n\n", b)
	}

	say("agentd demo: a server on %s with a temporary SQLite database and the offline model.\n", addr)
	say("1. Create an agent (POST /api/v3/agents/create):")
	a, err := c.CreateAgent(ctx, client.AgentSpec{
		Name: client.Ptr("Support Bot"), Description: client.Ptr("Answers support questions"),
		Model: client.Ptr("offline"), Instructions: client.Ptr("Be concise."),
		Demonstrations: []client.Demonstration{
			{Input: "How do I reset my password?", Output: "Open Settings → Security → Reset password, then follow the e-mail link."},
			{Input: "What are your opening hours?", Output: "We answer every day from 8:00 to 20:00 CET."},
		},
	})
	if err != nil {
		return err
	}
	say("    → id %s, name %s, endpoint %s\n", a.ID, a.Name, a.Endpoint)

	say("2. Run it (POST /api/v3/agents/run-agents/%s/run) with a session:", a.Name)
	// The second question rewords the first demonstration (case, punctuation,
	// plural and -ing forms, stop words): the offline model undoes that much.
	say("   (the offline model matches rewording, not synonyms or paraphrase)")
	for _, msg := range []string{"how can I reset my password", "RESETTING passwords -- how?", "and when are you open?", "tell me a joke"} {
		res, err := c.Run(ctx, a.Name, msg, "demo-session-1")
		if err != nil {
			return err
		}
		say("    you:   %s", msg)
		say("    agent: %s", res.Response)
		say("           (usage: %d in + %d out = %d tokens, %s)", res.Usage.InputTokens, res.Usage.OutputTokens, res.Usage.TotalTokens, res.Usage.Source)
	}
	say("")

	say("3. An agent on a priced model, with no credits: 402")
	if _, err := c.CreateAgent(ctx, client.AgentSpec{Name: client.Ptr("premium bot"), Description: client.Ptr("priced"), Model: client.Ptr("offline-premium")}); err != nil {
		return err
	}
	_, err = c.Run(ctx, "premium_bot", "hello", "")
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Status != 402 {
		return fmt.Errorf("expected a 402, got %v", err)
	}
	show(ce.Body)

	say("4. Grant 1 credit (POST /api/v3/admin/orgs/default/credits) and run again:")
	if _, err := c.GrantCredits(ctx, "default", 1); err != nil {
		return err
	}
	res, err := c.Run(ctx, "premium_bot", "hello", "")
	if err != nil {
		return err
	}
	b, err := c.Billing(ctx)
	if err != nil {
		return err
	}
	say("    agent: %s", res.Response)
	say("    charged for %d tokens; balance now %v credits\n", res.Usage.TotalTokens, b.Balance)

	say("5. A name that does not exist: 404")
	_, err = c.Run(ctx, "Support Bot", "hi", "")
	if !errors.As(err, &ce) || ce.Status != 404 {
		return fmt.Errorf("expected a 404, got %v", err)
	}
	show(ce.Body)
	say("Done. `agentd serve` runs the same server on a persistent database; see the README.")
	cancel()
	return <-errc
}
