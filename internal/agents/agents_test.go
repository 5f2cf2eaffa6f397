package agents_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/internal/agents"
	"github.com/agentd/agentd/internal/catalog"
	"github.com/agentd/agentd/internal/clock/clocktest"
	"github.com/agentd/agentd/internal/store"
	"github.com/agentd/agentd/internal/store/storetest"
)

func words(s string) int { return len(strings.Fields(s)) }

var cat = catalog.New(&catalog.Model{ID: "m", ProviderName: "fake", ContextWindow: 4096, MaxOutputTokens: 4096, Count: words, Tokenizer: "words"})

// world is n replicas of one database, each with its agents service, and an
// organization. On SQLite, whose file one process owns, the replicas share the
// one store.DB.
type world struct {
	dbs   []*store.DB
	svcs  []*agents.Service
	clock *clocktest.Fake
	p     *agentd.Principal
}

func newWorld(t *testing.T, dialect, app string, n int, o agents.Options) *world {
	t.Helper()
	ctx := context.Background()
	dsn := storetest.DSN(t, dialect)
	w := &world{clock: clocktest.New(time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC))}
	for i := range n {
		if i == 0 || dialect == "postgres" {
			db, err := store.Open(ctx, dsn, store.Options{ApplicationName: app + "-" + string(rune('0'+i))})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { db.Close() })
			w.dbs = append(w.dbs, db)
		} else {
			w.dbs = append(w.dbs, w.dbs[0])
		}
		w.svcs = append(w.svcs, agents.New(w.dbs[i], cat, w.clock, o))
	}
	org := &agentd.Org{ID: agentd.NewID("org"), Name: "acme", CreatedAt: w.clock.Now()}
	if err := w.dbs[0].Tx(ctx, func(tx *store.Tx) error { return tx.CreateOrg(ctx, org) }); err != nil {
		t.Fatal(err)
	}
	w.p = &agentd.Principal{OrgID: org.ID, KeyID: "key-1", Owner: "alice", Scopes: []agentd.Scope{agentd.ScopeAdmin}}
	return w
}

func ptr[T any](v T) *T { return &v }

// create stores an agent named name through replica i.
func (w *world) create(t *testing.T, i int, name, instructions string) *agentd.Agent {
	t.Helper()
	a, err := w.svcs[i].Create(context.Background(), w.p, agents.Spec{
		Name: ptr(name), Description: ptr(""), Model: ptr("m"), Instructions: ptr(instructions)})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// resolve returns the instructions replica i runs name with, or "" when it finds
// no active agent of that name.
func (w *world) resolve(t *testing.T, i int, name string) string {
	t.Helper()
	c, err := w.svcs[i].Resolve(context.Background(), w.p.OrgID, name)
	if agentd.ErrorCode(err) == agentd.ENotFound {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return c.Agent.Version.Instructions
}

// behindTheirBacks changes an agent in the database as a change whose
// notification was lost would: nothing tells the services.
func (w *world) behindTheirBacks(t *testing.T, name string, change func(a *agentd.Agent) (newVersion bool)) {
	t.Helper()
	ctx := context.Background()
	a, err := w.dbs[0].AgentByName(ctx, w.p.OrgID, name)
	if err != nil {
		t.Fatal(err)
	}
	newVersion := change(a)
	if err := w.dbs[0].Tx(ctx, func(tx *store.Tx) error { return tx.UpdateAgent(ctx, a, newVersion) }); err != nil {
		t.Fatal(err)
	}
}

// TestChangesReachEveryReplica: every change made through replica 2 (edit,
// deactivate, activate, rename, delete, create) holds on replica 2 at once and on
// replica 1, which had the agent cached, once the notification has arrived. The
// clock never moves, so no TTL plays a part.
func TestChangesReachEveryReplica(t *testing.T) {
	for _, dialect := range storetest.Dialects {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			w := newWorld(t, dialect, "agents-changes", 2, agents.Options{})
			w.create(t, 0, "bot", "v1")
			w.create(t, 0, "helper", "h1")
			for i := range 2 {
				if got := w.resolve(t, i, "bot"); got != "v1" {
					t.Fatalf("replica %d resolves %q, want v1", i+1, got)
				}
				w.resolve(t, i, "helper")
			}
			steps := []struct {
				name   string
				change func() error
				want   map[string]string // name → instructions; "" not found
			}{
				{"edit", func() error {
					_, err := w.svcs[1].Update(ctx, w.p, "bot", agents.Spec{Instructions: ptr("v2")})
					return err
				}, map[string]string{"bot": "v2", "helper": "h1"}},
				{"deactivate", func() error {
					_, err := w.svcs[1].Update(ctx, w.p, "bot", agents.Spec{Status: ptr("INACTIVE")})
					return err
				}, map[string]string{"bot": ""}},
				{"activate", func() error {
					_, err := w.svcs[1].Update(ctx, w.p, "bot", agents.Spec{Status: ptr("ACTIVE")})
					return err
				}, map[string]string{"bot": "v2"}},
				{"rename", func() error {
					_, err := w.svcs[1].Update(ctx, w.p, "bot", agents.Spec{Name: ptr("robot")})
					return err
				}, map[string]string{"bot": "", "robot": "v2"}},
				{"delete", func() error {
					_, err := w.svcs[1].Delete(ctx, w.p, "robot")
					return err
				}, map[string]string{"robot": "", "helper": "h1"}},
				{"create", func() error {
					_, err := w.svcs[1].Create(ctx, w.p, agents.Spec{Name: ptr("bot"), Description: ptr(""), Model: ptr("m"), Instructions: ptr("v3")})
					return err
				}, map[string]string{"bot": "v3"}},
			}
			for _, st := range steps {
				if err := st.change(); err != nil {
					t.Fatalf("%s: %v", st.name, err)
				}
				for name, want := range st.want {
					if got := w.resolve(t, 1, name); got != want {
						t.Errorf("%s: replica 2 resolves %s to %q, want %q", st.name, name, got, want)
					}
				}
				storetest.Settle(t, w.dbs[0])
				for name, want := range st.want {
					if got := w.resolve(t, 0, name); got != want {
						t.Errorf("%s: replica 1 resolves %s to %q after the notification, want %q", st.name, name, got, want)
					}
				}
			}
		})
	}
}

