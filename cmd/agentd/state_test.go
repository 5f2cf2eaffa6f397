package main

// Regression tests for the state-owner refactor (one owner per rule, a SQLite file
// locked to one process, the start-up order), each through the real program: run()
// in-process or the built binary, and restarts that stop a server and start a new
// one on the same database file. They synchronize on events (channels, barriers in
// fake upstreams, the injected clock), never on sleeps.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/client"
	"github.com/agentd/agentd/internal/billing"
	"github.com/agentd/agentd/internal/clock/clocktest"
	"github.com/agentd/agentd/internal/store"
)

// syncBuffer is a strings.Builder that a server's log may write to while a test
// reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// credits turns micro-credits into the credits the API takes.
func credits(micros int64) float64 { return float64(micros) / 1e6 }

// noEnv is an environment with nothing set: no bootstrap key, no AGENTD_DB.
func noEnv(string) string { return "" }

// serveMustFail runs `agentd serve args...` in-process and returns what run
// returned and what it printed on stdout and stderr. A serve that starts listening
// instead of failing is stopped and fails the test: the event that decides is the
// "listening" line or run returning, never a timer.
func serveMustFail(t *testing.T, args []string, getenv func(string) string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	var errOut syncBuffer
	done := make(chan error, 1)
	go func() {
		err := run(ctx, append([]string{"serve"}, args...), getenv, strings.NewReader(""), pw, &errOut)
		pw.Close()
		done <- err
	}()
	var out strings.Builder
	sc := bufio.NewScanner(pr)
	for sc.Scan() {
		out.WriteString(sc.Text() + "\n")
		if strings.HasPrefix(sc.Text(), "agentd listening on ") {
			cancel()
			go io.Copy(io.Discard, pr)
			<-done
			t.Fatalf("serve %q started instead of failing:\n%s", args, out.String())
		}
	}
	err = <-done
	if err == nil {
		t.Fatalf("serve %q returned no error:\n%s", args, out.String())
	}
	return out.String(), errOut.String(), err
}

// checkCmd runs `agentd check --db sqlite:path` and returns its error and output.
func checkCmd(path string) (string, error) {
	var out, errOut strings.Builder
	err := run(context.Background(), []string{"check", "--db", "sqlite:" + path}, noEnv, nil, &out, &errOut)
	return out.String() + errOut.String(), err
}

