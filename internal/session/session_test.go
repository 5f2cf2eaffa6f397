package session_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/internal/clock/clocktest"
	"github.com/agentd/agentd/internal/session"
	"github.com/agentd/agentd/internal/session/sessiontest"
	"github.com/agentd/agentd/internal/store"
)

var epoch = time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)

// TestMemoryLeases runs the leases' conformance suite on the in-memory leases.
func TestMemoryLeases(t *testing.T) {
	sessiontest.RunLeases(t, func(t *testing.T) sessiontest.Harness {
		clk := clocktest.New(epoch)
		l := session.NewMemoryLeases(time.Minute, clk)
		t.Cleanup(func() {
			if n := l.Held(); n != 0 {
				t.Errorf("%d leases still held after the test", n)
			}
		})
		return sessiontest.Harness{Leases: l, Clock: clk, TTL: time.Minute, Sweep: func() { l.Sweep() }}
	})
}

func TestKeyIsUnambiguous(t *testing.T) {
	tests := []struct {
		name string
		a, b agentd.SessionKey
	}{
		{"shifted boundary", agentd.SessionKey{OrgID: "o", AgentID: "a", Owner: "ab", SessionID: "c"}, agentd.SessionKey{OrgID: "o", AgentID: "a", Owner: "a", SessionID: "bc"}},
		{"org and agent", agentd.SessionKey{OrgID: "o1", AgentID: "a", Owner: "x", SessionID: "s"}, agentd.SessionKey{OrgID: "o", AgentID: "1a", Owner: "x", SessionID: "s"}},
		{"empty parts", agentd.SessionKey{AgentID: "a", SessionID: "s"}, agentd.SessionKey{OrgID: "a", SessionID: "s"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if session.Key(tt.a) == session.Key(tt.b) {
				t.Errorf("Key(%+v) == Key(%+v)", tt.a, tt.b)
			}
		})
	}
}

// world is a session service on a real database with one agent.
type world struct {
	db     *store.DB
	svc    *session.Service
	leases *session.MemoryLeases
	clock  *clocktest.Fake
	agent  *agentd.Agent
	org    *agentd.Org
	now    int64
}

func newWorld(t *testing.T) *world {
	t.Helper()
	return openWorld(t, "sqlite:"+filepath.Join(t.TempDir(), "s.db"), store.Options{Synchronous: "OFF"})
}

