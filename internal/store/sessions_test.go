package store

import (
	"context"
	"encoding/base64"
	"fmt"
	"reflect"
	"slices"
	"testing"

	"github.com/agentd/agentd"
)

// turnAt records a successful run of a in session sid of owner, created at the
// given unix micros, with the given usage.
func turnAt(t testing.TB, db *DB, a *agentd.Agent, owner, sid string, at int64, in, out int) *Run {
	t.Helper()
	r := okRun(a, owner, sid, 0)
	r.CreatedAt, r.InputTokens, r.OutputTokens = fromMicros(at), in, out
	r.Turn.User, r.Turn.Assistant = fmt.Sprintf("q %s@%d", sid, at), fmt.Sprintf("a %s@%d", sid, at)
	if !recordRun(t, db, r) {
		t.Fatalf("turn of %s/%s at %d not stored", owner, sid, at)
	}
	return r
}

// sessionList selects one page of a caller's sessions on one agent.
type sessionList struct {
	OrgID, AgentID, Owner string
	Cursor                string
	Limit                 int
}

func sessions(db *DB, l sessionList) ([]agentd.SessionInfo, string, error) {
	return db.Sessions(context.Background(), l.OrgID, l.AgentID, l.Owner, l.Cursor, l.Limit)
}

// deleteSession deletes a session in a transaction of its own.
func deleteSession(t testing.TB, db *DB, k agentd.SessionKey) int {
	t.Helper()
	var n int
	mustTx(t, db, func(tx *Tx) (err error) {
		n, err = tx.DeleteSession(context.Background(), k)
		return err
	})
	return n
}

func sessionIDs(list []agentd.SessionInfo) []string {
	ids := []string{}
	for _, s := range list {
		ids = append(ids, s.ID)
	}
	return ids
}