// checkClean runs `agentd check` on path, and the same checks at the fake time now
// (check itself uses the wall clock, which the fake clock's days are not), and
// fails the test on any inconsistency.
func checkClean(t *testing.T, path string, now time.Time) {
	t.Helper()
	if out, err := checkCmd(path); err != nil || !strings.Contains(out, "is consistent") {
		t.Errorf("agentd check: %v\n%s", err, out)
	}
	ctx := context.Background()
	db, err := store.Open(ctx, "sqlite:"+path, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	problems, err := billing.Check(ctx, db, now)
	if err != nil || len(problems) > 0 {
		t.Errorf("budgets at %s: %v %q", now.Format(time.DateOnly), err, problems)
	}
}

// startExact starts agentd on dir/agentd.db with the exact model (its runs cost
// exactly their hold) and the fake clock clk; log, when not nil, gets its log.
func startExact(t *testing.T, dir string, clk *clocktest.Fake, log io.Writer) (*testServer, *client.Client) {
	t.Helper()
	s := startServerIn(t, dir, exactConfig, nil, &serveHooks{clock: clk}, log)
	return s, s.client(s.Key)
}

// exactAgent creates the "exact" agent, funds the organization with 1,000
// credits, and returns one run's cost in micro-credits: the hold /estimate
// reports, checked against a real run's charge.
func exactAgent(t *testing.T, op *client.Client) int64 {
	t.Helper()
	ctx := context.Background()
	if _, err := op.CreateAgent(ctx, client.AgentSpec{
		Name: client.Ptr("exact"), Description: client.Ptr("d"), Model: client.Ptr("exact"), MaxToken: client.Ptr(40),
		Demonstrations: []client.Demonstration{{Input: "ping", Output: "pong"}},
	}); err != nil {
		t.Fatal(err)
	}
	setBalance(t, op, 1000*1_000_000)
	var est struct {
		Hold float64 `json:"hold"`
	}
	if err := op.Do(ctx, "POST", "/api/v3/agents/run-agents/exact/estimate", nil, map[string]string{"message": "ping"}, &est); err != nil {
		t.Fatal(err)
	}
	cost := toMicros(est.Hold)
	before, _ := op.Billing(ctx)
	if _, err := op.Run(ctx, "exact", "ping", ""); err != nil {
		t.Fatal(err)
	}
	after, _ := op.Billing(ctx)
	if got := toMicros(before.Balance - after.Balance); cost <= 0 || got != cost {
		t.Fatalf("a run cost %d micro-credits, the estimate held %d", got, cost)
	}
	return cost
}

// keyState is the calling key's budget as GET /api/v3/billing reports it, in
// micro-credits.
type keyState struct {
	Budget, Spent, Held, Available int64
	Period, PeriodStart            string
}

func budgetOf(t *testing.T, c *client.Client) keyState {
	t.Helper()
	var b struct {
		Data struct {
			Key *struct {
				Budget, Spent, Held, Available float64
				BudgetPeriod                   string  `json:"budget_period"`
				PeriodStart                    *string `json:"period_start"`
			} `json:"key"`
		} `json:"data"`
	}
	if err := c.Do(context.Background(), "GET", "/api/v3/billing", nil, nil, &b); err != nil {
		t.Fatal(err)
	}
	k := b.Data.Key
	if k == nil {
		t.Fatal("billing shows no key budget")
	}
	ks := keyState{Budget: toMicros(k.Budget), Spent: toMicros(k.Spent), Held: toMicros(k.Held), Available: toMicros(k.Available), Period: k.BudgetPeriod}
	if k.PeriodStart != nil {
		ks.PeriodStart = *k.PeriodStart
	}
	return ks
}

// patchKey sends PATCH /api/v3/keys/{id} with body as c.
func patchKey(c *client.Client, id string, body map[string]any) error {
	return c.Do(context.Background(), "PATCH", "/api/v3/keys/"+id, nil, body, nil)
}

// runsOf runs "exact" n times in a row as c, and fails the test unless all succeed.
func runsOf(t *testing.T, c *client.Client, n int) {
	t.Helper()
	for range n {
		if _, err := c.Run(context.Background(), "exact", "ping", ""); err != nil {
			t.Fatal(err)
		}
	}
}

// spentBy sums the ledger's charges to keyID made in [from, to) (to zero: no end).
func spentBy(t *testing.T, path, keyID string, from, to time.Time) int64 {
	t.Helper()
	rows, _ := ledgerAt(t, path)
	var n int64
	for _, r := range rows {
		if r.KeyID == keyID && !r.CreatedAt.Before(from) && (to.IsZero() || r.CreatedAt.Before(to)) {
			n += int64(r.Cost)
		}
	}
	return n
}

// spendAll fires 20 concurrent runs as c (more than any budget here covers) and
// returns how many succeeded; the others must be 402s naming the key budget.
func spendAll(t *testing.T, c *client.Client) int {
	t.Helper()
	ok, paid, limits := storm(t, []*client.Client{c}, 20)
	if ok[0]+paid[0] != 20 || limits["key_budget"] != paid[0] {
		t.Fatalf("ok %d, 402 %d, limits %v: every refusal must name the key budget", ok[0], paid[0], limits)
	}
	return ok[0]
}

// TestBudgetPeriodChangeAcrossRestart (issue failure 1): a key with a daily budget
// spends on one day, spends 3 runs' worth on the next, is switched to a monthly
// budget, spends all it can, is restarted, and spends all it can again: the
// month's charges never pass the budget, and check is clean.
//
// The budget is 10.5 runs (the 1,000 with 300 spent today, in units of
// one run, plus half a run so that no run fits the remainder exactly). It would
// have caught the old behaviour: when a budget's spending was a column with its
// own period rule, changing the period started the month at zero (or at today's
// 3 runs), so the storm after the PATCH got 10 (or 7) runs instead of 5, and a
// restart that rebuilt the mirror from that column or from today's rollup alone
// let the key spend again; the ledger's November total then exceeds the budget.
func TestBudgetPeriodChangeAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "agentd.db")
	clk := clocktest.New(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	s, op := startExact(t, dir, clk, nil)
	ctx := context.Background()
	c := exactAgent(t, op)
	budget := 10*c + c/2
	k, err := op.CreateKey(ctx, client.KeySpec{Name: "metered", Scopes: []string{"run", "usage"}, Budget: client.Ptr(credits(budget)), BudgetPeriod: "daily"})
	if err != nil {
		t.Fatal(err)
	}
	kc := s.client(k.Secret)

	runsOf(t, kc, 2) // Nov 27, under the daily budget
	clk.Advance(24 * time.Hour)
	runsOf(t, kc, 3) // Nov 28: "has spent 300 today"
	if ks := budgetOf(t, kc); ks.Budget != budget || ks.Spent != 3*c || ks.Period != "daily" || !strings.HasPrefix(ks.PeriodStart, "2026-11-28") {
		t.Fatalf("before the change: %+v, want 3 runs (%d) spent today of %d", ks, 3*c, budget)
	}

	if err := patchKey(op, k.ID, map[string]any{"budget_period": "monthly"}); err != nil {
		t.Fatal(err)
	}
	// The month so far: Nov 27's 2 runs and today's 3.
	if ks := budgetOf(t, kc); ks.Budget != budget || ks.Spent != 5*c || ks.Available != budget-5*c || ks.Period != "monthly" || !strings.HasPrefix(ks.PeriodStart, "2026-11-01") {
		t.Fatalf("after switching to monthly: %+v, want %d spent this month", ks, 5*c)
	}
	if n := spendAll(t, kc); n != 5 {
		t.Errorf("after switching to monthly the key ran %d times; the month's budget had room for 5", n)
	}

	if err := s.stop(); err != nil {
		t.Fatal(err)
	}
	s, op = startExact(t, dir, clk, nil)
	kc = s.client(k.Secret)
	if ks := budgetOf(t, kc); ks.Spent != 10*c || ks.Available != budget-10*c || ks.Held != 0 {
		t.Errorf("after the restart: %+v, want %d spent this month", ks, 10*c)
	}
	if n := spendAll(t, kc); n != 0 {
		t.Errorf("after the restart the key ran %d more times on a spent monthly budget", n)
	}

	nov, dec := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC), time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	if got := spentBy(t, path, k.ID, nov, dec); got > budget || got != 10*c {
		t.Errorf("the key was charged %d in November against a monthly budget of %d (want %d)", got, budget, 10*c)
	}
	checkClean(t, path, clk.Now())
	// The budget still works: a new month starts a new count.
	clk.Set(dec.Add(time.Hour))
	if n := spendAll(t, kc); n != 10 {
		t.Errorf("in December the key ran %d times, want a fresh month's 10", n)
	}
	if b, _ := op.Billing(ctx); b.Held != 0 {
		t.Errorf("held after the storms: %+v", b)
	}
	checkClean(t, path, clk.Now())
}

