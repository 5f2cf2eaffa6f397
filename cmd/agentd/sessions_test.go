package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentd/agentd/client"
	"github.com/agentd/agentd/internal/clock/clocktest"
)

// TestSessionsAPI walks the sessions endpoints: list with pagination, read turns
// with each run's usage, delete, and what the caller may and may not see.
func TestSessionsAPI(t *testing.T) {
	// The server's clock moves a second between turns: each session's last
	// activity is distinct, whatever the machine's clock does.
	clk := clocktest.New(time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC))
	start := clk.Now()
	s := startServerWith(t, "", nil, &serveHooks{clock: clk})
	ctx := context.Background()
	op := s.client(s.Key)
	a, err := op.CreateAgent(ctx, supportBot())
	if err != nil {
		t.Fatal(err)
	}

	// Three sessions; chat-a is used again last, so it is the most recently active.
	type turn struct{ session, message string }
	script := []turn{
		{"chat-a", "hello there"}, {"chat-a", "what are your opening hours"},
		{"chat-b", "how do i reset my password"},
		{"chat-c", "hello there"}, {"chat-c", "thanks"},
		{"chat-a", "thanks"},
	}
	runs := map[string][]*client.RunResult{}
	messages := map[string][]string{}
	for _, tu := range script {
		r, err := op.Run(ctx, a.Name, tu.message, tu.session)
		if err != nil {
			t.Fatal(err)
		}
		runs[tu.session] = append(runs[tu.session], r)
		messages[tu.session] = append(messages[tu.session], tu.message)
		clk.Advance(time.Second) // distinct last activity
	}
	if _, err := op.Run(ctx, a.Name, "hello there", ""); err != nil { // stateless: no session
		t.Fatal(err)
	}

	t.Run("list, paginated", func(t *testing.T) {
		want := []string{"chat-a", "chat-c", "chat-b"}
		for _, limit := range []int{0, 1, 2, 3, 100} {
			var got []*client.Session
			cursor := ""
			for page := 0; ; page++ {
				if page > 5 {
					t.Fatal("pagination does not end")
				}
				list, next, err := op.Sessions(ctx, a.ID, cursor, limit)
				if err != nil {
					t.Fatal(err)
				}
				if limit > 0 && len(list) > limit {
					t.Fatalf("limit %d: page of %d", limit, len(list))
				}
				got = append(got, list...)
				if next == "" {
					break
				}
				cursor = next
			}
			var ids []string
			for _, si := range got {
				ids = append(ids, si.SessionID)
			}
			if !slices.Equal(ids, want) {
				t.Errorf("limit %d: sessions %v, want %v", limit, ids, want)
			}
		}
		list, _, err := op.Sessions(ctx, "support_bot", "", 0) // by name too
		if err != nil {
			t.Fatal(err)
		}
		for _, si := range list {
			var in, out int64
			for _, r := range runs[si.SessionID] {
				in, out = in+int64(r.Usage.InputTokens), out+int64(r.Usage.OutputTokens)
			}
			if si.Turns != len(runs[si.SessionID]) || si.InputTokens != in || si.OutputTokens != out || si.TotalTokens != in+out {
				t.Errorf("session %+v, want %d turns, %d in, %d out", si, len(runs[si.SessionID]), in, out)
			}
			c, err1 := time.Parse(time.RFC3339, si.CreatedAt)
			l, err2 := time.Parse(time.RFC3339, si.LastActive)
			if err1 != nil || err2 != nil || l.Before(c) || c.Before(start) || l.After(clk.Now()) || !strings.HasSuffix(si.CreatedAt, "Z") {
				t.Errorf("session %s times: created %q, last active %q", si.SessionID, si.CreatedAt, si.LastActive)
			}
		}
	})

	t.Run("read turns, paginated", func(t *testing.T) {
		for _, limit := range []int{1, 2, 3, 0} {
			var got []client.SessionTurn
			cursor := ""
			for page := 0; ; page++ {
				if page > 5 {
					t.Fatal("pagination does not end")
				}
				st, err := op.Session(ctx, a.Name, "chat-a", cursor, limit)
				if err != nil {
					t.Fatal(err)
				}
				if st.SessionID != "chat-a" || st.AgentID != a.ID {
					t.Errorf("session %q of agent %q", st.SessionID, st.AgentID)
				}
				got = append(got, st.Turns...)
				if st.NextCursor == nil {
					break
				}
				cursor = *st.NextCursor
			}
			if len(got) != 3 {
				t.Fatalf("limit %d: %d turns, want 3", limit, len(got))
			}
			for i, tu := range got {
				r := runs["chat-a"][i]
				if tu.RunID != r.RunID || tu.User != messages["chat-a"][i] || tu.Assistant != r.Response ||
					tu.Usage.InputTokens != r.Usage.InputTokens || tu.Usage.OutputTokens != r.Usage.OutputTokens ||
					tu.Usage.TotalTokens != r.Usage.TotalTokens || tu.CreatedAt == "" {
					t.Errorf("limit %d: turn %d = %+v, run was %+v", limit, i, tu, r)
				}
			}
		}
		if !strings.Contains(runs["chat-a"][2].Response, "2 earlier turns") {
			t.Errorf("third turn of chat-a did not see the first two: %q", runs["chat-a"][2].Response)
		}
	})

	t.Run("unknown session", func(t *testing.T) {
		if _, err := op.Session(ctx, a.ID, "nope", "", 0); statusOf(err) != 404 {
			t.Errorf("read: %v", err)
		}
		if _, err := op.DeleteSession(ctx, a.ID, "nope"); statusOf(err) != 404 {
			t.Errorf("delete: %v", err)
		}
		if _, _, err := op.Sessions(ctx, "no_such_agent", "", 0); statusOf(err) != 404 {
			t.Errorf("list on an unknown agent: %v", err)
		}
	})

	t.Run("another owner sees none of them", func(t *testing.T) {
		k, err := op.CreateKey(ctx, client.KeySpec{Name: "other owner", Scopes: []string{"run"}})
		if err != nil {
			t.Fatal(err)
		}
		other := s.client(k.Secret)
		list, next, err := other.Sessions(ctx, a.ID, "", 0)
		if err != nil || len(list) != 0 || next != "" {
			t.Errorf("list = %v, %q, %v", list, next, err)
		}
		if _, err := other.Session(ctx, a.ID, "chat-b", "", 0); statusOf(err) != 404 {
			t.Errorf("read: %v", err)
		}
		if _, err := other.DeleteSession(ctx, a.ID, "chat-b"); statusOf(err) != 404 {
			t.Errorf("delete: %v", err)
		}
		if st, err := op.Session(ctx, a.ID, "chat-b", "", 0); err != nil || len(st.Turns) != 1 {
			t.Errorf("chat-b after another owner's delete: %+v, %v", st, err)
		}
	})

	t.Run("another organization gets 404 for the agent", func(t *testing.T) {
		orgB, err := op.CreateOrg(ctx, "org_b")
		if err != nil {
			t.Fatal(err)
		}
		kb, err := op.CreateKey(ctx, client.KeySpec{Name: "b admin", OrgID: orgB.ID, Scopes: []string{"admin"}})
		if err != nil {
			t.Fatal(err)
		}
		b := s.client(kb.Secret)
		for name, call := range map[string]func() error{
			"list by id":   func() error { _, _, err := b.Sessions(ctx, a.ID, "", 0); return err },
			"list by name": func() error { _, _, err := b.Sessions(ctx, a.Name, "", 0); return err },
			"read":         func() error { _, err := b.Session(ctx, a.ID, "chat-b", "", 0); return err },
			"delete":       func() error { _, err := b.DeleteSession(ctx, a.ID, "chat-b"); return err },
		} {
			if err := call(); statusOf(err) != 404 {
				t.Errorf("%s: want 404, got %v", name, err)
			}
		}
	})

	t.Run("a key without the run scope is refused", func(t *testing.T) {
		k, err := op.CreateKey(ctx, client.KeySpec{Name: "reader", Scopes: []string{"agents:read"}})
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.client(k.Secret).Sessions(ctx, a.ID, "", 0); statusOf(err) != 403 {
			t.Errorf("list: %v", err)
		}
	})

	t.Run("bad input", func(t *testing.T) {
		base := "/api/v3/agents/" + a.ID + "/sessions"
		for _, tc := range []struct{ name, method, path string }{
			{"session id with a space", "GET", base + "/a%20b"},
			{"session id with a slash", "DELETE", base + "/a%2Fb"},
			{"session id too long", "GET", base + "/" + strings.Repeat("s", 129)},
			{"limit not a number", "GET", base + "?limit=ten"},
			{"limit zero", "GET", base + "?limit=0"},
			{"limit too large", "GET", base + "/chat-b?limit=101"},
			{"cursor not ours", "GET", base + "?cursor=bm9wZQ"},
			{"turn cursor not ours", "GET", base + "/chat-b?cursor=%21%21"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				req, _ := http.NewRequest(tc.method, s.URL+tc.path, nil)
				req.Header.Set("Authorization", "Bearer "+s.Key)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				body, _ := io.ReadAll(resp.Body)
				if resp.StatusCode != 422 || !strings.Contains(string(body), `"code":"invalid"`) || !strings.Contains(string(body), `"loc":`) {
					t.Errorf("%d %s, want 422 in FastAPI's shape", resp.StatusCode, body)
				}
			})
		}
		// The longest valid id is fine (and unknown).
		if _, err := op.Session(ctx, a.ID, strings.Repeat("s", 128), "", 0); statusOf(err) != 404 {
			t.Errorf("128-character id: %v", err)
		}
	})

	t.Run("delete", func(t *testing.T) {
		n, err := op.DeleteSession(ctx, a.ID, "chat-a")
		if err != nil || n != 3 {
			t.Fatalf("delete = %d, %v; want 3 turns", n, err)
		}
		if _, err := op.Session(ctx, a.ID, "chat-a", "", 0); statusOf(err) != 404 {
			t.Errorf("read after delete: %v", err)
		}
		if _, err := op.DeleteSession(ctx, a.Name, "chat-a"); statusOf(err) != 404 {
			t.Errorf("second delete: %v", err)
		}
		list, _, err := op.Sessions(ctx, a.ID, "", 0)
		if err != nil || len(list) != 2 || list[0].SessionID != "chat-c" || list[1].SessionID != "chat-b" {
			t.Errorf("list after delete: %v, %v", list, err)
		}
		// The session id starts over with no memory.
		r, err := op.Run(ctx, a.Name, "hello there", "chat-a")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(r.Response, "0 earlier turns") {
			t.Errorf("run after delete remembers: %q", r.Response)
		}
		// The ledger keeps every run: 7 before, 1 after.
		checkLedger(t, s, "default", 8, 0)
	})
}