// allSessions pages through l with page size limit and returns every session seen.
func allSessions(t *testing.T, db *DB, l sessionList, limit int) []agentd.SessionInfo {
	t.Helper()
	var all []agentd.SessionInfo
	l.Limit, l.Cursor = limit, ""
	for pages := 0; ; pages++ {
		if pages > 1000 {
			t.Fatal("pagination does not end")
		}
		page, next, err := sessions(db, l)
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
	if recordRun(t, db, okRun(bot, "alice", "", 0)) {
		t.Fatal("a stateless run stored a turn")
	}

	t.Run("one owner's sessions, newest activity first", func(t *testing.T) {
		got, next, err := db.Sessions(ctx, acme.ID, bot.ID, "alice", "", 0)
		if err != nil {
			t.Fatal(err)
		}
		at := fromMicros
		want := []agentd.SessionInfo{
			{ID: "s3", Turns: 2, InputTokens: 90, OutputTokens: 9, CreatedAt: at(150), LastActive: at(400)},
			{ID: "s4", Turns: 1, InputTokens: 60, OutputTokens: 6, CreatedAt: at(300), LastActive: at(300)},
			{ID: "s1", Turns: 3, InputTokens: 90, OutputTokens: 9, CreatedAt: at(100), LastActive: at(300)},
			{ID: "s2", Turns: 1, InputTokens: 40, OutputTokens: 4, CreatedAt: at(250), LastActive: at(250)},
		}
		if !slices.Equal(got, want) || next != "" {
			t.Errorf("Sessions = %+v, next %q\nwant %+v", got, next, want)
		}
	})

	isolation := []struct {
		name string
		l    sessionList
		want []string
	}{
		{"another owner", sessionList{OrgID: acme.ID, AgentID: bot.ID, Owner: "bob"}, []string{"s1"}},
		{"an owner with none", sessionList{OrgID: acme.ID, AgentID: bot.ID, Owner: "carol"}, []string{}},
		{"another agent", sessionList{OrgID: acme.ID, AgentID: bot2.ID, Owner: "alice"}, []string{"s1"}},
		{"another org's agent", sessionList{OrgID: other.ID, AgentID: otherBot.ID, Owner: "alice"}, []string{"s1"}},
		{"an agent id under the wrong org", sessionList{OrgID: other.ID, AgentID: bot.ID, Owner: "alice"}, []string{}},
	}
	for _, tt := range isolation {
		t.Run("isolation: "+tt.name, func(t *testing.T) {
			got, next, err := sessions(db, tt.l)
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
			_, _, err := db.Sessions(ctx, acme.ID, bot.ID, "alice", c, 10)
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
	l := sessionList{OrgID: o.ID, AgentID: a.ID, Owner: "alice"}
	full := allSessions(t, db, l, 1000)
	if len(full) != n {
		t.Fatalf("%d sessions in one page, want %d", len(full), n)
	}
	for i := 1; i < len(full); i++ {
		p, c := full[i-1], full[i]
		if p.LastActive.Before(c.LastActive) || (p.LastActive.Equal(c.LastActive) && p.ID <= c.ID) {
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
		page, next, err := sessions(db, l)
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
	var want []agentd.SessionTurn
	for i := range 7 {
		r := turnAt(t, db, a, "alice", "chat", int64(100+i), 10+i, 20+i)
		want = append(want, agentd.SessionTurn{RunID: r.RunID, User: r.Turn.User, Assistant: r.Turn.Assistant,
			InputTokens: 10 + i, OutputTokens: 20 + i, CreatedAt: fromMicros(int64(100 + i))})
		turnAt(t, db, a, "bob", "chat", int64(100+i), 1, 1) // interleaved, another owner's
	}
	k := agentd.SessionKey{OrgID: o.ID, AgentID: a.ID, Owner: "alice", SessionID: "chat"}

	for _, size := range []int{1, 2, 3, 6, 7, 8, 0} {
		t.Run(fmt.Sprintf("limit %d", size), func(t *testing.T) {
			var got []agentd.SessionTurn
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
			if !reflect.DeepEqual(got, want) {
				t.Errorf("turns = %+v\nwant %+v", got, want)
			}
		})
	}

	notFound := []struct {
		name string
		k    agentd.SessionKey
	}{
		{"unknown session", agentd.SessionKey{OrgID: o.ID, AgentID: a.ID, Owner: "alice", SessionID: "nope"}},
		{"another owner's", agentd.SessionKey{OrgID: o.ID, AgentID: a.ID, Owner: "carol", SessionID: "chat"}},
		{"another org", agentd.SessionKey{OrgID: "org-other", AgentID: a.ID, Owner: "alice", SessionID: "chat"}},
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
	k := agentd.SessionKey{OrgID: o.ID, AgentID: a.ID, Owner: "alice", SessionID: "chat"}

	if n := deleteSession(t, db, k); n != 3 {
		t.Fatalf("DeleteSession = %d; want 3", n)
	}
	_, _, err := db.SessionTurns(ctx, k, "", 10)
	wantCode(t, err, agentd.ENotFound)
	list, _, err := db.Sessions(ctx, o.ID, a.ID, "alice", "", 0)
	if err != nil || !slices.Equal(sessionIDs(list), []string{"kept"}) {
		t.Errorf("after delete alice lists %v, %v", sessionIDs(list), err)
	}
	if n := count(t, db, `SELECT count(*) FROM session_turns WHERE owner = 'bob'`); n != 1 {
		t.Errorf("bob's session of the same id lost turns: %d left", n)
	}
	if n := count(t, db, `SELECT count(*) FROM ledger`); n != 5 {
		t.Errorf("%d ledger rows, want 5: deleting history keeps the money record", n)
	}

	// Deleting what is not there deletes nothing, and is no error here: package
	// session answers 404 for 0 turns.
	for _, tt := range []struct {
		name string
		k    agentd.SessionKey
	}{
		{"again", k},
		{"unknown", agentd.SessionKey{OrgID: o.ID, AgentID: a.ID, Owner: "alice", SessionID: "nope"}},
		{"another org", agentd.SessionKey{OrgID: "org-other", AgentID: a.ID, Owner: "alice", SessionID: "kept"}},
		{"another agent", agentd.SessionKey{OrgID: o.ID, AgentID: "agent-other", Owner: "alice", SessionID: "kept"}},
		{"another owner", agentd.SessionKey{OrgID: o.ID, AgentID: a.ID, Owner: "carol", SessionID: "kept"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if n := deleteSession(t, db, tt.k); n != 0 {
				t.Errorf("deleted %d turns", n)
			}
		})
	}
	if n := count(t, db, `SELECT count(*) FROM session_turns`); n != 2 {
		t.Errorf("%d turns left, want 2", n)
	}
}

// idleSession is a session of setupIdle's: in one of two organizations, idle at
// idleCutoff or not.
type idleSession struct {
	org   int // 0 or 1
	owner string
	id    string
	turns []int64 // created_at of each turn, in order
	idle  bool
}

const idleCutoff = 1000

var idleSessions = []idleSession{
	{0, "alice", "old", []int64{10, 20, 30}, true},
	{0, "alice", "just-before", []int64{999}, true},
	{0, "alice", "at-cutoff", []int64{500, 1000}, false},
	{0, "alice", "revived", []int64{1, 2, 3, 2000}, false},
	{0, "bob", "old", []int64{40}, true},
	{1, "alice", "old", []int64{50, 60}, true},
	{1, "carol", "new", []int64{1500}, false},
}

func setupIdle(t *testing.T) (*DB, []*agentd.Agent) {
	db := openDB(t, Options{})
	var agents []*agentd.Agent
	for i := range 2 {
		o := newOrg(t, db, fmt.Sprintf("org%d", i), 0)
		agents = append(agents, newAgent(t, db, o.ID, "bot"))
	}
	for _, s := range idleSessions {
		for _, at := range s.turns {
			turnAt(t, db, agents[s.org], s.owner, s.id, at, 1, 1)
		}
	}
	return db, agents
}

func (s idleSession) key(agents []*agentd.Agent) agentd.SessionKey {
	a := agents[s.org]
	return agentd.SessionKey{OrgID: a.OrgID, AgentID: a.ID, Owner: s.owner, SessionID: s.id}
}

// idleLeft counts the idle sessions still there, checking that no session was cut
// in half and that every active one is whole.
func idleLeft(t *testing.T, db *DB, agents []*agentd.Agent) (idle, active int) {
	t.Helper()
	for _, s := range idleSessions {
		n, err := db.CountTurns(context.Background(), s.key(agents))
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case s.idle && n > 0:
			if n != len(s.turns) {
				t.Errorf("idle session %s/%s half deleted: %d of %d turns left", s.owner, s.id, n, len(s.turns))
			}
			idle++
		case !s.idle && n != len(s.turns):
			t.Errorf("active session %s/%s has %d of %d turns", s.owner, s.id, n, len(s.turns))
		case !s.idle:
			active++
		}
	}
	return idle, active
}

// TestIdleSessions: the sessions whose newest turn is older than the cutoff, those
// with the oldest turns first, at most limit of them.
func TestIdleSessions(t *testing.T) {
	ctx := context.Background()
	db, agents := setupIdle(t)
	keys := func(idx ...int) []agentd.SessionKey {
		var ks []agentd.SessionKey
		for _, i := range idx {
			ks = append(ks, idleSessions[i].key(agents))
		}
		return ks
	}
	want := keys(0, 4, 5, 1) // the idle sessions, by their oldest turn
	tests := []struct {
		name   string
		before int64
		limit  int
		want   []agentd.SessionKey
	}{
		{"all", idleCutoff, 100, want},
		{"exactly all", idleCutoff, 4, want},
		{"the oldest first", idleCutoff, 2, want[:2]},
		{"one", idleCutoff, 1, want[:1]},
		{"limit 0", idleCutoff, 0, nil},
		{"negative limit", idleCutoff, -1, nil},
		{"a cutoff before every turn", 1, 100, nil},
		{"an earlier cutoff", 45, 100, want[:2]},                           // org1's old session had a turn at 60
		{"a cutoff past every turn", 3000, 100, keys(3, 0, 4, 5, 2, 1, 6)}, // every session, by its oldest turn
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := db.IdleSessions(ctx, tt.before, tt.limit)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("IdleSessions(%d, %d) = %+v\nwant %+v", tt.before, tt.limit, got, tt.want)
			}
		})
	}
	// Finding deletes nothing.
	if idle, active := idleLeft(t, db, agents); idle != 4 || active != 3 {
		t.Errorf("after finding: %d idle and %d active sessions, want 4 and 3", idle, active)
	}
}

// TestDeleteIdleSession: a session found idle is deleted whole only if it is
// still idle when the write runs; sweeping in small batches of finds and deletes
// removes every idle session and nothing else.
func TestDeleteIdleSession(t *testing.T) {
	ctx := context.Background()
	del := func(t *testing.T, db *DB, k agentd.SessionKey, before int64) bool {
		t.Helper()
		var deleted bool
		mustTx(t, db, func(tx *Tx) (err error) {
			deleted, err = tx.DeleteIdleSession(ctx, k, before)
			return err
		})
		return deleted
	}

	t.Run("each session", func(t *testing.T) {
		db, agents := setupIdle(t)
		for _, s := range idleSessions {
			if got := del(t, db, s.key(agents), idleCutoff); got != s.idle {
				t.Errorf("DeleteIdleSession(%s/%s) = %v, want %v", s.owner, s.id, got, s.idle)
			}
		}
		if idle, active := idleLeft(t, db, agents); idle != 0 || active != 3 {
			t.Errorf("left %d idle and %d active sessions, want 0 and 3", idle, active)
		}
		// Deleting again, or a session that never was, deletes nothing.
		if del(t, db, idleSessions[0].key(agents), idleCutoff) {
			t.Error("a deleted session was deleted again")
		}
		if del(t, db, agentd.SessionKey{OrgID: agents[0].OrgID, AgentID: agents[0].ID, Owner: "alice", SessionID: "nope"}, idleCutoff) {
			t.Error("an unknown session was deleted")
		}
	})

	t.Run("sweep in batches", func(t *testing.T) {
		db, agents := setupIdle(t)
		for i, want := range []struct{ deleted, idleLeft int }{{2, 2}, {2, 0}, {0, 0}} {
			idle, err := db.IdleSessions(ctx, idleCutoff, 2)
			if err != nil {
				t.Fatal(err)
			}
			deleted := 0
			mustTx(t, db, func(tx *Tx) error {
				deleted = 0
				for _, k := range idle {
					ok, err := tx.DeleteIdleSession(ctx, k, idleCutoff)
					if err != nil {
						return err
					}
					if ok {
						deleted++
					}
				}
				return nil
			})
			if deleted != want.deleted {
				t.Errorf("sweep #%d deleted %d sessions, want %d", i+1, deleted, want.deleted)
			}
			if left, _ := idleLeft(t, db, agents); left != want.idleLeft {
				t.Errorf("after sweep #%d, %d idle sessions left, want %d", i+1, left, want.idleLeft)
			}
		}
		if _, active := idleLeft(t, db, agents); active != 3 {
			t.Errorf("%d active sessions left, want 3", active)
		}
	})

	t.Run("a turn between finding and deleting keeps the session", func(t *testing.T) {
		db, agents := setupIdle(t)
		idle, err := db.IdleSessions(ctx, idleCutoff, 100)
		if err != nil || len(idle) != 4 {
			t.Fatalf("IdleSessions = %v, %v", idle, err)
		}
		k := idle[0]
		a := agents[0]
		if k.OrgID != a.OrgID {
			a = agents[1]
		}
		turnAt(t, db, a, k.Owner, k.SessionID, 5000, 1, 1)
		deleted := 0
		for _, k := range idle {
			if del(t, db, k, idleCutoff) {
				deleted++
			}
		}
		if deleted != 3 {
			t.Errorf("deleted %d sessions, want 3", deleted)
		}
		if n, err := db.CountTurns(ctx, k); err != nil || n == 0 {
			t.Errorf("session %+v was deleted after its new turn (%d turns, %v)", k, n, err)
		}
	})

	t.Run("the cutoff is exclusive", func(t *testing.T) {
		db, agents := setupIdle(t)
		k := idleSessions[1].key(agents) // newest turn at 999
		if del(t, db, k, 999) {
			t.Error("a session whose newest turn is at the cutoff was deleted")
		}
		if !del(t, db, k, 1000) {
			t.Error("a session whose newest turn is before the cutoff was kept")
		}
	})
}

// TestTurnTools: a turn's tool results, images and tool calls are stored with
// it and read back by History and SessionTurns, whether written alone or with
// a batch's other records (TxRecords: on PostgreSQL, agentd_write_batch); a
// plain turn stays plain.
func TestTurnTools(t *testing.T) {
	ctx := context.Background()
	db := openDB(t, Options{})
	o := newOrg(t, db, "acme", 0)
	a := newAgent(t, db, o.ID, "bot")
	tools := []agentd.TurnTools{
		{Calls: []agentd.ToolCall{{ID: "c1", Name: "get_weather", Arguments: `{"city": "Paris"}`}, {ID: "c2", Name: "now", Arguments: ""}}},
		{Results: []agentd.ToolResult{{CallID: "c1", Content: "18°C"}, {CallID: "c2", Content: "noon, \"UTC\""}}},
		{},
		{Images: []agentd.Image{{URL: "https://example.com/a.png", Detail: "low"}, {URL: "data:image/png;base64,iVBO"}}},
	}
	var want []agentd.Turn
	for i, tt := range tools {
		r := okRun(a, "alice", "chat", 0)
		r.CreatedAt = fromMicros(int64(100 + i))
		r.Turn.User, r.Turn.TurnTools = fmt.Sprint("u", i), tt
		if i%2 == 1 {
			r.Turn.User = "" // a turn of results only
		}
		want = append(want, *r.Turn)
		if i < 2 {
			recordRun(t, db, r)
			continue
		}
		if err := db.Expect().TxRecords(ctx, func(tx *Tx) error { _, err := tx.RecordRun(ctx, r); return err }); err != nil {
			t.Fatal(err)
		}
	}
	k := agentd.SessionKey{OrgID: o.ID, AgentID: a.ID, Owner: "alice", SessionID: "chat"}
	var got []agentd.Turn
	if err := db.History(ctx, k, func(t agentd.Turn) bool { got = append([]agentd.Turn{t}, got...); return true }); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("History =\n%+v\nwant\n%+v", got, want)
	}
	page, _, err := db.SessionTurns(ctx, k, "", 10)
	if err != nil {
		t.Fatal(err)
	}
	for i, st := range page {
		if !reflect.DeepEqual(st.TurnTools, want[i].TurnTools) {
			t.Errorf("SessionTurns[%d] tools = %+v, want %+v", i, st.TurnTools, want[i].TurnTools)
		}
	}
	if n := count(t, db, `SELECT count(*) FROM session_turns WHERE tools IS NULL`); n != 1 {
		t.Errorf("%d turns without tools stored as NULL, want 1", n)
	}
}
