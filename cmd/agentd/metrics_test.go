package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/client"
)

const metricsToken = "metrics-token-0123456789"

// metricsConfig is a catalog on the test upstream: a model that answers
// (priced), one whose upstream always answers 500, one that always answers
// 429 (both free, so that their holds fit any balance), and one too pricey for
// the balance the tests grant. Each retries once.
func metricsConfig(u *upstream, extra string) string {
	return fmt.Sprintf(`
retry:
  initial_backoff: 1ms
  max_backoff: 2ms
providers:
  - {name: compat, kind: openai, base_url: %s/v1, max_retries: 1}
models:
  - {id: gpt-ok, provider: compat, upstream_model: ok-model, context_window: 8192, max_output_tokens: 1024, price: {input: 150, output: 600}}
  - {id: gpt-500, provider: compat, upstream_model: always-500, context_window: 8192, max_output_tokens: 1024}
  - {id: gpt-429, provider: compat, upstream_model: always-429, context_window: 8192, max_output_tokens: 1024}
  - {id: gpt-pricey, provider: compat, upstream_model: ok-model, context_window: 8192, max_output_tokens: 1024, price: {input: 10000, output: 10000}}
%s`, u.URL, extra)
}

// scrape reads url's metrics with the bearer token (none when "") and parses
// them with Prometheus's own text parser.
func scrape(t *testing.T, url, token string) map[string]*dto.MetricFamily {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse %s: %v", url, err)
	}
	return fams
}

// sample is the value of the sample of family name whose labels are exactly
// labels (a counter's, a gauge's, or a histogram's count); ok is false when
// there is none.
func sample(fams map[string]*dto.MetricFamily, name string, labels map[string]string) (v float64, ok bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
	for _, m := range f.Metric {
		if len(m.Label) != len(labels) {
			continue
		}
		match := true
		for _, l := range m.Label {
			if labels[l.GetName()] != l.GetValue() {
				match = false
			}
		}
		if !match {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		case m.Untyped != nil:
			return m.Untyped.GetValue(), true
		}
	}
	return 0, false
}

// series lists a family's label sets, for failure messages.
func series(fams map[string]*dto.MetricFamily, name string) string {
	f := fams[name]
	if f == nil {
		return "(no " + name + ")"
	}
	var out []string
	for _, m := range f.Metric {
		var ls []string
		for _, l := range m.Label {
			ls = append(ls, l.GetName()+"="+l.GetValue())
		}
		v, _ := sample(fams, name, labelMap(m))
		out = append(out, fmt.Sprintf("{%s} %g", strings.Join(ls, ","), v))
	}
	sort.Strings(out)
	return strings.Join(out, "\n")
}

