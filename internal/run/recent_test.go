package run

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/internal/clock"
	"github.com/agentd/agentd/internal/llm"
	"github.com/agentd/agentd/internal/llm/llmtest"
	"github.com/agentd/agentd/internal/session"
)

// TestRecentTurnsMatchTheDatabase: the history a turn gets from memory is the
// history it would read from the database, turn after turn, whether the window
// or the cache's own bound is what cuts it.
func TestRecentTurnsMatchTheDatabase(t *testing.T) {
	for _, bytes := range []int{session.DefaultRecentBytes, 16 * 300} { // roomy; a few turns per session
		t.Run(fmt.Sprint(bytes), func(t *testing.T) {
			prov := &llmtest.Fake{Reply: "a reply of six words here"}
			m := pricedModel("priced", prov)
			m.ContextWindow = 400 // about a dozen turns fit
			f := newFixtureModels(t, prov, 100_000_000, m)
			sessions := func() *session.Service {
				return session.New(f.db, session.NewMemoryLeases(0, clock.Real), clock.Real, session.Options{Wait: time.Second, RecentBytes: bytes})
			}
			f.runner.Sessions = sessions()
			uncached := *f.runner // reads every window from the database
			ctx := context.Background()
			for i := range 40 {
				req := &Request{Principal: f.p, AgentName: "bot", Message: fmt.Sprintf("message %d %s", i, strings.Repeat("w ", i%7)), SessionID: "s"}
				cached, err := f.runner.Estimate(ctx, req)
				if err != nil {
					t.Fatal(err)
				}
				uncached.Sessions = sessions()
				fromDB, err := uncached.Estimate(ctx, req)
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
