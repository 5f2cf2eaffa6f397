package store

import (
	"context"
	"errors"
	"strings"
	"testing"

	"modernc.org/sqlite"

	"github.com/agentd/agentd"
)

// storageMessage is what a client is told when storage fails under a write.
const storageMessage = "storage unavailable (disk full, read-only or failing); nothing was written"

// wantStorageUnavailable checks that err is the client-safe 503 of a storage
// failure: its message names no SQLite internals and no store function, and its
// cause, SQLite's error, is kept for the log.
func wantStorageUnavailable(t *testing.T, err error) {
	t.Helper()
	var e *agentd.Error
	if !errors.As(err, &e) || e.Code != agentd.EUnavailable {
		t.Fatalf("error %v (%T), want an *agentd.Error with code unavailable", err, err)
	}
	if e.Message != storageMessage || agentd.ErrorMessage(err) != storageMessage {
		t.Errorf("message %q, want %q", e.Message, storageMessage)
	}
	for _, leak := range []string{"sqlite", "SQLITE", "store.", "RecordRun", "database or disk"} {
		if strings.Contains(agentd.ErrorMessage(err), leak) {
			t.Errorf("message %q shows %q", agentd.ErrorMessage(err), leak)
		}
	}
	cause := errors.Unwrap(e)
	if cause == nil || cause != e.Err {
		t.Fatalf("cause %v, want the storage error in Err", cause)
	}
	var se *sqlite.Error
	if !errors.As(cause, &se) {
		t.Errorf("cause %v (%T) is not SQLite's error", cause, cause)
	}
}

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
		r.Turn.User = strings.Repeat("x", 30_000)
		if err = db.Tx(ctx, func(tx *Tx) error { _, err := tx.RecordRun(ctx, r); return err }); err != nil {
			break
		}
	}
	if n == 100 {
		t.Fatal("100 runs of 30 kB fit in 512 kB: the test proves nothing")
	}
	wantStorageUnavailable(t, err)
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
	if err := db.Tx(ctx, func(tx *Tx) error { _, err := tx.RecordRun(ctx, r); return err }); err != nil {
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
	err := db.Tx(ctx, func(tx *Tx) error { _, err := tx.RecordRun(ctx, r); return err })
	wantStorageUnavailable(t, err)
	if n := count(t, db, `SELECT count(*) FROM ledger`); n != 0 || balance(t, db, o.ID) != 1_000_000 {
		t.Errorf("a refused write left %d ledger rows and balance %d", n, balance(t, db, o.ID))
	}
	if _, err := db.write.ExecContext(ctx, "PRAGMA query_only = 0"); err != nil {
		t.Fatal(err)
	}
	if err := db.Tx(ctx, func(tx *Tx) error { _, err := tx.RecordRun(ctx, okRun(a, "alice", "s1", 5)); return err }); err != nil {
		t.Errorf("after the database became writable again: %v", err)
	}
}

// TestNotStorageErrorsStayTheirOwn: only failures of the storage become 503; a
// write's own error reaches its caller as it was.
func TestNotStorageErrorsStayTheirOwn(t *testing.T) {
	ctx := context.Background()
	db := openDB(t, Options{})
	o := newOrg(t, db, "acme", 10)
	a := newAgent(t, db, o.ID, "bot")
	own := errors.New("mine")
	tests := []struct {
		name  string
		fn    func(tx *Tx) error
		check func(t *testing.T, err error)
	}{
		{"the caller's error", func(tx *Tx) error { return own }, func(t *testing.T, err error) {
			if !errors.Is(err, own) {
				t.Errorf("error %v, want the caller's", err)
			}
		}},
		{"a constraint", func(tx *Tx) error { _, err := tx.RecordRun(ctx, okRun(a, "alice", "", 11)); return err }, func(t *testing.T, err error) {
			if agentd.ErrorCode(err) == agentd.EUnavailable || !strings.Contains(strings.ToUpper(err.Error()), "CHECK") {
				t.Errorf("error %v, want the CHECK constraint's, not unavailable", err)
			}
		}},
		{"a client error", func(tx *Tx) error {
			return tx.CreateOrg(ctx, &agentd.Org{ID: agentd.NewID("org"), Name: "acme", CreatedAt: now()})
		}, func(t *testing.T, err error) { wantCode(t, err, agentd.EAlreadyExists) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := db.Tx(ctx, tt.fn)
			if err == nil {
				t.Fatal("the write succeeded")
			}
			tt.check(t, err)
		})
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
