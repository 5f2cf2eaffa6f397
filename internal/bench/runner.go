package bench

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"
)

// RunOptions configure the scenario matrix.
type RunOptions struct {
	Quick    bool          // the short matrix, with 1 s cells: a smoke test
	Duration time.Duration // each cell's measured time (default 10 s; quick 1 s)
	Warmup   time.Duration // before each cell's measured time (0: 2 s, quick 300 ms; negative: none)
	Only     *regexp.Regexp
	// Agentd is the agentd binary; empty: built with go build from ModuleRoot
	// (empty: the module of the working directory).
	Agentd, ModuleRoot string
	// ProxyCommand serves the bare proxy as its own process (agentd-bench proxy);
	// --addr, --upstream and --max-idle are appended. Nil: in this process, with
	// no CPU or memory column of its own.
	ProxyCommand []string
	Tokens       int           // the upstream's reply length in pieces (default 16)
	SlowLatency  time.Duration // the slow upstream's latency (default 50 ms)
	GrowthTurns  int           // turns of the session-growth scenario (default 1000; quick 100)
	// ContextWindow is the bench models' context window in tokens (default 8192):
	// how much of a session's history a run sends.
	ContextWindow int
	Progress      io.Writer // one line per cell; nil: none
	KeepTemp      bool      // keep the temporary directory (database, logs)
}

func (o *RunOptions) defaults() {
	if o.Duration <= 0 {
		o.Duration = 10 * time.Second
		if o.Quick {
			o.Duration = time.Second
		}
	}
	if o.Warmup < 0 {
		o.Warmup = 0
	} else if o.Warmup == 0 {
		o.Warmup = 2 * time.Second
		if o.Quick {
			o.Warmup = 300 * time.Millisecond
		}
	}
	if o.Tokens <= 0 {
		o.Tokens = 16
	}
	if o.SlowLatency <= 0 {
		o.SlowLatency = 50 * time.Millisecond
	}
	if o.GrowthTurns <= 0 {
		o.GrowthTurns = 1000
		if o.Quick {
			o.GrowthTurns = 100
		}
	}
	if o.GrowthTurns < 30 {
		o.GrowthTurns = 30
	}
	if o.ContextWindow <= 0 {
		o.ContextWindow = 8192
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
}

// maxConcurrency sizes the shared client's connection pool.
const maxConcurrency = 256

// env is what the cells of one run share: the upstreams, the proxies and agentd,
// started when a selected cell first needs them.
type env struct {
	ctx    context.Context
	o      RunOptions
	dir    string
	client *http.Client

	fast, slow *localServer
	proxies    map[proxyKey]*gateway
	ad         *child
	adErr      error
	key        string
	cells      int
	notes      []string
}

// gateway is a server between the load and the upstream: its URL and, when it is
// its own process, that process.
type gateway struct {
	URL   string
	proc  *child       // nil: in this process
	local *localServer // in this process
}

// localServer is an HTTP server in this process on 127.0.0.1:0.
type localServer struct {
	URL string
	srv *http.Server
}

func serveLocal(h http.Handler) (*localServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &localServer{URL: "http://" + ln.Addr().String(), srv: &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}}
	go s.srv.Serve(ln)
	return s, nil
}

func (s *localServer) close() { s.srv.Close() }

// Run starts the built-in upstreams, the bare proxy and agentd, runs every
// selected scenario and returns the report (with what was measured so far when
// it fails part way).
func Run(ctx context.Context, o RunOptions) (*Report, error) {
	o.defaults()
	rep := newReport(o)
	dir, err := os.MkdirTemp("", "agentd-bench-")
	if err != nil {
		return rep, err
	}
	e := &env{ctx: ctx, o: o, dir: dir, client: NewClient(maxConcurrency, 60*time.Second), proxies: map[proxyKey]*gateway{}}
	defer func() {
		e.close(rep)
		if o.KeepTemp {
			fmt.Fprintf(o.Progress, "kept %s\n", dir)
		} else {
			os.RemoveAll(dir)
		}
	}()
	if e.fast, err = serveLocal(NewUpstream(UpstreamOptions{Tokens: o.Tokens})); err != nil {
		return rep, err
	}
	if e.slow, err = serveLocal(NewUpstream(UpstreamOptions{Tokens: o.Tokens, Latency: o.SlowLatency})); err != nil {
		return rep, err
	}

	for _, sc := range matrix() {
		if o.Quick && !sc.quick || o.Only != nil && !o.Only.MatchString(sc.name()) {
			continue
		}
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		fmt.Fprintf(o.Progress, "%-15s c=%-3d %s\n", sc.id, sc.c, sc.title)
		rows, err := e.cell(&sc)
		rep.Rows = append(rep.Rows, rows...)
		if err != nil {
			rep.finish()
			return rep, fmt.Errorf("%s c=%d: %w", sc.id, sc.c, err)
		}
	}
	rep.finish()
	return rep, nil
}

// nextCell numbers cells, so that each one's sessions are new.
func (e *env) nextCell() int { e.cells++; return e.cells }

