package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/client"
	"github.com/agentd/agentd/internal/clock/clocktest"
	"github.com/agentd/agentd/internal/store"
)

// exactConfig is a model whose runs cost exactly their hold: output is free, so
// the hold (input tokens × input price) is the charge. Then "the affordable runs
// succeed" has one exact answer, whatever the timing.
const exactConfig = `
models:
  - id: exact
    provider: offline
    price: {input: 1000, output: 0}
`

// moneyServer starts agentd with an agent on the exact model and returns the
// operator client and one run's cost in micro-credits (measured with /estimate,
// then checked against a real run's charge).
func moneyServer(t *testing.T) (*testServer, *client.Client, int64) {
	t.Helper()
	s := startServer(t, exactConfig, nil)
	ctx := context.Background()
	op := s.client(s.Key)
	if _, err := op.CreateAgent(ctx, client.AgentSpec{
		Name: client.Ptr("exact"), Description: client.Ptr("d"), Model: client.Ptr("exact"), MaxToken: client.Ptr(40),
		Demonstrations: []client.Demonstration{{Input: "ping", Output: "pong"}},
	}); err != nil {
		t.Fatal(err)
	}
	var est struct {
		Hold       float64 `json:"hold"`
		Affordable bool    `json:"affordable"`
	}
	if err := op.Do(ctx, "POST", "/api/v3/agents/run-agents/exact/estimate", nil, map[string]string{"message": "ping"}, &est); err != nil {
		t.Fatal(err)
	}
	cost := int64(est.Hold*1e6 + 0.5)
	if cost <= 0 || est.Affordable {
		t.Fatalf("estimate = %+v with no credits", est)
	}
	if _, err := op.GrantCredits(ctx, "default", 1); err != nil {
		t.Fatal(err)
	}
	before, _ := op.Billing(ctx)
	if _, err := op.Run(ctx, "exact", "ping", ""); err != nil {
		t.Fatal(err)
	}
	after, _ := op.Billing(ctx)
	if got := int64((before.Balance-after.Balance)*1e6 + 0.5); got != cost {
		t.Fatalf("a run cost %d micro-credits, the estimate held %d", got, cost)
	}
	return s, op, cost
}