// TestSessionsNotSaved: an agent with conversation_saving_enabled=false stores no
// turns, so X-Session-ID gives no memory and there is nothing to list.
func TestSessionsNotSaved(t *testing.T) {
	s := startServer(t, "", nil)
	ctx := context.Background()
	op := s.client(s.Key)
	spec := supportBot()
	spec.ConversationSavingEnabled = client.Ptr(false)
	a, err := op.CreateAgent(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	if a.ConversationSavingEnabled {
		t.Fatal("conversation saving is on")
	}
	for range 3 {
		r, err := op.Run(ctx, a.Name, "hello there", "private")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(r.Response, "0 earlier turns") {
			t.Errorf("an agent that saves nothing remembers: %q", r.Response)
		}
	}
	list, next, err := op.Sessions(ctx, a.ID, "", 0)
	if err != nil || len(list) != 0 || next != "" {
		t.Errorf("list = %v, %q, %v; want none", list, next, err)
	}
	if _, err := op.Session(ctx, a.ID, "private", "", 0); statusOf(err) != 404 {
		t.Errorf("read: %v", err)
	}
	if _, err := op.DeleteSession(ctx, a.ID, "private"); statusOf(err) != 404 {
		t.Errorf("delete: %v", err)
	}
}

// gatedUpstream is an OpenAI-compatible server whose answers wait, while blocking
// is on, until release is closed; started receives each waiting request.
type gatedUpstream struct {
	*httptest.Server
	block   atomic.Bool
	started chan struct{}
	release chan struct{}
	once    sync.Once
}

// open stops blocking and lets every waiting request answer.
func (g *gatedUpstream) open() {
	g.once.Do(func() {
		g.block.Store(false)
		close(g.release)
	})
}

func newGatedUpstream(t *testing.T) *gatedUpstream {
	g := &gatedUpstream{started: make(chan struct{}, 8), release: make(chan struct{})}
	g.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if g.block.Load() {
			g.started <- struct{}{}
			<-g.release
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"id":"chatcmpl-1","object":"chat.completion","created":1741569952,"model":"gated","choices":[{"index":0,"message":{"role":"assistant","content":"done"},"finish_reason":"stop"}],"usage":{"prompt_tokens":10,"completion_tokens":2,"total_tokens":12}}`)
	}))
	t.Cleanup(func() {
		g.open()
		g.Close()
	})
	return g
}

// TestDeleteSessionWaitsForTurn: a delete takes the session's lease, so a turn in
// flight is stored before the delete and is deleted with the rest.
func TestDeleteSessionWaitsForTurn(t *testing.T) {
	g := newGatedUpstream(t)
	// On the fake clock a delete queued for the session's lease arms a timer (its
	// wait); the sweep loop arms the other one.
	clk := newSweepClock()
	s := startServerWith(t, fmt.Sprintf(`
providers:
  - {name: gated, kind: openai, base_url: %s/v1, max_retries: 0}
models:
  - {id: gated, provider: gated, upstream_model: gated, context_window: 8192, max_output_tokens: 256}
`, g.URL), nil, &serveHooks{clock: clk})
	t.Cleanup(g.open) // before the server stops: it waits for runs in flight
	ctx := context.Background()
	op := s.client(s.Key)
	if _, err := op.CreateAgent(ctx, client.AgentSpec{Name: client.Ptr("gated"), Description: client.Ptr("d"), Model: client.Ptr("gated"), MaxToken: client.Ptr(100)}); err != nil {
		t.Fatal(err)
	}
	if _, err := op.Run(ctx, "gated", "first", "slow"); err != nil {
		t.Fatal(err)
	}

	g.block.Store(true)
	runDone := make(chan error, 1)
	go func() {
		_, err := op.Run(ctx, "gated", "second", "slow")
		runDone <- err
	}()
	await(t, g.started, "the second turn to reach the model") // it holds the lease

	type result struct {
		n   int
		err error
	}
	delDone := make(chan result, 1)
	go func() {
		n, err := op.DeleteSession(ctx, "gated", "slow")
		delDone <- result{n, err}
	}()
	waitTimers(t, clk, 2) // the delete waits for the lease
	select {
	case r := <-delDone:
		t.Fatalf("delete finished while a turn was in flight: %+v", r)
	default:
	}
	g.open()
	if err := await(t, runDone, "the turn in flight"); err != nil {
		t.Fatalf("turn in flight: %v", err)
	}
	r := await(t, delDone, "the delete")
	if r.err != nil || r.n != 2 {
		t.Errorf("delete = %d, %v; want both turns, the one in flight included", r.n, r.err)
	}
	if _, err := op.Session(ctx, "gated", "slow", "", 0); statusOf(err) != 404 {
		t.Errorf("session after delete: %v", err)
	}
}
