package run

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/internal/catalog"
	"github.com/agentd/agentd/internal/clock"
	"github.com/agentd/agentd/internal/clock/clocktest"
	"github.com/agentd/agentd/internal/llm"
	"github.com/agentd/agentd/internal/llm/llmtest"
)

var (
	errRetryable = &llm.Error{Kind: llm.KindRetryable, StatusCode: 503, Message: "overloaded"}
	errPermanent = &llm.Error{Kind: llm.KindPermanent, StatusCode: 400, Message: "bad request"}
	errExhausted = &llm.Error{Kind: llm.KindExhausted, StatusCode: 429, Message: "insufficient_quota"}
)

func repeat(err error, n int) []error {
	out := make([]error, n)
	for i := range out {
		out[i] = err
	}
	return out
}

// lastRun returns the newest ledger row of the fixture's organization.
func lastRun(t *testing.T, f *fixture) agentd.LedgerRow {
	t.Helper()
	rows, err := f.db.Ledger(context.Background(), f.p.OrgID)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) == 0 {
		t.Fatal("no ledger row")
	}
	return rows[len(rows)-1]
}

// TestRetryAndFallback drives the call policy through its cases: which models are
// called how often, who answers, and what the ledger and the balance say.
func TestRetryAndFallback(t *testing.T) {
	usage := &llm.Usage{InputTokens: 20, OutputTokens: 5, Source: llm.SourceProvider}
	tests := []struct {
		name                   string
		primaryErrs, backupErr []error
		primaryRetries         int
		wantPrimary, wantBack  int
		wantModel              string // "" means the run fails
	}{
		{"first try answers", nil, nil, 2, 1, 0, "primary"},
		{"retryable then success", []error{errRetryable}, nil, 2, 2, 0, "primary"},
		{"deadline then success", []error{context.DeadlineExceeded}, nil, 2, 2, 0, "primary"},
		{"retries used up, fallback answers", repeat(errRetryable, 3), nil, 2, 3, 1, "backup"},
		{"no retries configured", repeat(errRetryable, 1), nil, 0, 1, 1, "backup"},
		{"permanent: no retry, no fallback", []error{errPermanent}, nil, 2, 1, 0, ""},
		{"exhausted: no retry, fallback", []error{errExhausted}, nil, 2, 1, 1, "backup"},
		{"unclassified error is permanent", []error{errors.New("boom")}, nil, 2, 1, 0, ""},
		{"everything fails", repeat(errRetryable, 3), repeat(errRetryable, 3), 2, 3, 3, ""},
		{"fallback fails permanently", repeat(errRetryable, 3), []error{errPermanent}, 2, 3, 1, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			primary := &llmtest.Fake{Reply: "from primary", Usage: usage, Errs: tt.primaryErrs}
			backup := &llmtest.Fake{Reply: "from backup", Usage: usage, Errs: tt.backupErr}
			pm, bm := pricedModel("primary", primary), pricedModel("backup", backup)
			pm.MaxRetries = tt.primaryRetries
			bm.Price = agentd.Price{InputPerM: 2_000_000_000, OutputPerM: 2_000_000_000} // twice the price
			pm.Fallbacks = []*catalog.Model{bm}
			f := newFixtureModels(t, primary, 1_000_000, pm, bm)
			ctx := context.Background()
			res, err := f.runner.Run(ctx, &Request{Principal: f.p, AgentName: "bot", Message: "hello there"})
			if got := primary.Calls(); got != tt.wantPrimary {
				t.Errorf("primary called %d times, want %d", got, tt.wantPrimary)
			}
			if got := backup.Calls(); got != tt.wantBack {
				t.Errorf("backup called %d times, want %d", got, tt.wantBack)
			}
			st, _ := f.accts.State(ctx, f.p.OrgID)
			if st.Held != 0 {
				t.Errorf("held = %d after the run", st.Held)
			}
			row := lastRun(t, f)
			if row.ModelRequested != "primary" {
				t.Errorf("ledger model_requested = %q", row.ModelRequested)
			}
			if tt.wantModel == "" {
				if agentd.ErrorCode(err) != agentd.EInferenceFailed {
					t.Fatalf("err = %v, want inference_failed", err)
				}
				if st.Balance != 1_000_000 || row.Outcome != agentd.OutcomeFailed || row.Cost != 0 {
					t.Errorf("failed run: balance %d, ledger %+v", st.Balance, row)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if res.Model != tt.wantModel || row.Model != tt.wantModel || res.Response != "from "+tt.wantModel {
				t.Errorf("answered by %q (ledger %q): %q, want %q", res.Model, row.Model, res.Response, tt.wantModel)
			}
			price := agentd.Micros(1000)
			if tt.wantModel == "backup" {
				price = 2000
			}
			if want := 25 * price; row.Cost != want || st.Balance != 1_000_000-want {
				t.Errorf("cost %d, balance %d; want cost %d at the answering model's price", row.Cost, st.Balance, want)
			}
		})
	}
}

// timerLog is a fake clock that records the timers armed on it.
type timerLog struct {
	*clocktest.Fake
	mu    sync.Mutex
	armed []time.Duration
}

func newTimerLog() *timerLog {
	return &timerLog{Fake: clocktest.New(time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC))}
}