// setBalance makes the default organization's balance exactly micros.
func setBalance(t *testing.T, op *client.Client, micros int64) {
	t.Helper()
	b, err := op.Billing(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	delta := float64(micros-int64(b.Balance*1e6+0.5)) / 1e6
	if _, err := op.GrantCredits(context.Background(), "default", delta); err != nil {
		t.Fatal(err)
	}
}

// runKeys mints n run keys, with budgets (credits) when given.
func runKeys(t *testing.T, s *testServer, op *client.Client, budgets ...float64) ([]*client.Client, []string) {
	t.Helper()
	secrets, ids := mintKeys(t, op, budgets...)
	var out []*client.Client
	for _, secret := range secrets {
		out = append(out, s.client(secret))
	}
	return out, ids
}

// mintKeys mints run keys through op, with daily budgets (credits) where > 0, and
// returns their secrets and ids.
func mintKeys(t *testing.T, op *client.Client, budgets ...float64) (secrets, ids []string) {
	t.Helper()
	for i, b := range budgets {
		spec := client.KeySpec{Name: fmt.Sprintf("runner-%d", i), Scopes: []string{"run"}}
		if b > 0 {
			spec.Budget, spec.BudgetPeriod = client.Ptr(b), "daily"
		}
		k, err := op.CreateKey(context.Background(), spec)
		if err != nil {
			t.Fatal(err)
		}
		secrets, ids = append(secrets, k.Secret), append(ids, k.ID)
	}
	return secrets, ids
}

// storm runs n runs per client concurrently and counts outcomes per client.
func storm(t *testing.T, clients []*client.Client, n int) (ok, paid []int, limits map[string]int) {
	t.Helper()
	each := make([][]*client.Client, len(clients))
	for i, c := range clients {
		each[i] = []*client.Client{c}
	}
	return stormOver(t, each, n)
}

// stormOver runs n runs per key concurrently, the j-th run of key i through
// clients[i][(i+j) % len], and counts outcomes per key: 200s, 402s, and the 402s
// by the limit they name. Any other outcome fails the test.
func stormOver(t *testing.T, clients [][]*client.Client, n int) (ok, paid []int, limits map[string]int) {
	t.Helper()
	ok, paid = make([]int, len(clients)), make([]int, len(clients))
	limits = map[string]int{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i, cs := range clients {
		for j := range n {
			wg.Go(func() {
				_, err := cs[(i+j)%len(cs)].Run(context.Background(), "exact", "ping", "")
				mu.Lock()
				defer mu.Unlock()
				var e *client.Error
				switch {
				case err == nil:
					ok[i]++
				case errorsAs(err, &e) && e.Status == 402:
					paid[i]++
					limits[fmt.Sprint(e.Body["limit"])]++
				default:
					t.Errorf("run: %v", err)
				}
			})
		}
	}
	wg.Wait()
	return ok, paid, limits
}

func sum(xs []int) int {
	n := 0
	for _, x := range xs {
		n += x
	}
	return n
}

// consistent opens the database beside the running server and runs the checker.
func consistent(t *testing.T, s *testServer) {
	t.Helper()
	db, err := store.Open(context.Background(), "sqlite:"+s.dbPath, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	problems, err := db.Check(context.Background())
	if err != nil || len(problems) > 0 {
		t.Errorf("check: %v %q", err, problems)
	}
}

// TestConcurrentRunsAgainstBalance: 200 concurrent runs from 4 keys against a
// balance that covers 37 (and most of a 38th): exactly 37 succeed, the rest get
// 402, nothing stays held, and the balance drop equals the ledger's charges.
func TestConcurrentRunsAgainstBalance(t *testing.T) {
	s, op, cost := moneyServer(t)
	setBalance(t, op, 37*cost+cost-1)
	start, _ := op.Billing(context.Background())
	clients, _ := runKeys(t, s, op, 0, 0, 0, 0)
	ok, paid, limits := storm(t, clients, 50)
	if sum(ok) != 37 || sum(paid) != 163 || limits["balance"] != 163 {
		t.Fatalf("ok %v (%d), 402 %v (%d), limits %v; want exactly 37 successes", ok, sum(ok), paid, sum(paid), limits)
	}
	end, _ := op.Billing(context.Background())
	if end.Held != 0 || int64(end.Balance*1e6+0.5) != cost-1 {
		t.Errorf("after: %+v, want held 0 and balance %d micro-credits", end, cost-1)
	}
	if drop := int64((start.Balance-end.Balance)*1e6 + 0.5); drop != 37*cost {
		t.Errorf("balance dropped %d, want %d", drop, 37*cost)
	}
	rows, balance := ledger(t, s)
	var charged int64
	for _, r := range rows {
		charged += int64(r.Cost)
	}
	if charged != 38*cost || balance != cost-1 { // 37 + the probe run
		t.Errorf("ledger charges %d, stored balance %d", charged, balance)
	}
	consistent(t, s)
}

// TestConcurrentRunsAgainstKeyBudgets: the same storm against four keys whose
// budgets cover 9, 9, 9 and 10 runs, with plenty of balance: each key gets exactly
// its runs and the 402s name the key budget.
func TestConcurrentRunsAgainstKeyBudgets(t *testing.T) {
	s, op, cost := moneyServer(t)
	setBalance(t, op, 1000*cost)
	c := func(n int64) float64 { return float64(n*cost+cost-1) / 1e6 }
	clients, ids := runKeys(t, s, op, c(9), c(9), c(9), c(10))
	ok, paid, limits := storm(t, clients, 50)
	if fmt.Sprint(ok) != "[9 9 9 10]" || sum(paid) != 163 || limits["key_budget"] != 163 {
		t.Fatalf("ok %v, 402 %v, limits %v", ok, paid, limits)
	}
	end, _ := op.Billing(context.Background())
	if end.Held != 0 || int64(end.Balance*1e6+0.5) != 1000*cost-37*cost {
		t.Errorf("org after: %+v", end)
	}
	rows, _ := ledger(t, s)
	perKey := map[string]int64{}
	for _, r := range rows {
		perKey[r.KeyID] += int64(r.Cost)
	}
	for i, id := range ids {
		if want := int64(ok[i]) * cost; perKey[id] != want {
			t.Errorf("key %d charged %d in the ledger, want %d", i, perKey[id], want)
		}
	}
	consistent(t, s)
}

// TestIdempotencyStorm: the same Idempotency-Key 50 times in parallel charges
// once; the others see 409 while it runs or its stored result after; a reuse for
// another request is refused.
func TestIdempotencyStorm(t *testing.T) {
	s, op, cost := moneyServer(t)
	setBalance(t, op, 100*cost)
	start, _ := op.Billing(context.Background())
	post := func(key, msg string) (int, string, http.Header) {
		req, _ := http.NewRequest("POST", s.URL+"/api/v3/agents/run-agents/exact/run", strings.NewReader(`{"message":"`+msg+`"}`))
		req.Header.Set("Authorization", "Bearer "+s.Key)
		req.Header.Set("Idempotency-Key", key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Error(err)
			return 0, "", nil
		}
		defer resp.Body.Close()
		var b strings.Builder
		fmt.Fprint(&b, readAll(resp))
		return resp.StatusCode, b.String(), resp.Header
	}
	var mu sync.Mutex
	statuses := map[int]int{}
	runIDs := map[string]bool{}
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			code, body, h := post("order-42", "ping")
			mu.Lock()
			defer mu.Unlock()
			statuses[code]++
			switch code {
			case 200:
				runIDs[jsonField(body, "run_id")] = true
			case 409:
				if h.Get("Retry-After") == "" || jsonField(body, "code") != string(agentd.EConflict) {
					t.Errorf("409 without Retry-After or conflict code: %s", body)
				}
			}
		})
	}
	wg.Wait()
	if statuses[200]+statuses[409] != 50 || statuses[200] < 1 || len(runIDs) != 1 {
		t.Fatalf("statuses %v, run ids %v", statuses, runIDs)
	}
	code, body, h := post("order-42", "ping")
	if code != 200 || h.Get("Idempotent-Replayed") != "true" || !runIDs[jsonField(body, "run_id")] {
		t.Errorf("retry after the run: %d %s replayed=%q", code, body, h.Get("Idempotent-Replayed"))
	}
	if code, body, _ := post("order-42", "pong"); code != 400 {
		t.Errorf("same key, other request: %d %s", code, body)
	}
	end, _ := op.Billing(context.Background())
	if drop := int64((start.Balance-end.Balance)*1e6 + 0.5); drop != cost {
		t.Errorf("the storm charged %d micro-credits, want one run's %d", drop, cost)
	}
	if code, _, h := post("order-43", "ping"); code != 200 || h.Get("Idempotent-Replayed") != "" {
		t.Errorf("a new key: %d", code)
	}
	consistent(t, s)
}

