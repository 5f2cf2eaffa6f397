package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/client"
	"github.com/agentd/agentd/internal/clock/clocktest"
)

// delayUpstream is an OpenAI-compatible upstream whose answer to a last message
// "wait N" takes N ms of the server's fake clock (it moves the clock on while it
// answers: the run's latency, measured on that clock, without a sleep), with 10
// prompt and 5 completion tokens.
func delayUpstream(t *testing.T, clk *clocktest.Fake) *httptest.Server {
	u := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Model    string `json:"model"`
			Messages []struct{ Role, Content string }
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil || len(body.Messages) == 0 {
			http.Error(w, fmt.Sprintf("bad request: %v", err), 400)
			return
		}
		last := body.Messages[len(body.Messages)-1].Content
		if ms, err := strconv.Atoi(strings.TrimPrefix(last, "wait ")); err == nil {
			clk.Advance(time.Duration(ms) * time.Millisecond)
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id":"chatcmpl-D","object":"chat.completion","created":1741569952,"model":%q,"choices":[{"index":0,"message":{"role":"assistant","content":"Done."},"finish_reason":"stop"}],"usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15}}`, body.Model)
	}))
	t.Cleanup(u.Close)
	return u
}

// rollupServer is a server on a fake clock with model gpt-wait on delayUpstream,
// credits granted and agent waiter on it.
func rollupServer(t *testing.T) (*testServer, *client.Client) {
	clk := clocktest.New(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	return clockedServer(t, clk, delayUpstream(t, clk).URL, "gpt-wait", "waiter", "Waits", "Wait.")
}

// waitRun runs agent waiter (pinned to version when not 0) on a message that takes
// ms of the fake clock.
func waitRun(t *testing.T, op *client.Client, version, ms int) {
	t.Helper()
	var h http.Header
	if version != 0 {
		h = http.Header{"X-Agent-Version": {strconv.Itoa(version)}}
	}
	if err := op.Do(context.Background(), "POST", "/api/v3/agents/run-agents/waiter/run", h, map[string]any{"message": fmt.Sprint("wait ", ms)}, nil); err != nil {
		t.Fatal(err)
	}
}

// TestUsageSummaryByVersion: runs on two versions of an agent (the active one and
// one pinned) are summed per version by group_by=version, with their average
// latency, through the API and the CLI.
func TestUsageSummaryByVersion(t *testing.T) {
	s, op := rollupServer(t)
	ctx := context.Background()
	for _, ms := range []int{100, 300} {
		waitRun(t, op, 0, ms) // v1
	}
	if err := op.Do(ctx, "PATCH", "/api/v3/agents/waiter", nil, map[string]any{"instructions": "Wait less."}, nil); err != nil {
		t.Fatal(err)
	}
	for _, ms := range []int{10, 20, 30} {
		waitRun(t, op, 0, ms) // v2, now active
	}
	waitRun(t, op, 1, 500) // v1, pinned
	sum, err := op.UsageSummary(ctx, "version", "", "")
	if err != nil {
		t.Fatal(err)
	}
	if sum.GroupBy != "version" || len(sum.Data) != 2 {
		t.Fatalf("summary = %+v", sum)
	}
	for i, want := range []struct {
		version int
		runs    int64
		avg     float64
	}{{1, 3, 300}, {2, 3, 20}} {
		r := sum.Data[i]
		if r.Group != "waiter" || r.AgentID == "" || r.Version != want.version || r.Runs != want.runs || r.Failed != 0 ||
			r.InputTokens != 10*want.runs || r.OutputTokens != 5*want.runs || r.AvgLatencyMS != want.avg {
			t.Errorf("row %d = %+v, want version %d, %d runs, average %v ms", i, r, want.version, want.runs, want.avg)
		}
	}
	// The JSON names the version, and only for this grouping.
	code, b := call(t, s, s.Key, "GET", "/api/v3/usage/summary?group_by=version", "")
	if code != 200 || !strings.Contains(b, `"version":1`) || !strings.Contains(b, `"version":2`) {
		t.Fatalf("group_by=version: %d %s", code, b)
	}
	if code, b := call(t, s, s.Key, "GET", "/api/v3/usage/summary?group_by=agent", ""); code != 200 || strings.Contains(b, `"version"`) {
		t.Fatalf("group_by=agent: %d %s", code, b)
	}
	r := agentdCLI(map[string]string{"AGENTD_URL": s.URL, "AGENTD_KEY": s.Key}, "", "usage", "--group-by", "version")
	if r.err != nil || !strings.Contains(r.stdout, "waiter@1") || !strings.Contains(r.stdout, "waiter@2") {
		t.Fatalf("agentd usage --group-by version: %v\n%s", r.err, r.stdout)
	}
	wantCheckClean(t, s, "after runs on two versions")
}

// TestP95FromHistogram: performance_metrics.p95_response_time is the upper bound
// of the rollups' latency bucket that holds the 95th percentile of the runs.
func TestP95FromHistogram(t *testing.T) {
	s, op := rollupServer(t)
	p95 := func() *float64 {
		t.Helper()
		code, b := call(t, s, s.Key, "GET", "/api/v3/agents/waiter", "")
		if code != 200 {
			t.Fatal(code, b)
		}
		var out struct {
			Data struct {
				PM struct {
					P95 *float64 `json:"p95_response_time"`
				} `json:"performance_metrics"`
			}
		}
		if err := json.Unmarshal([]byte(b), &out); err != nil {
			t.Fatal(err)
		}
		return out.Data.PM.P95
	}
	if v := p95(); v != nil {
		t.Fatalf("p95 before any run = %v, want null", *v)
	}
	// 20 runs: the 19th fastest (the nearest-rank 95th percentile) takes 700 ms,
	// in the bucket (500 ms, 1 s].
	var lat []int
	for range 10 {
		lat = append(lat, 40)
	}
	for range 8 {
		lat = append(lat, 200)
	}
	lat = append(lat, 700, 4000)
	for _, ms := range lat {
		waitRun(t, op, 0, ms)
	}
	if v := p95(); v == nil || *v != 1000 {
		t.Fatalf("p95 = %v, want 1000", v)
	}
	// One more slow run: the 95th percentile (rank 20 of 21) is now in (2.5 s, 5 s].
	waitRun(t, op, 0, 3000)
	if v := p95(); v == nil || *v != 5000 {
		t.Fatalf("p95 = %v, want 5000", v)
	}
	// Listings carry it too.
	code, b := call(t, s, s.Key, "GET", "/api/v3/agents", "")
	if code != 200 || !strings.Contains(b, `"p95_response_time":5000`) {
		t.Fatalf("listing: %d %s", code, b)
	}
}
