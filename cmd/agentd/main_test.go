package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/agentd/agentd/client"
	"github.com/agentd/agentd/internal/store"
)

// testServer is agentd booted through run() on 127.0.0.1:0 with a temp database.
type testServer struct {
	URL    string
	Key    string // the bootstrap operator key
	Banner string // what the server printed before it listened (a minted key, if any)
	dbPath string
	cancel context.CancelFunc
	done   chan error

	stopOnce sync.Once
	stopErr  error
}

// stop shuts the server down (gracefully, as SIGTERM does) and returns what run
// returned. It may be called more than once.
func (s *testServer) stop() error {
	s.stopOnce.Do(func() {
		http.DefaultClient.CloseIdleConnections()
		s.cancel()
		s.stopErr = <-s.done
	})
	return s.stopErr
}

const testKey = "agd_test_bootstrap_key_0123456789"

// startServer boots the real program. config is YAML for --config ("" for none);
// env adds environment variables.
func startServer(t testing.TB, config string, env map[string]string) *testServer {
	t.Helper()
	return startServerWith(t, config, env, nil)
}

// startServerWith is startServer with hooks into the program (a clock, a sweep
// callback); nil hooks run it exactly as main does.
func startServerWith(t testing.TB, config string, env map[string]string, hooks *serveHooks) *testServer {
	t.Helper()
	return startServerIn(t, t.TempDir(), config, env, hooks, nil)
}

