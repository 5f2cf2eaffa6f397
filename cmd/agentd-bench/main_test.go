package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
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

func TestUpstreamProxyLoad(t *testing.T) {
	up := start(t, "upstream", "--addr", "127.0.0.1:0", "--tokens", "4")
	px := start(t, "proxy", "--addr", "127.0.0.1:0", "--upstream", up+"/v1")
	ctx := context.Background()

	var out bytes.Buffer
	err := run(ctx, []string{"load", "--url", px, "--concurrency", "4", "--duration", "300ms", "--warmup", "0s", "--pid", itoa(os.Getpid())}, &out, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile(`\| load \| (\S+)/v1/chat/completions, closed loop \[pid \d+\] \| 4 \| ([\d,]+) \|.*\| (\d+ µs) \| [\d.]+ MiB \| 0 \|`).FindStringSubmatch(out.String())
	if row == nil || row[1] != px {
		t.Fatalf("load printed:\n%s", out.String())
	}

	out.Reset()
	err = run(ctx, []string{"load", "--url", up + "/v1/chat/completions", "--stream", "--rate", "100", "--concurrency", "2", "--duration", "300ms", "--warmup", "0s", "--json"}, &out, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var rows []struct {
		Requests  int64            `json:"requests"`
		Scheduled int64            `json:"scheduled"`
		TTFB      bool             `json:"ttfb"`
		P50       int64            `json:"p50_ns"`
		Errors    map[string]int64 `json:"errors"`
	}
	if err := json.Unmarshal(out.Bytes(), &rows); err != nil || len(rows) != 1 {
		t.Fatalf("load --json printed %s (%v)", out.String(), err)
	}
	if r := rows[0]; r.Scheduled != 30 || r.Requests != 30 || !r.TTFB || r.P50 <= 0 || len(r.Errors) != 0 {
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

// TestRunQuick builds agentd, starts it, and runs one cheap row of the quick
// matrix end to end (plus the bare proxy, started as its own process).
func TestRunQuick(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping the end-to-end run, which builds and starts agentd (about 10 s)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out, log bytes.Buffer
	err := run(ctx, []string{"run", "--quick", "--duration", "500ms", "--warmup", "200ms", "--only", `^(proxy|run) c=64 `}, &out, &log)
	if err != nil {
		t.Fatalf("%v\n%s\n%s", err, log.String(), out.String())
	}
	for _, re := range []string{
		`\| proxy \| bare JSON proxy \| 64 \| [\d,]+ \|.*\| \d+ µs \| [\d.]+ MiB \| 0 \|`,
		`\| run \| agentd run endpoint, stateless \| 64 \| [\d,]+ \|.*\| \d+ µs \| [\d.]+ MiB \| 0 \|`,
		`\| zero errors in every cell \| 0 errors in 2 cells \| PASS \|`,
		`agentd check after the run: .*is consistent`,
	} {
		if !regexp.MustCompile(re).MatchString(out.String()) {
			t.Errorf("output lacks %s:\n%s", re, out.String())
		}
	}
}

func itoa(i int) string { return strconv.Itoa(i) }
