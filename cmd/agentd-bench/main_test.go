package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentd/agentd/internal/bench"
)

// TestMain lets the test binary stand in for agentd-bench: `run` starts the
// bare proxy by executing itself with the proxy command.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "proxy" {
		main()
		return
	}
	os.Exit(m.Run())
}

// start runs a serving command until the test ends and returns its URL.
func start(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- run(ctx, args, pw, io.Discard); pw.Close() }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("%s: %v", args[0], err)
		}
	})
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatalf("%s: %v", args[0], err)
	}
	go io.Copy(io.Discard, pr)
	m := regexp.MustCompile(`listening on (http://\S+)`).FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("%s said %q", args[0], line)
	}
	return m[1]
}

// stuck fires a little before the test binary's deadline (go test -timeout),
// so that a test waiting for an event that never comes fails with its own
// message instead of the timeout's panic. It is no time limit of its own:
// without a deadline it never fires.
func stuck(t *testing.T) <-chan time.Time {
	d, ok := t.Deadline()
	if !ok {
		return nil
	}
	return time.After(time.Until(d) - 10*time.Second)
}

// gate stands between the proxy and the upstream: in each round it passes the
// first pass requests on and holds every later one until its client leaves,
// telling held about it.
type gate struct {
	next       http.Handler
	held       chan struct{}
	mu         sync.Mutex
	pass, seen int
}

func (g *gate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	g.mu.Lock()
	g.seen++
	through := g.seen <= g.pass
	g.mu.Unlock()
	if through {
		g.next.ServeHTTP(w, r)
		return
	}
	// Read the body: only then does the server watch the connection, and end
	// the request's context when the client leaves.
	io.Copy(io.Discard, r.Body)
	g.held <- struct{}{}
	<-r.Context().Done()
}

