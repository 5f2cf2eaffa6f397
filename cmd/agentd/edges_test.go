package main

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/client"
)

// rawResponses writes req as it is on a new connection to the server (a Go
// client would refuse to send most of these) and reads every response until the
// server closes the connection.
func rawResponses(t *testing.T, s *testServer, req string) []*http.Response {
	t.Helper()
	c, err := net.DialTimeout("tcp", strings.TrimPrefix(s.URL, "http://"), eventGuard)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Only a failure guard: in every case the server closes the connection.
	c.SetDeadline(time.Now().Add(eventGuard))
	go c.Write([]byte(req)) // the server stops reading an oversized request
	br := bufio.NewReader(c)
	var out []*http.Response
	for {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return out
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body = io.NopCloser(strings.NewReader(string(b)))
		out = append(out, resp)
		if resp.Close {
			return out
		}
	}
}

// apiError checks that resp is an error in the API's shape: the status, JSON with
// a correct length, the code, and a detail containing detail.
func apiError(t *testing.T, resp *http.Response, status int, code, detail string) {
	t.Helper()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != status {
		t.Errorf("status %d, want %d: %s", resp.StatusCode, status, b)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q: %q", ct, b)
	}
	if cl := resp.Header.Get("Content-Length"); cl != "" && cl != strconv.Itoa(len(b)) {
		t.Errorf("Content-Length %s for %d bytes", cl, len(b))
	}
	var e struct {
		Detail string `json:"detail"`
		Code   string `json:"code"`
	}
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatalf("body %q is not JSON: %v", b, err)
	}
	if e.Code != code || !strings.Contains(e.Detail, detail) {
		t.Errorf("body %s: want code %q, detail with %q", b, code, detail)
	}
}

// TestMalformedRequests: what net/http refuses before any handler runs (headers
// over the limit, malformed request lines and headers, transfer encodings and
// protocol versions it does not support) is answered in the API's error shape
// with net/http's status, and the connection is closed.
func TestMalformedRequests(t *testing.T) {
	s := startServer(t, "", nil)
	run := "POST /api/v3/agents/run-agents/bot/run HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
	// serve.go's MaxHeaderBytes is 64 KiB; net/http allows 4096 bytes beyond it.
	big := strings.Repeat("a", 64<<10+4096+1024)
	for _, tc := range []struct {
		name, req string
		status    int
		code      string
		detail    string
	}{
		{"oversized header", run + "X-Big: " + big + "\r\n\r\n{}", 431, "header_too_large", "too large"},
		{"oversized header under /v1", "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Big: " + big + "\r\n\r\n", 431, "header_too_large", "too large"},
		{"control character in a header value", run + "X-Session-ID: a\x01b\r\n\r\n{}", 400, "bad_request", "malformed request"},
		{"control character under /v1", "GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \x01\r\n\r\n", 400, "bad_request", "malformed request"},
		{"space in a header name", run + "X Session: a\r\n\r\n{}", 400, "bad_request", "invalid header name"},
		{"bad method", "P@ST /api/v3/agents HTTP/1.1\r\nHost: x\r\n\r\n", 400, "bad_request", "malformed request"},
		{"space in the path", "GET /api/v3/agents/a b HTTP/1.1\r\nHost: x\r\n\r\n", 400, "bad_request", "malformed request"},
		{"missing Host", "GET /healthz HTTP/1.1\r\n\r\n", 400, "bad_request", "missing required Host header"},
		{"malformed Host", "GET /healthz HTTP/1.1\r\nHost: a/b c\r\n\r\n", 400, "bad_request", "malformed Host header"},
		{"unsupported transfer encoding", run[:strings.Index(run, "Content-Length")] + "Transfer-Encoding: gzip\r\n\r\n{}", 501, "not_implemented", "transfer encoding"},
		{"unsupported protocol version", "GET /healthz HTTP/3.0\r\nHost: x\r\n\r\n", 505, "http_version_not_supported", "protocol version"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rs := rawResponses(t, s, tc.req)
			if len(rs) != 1 {
				t.Fatalf("%d responses, want 1", len(rs))
			}
			if !rs[0].Close {
				t.Errorf("connection not closed")
			}
			apiError(t, rs[0], tc.status, tc.code, tc.detail)
		})
	}
	// A good request, then a bad one on the same connection: the first answer is
	// the server's own, the second is rewritten.
	rs := rawResponses(t, s, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\nX-A: \x7f\r\n\r\n")
	if len(rs) != 2 {
		t.Fatalf("%d responses, want 2", len(rs))
	}
	if b, _ := io.ReadAll(rs[0].Body); rs[0].StatusCode != 200 || !strings.Contains(string(b), `"ok"`) || rs[0].Header.Get("Date") == "" {
		t.Errorf("healthz on the same connection: %d %s", rs[0].StatusCode, b)
	}
	apiError(t, rs[1], 400, "bad_request", "malformed request")
	// The server still serves.
	resp, err := http.Get(s.URL + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("healthz after: %v %v", resp, err)
	}
	resp.Body.Close()
}