// startServerIn is startServerWith on the database dir/agentd.db, which may already
// exist: stopping one server and starting another on the same dir is a real
// restart. stderr, when not nil, receives the server's log.
func startServerIn(t testing.TB, dir, config string, env map[string]string, hooks *serveHooks, stderr io.Writer) *testServer {
	t.Helper()
	if stderr == nil {
		stderr = io.Discard
	}
	args := []string{"serve", "--addr", "127.0.0.1:0", "--db", "sqlite:" + filepath.Join(dir, "agentd.db")}
	if config != "" {
		f := filepath.Join(dir, "agentd.yaml")
		if err := os.WriteFile(f, []byte(config), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--config", f)
	}
	getenv := func(k string) string {
		if v, ok := env[k]; ok {
			return v
		}
		if k == "AGENTD_BOOTSTRAP_KEY" {
			return testKey
		}
		return ""
	}
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	s := &testServer{Key: testKey, dbPath: filepath.Join(dir, "agentd.db"), cancel: cancel, done: make(chan error, 1)}
	go func() {
		var err error
		if hooks == nil {
			err = run(ctx, args, getenv, strings.NewReader(""), pw, stderr)
		} else {
			err = serve(ctx, args[1:], getenv, pw, stderr, hooks)
		}
		pw.CloseWithError(fmt.Errorf("server exited: %v", err))
		s.done <- err
	}()
	sc := bufio.NewScanner(pr)
	var banner strings.Builder
	for sc.Scan() {
		if u, ok := strings.CutPrefix(sc.Text(), "agentd listening on "); ok {
			s.URL = u
			break
		}
		banner.WriteString(sc.Text() + "\n")
	}
	s.Banner = banner.String()
	if s.URL == "" {
		cancel()
		t.Fatalf("server did not start: %v", sc.Err())
	}
	go io.Copy(io.Discard, pr)
	t.Cleanup(func() {
		// Connections a client dialed but never used look new to the server, and a
		// graceful shutdown waits 5 s for new connections: stop closes them first.
		if err := s.stop(); err != nil {
			t.Errorf("server: %v", err)
		}
	})
	return s
}

func (s *testServer) client(key string) *client.Client { return client.New(s.URL, key) }

func statusOf(err error) int {
	var ce *client.Error
	if errors.As(err, &ce) {
		return ce.Status
	}
	return 0
}

func supportBot() client.AgentSpec {
	return client.AgentSpec{
		Name: client.Ptr("Support Bot"), Description: client.Ptr("Answers support questions"),
		Model: client.Ptr("offline"), Instructions: client.Ptr("Be concise."),
		Demonstrations: []client.Demonstration{
			{Input: "How do I reset my password?", Output: "Use Settings, then Reset password."},
			{Input: "What are your opening hours?", Output: "8:00 to 20:00 every day."},
		},
	}
}

// TestWalkthrough follows the README: health, create, get, list, run, a multi-turn
// session, a 402 and a 404.
func TestWalkthrough(t *testing.T) {
	s := startServer(t, "models:\n  - id: offline-premium\n    provider: offline\n    price: {input: 2.5, output: 10}\n", nil)
	ctx := context.Background()
	op := s.client(s.Key)

	resp, err := http.Get(s.URL + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("healthz: %v %v", resp, err)
	}
	resp.Body.Close()

	a, err := op.CreateAgent(ctx, supportBot())
	if err != nil {
		t.Fatal(err)
	}
	if a.Name != "support_bot" || !strings.HasPrefix(a.ID, "agent-") || a.Status != "ACTIVE" || a.UsageCount != 0 || a.LastUsed != nil {
		t.Fatalf("created agent = %+v", a)
	}
	if want := s.URL + "/api/v3/agents/run-agents/support_bot/run"; a.Endpoint != want {
		t.Errorf("endpoint = %q, want %q", a.Endpoint, want)
	}
	if len(a.Demonstrations) != 2 || a.Temperature != 0.7 || a.MaxToken != 1000 || a.SystemPrompt != "Be concise." {
		t.Errorf("defaults/fields wrong: %+v", a)
	}
	// Duplicate names answer 400 with "already exists", which clients match.
	_, err = op.CreateAgent(ctx, supportBot())
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Status != 400 || !strings.Contains(ce.Detail, "already exists") {
		t.Fatalf("duplicate create: %v", err)
	}

	for _, ref := range []string{a.ID, "support_bot"} {
		got, err := op.Agent(ctx, ref)
		if err != nil || got.ID != a.ID {
			t.Fatalf("get %s: %v %v", ref, got, err)
		}
	}

	// One stateless run: reply from the matching demonstration, exact usage.
	res, err := op.Run(ctx, "support_bot", "how do i reset my password", "")
	if err != nil {
		t.Fatal(err)
	}
	if res.Response != "Use Settings, then Reset password." || res.AgentID != a.ID || res.Model != "offline" {
		t.Errorf("run = %+v", res)
	}
	if res.Usage.InputTokens <= 0 || res.Usage.OutputTokens <= 0 || res.Usage.TotalTokens != res.Usage.InputTokens+res.Usage.OutputTokens {
		t.Errorf("usage = %+v", res.Usage)
	}

	// A session remembers: the offline model reports the earlier turns, and the
	// prompt grows by the stored turns.
	var inputs []int
	for i, msg := range []string{"hello there", "what are your opening hours", "thanks"} {
		r, err := op.Run(ctx, "support_bot", msg, "walk-1")
		if err != nil {
			t.Fatal(err)
		}
		if r.SessionID == nil || *r.SessionID != "walk-1" {
			t.Errorf("session_id = %v", r.SessionID)
		}
		if i == 2 && !strings.Contains(r.Response, "2 earlier turns") {
			t.Errorf("turn 3 reply %q does not see 2 earlier turns", r.Response)
		}
		inputs = append(inputs, r.Usage.InputTokens)
	}
	if !(inputs[0] < inputs[1] && inputs[1] < inputs[2]) {
		t.Errorf("input tokens do not grow with history: %v", inputs)
	}

	got, err := op.Agent(ctx, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.UsageCount != 4 || got.LastUsed == nil || got.PerformanceMetrics.TotalRequests != 4 {
		t.Errorf("stats after 4 runs: usage_count=%d last_used=%v metrics=%+v", got.UsageCount, got.LastUsed, got.PerformanceMetrics)
	}

	// 402 on a priced model with no credits, with required and available.
	if _, err := op.CreateAgent(ctx, client.AgentSpec{Name: client.Ptr("Premium"), Description: client.Ptr("p"), Model: client.Ptr("offline-premium"), MaxToken: client.Ptr(100)}); err != nil {
		t.Fatal(err)
	}
	_, err = op.Run(ctx, "premium", "hello", "")
	if !errors.As(err, &ce) || ce.Status != 402 || ce.Code != "insufficient_quota" {
		t.Fatalf("want 402, got %v", err)
	}
	if req, _ := ce.Body["required"].(float64); req <= 0 {
		t.Errorf("402 body lacks required: %v", ce.Body)
	}
	if av, ok := ce.Body["available"].(float64); !ok || av != 0 {
		t.Errorf("402 body available = %v", ce.Body["available"])
	}
	if _, err := op.GrantCredits(ctx, "default", 1); err != nil {
		t.Fatal(err)
	}
	pr, err := op.Run(ctx, "premium", "hello", "")
	if err != nil {
		t.Fatal(err)
	}
	b, err := op.Billing(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// 2.5 credits per million input tokens, 10 per million output, rounded up.
	wantCost := (int64(pr.Usage.InputTokens)*2_500_000 + int64(pr.Usage.OutputTokens)*10_000_000 + 999_999) / 1_000_000
	if got := int64(b.Balance*1e6 + 0.5); got != 1_000_000-wantCost || b.Held != 0 {
		t.Errorf("balance = %v held = %v, want %d micro-credits charged", b.Balance, b.Held, wantCost)
	}

	// 404: unknown name, and a display name with a hint.
	if _, err := op.Run(ctx, "nobody", "hi", ""); statusOf(err) != 404 {
		t.Errorf("unknown agent: %v", err)
	}
	_, err = op.Run(ctx, "Support Bot", "hi", "")
	if !errors.As(err, &ce) || ce.Status != 404 || !strings.Contains(ce.Detail, "support_bot") {
		t.Errorf("near miss: %v", err)
	}

	// Update makes a new version and renames the endpoint; inactive agents 404.
	up, err := op.UpdateAgent(ctx, a.ID, client.AgentSpec{Name: client.Ptr("Updated Support Bot"), Temperature: client.Ptr(0.5)})
	if err != nil {
		t.Fatal(err)
	}
	if up.Name != "updated_support_bot" || up.Version != 2 || up.Temperature != 0.5 || !strings.HasSuffix(up.Endpoint, "/run-agents/updated_support_bot/run") {
		t.Errorf("updated = %+v", up)
	}
	if _, err := op.UpdateAgent(ctx, a.ID, client.AgentSpec{Status: client.Ptr("inactive")}); err != nil {
		t.Fatal(err)
	}
	if _, err := op.Run(ctx, "updated_support_bot", "hi", ""); statusOf(err) != 404 {
		t.Errorf("run inactive: %v", err)
	}
	if _, err := op.Agent(ctx, a.ID); statusOf(err) != 404 {
		t.Errorf("get inactive: %v", err)
	}
	list, err := op.Agents(ctx, false)
	if err != nil || len(list) != 1 {
		t.Errorf("active list = %d agents, %v", len(list), err)
	}
	list, err = op.Agents(ctx, true)
	if err != nil || len(list) != 2 {
		t.Errorf("list with inactive = %d agents, %v", len(list), err)
	}
	if err := op.DeleteAgent(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	if err := op.DeleteAgent(ctx, a.ID); statusOf(err) != 404 {
		t.Errorf("second delete: %v", err)
	}
}

// TestTenantIsolation: organization B cannot see, run, change or delete A's agent.
func TestTenantIsolation(t *testing.T) {
	s := startServer(t, "", nil)
	ctx := context.Background()
	op := s.client(s.Key)
	a, err := op.CreateAgent(ctx, supportBot())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := op.Run(ctx, a.Name, "hello", "shared-session"); err != nil {
		t.Fatal(err)
	}
	orgB, err := op.CreateOrg(ctx, "org_b")
	if err != nil {
		t.Fatal(err)
	}
	kb, err := op.CreateKey(ctx, client.KeySpec{Name: "b admin", OrgID: orgB.ID, Scopes: []string{"admin"}})
	if err != nil {
		t.Fatal(err)
	}
	b := s.client(kb.Secret)
	for name, call := range map[string]func() error{
		"get by id":   func() error { _, err := b.Agent(ctx, a.ID); return err },
		"get by name": func() error { _, err := b.Agent(ctx, a.Name); return err },
		"run":         func() error { _, err := b.Run(ctx, a.Name, "hello", "shared-session"); return err },
		"update": func() error {
			_, err := b.UpdateAgent(ctx, a.ID, client.AgentSpec{Temperature: client.Ptr(1.0)})
			return err
		},
		"delete": func() error { return b.DeleteAgent(ctx, a.ID) },
		"revoke A's key": func() error {
			keys, err := op.Keys(ctx)
			if err != nil {
				return err
			}
			return b.RevokeKey(ctx, keys[0].ID)
		},
	} {
		if err := call(); statusOf(err) != 404 {
			t.Errorf("%s: want 404, got %v", name, err)
		}
	}
	list, err := b.Agents(ctx, true)
	if err != nil || len(list) != 0 {
		t.Errorf("B lists %d agents (%v)", len(list), err)
	}
	// B's own agent of the same name is a different agent with its own history.
	ab, err := b.CreateAgent(ctx, supportBot())
	if err != nil {
		t.Fatal(err)
	}
	if ab.ID == a.ID || ab.Name != a.Name {
		t.Fatalf("B's agent = %+v", ab)
	}
	r, err := b.Run(ctx, ab.Name, "hello", "shared-session")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(r.Response, "0 earlier turns") {
		t.Errorf("B's session saw A's history: %q", r.Response)
	}
	// A non-operator cannot reach the admin endpoints.
	if _, err := b.CreateOrg(ctx, "sneaky"); statusOf(err) != 403 {
		t.Errorf("admin key creating org: %v", err)
	}
	if _, err := b.GrantCredits(ctx, orgB.ID, 100); statusOf(err) != 403 {
		t.Errorf("admin key granting credits: %v", err)
	}
}

// TestSessionIsolation: two keys using the same X-Session-ID do not share history;
// two keys of the same owner do.
func TestSessionIsolation(t *testing.T) {
	s := startServer(t, "", nil)
	ctx := context.Background()
	op := s.client(s.Key)
	if _, err := op.CreateAgent(ctx, supportBot()); err != nil {
		t.Fatal(err)
	}
	mk := func(name, owner string) *client.Client {
		k, err := op.CreateKey(ctx, client.KeySpec{Name: name, Owner: owner, Scopes: []string{"run"}})
		if err != nil {
			t.Fatal(err)
		}
		return s.client(k.Secret)
	}
	k1, k2 := mk("one", ""), mk("two", "")
	k3, k4 := mk("alice laptop", "alice"), mk("alice phone", "alice")
	turn := func(c *client.Client) string {
		r, err := c.Run(ctx, "support_bot", "hello", "same-id")
		if err != nil {
			t.Fatal(err)
		}
		return r.Response
	}
	turn(k1)
	turn(k1)
	if got := turn(k2); !strings.Contains(got, "0 earlier turns") {
		t.Errorf("key two sees key one's history: %q", got)
	}
	if got := turn(k1); !strings.Contains(got, "2 earlier turns") {
		t.Errorf("key one lost its history: %q", got)
	}
	turn(k3)
	if got := turn(k4); !strings.Contains(got, "1 earlier turn") {
		t.Errorf("same owner should share the session: %q", got)
	}
}

// TestConcurrentRunsNeverOverspend: 50 parallel runs against a balance that covers
// 10; at most 10 succeed, the rest get 402, and money adds up exactly.
func TestConcurrentRunsNeverOverspend(t *testing.T) {
	s := startServer(t, "models:\n  - id: metered\n    provider: offline\n    price: {input: 1000, output: 1000}\n", nil)
	ctx := context.Background()
	op := s.client(s.Key)
	if _, err := op.CreateAgent(ctx, client.AgentSpec{
		Name: client.Ptr("metered"), Description: client.Ptr("m"), Model: client.Ptr("metered"), MaxToken: client.Ptr(40),
		Demonstrations: []client.Demonstration{{Input: "ping", Output: "pong"}},
	}); err != nil {
		t.Fatal(err)
	}
	// Measure one run's exact cost, then fund exactly 10 of them.
	if _, err := op.GrantCredits(ctx, "default", 10); err != nil {
		t.Fatal(err)
	}
	r, err := op.Run(ctx, "metered", "ping", "")
	if err != nil {
		t.Fatal(err)
	}
	cost := (int64(r.Usage.InputTokens+r.Usage.OutputTokens)*1000*1_000_000 + 999_999) / 1_000_000
	b, _ := op.Billing(ctx)
	if _, err := op.GrantCredits(ctx, "default", -b.Balance); err != nil {
		t.Fatal(err)
	}
	if _, err := op.GrantCredits(ctx, "default", float64(10*cost)/1e6); err != nil {
		t.Fatal(err)
	}
	start, _ := op.Billing(ctx)

	var wg sync.WaitGroup
	var mu sync.Mutex
	ok, paymentRequired, other := 0, 0, []error{}
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := op.Run(ctx, "metered", "ping", "")
			mu.Lock()
			defer mu.Unlock()
			switch statusOf(err) {
			case 0:
				if err != nil {
					other = append(other, err)
				} else {
					ok++
				}
			case 402:
				paymentRequired++
			default:
				other = append(other, err)
			}
		}()
	}
	wg.Wait()
	if len(other) > 0 || ok < 1 || ok > 10 || ok+paymentRequired != 50 {
		t.Fatalf("ok=%d 402=%d other=%v", ok, paymentRequired, other)
	}
	end, _ := op.Billing(ctx)
	if end.Held != 0 || end.Balance < 0 {
		t.Errorf("after: %+v", end)
	}
	drop := int64((start.Balance-end.Balance)*1e6 + 0.5)
	if drop != int64(ok)*cost {
		t.Errorf("balance dropped %d micro-credits for %d runs of %d", drop, ok, cost)
	}
	// The ledger agrees with the balance, checked against the database itself.
	checkLedger(t, s, "default", int64(ok)+1, int64(ok+1)*cost)
	t.Logf("%d succeeded, %d got 402", ok, paymentRequired)
}

// TestBadInput: every bad input gets its status and error shape, and nothing is written.
func TestBadInput(t *testing.T) {
	s := startServer(t, "", map[string]string{"AGENTD_MAX_MESSAGE_CHARS": "100", "AGENTD_MAX_BODY_BYTES": "4096"})
	ctx := context.Background()
	op := s.client(s.Key)
	if _, err := op.CreateAgent(ctx, supportBot()); err != nil {
		t.Fatal(err)
	}
	runOnly, err := op.CreateKey(ctx, client.KeySpec{Name: "runner", Scopes: []string{"run"}})
	if err != nil {
		t.Fatal(err)
	}
	revoked, err := op.CreateKey(ctx, client.KeySpec{Name: "gone", Scopes: []string{"run"}})
	if err != nil {
		t.Fatal(err)
	}
	// The key works, then is revoked, then is refused on its next request.
	if _, err := s.client(revoked.Secret).Run(ctx, "support_bot", "hello", ""); err != nil {
		t.Fatal(err)
	}
	if err := op.RevokeKey(ctx, revoked.ID); err != nil {
		t.Fatal(err)
	}
	run := "/api/v3/agents/run-agents/support_bot/run"
	create := "/api/v3/agents/create"
	long := strings.Repeat("x", 101)
	cases := []struct {
		name, method, path, key, body string
		header                        map[string]string
		status                        int
		code                          string
	}{
		{"no key", "POST", run, "", `{"message":"hi"}`, nil, 401, "unauthenticated"},
		{"bad key", "POST", run, "agd_nope", `{"message":"hi"}`, nil, 401, "unauthenticated"},
		{"revoked key", "POST", run, revoked.Secret, `{"message":"hi"}`, nil, 401, "unauthenticated"},
		{"missing scope", "POST", create, runOnly.Secret, `{"agent_name":"x","agent_description":"d","model":"offline"}`, nil, 403, "forbidden"},
		{"malformed json", "POST", run, s.Key, `{"message":`, nil, 422, "invalid"},
		{"not an object", "POST", run, s.Key, `["hi"]`, nil, 422, "invalid"},
		{"missing message", "POST", run, s.Key, `{"stream":false}`, nil, 422, "invalid"},
		{"message wrong type", "POST", run, s.Key, `{"message":42}`, nil, 422, "invalid"},
		{"empty message", "POST", run, s.Key, `{"message":""}`, nil, 422, "invalid"},
		{"oversized message", "POST", run, s.Key, `{"message":"` + long + `"}`, nil, 422, "invalid"},
		{"body too large", "POST", run, s.Key, `{"message":"hi","pad":"` + strings.Repeat("p", 5000) + `"}`, nil, 413, "payload_too_large"},
		{"session id too long", "POST", run, s.Key, `{"message":"hi"}`, map[string]string{"X-Session-ID": strings.Repeat("s", 129)}, 422, "invalid"},
		{"session id bad chars", "POST", run, s.Key, `{"message":"hi"}`, map[string]string{"X-Session-ID": "a b/c"}, 422, "invalid"},
		{"temperature too high", "POST", create, s.Key, `{"agent_name":"t","agent_description":"d","model":"offline","temperature":2.5}`, nil, 422, "invalid"},
		{"temperature negative", "POST", create, s.Key, `{"agent_name":"t","agent_description":"d","model":"offline","temperature":-0.1}`, nil, 422, "invalid"},
		{"max tokens zero", "POST", create, s.Key, `{"agent_name":"t","agent_description":"d","model":"offline","max_token":0}`, nil, 422, "invalid"},
		{"max tokens above model", "POST", create, s.Key, `{"agent_name":"t","agent_description":"d","model":"offline","max_tokens":999999}`, nil, 422, "invalid"},
		{"model not in catalog", "POST", create, s.Key, `{"agent_name":"t","agent_description":"d","model":"gpt-9"}`, nil, 400, "model_not_available"},
		{"name normalizes to empty", "POST", create, s.Key, `{"agent_name":"!!!","agent_description":"d","model":"offline"}`, nil, 422, "invalid"},
		{"missing required fields", "POST", create, s.Key, `{}`, nil, 422, "invalid"},
		{"demonstration without output", "POST", create, s.Key, `{"agent_name":"t","agent_description":"d","model":"offline","demonstrations":[{"input":"a"}]}`, nil, 422, "invalid"},
		{"bad include_inactive", "GET", "/api/v3/agents?include_inactive=maybe", s.Key, "", nil, 422, "invalid"},
		{"unknown route", "GET", "/api/v3/nothing", s.Key, "", nil, 404, "not_found"},
		{"wrong method", "PUT", "/api/v3/agents/create", s.Key, "{}", nil, 405, "method_not_allowed"},
		{"negative correction below zero", "POST", "/api/v3/admin/orgs/default/credits", s.Key, `{"amount":-5}`, nil, 400, "bad_request"},
		{"unknown scope", "POST", "/api/v3/keys", s.Key, `{"name":"k","scopes":["root"]}`, nil, 422, "invalid"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, s.URL+tc.path, strings.NewReader(tc.body))
			if tc.key != "" {
				req.Header.Set("Authorization", "Bearer "+tc.key)
			}
			for k, v := range tc.header {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, body)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("content type %q", ct)
			}
			if !strings.Contains(string(body), `"code":"`+tc.code+`"`) || !strings.Contains(string(body), `"detail":`) {
				t.Errorf("body %s lacks code %q and detail", body, tc.code)
			}
			if tc.status == 422 && !strings.Contains(string(body), `"loc":`) {
				t.Errorf("422 body is not in FastAPI's shape: %s", body)
			}
		})
	}
	// Nothing was written by any of them: one agent, and one run in the ledger.
	list, err := op.Agents(ctx, true)
	if err != nil || len(list) != 1 || list[0].UsageCount != 1 {
		t.Errorf("after bad input: %d agents, %v", len(list), err)
	}
	checkLedger(t, s, "default", 1, 0)
}

