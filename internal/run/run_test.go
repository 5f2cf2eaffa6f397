package run

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/internal/agents"
	"github.com/agentd/agentd/internal/billing"
	"github.com/agentd/agentd/internal/catalog"
	"github.com/agentd/agentd/internal/clock"
	"github.com/agentd/agentd/internal/llm"
	"github.com/agentd/agentd/internal/llm/llmtest"
	"github.com/agentd/agentd/internal/session"
	"github.com/agentd/agentd/internal/store"
)

type fixture struct {
	db     *store.DB
	runner *Runner
	accts  *billing.Accounts
	p      *agentd.Principal
	prov   *llmtest.Fake
}

func words(s string) int { return len(strings.Fields(s)) }

// pricedModel is a catalog model served by prov at 1000 credits per M tokens each
// way, counting words as tokens.
func pricedModel(id string, prov llm.Provider) *catalog.Model {
	return &catalog.Model{
		ID: id, ProviderName: "fake", Provider: prov, UpstreamModel: "up-" + id, ContextWindow: 4096, MaxOutputTokens: 512,
		Price: agentd.Price{InputPerM: 1_000_000_000, OutputPerM: 1_000_000_000}, Count: words, Tokenizer: "words",
		MaxRetries: 2,
	}
}

// newFixture builds a runner on a real SQLite database with one agent on a priced
// model served by prov; the organization has credits micro-credits.
func newFixture(t *testing.T, prov *llmtest.Fake, credits agentd.Micros) *fixture {
	t.Helper()
	return newFixtureModels(t, prov, credits, pricedModel("priced", prov))
}

