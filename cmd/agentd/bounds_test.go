package main

// Regression tests through the real program (run() / serve() on 127.0.0.1:0) for
// the bounds of what agentd keeps and trusts: the session cache beside estimates
// and sweeps, bounded agent listings and per-organization limits, checked money
// arithmetic and untrusted provider usage, reserved names, agentd check after
// retention, and the 503 of a full disk. Every test synchronizes on events (the
// fake clock's sweep rounds, channels, responses), never on sleeps.

import (
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/client"
	"github.com/agentd/agentd/internal/bench"
)

// ---------------------------------------------------------------------------
// Helpers

// rawDo sends one request with key and a raw body, and returns the status,
// headers and the whole body. It is safe in any goroutine.
func rawDo(method, url, key string, header map[string]string, body string) (int, http.Header, []byte, error) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		return 0, nil, nil, err
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b, err
}

// rawCall is rawDo on the test's goroutine, failing the test on a transport error.
func rawCall(t testing.TB, method, url, key string, header map[string]string, body string) (int, http.Header, []byte) {
	t.Helper()
	status, h, b, err := rawDo(method, url, key, header, body)
	if err != nil {
		t.Fatal(err)
	}
	return status, h, b
}

// wantErrorBody checks an error response in the API's shape: the status, JSON,
// the code, and a detail (a string, or FastAPI's list for 422) containing each of
// wants. It returns the decoded body.
func wantErrorBody(t *testing.T, what string, status int, body []byte, wantStatus int, code string, wants ...string) map[string]any {
	t.Helper()
	if status != wantStatus {
		t.Errorf("%s: status %d, want %d: %s", what, status, wantStatus, body)
		return nil
	}
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Errorf("%s: body %q is not JSON: %v", what, body, err)
		return nil
	}
	if m["code"] != code {
		t.Errorf("%s: code %v, want %q: %s", what, m["code"], code, body)
	}
	detail, _ := json.Marshal(m["detail"])
	if m["detail"] == nil {
		t.Errorf("%s: no detail: %s", what, body)
	}
	if wantStatus == 422 {
		list, ok := m["detail"].([]any)
		if !ok || len(list) == 0 {
			t.Errorf("%s: a 422 whose detail is not FastAPI's list: %s", what, body)
		}
		for _, v := range list {
			if e, _ := v.(map[string]any); e["loc"] == nil || e["msg"] == nil || e["type"] == nil {
				t.Errorf("%s: violation %v lacks loc, msg or type", what, v)
			}
		}
	}
	for _, w := range wants {
		if !strings.Contains(string(detail), w) {
			t.Errorf("%s: detail %s does not say %q", what, detail, w)
		}
	}
	return m
}

// estimateTurns asks for a run's estimate and returns how many earlier turns of
// the session its prompt would carry.
func estimateTurns(ctx context.Context, c *client.Client, agent, msg, session string) (int, error) {
	var out struct {
		Context struct {
			HistoryTurns int `json:"history_turns"`
			TrimmedTurns int `json:"trimmed_turns"`
		} `json:"context"`
	}
	h := http.Header{}
	h.Set("X-Session-ID", session)
	if err := c.Do(ctx, http.MethodPost, "/api/v3/agents/run-agents/"+agent+"/estimate", h, map[string]string{"message": msg}, &out); err != nil {
		return 0, err
	}
	if out.Context.TrimmedTurns != 0 {
		return 0, fmt.Errorf("estimate trimmed %d turns: the test's window is too small", out.Context.TrimmedTurns)
	}
	return out.Context.HistoryTurns, nil
}

var earlierTurns = regexp.MustCompile(`this conversation has (\d+) earlier turns?\.`)

// offlineTurns is how many earlier turns the offline model says it was given.
func offlineTurns(reply string) int {
	m := earlierTurns.FindStringSubmatch(reply)
	if m == nil {
		return -1
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// checkCommand runs `agentd check` on the server's database and returns its
// output and error.
func checkCommand(t *testing.T, s *testServer) (string, error) {
	t.Helper()
	var out, errOut strings.Builder
	err := run(context.Background(), []string{"check", "--db", "sqlite:" + s.dbPath}, func(string) string { return "" }, nil, &out, &errOut)
	return out.String() + errOut.String(), err
}

func wantCheckClean(t *testing.T, s *testServer, when string) {
	t.Helper()
	out, err := checkCommand(t, s)
	if err != nil || !strings.Contains(out, "is consistent") {
		t.Errorf("agentd check %s: %v\n%s", when, err, out)
	}
}

// ---------------------------------------------------------------------------
// 1. Estimates racing turns across sweep rounds

// gatedChat is an OpenAI-compatible upstream that holds every chat completion
// until the test lets it go: it hands the test a gate on arrived, answers when the
// gate is closed, and says, like the offline model, how many earlier turns (user
// messages before the last, outside the system prompt) it was sent.
type gatedChat struct {
	*httptest.Server
	arrived chan chan struct{}
}

func newGatedChat(t *testing.T) *gatedChat {
	g := &gatedChat{arrived: make(chan chan struct{}, 1)}
	g.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Model    string `json:"model"`
			Messages []struct {
				Role string `json:"role"`
			} `json:"messages"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		earlier := 0
		for _, m := range body.Messages[:max(len(body.Messages)-1, 0)] {
			if m.Role == "user" {
				earlier++
			}
		}
		gate := make(chan struct{})
		select {
		case g.arrived <- gate:
		case <-r.Context().Done():
			return
		}
		select {
		case <-gate:
		case <-r.Context().Done():
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id":"chatcmpl-g","object":"chat.completion","created":1741569952,"model":%q,"choices":[{"index":0,"message":{"role":"assistant","content":"I was sent the system prompt and this conversation has %d earlier turns."},"finish_reason":"stop"}],"usage":{"prompt_tokens":10,"completion_tokens":3,"total_tokens":13}}`, body.Model, earlier)
	}))
	t.Cleanup(g.Close)
	return g
}

