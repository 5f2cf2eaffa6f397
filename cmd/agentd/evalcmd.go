package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/client"
	"github.com/agentd/agentd/internal/evals"
)

// evalCmd runs an agent version's cases — its demonstrations (unless
// --no-demonstrations) and a cases file's — each as one run through the API (a
// chat completion of model agent/NAME pinned with X-Agent-Version, a case's
// session turns sent as the messages before its input), then prints a summary.
// It fails (exit 1) when any case fails.
func evalCmd(ctx context.Context, c *cli, args []string) error {
	fs := newFlags("eval")
	version := fs.Int("version", 0, "evaluate version `N` (default: the active one)")
	file := fs.String("f", "", "a YAML `FILE` of cases to run after the demonstrations")
	noDemos := fs.Bool("no-demonstrations", false, "run only the file's cases, not the demonstrations")
	f := addClientFlags(fs, "run and agents:read", true)
	cl, err := connect(ctx, c, fs, f, args, "AGENT")
	if err != nil {
		return err
	}
	name := fs.Arg(0)
	var cases []evals.Case
	if *file != "" {
		data, err := os.ReadFile(*file)
		if err != nil {
			return fmt.Errorf("eval: %w", err)
		}
		if cases, err = evals.Parse(*file, data); err != nil {
			return fmt.Errorf("eval: %w", err)
		}
	}
	n, demos, err := versionDemos(ctx, cl, name, *version)
	if err != nil {
		return f.explain(err)
	}
	if !*noDemos {
		cases = append(evals.FromDemonstrations(demos), cases...)
	}
	if len(cases) == 0 {
		return fmt.Errorf("eval: version %d of %s has no demonstrations and no cases were given (-f FILE)", n, name)
	}
	runOne := func(ctx context.Context, cs *evals.Case) (*evals.Observation, error) {
		msgs := make([]client.ChatMessage, 0, 2*len(cs.Session)+1)
		for _, t := range cs.Session {
			msgs = append(msgs, client.ChatMessage{Role: "user", Content: t.User}, client.ChatMessage{Role: "assistant", Content: t.Assistant})
		}
		msgs = append(msgs, client.ChatMessage{Role: "user", Content: cs.Input})
		start := time.Now()
		res, err := cl.ChatAgent(ctx, name, n, msgs)
		if err != nil {
			var ce *client.Error
			if errors.As(err, &ce) && (ce.Status == 401 || ce.Status == 403) {
				return nil, &fatal{f.explain(err)}
			}
			return nil, errors.New(f.apiErrorOf(err))
		}
		cost, _ := agentd.CreditsToMicros(res.Cost)
		return &evals.Observation{RunID: res.RunID, Reply: res.Reply, OutputTokens: res.OutputTokens, Cost: cost,
			LatencyMS: time.Since(start).Milliseconds()}, nil
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	bar := newProgress(c.stdout, len(cases), f.json)
	rep, err := evals.Run(ctx, cases, func(ctx context.Context, cs *evals.Case) (*evals.Observation, error) {
		o, err := runOne(ctx, cs)
		var fe *fatal
		if errors.As(err, &fe) {
			cancel(fe.err)
		}
		return o, err
	}, time.Now, bar.step)
	bar.done()
	if err != nil {
		if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, err) {
			return cause
		}
		return fmt.Errorf("eval: %w", err)
	}
	rep.Agent, rep.Version = name, n
	if f.json {
		enc := json.NewEncoder(c.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else if err := printReport(c.stdout, rep); err != nil {
		return err
	}
	if rep.Failed > 0 {
		return fmt.Errorf("eval: %d of %d cases failed", rep.Failed, len(rep.Cases))
	}
	return nil
}

// fatal is a case's error that ends the whole eval (a refused key).
type fatal struct{ err error }

func (e *fatal) Error() string { return e.err.Error() }

// apiErrorOf words a run's error for the case's line.
func (f *clientFlags) apiErrorOf(err error) string {
	var ce *client.Error
	if errors.As(err, &ce) {
		return f.apiError(ce)
	}
	return f.explain(err).Error()
}

// versionDemos is the version's number (the active one for 0) and demonstrations.
func versionDemos(ctx context.Context, cl *client.Client, name string, n int) (int, []agentd.Demonstration, error) {
	var demos []client.Demonstration
	if n == 0 {
		a, err := cl.Agent(ctx, name)
		if err != nil {
			return 0, nil, err
		}
		n, demos = a.Version, a.Demonstrations
	} else {
		var out struct {
			Data struct {
				Demonstrations []client.Demonstration `json:"demonstrations"`
			} `json:"data"`
		}
		if err := cl.Do(ctx, "GET", "/api/v3/agents/"+url.PathEscape(name)+"/versions/"+strconv.Itoa(n), nil, nil, &out); err != nil {
			return 0, nil, err
		}
		demos = out.Data.Demonstrations
	}
	ds := make([]agentd.Demonstration, len(demos))
	for i, d := range demos {
		ds[i] = agentd.Demonstration{Input: d.Input, Output: d.Output}
	}
	return n, ds, nil
}

// printReport prints a case per line (with why it failed) and the totals.
func printReport(w io.Writer, rep *evals.Report) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CASE\tRESULT\tTOKENS\tCOST\tLATENCY\tSOURCE")
	for _, r := range rep.Cases {
		res := "pass"
		if !r.Passed {
			res = "FAIL"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%d ms\t%s\n", r.Name, res, r.OutputTokens, r.Cost, r.LatencyMS, r.Source)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, r := range rep.Cases {
		if r.Error != "" {
			fmt.Fprintf(w, "%s: the run failed: %s\n", r.Name, r.Error)
		}
		for _, why := range r.Failures {
			fmt.Fprintf(w, "%s: %s\n", r.Name, why)
		}
	}
	_, err := fmt.Fprintf(w, "%s version %d: %d passed, %d failed, %s credits\n", rep.Agent, rep.Version, rep.Passed, rep.Failed, rep.Cost)
	return err
}

// progress shows how far an eval is: a bar redrawn in place on a terminal, a
// line per case otherwise, nothing with --json.
type progress struct {
	w     io.Writer
	total int
	tty   bool
	quiet bool
}

func newProgress(w io.Writer, total int, quiet bool) *progress {
	return &progress{w: w, total: total, tty: isTerminal(w), quiet: quiet}
}

func (p *progress) step(done int, r *evals.CaseResult) {
	if p.quiet {
		return
	}
	mark := "pass"
	if !r.Passed {
		mark = "FAIL"
	}
	if !p.tty {
		fmt.Fprintf(p.w, "[%d/%d] %s %s\n", done, p.total, mark, r.Name)
		return
	}
	const width = 30
	fill := width * done / p.total
	fmt.Fprintf(p.w, "\r[%s%s] %d/%d %s", strings.Repeat("#", fill), strings.Repeat(".", width-fill), done, p.total, truncate(r.Name, 40))
}

func (p *progress) done() {
	if p.tty && !p.quiet {
		fmt.Fprint(p.w, "\r\033[K")
	}
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
