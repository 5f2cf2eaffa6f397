package store

import (
	"context"
	"encoding/base64"
	"fmt"
	"slices"
	"testing"

	"github.com/agentd/agentd"
)

// turnAt records a successful run of a in session sid of owner, created at the
// given unix micros, with the given usage.
func turnAt(t testing.TB, db *DB, a *agentd.Agent, owner, sid string, at int64, in, out int) *Run {
	t.Helper()
	r := okRun(a, owner, sid, 0)
	r.Created, r.InputTokens, r.OutputTokens = at, in, out
	r.UserMessage, r.Reply = fmt.Sprintf("q %s@%d", sid, at), fmt.Sprintf("a %s@%d", sid, at)
	mustTx(t, db, func(tx *Tx) error { return tx.RecordRun(context.Background(), r) })
	return r
}

func sessionIDs(list []SessionInfo) []string {
	ids := []string{}
	for _, s := range list {
		ids = append(ids, s.ID)
	}
	return ids
}

// allSessions pages through l with page size limit and returns every session seen.
func allSessions(t *testing.T, db *DB, l SessionList, limit int) []SessionInfo {
	t.Helper()
	var all []SessionInfo
	l.Limit, l.Cursor = limit, ""
	for pages := 0; ; pages++ {
		if pages > 1000 {
			t.Fatal("pagination does not end")
		}
		page, next, err := db.Sessions(context.Background(), l)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) > limit {
			t.Fatalf("page of %d sessions with limit %d", len(page), limit)
		}
		all = append(all, page...)
		if next == "" {
			return all
		}
		if len(page) == 0 {
			t.Fatal("empty page with a next cursor")
		}
		l.Cursor = next
	}
}

func TestSessions(t *testing.T) {
	ctx := context.Background()
	db := openDB(t, Options{})
	acme := newOrg(t, db, "acme", 0)
	other := newOrg(t, db, "other", 0)
	bot := newAgent(t, db, acme.ID, "bot")
	bot2 := newAgent(t, db, acme.ID, "bot2")
	otherBot := newAgent(t, db, other.ID, "bot")

	// alice on bot: s1 last active at 300 (3 turns), s4 also at 300 (a tie, broken by
	// id, descending), s3 at 400, s2 at 250.
	turnAt(t, db, bot, "alice", "s1", 100, 10, 1)
	turnAt(t, db, bot, "alice", "s3", 150, 20, 2)
	turnAt(t, db, bot, "alice", "s1", 200, 30, 3)
	turnAt(t, db, bot, "alice", "s2", 250, 40, 4)
	turnAt(t, db, bot, "alice", "s1", 300, 50, 5)
	turnAt(t, db, bot, "alice", "s4", 300, 60, 6)
	turnAt(t, db, bot, "alice", "s3", 400, 70, 7)
	// The same session id elsewhere is another conversation.
	turnAt(t, db, bot, "bob", "s1", 500, 1, 1)
	turnAt(t, db, bot2, "alice", "s1", 600, 1, 1)
	turnAt(t, db, otherBot, "alice", "s1", 700, 1, 1)
	// A stateless run stores no turn.
	mustTx(t, db, func(tx *Tx) error { return tx.RecordRun(ctx, okRun(bot, "alice", "", 0)) })

	t.Run("one owner's sessions, newest activity first", func(t *testing.T) {
		got, next, err := db.Sessions(ctx, SessionList{OrgID: acme.ID, AgentID: bot.ID, Owner: "alice"})
		if err != nil {
			t.Fatal(err)
		}
		want := []SessionInfo{
			{ID: "s3", Turns: 2, InputTokens: 90, OutputTokens: 9, Created: 150, LastActive: 400},
			{ID: "s4", Turns: 1, InputTokens: 60, OutputTokens: 6, Created: 300, LastActive: 300},
			{ID: "s1", Turns: 3, InputTokens: 90, OutputTokens: 9, Created: 100, LastActive: 300},
			{ID: "s2", Turns: 1, InputTokens: 40, OutputTokens: 4, Created: 250, LastActive: 250},
		}
		if !slices.Equal(got, want) || next != "" {
			t.Errorf("Sessions = %+v, next %q\nwant %+v", got, next, want)
		}
	})

	isolation := []struct {
		name string
		l    SessionList
		want []string
	}{
		{"another owner", SessionList{OrgID: acme.ID, AgentID: bot.ID, Owner: "bob"}, []string{"s1"}},
		{"an owner with none", SessionList{OrgID: acme.ID, AgentID: bot.ID, Owner: "carol"}, []string{}},
		{"another agent", SessionList{OrgID: acme.ID, AgentID: bot2.ID, Owner: "alice"}, []string{"s1"}},
		{"another org's agent", SessionList{OrgID: other.ID, AgentID: otherBot.ID, Owner: "alice"}, []string{"s1"}},
		{"an agent id under the wrong org", SessionList{OrgID: other.ID, AgentID: bot.ID, Owner: "alice"}, []string{}},
	}
	for _, tt := range isolation {
		t.Run("isolation: "+tt.name, func(t *testing.T) {
			got, next, err := db.Sessions(ctx, tt.l)
			if err != nil {
				t.Fatal(err)
			}
			if ids := sessionIDs(got); !slices.Equal(ids, tt.want) || next != "" {
				t.Errorf("Sessions = %v (next %q), want %v", ids, next, tt.want)
			}
			for _, s := range got {
				if s.Turns != 1 {
					t.Errorf("session %+v counts turns of other conversations", s)
				}
			}
		})
	}

	t.Run("bad cursors", func(t *testing.T) {
		enc := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
		for _, c := range []string{"!!", "not base64 at all", enc("300"), enc("x|s1"), enc("300|"), enc("|s1"), enc("3.5|s1")} {
			_, _, err := db.Sessions(ctx, SessionList{OrgID: acme.ID, AgentID: bot.ID, Owner: "alice", Cursor: c})
			wantCode(t, err, agentd.EInvalid)
		}
	})
}

