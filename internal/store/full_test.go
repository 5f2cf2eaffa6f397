package store

import (
	"context"
	"strings"
	"testing"

	"github.com/agentd/agentd"
)

// TestFullDatabase: a write that cannot fit is 503 unavailable, leaves nothing
// behind, and does not stop later writes that fit.
func TestFullDatabase(t *testing.T) {
	ctx := context.Background()
	db := openDB(t, Options{MaxBytes: 512 << 10})
	o := newOrg(t, db, "acme", 1_000_000)
	a := newAgent(t, db, o.ID, "bot")
	var err error
	n := 0
	for ; n < 100; n++ {
		r := okRun(a, "alice", "s1", 1)
		r.UserMessage = strings.Repeat("x", 30_000)
		if err = db.Tx(ctx, func(tx *Tx) error { return tx.RecordRun(ctx, r) }); err != nil {
			break
		}
	}
	if agentd.ErrorCode(err) != agentd.EUnavailable {
		t.Fatalf("after %d runs: %v (%T), want unavailable", n, err, err)
	}
	if got := count(t, db, `SELECT count(*) FROM ledger`); got != n {
		t.Errorf("%d ledger rows for %d stored runs", got, n)
	}
	if got := count(t, db, `SELECT count(*) FROM session_turns`); got != n {
		t.Errorf("%d turns for %d stored runs", got, n)
	}
	if b := balance(t, db, o.ID); b != 1_000_000-agentd.Micros(n) {
		t.Errorf("balance %d after %d runs of 1", b, n)
	}
	if problems, err := db.Check(ctx); err != nil || len(problems) > 0 {
		t.Errorf("check: %v %q", err, problems)
	}
	// A small write still fits.
	r := okRun(a, "alice", "", 1)
	if err := db.Tx(ctx, func(tx *Tx) error { return tx.RecordRun(ctx, r) }); err != nil {
		t.Errorf("a small write after the full one: %v", err)
	}
}

// TestReadOnlyDatabase: a database that became read-only under the server (here
// through query_only on the write connection) refuses writes with 503 and keeps
// none of them; once writable again, writes go through.
func TestReadOnlyDatabase(t *testing.T) {
	ctx := context.Background()
	db := openDB(t, Options{})
	o := newOrg(t, db, "acme", 1_000_000)
	a := newAgent(t, db, o.ID, "bot")
	if _, err := db.write.ExecContext(ctx, "PRAGMA query_only = 1"); err != nil {
		t.Fatal(err)
	}
	r := okRun(a, "alice", "s1", 5)
	err := db.Tx(ctx, func(tx *Tx) error { return tx.RecordRun(ctx, r) })
	if agentd.ErrorCode(err) != agentd.EUnavailable {
		t.Fatalf("write to a read-only database: %v, want unavailable", err)
	}
	if n := count(t, db, `SELECT count(*) FROM ledger`); n != 0 || balance(t, db, o.ID) != 1_000_000 {
		t.Errorf("a refused write left %d ledger rows and balance %d", n, balance(t, db, o.ID))
	}
	if _, err := db.write.ExecContext(ctx, "PRAGMA query_only = 0"); err != nil {
		t.Fatal(err)
	}
	if err := db.Tx(ctx, func(tx *Tx) error { return tx.RecordRun(ctx, okRun(a, "alice", "s1", 5)) }); err != nil {
		t.Errorf("after the database became writable again: %v", err)
	}
}

// TestReady: an open database is ready; a closed one is not.
func TestReady(t *testing.T) {
	db := openDB(t, Options{})
	if err := db.Ready(context.Background()); err != nil {
		t.Fatalf("open database: %v", err)
	}
	db.Close()
	if err := db.Ready(context.Background()); err == nil {
		t.Error("a closed database is ready")
	}
}