// TestEstimatesBesideTurnsAcrossSweeps: 60 turns on one session, each with a sweep
// round that deletes another, idle, session while the turn waits for its model,
// and then estimates on the same session racing the turn's commit. Every turn's
// prompt carries exactly the earlier turns (the response's context and the
// model's own count of what it was sent say so), and every estimate sees the turn
// count of its moment or one more.
//
// Old behaviour this fails on: an estimate filled the recent-turns cache without
// the session's lease, and the idle sweeper cleared the whole cache whenever it
// deleted a session. After such a clear, an estimate that read the history before
// the turn's commit and cached it after the turn had appended itself left a
// window without that turn (the next turn was sent one turn too few), and one
// that read after the commit but cached before the append left it twice (one too
// many). The gate puts the clear and the estimates' cache misses right at the
// commit, where those races are; with the old code most runs of this test fail.
func TestEstimatesBesideTurnsAcrossSweeps(t *testing.T) {
	g := newGatedChat(t)
	clk := newSweepClock()
	// A round a minute of fake time, sessions idle after five: the session under
	// test has a turn every round and is never idle; each round's throwaway session
	// becomes idle five rounds later, so from then on every round deletes one.
	s := startServerWith(t, fmt.Sprintf(`
sweep_interval: 1m
sessions: {idle_ttl: 5m}
providers:
  - {name: up, kind: openai, base_url: %s/v1, max_retries: 0}
models:
  - {id: gated, provider: up, upstream_model: gated, context_window: 100000, max_output_tokens: 100}
`, g.URL), nil, clk.hooks())
	ctx := context.Background()
	op := s.client(s.Key)
	for name, model := range map[string]string{"chat": "gated", "idler": "offline"} {
		if _, err := op.CreateAgent(ctx, client.AgentSpec{Name: client.Ptr(name), Description: client.Ptr("d"), Model: client.Ptr(model), MaxToken: client.Ptr(50)}); err != nil {
			t.Fatal(err)
		}
	}
	const turns, estimators = 60, 6
	deleted := 0
	for i := range turns {
		if _, err := op.Run(ctx, "idler", "hello", fmt.Sprintf("idle-%d", i)); err != nil {
			t.Fatal(err)
		}
		var (
			wg     sync.WaitGroup
			res    *client.RunResult
			runErr error
			done   = make(chan struct{})
			mu     sync.Mutex
			ests   []int
		)
		wg.Go(func() {
			defer close(done)
			res, runErr = op.Run(ctx, "chat", fmt.Sprintf("turn %d", i), "main")
		})
		var gate chan struct{}
		select {
		case gate = <-g.arrived: // the turn has read its history and waits for the model
		case <-done:
			t.Fatalf("turn %d ended before reaching the model: %v", i, runErr)
		}
		clk.sweep(t, time.Minute) // a round that deletes a session (from round 5 on)
		for range estimators {
			wg.Go(func() {
				for {
					n, err := estimateTurns(ctx, op, "chat", "what next", "main")
					if err != nil {
						t.Errorf("estimate beside turn %d: %v", i, err)
						return
					}
					mu.Lock()
					ests = append(ests, n)
					mu.Unlock()
					select {
					case <-done:
						return
					default:
					}
				}
			})
		}
		close(gate) // the turn commits while the estimates run
		wg.Wait()
		if runErr != nil {
			t.Fatalf("turn %d: %v", i, runErr)
		}
		if res.Context.HistoryTurns != i || res.Context.TrimmedTurns != 0 || offlineTurns(res.Response) != i {
			t.Errorf("turn %d: history_turns %d, trimmed %d, reply %q; want all %d earlier turns",
				i, res.Context.HistoryTurns, res.Context.TrimmedTurns, res.Response, i)
		}
		for _, n := range ests {
			if n != i && n != i+1 {
				t.Errorf("estimate beside turn %d: history_turns %d, want %d or %d", i, n, i, i+1)
			}
		}
		// Nothing in flight: an estimate sees exactly the stored turns.
		if n, err := estimateTurns(ctx, op, "chat", "what next", "main"); err != nil || n != i+1 {
			t.Errorf("estimate after turn %d: history_turns %d (%v), want %d", i, n, err, i+1)
		}
		if i >= 6 {
			// The throwaway session of six rounds ago is gone by now.
			if _, err := op.Session(ctx, "idler", fmt.Sprintf("idle-%d", i-6), "", 1); statusOf(err) == 404 {
				deleted++
			}
		}
	}
	if deleted < turns-6 {
		t.Fatalf("only %d rounds deleted their idle session: the sweeper did not run as the test needs", deleted)
	}
	consistent(t, s)
}

// ---------------------------------------------------------------------------
// 2. Bounded listings

// listingFixture is a server with 20 agents of organization default, created one
// after another (real clock, so creation order is the order of created_at), three
// of them deactivated.
type listingFixture struct {
	s        *testServer
	op       *client.Client
	all      []string // ids in creation order
	active   []string
	inactive map[string]bool
	names    map[string]string // id → name
}

func newListingFixture(t *testing.T, config string) *listingFixture {
	t.Helper()
	f := &listingFixture{s: startServer(t, config, nil), inactive: map[string]bool{}, names: map[string]string{}}
	f.op = f.s.client(f.s.Key)
	ctx := context.Background()
	for i := range 20 {
		a, err := f.op.CreateAgent(ctx, client.AgentSpec{
			Name: client.Ptr(fmt.Sprintf("Lister %02d", i)), Description: client.Ptr("listed"), Model: client.Ptr("offline"),
			Demonstrations: []client.Demonstration{{Input: "ping", Output: fmt.Sprintf("pong %d", i)}},
		})
		if err != nil {
			t.Fatal(err)
		}
		f.all = append(f.all, a.ID)
		f.names[a.ID] = a.Name
	}
	for _, i := range []int{3, 9, 16} {
		if _, err := f.op.UpdateAgent(ctx, f.all[i], client.AgentSpec{Status: client.Ptr("INACTIVE")}); err != nil {
			t.Fatal(err)
		}
		f.inactive[f.all[i]] = true
	}
	for _, id := range f.all {
		if !f.inactive[id] {
			f.active = append(f.active, id)
		}
	}
	return f
}

// TestAgentListingPages: GET /api/v3/agents?limit=&cursor= pages through the
// agents in creation order, each page with next_cursor, null on the last; bad
// limits and cursors are 422.
//
// Old behaviour this fails on: the listing ignored limit and cursor and answered
// every agent in one response, with no next_cursor.
func TestAgentListingPages(t *testing.T) {
	f := newListingFixture(t, "")
	for _, incl := range []bool{false, true} {
		want := f.active
		if incl {
			want = f.all
		}
		for _, limit := range []int{1, 7, 8, 9, len(want), 200} {
			var got []string
			var sizes []int
			cursor := ""
			for page := 0; ; page++ {
				if page > len(want)+1 {
					t.Fatalf("limit %d: more pages than agents", limit)
				}
				path := fmt.Sprintf("/api/v3/agents?limit=%d&include_inactive=%v", limit, incl)
				if cursor != "" {
					path += "&cursor=" + cursor
				}
				status, _, body := rawCall(t, "GET", f.s.URL+path, f.s.Key, nil, "")
				if status != 200 {
					t.Fatalf("%s: %d %s", path, status, body)
				}
				var out struct {
					Agents []struct {
						ID     string `json:"id"`
						Name   string `json:"name"`
						Status string `json:"status"`
					} `json:"agents"`
					NextCursor *string `json:"next_cursor"`
				}
				var keys map[string]json.RawMessage
				if err := json.Unmarshal(body, &out); err != nil || json.Unmarshal(body, &keys) != nil {
					t.Fatalf("%s: %v %s", path, err, body)
				}
				if _, ok := keys["next_cursor"]; !ok {
					t.Fatalf("%s: a page without next_cursor: %s", path, body)
				}
				for _, a := range out.Agents {
					got = append(got, a.ID)
					if f.names[a.ID] != a.Name || (a.Status == "INACTIVE") != f.inactive[a.ID] {
						t.Errorf("%s: agent %+v", path, a)
					}
				}
				sizes = append(sizes, len(out.Agents))
				if out.NextCursor == nil {
					break
				}
				cursor = *out.NextCursor
			}
			if !slices.Equal(got, want) {
				t.Errorf("include_inactive=%v limit %d: pages list %v, want %v in creation order", incl, limit, got, want)
			}
			pages := max(1, (len(want)+limit-1)/limit)
			wantSizes := make([]int, pages)
			for i := range wantSizes {
				wantSizes[i] = min(limit, len(want)-i*limit)
			}
			if !slices.Equal(sizes, wantSizes) {
				t.Errorf("include_inactive=%v limit %d: page sizes %v, want %v", incl, limit, sizes, wantSizes)
			}
		}
	}
	// An empty cursor or limit is the first page with the default limit (50).
	for _, q := range []string{"cursor=", "limit="} {
		status, _, body := rawCall(t, "GET", f.s.URL+"/api/v3/agents?"+q, f.s.Key, nil, "")
		if status != 200 || !strings.Contains(string(body), `"next_cursor":null`) || strings.Count(string(body), `"endpoint"`) != len(f.active) {
			t.Errorf("?%s: %d %.200s", q, status, body)
		}
	}
	for _, tc := range []struct{ query, param string }{
		{"limit=0", "limit"}, {"limit=-1", "limit"}, {"limit=201", "limit"}, {"limit=abc", "limit"}, {"limit=1.5", "limit"},
		{"cursor=!!!", "cursor"},
		{"cursor=" + base64.RawURLEncoding.EncodeToString([]byte("not|a cursor")), "cursor"},
		{"cursor=" + base64.RawURLEncoding.EncodeToString([]byte("12|user-1")), "cursor"},
		{"limit=5&cursor=%25%25", "cursor"},
	} {
		status, _, body := rawCall(t, "GET", f.s.URL+"/api/v3/agents?"+tc.query, f.s.Key, nil, "")
		wantErrorBody(t, "?"+tc.query, status, body, 422, "invalid", `"query"`, `"`+tc.param+`"`)
	}
}