// TestSessionsPagination: every page size visits every session exactly once, in
// the order of one big page, ties in last activity included.
func TestSessionsPagination(t *testing.T) {
	db := openDB(t, Options{})
	o := newOrg(t, db, "acme", 0)
	a := newAgent(t, db, o.ID, "bot")
	const n = 23
	for i := range n {
		sid := fmt.Sprintf("sess-%02d", i)
		// Groups of three share a last activity; some sessions have several turns.
		for j := range 1 + i%3 {
			turnAt(t, db, a, "alice", sid, int64(1000+(i/3)*10-j), 1, 1)
		}
	}
	turnAt(t, db, a, "bob", "sess-00", 5000, 1, 1) // another owner's: never listed
	l := SessionList{OrgID: o.ID, AgentID: a.ID, Owner: "alice"}
	full := allSessions(t, db, l, 1000)
	if len(full) != n {
		t.Fatalf("%d sessions in one page, want %d", len(full), n)
	}
	for i := 1; i < len(full); i++ {
		p, c := full[i-1], full[i]
		if p.LastActive < c.LastActive || (p.LastActive == c.LastActive && p.ID <= c.ID) {
			t.Errorf("out of order: %+v before %+v", p, c)
		}
	}
	for _, size := range []int{1, 2, 3, 4, 5, 7, 22, 23, 24} {
		t.Run(fmt.Sprintf("limit %d", size), func(t *testing.T) {
			got := allSessions(t, db, l, size)
			if !slices.Equal(sessionIDs(got), sessionIDs(full)) {
				t.Errorf("pages visit %v\nwant %v", sessionIDs(got), sessionIDs(full))
			}
		})
	}
	t.Run("default limit", func(t *testing.T) {
		page, next, err := db.Sessions(context.Background(), l)
		if err != nil || len(page) != n || next != "" {
			t.Errorf("limit 0: %d sessions, next %q, %v", len(page), next, err)
		}
	})
}

func TestSessionTurns(t *testing.T) {
	ctx := context.Background()
	db := openDB(t, Options{})
	o := newOrg(t, db, "acme", 0)
	a := newAgent(t, db, o.ID, "bot")
	var want []SessionTurn
	for i := range 7 {
		r := turnAt(t, db, a, "alice", "chat", int64(100+i), 10+i, 20+i)
		want = append(want, SessionTurn{RunID: r.ID, User: r.UserMessage, Assistant: r.Reply, InputTokens: 10 + i, OutputTokens: 20 + i, Created: int64(100 + i)})
		turnAt(t, db, a, "bob", "chat", int64(100+i), 1, 1) // interleaved, another owner's
	}
	k := SessionKey{OrgID: o.ID, AgentID: a.ID, Owner: "alice", SessionID: "chat"}

	for _, size := range []int{1, 2, 3, 6, 7, 8, 0} {
		t.Run(fmt.Sprintf("limit %d", size), func(t *testing.T) {
			var got []SessionTurn
			cursor := ""
			for pages := 0; ; pages++ {
				if pages > 10 {
					t.Fatal("pagination does not end")
				}
				page, next, err := db.SessionTurns(ctx, k, cursor, size)
				if err != nil {
					t.Fatal(err)
				}
				if size > 0 && len(page) > size {
					t.Fatalf("%d turns with limit %d", len(page), size)
				}
				got = append(got, page...)
				if next == "" {
					break
				}
				cursor = next
			}
			if !slices.Equal(got, want) {
				t.Errorf("turns = %+v\nwant %+v", got, want)
			}
		})
	}

	notFound := []struct {
		name string
		k    SessionKey
	}{
		{"unknown session", SessionKey{OrgID: o.ID, AgentID: a.ID, Owner: "alice", SessionID: "nope"}},
		{"another owner's", SessionKey{OrgID: o.ID, AgentID: a.ID, Owner: "carol", SessionID: "chat"}},
		{"another org", SessionKey{OrgID: "org-other", AgentID: a.ID, Owner: "alice", SessionID: "chat"}},
	}
	for _, tt := range notFound {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := db.SessionTurns(ctx, tt.k, "", 10)
			wantCode(t, err, agentd.ENotFound)
		})
	}
	t.Run("past the end of a session", func(t *testing.T) {
		page, next, err := db.SessionTurns(ctx, k, base64.RawURLEncoding.EncodeToString([]byte("999999")), 10)
		if err != nil || len(page) != 0 || next != "" {
			t.Errorf("= %v, %q, %v; want an empty last page", page, next, err)
		}
	})
	t.Run("bad cursors", func(t *testing.T) {
		for _, c := range []string{"!!", base64.RawURLEncoding.EncodeToString([]byte("x")), base64.RawURLEncoding.EncodeToString([]byte("-1"))} {
			_, _, err := db.SessionTurns(ctx, k, c, 10)
			wantCode(t, err, agentd.EInvalid)
		}
	})
}

