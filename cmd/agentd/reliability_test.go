package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentd/agentd/client"
)

// faultyUpstream is an OpenAI-compatible upstream that fails in one way, chosen
// by the upstream model name of the request. The faults that hang ("timeout",
// "endless") wait for agentd to give up on them; one that is still waiting after
// eventGuard gives up itself and is counted in ignored.
type faultyUpstream struct {
	*httptest.Server
	calls   atomic.Int64
	ignored atomic.Int64
}

func newFaultyUpstream(t *testing.T) *faultyUpstream {
	u := &faultyUpstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(u.serve))
	t.Cleanup(u.Close)
	return u
}

func (u *faultyUpstream) serve(w http.ResponseWriter, r *http.Request) {
	u.calls.Add(1)
	var body struct {
		Model  string `json:"model"`
		Stream bool   `json:"stream"`
	}
	json.NewDecoder(r.Body).Decode(&body)
	hijackClose := func() {
		if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
			conn.Close()
		}
	}
	sse := func(lines ...string) {
		w.Header().Set("Content-Type", "text/event-stream")
		for _, l := range lines {
			fmt.Fprint(w, l)
			w.(http.Flusher).Flush()
		}
	}
	chunk := func(text string) string {
		return `data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"` + text + `"},"finish_reason":null}]}` + "\n\n"
	}
	guard := time.NewTimer(eventGuard)
	defer guard.Stop()
	switch body.Model {
	case "timeout":
		select {
		case <-r.Context().Done():
		case <-guard.C:
			u.ignored.Add(1)
		}
	case "reset":
		hijackClose()
	case "500":
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(500)
		fmt.Fprint(w, `{"error":{"message":"The server had an error while processing your request. Sorry about that!","type":"server_error","param":null,"code":null}}`)
	case "529":
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(529)
		fmt.Fprint(w, `{"error":{"message":"The engine is currently overloaded, please try again later","type":"server_error","param":null,"code":null}}`)
	case "429":
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Retry-After", "3600")
		w.WriteHeader(429)
		fmt.Fprint(w, `{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}`)
	case "malformed":
		w.Header().Set("Content-Type", "application/json")
		if body.Stream {
			sse(chunk("a"), "data: {not json\n\n")
			return
		}
		fmt.Fprint(w, `{"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"trunc`)
	case "cut":
		sse(chunk("one "), chunk("two "))
		hijackClose()
	case "endless":
		// A keep-alive every 10 ms, for as long as agentd listens. Nothing depends
		// on their pace: only agentd's run deadline ends the stream.
		sse(chunk("never "))
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-r.Context().Done():
				return
			case <-guard.C:
				u.ignored.Add(1)
				return
			case <-tick.C:
				sse(": keep-alive\n\n")
			}
		}
	}
}

