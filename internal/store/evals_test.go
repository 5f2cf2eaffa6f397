package store

import (
	"context"
	"testing"

	"github.com/agentd/agentd"
)

// TestEvals stores evaluations of an agent's versions with their eval status in
// one transaction, reads the newest per version back whole, lists an
// evaluation's runs, keeps organizations apart and rolls back with the status:
// on every dialect (conformance).
func TestEvals(t *testing.T) {
	ctx := context.Background()
	db := openDB(t, Options{})
	acme := newOrg(t, db, "acme", 0)
	other := newOrg(t, db, "other", 0)
	a := newAgent(t, db, acme.ID, "bot")

	wantCode(t, func() error { _, err := db.LatestEval(ctx, acme.ID, a.ID, 1); return err }(), agentd.ENotFound)

	first := &Eval{ID: "eval-1", OrgID: acme.ID, AgentID: a.ID, Version: 1, Status: agentd.EvalFailed, Passed: 1, Failed: 1,
		Cost: 1234, StartedAt: 1_000_000, FinishedAt: 2_000_000, KeyID: "key-1", Cases: []byte(`[{"name":"a","passed":false}]`),
		RunIDs: []string{"run-b", "run-a"}}
	mustTx(t, db, func(tx *Tx) error {
		if err := tx.InsertEval(ctx, first); err != nil {
			return err
		}
		return tx.SetEvalStatus(ctx, a.ID, 1, first.Status)
	})
	got, err := db.LatestEval(ctx, acme.ID, a.ID, 1)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != "eval-1" || got.OrgID != acme.ID || got.AgentID != a.ID || got.Version != 1 || got.Status != agentd.EvalFailed ||
		got.Passed != 1 || got.Failed != 1 || got.Cost != 1234 || got.StartedAt != 1_000_000 || got.FinishedAt != 2_000_000 ||
		got.KeyID != "key-1" || string(got.Cases) != `[{"name":"a","passed":false}]` || got.RunIDs != nil {
		t.Fatalf("latest = %+v", got)
	}
	if v, _ := db.AgentVersion(ctx, acme.ID, a.ID, 1); v.EvalStatus != agentd.EvalFailed {
		t.Errorf("eval status %q, want failed", v.EvalStatus)
	}
	runs, err := db.EvalRuns(ctx, "eval-1")
	if err != nil || len(runs) != 2 || runs[0] != "run-a" || runs[1] != "run-b" {
		t.Fatalf("eval runs = %v, %v", runs, err)
	}

	// A newer evaluation of the same version is the latest; it does not touch
	// another version's or another organization's.
	second := &Eval{ID: "eval-2", OrgID: acme.ID, AgentID: a.ID, Version: 1, Status: agentd.EvalPassed, Passed: 2,
		StartedAt: 3_000_000, FinishedAt: 4_000_000, KeyID: "key-2", Cases: []byte(`[]`), RunIDs: []string{"run-c"}}
	mustTx(t, db, func(tx *Tx) error {
		if err := tx.InsertEval(ctx, second); err != nil {
			return err
		}
		return tx.SetEvalStatus(ctx, a.ID, 1, second.Status)
	})
	if got, err := db.LatestEval(ctx, acme.ID, a.ID, 1); err != nil || got.ID != "eval-2" || got.Status != agentd.EvalPassed || got.KeyID != "key-2" {
		t.Fatalf("latest after a second eval = %+v, %v", got, err)
	}
	if v, _ := db.AgentVersion(ctx, acme.ID, a.ID, 1); v.EvalStatus != agentd.EvalPassed {
		t.Errorf("eval status %q, want passed", v.EvalStatus)
	}
	if runs, err := db.EvalRuns(ctx, "eval-2"); err != nil || len(runs) != 1 || runs[0] != "run-c" {
		t.Fatalf("eval-2 runs = %v, %v", runs, err)
	}
	if runs, err := db.EvalRuns(ctx, "eval-none"); err != nil || len(runs) != 0 {
		t.Fatalf("runs of no eval = %v, %v", runs, err)
	}
	wantCode(t, func() error { _, err := db.LatestEval(ctx, acme.ID, a.ID, 2); return err }(), agentd.ENotFound)
	wantCode(t, func() error { _, err := db.LatestEval(ctx, other.ID, a.ID, 1); return err }(), agentd.ENotFound)

	// The report and the status go together: a failing status update (no
	// version 9) rolls the evaluation back, and a run belongs to one eval.
	err = db.Tx(ctx, func(tx *Tx) error {
		if err := tx.InsertEval(ctx, &Eval{ID: "eval-3", OrgID: acme.ID, AgentID: a.ID, Version: 9, Status: agentd.EvalPassed, Cases: []byte(`[]`), RunIDs: []string{"run-d"}}); err != nil {
			return err
		}
		return tx.SetEvalStatus(ctx, a.ID, 9, agentd.EvalPassed)
	})
	wantCode(t, err, agentd.ENotFound)
	wantCode(t, func() error { _, err := db.LatestEval(ctx, acme.ID, a.ID, 9); return err }(), agentd.ENotFound)
	if runs, _ := db.EvalRuns(ctx, "eval-3"); len(runs) != 0 {
		t.Errorf("rolled-back eval's runs = %v", runs)
	}
	if err := db.Tx(ctx, func(tx *Tx) error {
		return tx.InsertEval(ctx, &Eval{ID: "eval-4", OrgID: acme.ID, AgentID: a.ID, Version: 1, Status: agentd.EvalPassed, Cases: []byte(`[]`), RunIDs: []string{"run-a"}})
	}); err == nil {
		t.Error("a run marked by two evals was stored")
	}
	if err := db.Tx(ctx, func(tx *Tx) error {
		return tx.InsertEval(ctx, &Eval{ID: "eval-5", OrgID: acme.ID, AgentID: a.ID, Version: 1, Status: "maybe", Cases: []byte(`[]`)})
	}); err == nil {
		t.Error("an eval with status maybe was stored")
	}
}