// loadThroughGate runs a closed-loop agentd-bench load of c workers (args)
// whose requests reach the gate, lets pass of them through, and once the gate
// holds the next request of every worker ends the load as Ctrl-C would; it
// returns what the load printed, which measured exactly those pass requests.
func loadThroughGate(t *testing.T, g *gate, pass, c int, args ...string) string {
	t.Helper()
	g.mu.Lock()
	g.pass, g.seen = pass, 0
	g.mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out bytes.Buffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, args, &out, io.Discard) }()
	giveUp := stuck(t)
	for held := 0; held < c; {
		select {
		case <-g.held:
			held++
		case err := <-done:
			t.Fatalf("load ended (%v) before the gate held a request of each of its %d workers:\n%s", err, c, out.String())
		case <-giveUp:
			t.Fatalf("the gate holds %d requests, still waiting for %d", held, c)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	return out.String()
}

// loadRow is a row of load --json.
type loadRow struct {
	Requests  int64            `json:"requests"`
	Seconds   float64          `json:"seconds"`
	Scheduled int64            `json:"scheduled"`
	Dropped   int64            `json:"dropped"`
	TTFB      bool             `json:"ttfb"`
	P50       int64            `json:"p50_ns"`
	Errors    map[string]int64 `json:"errors"`
}

func oneRow(t *testing.T, out string) loadRow {
	t.Helper()
	var rows []loadRow
	if err := json.Unmarshal([]byte(out), &rows); err != nil || len(rows) != 1 {
		t.Fatalf("load --json printed %s (%v)", out, err)
	}
	return rows[0]
}

func TestUpstreamProxyLoad(t *testing.T) {
	up := start(t, "upstream", "--addr", "127.0.0.1:0", "--tokens", "4")
	upURL, err := url.Parse(up)
	if err != nil {
		t.Fatal(err)
	}
	g := &gate{next: httputil.NewSingleHostReverseProxy(upURL), held: make(chan struct{}, 16)}
	gs := httptest.NewServer(g)
	defer gs.Close()
	px := start(t, "proxy", "--addr", "127.0.0.1:0", "--upstream", gs.URL+"/v1")

	// Closed loop through the proxy: it passes 20 requests to the upstream, and
	// the load counts exactly those 20, none of them an error.
	r := oneRow(t, loadThroughGate(t, g, 20, 4, "load", "--url", px, "--concurrency", "4", "--duration", "1h", "--warmup", "0s", "--json"))
	if r.Requests != 20 || len(r.Errors) != 0 || r.Seconds <= 0 || r.P50 <= 0 {
		t.Errorf("closed loop, 20 requests through the proxy: %+v", r)
	}
	// The markdown row, with this process's CPU per request and peak memory.
	out := loadThroughGate(t, g, 20, 4, "load", "--url", px, "--concurrency", "4", "--duration", "1h", "--warmup", "0s", "--pid", itoa(os.Getpid()))
	row := regexp.MustCompile(`\| load \| (\S+)/v1/chat/completions, closed loop \[pid \d+\] \| 4 \| [\d.,]+ \|.*\| \d+ µs \| [\d.]+ MiB \| 0 \|`).FindStringSubmatch(out)
	if row == nil || row[1] != px {
		t.Fatalf("load printed:\n%s", out)
	}

	// Open loop, streams, straight to the upstream: 100/s for 300 ms is 30
	// sends on the timetable, however busy the machine. Each is answered, or
	// dropped when both workers are busy and the backlog is full; the first
	// always finds a worker.
	var buf bytes.Buffer
	err = run(context.Background(), []string{"load", "--url", up + "/v1/chat/completions", "--stream", "--rate", "100", "--concurrency", "2", "--duration", "300ms", "--warmup", "0s", "--json"}, &buf, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	r = oneRow(t, buf.String())
	errs := maps.Clone(r.Errors)
	if errs["dropped (open loop)"] == r.Dropped {
		delete(errs, "dropped (open loop)")
	}
	if r.Scheduled != 30 || r.Requests < 1 || r.Requests+r.Dropped != 30 || len(errs) != 0 || !r.TTFB || r.P50 <= 0 {
		t.Errorf("open loop stream at 100/s for 300ms: %+v", r)
	}
}

func TestUsageErrors(t *testing.T) {
	ctx := context.Background()
	for _, args := range [][]string{
		{},
		{"nope"},
		{"load"},
		{"load", "--url", "http://127.0.0.1:1", "extra"},
		{"proxy", "--upstream", "not a url"},
		{"upstream", "--error-rate", "2"},
		{"run", "--only", "("},
	} {
		if err := run(ctx, args, io.Discard, io.Discard); err == nil {
			t.Errorf("%q: no error", args)
		}
	}
	var out bytes.Buffer
	if err := run(ctx, []string{"help"}, &out, io.Discard); err != nil || !strings.Contains(out.String(), "agentd-bench run") {
		t.Errorf("help: %v\n%s", err, out.String())
	}
}

// TestRunQuick builds agentd, starts it, and runs two cheap rows of the quick
// matrix end to end (plus the bare proxy, started as its own process). Cells are
// timed, so how many requests each measures depends on the machine; the test
// checks what does not.
func TestRunQuick(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping the end-to-end run, which builds and starts agentd (about 10 s)")
	}
	var out, log bytes.Buffer
	err := run(t.Context(), []string{"run", "--quick", "--duration", "500ms", "--warmup", "200ms", "--only", `^(proxy|run) c=64 `, "--json"}, &out, &log)
	if err != nil {
		t.Fatalf("%v\n%s\n%s", err, log.String(), out.String())
	}
	var rep bench.Report
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("run --json: %v\n%s", err, out.String())
	}
	for _, want := range []struct{ id, gateway string }{{"proxy", "proxy"}, {"run", "agentd"}} {
		var r *bench.Row
		for i := range rep.Rows {
			if rep.Rows[i].ID == want.id && rep.Rows[i].Concurrency == 64 {
				r = &rep.Rows[i]
			}
		}
		switch {
		case r == nil:
			t.Errorf("no row %s c=64 in %+v", want.id, rep.Rows)
		case r.Gateway != want.gateway || r.Seconds != 0.5 || len(r.Errors) != 0 || r.GatewayPeakRSS <= 0:
			t.Errorf("%s c=64: gateway %q, %v s, errors %v, peak RSS %d; want %q, 0.5 s, none, its RSS",
				want.id, r.Gateway, r.Seconds, r.Errors, r.GatewayPeakRSS, want.gateway)
		case r.Requests > 0 && (r.GatewayCPUPerReq == nil || r.P50 <= 0 || r.Throughput <= 0):
			t.Errorf("%s c=64: %d requests, but CPU per request %v, p50 %v, %v req/s", want.id, r.Requests, r.GatewayCPUPerReq, r.P50, r.Throughput)
		case r.Requests == 0:
			t.Logf("%s c=64 measured no request in its 500 ms: a very busy machine", want.id)
		}
	}
	zero := false
	for _, c := range rep.Targets {
		if c.Target == "zero errors in every cell" {
			zero = c.Measured == "0 errors in 2 cells" && c.Verdict == "PASS"
		}
	}
	if !zero || !strings.Contains(rep.Checked, "is consistent") {
		t.Errorf("targets %+v, agentd check %q; want zero errors in 2 cells and a consistent database", rep.Targets, rep.Checked)
	}

	// The report command prints the saved report as markdown.
	file := filepath.Join(t.TempDir(), "report.json")
	if err := os.WriteFile(file, out.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	var md bytes.Buffer
	if err := run(t.Context(), []string{"report", file}, &md, io.Discard); err != nil {
		t.Fatal(err)
	}
	for _, re := range []string{
		`\| proxy \| bare JSON proxy \| 64 \| [\d.,]+ \|`,
		`\| run \| agentd run endpoint, stateless \| 64 \| [\d.,]+ \|`,
		`\| zero errors in every cell \| 0 errors in 2 cells \| PASS \|`,
		`agentd check after the run: .*is consistent`,
	} {
		if !regexp.MustCompile(re).MatchString(md.String()) {
			t.Errorf("report lacks %s:\n%s", re, md.String())
		}
	}
}

func itoa(i int) string { return strconv.Itoa(i) }