func (c *timerLog) NewTimer(d time.Duration) clock.Timer {
	c.mu.Lock()
	c.armed = append(c.armed, d)
	c.mu.Unlock()
	return c.Fake.NewTimer(d)
}

func (c *timerLog) waits() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.armed)
}

// TestRetryAfterBeyondDeadlineFallsBack: a provider asking to wait longer than the
// run has left is not waited for.
func TestRetryAfterBeyondDeadlineFallsBack(t *testing.T) {
	slow := &llm.Error{Kind: llm.KindRetryable, StatusCode: 429, RetryAfter: time.Hour, Message: "rate limited"}
	primary := &llmtest.Fake{Reply: "p", Errs: []error{slow}}
	backup := &llmtest.Fake{Reply: "b"}
	pm, bm := pricedModel("primary", primary), pricedModel("backup", backup)
	pm.Fallbacks = []*catalog.Model{bm}
	f := newFixtureModels(t, primary, 1_000_000, pm, bm)
	// The runner waits on its clock, which does not move here: a wait would last
	// until the run's deadline and fail the run.
	clk := newTimerLog()
	f.runner.Clock = clk
	res, err := f.runner.Run(context.Background(), &Request{Principal: f.p, AgentName: "bot", Message: "hi"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Model != "backup" || primary.Calls() != 1 {
		t.Errorf("model %q after %d primary calls", res.Model, primary.Calls())
	}
	if w := clk.waits(); len(w) != 0 {
		t.Errorf("the run waited %v before falling back", w)
	}
}

// TestRetryAfterHonoured: a short Retry-After is waited out before the retry.
func TestRetryAfterHonoured(t *testing.T) {
	const retryAfter = 150 * time.Millisecond
	wait := &llm.Error{Kind: llm.KindRetryable, StatusCode: 429, RetryAfter: retryAfter, Message: "rate limited"}
	prov := &llmtest.Fake{Reply: "ok", Errs: []error{wait}}
	f := newFixture(t, prov, 1_000_000)
	clk := newTimerLog()
	f.runner.Clock = clk
	done := make(chan error, 1)
	go func() {
		_, err := f.runner.Run(context.Background(), &Request{Principal: f.p, AgentName: "bot", Message: "hi"})
		done <- err
	}()
	armed := make(chan struct{})
	go func() {
		clk.WaitTimers(1) // the runner waits before the retry
		close(armed)
	}()
	select {
	case <-armed:
	case err := <-done:
		t.Fatalf("the run ended (%v) without waiting for the Retry-After", err)
	case <-time.After(30 * time.Second): // a failure guard
		t.Fatal("the run neither waited nor ended")
	}
	clk.Advance(retryAfter - time.Millisecond)
	if n := prov.Calls(); n != 1 || clk.Timers() != 1 {
		t.Errorf("%d calls, %d timers armed a millisecond before the Retry-After: retried early", n, clk.Timers())
	}
	clk.Advance(time.Millisecond)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second): // a failure guard
		t.Fatal("the run did not retry once the Retry-After had passed")
	}
	if n := prov.Calls(); n != 2 {
		t.Errorf("%d calls, want the retry", n)
	}
	if w := clk.waits(); len(w) != 1 || w[0] < retryAfter {
		t.Errorf("waits %v, want one of at least the provider's Retry-After %v", w, retryAfter)
	}
}