func TestDeleteSession(t *testing.T) {
	ctx := context.Background()
	db := openDB(t, Options{})
	o := newOrg(t, db, "acme", 0)
	a := newAgent(t, db, o.ID, "bot")
	for i := range 3 {
		turnAt(t, db, a, "alice", "chat", int64(100+i), 1, 1)
	}
	turnAt(t, db, a, "alice", "kept", 200, 1, 1)
	turnAt(t, db, a, "bob", "chat", 300, 1, 1)
	k := SessionKey{OrgID: o.ID, AgentID: a.ID, Owner: "alice", SessionID: "chat"}

	n, err := db.DeleteSession(ctx, k)
	if err != nil || n != 3 {
		t.Fatalf("DeleteSession = %d, %v; want 3", n, err)
	}
	_, _, err = db.SessionTurns(ctx, k, "", 10)
	wantCode(t, err, agentd.ENotFound)
	list, _, err := db.Sessions(ctx, SessionList{OrgID: o.ID, AgentID: a.ID, Owner: "alice"})
	if err != nil || !slices.Equal(sessionIDs(list), []string{"kept"}) {
		t.Errorf("after delete alice lists %v, %v", sessionIDs(list), err)
	}
	if n := count(t, db, `SELECT count(*) FROM session_turns WHERE owner = 'bob'`); n != 1 {
		t.Errorf("bob's session of the same id lost turns: %d left", n)
	}
	if n := count(t, db, `SELECT count(*) FROM ledger`); n != 5 {
		t.Errorf("%d ledger rows, want 5: deleting history keeps the money record", n)
	}

	for _, tt := range []struct {
		name string
		k    SessionKey
	}{
		{"again", k},
		{"unknown", SessionKey{OrgID: o.ID, AgentID: a.ID, Owner: "alice", SessionID: "nope"}},
		{"another org", SessionKey{OrgID: "org-other", AgentID: a.ID, Owner: "alice", SessionID: "kept"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			n, err := db.DeleteSession(ctx, tt.k)
			wantCode(t, err, agentd.ENotFound)
			if n != 0 {
				t.Errorf("deleted %d turns", n)
			}
		})
	}
	if n := count(t, db, `SELECT count(*) FROM session_turns`); n != 2 {
		t.Errorf("%d turns left, want 2", n)
	}
}

