package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/client"
)

// slowStream is an OpenAI-compatible upstream that streams chat.completion.chunk
// events: Pieces, one event each; with CutAfter > 0 it drops the connection after
// that many pieces. With Gate set it holds the stream before piece GateAt (0:
// before the first) until Gate is closed, so that a test decides when the stream
// goes on instead of racing a timer. It counts, in events, requests whose client
// (agentd) went away before the end ("abandoned") and streams sent to the end
// ("finished").
type slowStream struct {
	*httptest.Server
	Pieces   []string
	CutAfter int
	GateAt   int
	Gate     chan struct{}
	gateOnce sync.Once
	events   tally
}

func newSlowStream(t *testing.T, pieces []string, cutAfter int) *slowStream {
	u := &slowStream{Pieces: pieces, CutAfter: cutAfter}
	u.Server = httptest.NewServer(http.HandlerFunc(u.serve))
	t.Cleanup(u.Close)
	return u
}

// gated makes u hold its streams before piece at until open is called (or the
// test ends).
func (u *slowStream) gated(t *testing.T, at int) *slowStream {
	u.GateAt, u.Gate = at, make(chan struct{})
	t.Cleanup(u.open) // before the server stops: it waits for streams in flight
	return u
}

// open lets held streams go on.
func (u *slowStream) open() { u.gateOnce.Do(func() { close(u.Gate) }) }

func (u *slowStream) serve(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Stream bool `json:"stream"`
	}
	json.NewDecoder(r.Body).Decode(&body)
	if !body.Stream { // the same reply, whole
		text, _ := json.Marshal(strings.Join(u.Pieces, ""))
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"slow","choices":[{"index":0,"message":{"role":"assistant","content":%s},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":%d,"total_tokens":%d}}`,
			text, len(u.Pieces), 12+len(u.Pieces))
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(200)
	chunk := func(delta, finish string, usage bool) {
		fin := "null"
		if finish != "" {
			fin = `"` + finish + `"`
		}
		d, _ := json.Marshal(delta)
		if usage {
			fmt.Fprintf(w, "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"slow\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":%d,\"total_tokens\":%d}}\n\n", len(u.Pieces), 12+len(u.Pieces))
		} else {
			fmt.Fprintf(w, "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"slow\",\"choices\":[{\"index\":0,\"delta\":{\"content\":%s},\"finish_reason\":%s}]}\n\n", d, fin)
		}
		w.(http.Flusher).Flush()
	}
	for i, p := range u.Pieces {
		if u.CutAfter > 0 && i == u.CutAfter {
			conn, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				conn.Close()
			}
			return
		}
		if u.Gate != nil && i == u.GateAt {
			select {
			case <-u.Gate:
			case <-r.Context().Done():
				u.events.add("abandoned")
				return
			}
		}
		chunk(p, "", false)
	}
	chunk("", "stop", false)
	chunk("", "", true)
	fmt.Fprint(w, "data: [DONE]\n\n")
	u.events.add("finished")
}

// sseEvent is one event of a stream as a client reads it.
type sseEvent struct {
	Name, Data string
	Comment    bool
}

// readEvents reads a response's events until [DONE], EOF, or stop returns true;
// stop, when set, sees every event, keep-alive comments included.
func readEvents(resp *http.Response, stop func(sseEvent) bool) []sseEvent {
	var out []sseEvent
	sc := bufio.NewScanner(resp.Body)
	var ev sseEvent
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if ev.Data != "" || ev.Name != "" {
				out = append(out, ev)
				if ev.Data == "[DONE]" || (stop != nil && stop(ev)) {
					return out
				}
			}
			ev = sseEvent{}
		case strings.HasPrefix(line, ":"):
			out = append(out, sseEvent{Comment: true})
			if stop != nil && stop(out[len(out)-1]) {
				return out
			}
		case strings.HasPrefix(line, "event: "):
			ev.Name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			ev.Data = strings.TrimPrefix(line, "data: ")
		}
	}
	return out
}