// TestMissedNotificationsDropTheCache: a change whose notification never came is
// noticed when the listener reconnects and tells its subscribers they may have
// missed some.
func TestMissedNotificationsDropTheCache(t *testing.T) {
	app := agentd.NewID("agents-missed")
	w := newWorld(t, "postgres", app, 2, agents.Options{})
	w.create(t, 0, "bot", "v1")
	storetest.Settle(t, w.dbs[1]) // the creation's own notification, which would empty the cache
	if got := w.resolve(t, 1, "bot"); got != "v1" {
		t.Fatalf("resolves %q, want v1", got)
	}
	w.behindTheirBacks(t, "bot", func(a *agentd.Agent) bool { a.Version.Instructions = "v2"; return true })
	if got := w.resolve(t, 1, "bot"); got != "v1" {
		t.Fatalf("resolves %q although nothing said the agent changed: is it cached?", got)
	}
	missed := make(chan struct{})
	var once sync.Once
	cancel := w.dbs[1].Subscribe("agent", func(p string) {
		if p == "" {
			once.Do(func() { close(missed) })
		}
	})
	defer cancel()
	if n := storetest.CutListeners(t, app+"-1"); n != 1 {
		t.Fatalf("cut %d listeners, want 1", n)
	}
	select {
	case <-missed:
	case <-time.After(30 * time.Second):
		t.Fatal("the listener did not reconnect within 30s")
	}
	storetest.Settle(t, w.dbs[1])
	if got := w.resolve(t, 1, "bot"); got != "v2" {
		t.Errorf("resolves %q after the listener reconnected, want v2", got)
	}
}

// TestCacheTTL: a compiled agent is read again once its TTL has passed, which
// catches a change no notification reported, and keeps its counted prompt when
// the version is the same; without a TTL (SQLite's default) it is served until
// evicted.
func TestCacheTTL(t *testing.T) {
	tests := []struct {
		name    string
		dialect string
		ttl     time.Duration // given
		want    time.Duration // in effect; 0: none
	}{
		{"sqlite default: none", "sqlite", 0, 0},
		{"sqlite with a TTL", "sqlite", time.Minute, time.Minute},
		{"postgres default", "postgres", 0, agents.DefaultCacheTTL},
		{"postgres with a TTL", "postgres", 2 * time.Second, 2 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			w := newWorld(t, tt.dialect, "agents-ttl", 1, agents.Options{CacheTTL: tt.ttl})
			w.create(t, 0, "bot", "v1")
			storetest.Settle(t, w.dbs[0]) // the creation's own notification, which would empty the cache
			before, err := w.svcs[0].Resolve(ctx, w.p.OrgID, "bot")
			if err != nil {
				t.Fatal(err)
			}
			if tt.want == 0 {
				w.behindTheirBacks(t, "bot", func(a *agentd.Agent) bool { a.Version.Instructions = "v2"; return true })
				w.clock.Advance(365 * 24 * time.Hour)
				if got := w.resolve(t, 0, "bot"); got != "v1" {
					t.Errorf("without a TTL the cached agent expired: resolves %q", got)
				}
				return
			}
			// Expired, unchanged: read again, the counted prompt kept.
			w.clock.Advance(tt.want)
			again, err := w.svcs[0].Resolve(ctx, w.p.OrgID, "bot")
			if err != nil {
				t.Fatal(err)
			}
			if again == before || again.Fixed != before.Fixed {
				t.Errorf("after the TTL: compiled %p (prompt %p), before %p (prompt %p); want a new read with the same prompt", again, again.Fixed, before, before.Fixed)
			}
			w.behindTheirBacks(t, "bot", func(a *agentd.Agent) bool { a.Version.Instructions = "v2"; return true })
			w.clock.Advance(tt.want - time.Microsecond)
			if got := w.resolve(t, 0, "bot"); got != "v1" {
				t.Fatalf("resolves %q before the TTL passed, want the cached v1", got)
			}
			w.clock.Advance(time.Microsecond)
			if got := w.resolve(t, 0, "bot"); got != "v2" {
				t.Errorf("resolves %q after the TTL, want v2", got)
			}
			// A change without a new version (deactivation) is caught too.
			w.behindTheirBacks(t, "bot", func(a *agentd.Agent) bool { a.Active = false; return false })
			w.clock.Advance(tt.want)
			if got := w.resolve(t, 0, "bot"); got != "" {
				t.Errorf("resolves %q after the TTL, want the deactivated agent not found", got)
			}
		})
	}
}