// TestAgentListingWhole: without limit and cursor the listing answers every agent
// (more than the 8 it reads at a time) as NuGen does, {"agents": [...]} and nothing
// else, valid JSON, in creation order, include_inactive honoured.
//
// Old behaviour: the whole listing was built in memory (every agent, then the
// whole JSON), which TestAgentListingsMemoryBounded and BenchmarkListAgents
// measure; this test pins what the streamed replacement must still answer: a
// continuation bug past the first read page, a next_cursor in NuGen's shape, or a
// broken separator between pages fails it.
func TestAgentListingWhole(t *testing.T) {
	f := newListingFixture(t, "")
	for _, tc := range []struct {
		query string
		want  []string
	}{
		{"", f.active},
		{"?include_inactive=false", f.active},
		{"?include_inactive=true", f.all},
		{"?include_inactive=1", f.all},
	} {
		status, h, body := rawCall(t, "GET", f.s.URL+"/api/v3/agents"+tc.query, f.s.Key, nil, "")
		if status != 200 || h.Get("Content-Type") != "application/json" || !json.Valid(body) {
			t.Fatalf("list%s: %d %q valid=%v: %.300s", tc.query, status, h.Get("Content-Type"), json.Valid(body), body)
		}
		var keys map[string]json.RawMessage
		if err := json.Unmarshal(body, &keys); err != nil || len(keys) != 1 || keys["agents"] == nil {
			t.Fatalf("list%s: keys %v, want only \"agents\"", tc.query, slices.Sorted(maps.Keys(keys)))
		}
		var agents []map[string]any
		if err := json.Unmarshal(keys["agents"], &agents); err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, a := range agents {
			id, _ := a["id"].(string)
			got = append(got, id)
			demos, _ := a["demonstrations"].([]any)
			if a["name"] != f.names[id] || len(demos) != 1 || a["endpoint"] == nil || a["performance_metrics"] == nil {
				t.Errorf("list%s: agent %v is not whole", tc.query, a)
			}
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("list%s: %d agents %v, want %d %v", tc.query, len(got), got, len(tc.want), tc.want)
		}
	}
	// The client's own listing reads the same shape, also when the agents fill
	// their last read page exactly (16 active: two pages of 8).
	list, err := f.op.Agents(context.Background(), true)
	if err != nil || len(list) != len(f.all) {
		t.Errorf("client listing: %d agents, %v", len(list), err)
	}
	if err := f.op.DeleteAgent(context.Background(), f.active[5]); err != nil {
		t.Fatal(err)
	}
	list, err = f.op.Agents(context.Background(), false)
	if err != nil || len(list) != 16 || list[15].ID != f.active[len(f.active)-1] {
		t.Errorf("listing 16 agents: %d, %v", len(list), err)
	}
}