// TestTrailingSlashes: every route accepts a trailing slash without redirecting.
func TestTrailingSlashes(t *testing.T) {
	s := startServer(t, "", nil)
	body := `{"agent_name":"Slash Bot","agent_description":"d","model":"offline","demonstrations":[{"user_input":"hi","model_output":"hello"}]}`
	for _, tc := range []struct{ method, path, body string }{
		{"POST", "/api/v3/agents/create/", body},
		{"GET", "/api/v3/agents/", ""},
		{"GET", "/api/v3/agents/slash_bot/", ""},
		{"POST", "/api/v3/agents/run-agents/slash_bot/run/", `{"message":"hi","stream":false}`},
		{"GET", "/api/v3/models/base/", ""},
		{"GET", "/api/v3/agents/available_models/", ""},
	} {
		req, _ := http.NewRequest(tc.method, s.URL+tc.path, strings.NewReader(tc.body))
		req.Header.Set("Authorization", "Bearer "+s.Key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("%s %s: %d %s", tc.method, tc.path, resp.StatusCode, b)
		}
		if tc.path == "/api/v3/agents/run-agents/slash_bot/run/" && !strings.Contains(string(b), `"response":"hello"`) {
			t.Errorf("run with user_input/model_output demonstration: %s", b)
		}
	}
}

