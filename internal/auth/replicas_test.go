package auth_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/internal/auth"
	"github.com/agentd/agentd/internal/clock"
	"github.com/agentd/agentd/internal/clock/clocktest"
	"github.com/agentd/agentd/internal/store"
	"github.com/agentd/agentd/internal/store/storetest"
)

// replicas opens n processes' worth of the database dsn (each its own store.DB,
// named app-<i> in pg_stat_activity) with the fixture's organizations created.
func replicas(t *testing.T, dsn, app string, n int) (*fixture, []*store.DB) {
	t.Helper()
	ctx := context.Background()
	var dbs []*store.DB
	for i := range n {
		db, err := store.Open(ctx, dsn, store.Options{ApplicationName: app + "-" + string(rune('0'+i))})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		dbs = append(dbs, db)
	}
	f := &fixture{db: dbs[0],
		org:   &agentd.Org{ID: agentd.NewID("org"), Name: "acme", CreatedAt: time.Now()},
		other: &agentd.Org{ID: agentd.NewID("org"), Name: "other", CreatedAt: time.Now()}}
	if err := f.db.Tx(ctx, func(tx *store.Tx) error {
		if err := tx.CreateOrg(ctx, f.org); err != nil {
			return err
		}
		return tx.CreateOrg(ctx, f.other)
	}); err != nil {
		t.Fatal(err)
	}
	return f, dbs
}

func refused(t *testing.T, a *auth.Authenticator, secret string) bool {
	t.Helper()
	_, err := a.Authenticate(context.Background(), "Bearer "+secret)
	switch agentd.ErrorCode(err) {
	case "":
		return false
	case agentd.EUnauthenticated:
		return true
	}
	t.Fatalf("Authenticate: %v", err)
	return false
}

// TestRevocationReachesEveryReplica: a key revoked through replica 1 is refused by
// replica 1 from the moment Revoke returns and by replicas 2 and 3 once its
// notification has arrived, even while lookups of the key race the revocation
// there. The clocks never move, so no TTL plays a part.
func TestRevocationReachesEveryReplica(t *testing.T) {
	ctx := context.Background()
	f, dbs := replicas(t, storetest.Postgres(t), "auth-revoke", 3)
	clk := clocktest.New(time.Now())
	var as []*auth.Authenticator
	for _, db := range dbs {
		a := auth.New(db, clk, auth.Options{})
		t.Cleanup(a.Close)
		as = append(as, a)
	}
	svc := auth.NewService(dbs[0], as[0], clk)
	admin := f.principal(t, f.org, "boss", agentd.ScopeAdmin)
	k, secret, err := svc.Mint(ctx, admin, auth.KeySpec{Name: "app"})
	if err != nil {
		t.Fatal(err)
	}
	_, other, err := svc.Mint(ctx, admin, auth.KeySpec{Name: "other"})
	if err != nil {
		t.Fatal(err)
	}
	for i, a := range as {
		for _, s := range []string{secret, other} {
			if refused(t, a, s) {
				t.Fatalf("replica %d refused a live key", i+1)
			}
		}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	halt := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer halt()
	for _, a := range as[1:] {
		for range 4 {
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
						a.Authenticate(ctx, "Bearer "+secret)
					}
				}
			})
		}
	}
	if err := svc.Revoke(ctx, admin, k.ID); err != nil {
		t.Fatal(err)
	}
	if !refused(t, as[0], secret) {
		t.Error("replica 1 accepted the key it revoked")
	}
	storetest.Settle(t, dbs[1])
	storetest.Settle(t, dbs[2])
	for range 20 {
		for i, a := range as {
			if !refused(t, a, secret) {
				t.Fatalf("replica %d accepted the revoked key after the notification", i+1)
			}
		}
	}
	halt()
	for i, a := range as {
		if !refused(t, a, secret) {
			t.Errorf("replica %d accepted the revoked key after the racing lookups", i+1)
		}
		if refused(t, a, other) {
			t.Errorf("replica %d refused another key", i+1)
		}
	}
}