// TestUpstreamFaults: every kind of upstream failure ends in its documented
// status — 500 inference_failed before the first byte, an in-band error event
// after it — with nothing charged, nothing held, no session lease kept, and no
// goroutine left behind.
func TestUpstreamFaults(t *testing.T) {
	u := newFaultyUpstream(t)
	faults := []string{"timeout", "reset", "500", "529", "429", "malformed", "cut", "endless"}
	var models strings.Builder
	for _, f := range faults {
		fmt.Fprintf(&models, "  - {id: %s, provider: up, upstream_model: %s, context_window: 8000, max_output_tokens: 100, price: {input: 1000, output: 1000}}\n", f, f)
	}
	s := startServer(t, fmt.Sprintf(`
providers:
  - {name: up, kind: openai, base_url: %s/v1, max_retries: 1, timeout: 300ms}
models:
%slimits:
  run_timeout: 2s
  session_wait: 5s
  stream_keepalive: 50ms
retry: {initial_backoff: 5ms, max_backoff: 10ms}
`, u.URL, models.String()), nil)
	ctx := context.Background()
	op := s.client(s.Key)
	if _, err := op.GrantCredits(ctx, "default", 10); err != nil {
		t.Fatal(err)
	}
	for _, f := range faults {
		if _, err := op.CreateAgent(ctx, client.AgentSpec{Name: client.Ptr(f), Description: client.Ptr("d"), Model: client.Ptr(f), MaxToken: client.Ptr(50)}); err != nil {
			t.Fatal(err)
		}
	}
	http.DefaultClient.CloseIdleConnections()
	baseline := agentdGoroutines()
	before, _ := op.Billing(ctx)

	for _, f := range faults {
		for _, stream := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s stream=%v", f, stream), func(t *testing.T) {
				if !stream {
					_, err := op.Run(ctx, f, "hello", "s-"+f)
					var e *client.Error
					if !errorsAs(err, &e) || e.Status != 500 || e.Code != "inference_failed" {
						t.Errorf("err = %v, want 500 inference_failed", err)
					}
				} else {
					resp := postStream(t, s, f, "hello", "s-"+f)
					defer resp.Body.Close()
					if resp.StatusCode != 200 {
						// Failed before the first byte: a plain error response.
						var body map[string]any
						json.NewDecoder(resp.Body).Decode(&body)
						if resp.StatusCode != 500 || body["code"] != "inference_failed" {
							t.Errorf("status %d %v", resp.StatusCode, body)
						}
					} else {
						events := readEvents(resp, nil)
						var last sseEvent
						for _, ev := range events {
							if !ev.Comment && ev.Data != "[DONE]" {
								last = ev
							}
						}
						if last.Name != "error" || !strings.Contains(last.Data, "inference_failed") || events[len(events)-1].Data != "[DONE]" {
							t.Errorf("stream ended with %+v", events)
						}
					}
				}
				// A hanging upstream was given up on by agentd (its provider timeout or
				// the run deadline), not the other way round.
				if n := u.ignored.Load(); n > 0 {
					t.Errorf("%d upstream calls were never cancelled; the run deadline is 2s", n)
				}
				b, _ := op.Billing(ctx)
				if b.Held != 0 || b.Balance != before.Balance {
					t.Errorf("billing %+v, want balance %v and nothing held", b, before.Balance)
				}
			})
		}
	}
	// Every session lease was released, and no turn was stored: deleting each
	// session takes its lease (a held one would answer 409 session_busy after
	// session_wait) and finds nothing to delete.
	for _, f := range faults {
		if _, err := op.DeleteSession(ctx, f, "s-"+f); statusOf(err) != 404 {
			t.Errorf("delete session s-%s: %v, want 404 (free, and empty)", f, err)
		}
	}
	// Stopping the server waits for every handler: what agentd still runs then
	// was left behind.
	http.DefaultClient.CloseIdleConnections()
	if err := s.stop(); err != nil {
		t.Fatal(err)
	}
	checkNoGoroutinesLeft(t, baseline)
	consistent(t, s)
}

// TestSlowClientsAndBigBodies: connections that dribble their headers and bodies
// far over the limit do not stop the server answering others.
func TestSlowClientsAndBigBodies(t *testing.T) {
	// The slow clients stay connected for as long as the test runs (no header or
	// read timeout), so every run below is served while all of them are open.
	s := startServerWith(t, "", map[string]string{"AGENTD_MAX_BODY_BYTES": "4096"}, &serveHooks{httpServer: func(hs *http.Server) {
		hs.ReadHeaderTimeout, hs.ReadTimeout = 0, 0
	}})
	ctx := context.Background()
	op := s.client(s.Key)
	if _, err := op.CreateAgent(ctx, client.AgentSpec{Name: client.Ptr("bot"), Description: client.Ptr("d"), Model: client.Ptr("offline"),
		Demonstrations: []client.Demonstration{{Input: "ping", Output: "pong"}}}); err != nil {
		t.Fatal(err)
	}
	addr := strings.TrimPrefix(s.URL, "http://")
	// 100 slow clients: each sends half a request line and waits.
	var conns []interface{ Close() error }
	for range 100 {
		c, err := dialTCP(addr)
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte("POST /api/v3/agents/run-agents/bot/run HTTP/1.1\r\nHost: x\r\n"))
		conns = append(conns, c)
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	// A body far over the limit is refused without being read to the end: the
	// client is stopped well before it has sent it all.
	const size = 50 << 20
	body := strings.NewReader(`{"message":"` + strings.Repeat("x", size) + `"}`)
	big := &countingBody{Reader: body, closed: make(chan struct{})}
	req, _ := http.NewRequest("POST", s.URL+"/api/v3/agents/run-agents/bot/run", big)
	req.ContentLength = body.Size()
	req.Header.Set("Authorization", "Bearer "+s.Key)
	resp, err := http.DefaultClient.Do(req)
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode != 413 {
			t.Errorf("50 MiB body: status %d, want 413", resp.StatusCode)
		}
	} // a reset after the 413 is also acceptable: the server stopped reading
	await(t, big.closed, "the client to finish with the request body") // the transport closes it when done
	if n := big.read.Load(); n >= size {
		t.Errorf("the client sent %d bytes of a %d-byte body: the server read it to the end", n, size)
	}
	// Meanwhile ordinary requests are served: they complete while the slow
	// clients hold their connections (a server stuck behind them never would).
	for range 20 {
		rctx, cancel := context.WithTimeout(ctx, eventGuard)
		_, err := op.Run(rctx, "bot", "ping", "")
		cancel()
		if err != nil {
			t.Fatalf("a run beside slow clients: %v", err)
		}
	}
}