// TestBudgetDailyToNoneAcrossRestart (issue failure 2): a daily budget switched to
// none (a budget over the key's whole life) counts every charge the key ever made,
// before and after the switch, also after a restart and on later days.
//
// It would have caught the old behaviour: a period change that reset the spent
// column (or a "none" budget that counted from the switch, or a restart that
// counted only the current day) let the key spend another budget's worth after the
// switch or after the restart, and its lifetime charges would exceed the budget.
func TestBudgetDailyToNoneAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "agentd.db")
	clk := clocktest.New(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	s, op := startExact(t, dir, clk, nil)
	c := exactAgent(t, op)
	budget := 10*c + c/2
	k, err := op.CreateKey(context.Background(), client.KeySpec{Name: "lifetime", Scopes: []string{"run", "usage"}, Budget: client.Ptr(credits(budget)), BudgetPeriod: "daily"})
	if err != nil {
		t.Fatal(err)
	}
	kc := s.client(k.Secret)
	runsOf(t, kc, 4) // Nov 27
	clk.Advance(24 * time.Hour)
	runsOf(t, kc, 3) // Nov 28: a new day, the daily budget has room again

	if err := patchKey(op, k.ID, map[string]any{"budget_period": "none"}); err != nil {
		t.Fatal(err)
	}
	if ks := budgetOf(t, kc); ks.Period != "none" || ks.Spent != 7*c || ks.Available != budget-7*c || ks.PeriodStart != "" {
		t.Fatalf("after switching to none: %+v, want the key's lifetime %d spent", ks, 7*c)
	}
	if n := spendAll(t, kc); n != 3 {
		t.Errorf("after switching to none the key ran %d times; its lifetime budget had room for 3", n)
	}

	if err := s.stop(); err != nil {
		t.Fatal(err)
	}
	s, _ = startExact(t, dir, clk, nil)
	kc = s.client(k.Secret)
	if n := spendAll(t, kc); n != 0 {
		t.Errorf("after the restart the key ran %d more times on a spent lifetime budget", n)
	}
	clk.Advance(48 * time.Hour) // Nov 30: no day or month rolls a lifetime budget over
	if n := spendAll(t, kc); n != 0 {
		t.Errorf("two days later the key ran %d more times on a spent lifetime budget", n)
	}
	if ks := budgetOf(t, kc); ks.Spent != 10*c || ks.Held != 0 {
		t.Errorf("at the end: %+v, want %d spent", ks, 10*c)
	}
	if got := spentBy(t, path, k.ID, time.Time{}, time.Time{}); got > budget || got != 10*c {
		t.Errorf("the key was charged %d in its life against a lifetime budget of %d (want %d)", got, budget, 10*c)
	}
	checkClean(t, path, clk.Now())
}

