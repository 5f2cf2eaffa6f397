package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/agentd/agentd/internal/bench"
)

// runCmd runs the scenario matrix.
func runCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o bench.RunOptions
	var only string
	var asJSON bool
	fs.BoolVar(&o.Quick, "quick", false, "a short smoke run: fewer rows, 1 s cells")
	fs.DurationVar(&o.Duration, "duration", 0, "measured time of each cell (default 10s; --quick 1s)")
	fs.DurationVar(&o.Warmup, "warmup", 0, "warm-up before each cell (default 2s; --quick 300ms)")
	fs.StringVar(&o.Agentd, "agentd", "", "agentd binary to test (default: go build ./cmd/agentd of this repository)")
	fs.StringVar(&only, "only", "", "run only the rows whose \"id c=N title\" matches this regular expression")
	fs.BoolVar(&asJSON, "json", false, "print the report as JSON")
	fs.IntVar(&o.Tokens, "tokens", 16, "upstream reply length in pieces")
	fs.DurationVar(&o.SlowLatency, "slow", 50*time.Millisecond, "latency of the slow upstream")
	fs.IntVar(&o.GrowthTurns, "growth-turns", 0, "turns of the session-growth row (default 1000; --quick 100)")
	fs.IntVar(&o.ContextWindow, "context-window", 8192, "context window of the bench models, in tokens (bounds the history a run sends)")
	fs.BoolVar(&o.KeepTemp, "keep", false, "keep the temporary directory (agentd's database and logs)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("run: unexpected argument %q", fs.Arg(0))
	}
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "warmup" && o.Warmup == 0 {
			o.Warmup = -1 // asked for none, not for the default
		}
	})
	if only != "" {
		re, err := regexp.Compile(only)
		if err != nil {
			return fmt.Errorf("run: --only: %w", err)
		}
		o.Only = re
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("run: find this program to start the proxy: %w", err)
	}
	o.ProxyCommand = []string{self, "proxy"}
	o.Progress = stderr
	rep, err := bench.Run(ctx, o)
	if rep != nil && (err == nil || len(rep.Rows) > 0) {
		if asJSON {
			rep.WriteJSON(stdout)
		} else {
			rep.WriteMarkdown(stdout)
		}
	}
	return err
}

// upstreamCmd serves the built-in upstream until ctx is done.
func upstreamCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("upstream", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o bench.UpstreamOptions
	addr := fs.String("addr", "127.0.0.1:8000", "listen address")
	fs.StringVar(&o.Model, "model", "gpt-4o-mini", "model id of the replies and /v1/models")
	fs.DurationVar(&o.Latency, "latency", 0, "time before the first byte of a reply")
	fs.IntVar(&o.Tokens, "tokens", 16, "reply length in pieces (stream chunks)")
	fs.DurationVar(&o.StreamInterval, "stream-interval", 0, "pause between the pieces of a stream")
	fs.Float64Var(&o.ErrorRate, "error-rate", 0, "fraction of completions answered 500")
	fs.Float64Var(&o.ResetRate, "reset-rate", 0, "fraction of completions whose connection is reset with no reply")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("upstream: unexpected argument %q", fs.Arg(0))
	}
	if o.ErrorRate < 0 || o.ErrorRate > 1 || o.ResetRate < 0 || o.ResetRate > 1 {
		return errors.New("upstream: --error-rate and --reset-rate are fractions from 0 to 1")
	}
	return serve(ctx, "upstream", *addr, bench.NewUpstream(o), stdout, "/v1")
}

// proxyCmd serves the bare JSON proxy until ctx is done.
func proxyCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("proxy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:8001", "listen address")
	upstream := fs.String("upstream", "", "the upstream's base URL (e.g. http://127.0.0.1:8000; a trailing /v1 is ignored)")
	maxIdle := fs.Int("max-idle", 1024, "idle connections kept to the upstream (at least the concurrency)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("proxy: unexpected argument %q", fs.Arg(0))
	}
	if u, err := url.Parse(*upstream); err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return fmt.Errorf("proxy: --upstream %q: want a URL like http://127.0.0.1:8000", *upstream)
	}
	p := bench.NewProxy(strings.TrimSuffix(strings.TrimRight(*upstream, "/"), "/v1"), *maxIdle)
	defer p.Close()
	return serve(ctx, "proxy", *addr, p, stdout, "/v1")
}

// serve serves h on addr until ctx is done, after printing where it listens.
func serve(ctx context.Context, name, addr string, h http.Handler, stdout io.Writer, base string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second}
	fmt.Fprintf(stdout, "agentd-bench %s listening on http://%s (base URL http://%s%s)\n", name, ln.Addr(), ln.Addr(), base)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdown); err != nil {
		srv.Close()
	}
	return nil
}

// headers is a repeatable --header K:V flag.
type headers []string

func (h *headers) String() string     { return strings.Join(*h, ", ") }
func (h *headers) Set(v string) error { *h = append(*h, v); return nil }