// noRedirects is a client that returns redirects instead of following them.
var noRedirects = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// TestUncleanPaths: a path with an empty, "." or ".." segment is a 404 saying so
// (in OpenAI's envelope under /v1), never a redirect; trailing slashes and
// percent-encoded segments work as before.
func TestUncleanPaths(t *testing.T) {
	s := startServer(t, "", nil)
	ctx := t.Context()
	if _, err := s.client(s.Key).CreateAgent(ctx, supportBot()); err != nil {
		t.Fatal(err)
	}
	do := func(method, path, body string) (*http.Response, string) {
		t.Helper()
		req, err := http.NewRequest(method, s.URL+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+s.Key)
		resp, err := noRedirects.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.Header.Get("Location") != "" {
			t.Errorf("%s %s redirects to %s", method, path, resp.Header.Get("Location"))
		}
		return resp, string(b)
	}
	run := `{"message":"how do i reset my password"}`
	for _, tc := range []struct{ method, path, body string }{
		{"GET", "/api/v3//agents", ""},
		{"GET", "/api/v3/agents/../keys", ""},
		{"GET", "/api/v3/./agents", ""},
		{"GET", "//healthz", ""},
		{"GET", "/api/v3/agents/%2e%2e/keys", ""},
		{"POST", "/api/v3/agents/run-agents//support_bot/run", run},
		{"POST", "/api/v3/agents/run-agents/x/../support_bot/run/", run},
	} {
		resp, b := do(tc.method, tc.path, tc.body)
		apiError(t, &http.Response{StatusCode: resp.StatusCode, Header: resp.Header, Body: io.NopCloser(strings.NewReader(b))}, 404, "not_found", "not canonical")
	}
	for _, path := range []string{"/v1//chat/completions", "/v1/./chat/completions", "/v1/x/../chat/completions"} {
		resp, b := do("POST", path, `{"model":"agent/support_bot","messages":[{"role":"user","content":"hi"}]}`)
		var e struct {
			Error struct{ Message, Type, Code string }
		}
		if err := json.Unmarshal([]byte(b), &e); err != nil || resp.StatusCode != 404 || e.Error.Code != "not_found" ||
			e.Error.Type != "not_found_error" || !strings.Contains(e.Error.Message, "not canonical") {
			t.Errorf("POST %s: %d %s", path, resp.StatusCode, b)
		}
	}
	// Trailing slashes and escapes work as before: %5F is "_", and %2F is a slash
	// inside the agent-name segment (no such agent), not a path separator.
	for _, path := range []string{"/api/v3/agents/run-agents/support_bot/run/", "/api/v3/agents/run-agents/support%5Fbot/run", "/api/v3/agents/run-agents/support%5Fbot/run//"} {
		if resp, b := do("POST", path, run); resp.StatusCode != 200 || !strings.Contains(b, "Reset password") {
			t.Errorf("POST %s: %d %s", path, resp.StatusCode, b)
		}
	}
	for _, path := range []string{"/api/v3/agents/run-agents/support%2Fbot/run", "/api/v3/agents/run-agents/support%2Fbot/run/"} {
		resp, b := do("POST", path, run)
		if resp.StatusCode != 404 || strings.Contains(b, "not canonical") || strings.Contains(b, "no route") {
			t.Errorf("POST %s: %d %s", path, resp.StatusCode, b)
		}
	}
}