func labelMap(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, l := range m.Label {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

// post sends body to path with the key and the headers, and returns the
// response with its body read.
func post(t *testing.T, s *testServer, path, body string, headers map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest("POST", s.URL+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+s.Key)
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

// TestMetrics scrapes /metrics after a known sequence of runs — one that
// answers, one whose upstream fails (500, retried once), one refused for want
// of credits (402), and an OpenAI-compatible call the upstream keeps
// rate-limiting (429, retried once, answered 429) — and checks that every
// counter has exactly the value that sequence gives it.
func TestMetrics(t *testing.T) {
	u := newUpstream(t, map[string][]int{"always-500": {500}, "always-429": {429}})
	var handled tally
	hooks := handledHooks(&handled)
	s := startServerIn(t, t.TempDir(), metricsConfig(u, ""), map[string]string{"AGENTD_METRICS_TOKEN": metricsToken}, hooks, nil)
	ctx := context.Background()
	c := s.client(s.Key)
	if _, err := c.GrantCredits(ctx, agentd.DefaultOrgName, 1); err != nil {
		t.Fatal(err)
	}
	for name, m := range map[string]string{"ok_bot": "gpt-ok", "broken_bot": "gpt-500", "pricey_bot": "gpt-pricey"} {
		if _, err := c.CreateAgent(ctx, client.AgentSpec{Name: client.Ptr(name), Description: client.Ptr("t"), Model: client.Ptr(m), MaxToken: client.Ptr(100)}); err != nil {
			t.Fatal(err)
		}
	}
	// Each request is counted once its handler has returned (serveHooks.handled).
	done := func(path string, n int) { handled.wait(t, path, n) }

	for _, tc := range []struct {
		agent  string
		status int
	}{{"ok_bot", 200}, {"broken_bot", 500}, {"pricey_bot", 402}} {
		resp, body := post(t, s, runPath(tc.agent), `{"message":"hello"}`, nil)
		if resp.StatusCode != tc.status {
			t.Fatalf("%s: %d %s", tc.agent, resp.StatusCode, body)
		}
		done(runPath(tc.agent), 1)
	}
	resp, body := post(t, s, "/v1/chat/completions", `{"model":"gpt-429","messages":[{"role":"user","content":"hi"}],"max_tokens":10}`, nil)
	if resp.StatusCode != 429 {
		t.Fatalf("gpt-429: %d %s", resp.StatusCode, body)
	}
	done("/v1/chat/completions", 1)

	fams := scrape(t, s.URL+"/metrics", metricsToken)
	runRoute := "POST /api/v3/agents/run-agents/{agent_name}/run"
	for _, w := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"agentd_runs_total", map[string]string{"model": "gpt-ok", "outcome": "ok", "class": ""}, 1},
		{"agentd_runs_total", map[string]string{"model": "gpt-500", "outcome": "failed", "class": "upstream_error"}, 1},
		{"agentd_runs_total", map[string]string{"model": "gpt-pricey", "outcome": "rejected", "class": "insufficient_quota"}, 1},
		{"agentd_runs_total", map[string]string{"model": "gpt-429", "outcome": "failed", "class": "rate_limited"}, 1},
		// The upstream's usage of a 200: 42 prompt and 8 completion tokens.
		{"agentd_tokens_total", map[string]string{"model": "gpt-ok", "kind": "input"}, 42},
		{"agentd_tokens_total", map[string]string{"model": "gpt-ok", "kind": "output"}, 8},
		{"agentd_tokens_total", map[string]string{"model": "gpt-ok", "kind": "cached_input"}, 0},
		{"agentd_tokens_total", map[string]string{"model": "gpt-ok", "kind": "reasoning"}, 0},
		{"agentd_tokens_total", map[string]string{"model": "gpt-500", "kind": "input"}, 0},
		// 42 × 150 + 8 × 600 micro-credits.
		{"agentd_credits_charged_total", map[string]string{"model": "gpt-ok"}, 0.0111},
		{"agentd_credits_charged_total", map[string]string{"model": "gpt-500"}, 0},
		// Each failing model was called twice: the try and its one retry.
		{"agentd_upstream_request_duration_seconds", map[string]string{"provider": "compat", "model": "gpt-ok"}, 1},
		{"agentd_upstream_request_duration_seconds", map[string]string{"provider": "compat", "model": "gpt-500"}, 2},
		{"agentd_upstream_request_duration_seconds", map[string]string{"provider": "compat", "model": "gpt-429"}, 2},
		{"agentd_upstream_errors_total", map[string]string{"provider": "compat", "class": "upstream_error"}, 2},
		{"agentd_upstream_errors_total", map[string]string{"provider": "compat", "class": "rate_limited"}, 2},
		{"agentd_upstream_retries_total", map[string]string{"provider": "compat", "model": "gpt-500"}, 1},
		{"agentd_upstream_retries_total", map[string]string{"provider": "compat", "model": "gpt-429"}, 1},
		{"agentd_upstream_retries_total", map[string]string{"provider": "compat", "model": "gpt-ok"}, 0},
		{"agentd_upstream_fallbacks_total", map[string]string{"provider": "compat", "model": "gpt-500"}, 0},
		{"agentd_holds_in_flight", map[string]string{}, 0},
		{"agentd_session_leases_in_flight", map[string]string{}, 0},
		// By the route table's pattern, never the path.
		{"agentd_http_requests_total", map[string]string{"route": runRoute, "code": "200"}, 1},
		{"agentd_http_requests_total", map[string]string{"route": runRoute, "code": "500"}, 1},
		{"agentd_http_requests_total", map[string]string{"route": runRoute, "code": "402"}, 1},
		{"agentd_http_requests_total", map[string]string{"route": "POST /v1/chat/completions", "code": "429"}, 1},
		{"agentd_http_requests_total", map[string]string{"route": "POST /api/v3/agents/create", "code": "200"}, 3},
		{"agentd_http_request_duration_seconds", map[string]string{"route": runRoute}, 3},
	} {
		got, ok := sample(fams, w.name, w.labels)
		if !ok || math.Abs(got-w.want) > 1e-9 {
			t.Errorf("%s%v = %v (present %v), want %v; series:\n%s", w.name, w.labels, got, ok, w.want, series(fams, w.name))
		}
	}
	// No run, session or agent id, and no raw path, is ever a label.
	for name, f := range fams {
		for _, m := range f.Metric {
			for _, l := range m.Label {
				if v := l.GetValue(); strings.Contains(v, "run-") && !strings.Contains(v, "run-agents") || strings.Contains(v, "agent-") || strings.Contains(v, "_bot") {
					t.Errorf("%s has label %s=%q", name, l.GetName(), v)
				}
			}
		}
	}
	// What is read at scrape time: the writer, the caches, the pools, the runtime.
	for _, name := range []string{"agentd_writer_batch_writes", "agentd_writer_commit_duration_seconds", "agentd_writer_queue_length",
		"agentd_cache_requests_total", "go_sql_open_connections", "go_goroutines", "process_resident_memory_bytes"} {
		if fams[name] == nil {
			t.Errorf("no %s", name)
		}
	}
	if n, _ := sample(fams, "agentd_writer_batch_writes", map[string]string{}); n < 1 {
		t.Errorf("writer commits = %v", n)
	}
	// Every run resolved its agent once; the key was read once and then served
	// from the cache.
	if h, _ := sample(fams, "agentd_cache_requests_total", map[string]string{"cache": "keys", "result": "hit"}); h < 5 {
		t.Errorf("key cache hits = %v; series:\n%s", h, series(fams, "agentd_cache_requests_total"))
	}
	if _, ok := sample(fams, "go_sql_open_connections", map[string]string{"db_name": "write"}); !ok {
		t.Errorf("pools: %s", series(fams, "go_sql_open_connections"))
	}
}

// TestMetricsGuard: on the API listener /metrics needs its own token (401
// without it, in the API's error shape with a request id; an API key is not
// it), and without a token configured it is not served there at all (404);
// the admin listener serves it with pprof, and per_org adds organizations.
func TestMetricsGuard(t *testing.T) {
	u := newUpstream(t, nil)
	s := startServer(t, metricsConfig(u, "metrics: {per_org: true}"), map[string]string{"AGENTD_METRICS_TOKEN": metricsToken})
	for _, tc := range []struct {
		name, auth string
		status     int
	}{
		{"no token", "", 401}, {"wrong token", "Bearer not-the-metrics-token", 401},
		{"an API key", "Bearer " + s.Key, 401}, {"the token", "Bearer " + metricsToken, 200},
	} {
		req, _ := http.NewRequest("GET", s.URL+"/metrics", nil)
		if tc.auth != "" {
			req.Header.Set("Authorization", tc.auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Errorf("%s: %d %s", tc.name, resp.StatusCode, b)
			continue
		}
		if tc.status == 401 {
			var e struct {
				Code      string
				RequestID string `json:"request_id"`
			}
			if json.Unmarshal(b, &e); e.Code != "unauthenticated" || e.RequestID == "" || e.RequestID != resp.Header.Get("X-Request-ID") {
				t.Errorf("%s: %s (X-Request-ID %q)", tc.name, b, resp.Header.Get("X-Request-ID"))
			}
		}
	}
	ctx := context.Background()
	c := s.client(s.Key)
	if _, err := c.GrantCredits(ctx, agentd.DefaultOrgName, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateAgent(ctx, client.AgentSpec{Name: client.Ptr("ok_bot"), Description: client.Ptr("t"), Model: client.Ptr("gpt-ok"), MaxToken: client.Ptr(100)}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Run(ctx, "ok_bot", "hello", ""); err != nil {
		t.Fatal(err)
	}
	fams := scrape(t, s.URL+"/metrics", metricsToken)
	if v, ok := sample(fams, "agentd_tokens_total", map[string]string{"model": "gpt-ok", "kind": "input", "org": agentd.DefaultOrgName}); !ok || v != 42 {
		t.Errorf("per-org tokens: %s", series(fams, "agentd_tokens_total"))
	}

	// No token: not on the API listener; on the admin listener, without one.
	s2 := startServer(t, "", map[string]string{"AGENTD_ADMIN_ADDR": "127.0.0.1:0"})
	resp, err := http.Get(s2.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 404 || !strings.Contains(string(b), "admin") {
		t.Errorf("no token: %d %s", resp.StatusCode, b)
	}
	admin := adminURL(t, s2.Banner)
	fams = scrape(t, admin+"/metrics", "")
	if fams["go_goroutines"] == nil || fams["agentd_writer_batch_writes"] == nil {
		t.Errorf("admin /metrics: %d families", len(fams))
	}

	// metrics.enabled: false: nothing measured, nothing served.
	s3 := startServer(t, "metrics: {enabled: false}", map[string]string{"AGENTD_ADMIN_ADDR": "127.0.0.1:0"})
	resp, err = http.Get(adminURL(t, s3.Banner) + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Errorf("metrics off, admin /metrics: %d", resp.StatusCode)
	}
}

// adminURL is the admin listener's base URL from a server's banner.
func adminURL(t *testing.T, banner string) string {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(banner))
	for sc.Scan() {
		if u, ok := strings.CutPrefix(sc.Text(), "agentd admin listening on "); ok {
			return strings.TrimSuffix(u, "/debug/pprof/")
		}
	}
	t.Fatalf("no admin listener in %q", banner)
	return ""
}

// logLines are the JSON log lines of a server (log.format: json).
func logLines(t *testing.T, log string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(log), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line is not JSON: %q", line)
		}
		out = append(out, m)
	}
	return out
}

// TestRequestIDs: X-Request-ID is the client's when well formed and a new one
// otherwise, on every response (JSON errors of both API shapes, 404s, streams,
// net/http's own errors); every error body carries it, a failed run's its
// run id too; every log line of a request carries its id, route, organization
// and key id; log.access writes one line per request; and no message content,
// key or provider secret reaches the log.
func TestRequestIDs(t *testing.T) {
	u := newUpstream(t, map[string][]int{"always-500": {500}, "always-429": {429}, "bad-request": {400}})
	var logs syncBuffer
	var handled tally
	cfg := metricsConfig(u, `  - {id: gpt-400, provider: compat, upstream_model: bad-request, context_window: 8192, max_output_tokens: 1024}
log: {format: json, access: true}
`)
	s := startServerIn(t, t.TempDir(), cfg, nil, handledHooks(&handled), &logs)
	ctx := context.Background()
	c := s.client(s.Key)
	for name, m := range map[string]string{"broken_bot": "gpt-500", "ok_bot": "gpt-ok", "refused_bot": "gpt-400"} {
		if _, err := c.CreateAgent(ctx, client.AgentSpec{Name: client.Ptr(name), Description: client.Ptr("t"), Model: client.Ptr(m), MaxToken: client.Ptr(100)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.GrantCredits(ctx, agentd.DefaultOrgName, 1); err != nil {
		t.Fatal(err)
	}
	const marker = "zebra-unicorn-private-words"
	long := strings.Repeat("a", 129)
	for _, tc := range []struct {
		name, path, body, sent string
		echoed                 bool
		status                 int
		openAI                 bool // the error is in OpenAI's envelope
		runID                  bool
	}{
		{"well formed, failed run", runPath("broken_bot"), `{"message":"` + marker + `"}`, "trace-1.a:b_c-d", true, 500, false, true},
		{"absent, ok run", runPath("ok_bot"), `{"message":"` + marker + `"}`, "", false, 200, false, false},
		{"malformed (space)", runPath("nope"), `{"message":"hi"}`, "bad id", false, 404, false, false},
		{"malformed (129 chars)", runPath("nope"), `{"message":"hi"}`, long, false, 404, false, false},
		{"128 chars", runPath("nope"), `{"message":"hi"}`, long[:128], true, 404, false, false},
		{"unknown route", "/api/v3/nothing", `{}`, "unknown-route-id", true, 404, false, false},
		{"OpenAI 429", "/v1/chat/completions", `{"model":"gpt-429","messages":[{"role":"user","content":"` + marker + `"}],"max_tokens":10}`, "openai-id-1", true, 429, true, true},
		{"OpenAI 404 under /v1", "/v1/nothing", `{}`, "", false, 404, true, false},
		{"upstream refuses, its key masked", runPath("refused_bot"), `{"message":"` + marker + `"}`, "refused-1", true, 400, false, true},
		{"a stream", runPath("ok_bot"), `{"message":"` + marker + `","stream":true}`, "stream-1", true, 200, false, false},
	} {
		h := map[string]string{}
		if tc.sent != "" {
			h["X-Request-ID"] = tc.sent
		}
		resp, body := post(t, s, tc.path, tc.body, h)
		id := resp.Header.Get("X-Request-ID")
		switch {
		case resp.StatusCode != tc.status:
			t.Errorf("%s: %d %s", tc.name, resp.StatusCode, body)
		case tc.echoed && id != tc.sent:
			t.Errorf("%s: X-Request-ID %q, sent %q", tc.name, id, tc.sent)
		case !tc.echoed && (!strings.HasPrefix(id, "req-") || id == tc.sent):
			t.Errorf("%s: X-Request-ID %q, want a new one (sent %q)", tc.name, id, tc.sent)
		}
		if tc.status < 400 {
			continue
		}
		var e map[string]any
		if err := json.Unmarshal(body, &e); err != nil {
			t.Fatalf("%s: %s", tc.name, body)
		}
		if tc.openAI {
			e, _ = e["error"].(map[string]any)
		}
		if e["request_id"] != id {
			t.Errorf("%s: body %s lacks request_id %q", tc.name, body, id)
		}
		if _, ok := e["run_id"].(string); ok != tc.runID {
			t.Errorf("%s: run_id in %s: %v, want %v", tc.name, body, ok, tc.runID)
		}
	}
	for path, n := range map[string]int{runPath("broken_bot"): 1, runPath("ok_bot"): 2, runPath("nope"): 3, "/api/v3/nothing": 1,
		"/v1/chat/completions": 1, "/v1/nothing": 1, runPath("refused_bot"): 1} {
		handled.wait(t, path, n)
	}

	// net/http's own answer (headers over the limit) gets an id as well.
	rs := rawResponses(t, s, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: "+strings.Repeat("a", 80<<10)+"\r\n\r\n")
	if len(rs) != 1 {
		t.Fatalf("431: %d responses", len(rs))
	}
	b, _ := io.ReadAll(rs[0].Body)
	if id := rs[0].Header.Get("X-Request-ID"); rs[0].StatusCode != 431 || !strings.HasPrefix(id, "req-") || !strings.Contains(string(b), `"request_id":"`+id+`"`) {
		t.Errorf("431: %d %q %s", rs[0].StatusCode, id, b)
	}

	lines := logLines(t, logs.String())
	byID := func(id, msg string) map[string]any {
		for _, l := range lines {
			if l["request_id"] == id && l["msg"] == msg {
				return l
			}
		}
		t.Errorf("no %q line for request %s in:\n%s", msg, id, logs.String())
		return map[string]any{}
	}
	o, err := c.Billing(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The run's own warning names the request, its route and its caller.
	l := byID("trace-1.a:b_c-d", "inference failed")
	if l["route"] != "POST /api/v3/agents/run-agents/{agent_name}/run" || l["org_id"] != o.OrgID || !strings.HasPrefix(fmt.Sprint(l["key_id"]), "key-") {
		t.Errorf("inference failed line: %v", l)
	}
	// One access line per request.
	a := byID("trace-1.a:b_c-d", "request")
	if a["method"] != "POST" || a["status"] != float64(500) || a["route"] != l["route"] || a["org_id"] != o.OrgID || a["key_id"] != l["key_id"] {
		t.Errorf("access line: %v", a)
	}
	if _, ok := a["bytes"].(float64); !ok || a["duration"] == nil {
		t.Errorf("access line lacks bytes or duration: %v", a)
	}
	if a := byID("unknown-route-id", "request"); a["status"] != float64(404) || a["path"] != "/api/v3/nothing" || a["route"] != nil {
		t.Errorf("unmatched access line: %v", a)
	}
	if a := byID("openai-id-1", "request"); a["status"] != float64(429) || a["route"] != "POST /v1/chat/completions" {
		t.Errorf("OpenAI access line: %v", a)
	}
	if a := byID("stream-1", "request"); a["status"] != float64(200) || a["bytes"].(float64) < 10 {
		t.Errorf("stream access line: %v", a)
	}
	// Nothing the callers said, no key, no provider secret.
	all := logs.String()
	for _, secret := range []string{marker, s.Key, "sk-proj-abcdefghij"} {
		if strings.Contains(all, secret) {
			t.Errorf("the log holds %q:\n%s", secret, all)
		}
	}

	// log.contents (with level debug) lets the contents in, for debugging.
	var dlogs syncBuffer
	d := startServerIn(t, t.TempDir(), "log: {level: debug, contents: true}", nil, nil, &dlogs)
	dc := d.client(d.Key)
	if _, err := dc.CreateAgent(ctx, client.AgentSpec{Name: client.Ptr("bot"), Description: client.Ptr("t"), Model: client.Ptr("offline")}); err != nil {
		t.Fatal(err)
	}
	if _, err := dc.Run(ctx, "bot", marker, ""); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(dlogs.String(), marker) || !strings.Contains(dlogs.String(), "run contents") {
		t.Errorf("log.contents: the message is not logged:\n%s", dlogs.String())
	}
}

// TestLogConfig: the log's format and level from the environment.
func TestLogConfig(t *testing.T) {
	var logs syncBuffer
	s := startServerIn(t, t.TempDir(), "", map[string]string{"AGENTD_LOG_FORMAT": "json", "AGENTD_LOG_LEVEL": "warn"}, nil, &logs)
	if err := s.stop(); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(logs.String(), "agentd serving") { // info: below the level
		t.Errorf("level warn logged info lines:\n%s", logs.String())
	}
	var logs2 syncBuffer
	s2 := startServerIn(t, t.TempDir(), "", map[string]string{"AGENTD_LOG_FORMAT": "json"}, nil, &logs2)
	if err := s2.stop(); err != nil {
		t.Fatal(err)
	}
	lines := logLines(t, logs2.String())
	if len(lines) == 0 || lines[0]["msg"] == nil {
		t.Errorf("JSON log: %s", logs2.String())
	}
	if err := run(context.Background(), []string{"serve", "--addr", "127.0.0.1:0", "--db", "sqlite:" + filepath.Join(t.TempDir(), "x.db")},
		func(k string) string {
			return map[string]string{"AGENTD_LOG_LEVEL": "loud"}[k]
		}, strings.NewReader(""), io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "log.level") {
		t.Errorf("bad level: %v", err)
	}
}
