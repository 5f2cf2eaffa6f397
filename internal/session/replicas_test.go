package session_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/agentd/agentd/internal/session"
	"github.com/agentd/agentd/internal/store"
	"github.com/agentd/agentd/internal/store/storetest"
)

// newReplicas is newWorld on PostgreSQL n times over: each replica its own
// store.DB of one schema, with its own leases and service, and the same
// organization and agent.
func newReplicas(t *testing.T, n int) []*world {
	t.Helper()
	dsn := storetest.Postgres(t)
	first := openWorld(t, dsn, store.Options{})
	ws := []*world{first}
	for range n - 1 {
		db, err := store.Open(context.Background(), dsn, store.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		w := *first
		w.db, w.leases = db, session.NewMemoryLeases(time.Minute, first.clock)
		w.svc = session.New(db, w.leases, w.clock, session.Options{Wait: time.Second})
		ws = append(ws, &w)
	}
	return ws
}

// TestReplicasShareHistory: turns of one session taken in turn by two replicas
// each see every turn stored before, whichever replica stored it, at once (no
// notification to wait for), and a delete on one is seen by the other. A cache of
// recent turns on PostgreSQL would serve the first replica its own turns only.
func TestReplicasShareHistory(t *testing.T) {
	ctx := context.Background()
	r := newReplicas(t, 2)
	history := func(w *world) string {
		t.Helper()
		tu, err := w.svc.Begin(ctx, w.key("s"))
		if err != nil {
			t.Fatal(err)
		}
		defer tu.End()
		got, err := tu.History(ctx, 1<<30, cost)
		if err != nil {
			t.Fatal(err)
		}
		peek, err := w.svc.Peek(ctx, w.key("s"), 1<<30, cost)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(users(peek)) != fmt.Sprint(users(got)) {
			t.Errorf("Peek %v, History %v", users(peek), users(got))
		}
		return fmt.Sprint(users(got))
	}
	steps := []struct {
		name string
		do   func()
		on   int
		want string
	}{
		{"1 stores a", func() { r[0].turn(t, "s", "a") }, 0, "[a]"},
		{"2 stores b", func() { r[1].turn(t, "s", "b") }, 0, "[a b]"},
		{"1 stores c", func() { r[0].turn(t, "s", "c") }, 1, "[a b c]"},
		{"2 stores d", func() { r[1].turn(t, "s", "d") }, 0, "[a b c d]"},
		{"2 deletes", func() {
			if _, err := r[1].svc.Delete(ctx, r[1].key("s")); err != nil {
				t.Fatal(err)
			}
		}, 0, "[]"},
		{"2 stores e", func() { r[1].turn(t, "s", "e") }, 0, "[e]"},
	}
	for _, st := range steps {
		st.do()
		if got := history(r[st.on]); got != st.want {
			t.Fatalf("%s: replica %d's window is %s, want %s", st.name, st.on+1, got, st.want)
		}
	}
}