func TestSweepIdleSessions(t *testing.T) {
	ctx := context.Background()
	const cutoff = 1000
	type sess struct {
		org   int // 0 or 1
		owner string
		id    string
		turns []int64 // created_at of each turn, in order
		idle  bool
	}
	sessions := []sess{
		{0, "alice", "old", []int64{10, 20, 30}, true},
		{0, "alice", "just-before", []int64{999}, true},
		{0, "alice", "at-cutoff", []int64{500, 1000}, false},
		{0, "alice", "revived", []int64{1, 2, 3, 2000}, false},
		{0, "bob", "old", []int64{40}, true},
		{1, "alice", "old", []int64{50, 60}, true},
		{1, "carol", "new", []int64{1500}, false},
	}
	setup := func(t *testing.T) (*DB, []*agentd.Agent) {
		db := openDB(t, Options{})
		var agents []*agentd.Agent
		for i := range 2 {
			o := newOrg(t, db, fmt.Sprintf("org%d", i), 0)
			agents = append(agents, newAgent(t, db, o.ID, "bot"))
		}
		for _, s := range sessions {
			for _, at := range s.turns {
				turnAt(t, db, agents[s.org], s.owner, s.id, at, 1, 1)
			}
		}
		return db, agents
	}
	left := func(t *testing.T, db *DB, agents []*agentd.Agent) (idleLeft, activeLeft int) {
		for _, s := range sessions {
			a := agents[s.org]
			n := count(t, db, `SELECT count(*) FROM session_turns WHERE org_id = ? AND agent_id = ? AND owner = ? AND session_id = ?`, a.OrgID, a.ID, s.owner, s.id)
			switch {
			case s.idle && n > 0:
				if n != len(s.turns) {
					t.Errorf("idle session %s/%s half deleted: %d of %d turns left", s.owner, s.id, n, len(s.turns))
				}
				idleLeft++
			case !s.idle && n != len(s.turns):
				t.Errorf("active session %s/%s has %d of %d turns", s.owner, s.id, n, len(s.turns))
			case !s.idle:
				activeLeft++
			}
		}
		return idleLeft, activeLeft
	}

	t.Run("deletes only idle sessions, limit at a time", func(t *testing.T) {
		db, agents := setup(t)
		for i, want := range []struct{ deleted, idleLeft int }{{2, 2}, {2, 0}, {0, 0}} {
			got, err := db.SweepIdleSessions(ctx, cutoff, 2)
			if err != nil {
				t.Fatal(err)
			}
			if got != want.deleted {
				t.Errorf("sweep #%d deleted %d sessions, want %d", i+1, got, want.deleted)
			}
			if idle, _ := left(t, db, agents); idle != want.idleLeft {
				t.Errorf("after sweep #%d, %d idle sessions left, want %d", i+1, idle, want.idleLeft)
			}
		}
		if _, active := left(t, db, agents); active != 3 {
			t.Errorf("%d active sessions left, want 3", active)
		}
	})
	t.Run("one sweep with room for all", func(t *testing.T) {
		db, agents := setup(t)
		if got, err := db.SweepIdleSessions(ctx, cutoff, 100); err != nil || got != 4 {
			t.Errorf("sweep = %d, %v; want 4", got, err)
		}
		if idle, active := left(t, db, agents); idle != 0 || active != 3 {
			t.Errorf("left %d idle and %d active sessions", idle, active)
		}
	})
	t.Run("limit 0 deletes nothing", func(t *testing.T) {
		db, agents := setup(t)
		if got, err := db.SweepIdleSessions(ctx, cutoff, 0); err != nil || got != 0 {
			t.Errorf("sweep = %d, %v", got, err)
		}
		if idle, _ := left(t, db, agents); idle != 4 {
			t.Errorf("%d idle sessions left, want 4", idle)
		}
	})
	t.Run("more sessions than one write deletes", func(t *testing.T) {
		db := openDB(t, Options{})
		o := newOrg(t, db, "acme", 0)
		a := newAgent(t, db, o.ID, "bot")
		const n = 2*sweepChunk + 5
		mustTx(t, db, func(tx *Tx) error {
			for i := range n {
				r := okRun(a, "alice", fmt.Sprintf("s%03d", i), 0)
				r.Created = int64(i)
				if err := tx.RecordRun(ctx, r); err != nil {
					return err
				}
			}
			return nil
		})
		turnAt(t, db, a, "alice", "active", cutoff, 1, 1)
		for i, want := range []int{n - 3, 3, 0} {
			if got, err := db.SweepIdleSessions(ctx, cutoff, n-3); err != nil || got != want {
				t.Errorf("sweep #%d = %d, %v; want %d", i+1, got, err, want)
			}
		}
		if left := count(t, db, `SELECT count(*) FROM session_turns`); left != 1 {
			t.Errorf("%d turns left, want the active session's 1", left)
		}
	})
	t.Run("a turn between finding and deleting keeps the session", func(t *testing.T) {
		db, agents := setup(t)
		idle, err := db.idleSessions(ctx, cutoff, 100)
		if err != nil || len(idle) != 4 {
			t.Fatalf("idleSessions = %v, %v", idle, err)
		}
		k := idle[0]
		a := agents[0]
		if k.OrgID != a.OrgID {
			a = agents[1]
		}
		turnAt(t, db, a, k.Owner, k.SessionID, 5000, 1, 1)
		if got, err := db.deleteIdleSessions(ctx, idle, cutoff); err != nil || got != 3 {
			t.Errorf("deleteIdleSessions = %d, %v; want 3", got, err)
		}
		if n := count(t, db, `SELECT count(*) FROM session_turns WHERE org_id = ? AND owner = ? AND session_id = ?`, k.OrgID, k.Owner, k.SessionID); n == 0 {
			t.Errorf("session %+v was deleted after its new turn", k)
		}
	})
}