func openWorld(t *testing.T, dsn string, opts store.Options) *world {
	t.Helper()
	ctx := context.Background()
	db, err := store.Open(ctx, dsn, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	w := &world{db: db, clock: clocktest.New(epoch)}
	w.org = &agentd.Org{ID: agentd.NewID("org"), Name: "acme", CreatedAt: epoch}
	w.agent = &agentd.Agent{ID: agentd.NewID("agent"), OrgID: w.org.ID, Name: "bot", Active: true, ConversationSaving: true,
		CreatedAt: epoch, UpdatedAt: epoch, Version: agentd.Version{Model: "m", MaxTokens: 10, CreatedAt: epoch}}
	if err := db.Tx(ctx, func(tx *store.Tx) error {
		if err := tx.CreateOrg(ctx, w.org); err != nil {
			return err
		}
		return tx.CreateAgent(ctx, w.agent)
	}); err != nil {
		t.Fatal(err)
	}
	w.leases = session.NewMemoryLeases(time.Minute, w.clock)
	w.svc = session.New(db, w.leases, w.clock, session.Options{Wait: time.Second})
	return w
}

func (w *world) key(sid string) agentd.SessionKey {
	return agentd.SessionKey{OrgID: w.org.ID, AgentID: w.agent.ID, Owner: "alice", SessionID: sid}
}

// turn stores one turn of session sid the way a run does: under the lease, with
// the turn recorded in the transaction's commit hook.
func (w *world) turn(t *testing.T, sid, user string) {
	t.Helper()
	ctx := context.Background()
	k := w.key(sid)
	tu, err := w.svc.Begin(ctx, k)
	if err != nil {
		t.Fatal(err)
	}
	defer tu.End()
	if _, err := tu.History(ctx, 1<<30, cost); err != nil {
		t.Fatal(err)
	}
	w.now++
	rec := &store.Run{LedgerRow: agentd.LedgerRow{RunID: agentd.NewID("run"), CreatedAt: w.clock.Now().Add(time.Duration(w.now) * time.Microsecond),
		OrgID: k.OrgID, KeyID: "key-1", Owner: k.Owner, AgentID: k.AgentID, AgentName: "bot", SessionID: sid,
		Model: "m", UsageSource: agentd.UsageProvider, Outcome: agentd.OutcomeOK},
		Turn: &agentd.Turn{User: user, Assistant: "re: " + user, UserTokens: 1, AssistantTokens: 2}}
	if err := w.db.Tx(ctx, func(tx *store.Tx) error {
		stored, err := tx.RecordRun(ctx, rec)
		if stored {
			tu.Record(tx, *rec.Turn)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
}

func cost(agentd.Turn) int { return 10 }

func users(w session.Window) []string {
	var out []string
	for _, t := range w.Turns {
		out = append(out, t.User)
	}
	return out
}

// TestWindowIsTheDatabase: whether served from memory or read from the database,
// a turn's window is the newest turns that fit, in order, with the rest counted as
// trimmed; Peek gives the same answer.
func TestWindowIsTheDatabase(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	for i := range 12 {
		w.turn(t, "s", fmt.Sprint("m", i))
	}
	for _, budget := range []int{0, 25, 50, 1000} {
		tu, err := w.svc.Begin(ctx, w.key("s"))
		if err != nil {
			t.Fatal(err)
		}
		got, err := tu.History(ctx, budget, cost)
		tu.End()
		if err != nil {
			t.Fatal(err)
		}
		fit := min(budget/10, 12)
		if len(got.Turns) != fit || got.Trimmed != 12-fit {
			t.Errorf("budget %d: %d turns, %d trimmed; want %d, %d", budget, len(got.Turns), got.Trimmed, fit, 12-fit)
		}
		for i, u := range users(got) {
			if want := fmt.Sprint("m", 12-fit+i); u != want {
				t.Errorf("budget %d: turn %d is %q, want %q", budget, i, u, want)
			}
		}
		// A fresh service (no cache) reads the same from the database.
		fresh := session.New(w.db, session.NewMemoryLeases(time.Minute, w.clock), w.clock, session.Options{})
		peek, err := fresh.Peek(ctx, w.key("s"), budget, cost)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(users(peek), peek.Trimmed) != fmt.Sprint(users(got), got.Trimmed) {
			t.Errorf("budget %d: database window %v/%d, cached %v/%d", budget, users(peek), peek.Trimmed, users(got), got.Trimmed)
		}
	}
}

// TestPeekNeverWritesTheCache is the race of estimates against turns: an estimate
// that read the database before a turn committed must not leave that stale window
// in memory for the next turn. Each round empties the cache (as a sweep of another
// session used to), peeks, stores a turn, and checks the next turn sees it.
func TestPeekNeverWritesTheCache(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	for i := range 30 {
		var wg sync.WaitGroup
		wg.Go(func() {
			if _, err := w.svc.Peek(ctx, w.key("s"), 1<<30, cost); err != nil {
				t.Error(err)
			}
		})
		w.turn(t, "s", fmt.Sprint("m", i))
		wg.Wait()
		tu, err := w.svc.Begin(ctx, w.key("s"))
		if err != nil {
			t.Fatal(err)
		}
		got, err := tu.History(ctx, 1<<30, cost)
		tu.End()
		if err != nil {
			t.Fatal(err)
		}
		if len(got.Turns) != i+1 || got.Turns[i].User != fmt.Sprint("m", i) {
			t.Fatalf("round %d: the window has %d turns (%v); the turn just stored is missing", i, len(got.Turns), users(got))
		}
	}
}

// TestRecordOnlyOnCommit: a turn whose transaction rolls back never joins the
// cached window.
func TestRecordOnlyOnCommit(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	w.turn(t, "s", "kept")
	tu, err := w.svc.Begin(ctx, w.key("s"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tu.History(ctx, 1<<30, cost); err != nil {
		t.Fatal(err)
	}
	err = w.db.Tx(ctx, func(tx *store.Tx) error {
		tu.Record(tx, agentd.Turn{User: "rolled back"})
		return fmt.Errorf("the write fails")
	})
	tu.End()
	if err == nil {
		t.Fatal("the failing write succeeded")
	}
	peek, err := w.svc.Peek(ctx, w.key("s"), 1<<30, cost)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(users(peek)) != "[kept]" {
		t.Errorf("window %v after a rolled-back turn", users(peek))
	}
}

// TestDelete: deleting a session waits for the turn in flight, deletes every turn,
// and the next turn starts from nothing; an unknown session is not found.
func TestDelete(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	w.turn(t, "s", "one")
	w.turn(t, "s", "two")
	tu, err := w.svc.Begin(ctx, w.key("s")) // a turn in flight
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	var deleted int
	go func() {
		var err error
		deleted, err = w.svc.Delete(ctx, w.key("s"))
		done <- err
	}()
	w.clock.WaitTimers(1) // the delete waits for the lease
	tu.End()
	if err := <-done; err != nil || deleted != 2 {
		t.Fatalf("Delete = %d, %v; want 2 turns", deleted, err)
	}
	peek, err := w.svc.Peek(ctx, w.key("s"), 1<<30, cost)
	if err != nil || len(peek.Turns) != 0 || peek.Trimmed != 0 {
		t.Errorf("after delete: %v %d (%v)", users(peek), peek.Trimmed, err)
	}
	if _, err := w.svc.Delete(ctx, w.key("s")); agentd.ErrorCode(err) != agentd.ENotFound {
		t.Errorf("deleting a deleted session: %v, want not found", err)
	}
}

// TestSweepIdle: the sweep deletes sessions idle past the cutoff and forgets
// exactly those; a session whose turn is in flight is skipped; every other
// session's cached window survives.
func TestSweepIdle(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	for _, sid := range []string{"old1", "old2", "busy"} {
		w.turn(t, sid, sid)
	}
	w.clock.Advance(time.Hour)
	w.turn(t, "fresh", "fresh")
	busy, err := w.svc.Begin(ctx, w.key("busy"))
	if err != nil {
		t.Fatal(err)
	}
	deleted, found, err := w.svc.SweepIdle(ctx, w.clock.Now().Add(-time.Minute), 10)
	busy.End()
	if err != nil {
		t.Fatal(err)
	}
	if deleted != 2 || found != 3 {
		t.Errorf("SweepIdle = %d deleted of %d found; want 2 of 3", deleted, found)
	}
	for sid, want := range map[string]int{"old1": 0, "old2": 0, "busy": 1, "fresh": 1} {
		peek, err := w.svc.Peek(ctx, w.key(sid), 1<<30, cost)
		if err != nil {
			t.Fatal(err)
		}
		if len(peek.Turns) != want {
			t.Errorf("session %s: %d turns after the sweep, want %d", sid, len(peek.Turns), want)
		}
		n, err := w.db.CountTurns(ctx, w.key(sid))
		if err != nil || n != want {
			t.Errorf("session %s: %d stored turns, want %d (%v)", sid, n, want, err)
		}
	}
}
