package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/agentd/agentd/client"
)

// runAgentCmd runs an agent once: the reply goes to stdout as it arrives (the
// streaming run endpoint), what it used to stderr when it is done.
func runAgentCmd(ctx context.Context, c *cli, args []string) error {
	fs := newFlags("run")
	session := fs.String("session", "", "continue the conversation `ID` (1–128 of A-Z a-z 0-9 . _ : -)")
	noStream := fs.Bool("no-stream", false, "wait for the whole reply instead of streaming it")
	f := addClientFlags(fs, "run", true)
	if err := parseFlags(ctx, fs, args, c.stdout); err != nil {
		return err
	}
	if err := wantArgs(fs, "AGENT", `"message"`); err != nil {
		return err
	}
	message := fs.Arg(1)
	if message == "-" {
		b, err := io.ReadAll(c.stdin)
		if err != nil {
			return fmt.Errorf("run: reading the message from stdin: %w", err)
		}
		message = string(b)
	}
	cl, err := f.client(c.getenv)
	if err != nil {
		return err
	}
	var res *client.RunResult
	var reply strings.Builder // what stdout got, to end it with a newline
	if *noStream || f.json {
		if res, err = cl.Run(ctx, fs.Arg(0), message, *session); err != nil {
			return f.explain(err)
		}
		if f.json {
			return f.printJSON(c.stdout, "")
		}
		reply.WriteString(res.Response)
		if _, err := io.WriteString(c.stdout, res.Response); err != nil {
			return err
		}
	} else {
		res, err = cl.RunStream(ctx, fs.Arg(0), message, *session, func(piece string) error {
			reply.WriteString(piece)
			_, err := io.WriteString(c.stdout, piece)
			return err
		})
		if err != nil {
			if reply.Len() > 0 {
				fmt.Fprintln(c.stdout)
			}
			return f.explain(err)
		}
	}
	if !strings.HasSuffix(reply.String(), "\n") {
		fmt.Fprintln(c.stdout)
	}
	u := res.Usage
	line := fmt.Sprintf("%s: %d input + %d output = %d tokens (%s), run %s", res.Model, u.InputTokens, u.OutputTokens, u.TotalTokens, u.Source, res.RunID)
	if res.SessionID != nil {
		line += fmt.Sprintf(", session %s (%d earlier turns", *res.SessionID, res.Context.HistoryTurns)
		if res.Context.TrimmedTurns > 0 {
			line += fmt.Sprintf(", %d left out to fit", res.Context.TrimmedTurns)
		}
		line += ")"
	}
	_, err = fmt.Fprintln(c.stderr, line)
	return err
}
