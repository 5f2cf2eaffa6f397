package store

import (
	"context"
	"testing"

	"github.com/agentd/agentd"
)

// TestVersions stores versions and drafts, pages them newest first, moves the
// active pointer without making a version, keeps a canary, and records eval
// statuses: on every dialect (conformance).
func TestVersions(t *testing.T) {
	ctx := context.Background()
	db := openDB(t, Options{})
	acme := newOrg(t, db, "acme", 0)
	other := newOrg(t, db, "other", 0)
	a := newAgent(t, db, acme.ID, "bot")

	// v2 active, with a note and an author; v3 a draft.
	a.Version.Instructions, a.Version.Note, a.Version.AuthorKeyID = "v2", "second", "key-1"
	mustTx(t, db, func(tx *Tx) error { return tx.UpdateAgent(ctx, a, true) })
	draft := a.Version
	draft.Instructions, draft.Note = "v3", "draft"
	mustTx(t, db, func(tx *Tx) error { return tx.AddVersion(ctx, acme.ID, a.ID, &draft) })
	if a.Version.Number != 2 || draft.Number != 3 {
		t.Fatalf("numbers %d, %d", a.Version.Number, draft.Number)
	}
	got, err := db.Agent(ctx, acme.ID, a.ID)
	if err != nil || got.Version.Number != 2 || got.Version.Note != "second" || got.Version.AuthorKeyID != "key-1" || got.Canary != nil {
		t.Fatalf("agent %+v %v", got, err)
	}
	v, err := db.AgentVersion(ctx, acme.ID, a.ID, 3)
	if err != nil || v.Instructions != "v3" || v.Note != "draft" || v.EvalStatus != "" || len(v.Demonstrations) != 1 {
		t.Fatalf("draft %+v %v", v, err)
	}
	wantCode(t, func() error { _, err := db.AgentVersion(ctx, acme.ID, a.ID, 4); return err }(), agentd.ENotFound)
	wantCode(t, func() error { _, err := db.AgentVersion(ctx, other.ID, a.ID, 1); return err }(), agentd.ENotFound)
	wantCode(t, db.Tx(ctx, func(tx *Tx) error { return tx.AddVersion(ctx, other.ID, a.ID, &draft) }), agentd.ENotFound)

	vs, next, err := db.VersionsPage(ctx, acme.ID, a.ID, "", 2)
	if err != nil || len(vs) != 2 || vs[0].Number != 3 || vs[1].Number != 2 || next == "" {
		t.Fatalf("page 1 %+v %q %v", vs, next, err)
	}
	vs, next, err = db.VersionsPage(ctx, acme.ID, a.ID, next, 2)
	if err != nil || len(vs) != 1 || vs[0].Number != 1 || next != "" {
		t.Fatalf("page 2 %+v %q %v", vs, next, err)
	}
	_, _, err = db.VersionsPage(ctx, acme.ID, a.ID, "!!", 2)
	wantCode(t, err, agentd.EInvalid)

	// Eval statuses.
	mustTx(t, db, func(tx *Tx) error { return tx.SetEvalStatus(ctx, a.ID, 3, agentd.EvalPassed) })
	if v, _ := db.AgentVersion(ctx, acme.ID, a.ID, 3); v.EvalStatus != agentd.EvalPassed {
		t.Errorf("eval status %q", v.EvalStatus)
	}
	mustTx(t, db, func(tx *Tx) error { return tx.SetEvalStatus(ctx, a.ID, 3, "") })
	if v, _ := db.AgentVersion(ctx, acme.ID, a.ID, 3); v.EvalStatus != "" {
		t.Errorf("eval status after reset %q", v.EvalStatus)
	}
	wantCode(t, db.Tx(ctx, func(tx *Tx) error { return tx.SetEvalStatus(ctx, a.ID, 9, agentd.EvalFailed) }), agentd.ENotFound)
	wantCode(t, db.Tx(ctx, func(tx *Tx) error { return tx.SetEvalStatus(ctx, a.ID, 3, "maybe") }), agentd.EInvalid)

	// Activate v1 with a canary on v3: the pointer moves, no version is made.
	v1, err := db.AgentVersion(ctx, acme.ID, a.ID, 1)
	if err != nil {
		t.Fatal(err)
	}
	a.Version, a.Canary = *v1, &agentd.Canary{Version: 3, Percent: 12.5}
	mustTx(t, db, func(tx *Tx) error { return tx.UpdateAgent(ctx, a, false) })
	got, err = db.AgentByName(ctx, acme.ID, "bot")
	if err != nil || got.Version.Number != 1 || got.Version.Instructions != "Be brief." || got.Canary == nil || *got.Canary != (agentd.Canary{Version: 3, Percent: 12.5}) {
		t.Fatalf("after activation %+v %v", got, err)
	}
	if vs, _, _ := db.VersionsPage(ctx, acme.ID, a.ID, "", 10); len(vs) != 3 {
		t.Errorf("%d versions after activation, want 3", len(vs))
	}
	a.Canary = nil
	mustTx(t, db, func(tx *Tx) error { return tx.UpdateAgent(ctx, a, false) })
	if got, _ := db.Agent(ctx, acme.ID, a.ID); got.Canary != nil {
		t.Errorf("canary not removed: %+v", got.Canary)
	}
}