// TestMissedNotificationsDropTheCache: a change whose notification never came
// (here a revocation written behind the Authenticators' backs) is noticed when
// the listener reconnects and tells its subscribers they may have missed some.
func TestMissedNotificationsDropTheCache(t *testing.T) {
	app := agentd.NewID("auth-missed")
	f, dbs := replicas(t, storetest.Postgres(t), app, 2)
	clk := clocktest.New(time.Now())
	a := auth.New(dbs[1], clk, auth.Options{})
	t.Cleanup(a.Close)
	id, secret := f.key(t, f.org, "alice", agentd.ScopeRun)
	if refused(t, a, secret) {
		t.Fatal("a live key was refused")
	}
	f.revoke(t, f.org, id) // no notification
	if refused(t, a, secret) {
		t.Fatal("the key was read again although nothing said it changed: is it cached?")
	}
	missed := make(chan struct{})
	var once sync.Once
	cancel := dbs[1].Subscribe("key", func(p string) {
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
	storetest.Settle(t, dbs[1])
	if !refused(t, a, secret) {
		t.Error("the revoked key was still served from the cache after the listener reconnected")
	}
}

// TestCacheTTL: a cached principal is read again once its TTL has passed, which
// catches a change no notification reported; without a TTL (SQLite's default) it
// is served until evicted.
func TestCacheTTL(t *testing.T) {
	tests := []struct {
		name    string
		dialect string
		ttl     time.Duration // given
		want    time.Duration // in effect; 0: none
	}{
		{"sqlite default: none", "sqlite", 0, 0},
		{"sqlite with a TTL", "sqlite", time.Minute, time.Minute},
		{"postgres default", "postgres", 0, auth.DefaultTTL},
		{"postgres with a TTL", "postgres", 2 * time.Second, 2 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, dbs := replicas(t, storetest.DSN(t, tt.dialect), "auth-ttl", 1)
			clk := clocktest.New(time.Now())
			a := auth.New(dbs[0], clk, auth.Options{TTL: tt.ttl})
			t.Cleanup(a.Close)
			id, secret := f.key(t, f.org, "alice", agentd.ScopeRun)
			if refused(t, a, secret) {
				t.Fatal("a live key was refused")
			}
			f.revoke(t, f.org, id) // no notification
			if tt.want == 0 {
				clk.Advance(365 * 24 * time.Hour)
				if refused(t, a, secret) {
					t.Error("without a TTL the cached principal expired")
				}
				return
			}
			clk.Advance(tt.want - time.Microsecond)
			if refused(t, a, secret) {
				t.Fatal("the principal expired before its TTL")
			}
			clk.Advance(time.Microsecond)
			if !refused(t, a, secret) {
				t.Error("the revoked key was served after the TTL")
			}
		})
	}
}

// TestRevokeOnSQLiteEvictsThroughTheNotification: on SQLite the notification is
// delivered in the process when the revocation commits, so a second
// Authenticator over the same database (no Service of its own) evicts too.
func TestRevokeOnSQLiteEvictsThroughTheNotification(t *testing.T) {
	ctx := context.Background()
	f := setup(t)
	a, b := auth.New(f.db, clock.Real, auth.Options{}), auth.New(f.db, clock.Real, auth.Options{})
	svc := auth.NewService(f.db, a, clock.Real)
	admin := f.principal(t, f.org, "boss", agentd.ScopeAdmin)
	k, secret, err := svc.Mint(ctx, admin, auth.KeySpec{Name: "app"})
	if err != nil {
		t.Fatal(err)
	}
	if refused(t, b, secret) {
		t.Fatal("a live key was refused")
	}
	if err := svc.Revoke(ctx, admin, k.ID); err != nil {
		t.Fatal(err)
	}
	if !refused(t, b, secret) {
		t.Error("the other Authenticator served the revoked key")
	}
}