// TestSecondServeOnSameFile (issue failure 3): while one agentd serves a SQLite
// file, a second serve on it — in the same process through run(), and as a
// separate process — exits at once with an error naming the file and the
// holder's pid; the first keeps serving, and 40 concurrent runs against a balance
// that covers 4 give exactly 4 successes and 36 402s, with the money exact.
//
// It would have caught the old behaviour: with no lock on the file, the second
// serve started (serveMustFail sees its "listening" line and fails), or failed
// later with a SQLite busy/locked error that names neither the file's holder nor
// its pid; two writers with separate in-memory holds would each admit 4 runs.
func TestSecondServeOnSameFile(t *testing.T) {
	s, op, cost := moneyServer(t)
	dir := filepath.Dir(s.dbPath)
	pid := fmt.Sprintf("pid %d", os.Getpid())

	t.Run("in-process", func(t *testing.T) {
		stdout, _, err := serveMustFail(t, []string{"--addr", "127.0.0.1:0", "--db", "sqlite:" + s.dbPath},
			func(k string) string { return map[string]string{"AGENTD_BOOTSTRAP_KEY": testKey}[k] })
		if !errors.Is(err, store.ErrLocked) || !strings.Contains(err.Error(), s.dbPath) || !strings.Contains(err.Error(), pid) {
			t.Errorf("second serve: %v; want ErrLocked naming %s and %s", err, s.dbPath, pid)
		}
		if strings.Contains(stdout, "agd_") {
			t.Errorf("the refused serve printed a key:\n%s", stdout)
		}
	})
	t.Run("process", func(t *testing.T) {
		if testing.Short() {
			t.Skip("builds agentd: skipped with -short")
		}
		cmd := exec.Command(agentdBinary(t), "serve", "--addr", "127.0.0.1:0", "--db", "sqlite:"+s.dbPath)
		cmd.Env = append(os.Environ(), "AGENTD_BOOTSTRAP_KEY="+testKey)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var stdout strings.Builder
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			stdout.WriteString(sc.Text() + "\n")
			if strings.HasPrefix(sc.Text(), "agentd listening on ") {
				cmd.Process.Kill()
				cmd.Wait()
				t.Fatalf("a second agentd process started serving %s:\n%s", s.dbPath, stdout.String())
			}
		}
		err = cmd.Wait()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 {
			t.Fatalf("second process: %v, want exit status 1\n%s", err, stderr.String())
		}
		msg := stderr.String()
		if !strings.Contains(msg, s.dbPath) || !strings.Contains(msg, pid) || !strings.Contains(msg, "in use by another agentd") {
			t.Errorf("second process said %q; want the file %s and the holder %s", msg, s.dbPath, pid)
		}
		if strings.Contains(stdout.String(), "agd_") {
			t.Errorf("the refused process printed a key:\n%s", stdout.String())
		}
	})

	// The first server was not disturbed: it serves, and its money is exact.
	setBalance(t, op, 4*cost+cost-1)
	clients, _ := runKeys(t, s, op, 0, 0, 0, 0)
	ok, paid, limits := storm(t, clients, 10) // storm fails the test on anything but 200 or 402
	if sum(ok) != 4 || sum(paid) != 36 || limits["balance"] != 36 {
		t.Fatalf("ok %v, 402 %v, limits %v; want exactly 4 successes and 36 402s", ok, paid, limits)
	}
	if b, err := op.Billing(context.Background()); err != nil || b.Held != 0 || toMicros(b.Balance) != cost-1 {
		t.Errorf("billing after the storm: %+v %v, want balance %d and nothing held", b, err, cost-1)
	}
	rows, balance := ledger(t, s)
	var charged int64
	for _, r := range rows {
		charged += int64(r.Cost)
	}
	if len(rows) != 5 || charged != 5*cost || balance != cost-1 { // the probe run and 4
		t.Errorf("ledger: %d rows charging %d, stored balance %d; want 5 rows, %d, %d", len(rows), charged, balance, 5*cost, cost-1)
	}
	checkClean(t, s.dbPath, time.Now())

	// The lock goes with its holder: a restart on the file serves the same money.
	if err := s.stop(); err != nil {
		t.Fatal(err)
	}
	s = startServerIn(t, dir, exactConfig, nil, nil, nil)
	if b, err := s.client(s.Key).Billing(context.Background()); err != nil || toMicros(b.Balance) != cost-1 {
		t.Errorf("after the restart: %+v %v", b, err)
	}
}

// heldStream is an OpenAI-compatible upstream that streams its first piece, tells
// started, and sends the rest only once release is closed. A request that is not
// streamed gets the whole reply at once.
type heldStream struct {
	*httptest.Server
	pieces  []string
	started chan struct{}
	release chan struct{}
	once    sync.Once
}

func newHeldStream(t *testing.T, pieces ...string) *heldStream {
	u := &heldStream{pieces: pieces, started: make(chan struct{}, 4), release: make(chan struct{})}
	u.Server = httptest.NewServer(http.HandlerFunc(u.serve))
	t.Cleanup(u.Close) // after open, which tests register later (cleanups run last first)
	return u
}

// open lets every held stream go on.
func (u *heldStream) open() { u.once.Do(func() { close(u.release) }) }

func (u *heldStream) serve(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Stream bool `json:"stream"`
	}
	json.NewDecoder(r.Body).Decode(&body)
	usage := fmt.Sprintf(`{"prompt_tokens":12,"completion_tokens":%d,"total_tokens":%d}`, len(u.pieces), 12+len(u.pieces))
	if !body.Stream {
		text, _ := json.Marshal(strings.Join(u.pieces, ""))
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"held","choices":[{"index":0,"message":{"role":"assistant","content":%s},"finish_reason":"stop"}],"usage":%s}`, text, usage)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(200)
	chunk := func(delta string, finish bool) {
		d, _ := json.Marshal(delta)
		fin := "null"
		if finish {
			fin = `"stop"`
		}
		fmt.Fprintf(w, "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"held\",\"choices\":[{\"index\":0,\"delta\":{\"content\":%s},\"finish_reason\":%s}]}\n\n", d, fin)
		w.(http.Flusher).Flush()
	}
	chunk(u.pieces[0], false)
	u.started <- struct{}{}
	select {
	case <-u.release:
	case <-r.Context().Done():
		return
	}
	for _, p := range u.pieces[1:] {
		chunk(p, false)
	}
	chunk("", true)
	fmt.Fprintf(w, "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"held\",\"choices\":[],\"usage\":%s}\n\n", usage)
	fmt.Fprint(w, "data: [DONE]\n\n")
	w.(http.Flusher).Flush()
}

// heldConfig serves model "held" from u, priced at 1,000 credits per million
// tokens each way, beside the exact model.
func heldConfig(u *heldStream) string {
	return exactConfig + fmt.Sprintf(`  - {id: held, provider: up, upstream_model: held, context_window: 100000, max_output_tokens: 1000, price: {input: 1000, output: 1000}}
