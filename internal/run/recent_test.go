package run

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/agentd/agentd/internal/llm"
	"github.com/agentd/agentd/internal/llm/llmtest"
	"github.com/agentd/agentd/internal/prompt"
)

// TestRecentTurnsMatchTheDatabase: the history a turn gets from memory is the
// history it would read from the database, turn after turn, whether the window
// or the cache's own bound is what cuts it.
func TestRecentTurnsMatchTheDatabase(t *testing.T) {
	for _, bytes := range []int{DefaultRecentBytes, 16 * 300} { // roomy; a few turns per session
		t.Run(fmt.Sprint(bytes), func(t *testing.T) {
			prov := &llmtest.Fake{Reply: "a reply of six words here"}
			m := pricedModel("priced", prov)
			m.ContextWindow = 400 // about a dozen turns fit
			f := newFixtureModels(t, prov, 100_000_000, m)
			f.runner.RecentBytes = bytes
			ctx := context.Background()
			for i := range 40 {
				req := &Request{Principal: f.p, AgentName: "bot", Message: fmt.Sprintf("message %d %s", i, strings.Repeat("w ", i%7)), SessionID: "s"}
				cached, err := f.runner.Estimate(ctx, req)
				if err != nil {
					t.Fatal(err)
				}
				f.runner.ForgetSessions()
				fromDB, err := f.runner.Estimate(ctx, req)
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(cached, fromDB) {
					t.Fatalf("turn %d: cached %+v, database %+v", i, cached, fromDB)
				}
				res, err := f.runner.Run(ctx, req)
				if err != nil {
					t.Fatal(err)
				}
				if res.HistoryTurns+res.TrimmedTurns != i {
					t.Errorf("turn %d: history %d + trimmed %d", i, res.HistoryTurns, res.TrimmedTurns)
				}
				if i == 39 && res.TrimmedTurns == 0 {
					t.Error("the window never trimmed: the test does not exercise trimming")
				}
			}
			// The prompt of the last turn carried the newest turns in order.
			msgs := prov.Last().Messages
			var users []string
			for _, m := range msgs {
				if m.Role == llm.RoleUser {
					users = append(users, strings.Fields(m.Content)[1])
				}
			}
			for i := 1; i < len(users); i++ {
				var a, b int
				fmt.Sscan(users[i-1], &a)
				fmt.Sscan(users[i], &b)
				if b != a+1 {
					t.Fatalf("history out of order or with a gap: %v", users)
				}
			}
		})
	}
}

// TestRecentTurnsBounds: the cache stays within its byte bound, drops whole
// least recently used sessions, and trims a long session's oldest turns.
func TestRecentTurnsBounds(t *testing.T) {
	c := newRecentTurns(16 * 1000)
	turn := prompt.Turn{User: strings.Repeat("u", 100), Assistant: strings.Repeat("a", 100)}
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