// postStream starts a streamed run.
func postStream(t *testing.T, s *testServer, agent, msg, session string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest("POST", s.URL+"/api/v3/agents/run-agents/"+agent+"/run", strings.NewReader(`{"message":`+quoteJSON(msg)+`,"stream":true}`))
	req.Header.Set("Authorization", "Bearer "+s.Key)
	if session != "" {
		req.Header.Set("X-Session-ID", session)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func quoteJSON(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// streamConfig serves model "slow" from u, priced so charges show.
func streamConfig(u *slowStream, extra string) string {
	return fmt.Sprintf(`
providers:
  - {name: up, kind: openai, base_url: %s/v1, max_retries: 0}
models:
  - {id: slow, provider: up, upstream_model: slow-model, context_window: 100000, max_output_tokens: 1000, price: {input: 1000, output: 1000}}
  - {id: metered, provider: offline, price: {input: 1000, output: 1000}}
limits:
  stream_keepalive: 20ms
%s`, u.URL, extra)
}

func newStreamAgents(t *testing.T, s *testServer) *client.Client {
	t.Helper()
	op := s.client(s.Key)
	ctx := context.Background()
	for name, model := range map[string]string{"slow": "slow", "offline": "offline", "metered": "metered"} {
		if _, err := op.CreateAgent(ctx, client.AgentSpec{Name: client.Ptr(name), Description: client.Ptr("d"), Model: client.Ptr(model),
			MaxToken: client.Ptr(100), Demonstrations: []client.Demonstration{{Input: "ping", Output: "pong and a few more words to stream"}}}); err != nil {
			t.Fatal(err)
		}
	}
	return op
}

// TestStreamRun: deltas arrive in order and join into the reply; the done event is
// the non-streaming response (same usage for the same input); then [DONE].
func TestStreamRun(t *testing.T) {
	u := newSlowStream(t, []string{"one ", "two ", "three"}, 0)
	s := startServer(t, streamConfig(u, ""), nil)
	op := newStreamAgents(t, s)
	if _, err := op.GrantCredits(context.Background(), "default", 10); err != nil {
		t.Fatal(err)
	}
	for _, agent := range []string{"offline", "slow"} {
		t.Run(agent, func(t *testing.T) {
			resp := postStream(t, s, agent, "ping", "")
			defer resp.Body.Close()
			if ct := resp.Header.Get("Content-Type"); resp.StatusCode != 200 || !strings.HasPrefix(ct, "text/event-stream") || resp.Header.Get("X-Accel-Buffering") != "no" {
				t.Fatalf("status %d, Content-Type %q", resp.StatusCode, ct)
			}
			events := readEvents(resp, nil)
			var text strings.Builder
			var done map[string]any
			deltas := 0
			for i, ev := range events {
				switch ev.Name {
				case "delta":
					var d struct {
						Text    string
						Choices []struct{ Delta struct{ Text string } }
					}
					if err := json.Unmarshal([]byte(ev.Data), &d); err != nil || d.Choices[0].Delta.Text != d.Text || done != nil {
						t.Errorf("delta %d %q (after done: %v)", i, ev.Data, done != nil)
					}
					text.WriteString(d.Text)
					deltas++
				case "done":
					json.Unmarshal([]byte(ev.Data), &done)
				}
			}
			if last := events[len(events)-1]; last.Data != "[DONE]" || done == nil || deltas < 2 {
				t.Fatalf("events %+v", events)
			}
			if done["response"] != text.String() {
				t.Errorf("deltas join to %q, done says %q", text.String(), done["response"])
			}
			plain, err := op.Run(context.Background(), agent, "ping", "")
			if err != nil {
				t.Fatal(err)
			}
			usage := done["usage"].(map[string]any)
			if usage["input_tokens"] != float64(plain.Usage.InputTokens) || usage["output_tokens"] != float64(plain.Usage.OutputTokens) ||
				usage["source"] != plain.Usage.Source || done["response"] != plain.Response {
				t.Errorf("streamed %v / %q, plain %+v / %q", usage, done["response"], plain.Usage, plain.Response)
			}
		})
	}
}

// TestStreamKeepAliveAndErrors: a slow first token gets keep-alive comments; an
// upstream that dies after the first piece ends the stream with an error event
// and charges nothing; errors before the first byte keep their status.
func TestStreamKeepAliveAndErrors(t *testing.T) {
	// The first piece is held until the client has seen two keep-alives.
	u := newSlowStream(t, []string{"a ", "b ", "c"}, 2).gated(t, 0)
	s := startServer(t, streamConfig(u, ""), nil)
	op := newStreamAgents(t, s)
	ctx := context.Background()
	if _, err := op.GrantCredits(ctx, "default", 10); err != nil {
		t.Fatal(err)
	}
	before, _ := op.Billing(ctx)
	resp := postStream(t, s, "slow", "ping", "")
	seen := 0
	events := readEvents(resp, func(ev sseEvent) bool {
		if ev.Comment {
			if seen++; seen == 2 {
				u.open()
			}
		}
		return false
	})
	resp.Body.Close()
	keepAlives, deltas := 0, 0
	var errEv *sseEvent
	for i, ev := range events {
		switch {
		case ev.Comment && deltas == 0:
			keepAlives++
		case ev.Name == "delta":
			deltas++
		case ev.Name == "error":
			errEv = &events[i]
		}
	}
	if keepAlives < 2 || deltas != 2 || errEv == nil || events[len(events)-1].Data != "[DONE]" {
		t.Fatalf("keep-alives %d, deltas %d, error %v, events %+v", keepAlives, deltas, errEv, events)
	}
	var e map[string]any
	json.Unmarshal([]byte(errEv.Data), &e)
	if e["code"] != "inference_failed" || e["detail"] == "" || e["error"] == nil {
		t.Errorf("error event %s", errEv.Data)
	}
	after, _ := op.Billing(ctx)
	if after.Balance != before.Balance || after.Held != 0 {
		t.Errorf("billing %+v → %+v: a failed stream charged", before, after)
	}

	// Before the first byte: ordinary statuses and bodies.
	for _, tc := range []struct {
		agent string
		want  int
	}{{"nobody", 404}, {"metered", 402}} {
		if tc.want == 402 {
			setBalance(t, op, 0)
		}
		resp := postStream(t, s, tc.agent, "ping", "")
		var body map[string]any
		json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode != tc.want || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") || body["code"] == nil {
			t.Errorf("%s: %d %v %v", tc.agent, resp.StatusCode, resp.Header.Get("Content-Type"), body)
		}
	}
}

// TestStreamClientDisconnect: a client that leaves mid-stream cancels the
// upstream call; the run is charged for the input and the pieces generated, is
// recorded as cancelled without a session turn, and leaves no hold, lease or
// goroutine behind.
func TestStreamClientDisconnect(t *testing.T) {
	pieces := make([]string, 200)
	for i := range pieces {
		pieces[i] = fmt.Sprintf("w%d ", i)
	}
	// Three pieces, then the stream waits for the client to leave.
	u := newSlowStream(t, pieces, 0).gated(t, 3)
	var handled tally
	s := startServerWith(t, streamConfig(u, ""), nil, handledHooks(&handled))
	op := newStreamAgents(t, s)
	ctx := context.Background()
	if _, err := op.GrantCredits(ctx, "default", 10); err != nil {
		t.Fatal(err)
	}
	// Warm up connections and caches, and wait for that stream's handler to end.
	if resp := postStream(t, s, "offline", "ping", ""); resp != nil {
		readEvents(resp, nil)
		resp.Body.Close()
	}
	http.DefaultClient.CloseIdleConnections()
	handled.wait(t, runPath("offline"), 1)
	baseline := agentdGoroutines()
	before, _ := op.Billing(ctx)

	resp := postStream(t, s, "slow", "ping", "s1")
	got := 0
	readEvents(resp, func(ev sseEvent) bool {
		if ev.Name == "delta" {
			got++
		}
		return got == 3
	})
	resp.Body.Close() // the client leaves
	u.events.wait(t, "abandoned", 1)
	// The run has recorded its cancellation once its handler has returned.
	handled.wait(t, runPath("slow"), 1)

	var row agentd.LedgerRow
	rows, _ := ledger(t, s)
	for _, r := range rows {
		if r.Outcome == agentd.OutcomeCancelled {
			row = r
		}
	}
	if row.OutputTokens < 3 || row.OutputTokens >= 200 || row.InputTokens == 0 || row.Cost == 0 || row.UsageSource != "estimated" {
		t.Errorf("cancelled row %+v", row)
	}
	after, _ := op.Billing(ctx)
	if after.Held != 0 || int64((before.Balance-after.Balance)*1e6+0.5) != int64(row.Cost) {
		t.Errorf("billing %+v → %+v, row cost %d", before, after, row.Cost)
	}
	// No half reply in the session: the next turn sees no history.
	res, err := op.Run(ctx, "offline", "ping", "s1")
	if err != nil || res.Context.HistoryTurns != 0 {
		t.Errorf("the cancelled turn was stored: %+v %v", res, err)
	}
	// The session's lease was released: a streamed turn on s1 runs at once (it
	// reaches the upstream, which sees it abandoned).
	resp = postStream(t, s, "slow", "ping", "s1")
	resp.Body.Close()
	http.DefaultClient.CloseIdleConnections()
	u.events.wait(t, "abandoned", 2)
	// Stopping the server waits for every handler: what agentd still runs then
	// was left behind.
	if err := s.stop(); err != nil {
		t.Fatal(err)
	}
	checkNoGoroutinesLeft(t, baseline)
	consistent(t, s)
}

// TestGracefulShutdown: stopping the server lets a stream in flight finish;
// with a short shutdown_timeout a long stream is cut, charged for what it
// generated and recorded, and the database stays consistent.
func TestGracefulShutdown(t *testing.T) {
	t.Run("drains", func(t *testing.T) {
		// After the first piece the stream waits until the shutdown has begun.
		u := newSlowStream(t, []string{"a ", "b ", "c ", "d ", "e"}, 0).gated(t, 1)
		shuttingDown := make(chan struct{})
		s := startServerWith(t, streamConfig(u, "  shutdown_timeout: 30s\n"), nil, &serveHooks{httpServer: func(hs *http.Server) {
			hs.RegisterOnShutdown(func() { close(shuttingDown) })
		}})
		newStreamAgents(t, s)
		if _, err := s.client(s.Key).GrantCredits(context.Background(), "default", 10); err != nil {
			t.Fatal(err)
		}
		resp := postStream(t, s, "slow", "ping", "")
		defer resp.Body.Close()
		underWay := make(chan struct{})
		var once sync.Once
		var events []sseEvent
		var wg sync.WaitGroup
		wg.Go(func() {
			events = readEvents(resp, func(ev sseEvent) bool {
				if ev.Name == "delta" {
					once.Do(func() { close(underWay) })
				}
				return false
			})
		})
		await(t, underWay, "the first delta")
		stopped := make(chan error, 1)
		go func() { stopped <- s.stop() }()
		await(t, shuttingDown, "the shutdown to begin")
		u.open() // the rest of the stream, while the server drains
		if err := await(t, stopped, "the server to stop"); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		if len(events) == 0 || events[len(events)-1].Data != "[DONE]" || u.events.count("finished") != 1 {
			t.Fatalf("the stream did not finish: %+v", events)
		}
		if events[len(events)-2].Name != "done" {
			t.Errorf("no done event: %+v", events)
		}
	})
	t.Run("cuts after the timeout", func(t *testing.T) {
		pieces := make([]string, 100)
		for i := range pieces {
			pieces[i] = "x "
		}
		// After the first piece the stream waits for good: only the cut ends it.
		u := newSlowStream(t, pieces, 0).gated(t, 1)
		s := startServer(t, streamConfig(u, "  shutdown_timeout: 100ms\n"), nil)
		newStreamAgents(t, s)
		if _, err := s.client(s.Key).GrantCredits(context.Background(), "default", 10); err != nil {
			t.Fatal(err)
		}
		resp := postStream(t, s, "slow", "ping", "")
		defer resp.Body.Close()
		underWay := make(chan struct{})
		var once sync.Once
		go readEvents(resp, func(ev sseEvent) bool {
			if ev.Name == "delta" {
				once.Do(func() { close(underWay) })
			}
			return false
		})
		await(t, underWay, "the first delta")
		stopped := make(chan error, 1)
		go func() { stopped <- s.stop() }()
		if err := await(t, stopped, "the shutdown to cut the stream"); err != nil {
			t.Fatal(err)
		}
		rows, _ := ledger(t, s)
		if len(rows) != 1 || rows[0].Outcome != agentd.OutcomeCancelled || rows[0].Cost == 0 {
			t.Errorf("ledger after a cut stream: %+v", rows)
		}
		u.events.wait(t, "abandoned", 1) // the cut reached the upstream call
		consistent(t, s)
	})
}