// newFixtureModels is newFixture with a catalog of models; the agent uses the first.
func newFixtureModels(t *testing.T, prov *llmtest.Fake, credits agentd.Micros, models ...*catalog.Model) *fixture {
	t.Helper()
	ctx := context.Background()
	db, err := store.Open(ctx, "sqlite:"+filepath.Join(t.TempDir(), "a.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	org := &agentd.Org{ID: agentd.NewID("org"), Name: "acme", CreatedAt: time.Now()}
	if err := db.Tx(ctx, func(tx *store.Tx) error {
		if err := tx.CreateOrg(ctx, org); err != nil {
			return err
		}
		return tx.CreateKey(ctx, &agentd.Key{ID: "key-1", OrgID: org.ID, Name: "k", Owner: "alice", Prefix: "agd_x", Hash: agentd.NewID("hash"),
			Scopes: []agentd.Scope{agentd.ScopeAdmin}, CreatedAt: time.Now()})
	}); err != nil {
		t.Fatal(err)
	}
	clk := clock.Real
	accts := billing.New(db, clk, 0)
	if credits != 0 {
		if _, err := accts.Grant(ctx, org.ID, credits, &agentd.Principal{KeyID: "key-1"}); err != nil {
			t.Fatal(err)
		}
	}
	cat := catalog.New(models...)
	ag := agents.New(db, cat, clk, agents.Options{})
	p := &agentd.Principal{OrgID: org.ID, KeyID: "key-1", Owner: "alice", Scopes: []agentd.Scope{agentd.ScopeAdmin}}
	if _, err := ag.Create(ctx, p, agents.Spec{
		Name: ptr("Bot"), Description: ptr("d"), Model: ptr(models[0].ID), MaxTokens: ptr(10),
	}); err != nil {
		t.Fatal(err)
	}
	r := &Runner{
		Agents: ag, Catalog: cat, DB: db, Accounts: accts,
		Sessions: session.New(db, session.NewMemoryLeases(0, clk), clk, session.Options{Wait: time.Second}), InFlight: NewMemoryInFlight(),
		Timeout: 5 * time.Second, Backoff: Backoff{Initial: time.Millisecond, Max: 4 * time.Millisecond}, Clock: clk, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	return &fixture{db: db, runner: r, accts: accts, p: p, prov: prov}
}

func ptr[T any](v T) *T { return &v }

// TestInferenceFailureChargesNothing: a failing provider gives inference_failed,
// the hold is released, the balance is unchanged, and the ledger records a failed
// run with cost 0 and no session turn.
func TestInferenceFailureChargesNothing(t *testing.T) {
	boom := &llm.Error{Kind: llm.KindRetryable, StatusCode: 500, Message: "upstream exploded: secret internals"}
	prov := &llmtest.Fake{Errs: []error{boom, boom, boom}}
	f := newFixture(t, prov, 1_000_000)
	ctx := context.Background()
	_, err := f.runner.Run(ctx, &Request{Principal: f.p, AgentName: "bot", Message: "hello there", SessionID: "s1"})
	var e *agentd.Error
	if !errors.As(err, &e) || e.Code != agentd.EInferenceFailed {
		t.Fatalf("err = %v, want inference_failed", err)
	}
	if strings.Contains(e.Message, "secret") {
		t.Errorf("upstream text leaked to the client: %q", e.Message)
	}
	st, _ := f.accts.State(ctx, f.p.OrgID)
	if st.Balance != 1_000_000 || st.Held != 0 {
		t.Errorf("state after failure = %+v", st)
	}
	tot, err := f.db.LedgerTotals(ctx, f.p.OrgID)
	if err != nil || tot.Runs != 0 || tot.Cost != 0 {
		t.Errorf("ledger ok-runs after failure: %+v %v", tot, err)
	}
	turns := 0
	f.db.History(ctx, agentd.SessionKey{OrgID: f.p.OrgID, AgentID: mustAgentID(t, f), Owner: "alice", SessionID: "s1"}, func(agentd.Turn) bool { turns++; return true })
	if turns != 0 {
		t.Errorf("a failed run stored %d turns", turns)
	}
	if b, _ := f.db.Balance(ctx, f.p.OrgID); b != 1_000_000 {
		t.Errorf("stored balance = %d", b)
	}
}

// TestSuccessChargesExactly: cost = tokens × price, rounded up; hold fully ended.
func TestSuccessChargesExactly(t *testing.T) {
	prov := &llmtest.Fake{Reply: "four words of reply", Usage: &llm.Usage{InputTokens: 30, OutputTokens: 4, Source: llm.SourceProvider}}
	f := newFixture(t, prov, 1_000_000)
	ctx := context.Background()
	res, err := f.runner.Run(ctx, &Request{Principal: f.p, AgentName: "bot", Message: "hello there"})
	if err != nil {
		t.Fatal(err)
	}
	want := agentd.Micros((res.Usage.InputTokens + res.Usage.OutputTokens) * 1000)
	st, _ := f.accts.State(ctx, f.p.OrgID)
	if st.Balance != 1_000_000-want || st.Held != 0 {
		t.Errorf("state = %+v, want balance %d", st, 1_000_000-want)
	}
	if b, _ := f.db.Balance(ctx, f.p.OrgID); b != st.Balance {
		t.Errorf("stored balance %d != live balance %d", b, st.Balance)
	}
	tot, _ := f.db.LedgerTotals(ctx, f.p.OrgID)
	if tot.Runs != 1 || tot.Cost != want {
		t.Errorf("ledger = %+v, want 1 run costing %d", tot, want)
	}
}

// TestHoldRefusedBeforeProviderCall: a 402 never reaches the model.
func TestHoldRefusedBeforeProviderCall(t *testing.T) {
	prov := &llmtest.Fake{Reply: "ok"}
	f := newFixture(t, prov, 5) // 5 micro-credits: not even one token
	_, err := f.runner.Run(context.Background(), &Request{Principal: f.p, AgentName: "bot", Message: "hello"})
	var e *agentd.Error
	if !errors.As(err, &e) || e.Code != agentd.EInsufficientQuota {
		t.Fatalf("err = %v", err)
	}
	if e.Fields["available"].(agentd.Micros) != 5 || e.Fields["required"].(agentd.Micros) <= 5 {
		t.Errorf("fields = %v", e.Fields)
	}
	if prov.Calls() != 0 {
		t.Errorf("provider called %d times", prov.Calls())
	}
}

func mustAgentID(t *testing.T, f *fixture) string {
	a, err := f.db.AgentByName(context.Background(), f.p.OrgID, "bot")
	if err != nil {
		t.Fatal(err)
	}
	return a.ID
}