providers:
  - {name: up, kind: openai, base_url: %s/v1, max_retries: 0}
`, u.URL)
}

// eventReader reads a stream's events one at a time (keep-alive comments skipped).
type eventReader struct{ sc *bufio.Scanner }

func (r *eventReader) next() (sseEvent, bool) {
	var ev sseEvent
	for r.sc.Scan() {
		line := r.sc.Text()
		switch {
		case line == "":
			if ev.Name != "" || ev.Data != "" {
				return ev, true
			}
		case strings.HasPrefix(line, ":"):
		case strings.HasPrefix(line, "event: "):
			ev.Name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			ev.Data = strings.TrimPrefix(line, "data: ")
		}
	}
	return ev, false
}

// waitOn waits for ch, failing the test if it never comes: a safety net for a
// broken server, not the synchronization, which is the channel itself.
func waitOn(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(time.Minute):
		t.Fatalf("%s never happened", what)
	}
}

// sessionTurns counts every stored session turn in the database at path.
func sessionTurns(t *testing.T, path string) int {
	t.Helper()
	raw, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	var n int
	if err := raw.QueryRow(`SELECT count(*) FROM session_turns`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestDeleteAgentMidStream (issue failure 4): an agent deleted while a streamed
// session run of it is in flight: the stream still delivers the whole reply and
// ends with done, the ledger keeps the run's row and its charge, no session turn
// is stored (the agent's sessions went with it), and check is clean.
//
// It would have caught the old behaviour: the turn's insert referenced the deleted
// agent, so the run's one transaction failed; the stream ended with an error
// event, the ledger had no row and the provider's work was never charged (or,
// had the turn been written, a session of a deleted agent would exist, which the
// turn count and the recreated agent's empty history catch).
func TestDeleteAgentMidStream(t *testing.T) {
	u := newHeldStream(t, "first ", "second ", "third")
	s := startServer(t, heldConfig(u), nil)
	t.Cleanup(u.open) // before the server stops: it waits for the stream
	ctx := context.Background()
	op := s.client(s.Key)
	a, err := op.CreateAgent(ctx, client.AgentSpec{Name: client.Ptr("held"), Description: client.Ptr("d"), Model: client.Ptr("held"), MaxToken: client.Ptr(100)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := op.GrantCredits(ctx, "default", 10); err != nil {
		t.Fatal(err)
	}
	before, _ := op.Billing(ctx)

	resp := postStream(t, s, "held", "ping", "doomed")
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("stream: %d %s", resp.StatusCode, readAll(resp))
	}
	waitOn(t, u.started, "the upstream stream")
	events := &eventReader{sc: bufio.NewScanner(resp.Body)}
	first, ok := events.next()
	if !ok || first.Name != "delta" {
		t.Fatalf("first event %+v", first)
	}
	if err := op.DeleteAgent(ctx, a.ID); err != nil {
		t.Fatalf("delete mid-stream: %v", err)
	}
	if _, err := op.Agent(ctx, a.ID); statusOf(err) != 404 {
		t.Fatalf("the agent is still there: %v", err)
	}
	u.open()

	text := strings.Builder{}
	var d struct{ Text string }
	json.Unmarshal([]byte(first.Data), &d)
	text.WriteString(d.Text)
	var done map[string]any
	var rest []sseEvent
	for {
		ev, ok := events.next()
		if !ok {
			break
		}
		rest = append(rest, ev)
		switch ev.Name {
		case "delta":
			json.Unmarshal([]byte(ev.Data), &d)
			text.WriteString(d.Text)
		case "done":
			json.Unmarshal([]byte(ev.Data), &done)
		case "error":
			t.Errorf("the stream ended with an error: %s", ev.Data)
		}
		if ev.Data == "[DONE]" {
			break
		}
	}
	if done == nil || len(rest) < 2 || rest[len(rest)-2].Name != "done" || rest[len(rest)-1].Data != "[DONE]" {
		t.Fatalf("the stream did not end with done and [DONE]: %+v", rest)
	}
	if text.String() != "first second third" || done["response"] != text.String() {
		t.Errorf("reply %q, done says %v", text.String(), done["response"])
	}

	runID, _ := done["run_id"].(string)
	row := ledgerRow(t, s, runID)
	wantCost := int64(12+3) * 1000 // 1,000 credits per million tokens is 1,000 micro-credits a token
	if row.Outcome != agentd.OutcomeOK || row.AgentID != a.ID || row.SessionID != "doomed" || int64(row.Cost) != wantCost ||
		row.InputTokens != 12 || row.OutputTokens != 3 || row.UsageSource != agentd.UsageProvider {
		t.Errorf("ledger row %+v, want an ok row of the deleted agent costing %d", row, wantCost)
	}
	after, _ := op.Billing(ctx)
	if after.Held != 0 || toMicros(before.Balance-after.Balance) != wantCost {
		t.Errorf("billing %+v → %+v, want %d charged and nothing held", before, after, wantCost)
	}
	if n := sessionTurns(t, s.dbPath); n != 0 {
		t.Errorf("%d session turns stored for a deleted agent", n)
	}
	// A new agent of the same name starts with no history on the same session id.
	if _, err := op.CreateAgent(ctx, client.AgentSpec{Name: client.Ptr("held"), Description: client.Ptr("d"), Model: client.Ptr("held"), MaxToken: client.Ptr(100)}); err != nil {
		t.Fatal(err)
	}
	if res, err := op.Run(ctx, "held", "ping", "doomed"); err != nil || res.Context.HistoryTurns != 0 {
		t.Errorf("the recreated agent's session: %+v %v", res, err)
	}
	checkClean(t, s.dbPath, time.Now())
}

// keyBudgetOf returns the budget (micro-credits; -1: none) of the key id as the
// key list shows it to c.
func keyBudgetOf(t *testing.T, c *client.Client, id string) int64 {
	t.Helper()
	var out struct {
		Data []struct {
			ID     string   `json:"id"`
			Budget *float64 `json:"budget"`
		} `json:"data"`
	}
	if err := c.Do(context.Background(), "GET", "/api/v3/keys", nil, nil, &out); err != nil {
		t.Fatal(err)
	}
	for _, k := range out.Data {
		if k.ID == id {
			if k.Budget == nil {
				return -1
			}
			return toMicros(*k.Budget)
		}
	}
	t.Fatalf("key %s not listed", id)
	return 0
}

// TestKeyAuthority (issue failure 5): an admin key of the default organization
// cannot revoke or re-budget an operator key, mint a key that shares an
// operator's sessions (its identity as owner: 422; an owner an operator key uses:
// 403) or mint an operator key, and still manages run keys. A bootstrap key that
// an operator revoked stays revoked across a restart with the same
// AGENTD_BOOTSTRAP_KEY (the server starts and says why), and a new value adds a
// working operator key.
//
// It would have caught the old behaviour: any admin key could revoke or re-budget
// every key of its organization, the bootstrap key included, and name any owner;
// and a start with AGENTD_BOOTSTRAP_KEY recreated (or re-enabled) the key it names,
// so a revoked, possibly leaked secret worked again after a restart, or the start
// failed on the stored hash; a new value beside existing keys was ignored.
func TestKeyAuthority(t *testing.T) {
	dir := t.TempDir()
	s := startServerIn(t, dir, "", nil, nil, nil)
	ctx := context.Background()
	op := s.client(s.Key)
	if _, err := op.CreateAgent(ctx, supportBot()); err != nil {
		t.Fatal(err)
	}
	var bootstrapID string
	keys, err := op.Keys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if k.Name == "bootstrap" {
			bootstrapID = k.ID
		}
	}
	if bootstrapID == "" {
		t.Fatal("no bootstrap key")
	}
	ak, err := op.CreateKey(ctx, client.KeySpec{Name: "org admin", Scopes: []string{"admin"}})
	if err != nil {
		t.Fatal(err)
	}
	admin := s.client(ak.Secret)
	ops, err := op.CreateKey(ctx, client.KeySpec{Name: "ops", Scopes: []string{"operator"}, Owner: "ops-team"})
	if err != nil {
		t.Fatal(err)
	}
	opsc := s.client(ops.Secret)

	for _, tc := range []struct {
		name string
		call func() error
		want int
	}{
		{"revoke the bootstrap key", func() error { return admin.RevokeKey(ctx, bootstrapID) }, 403},
		{"re-budget the bootstrap key", func() error { return patchKey(admin, bootstrapID, map[string]any{"budget": 1}) }, 403},
		{"revoke another operator key", func() error { return admin.RevokeKey(ctx, ops.ID) }, 403},
		{"re-budget another operator key", func() error { return patchKey(admin, ops.ID, map[string]any{"budget": 1, "budget_period": "daily"}) }, 403},
		{"mint a key owned by the bootstrap key's identity", func() error {
			_, err := admin.CreateKey(ctx, client.KeySpec{Name: "spy", Scopes: []string{"run"}, Owner: bootstrapID})
			return err
		}, 422},
		{"mint a key sharing an operator's owner", func() error {
			_, err := admin.CreateKey(ctx, client.KeySpec{Name: "spy", Scopes: []string{"run"}, Owner: "ops-team"})
			return err
		}, 403},
		{"mint an operator key", func() error {
			_, err := admin.CreateKey(ctx, client.KeySpec{Name: "up", Scopes: []string{"operator"}})
			return err
		}, 403},
	} {
		if err := tc.call(); statusOf(err) != tc.want {
			t.Errorf("admin: %s: %v, want %d", tc.name, err, tc.want)
		}
	}
	if b := keyBudgetOf(t, op, bootstrapID); b != -1 {
		t.Errorf("the bootstrap key has a budget of %d after the admin's attempt", b)
	}
	if _, err := op.Keys(ctx); err != nil {
		t.Errorf("the bootstrap key after the admin's attempts: %v", err)
	}

	// The admin still manages run keys: mint one, budget it, revoke it.
	rk, err := admin.CreateKey(ctx, client.KeySpec{Name: "runner", Scopes: []string{"run"}, Owner: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	runner := s.client(rk.Secret)
	if _, err := runner.Run(ctx, "support_bot", "hello", "s1"); err != nil {
		t.Fatal(err)
	}
	if err := patchKey(admin, rk.ID, map[string]any{"budget": 5, "budget_period": "monthly"}); err != nil {
		t.Errorf("admin re-budgets a run key: %v", err)
	}
	if b := keyBudgetOf(t, admin, rk.ID); b != 5_000_000 {
		t.Errorf("run key budget %d, want 5 credits", b)
	}
	if err := admin.RevokeKey(ctx, rk.ID); err != nil {
		t.Errorf("admin revokes a run key: %v", err)
	}
	if _, err := runner.Run(ctx, "support_bot", "hello", "s1"); statusOf(err) != 401 {
		t.Errorf("revoked run key: %v", err)
	}

	// An operator revokes the bootstrap key; it stays revoked across a restart
	// with the same AGENTD_BOOTSTRAP_KEY, and the server starts anyway.
	if err := opsc.RevokeKey(ctx, bootstrapID); err != nil {
		t.Fatal(err)
	}
	if _, err := op.Keys(ctx); statusOf(err) != 401 {
		t.Fatalf("revoked bootstrap key: %v", err)
	}
	if err := s.stop(); err != nil {
		t.Fatal(err)
	}
	var log syncBuffer
	s = startServerIn(t, dir, "", nil, nil, &log)
	if _, err := s.client(testKey).Keys(ctx); statusOf(err) != 401 {
		t.Errorf("the revoked bootstrap key after a restart with the same AGENTD_BOOTSTRAP_KEY: %v, want 401", err)
	}
	if !strings.Contains(log.String(), "revoked") {
		t.Errorf("the server did not say why AGENTD_BOOTSTRAP_KEY does not work:\n%s", log.String())
	}
	if strings.Contains(s.Banner, "agd_") {
		t.Errorf("the restart printed a key:\n%s", s.Banner)
	}
	opsc = s.client(ops.Secret)
	if _, err := opsc.Keys(ctx); err != nil {
		t.Errorf("the other operator key after the restart: %v", err)
	}

	// A new AGENTD_BOOTSTRAP_KEY adds a working operator key beside the others.
	if err := s.stop(); err != nil {
		t.Fatal(err)
	}
	const newKey = "agd_test_replacement_bootstrap_key_42"
	s = startServerIn(t, dir, "", map[string]string{"AGENTD_BOOTSTRAP_KEY": newKey}, nil, nil)
	fresh := s.client(newKey)
	if _, err := fresh.CreateOrg(ctx, "tenant_two"); err != nil {
		t.Errorf("the new bootstrap key is not an operator: %v", err)
	}
	if _, err := s.client(testKey).Keys(ctx); statusOf(err) != 401 {
		t.Errorf("the old bootstrap key after a new one was added: %v", err)
	}
	keys, err = fresh.Keys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	live, revoked := 0, 0
	for _, k := range keys {
		if k.Name == "bootstrap" {
			if k.RevokedAt != nil {
				revoked++
			} else {
				live++
			}
		}
	}
	if live != 1 || revoked != 1 {
		t.Errorf("bootstrap keys: %d live, %d revoked; want one of each", live, revoked)
	}
}

// TestFailedStartLeavesNoTrace (issue failure 6): when the listen address (or the
// admin address) cannot be bound, serve fails naming it, prints no operator key
// and creates no database file; a later good start on the same directory then
// mints and prints the operator key as a first start does.
//
// It would have caught the old behaviour: the database was opened (created,
// migrated, locked) and the bootstrap key minted and printed before the listeners
// were bound, so a failed start printed a key nobody could use once it had
// failed, left agentd.db behind, and the next start, seeing a key, printed none.
func TestFailedStartLeavesNoTrace(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	addr := taken.Addr().String()
	parent := t.TempDir() // outlives the subtests: the last case's directory is reused below
	var lastDir string
	for _, tc := range []struct {
		name  string
		args  []string
		names string // what the error must name
	}{
		{"listen address taken", []string{"--addr", addr}, addr},
		{"admin address taken", []string{"--addr", "127.0.0.1:0", "--admin-addr", addr}, addr},
		{"admin address malformed", []string{"--addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:notaport"}, "127.0.0.1:notaport"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, err := os.MkdirTemp(parent, "case")
			if err != nil {
				t.Fatal(err)
			}
			lastDir = dir
			stdout, _, err := serveMustFail(t, append(tc.args, "--db", "sqlite:"+filepath.Join(dir, "agentd.db")), noEnv)
			if !strings.Contains(err.Error(), tc.names) {
				t.Errorf("error %q does not name %s", err, tc.names)
			}
			if strings.Contains(stdout, "agd_") || strings.Contains(stdout, "operator key") {
				t.Errorf("a failed start printed an operator key:\n%s", stdout)
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 0 {
				var names []string
				for _, e := range entries {
					names = append(names, e.Name())
				}
				t.Errorf("a failed start left files behind: %v", names)
			}
		})
	}
	// The same directory, now with an address that works: the first real start.
	s := startServerIn(t, lastDir, "", map[string]string{"AGENTD_BOOTSTRAP_KEY": ""}, nil, nil)
	var key string
	for _, f := range strings.Fields(s.Banner) {
		if strings.HasPrefix(f, "agd_") {
			key = f
		}
	}
	if key == "" {
		t.Fatalf("the first good start printed no operator key:\n%s", s.Banner)
	}
	if _, err := s.client(key).CreateOrg(context.Background(), "after_failures"); err != nil {
		t.Errorf("the printed key is not an operator key: %v", err)
	}
}

// fileHash is the SHA-256 of a file's bytes ("" if it does not exist).
func fileHash(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", sha256.Sum256(b))
}

// TestCheckCommandState (issue failure 7): agentd check on a path that does not
// exist fails naming it and creates nothing; beside a live server (with a run in
// flight) it reads without writing a byte or taking the server's lock, reports
// the database consistent, and the server goes on serving.
//
// It would have caught the old behaviour: check opened the database as serve
// does, so a missing path became a new, migrated, empty database that check
// called consistent (and left behind), and beside a live server it either failed
// on the lock or took it, or migrated and wrote the file under the server.
func TestCheckCommandState(t *testing.T) {
	t.Run("missing path", func(t *testing.T) {
		dir := t.TempDir()
		for _, p := range []string{filepath.Join(dir, "missing.db"), filepath.Join(dir, "sub", "missing.db")} {
			out, err := checkCmd(p)
			if err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "no such file") {
				t.Errorf("check %s: %v (output %q); want an error naming the missing file", p, err, out)
			}
			if strings.Contains(out, "consistent") {
				t.Errorf("check called a missing database consistent: %q", out)
			}
		}
		if entries, _ := os.ReadDir(dir); len(entries) != 0 {
			t.Errorf("check created %d entries, e.g. %s", len(entries), entries[0].Name())
		}
	})

	t.Run("beside a live server", func(t *testing.T) {
		u := newHeldStream(t, "a ", "b")
		// The fake clock never moves: no sweep writes while the test compares bytes.
		clk := clocktest.New(time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC))
		s := startServerWith(t, heldConfig(u), nil, &serveHooks{clock: clk})
		t.Cleanup(u.open)
		ctx := context.Background()
		op := s.client(s.Key)
		c := exactAgent(t, op)
		if _, err := op.CreateAgent(ctx, client.AgentSpec{Name: client.Ptr("held"), Description: client.Ptr("d"), Model: client.Ptr("held"), MaxToken: client.Ptr(100)}); err != nil {
			t.Fatal(err)
		}
		for i := range 3 {
			if _, err := op.Run(ctx, "exact", "ping", fmt.Sprintf("s%d", i%2)); err != nil {
				t.Fatal(err)
			}
		}
		// A run in flight: its hold and its session lease live in the server only.
		resp := postStream(t, s, "held", "ping", "live")
		defer resp.Body.Close()
		waitOn(t, u.started, "the upstream stream")
		if b, _ := op.Billing(ctx); b.Held == 0 {
			t.Fatalf("no hold in flight: %+v", b)
		}

		db, wal := fileHash(t, s.dbPath), fileHash(t, s.dbPath+"-wal")
		if out, err := checkCmd(s.dbPath); err != nil || !strings.Contains(out, "is consistent") {
			t.Errorf("check beside a live server: %v\n%s", err, out)
		}
		if fileHash(t, s.dbPath) != db || fileHash(t, s.dbPath+"-wal") != wal {
			t.Error("check changed the database files of a live server")
		}
		// The server still holds the file's lock, and still writes.
		_, _, err := serveMustFail(t, []string{"--addr", "127.0.0.1:0", "--db", "sqlite:" + s.dbPath}, noEnv)
		if !errors.Is(err, store.ErrLocked) {
			t.Errorf("a serve after check: %v, want the live server's lock", err)
		}
		u.open()
		events := readEvents(resp, nil)
		if len(events) < 2 || events[len(events)-2].Name != "done" {
			t.Errorf("the stream in flight during check: %+v", events)
		}
		before, _ := op.Billing(ctx)
		if _, err := op.Run(ctx, "exact", "ping", ""); err != nil {
			t.Fatalf("a run after check: %v", err)
		}
		after, _ := op.Billing(ctx)
		if toMicros(before.Balance-after.Balance) != c || after.Held != 0 {
			t.Errorf("billing %+v → %+v, want one run's %d charged", before, after, c)
		}
		checkClean(t, s.dbPath, clk.Now())
	})
}
