package session

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/internal/store"
)

// TestRecentTurnsBounds: the cache stays within its byte bound, drops whole
// least recently used sessions, and trims a long session's oldest turns.
func TestRecentTurnsBounds(t *testing.T) {
	c := newRecentTurns(16 * 1000)
	turn := agentd.Turn{User: strings.Repeat("u", 100), Assistant: strings.Repeat("a", 100)}
	for s := range 100 {
		key := fmt.Sprint("s", s)
		c.put(key, nil, 0)
		for range 20 {
			c.add(key, turn)
		}
		if c.bytes > c.maxBytes {
			t.Fatalf("cache holds %d bytes, bound %d", c.bytes, c.maxBytes)
		}
	}
	turns, total, ok := c.get("s99")
	if !ok || total != 20 || len(turns) >= 20 || len(turns) == 0 {
		t.Errorf("newest session: %d turns of %d cached (ok=%v); want a trimmed suffix", len(turns), total, ok)
	}
	if _, _, ok := c.get("s0"); ok {
		t.Error("the least recently used session was kept")
	}
	c.forget("s99")
	if _, _, ok := c.get("s99"); ok {
		t.Error("forget kept the session")
	}
}

// TestPeekLeavesNoCache: a reader without the lease reads the database and never
// puts what it read in the cache, so a window read before a turn committed cannot
// be served to the turn after it.
func TestPeekLeavesNoCache(t *testing.T) {
	db, err := store.Open(context.Background(), "sqlite:"+filepath.Join(t.TempDir(), "s.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	s := New(db, nil, nil, Options{})
	k := agentd.SessionKey{OrgID: "o", AgentID: "a", Owner: "u", SessionID: "s"}
	one := func(agentd.Turn) int { return 1 }
	s.recent.put(Key(k), []agentd.Turn{{User: "cached"}}, 1)
	w, err := s.Peek(context.Background(), k, 1<<30, one)
	if err != nil || len(w.Turns) != 1 || w.Turns[0].User != "cached" {
		t.Fatalf("Peek of a cached session = %+v, %v; want the cached turn", w, err)
	}
	s.recent.forget(Key(k))
	if w, err := s.Peek(context.Background(), k, 1<<30, one); err != nil || len(w.Turns) != 0 {
		t.Fatalf("Peek of a session the database does not have = %+v, %v", w, err)
	}
	if _, _, ok := s.recent.get(Key(k)); ok {
		t.Error("Peek filled the cache")
	}
}