// TestHoldCoversFallbacks: the hold is the most any model of the chain could cost,
// so a run that falls back to a pricier model cannot overspend; a balance that
// covers only the primary gets 402 before any call.
func TestHoldCoversFallbacks(t *testing.T) {
	setup := func(credits agentd.Micros) (*fixture, *llmtest.Fake, *llmtest.Fake) {
		primary := &llmtest.Fake{Reply: "p"}
		backup := &llmtest.Fake{Reply: "b"}
		pm, bm := pricedModel("primary", primary), pricedModel("backup", backup)
		bm.Price = agentd.Price{InputPerM: 10_000_000_000, OutputPerM: 10_000_000_000}
		pm.Fallbacks = []*catalog.Model{bm}
		return newFixtureModels(t, primary, credits, pm, bm), primary, backup
	}
	// Learn the prompt's size from a run that can afford it.
	f, primary, _ := setup(1_000_000)
	if _, err := f.runner.Run(context.Background(), &Request{Principal: f.p, AgentName: "bot", Message: "hi"}); err != nil {
		t.Fatal(err)
	}
	in := llm.CountMessages(words, primary.Last().Messages)
	primaryHold, backupHold := agentd.Micros(in+10)*1000, agentd.Micros(in+10)*10_000

	f, primary, backup := setup(primaryHold + 1)
	_, err := f.runner.Run(context.Background(), &Request{Principal: f.p, AgentName: "bot", Message: "hi"})
	var e *agentd.Error
	if !errors.As(err, &e) || e.Code != agentd.EInsufficientQuota || e.Fields["required"] != backupHold {
		t.Fatalf("err = %v, want 402 requiring the backup's %d", err, backupHold)
	}
	if primary.Calls()+backup.Calls() != 0 {
		t.Error("a provider was called")
	}
}

// TestFallbackTooSmallIsSkipped: a fallback whose context window cannot take the
// prompt is left out of the plan (and of the hold).
func TestFallbackTooSmallIsSkipped(t *testing.T) {
	primary := &llmtest.Fake{Reply: "p", Errs: repeat(errRetryable, 3)}
	tiny := &llmtest.Fake{Reply: "t"}
	pm, tm := pricedModel("primary", primary), pricedModel("tiny", tiny)
	tm.ContextWindow, tm.MaxOutputTokens = 12, 4
	pm.Fallbacks = []*catalog.Model{tm}
	f := newFixtureModels(t, primary, 1_000_000, pm, tm)
	_, err := f.runner.Run(context.Background(), &Request{Principal: f.p, AgentName: "bot", Message: strings.Repeat("word ", 20)})
	if agentd.ErrorCode(err) != agentd.EInferenceFailed || tiny.Calls() != 0 {
		t.Errorf("err = %v, tiny called %d times", err, tiny.Calls())
	}
}

// TestUsageBeyondHold: a provider counting more than the hold is charged in full
// while the balance allows, and never past it.
func TestUsageBeyondHold(t *testing.T) {
	for _, tt := range []struct {
		name     string
		credits  agentd.Micros
		wantCost agentd.Micros
	}{
		{"balance covers it", 1_000_000, 1_000_000 - 900_000},
		{"balance runs out", 50_000, 50_000},
	} {
		t.Run(tt.name, func(t *testing.T) {
			prov := &llmtest.Fake{Reply: "ok", Usage: &llm.Usage{InputTokens: 95, OutputTokens: 5, Source: llm.SourceProvider}}
			f := newFixture(t, prov, tt.credits)
			ctx := context.Background()
			if _, err := f.runner.Run(ctx, &Request{Principal: f.p, AgentName: "bot", Message: "hi"}); err != nil {
				t.Fatal(err)
			}
			want := min(agentd.Micros(100_000), tt.credits)
			st, _ := f.accts.State(ctx, f.p.OrgID)
			row := lastRun(t, f)
			if row.Cost != want || st.Balance != tt.credits-want || st.Held != 0 || st.Balance < 0 {
				t.Errorf("cost %d, state %+v; want cost %d", row.Cost, st, want)
			}
			if row.InputTokens != 95 || row.OutputTokens != 5 {
				t.Errorf("ledger tokens %d/%d, want the provider's 95/5", row.InputTokens, row.OutputTokens)
			}
		})
	}
}

// TestEstimatedUsage: a provider reporting no usage is billed on our count, and
// the ledger says so.
func TestEstimatedUsage(t *testing.T) {
	prov := &llmtest.Fake{Reply: "three word reply"}
	f := newFixture(t, prov, 1_000_000)
	res, err := f.runner.Run(context.Background(), &Request{Principal: f.p, AgentName: "bot", Message: "hello there"})
	if err != nil {
		t.Fatal(err)
	}
	in := llm.CountMessages(words, prov.Last().Messages)
	if res.Usage.Source != agentd.UsageEstimated || res.Usage.InputTokens != in || res.Usage.OutputTokens != 3 {
		t.Errorf("usage = %+v, want %d/3 estimated", res.Usage, in)
	}
	if row := lastRun(t, f); row.UsageSource != agentd.UsageEstimated || row.Cost != agentd.Micros(in+3)*1000 {
		t.Errorf("ledger = %+v", row)
	}
}