// TestBootstrapKeyPrintedOnce: with no AGENTD_BOOTSTRAP_KEY, the first start prints
// an operator key and later starts do not.
func TestBootstrapKeyPrintedOnce(t *testing.T) {
	dir := t.TempDir()
	db := "sqlite:" + filepath.Join(dir, "agentd.db")
	start := func() string {
		ctx, cancel := context.WithCancel(context.Background())
		pr, pw := io.Pipe()
		done := make(chan error, 1)
		go func() {
			err := run(ctx, []string{"serve", "--addr", "127.0.0.1:0", "--db", db}, func(string) string { return "" }, nil, pw, io.Discard)
			pw.Close()
			done <- err
		}()
		var out strings.Builder
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			out.WriteString(sc.Text() + "\n")
			if strings.HasPrefix(sc.Text(), "agentd listening on ") {
				break
			}
		}
		cancel()
		go io.Copy(io.Discard, pr)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		return out.String()
	}
	first := start()
	var key string
	for _, f := range strings.Fields(first) {
		if strings.HasPrefix(f, "agd_") {
			key = f
		}
	}
	if key == "" {
		t.Fatalf("first start printed no key:\n%s", first)
	}
	if second := start(); strings.Contains(second, "agd_") {
		t.Errorf("second start printed a key again:\n%s", second)
	}
}

// checkLedger compares the ledger in the database with what the API reported.
func checkLedger(t *testing.T, s *testServer, org string, wantRuns, wantCost int64) {
	t.Helper()
	ctx := context.Background()
	db, err := store.Open(ctx, "sqlite:"+s.dbPath, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	o, err := db.Org(ctx, org)
	if err != nil {
		t.Fatal(err)
	}
	tot, err := db.LedgerTotals(ctx, o.ID)
	if err != nil {
		t.Fatal(err)
	}
	if int64(tot.Runs) != wantRuns || int64(tot.Cost) != wantCost {
		t.Errorf("ledger of %s: %d runs costing %d, want %d runs costing %d", org, tot.Runs, tot.Cost, wantRuns, wantCost)
	}
	if o.Balance != tot.Grants-tot.Cost {
		t.Errorf("stored balance %d != grants %d - ledger costs %d", o.Balance, tot.Grants, tot.Cost)
	}
}