// TestSessionTurnsFIFO: 20 turns sent to one session while it is busy are stored
// as 20 whole user/assistant pairs, in the order they were sent.
func TestSessionTurnsFIFO(t *testing.T) {
	u := newUpstream(t, nil)
	u.echoGate = make(chan struct{})
	var gateOnce sync.Once
	openGate := func() { gateOnce.Do(func() { close(u.echoGate) }) }
	t.Cleanup(openGate) // before the server stops: it waits for runs in flight
	// The fake clock makes a turn queued on the busy session visible: its wait
	// arms a timer (the sweep loop arms the other one).
	clk := newSweepClock()
	s := startServerWith(t, fmt.Sprintf(`
providers:
  - {name: up, kind: openai, base_url: %s/v1}
models:
  - {id: echo, provider: up, upstream_model: echo-slow, context_window: 100000, max_output_tokens: 100}
`, u.URL), nil, &serveHooks{clock: clk})
	ctx := context.Background()
	op := s.client(s.Key)
	if _, err := op.CreateAgent(ctx, client.AgentSpec{Name: client.Ptr("echo"), Description: client.Ptr("d"), Model: client.Ptr("echo"), MaxToken: client.Ptr(50)}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			if _, err := op.Run(ctx, "echo", fmt.Sprintf("turn %02d", i), "fifo"); err != nil {
				t.Error(err)
			}
		})
		if i == 0 {
			u.arrived.wait(t, "echo-slow", 1) // turn 0 holds the session, held upstream
		} else {
			waitTimers(t, clk, 1+i) // turn i waits in the session's queue before turn i+1 is sent
		}
	}
	openGate()
	wg.Wait()
	db, err := store.Open(ctx, "sqlite:"+s.dbPath, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	a, err := db.AgentByName(ctx, mustOrg(t, db).ID, "echo")
	if err != nil {
		t.Fatal(err)
	}
	var turns []agentd.Turn
	key := agentd.SessionKey{OrgID: a.OrgID, AgentID: a.ID, Owner: ownerOf(t, op), SessionID: "fifo"}
	if err := db.History(ctx, key, func(tu agentd.Turn) bool { turns = append([]agentd.Turn{tu}, turns...); return true }); err != nil {
		t.Fatal(err)
	}
	if len(turns) != 20 {
		t.Fatalf("%d turns stored", len(turns))
	}
	for i, tu := range turns {
		want := fmt.Sprintf("turn %02d", i)
		if tu.User != want || tu.Assistant != "echo: "+want {
			t.Errorf("turn %d = %q → %q, want %q → %q", i, tu.User, tu.Assistant, want, "echo: "+want)
		}
	}
}

