package run

import (
	"context"
	"io"
	"log/slog"
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
	"github.com/agentd/agentd/internal/store/storetest"
)

// gated is a provider whose calls say they have begun and then wait to be let
// through.
type gated struct {
	*llmtest.Fake
	entered chan struct{}
	open    chan struct{}
}

func (g *gated) Complete(ctx context.Context, req *llm.Request) (*llm.Response, error) {
	g.entered <- struct{}{}
	<-g.open
	return g.Fake.Complete(ctx, req)
}

// TestIdempotencyAcrossReplicas: two replicas of one PostgreSQL schema, each
// with its own runner and database in-flight set. A retry that reaches the
// other replica while the first request runs gets 409 conflict; once the first
// has finished, it gets the stored result, with no second model call.
func TestIdempotencyAcrossReplicas(t *testing.T) {
	ctx := context.Background()
	dsn := storetest.Postgres(t)
	prov := &gated{Fake: &llmtest.Fake{Reply: "hi"}, entered: make(chan struct{}), open: make(chan struct{})}
	clk := clock.Real
	cat := catalog.New(pricedModel("priced", prov))
	p := &agentd.Principal{OrgID: agentd.NewID("org"), KeyID: "key-1", Owner: "alice", Scopes: []agentd.Scope{agentd.ScopeAdmin}}
	var runners []*Runner
	for i := range 2 {
		db, err := store.Open(ctx, dsn, store.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		rep, err := db.NewReplica(store.ReplicaOptions{Now: clk.Now})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { rep.Close(context.Background()) })
		accts := billing.New(db, clk, 0)
		ag := agents.New(db, cat, clk, agents.Options{})
		if i == 0 {
			if err := db.Tx(ctx, func(tx *store.Tx) error {
				if err := tx.CreateOrg(ctx, &agentd.Org{ID: p.OrgID, Name: "acme", CreatedAt: time.Now()}); err != nil {
					return err
				}
				return tx.CreateKey(ctx, &agentd.Key{ID: p.KeyID, OrgID: p.OrgID, Name: "k", Owner: p.Owner, Prefix: "agd_x",
					Hash: agentd.NewID("hash"), Scopes: p.Scopes, CreatedAt: time.Now()})
			}); err != nil {
				t.Fatal(err)
			}
			if _, err := accts.Grant(ctx, p.OrgID, 1_000_000, p); err != nil {
				t.Fatal(err)
			}
			if _, err := ag.Create(ctx, p, agents.Spec{Name: ptr("Bot"), Description: ptr("d"), Model: ptr("priced"), MaxTokens: ptr(10)}); err != nil {
				t.Fatal(err)
			}
		}
		runners = append(runners, &Runner{
			Agents: ag, Catalog: cat, DB: db, Accounts: accts,
			Sessions: session.New(db, session.NewMemoryLeases(0, clk), clk, session.Options{Wait: time.Second}),
			InFlight: NewDBInFlight(rep, clk),
			Timeout:  time.Minute, Clock: clk, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		})
	}
	req := func() *Request {
		return &Request{Principal: p, AgentName: "bot", Message: "hello", IdempotencyKey: "idem-1"}
	}
	type outcome struct {
		res *Result
		err error
	}
	first := make(chan outcome, 1)
	go func() {
		res, err := runners[0].Run(ctx, req())
		first <- outcome{res, err}
	}()
	<-prov.entered // the first request is at its model call, its key in flight

	if _, err := runners[1].Run(ctx, req()); agentd.ErrorCode(err) != agentd.EConflict {
		t.Fatalf("retry on the other replica while the first runs: %v, want %s", err, agentd.EConflict)
	}
	close(prov.open)
	done := <-first
	if done.err != nil {
		t.Fatal(done.err)
	}
	replay, err := runners[1].Run(ctx, req())
	if err != nil {
		t.Fatalf("retry on the other replica after the first finished: %v", err)
	}
	if !replay.Replayed || replay.RunID != done.res.RunID || replay.Response != "hi" {
		t.Errorf("retry got %+v, want the stored result of run %s", replay, done.res.RunID)
	}
	if n := prov.Calls(); n != 1 {
		t.Errorf("%d model calls, want 1", n)
	}
}