// loadCmd runs one load test against any URL.
func loadCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	target := fs.String("url", "", "URL to send to; a bare http://HOST:PORT gets /v1/chat/completions")
	key := fs.String("key", "", "sent as Authorization: Bearer KEY")
	model := fs.String("model", "gpt-4o-mini", "model of the default chat body")
	c := fs.Int("concurrency", 64, "workers (closed loop), or the most requests in flight (open loop)")
	rate := fs.Float64("rate", 0, "open loop: requests per second on a fixed timetable (0: closed loop)")
	d := fs.Duration("duration", 10*time.Second, "measured time")
	warmup := fs.Duration("warmup", 2*time.Second, "warm-up before the measured time")
	stream := fs.Bool("stream", false, "ask for a stream and measure time to first content")
	body := fs.String("body", "", "request body, or @FILE (default: a chat completion request for --model)")
	pid := fs.Int("pid", 0, "report this process's CPU per request and peak RSS (the gateway under test)")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	var hs headers
	fs.Var(&hs, "header", "extra request header K:V (repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("load: unexpected argument %q", fs.Arg(0))
	}
	u, err := url.Parse(*target)
	if err != nil || u.Host == "" {
		return fmt.Errorf("load: --url %q: want a URL like http://127.0.0.1:8080/v1/chat/completions", *target)
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = "/v1/chat/completions"
	}
	t := bench.Target{URL: u.String(), Header: http.Header{"Content-Type": {"application/json"}}, Stream: *stream}
	if *key != "" {
		t.Header.Set("Authorization", "Bearer "+*key)
	}
	for _, h := range hs {
		k, v, ok := strings.Cut(h, ":")
		if !ok {
			return fmt.Errorf("load: --header %q: want K:V", h)
		}
		t.Header.Add(strings.TrimSpace(k), strings.TrimSpace(v))
	}
	switch {
	case strings.HasPrefix(*body, "@"):
		if t.Body, err = os.ReadFile((*body)[1:]); err != nil {
			return fmt.Errorf("load: --body: %w", err)
		}
	case *body != "":
		t.Body = []byte(*body)
	default:
		t.Body = bench.ChatBody(*model, *stream)
	}

	var before, after bench.ProcStat
	var perr error
	sample := func(to *bench.ProcStat) func() {
		return func() {
			if *pid > 0 {
				var err error
				if *to, err = bench.ReadProc(*pid); err != nil {
					perr = err
				}
			}
		}
	}
	if *pid > 0 {
		if _, err := bench.ReadProc(*pid); err != nil {
			return fmt.Errorf("load: --pid: %w", err)
		}
		bench.ResetPeakRSS(*pid)
	}
	client := bench.NewClient(*c, 60*time.Second)
	// Connections opened but never used would hold up the gateway's graceful
	// shutdown when the load is over.
	defer client.CloseIdleConnections()
	res, err := bench.Load(ctx, client, t, bench.LoadOptions{
		Concurrency: *c, Rate: *rate, Warmup: *warmup, Duration: *d, OnStart: sample(&before), OnEnd: sample(&after),
	})
	if err != nil {
		return err
	}
	title := t.URL + ", closed loop"
	if *rate > 0 {
		title = fmt.Sprintf("%s, open loop at %g/s", t.URL, *rate)
	}
	if *stream {
		title += ", stream: latency columns are time to first content"
	}
	row := bench.RowOf("load", title, *c, *stream, res)
	if *pid > 0 && perr == nil && res.Requests > 0 {
		cpu := (after.CPU - before.CPU) / time.Duration(res.Requests)
		row.Gateway, row.GatewayCPUPerReq = fmt.Sprintf("pid %d", *pid), &cpu
		if st, err := bench.ReadProc(*pid); err == nil {
			row.GatewayPeakRSS = st.PeakRSS
		}
	}
	if *asJSON {
		return bench.WriteRowsJSON(stdout, []bench.Row{row})
	}
	bench.WriteRowsMarkdown(stdout, []bench.Row{row})
	if *rate > 0 {
		fmt.Fprintf(stdout, "\nopen loop: %d sends scheduled in the window, %d dropped (every worker busy, backlog full), %d late by more than 1 ms\n",
			res.Scheduled, res.Dropped, res.Late)
	}
	return nil
}

// reportCmd prints the markdown tables of a report saved with run --json.
func reportCmd(args []string, stdout io.Writer) error {
	var in io.Reader = os.Stdin
	switch len(args) {
	case 0:
	case 1:
		f, err := os.Open(args[0])
		if err != nil {
			return err
		}
		defer f.Close()
		in = f
	default:
		return fmt.Errorf("report: want at most one file, got %q", args)
	}
	var rep bench.Report
	if err := json.NewDecoder(in).Decode(&rep); err != nil {
		return fmt.Errorf("report: %w", err)
	}
	return rep.WriteMarkdown(stdout)
}