func readAll(resp *http.Response) string {
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			return b.String()
		}
	}
}

// jsonField returns a top-level string field of a JSON object.
func jsonField(body, field string) string {
	var m map[string]any
	if err := json.Unmarshal([]byte(body), &m); err != nil {
		return ""
	}
	v, _ := m[field].(string)
	return v
}

func mustOrg(t *testing.T, db *store.DB) *agentd.Org {
	t.Helper()
	o, err := db.Org(context.Background(), agentd.DefaultOrgName)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// ownerOf returns the owner of the bootstrap key, which c uses.
func ownerOf(t *testing.T, c *client.Client) string {
	t.Helper()
	keys, err := c.Keys(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if k.Name == "bootstrap" {
			return k.Owner
		}
	}
	t.Fatal("no bootstrap key")
	return ""
}

// TestTrimmedTurns: on a small context window the newest whole turns are kept,
// the response says how many older ones were left out, and the fixed parts alone
// not fitting is a 422 with the numbers.
func TestTrimmedTurns(t *testing.T) {
	s := startServer(t, "models:\n  - {id: tiny, provider: offline, context_window: 160, max_output_tokens: 20}\n", nil)
	ctx := context.Background()
	op := s.client(s.Key)
	if _, err := op.CreateAgent(ctx, client.AgentSpec{
		Name: client.Ptr("tiny"), Description: client.Ptr("d"), Model: client.Ptr("tiny"), MaxToken: client.Ptr(20),
		Demonstrations: []client.Demonstration{{Input: "ping", Output: "pong"}},
	}); err != nil {
		t.Fatal(err)
	}
	trimmedSeen := false
	for i := range 12 {
		res, err := op.Run(ctx, "tiny", fmt.Sprintf("message number %d about the weather", i), "chat")
		if err != nil {
			t.Fatal(err)
		}
		c := res.Context
		if c.HistoryTurns+c.TrimmedTurns != i {
			t.Errorf("turn %d: history %d + trimmed %d != %d earlier turns", i, c.HistoryTurns, c.TrimmedTurns, i)
		}
		if res.Usage.InputTokens+20 > 160 {
			t.Errorf("turn %d: %d input tokens + 20 reserved exceed the window", i, res.Usage.InputTokens)
		}
		trimmedSeen = trimmedSeen || c.TrimmedTurns > 0
	}
	if !trimmedSeen {
		t.Error("twelve turns never needed trimming; the test's window is too large")
	}
	_, err := op.Run(ctx, "tiny", strings.Repeat("very long message ", 60), "chat")
	var e *client.Error
	if !errorsAs(err, &e) || e.Status != 422 || e.Body["required_tokens"] == nil || e.Body["available_tokens"] == nil {
		t.Errorf("oversized message: %v %v", err, e)
	}
}

// TestCheckCommand: agentd check passes on a database written by a server under
// load, and fails, naming the row, when a balance is changed behind its back.
func TestCheckCommand(t *testing.T) {
	s, op, cost := moneyServer(t)
	setBalance(t, op, 20*cost)
	clients, _ := runKeys(t, s, op, 0, 0)
	storm(t, clients, 15)
	var out, errOut strings.Builder
	if err := run(context.Background(), []string{"check", "--db", "sqlite:" + s.dbPath}, func(string) string { return "" }, nil, &out, &errOut); err != nil {
		t.Fatalf("check: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "is consistent") {
		t.Errorf("output %q", out.String())
	}
	// A balance raised without a grant: money from nowhere.
	raw, err := sql.Open("sqlite", s.dbPath)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if _, err := raw.Exec(`UPDATE orgs SET balance = balance + 5 WHERE name = 'default'`); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	err = run(context.Background(), []string{"check", "--db", "sqlite:" + s.dbPath}, func(string) string { return "" }, nil, &out, &errOut)
	if err == nil || !strings.Contains(out.String(), "(default): balance") {
		t.Errorf("check after damage: %v\n%s", err, out.String())
	}
}

// TestKeyBudgetAPI: budgets are set on creation and changed with PATCH; billing
// shows the calling key's budget; a key over budget gets 402 naming it while the
// organization still has money.
func TestKeyBudgetAPI(t *testing.T) {
	s, op, cost := moneyServer(t)
	setBalance(t, op, 100*cost)
	ctx := context.Background()
	k, err := op.CreateKey(ctx, client.KeySpec{Name: "metered", Scopes: []string{"run", "usage"},
		Budget: client.Ptr(float64(2*cost) / 1e6), BudgetPeriod: "monthly"})
	if err != nil {
		t.Fatal(err)
	}
	kc := s.client(k.Secret)
	for range 2 {
		if _, err := kc.Run(ctx, "exact", "ping", ""); err != nil {
			t.Fatal(err)
		}
	}
	_, err = kc.Run(ctx, "exact", "ping", "")
	var e *client.Error
	if !errorsAs(err, &e) || e.Status != 402 || e.Body["limit"] != "key_budget" || !strings.Contains(e.Detail, "this month") {
		t.Fatalf("third run: %v", err)
	}
	var b struct {
		Data struct {
			Available float64 `json:"available"`
			Key       struct {
				Budget, Spent, Available float64
				BudgetPeriod             string `json:"budget_period"`
			} `json:"key"`
		} `json:"data"`
	}
	if err := kc.Do(ctx, "GET", "/api/v3/billing", nil, nil, &b); err != nil {
		t.Fatal(err)
	}
	if int64(b.Data.Key.Spent*1e6+0.5) != 2*cost || b.Data.Key.Available != 0 || b.Data.Key.BudgetPeriod != "monthly" || b.Data.Available <= 0 {
		t.Errorf("billing = %+v", b.Data)
	}
	// Raise the budget: one more run fits; remove it: the key spends from the org.
	var upd struct {
		Data struct {
			Budget *float64 `json:"budget"`
		} `json:"data"`
	}
	if err := op.Do(ctx, "PATCH", "/api/v3/keys/"+k.ID, nil, map[string]any{"budget": float64(3*cost) / 1e6}, &upd); err != nil || upd.Data.Budget == nil {
		t.Fatalf("patch: %v %+v", err, upd)
	}
	if _, err := kc.Run(ctx, "exact", "ping", ""); err != nil {
		t.Errorf("run after raising the budget: %v", err)
	}
	if err := op.Do(ctx, "PATCH", "/api/v3/keys/"+k.ID, nil, map[string]any{"budget": nil}, &upd); err != nil || upd.Data.Budget != nil {
		t.Fatalf("patch to null: %v %+v", err, upd)
	}
	if _, err := kc.Run(ctx, "exact", "ping", ""); err != nil {
		t.Errorf("run without a budget: %v", err)
	}
	for _, bad := range []map[string]any{{"budget": -1}, {"budget": "lots"}, {"budget_period": "weekly"}} {
		if err := op.Do(ctx, "PATCH", "/api/v3/keys/"+k.ID, nil, bad, nil); statusOf(err) != 422 {
			t.Errorf("PATCH %v: %v, want 422", bad, err)
		}
	}
	consistent(t, s)
}

// sweepClock is a fake clock for a whole server, with the rounds of its
// sweepers counted: after moving the clock, a test waits for the round it caused.
type sweepClock struct {
	*clocktest.Fake
	rounds chan struct{}
}

func newSweepClock() *sweepClock {
	return &sweepClock{Fake: clocktest.New(time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)), rounds: make(chan struct{}, 16)}
}

func (c *sweepClock) hooks() *serveHooks {
	return &serveHooks{clock: c, swept: func() { c.rounds <- struct{}{} }}
}

// sweep moves the clock by d, past the sweep interval, and waits until the
// sweepers have run a round at the new time.
func (c *sweepClock) sweep(t *testing.T, d time.Duration) {
	t.Helper()
	waitTimers(t, c, 1) // the sweep loop waits for its next round
	c.Advance(d)
	await(t, c.rounds, "a sweep round after moving the clock")
}

// TestSweepers: the server's sweepers delete idle sessions and prune ledger rows
// past retention, and the database stays consistent.
func TestSweepers(t *testing.T) {
	clk := newSweepClock()
	s := startServerWith(t, exactConfig+`
sweep_interval: 1m
sessions: {idle_ttl: 1h}
ledger: {retention: 2h}
idempotency: {ttl: 1h}
`, nil, clk.hooks())
	ctx := context.Background()
	op := s.client(s.Key)
	if _, err := op.CreateAgent(ctx, client.AgentSpec{Name: client.Ptr("exact"), Description: client.Ptr("d"), Model: client.Ptr("exact"),
		MaxToken: client.Ptr(40), Demonstrations: []client.Demonstration{{Input: "ping", Output: "pong"}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := op.GrantCredits(ctx, "default", 10); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := op.Run(ctx, "exact", "ping", fmt.Sprintf("s%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	db, err := store.Open(ctx, "sqlite:"+s.dbPath, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	org := mustOrg(t, db)
	a, err := db.AgentByName(ctx, org.ID, "exact")
	if err != nil {
		t.Fatal(err)
	}
	turns := func() int {
		n, err := db.CountTurns(ctx, agentd.SessionKey{OrgID: org.ID, AgentID: a.ID, Owner: ownerOf(t, op), SessionID: "s0"})
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	ledgerRows := func() int {
		rows, err := db.Ledger(ctx, org.ID)
		if err != nil {
			t.Fatal(err)
		}
		return len(rows)
	}
	clk.sweep(t, 30*time.Minute) // nothing is old enough yet
	if turns() != 1 || ledgerRows() != 3 {
		t.Fatalf("after 30 minutes: %d turns, %d ledger rows; the sweep deleted too early", turns(), ledgerRows())
	}
	clk.sweep(t, time.Hour) // sessions idle past 1h
	if turns() != 0 || ledgerRows() != 3 {
		t.Fatalf("after 90 minutes: %d turns, %d ledger rows; want the session gone, the ledger kept", turns(), ledgerRows())
	}
	clk.sweep(t, time.Hour) // ledger rows older than 2h
	if n := ledgerRows(); n != 0 {
		t.Fatalf("after 150 minutes: %d ledger rows past retention remain", n)
	}
	if problems, err := db.Check(ctx); err != nil || len(problems) > 0 {
		t.Errorf("after sweeping: %v %q", err, problems)
	}
	b, _ := op.Billing(ctx)
	if b.Held != 0 || b.Balance >= 10 {
		t.Errorf("billing after sweeping: %+v (charges must survive ledger pruning)", b)
	}
}