// cell runs one scenario.
func (e *env) cell(sc *scenario) ([]Row, error) {
	row := Row{ID: sc.id, Scenario: sc.title, Concurrency: sc.c, Direct: sc.direct, TTFB: sc.ttfb, Errors: map[string]int64{}}
	if sc.na != "" {
		row.NA = sc.na
		return []Row{row}, nil
	}
	t, err := sc.target(e)
	if err != nil {
		return nil, err
	}
	var proc *child
	switch sc.gateway {
	case "agentd":
		proc = e.ad
	case "proxy":
		if g := e.proxies[proxyKey{slow: strings.Contains(sc.id, "slow")}]; g != nil {
			proc = g.proc
		}
	}
	if proc != nil {
		row.Gateway = sc.gateway
		if err := ResetPeakRSS(proc.Pid()); err != nil {
			e.note("peak RSS could not be reset between cells (%v): the peak RSS column is the peak since the gateway started", err)
		}
	}
	defer time.Sleep(e.pause())
	if sc.growth {
		return e.growth(sc, row, t, proc)
	}

	var p0, p1, s0, s1 ProcStat
	var m0, m1 time.Duration
	var perr error
	var mu sync.Mutex // the callbacks run on timers of their own
	sample := func(to, self *ProcStat, machine *time.Duration) func() {
		return func() {
			mu.Lock()
			defer mu.Unlock()
			*machine, _ = MachineCPU()
			*self, _ = ReadProc(os.Getpid())
			if proc != nil {
				var err error
				if *to, err = ReadProc(proc.Pid()); err != nil {
					perr = err
				}
			}
		}
	}
	res, err := Load(e.ctx, e.client, t, LoadOptions{
		Concurrency: sc.c, Warmup: e.o.Warmup, Duration: e.o.Duration,
		OnStart: sample(&p0, &s0, &m0), OnEnd: sample(&p1, &s1, &m1),
	})
	if err != nil {
		return nil, err
	}
	row.fill(res)
	if res.Requests > 0 {
		row.BenchCPUPerReq = (s1.CPU - s0.CPU) / time.Duration(res.Requests)
	}
	// What the rest of the machine used meanwhile: other processes compete for
	// the same two cores.
	other := (m1 - m0) - (s1.CPU - s0.CPU)
	if proc != nil {
		other -= p1.CPU - p0.CPU
	}
	if m1 > 0 && res.Elapsed > 0 {
		row.OtherCores = max(other.Seconds()/res.Elapsed.Seconds(), 0)
		if row.OtherCores > 0.15 {
			e.note("%s c=%d: other processes on the machine used %.2f cores during the cell", sc.id, sc.c, row.OtherCores)
		}
	}
	if proc != nil {
		if exited, err := proc.exited(); exited {
			return []Row{row}, fmt.Errorf("%s exited during the cell (%v): %s", proc.name, err, tail(proc.log, 2000))
		}
		if perr == nil {
			if res.Requests > 0 {
				cpu := (p1.CPU - p0.CPU) / time.Duration(res.Requests)
				row.GatewayCPUPerReq = &cpu
			}
			if end, err := ReadProc(proc.Pid()); err == nil {
				row.GatewayPeakRSS = end.PeakRSS
			}
		}
	}
	if sc.gateway == "proxy" && proc == nil {
		row.Gateway = "proxy (in process)"
	}
	return []Row{row}, e.ctx.Err()
}

// pause lets a cell's aftermath (connections closing, WAL checkpoints) settle
// before the next one.
func (e *env) pause() time.Duration {
	if e.o.Quick {
		return 100 * time.Millisecond
	}
	return 500 * time.Millisecond
}

// proxyKey names one of the bare proxies a run may start.
type proxyKey struct {
	slow      bool // in front of the slow upstream
	inProcess bool // in this process even when ProxyCommand is set
}

// proxyFor starts the bare proxy in front of the fast or the slow upstream: its
// own process when ProxyCommand is set (unless k.inProcess), else in this one.
func (e *env) proxyFor(k proxyKey) (*gateway, error) {
	if g := e.proxies[k]; g != nil {
		return g, nil
	}
	up := e.fast
	if k.slow {
		up = e.slow
	}
	g := &gateway{}
	if len(e.o.ProxyCommand) == 0 || k.inProcess {
		s, err := serveLocal(NewProxy(up.URL, maxConcurrency*2))
		if err != nil {
			return nil, err
		}
		g.URL, g.local = s.URL, s
	} else {
		name := "proxy"
		if k.slow {
			name = "proxy-slow"
		}
		argv := append(slices.Clone(e.o.ProxyCommand), "--addr", "127.0.0.1:0", "--upstream", up.URL, "--max-idle", fmt.Sprint(maxConcurrency*2))
		c, err := startChild(e.ctx, name, argv, nil, filepath.Join(e.dir, name+".log"))
		if err != nil {
			return nil, err
		}
		g.URL, g.proc = c.URL, c
	}
	e.proxies[k] = g
	return g, nil
}

// close stops agentd (then runs agentd check on its database) and the proxies,
// and adds what their logs say to the report.
func (e *env) close(rep *Report) {
	e.client.CloseIdleConnections()
	for _, g := range e.proxies {
		switch {
		case g.proc != nil:
			g.proc.stop(10 * time.Second)
		case g.local != nil:
			g.local.close()
		}
	}
	if e.ad != nil {
		if err := e.ad.stop(60 * time.Second); err != nil {
			e.note("agentd did not stop cleanly: %v", err)
		}
		e.logNotes(e.ad.log)
		cmd := exec.Command(e.ad.cmd.Path, "check", "--db", "sqlite:"+filepath.Join(e.dir, "agentd.db"))
		out, err := cmd.CombinedOutput()
		if err != nil {
			e.note("agentd check after the run FAILED (%v): %s", err, strings.TrimSpace(string(out)))
		} else {
			rep.Checked = strings.TrimSpace(string(out))
		}
	}
	if e.fast != nil {
		e.fast.close()
	}
	if e.slow != nil {
		e.slow.close()
	}
	rep.Notes = append(rep.Notes, e.notes...)
}

// note records something the reader of the report should know, once.
func (e *env) note(format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	if !slices.Contains(e.notes, s) {
		e.notes = append(e.notes, s)
	}
}