// countingBody is a request body that counts what the client read of it and
// tells when the client closed it.
type countingBody struct {
	io.Reader
	read      atomic.Int64
	closed    chan struct{}
	closeOnce sync.Once
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.Reader.Read(p)
	b.read.Add(int64(n))
	return n, err
}

func (b *countingBody) Close() error {
	b.closeOnce.Do(func() { close(b.closed) })
	return nil
}

func dialTCP(addr string) (interface {
	Write([]byte) (int, error)
	Close() error
}, error) {
	return net.DialTimeout("tcp", addr, eventGuard)
}

// TestStorageFull: when the database cannot grow (here its size cap, as on a full
// disk), a run gets 503 unavailable, is not charged, keeps no hold and leaves no
// part of its record; the server keeps serving, and the database stays consistent.
func TestStorageFull(t *testing.T) {
	s := startServer(t, "sqlite: {max_mb: 1}\nmodels:\n  - {id: metered, provider: offline, price: {input: 1, output: 1}}\n", nil)
	ctx := context.Background()
	op := s.client(s.Key)
	if _, err := op.CreateAgent(ctx, client.AgentSpec{Name: client.Ptr("bot"), Description: client.Ptr("d"), Model: client.Ptr("metered"),
		Demonstrations: []client.Demonstration{{Input: "ping", Output: "pong"}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := op.GrantCredits(ctx, "default", 100); err != nil {
		t.Fatal(err)
	}
	big := strings.Repeat("all work and no play ", 1500) // ~31 KB per stored turn
	var full *client.Error
	ok := 0
	for i := 0; i < 200 && full == nil; i++ {
		before, _ := op.Billing(ctx)
		_, err := op.Run(ctx, "bot", big, "long")
		if err == nil {
			ok++
			continue
		}
		if !errorsAs(err, &full) || full.Status != 503 || full.Code != "unavailable" {
			t.Fatalf("run %d: %v, want 503 unavailable", i, err)
		}
		after, _ := op.Billing(ctx)
		if after.Balance != before.Balance || after.Held != 0 {
			t.Errorf("a run that could not be stored changed billing: %+v → %+v", before, after)
		}
	}
	if full == nil || ok == 0 {
		t.Fatalf("%d runs stored and none refused: the cap did not bite", ok)
	}
	// Reads still work, and the history holds exactly the stored turns.
	if _, err := op.Agent(ctx, "bot"); err != nil {
		t.Errorf("read after the storage filled: %v", err)
	}
	rows, _ := ledger(t, s)
	okRows := 0
	for _, r := range rows {
		if r.Outcome == "ok" {
			okRows++
		}
	}
	if okRows != ok+0 {
		t.Errorf("%d successful ledger rows for %d successful runs", okRows, ok)
	}
	consistent(t, s)
}

// TestAdminListener: --admin-addr serves pprof apart from the API, which does not.
func TestAdminListener(t *testing.T) {
	dir := t.TempDir()
	pr, pw := io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--db", "sqlite:" + dir + "/a.db"},
			func(k string) string { return map[string]string{"AGENTD_BOOTSTRAP_KEY": testKey}[k] }, nil, pw, io.Discard)
		pw.Close()
	}()
	var api, admin string
	sc := bufio.NewScanner(pr)
	for (api == "" || admin == "") && sc.Scan() {
		line := sc.Text()
		if u, ok := strings.CutPrefix(line, "agentd admin listening on "); ok {
			admin = u
		} else if u, ok := strings.CutPrefix(line, "agentd listening on "); ok {
			api = u
		}
	}
	go io.Copy(io.Discard, pr)
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	resp, err := http.Get(admin + "goroutine?debug=1")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("admin pprof: %v %v", resp, err)
	}
	resp.Body.Close()
	resp, err = http.Get(api + "/debug/pprof/")
	if err != nil || resp.StatusCode != 404 {
		t.Errorf("the API serves pprof: %v %v", resp, err)
	}
	resp.Body.Close()
}

// TestReadyz: /readyz answers 200 while the server takes traffic, and needs no key.
func TestReadyz(t *testing.T) {
	s := startServer(t, "", nil)
	resp, err := http.Get(s.URL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("/readyz: %d", resp.StatusCode)
	}
}