// TestInvalidUTF8: a body that is not valid UTF-8, or has an unpaired surrogate
// escape in a string, is refused (422 in FastAPI's shape; 400 in OpenAI's
// envelope on its routes) instead of being decoded with U+FFFD in its place,
// and nothing runs.
func TestInvalidUTF8(t *testing.T) {
	s := startServer(t, "", nil)
	ctx := t.Context()
	if _, err := s.client(s.Key).CreateAgent(ctx, supportBot()); err != nil {
		t.Fatal(err)
	}
	post := func(path, body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("POST", s.URL+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+s.Key)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	run := "/api/v3/agents/run-agents/support_bot/run"
	for name, body := range map[string]string{
		"invalid byte":        "{\"message\":\"reset my password \xff\"}",
		"overlong encoding":   "{\"message\":\"\xc0\xaf\"}",
		"encoded surrogate":   "{\"message\":\"\xed\xa0\x80\"}",
		"lone high surrogate": `{"message":"reset my password \ud800"}`,
		"lone low surrogate":  `{"message":"\udc00 reset"}`,
		"surrogate in a key":  `{"message":"hi","\ud800":1}`,
		"streamed, lone high": `{"message":"\ud83d","stream":true}`,
	} {
		code, b := post(run, body)
		var e struct {
			Detail []struct {
				Loc  []any  `json:"loc"`
				Msg  string `json:"msg"`
				Type string `json:"type"`
			} `json:"detail"`
			Code string `json:"code"`
		}
		if err := json.Unmarshal([]byte(b), &e); err != nil || code != 422 || e.Code != "invalid" || len(e.Detail) != 1 ||
			len(e.Detail[0].Loc) == 0 || e.Detail[0].Loc[0] != "body" || e.Detail[0].Type != "json_invalid" {
			t.Errorf("%s: %d %s", name, code, b)
		}
	}
	// OpenAI's routes: their 400, the same cause.
	code, b := post("/v1/chat/completions", `{"model":"agent/support_bot","messages":[{"role":"user","content":"hi \udfff"}]}`)
	if code != 400 || !strings.Contains(b, `"error":{`) || !strings.Contains(b, "surrogate") || !strings.Contains(b, `"type":"invalid_request_error"`) {
		t.Errorf("chat with a lone surrogate: %d %s", code, b)
	}
	checkLedger(t, s, "default", 0, 0)
	// Valid pairs and an escaped backslash before "ud800" are text, and run.
	for _, body := range []string{`{"message":"how do i reset my password \ud83d\ude42"}`, `{"message":"how do i reset my password \\ud800"}`} {
		if code, b := post(run, body); code != 200 || !strings.Contains(b, "Reset password") {
			t.Errorf("%s: %d %s", body, code, b)
		}
	}
	checkLedger(t, s, "default", 2, 0)
}

// TestUsageCSVFormulaInjection: text a caller controls (a key's owner, a session
// id) that a spreadsheet would run as a formula is exported with a leading
// quote; the numbers stay numbers, and the JSON records stay as they are.
func TestUsageCSVFormulaInjection(t *testing.T) {
	s := startServer(t, "models:\n  - {id: metered, provider: offline, price: {input: 1000, output: 1000}}\n", nil)
	ctx := t.Context()
	op := s.client(s.Key)
	if _, err := op.GrantCredits(ctx, "default", 10); err != nil {
		t.Fatal(err)
	}
	bot := supportBot()
	bot.Model = client.Ptr("metered")
	if _, err := op.CreateAgent(ctx, bot); err != nil {
		t.Fatal(err)
	}
	const owner = `=HYPERLINK("http://x")`
	k, err := op.CreateKey(ctx, client.KeySpec{Name: "formula", Owner: owner, Scopes: []string{"run"}})
	if err != nil {
		t.Fatal(err)
	}
	r1, err := s.client(k.Secret).Run(ctx, "support_bot", "how do i reset my password", "")
	if err != nil {
		t.Fatal(err)
	}
	r2, err := op.Run(ctx, "support_bot", "what are your opening hours", "-cmd")
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := op.UsageCSV(ctx, client.UsageFilter{}, &buf); err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(&buf).ReadAll()
	if err != nil || len(rows) != 3 {
		t.Fatalf("CSV: %d rows, %v", len(rows), err)
	}
	col := map[string]int{}
	for i, name := range rows[0] {
		col[name] = i
	}
	page, err := op.UsageRecords(ctx, client.UsageFilter{})
	if err != nil {
		t.Fatal(err)
	}
	records := map[string]client.UsageRecord{}
	for _, rec := range page.Data {
		records[rec.RunID] = rec
	}
	byRun := map[string][]string{}
	for _, row := range rows[1:] {
		byRun[row[col["run_id"]]] = row
	}
	for _, tc := range []struct {
		res            *client.RunResult
		owner, session string
	}{
		{r1, "'" + owner, ""},
		{r2, "", "'-cmd"},
	} {
		row, rec := byRun[tc.res.RunID], records[tc.res.RunID]
		if row == nil || rec.RunID == "" {
			t.Fatalf("run %s: CSV row %v, record %+v", tc.res.RunID, row, rec)
		}
		if tc.owner != "" && row[col["owner"]] != tc.owner {
			t.Errorf("owner cell %q, want %q", row[col["owner"]], tc.owner)
		}
		if tc.session != "" && row[col["session_id"]] != tc.session {
			t.Errorf("session cell %q, want %q", row[col["session_id"]], tc.session)
		}
		for name, want := range map[string]string{
			"input_tokens": strconv.Itoa(tc.res.Usage.InputTokens), "output_tokens": strconv.Itoa(tc.res.Usage.OutputTokens),
			"total_tokens": strconv.Itoa(tc.res.Usage.TotalTokens), "agent_version": "1",
			"cost": fmt.Sprintf("%.6f", rec.Cost), "latency_ms": strconv.FormatInt(rec.LatencyMS, 10),
			"key_id": rec.KeyID, "agent_name": "support_bot", "model": "metered", "outcome": "ok",
		} {
			if got := row[col[name]]; got != want {
				t.Errorf("%s cell %q, want %q", name, got, want)
			}
		}
		if rec.Cost <= 0 {
			t.Errorf("record cost %v: the test needs a priced run", rec.Cost)
		}
	}
	// JSON is not a spreadsheet: the values are as they were given.
	if got := records[r1.RunID].Owner; got != owner {
		t.Errorf("JSON owner %q", got)
	}
	if got := records[r2.RunID].SessionID; got == nil || *got != "-cmd" {
		t.Errorf("JSON session id %v", got)
	}
}

// TestStreamedIdempotentReplay: a streamed run repeated with its Idempotency-Key
// is a replay, marked Idempotent-Replayed: true as the unstreamed one is, with
// the same run id, the stored reply, and no new ledger row or charge.
func TestStreamedIdempotentReplay(t *testing.T) {
	s := startServer(t, "models:\n  - {id: metered, provider: offline, price: {input: 1000, output: 1000}}\n", nil)
	ctx := t.Context()
	op := s.client(s.Key)
	if _, err := op.GrantCredits(ctx, "default", 10); err != nil {
		t.Fatal(err)
	}
	bot := supportBot()
	bot.Model = client.Ptr("metered")
	if _, err := op.CreateAgent(ctx, bot); err != nil {
		t.Fatal(err)
	}
	stream := func() (http.Header, string, map[string]any) {
		t.Helper()
		req, _ := http.NewRequest("POST", s.URL+"/api/v3/agents/run-agents/support_bot/run",
			strings.NewReader(`{"message":"how do i reset my password","stream":true}`))
		req.Header.Set("Authorization", "Bearer "+s.Key)
		req.Header.Set("Idempotency-Key", "stream-order-1")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
			t.Fatalf("stream: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		var text strings.Builder
		var done map[string]any
		event := ""
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			line := sc.Text()
			if name, ok := strings.CutPrefix(line, "event: "); ok {
				event = name
				continue
			}
			data, ok := strings.CutPrefix(line, "data: ")
			if !ok {
				continue
			}
			switch event {
			case "delta":
				var d struct{ Text string }
				json.Unmarshal([]byte(data), &d)
				text.WriteString(d.Text)
			case "done":
				if err := json.Unmarshal([]byte(data), &done); err != nil {
					t.Fatalf("done event %q: %v", data, err)
				}
			}
			event = ""
		}
		if done == nil {
			t.Fatal("no done event")
		}
		return resp.Header, text.String(), done
	}
	h1, text1, done1 := stream()
	before, err := op.Billing(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rows, _ := ledger(t, s)
	h2, text2, done2 := stream()
	if h1.Get("Idempotent-Replayed") != "" || h2.Get("Idempotent-Replayed") != "true" {
		t.Errorf("Idempotent-Replayed: %q, then %q", h1.Get("Idempotent-Replayed"), h2.Get("Idempotent-Replayed"))
	}
	if done1["run_id"] == nil || done2["run_id"] != done1["run_id"] || text2 != text1 || done2["response"] != done1["response"] {
		t.Errorf("replay: run %v %q, original: run %v %q", done2["run_id"], text2, done1["run_id"], text1)
	}
	after, err := op.Billing(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if after.Balance != before.Balance || after.Held != 0 {
		t.Errorf("the replay charged: balance %v then %v, held %v", before.Balance, after.Balance, after.Held)
	}
	if again, _ := ledger(t, s); len(again) != len(rows) || len(rows) != 1 {
		t.Errorf("ledger rows: %d after the run, %d after the replay", len(rows), len(again))
	}
}
