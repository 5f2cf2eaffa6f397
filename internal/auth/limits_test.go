package auth_test

import (
	"context"
	"testing"
	"time"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/internal/auth"
	"github.com/agentd/agentd/internal/clock"
	"github.com/agentd/agentd/internal/clock/clocktest"
	"github.com/agentd/agentd/internal/store/storetest"
)

// TestSetRateLimits: a key's own rate limits are set by a key above it, as a
// budget is; they are stored, and the key's principal carries them from the
// change on (the cached one is evicted).
func TestSetRateLimits(t *testing.T) {
	ctx := context.Background()
	f := setup(t)
	authn := auth.New(f.db, clock.Real, auth.Options{})
	defer authn.Close()
	svc := auth.NewService(f.db, authn, clock.Real)
	operator := f.principal(t, f.org, "root", agentd.ScopeOperator)
	admin := f.principal(t, f.org, "boss", agentd.ScopeAdmin)
	peer := f.principal(t, f.org, "peer", agentd.ScopeAdmin)
	foreign := f.principal(t, f.other, "them", agentd.ScopeAdmin)
	runID, runSecret := f.key(t, f.org, "app", agentd.ScopeRun)
	five, zero := int64(5), int64(0)

	before, err := authn.Authenticate(ctx, "Bearer "+runSecret) // cached from now on
	if err != nil || before.RateLimits.RPM != nil {
		t.Fatalf("principal before = %+v, %v", before, err)
	}
	tests := []struct {
		name   string
		by     *agentd.Principal
		target string
		l      agentd.RateLimits
		want   agentd.Code
	}{
		{"admin limits a run key", admin, runID, agentd.RateLimits{RPM: &five, TPM: &zero}, ""},
		{"admin lifts its own limits", admin, admin.KeyID, agentd.RateLimits{RPM: &zero}, agentd.EForbidden},
		{"admin limits a fellow admin", admin, peer.KeyID, agentd.RateLimits{RPM: &five}, agentd.EForbidden},
		{"admin limits the operator", admin, operator.KeyID, agentd.RateLimits{RPM: &five}, agentd.EForbidden},
		{"a run key limits itself", &agentd.Principal{OrgID: f.org.ID, KeyID: runID, Scopes: []agentd.Scope{agentd.ScopeRun}}, runID, agentd.RateLimits{}, agentd.EForbidden},
		{"another organization's admin", foreign, runID, agentd.RateLimits{RPM: &zero}, agentd.ENotFound},
		{"the operator limits an admin", operator, admin.KeyID, agentd.RateLimits{Concurrent: &five}, ""},
		{"the operator limits itself", operator, operator.KeyID, agentd.RateLimits{RPM: &five}, ""},
		{"a negative limit", operator, admin.KeyID, agentd.RateLimits{TPM: new(int64(-1))}, agentd.EInvalid},
		{"a limit too large", operator, admin.KeyID, agentd.RateLimits{TPM: new(int64(agentd.MaxRateLimit + 1))}, agentd.EInvalid},
		{"an unknown key", operator, "key-nope", agentd.RateLimits{}, agentd.ENotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := svc.SetRateLimits(ctx, tt.by, tt.target, tt.l)
			if got := agentd.ErrorCode(err); got != tt.want {
				t.Fatalf("got code %q (%v), want %q", got, err, tt.want)
			}
			if err == nil && k.RateLimits != tt.l {
				t.Errorf("returned limits %+v, want %+v", k.RateLimits, tt.l)
			}
		})
	}
	stored, err := f.db.KeyByID(ctx, runID)
	if err != nil || stored.RateLimits.RPM == nil || *stored.RateLimits.RPM != 5 || stored.RateLimits.TPM == nil || *stored.RateLimits.TPM != 0 || stored.RateLimits.Concurrent != nil {
		t.Fatalf("stored %+v, %v", stored.RateLimits, err)
	}
	after, err := authn.Authenticate(ctx, "Bearer "+runSecret)
	if err != nil || after.RateLimits.RPM == nil || *after.RateLimits.RPM != 5 {
		t.Fatalf("principal after = %+v, %v; want the new limits", after, err)
	}
	// Back to the defaults.
	if _, err := svc.SetRateLimits(ctx, admin, runID, agentd.RateLimits{}); err != nil {
		t.Fatal(err)
	}
	if p, err := authn.Authenticate(ctx, "Bearer "+runSecret); err != nil || p.RateLimits != (agentd.RateLimits{}) {
		t.Fatalf("principal after the reset = %+v, %v", p, err)
	}
}

// TestRateLimitsReachEveryReplica: a key's limits changed through replica 1 are
// on the principal replica 2 serves once the key's notification has arrived;
// the clocks never move, so no TTL plays a part.
func TestRateLimitsReachEveryReplica(t *testing.T) {
	ctx := context.Background()
	f, dbs := replicas(t, storetest.Postgres(t), "auth-limits", 2)
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
	if p, err := as[1].Authenticate(ctx, "Bearer "+secret); err != nil || p.RateLimits.RPM != nil { // cached there
		t.Fatalf("before: %+v, %v", p, err)
	}
	if _, err := svc.SetRateLimits(ctx, admin, k.ID, agentd.RateLimits{RPM: new(int64(9))}); err != nil {
		t.Fatal(err)
	}
	storetest.Settle(t, dbs[1])
	if p, err := as[1].Authenticate(ctx, "Bearer "+secret); err != nil || p.RateLimits.RPM == nil || *p.RateLimits.RPM != 9 {
		t.Fatalf("replica 2 after the notification: %+v, %v", p, err)
	}
}