// TestModelsListsEveryAgent: GET /v1/models with a run key lists the catalog and
// then every active agent (more than one read page) as agent/<name>, and no
// inactive one.
//
// Old behaviour: /v1/models loaded every agent's whole configuration to list
// names (measured by TestAgentListingsMemoryBounded); this pins that the paged
// replacement still names every active agent.
func TestModelsListsEveryAgent(t *testing.T) {
	f := newListingFixture(t, "models:\n  - {id: offline-premium, provider: offline, price: {input: 1, output: 1}}\n")
	ctx := context.Background()
	k, err := f.op.CreateKey(ctx, client.KeySpec{Name: "runner", Scopes: []string{"run"}})
	if err != nil {
		t.Fatal(err)
	}
	status, _, body := rawCall(t, "GET", f.s.URL+"/v1/models", k.Secret, nil, "")
	if status != 200 {
		t.Fatalf("/v1/models: %d %s", status, body)
	}
	var out struct {
		Object string `json:"object"`
		Data   []struct {
			ID      string `json:"id"`
			Object  string `json:"object"`
			OwnedBy string `json:"owned_by"`
			AgentID string `json:"agent_id"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &out); err != nil || out.Object != "list" {
		t.Fatalf("/v1/models: %v %s", err, body)
	}
	var models, agentIDs []string
	for _, m := range out.Data {
		if m.Object != "model" {
			t.Errorf("entry %+v", m)
		}
		if name, ok := strings.CutPrefix(m.ID, "agent/"); ok {
			agentIDs = append(agentIDs, m.AgentID)
			if f.names[m.AgentID] != name || m.OwnedBy != agentd.DefaultOrgName {
				t.Errorf("agent entry %+v", m)
			}
			continue
		}
		if len(agentIDs) > 0 {
			t.Errorf("catalog model %q listed after agents", m.ID)
		}
		models = append(models, m.ID)
	}
	if !slices.Contains(models, "offline") || !slices.Contains(models, "offline-premium") {
		t.Errorf("catalog models %v", models)
	}
	if !slices.Equal(agentIDs, f.active) {
		t.Errorf("/v1/models lists agents %v, want every active one %v", agentIDs, f.active)
	}
	// A key without agents:read or run is refused, in OpenAI's envelope.
	uk, err := f.op.CreateKey(ctx, client.KeySpec{Name: "usage only", Scopes: []string{"usage"}})
	if err != nil {
		t.Fatal(err)
	}
	if status, _, body := rawCall(t, "GET", f.s.URL+"/v1/models", uk.Secret, nil, ""); status != 403 || !strings.Contains(string(body), `"error"`) {
		t.Errorf("/v1/models with a usage key: %d %s", status, body)
	}
}

// bigAgentSpec is an agent whose configuration takes about size bytes: long
// instructions and demonstrations of up to the per-demonstration limit.
func bigAgentSpec(name string, size int) client.AgentSpec {
	instr := min(size, 190_000)
	spec := client.AgentSpec{
		Name: client.Ptr(name), Description: client.Ptr("big"), Model: client.Ptr("offline"),
		Instructions: client.Ptr(strings.Repeat("Be thorough. ", instr/13)),
	}
	for left := size - instr; left > 0; left -= 19_000 {
		n := min(left, 19_000)
		spec.Demonstrations = append(spec.Demonstrations, client.Demonstration{
			Input: strings.Repeat("q", n/2) + name, Output: strings.Repeat("a", n-n/2),
		})
	}
	return spec
}

const bigAgentConfig = "limits: {max_body_bytes: 4194304}\nagents: {max_bytes: 2097152}\n"

// createBigAgents creates n agents of about size bytes each, a few at a time.
func createBigAgents(tb testing.TB, op *client.Client, n, size int) {
	tb.Helper()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 4)
	var failed atomic.Value
	for i := range n {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			if _, err := op.CreateAgent(context.Background(), bigAgentSpec(fmt.Sprintf("big_%03d", i), size)); err != nil {
				failed.Store(err)
			}
		})
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		tb.Fatal(err)
	}
}

// heapPeak samples the process's heap while it runs and reports the highest
// HeapAlloc seen.
type heapPeak struct {
	stop chan struct{}
	done chan uint64
}

func sampleHeap() *heapPeak {
	h := &heapPeak{stop: make(chan struct{}), done: make(chan uint64, 1)}
	go func() {
		var ms runtime.MemStats
		peak := uint64(0)
		tick := time.NewTicker(500 * time.Microsecond)
		defer tick.Stop()
		for {
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapAlloc)
			select {
			case <-h.stop:
				h.done <- peak
				return
			case <-tick.C:
			}
		}
	}()
	return h
}

func (h *heapPeak) end() uint64 { close(h.stop); return <-h.done }

// heapGrowth runs f with the collector kept close to the live heap and returns
// how far the heap rose above what was live before.
func heapGrowth(f func()) (base, growth uint64) {
	old := debug.SetGCPercent(5)
	defer debug.SetGCPercent(old)
	// Twice: what sync.Pools keep (encoding/json's buffers) survives one cycle.
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	h := sampleHeap()
	f()
	peak := h.end()
	if peak < ms.HeapAlloc {
		return ms.HeapAlloc, 0
	}
	return ms.HeapAlloc, peak - ms.HeapAlloc
}

// TestAgentListingsMemoryBounded: listing 40 agents of ~1 MB each — the whole
// NuGen listing and /v1/models — never holds them all: the heap of the process
// (server and client together; the client drains bodies without keeping them)
// rises by less than the agents' total size.
//
// Old behaviour this fails on: GET /api/v3/agents read every agent and then built
// the whole JSON in memory (~2× the agents' size live at once), and /v1/models read
// every agent's whole configuration to list their names (~1× live at once).
func TestAgentListingsMemoryBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("creates 40 MB of agents")
	}
	const n, size = 40, 1 << 20
	s := startServer(t, bigAgentConfig, nil)
	op := s.client(s.Key)
	createBigAgents(t, op, n, size)
	total := uint64(n * size)
	for _, path := range []string{"/api/v3/agents", "/v1/models"} {
		var got int64
		var status int
		base, growth := heapGrowth(func() {
			req, _ := http.NewRequest("GET", s.URL+path, nil)
			req.Header.Set("Authorization", "Bearer "+s.Key)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			status = resp.StatusCode
			got, _ = io.Copy(io.Discard, resp.Body)
		})
		t.Logf("%s: %d bytes answered; heap %d MB before, rose %d MB (agents: %d MB)", path, got, base>>20, growth>>20, total>>20)
		if status != 200 || (path == "/api/v3/agents" && got < int64(total)) {
			t.Fatalf("%s: status %d, %d bytes", path, status, got)
		}
		limit := total // a listing may hold a few pages of agents, never all of them
		if path == "/v1/models" {
			limit = total / 2 // names only
		}
		if growth > limit {
			t.Errorf("%s: the heap rose %d MB while answering (at most %d MB expected); the agents are %d MB: the listing holds them all",
				path, growth>>20, limit>>20, total>>20)
		}
	}
}

// TestAgentLimits: agents.max_per_org and agents.max_bytes refuse creates and
// updates beyond them in the API's error shape and store nothing; concurrent
// creates never pass the count.
//
// Old behaviour this fails on: there were no limits: the fourth create and an
// oversized configuration were stored.
func TestAgentLimits(t *testing.T) {
	s := startServer(t, "agents: {max_per_org: 3, max_bytes: 2048}\n", nil)
	ctx := context.Background()
	op := s.client(s.Key)
	create := func(key, body string) (int, []byte) {
		status, _, b := rawCall(t, "POST", s.URL+"/api/v3/agents/create", key, nil, body)
		return status, b
	}
	agentBody := func(name string, extra string) string {
		return fmt.Sprintf(`{"agent_name":%q,"agent_description":"d","model":"offline"%s}`, name, extra)
	}
	// max_bytes counts bytes, not characters: 1100 × "é" is 2200 bytes.
	status, body := create(s.Key, agentBody("wide", `,"instructions":`+quoteJSON(strings.Repeat("é", 1100))))
	wantErrorBody(t, "2200-byte instructions", status, body, 422, "invalid", "agents.max_bytes", "2048")
	status, body = create(s.Key, agentBody("demos", `,"demonstrations":[{"input":`+quoteJSON(strings.Repeat("i", 1000))+`,"output":`+quoteJSON(strings.Repeat("o", 1100))+`}]`))
	wantErrorBody(t, "2100 bytes of demonstrations", status, body, 422, "invalid", "agents.max_bytes")
	// Just at the limit is fine: description (1) + instructions (2047).
	status, body = create(s.Key, agentBody("exact", `,"instructions":`+quoteJSON(strings.Repeat("x", 2047))))
	if status != 200 {
		t.Fatalf("an agent of exactly max_bytes: %d %s", status, body)
	}
	for _, name := range []string{"two", "three"} {
		if status, body := create(s.Key, agentBody(name, "")); status != 200 {
			t.Fatalf("create %s: %d %s", name, status, body)
		}
	}
	status, body = create(s.Key, agentBody("four", ""))
	wantErrorBody(t, "fourth agent", status, body, 400, "bad_request", "agents.max_per_org", "3 agents")
	// An inactive agent still counts; an update beyond max_bytes is refused and
	// changes nothing.
	if _, err := op.UpdateAgent(ctx, "two", client.AgentSpec{Status: client.Ptr("INACTIVE")}); err != nil {
		t.Fatal(err)
	}
	if status, body := create(s.Key, agentBody("four", "")); status != 400 {
		t.Errorf("fourth agent beside an inactive one: %d %s", status, body)
	}
	status, _, body = rawCall(t, "PATCH", s.URL+"/api/v3/agents/three", s.Key, nil, `{"instructions":`+quoteJSON(strings.Repeat("y", 2048))+`}`)
	wantErrorBody(t, "update past max_bytes", status, body, 422, "invalid", "agents.max_bytes")
	status, _, body = rawCall(t, "PATCH", s.URL+"/api/v3/agents/exact", s.Key, nil, `{"agent_description":"dd"}`)
	wantErrorBody(t, "a longer description on an agent at the limit", status, body, 422, "invalid", "agents.max_bytes")
	for _, ref := range []string{"three", "exact"} {
		a, err := op.Agent(ctx, ref)
		if err != nil || a.Version != 1 || a.Description != "d" {
			t.Errorf("agent %s after refused updates: %+v %v", ref, a, err)
		}
	}
	if list, err := op.Agents(ctx, true); err != nil || len(list) != 3 {
		t.Errorf("%d agents stored, want 3 (%v)", len(list), err)
	}
	// Deleting one makes room for one.
	if err := op.DeleteAgent(ctx, "exact"); err != nil {
		t.Fatal(err)
	}
	if status, body := create(s.Key, agentBody("four", "")); status != 200 {
		t.Errorf("create after a delete: %d %s", status, body)
	}

	// Concurrent creates in a fresh organization: exactly max_per_org pass.
	org, err := op.CreateOrg(ctx, "crowded")
	if err != nil {
		t.Fatal(err)
	}
	k, err := op.CreateKey(ctx, client.KeySpec{Name: "crowd", OrgID: org.ID, Scopes: []string{"admin"}})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	statuses := map[int]int{}
	start := make(chan struct{})
	for i := range 24 {
		wg.Go(func() {
			<-start
			status, _, body, err := rawDo("POST", s.URL+"/api/v3/agents/create", k.Secret, nil, agentBody(fmt.Sprintf("crowd %d", i), ""))
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			statuses[status]++
			if status != 200 && !strings.Contains(string(body), "agents.max_per_org") {
				t.Errorf("concurrent create: %d %s", status, body)
			}
		})
	}
	close(start)
	wg.Wait()
	if statuses[200] != 3 || statuses[400] != 21 {
		t.Errorf("24 concurrent creates: %v, want 3 × 200 and 21 × 400", statuses)
	}
	if list, err := s.client(k.Secret).Agents(ctx, true); err != nil || len(list) != 3 {
		t.Errorf("organization crowded has %d agents (%v), want 3", len(list), err)
	}
}

// BenchmarkListAgents: 100 agents of ~1 MB each, listed by 8 concurrent clients
// through GET /api/v3/agents (whole, unparameterized) and GET /v1/models. It
// reports the process's peak heap (runtime.MemStats sampled) and peak resident
// set (/proc VmHWM, reset before the listings); the old code, which built each
// listing in memory, went from 27 MB to 3 GB resident.
//
//	go test ./cmd/agentd -run XXX -bench ListAgents -benchtime 1x
func BenchmarkListAgents(b *testing.B) {
	const n, size, clients = 100, 1 << 20, 8
	s := startServer(b, bigAgentConfig, nil)
	op := s.client(s.Key)
	createBigAgents(b, op, n, size)
	tr := &http.Transport{MaxIdleConnsPerHost: clients}
	hc := &http.Client{Transport: tr}
	defer tr.CloseIdleConnections()
	get := func(path string) int64 {
		req, _ := http.NewRequest("GET", s.URL+path, nil)
		req.Header.Set("Authorization", "Bearer "+s.Key)
		resp, err := hc.Do(req)
		if err != nil {
			b.Error(err)
			return 0
		}
		defer resp.Body.Close()
		got, _ := io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != 200 {
			b.Errorf("%s: %d", path, resp.StatusCode)
		}
		return got
	}
	runtime.GC()
	debug.FreeOSMemory()
	pid := os.Getpid()
	_ = bench.ResetPeakRSS(pid)
	before, _ := bench.ReadProc(pid)
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	baseHeap := ms.HeapAlloc
	h := sampleHeap()
	var listed, models atomic.Int64
	rounds := 0
	for b.Loop() {
		rounds++
		var wg sync.WaitGroup
		for range clients {
			wg.Go(func() {
				listed.Add(get("/api/v3/agents"))
				models.Add(get("/v1/models"))
			})
		}
		wg.Wait()
	}
	peak := h.end()
	after, err := bench.ReadProc(pid)
	if listed.Load() < int64(rounds*clients*n*size) || models.Load() < int64(rounds*clients*n*len(`"id":"agent/big_000"`)) {
		b.Fatalf("%d rounds answered %d bytes of listings and %d of models", rounds, listed.Load(), models.Load())
	}
	b.ReportMetric(float64(baseHeap)/(1<<20), "base-heap-MB")
	b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MB")
	if err == nil && after.PeakRSS > 0 {
		b.ReportMetric(float64(before.RSS)/(1<<20), "base-rss-MB")
		b.ReportMetric(float64(after.PeakRSS)/(1<<20), "peak-rss-MB")
	}
	b.ReportMetric(float64(listed.Load())/float64(rounds*clients)/(1<<20), "MB/listing")
}

// ---------------------------------------------------------------------------
// 3. Arithmetic and trust

// TestGrantArithmetic: grants beyond agentd.MaxMicros are 422 (each of two 9e12
// grants), and a grant that would take the balance past it is 422 and changes
// nothing.
//
// Old behaviour this fails on: a grant of 9e12 credits was accepted (9e18
// micro-credits, next to int64's limit) and the second one overflowed the balance
// in SQL and answered 500; nothing bounded a balance.
func TestGrantArithmetic(t *testing.T) {
	s := startServer(t, "", nil)
	ctx := context.Background()
	op := s.client(s.Key)
	grant := func(amount string) (int, []byte) {
		status, _, body := rawCall(t, "POST", s.URL+"/api/v3/admin/orgs/default/credits", s.Key, nil, `{"amount":`+amount+`}`)
		return status, body
	}
	for range 2 {
		status, body := grant("9e12")
		wantErrorBody(t, "a grant of 9e12 credits", status, body, 422, "invalid", "amount")
	}
	for _, amount := range []string{"-9e12", "1e300", "9223372036854.775807"} {
		status, body := grant(amount)
		wantErrorBody(t, "a grant of "+amount, status, body, 422, "invalid", "amount")
	}
	if b, err := op.Billing(ctx); err != nil || b.Balance != 0 {
		t.Fatalf("billing after refused grants: %+v %v", b, err)
	}
	if status, body := grant("6e11"); status != 200 {
		t.Fatalf("6e11: %d %s", status, body)
	}
	status, body := grant("6e11") // 1.2e12 > MaxMicros
	wantErrorBody(t, "a grant past the largest balance", status, body, 422, "invalid", "largest balance")
	if status, body := grant("4e11"); status != 200 { // exactly MaxMicros
		t.Fatalf("up to exactly MaxMicros: %d %s", status, body)
	}
	status, body = grant("0.000001")
	wantErrorBody(t, "one micro-credit past MaxMicros", status, body, 422, "invalid", "largest balance")
	b, err := op.Billing(ctx)
	if err != nil || int64(b.Balance) != int64(agentd.MaxMicros/agentd.MicrosPerCredit) || b.Held != 0 {
		t.Errorf("billing: %+v %v, want a balance of exactly %d credits", b, err, agentd.MaxMicros/agentd.MicrosPerCredit)
	}
	// A correction back down still works, and the books balance.
	if status, body := grant("-1e12"); status != 200 {
		t.Errorf("a correction of the whole balance: %d %s", status, body)
	}
	consistent(t, s)
	wantCheckClean(t, s, "after refused grants")
}

// usageUpstream is an OpenAI-compatible upstream (the real wire format, whole and
// streamed with stream_options.include_usage) whose reported usage is chosen by
// the upstream model's name: "<prompt>_<completion>" with n for minus, e.g.
// "n7_5" reports prompt_tokens -7 and completion_tokens 5.
type usageUpstream struct {
	*httptest.Server
	calls atomic.Int64
}

func newUsageUpstream(t *testing.T) *usageUpstream {
	u := &usageUpstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(u.serve))
	t.Cleanup(u.Close)
	return u
}

func (u *usageUpstream) serve(w http.ResponseWriter, r *http.Request) {
	u.calls.Add(1)
	var body struct {
		Model         string `json:"model"`
		Stream        bool   `json:"stream"`
		StreamOptions *struct {
			IncludeUsage bool `json:"include_usage"`
		} `json:"stream_options"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		http.Error(w, err.Error(), 400)
		return
	}
	in, out, _ := strings.Cut(body.Model, "_")
	num := func(s string) string { return strings.Replace(s, "n", "-", 1) }
	usage := fmt.Sprintf(`{"prompt_tokens":%s,"completion_tokens":%s,"total_tokens":0}`, num(in), num(out))
	if !body.Stream {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id":"chatcmpl-u","object":"chat.completion","created":1741569952,"model":%q,"choices":[{"index":0,"message":{"role":"assistant","content":"Counted reply"},"finish_reason":"stop"}],"usage":%s}`, body.Model, usage)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	chunk := func(choices, usage string) {
		fmt.Fprintf(w, "data: {\"id\":\"chatcmpl-u\",\"object\":\"chat.completion.chunk\",\"created\":1741569952,\"model\":%q,\"choices\":%s,\"usage\":%s}\n\n", body.Model, choices, usage)
		w.(http.Flusher).Flush()
	}
	chunk(`[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]`, "null")
	chunk(`[{"index":0,"delta":{"content":"Counted"},"finish_reason":null}]`, "null")
	chunk(`[{"index":0,"delta":{"content":" reply"},"finish_reason":null}]`, "null")
	chunk(`[{"index":0,"delta":{},"finish_reason":"stop"}]`, "null")
	if body.StreamOptions != nil && body.StreamOptions.IncludeUsage {
		chunk(`[]`, usage)
	}
	fmt.Fprint(w, "data: [DONE]\n\n")
}

// TestUntrustedProviderUsage: an upstream reporting negative token counts, or
// 2^62 tokens, fails the run — 500 inference_failed in the API's shape, or an
// error event after a stream's first byte — charges nothing, keeps no session
// turn, and writes a failed ledger row; the usage endpoints and agentd check stay
// whole afterwards. A plausible count beside them is charged exactly.
//
// Old behaviour this fails on: negative counts failed with 500 but wrote no ledger
// row; 2^62 tokens was a successful run billed 0 (the cost overflowed) whose
// tokens overflowed the daily rollups.
func TestUntrustedProviderUsage(t *testing.T) {
	u := newUsageUpstream(t)
	const huge = "4611686018427387904" // 2^62
	bad := map[string]string{
		"neg_in":   "n7_5",
		"neg_out":  "12_n1",
		"neg_both": "n9223372036854775808_n1", // math.MinInt64
		"huge_in":  huge + "_5",
		"huge_out": "12_" + huge,
		"huge_sum": "8000_8000", // each within the window + output limit, not their sum
	}
	var models strings.Builder
	for id, up := range bad {
		fmt.Fprintf(&models, "  - {id: %s, provider: up, upstream_model: %q, context_window: 9000, max_output_tokens: 1000, price: {input: 1000, output: 1000}}\n", id, up)
	}
	fmt.Fprintf(&models, "  - {id: fair, provider: up, upstream_model: \"11_4\", context_window: 9000, max_output_tokens: 1000, price: {input: 1000, output: 1000}}\n")
	s := startServer(t, fmt.Sprintf("providers:\n  - {name: up, kind: openai, base_url: %s/v1, max_retries: 0}\nmodels:\n%s", u.URL, models.String()), nil)
	ctx := context.Background()
	op := s.client(s.Key)
	if _, err := op.GrantCredits(ctx, agentd.DefaultOrgName, 10); err != nil {
		t.Fatal(err)
	}
	for id := range bad {
		if _, err := op.CreateAgent(ctx, client.AgentSpec{Name: client.Ptr(id), Description: client.Ptr("d"), Model: client.Ptr(id), MaxToken: client.Ptr(100)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := op.CreateAgent(ctx, client.AgentSpec{Name: client.Ptr("fair"), Description: client.Ptr("d"), Model: client.Ptr("fair"), MaxToken: client.Ptr(100)}); err != nil {
		t.Fatal(err)
	}
	failedRows := func(model string) (failed, ok int) {
		t.Helper()
		page, err := op.UsageRecords(ctx, client.UsageFilter{Model: model, Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range page.Data {
			switch {
			case r.Outcome == "failed" && r.Cost == 0 && r.InputTokens == 0 && r.OutputTokens == 0 && r.ErrorCode != nil && *r.ErrorCode == "inference_failed":
				failed++
			case r.Outcome == "ok":
				ok++
			default:
				t.Errorf("ledger row of %s: %+v", model, r)
			}
		}
		return failed, ok
	}
	before, _ := op.Billing(ctx)
	for _, id := range slices.Sorted(maps.Keys(bad)) {
		t.Run(id, func(t *testing.T) {
			// Whole: the documented 500.
			status, _, body := rawCall(t, "POST", s.URL+"/api/v3/agents/run-agents/"+id+"/run", s.Key, map[string]string{"X-Session-ID": "s-" + id}, `{"message":"count this"}`)
			m := wantErrorBody(t, "run", status, body, 500, "inference_failed", "nothing was charged")
			shown := string(body) // random ids may hold "-7"
			for _, id := range []any{m["run_id"], m["request_id"]} {
				shown = strings.ReplaceAll(shown, fmt.Sprint(id), "")
			}
			if strings.Contains(shown, huge) || strings.Contains(shown, "-7") {
				t.Errorf("the 500 shows the provider's counts: %s", body)
			}
			// Streamed: the text reached the client before the usage did, so the
			// failure is an error event, then [DONE].
			resp := postStream(t, s, id, "count this", "s-"+id)
			events := readEvents(resp, nil)
			resp.Body.Close()
			var names []string
			for _, ev := range events {
				if !ev.Comment {
					names = append(names, ev.Name)
				}
			}
			last := events[len(events)-1]
			var errEv sseEvent
			for _, ev := range events {
				if ev.Name == "error" {
					errEv = ev
				}
				if ev.Name == "done" {
					t.Errorf("stream finished with done: %+v", ev)
				}
			}
			if resp.StatusCode != 200 || last.Data != "[DONE]" || jsonField(errEv.Data, "code") != "inference_failed" ||
				!strings.HasPrefix(jsonField(errEv.Data, "run_id"), "run-") || jsonField(errEv.Data, "class") != "upstream_error" {
				t.Errorf("stream: status %d, events %v, error %q", resp.StatusCode, names, errEv.Data)
			}
			if failed, ok := failedRows(id); failed != 2 || ok != 0 {
				t.Errorf("ledger for %s: %d failed rows and %d ok, want 2 failed (whole and streamed)", id, failed, ok)
			}
			if _, err := op.Session(ctx, id, "s-"+id, "", 10); statusOf(err) != 404 {
				t.Errorf("a failed run stored a session turn: %v", err)
			}
			if b, _ := op.Billing(ctx); b.Balance != before.Balance || b.Held != 0 {
				t.Errorf("billing %+v, want balance %v and nothing held", b, before.Balance)
			}
		})
	}
	// The same counts through the OpenAI-compatible API fail the same way.
	for _, stream := range []bool{false, true} {
		status, _, body := rawCall(t, "POST", s.URL+"/v1/chat/completions", s.Key, nil,
			fmt.Sprintf(`{"model":"agent/huge_in","messages":[{"role":"user","content":"count"}],"stream":%v}`, stream))
		// OpenAI's envelope: a 502 before the first byte, an error chunk and [DONE]
		// after it.
		failure := `{"error":{"class":"upstream_error","code":"upstream_error","message":"inference failed: model huge_in failed (impossible usage reported); nothing was charged"`
		if stream {
			if status != 200 || !strings.Contains(string(body), "data: "+failure) || !strings.HasSuffix(strings.TrimSpace(string(body)), "data: [DONE]") {
				t.Errorf("streamed chat completion with 2^62 tokens: %d %s", status, body)
			}
		} else if status != 502 || !strings.HasPrefix(string(body), failure) {
			t.Errorf("chat completion with 2^62 tokens: %d %s", status, body)
		}
	}
	if failed, ok := failedRows("huge_in"); failed != 4 || ok != 0 {
		t.Errorf("ledger for huge_in after the chat completions: %d failed, %d ok, want 4 failed", failed, ok)
	}
	// A plausible count is charged exactly: 15 tokens at 1000 credits per million.
	r, err := op.Run(ctx, "fair", "count this", "")
	if err != nil || r.Usage.InputTokens != 11 || r.Usage.OutputTokens != 4 {
		t.Fatalf("fair run: %+v %v", r, err)
	}
	after, _ := op.Billing(ctx)
	if drop := toMicros(before.Balance) - toMicros(after.Balance); drop != 15*1000 {
		t.Errorf("the fair run cost %d micro-credits, want 15000", drop)
	}
	// The usage endpoints still answer, with sums that did not overflow.
	sum, err := op.UsageSummary(ctx, "model", "", "")
	if err != nil {
		t.Fatalf("usage summary: %v", err)
	}
	for _, row := range sum.Data {
		if row.InputTokens < 0 || row.OutputTokens < 0 || row.Cost < 0 || row.InputTokens > 1000 || row.OutputTokens > 1000 {
			t.Errorf("summary row %+v", row)
		}
		wantFailed := 2
		switch row.Group {
		case "fair":
			wantFailed = 0
		case "huge_in":
			wantFailed = 4
		}
		if row.Failed != int64(wantFailed) || (row.Group != "fair" && (row.Runs != 0 || row.TotalTokens != 0 || row.Cost != 0)) {
			t.Errorf("summary row %+v: want %d failed runs and nothing counted", row, wantFailed)
		}
	}
	if len(sum.Data) != len(bad)+1 {
		t.Errorf("summary by model has %d rows, want %d", len(sum.Data), len(bad)+1)
	}
	if got, err := op.Usage(ctx, "", ""); err != nil || got.TotalUsage != 1 || got.TotalTokens != 15 {
		t.Errorf("agents usage: %+v %v, want 1 run of 15 tokens", got, err)
	}
	for _, path := range []string{"/api/v3/usage/summary?group_by=day", "/api/v3/usage/summary?group_by=agent", "/api/v3/usage/summary?group_by=key",
		"/api/v3/agents/usage", "/api/v3/usage/records", "/api/v3/usage/records?format=csv"} {
		if status, _, body := rawCall(t, "GET", s.URL+path, s.Key, nil, ""); status != 200 || strings.Contains(string(body), huge) {
			t.Errorf("%s: %d %.200s", path, status, body)
		}
	}
	consistent(t, s)
	wantCheckClean(t, s, "after runs with impossible usage")
}

// ---------------------------------------------------------------------------
// 4. Smaller edges

// TestEmptyModel: "model": "" is 422 on create and on update.
//
// Old behaviour this fails on: an empty model skipped the catalog check and was
// stored, on create and on update, and the agent's runs then failed.
func TestEmptyModel(t *testing.T) {
	s := startServer(t, "", nil)
	for _, model := range []string{`""`, `"  "`} {
		status, _, body := rawCall(t, "POST", s.URL+"/api/v3/agents/create", s.Key, nil, `{"agent_name":"blank","agent_description":"d","model":`+model+`}`)
		wantErrorBody(t, "create with model "+model, status, body, 422, "invalid", `"model"`)
	}
	if _, err := s.client(s.Key).CreateAgent(context.Background(), supportBot()); err != nil {
		t.Fatal(err)
	}
	status, _, body := rawCall(t, "PATCH", s.URL+"/api/v3/agents/support_bot", s.Key, nil, `{"model":""}`)
	wantErrorBody(t, "update to model \"\"", status, body, 422, "invalid", `"model"`)
	a, err := s.client(s.Key).Agent(context.Background(), "support_bot")
	if err != nil || a.BaseModel != "offline" || a.Version != 1 {
		t.Errorf("after a refused update: %+v %v", a, err)
	}
	if list, _ := s.client(s.Key).Agents(context.Background(), true); len(list) != 1 {
		t.Errorf("%d agents stored", len(list))
	}
}

// TestReservedAgentNames: names a route claims in the place of an agent's id or
// name (create, usage, available_models, run-agents → run_agents), however they
// are spelled before normalization, are 422 naming the reservation, on create and
// on rename; nothing is stored.
//
// Old behaviour this fails on: such agents were created and then unreachable by
// name (GET /api/v3/agents/usage answers the usage summary).
func TestReservedAgentNames(t *testing.T) {
	s := startServer(t, "", nil)
	ctx := context.Background()
	op := s.client(s.Key)
	for _, name := range []string{"create", "usage", "Usage", "available_models", "Available Models", "run-agents", "run_agents", "RUN AGENTS", " create "} {
		status, _, body := rawCall(t, "POST", s.URL+"/api/v3/agents/create", s.Key, nil, fmt.Sprintf(`{"agent_name":%q,"agent_description":"d","model":"offline"}`, name))
		want := agentd.NormalizeName(name)
		wantErrorBody(t, "create "+name, status, body, 422, "invalid", "reserved", want, `"agent_name"`)
	}
	if _, err := op.CreateAgent(ctx, supportBot()); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"usage", "Run-Agents"} {
		status, _, body := rawCall(t, "PATCH", s.URL+"/api/v3/agents/support_bot", s.Key, nil, fmt.Sprintf(`{"agent_name":%q}`, name))
		wantErrorBody(t, "rename to "+name, status, body, 422, "invalid", "reserved")
	}
	list, err := op.Agents(ctx, true)
	if err != nil || len(list) != 1 || list[0].Name != "support_bot" {
		t.Errorf("agents after refused names: %v %v", list, err)
	}
	// Names that merely contain a reserved word are fine.
	for _, name := range []string{"usage bot", "create_more", "sessions"} {
		if _, err := op.CreateAgent(ctx, client.AgentSpec{Name: client.Ptr(name), Description: client.Ptr("d"), Model: client.Ptr("offline")}); err != nil {
			t.Errorf("create %q: %v", name, err)
		}
	}
}

// TestCheckAfterRetention: agentd check reports nothing after ledger.retention has
// pruned raw rows — several organizations with sessions, Idempotency-Key records
// and key budgets, swept in rounds that leave some organizations pruned, some
// partly, some not — and still reports real damage afterwards.
//
// Old behaviour this fails on: once retention pruned an organization's old rows,
// check reported its session turns and idempotency records as having no ledger row,
// its rollups of pruned days as disagreeing with the ledger, and its budgets as
// counting more than their rows.
func TestCheckAfterRetention(t *testing.T) {
	clk := newSweepClock() // 2026-11-28 12:00 UTC
	s := startServerWith(t, `
sweep_interval: 1m
ledger: {retention: 90m}
models:
  - {id: metered, provider: offline, price: {input: 1, output: 1}}
`, nil, clk.hooks())
	ctx := context.Background()
	op := s.client(s.Key)
	type tenant struct {
		name   string
		admin  *client.Client
		budget *client.Client // a key with a budget over its whole life (period none)
		month  *client.Client // a key with a monthly budget
	}
	var tenants []*tenant
	for _, name := range []string{agentd.DefaultOrgName, "acme", "globex", "initech"} {
		tn := &tenant{name: name, admin: op}
		spec := func(n string) client.KeySpec { return client.KeySpec{Name: n, Scopes: []string{"run", "usage"}} }
		if name != agentd.DefaultOrgName {
			o, err := op.CreateOrg(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			k, err := op.CreateKey(ctx, client.KeySpec{Name: "admin", OrgID: o.ID, Scopes: []string{"admin"}})
			if err != nil {
				t.Fatal(err)
			}
			tn.admin = s.client(k.Secret)
		}
		if _, err := op.GrantCredits(ctx, name, 10); err != nil {
			t.Fatal(err)
		}
		if _, err := tn.admin.CreateAgent(ctx, client.AgentSpec{Name: client.Ptr("bot"), Description: client.Ptr("d"), Model: client.Ptr("metered"),
			MaxToken: client.Ptr(20), Demonstrations: []client.Demonstration{{Input: "ping", Output: "pong"}}}); err != nil {
			t.Fatal(err)
		}
		b := spec("budgeted")
		b.Budget, b.BudgetPeriod = client.Ptr(5.0), "none"
		kb, err := tn.admin.CreateKey(ctx, b)
		if err != nil {
			t.Fatal(err)
		}
		m := spec("monthly")
		m.Budget, m.BudgetPeriod = client.Ptr(5.0), "monthly"
		km, err := tn.admin.CreateKey(ctx, m)
		if err != nil {
			t.Fatal(err)
		}
		tn.budget, tn.month = s.client(kb.Secret), s.client(km.Secret)
		tenants = append(tenants, tn)
	}
	step := 0
	// activity writes, in each organization named, session turns from the two
	// budgeted keys and the admin key, and an Idempotency-Key run and its replay.
	activity := func(names ...string) {
		t.Helper()
		step++
		for _, tn := range tenants {
			if !slices.Contains(names, tn.name) {
				continue
			}
			for i, c := range []*client.Client{tn.budget, tn.month, tn.admin} {
				if _, err := c.Run(ctx, "bot", "ping", fmt.Sprintf("s%d-%d", step, i)); err != nil {
					t.Fatal(err)
				}
			}
			key := tn.admin.Key
			for range 2 { // the second is a replay
				status, _, body := rawCall(t, "POST", s.URL+"/api/v3/agents/run-agents/bot/run", key,
					map[string]string{"Idempotency-Key": fmt.Sprintf("order-%d", step), "X-Session-ID": "idem"}, `{"message":"ping"}`)
				if status != 200 {
					t.Fatalf("idempotent run: %d %s", status, body)
				}
			}
		}
	}
	records := func(tn *tenant) int {
		t.Helper()
		page, err := tn.admin.UsageRecords(ctx, client.UsageFilter{Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		return len(page.Data)
	}
	const perStep = 4 // ledger rows an activity step writes per organization

	activity("default", "acme") // 12:00
	clk.sweep(t, time.Hour)     // 13:00: nothing is 90 minutes old
	wantCheckClean(t, s, "before any pruning")
	activity("acme", "globex") // 13:00
	clk.sweep(t, time.Hour)    // 14:00: rows before 12:30 go: default's all, acme's first step
	if got := []int{records(tenants[0]), records(tenants[1]), records(tenants[2])}; !slices.Equal(got, []int{0, perStep, perStep}) {
		t.Fatalf("ledger rows after the first pruning: %v, want [0 %d %d]", got, perStep, perStep)
	}
	wantCheckClean(t, s, "with default pruned whole, acme partly, globex not")
	activity("default", "globex") // 14:00
	clk.sweep(t, 30*time.Minute)  // 14:30: rows before 13:00 go: nothing new
	wantCheckClean(t, s, "after a round that pruned nothing")
	clk.sweep(t, 11*time.Hour)  // 01:30 on Nov 29: every row of Nov 28 goes
	activity("acme", "initech") // Nov 29, after the marks: whole days again
	clk.sweep(t, time.Minute)
	if got := []int{records(tenants[0]), records(tenants[1]), records(tenants[2]), records(tenants[3])}; !slices.Equal(got, []int{0, perStep, 0, perStep}) {
		t.Fatalf("ledger rows after the second pruning: %v, want [0 %d 0 %d]", got, perStep, perStep)
	}
	wantCheckClean(t, s, "with every organization pruned but one")
	// Sessions and idempotency records outlived their rows, and still work.
	if _, err := tenants[0].admin.Session(ctx, "bot", "s1-2", "", 10); err != nil {
		t.Errorf("a session whose ledger rows are pruned: %v", err)
	}
	status, h, body := rawCall(t, "POST", s.URL+"/api/v3/agents/run-agents/bot/run", tenants[0].admin.Key,
		map[string]string{"Idempotency-Key": "order-1", "X-Session-ID": "idem"}, `{"message":"ping"}`)
	if status != 200 || h.Get("Idempotent-Replayed") != "true" {
		t.Errorf("a replay whose run's row is pruned: %d %s", status, body)
	}
	wantCheckClean(t, s, "after a replay of a pruned run")

	// Real damage is still found: acme's newest session turn loses its ledger row
	// (after the mark, so its day's rollup disagrees too), and initech's balance
	// moves without a grant.
	if err := s.stop(); err != nil {
		t.Fatal(err)
	}
	raw, err := sql.Open("sqlite", s.dbPath)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	var runID string
	if err := raw.QueryRow(`SELECT t.run_id FROM session_turns t JOIN orgs o ON o.id = t.org_id WHERE o.name = 'acme' ORDER BY t.created_at DESC, t.run_id LIMIT 1`).Scan(&runID); err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Exec(`DELETE FROM ledger WHERE run_id = ?`, runID); err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Exec(`UPDATE orgs SET balance = balance + 1 WHERE name = 'initech'`); err != nil {
		t.Fatal(err)
	}
	out, err := checkCommand(t, s)
	if err == nil {
		t.Fatalf("check passed a damaged database:\n%s", out)
	}
	for _, want := range []string{"session turn of run " + runID, "rollup has", "(initech): balance"} {
		if !strings.Contains(out, want) {
			t.Errorf("check output lacks %q:\n%s", want, out)
		}
	}
}

// storageDetail is what a client is told when the disk is full.
const storageDetail = "storage unavailable (disk full, read-only or failing); nothing was written"

// wantStorageBody checks a 503's body (or a stream's error event): exactly the
// code and the safe detail, nothing of SQLite or the store.
func wantStorageBody(t *testing.T, what string, body []byte) {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("%s: %q is not JSON", what, body)
	}
	if m["code"] != "unavailable" || m["detail"] != storageDetail {
		t.Errorf("%s: code %v detail %q, want unavailable and %q", what, m["code"], m["detail"], storageDetail)
	}
	for _, leak := range []string{"store.", "SQLITE", "sqlite", "RecordRun", "database or disk", "(13)"} {
		if strings.Contains(string(body), leak) {
			t.Errorf("%s: body shows %q: %s", what, leak, body)
		}
	}
}

// TestStorageFullBody: the 503 of a full database (sqlite.max_mb, as a full disk)
// says exactly that storage is unavailable and nothing was written — for a run,
// a streamed run and an agent create — with no store function or SQLite code, and
// nothing is charged.
//
// Old behaviour this fails on: the detail went on with the cause, the store's
// wrapping and SQLite's message and code ("...; nothing was written:
// store.RecordRun(...): database or disk is full (13)").
func TestStorageFullBody(t *testing.T) {
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
	msg := `{"message":` + quoteJSON(big) + `}`
	full := false
	for i := 0; i < 200 && !full; i++ {
		status, _, body := rawCall(t, "POST", s.URL+"/api/v3/agents/run-agents/bot/run", s.Key, map[string]string{"X-Session-ID": "long"}, msg)
		switch status {
		case 200:
		case 503:
			full = true
			wantStorageBody(t, "run", body)
		default:
			t.Fatalf("run %d: %d %s", i, status, body)
		}
	}
	if !full {
		t.Fatal("200 runs of 31 KB fit in 1 MB: the cap did not bite")
	}
	before, _ := op.Billing(ctx)
	// A streamed run: the reply has started when the write fails, so the error
	// is an event with the same body.
	req, _ := http.NewRequest("POST", s.URL+"/api/v3/agents/run-agents/bot/run", strings.NewReader(`{"message":`+quoteJSON(big)+`,"stream":true}`))
	req.Header.Set("Authorization", "Bearer "+s.Key)
	req.Header.Set("X-Session-ID", "long")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode == 503 {
		b, _ := io.ReadAll(resp.Body)
		wantStorageBody(t, "streamed run before its first byte", b)
	} else {
		var errEv *sseEvent
		for _, ev := range readEvents(resp, nil) {
			if ev.Name == "error" {
				errEv = &ev
			}
		}
		if errEv == nil {
			t.Errorf("streamed run on a full database: no error event (status %d)", resp.StatusCode)
		} else {
			var m map[string]any
			json.Unmarshal([]byte(errEv.Data), &m)
			delete(m, "error")
			b, _ := json.Marshal(m)
			wantStorageBody(t, "streamed run's error event", b)
			if !strings.Contains(errEv.Data, storageDetail) || strings.Contains(errEv.Data, "sqlite") || strings.Contains(errEv.Data, "SQLITE") {
				t.Errorf("error event %s", errEv.Data)
			}
		}
	}
	resp.Body.Close()
	// An agent too big for what is left.
	spec := bigAgentSpec("wide", 600_000)
	b, _ := json.Marshal(spec)
	status, _, body := rawCall(t, "POST", s.URL+"/api/v3/agents/create", s.Key, nil, string(b))
	if status != 503 {
		t.Errorf("create on a full database: %d %.300s", status, body)
	} else {
		wantStorageBody(t, "create", body)
	}
	after, _ := op.Billing(ctx)
	if after.Balance != before.Balance || after.Held != 0 {
		t.Errorf("billing moved on a full database: %+v → %+v", before, after)
	}
	if _, err := op.Agent(ctx, "wide"); statusOf(err) != 404 {
		t.Errorf("the refused agent exists: %v", err)
	}
	consistent(t, s)
}