// TestStreamCommitPoint: once a piece has reached the client, an upstream failure
// is not retried or fallen back from.
func TestStreamCommitPoint(t *testing.T) {
	primary := &llmtest.Fake{Reply: "one two three", FailAfter: 1, FailErr: errRetryable}
	backup := &llmtest.Fake{Reply: "b"}
	pm, bm := pricedModel("primary", primary), pricedModel("backup", backup)
	pm.Fallbacks = []*catalog.Model{bm}
	f := newFixtureModels(t, primary, 1_000_000, pm, bm)
	var got []string
	_, err := f.runner.Run(context.Background(), &Request{Principal: f.p, AgentName: "bot", Message: "hi",
		Emit: func(s string) error { got = append(got, s); return nil }})
	if agentd.ErrorCode(err) != agentd.EInferenceFailed {
		t.Fatalf("err = %v", err)
	}
	if primary.Calls() != 1 || backup.Calls() != 0 || len(got) != 1 {
		t.Errorf("calls %d/%d, pieces %q", primary.Calls(), backup.Calls(), got)
	}

	// Before the first piece, the same failure is retried.
	retried := &llmtest.Fake{Reply: "one two", Errs: []error{errRetryable}}
	f = newFixture(t, retried, 1_000_000)
	got = nil
	res, err := f.runner.Run(context.Background(), &Request{Principal: f.p, AgentName: "bot", Message: "hi",
		Emit: func(s string) error { got = append(got, s); return nil }})
	if err != nil || strings.Join(got, "") != "one two" || res.Response != "one two" || retried.Calls() != 2 {
		t.Errorf("err %v, pieces %q, calls %d", err, got, retried.Calls())
	}
}

// deadlineLog is a provider that records, for each call, how long its context
// had left when the call began.
type deadlineLog struct {
	*llmtest.Fake
	mu   sync.Mutex
	left []time.Duration // -1: no deadline
}

func (d *deadlineLog) record(ctx context.Context) {
	left := time.Duration(-1)
	if dl, ok := ctx.Deadline(); ok {
		left = time.Until(dl)
	}
	d.mu.Lock()
	d.left = append(d.left, left)
	d.mu.Unlock()
}

func (d *deadlineLog) Complete(ctx context.Context, req *llm.Request) (*llm.Response, error) {
	d.record(ctx)
	return d.Fake.Complete(ctx, req)
}

func (d *deadlineLog) Stream(ctx context.Context, req *llm.Request, emit func(string) error) (*llm.Response, error) {
	d.record(ctx)
	return d.Fake.Stream(ctx, req, emit)
}

// TestAttemptTimeout: a model slower than its per-attempt timeout is abandoned,
// retried within its budget, then fallen back from, well inside the run deadline:
// each attempt runs under its own deadline, not the run's.
func TestAttemptTimeout(t *testing.T) {
	slow := &llmtest.Fake{Reply: "late", Delay: time.Hour} // answers only when cancelled
	fast := &llmtest.Fake{Reply: "fast"}
	logged := &deadlineLog{Fake: slow}
	pm, fm := pricedModel("slow", logged), pricedModel("fast", fast)
	pm.Timeout, pm.MaxRetries = 50*time.Millisecond, 1
	pm.Fallbacks = []*catalog.Model{fm}
	f := newFixtureModels(t, slow, 1_000_000, pm, fm)
	res, err := f.runner.Run(context.Background(), &Request{Principal: f.p, AgentName: "bot", Message: "hi"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Model != "fast" || slow.Calls() != 2 {
		t.Errorf("answered by %q after %d slow calls", res.Model, slow.Calls())
	}
	logged.mu.Lock()
	defer logged.mu.Unlock()
	for i, left := range logged.left {
		if left < 0 || left > pm.Timeout {
			t.Errorf("slow call %d began with %v left, want at most its per-attempt timeout %v (the run deadline is %v)", i, left, pm.Timeout, f.runner.Timeout)
		}
	}
}

// TestBackoffGrowsWithJitter: each wait is within [d/2, d] of an exponentially
// growing d, capped at Max.
func TestBackoffGrowsWithJitter(t *testing.T) {
	b := Backoff{Initial: 100 * time.Millisecond, Max: time.Second}
	for n, d := range []time.Duration{100, 200, 400, 800, 1000, 1000} {
		d *= time.Millisecond
		seen := map[time.Duration]bool{}
		for range 200 {
			w := b.delay(n)
			if w < d/2 || w > d {
				t.Fatalf("delay(%d) = %v, want within [%v, %v]", n, w, d/2, d)
			}
			seen[w] = true
		}
		if len(seen) < 100 {
			t.Errorf("delay(%d) took only %d distinct values in 200 draws: no jitter", n, len(seen))
		}
	}
}
