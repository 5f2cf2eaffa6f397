package auth_test

import (
	"context"
	"slices"
	"testing"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/internal/auth"
	"github.com/agentd/agentd/internal/clock"
)

// principal is what Authenticate makes of a key of org with scopes.
func (f *fixture) principal(t *testing.T, org *agentd.Org, owner string, scopes ...agentd.Scope) *agentd.Principal {
	t.Helper()
	id, _ := f.key(t, org, owner, scopes...)
	return &agentd.Principal{OrgID: org.ID, OrgName: org.Name, KeyID: id, Owner: owner, Scopes: scopes}
}

func TestAuthorityOf(t *testing.T) {
	tests := []struct {
		scopes []agentd.Scope
		want   auth.Authority
	}{
		{nil, auth.AuthorityNone},
		{[]agentd.Scope{agentd.ScopeRun, agentd.ScopeAgentsWrite, agentd.ScopeUsage}, auth.AuthorityNone},
		{[]agentd.Scope{agentd.ScopeRun, agentd.ScopeAdmin}, auth.AuthorityAdmin},
		{[]agentd.Scope{agentd.ScopeAdmin, agentd.ScopeOperator}, auth.AuthorityOperator},
	}
	for _, tt := range tests {
		if got := auth.AuthorityOf(tt.scopes); got != tt.want {
			t.Errorf("AuthorityOf(%v) = %d, want %d", tt.scopes, got, tt.want)
		}
	}
}

// TestAuthorityIsAStrictOrder: no key mints, revokes, re-budgets or shares the
// sessions of a key above its own authority, nor touches another organization's
// keys unless it is an operator's.
func TestAuthorityIsAStrictOrder(t *testing.T) {
	ctx := context.Background()
	f := setup(t)
	svc := auth.NewService(f.db, auth.New(f.db, clock.Real, auth.Options{}), clock.Real)
	operator := f.principal(t, f.org, "root", agentd.ScopeOperator)
	admin := f.principal(t, f.org, "boss", agentd.ScopeAdmin)
	peer := f.principal(t, f.org, "peer", agentd.ScopeAdmin)
	runner := f.principal(t, f.org, "app", agentd.ScopeRun)
	foreign := f.principal(t, f.other, "them", agentd.ScopeAdmin)

	tests := []struct {
		name string
		do   func() error
		want agentd.Code
	}{
		{"admin revokes the operator", func() error { return svc.Revoke(ctx, admin, operator.KeyID) }, agentd.EForbidden},
		{"admin re-budgets the operator", func() error { _, err := svc.Manage(ctx, admin, operator.KeyID, auth.Budget); return err }, agentd.EForbidden},
		{"admin budgets a run key", func() error { _, err := svc.Manage(ctx, admin, runner.KeyID, auth.Budget); return err }, ""},
		{"admin revokes a fellow admin", func() error { _, err := svc.Manage(ctx, admin, peer.KeyID, auth.Revoke); return err }, ""},
		{"admin lifts a fellow admin's budget", func() error { _, err := svc.Manage(ctx, admin, peer.KeyID, auth.Budget); return err }, agentd.EForbidden},
		{"admin lifts its own budget", func() error { _, err := svc.Manage(ctx, admin, admin.KeyID, auth.Budget); return err }, agentd.EForbidden},
		{"an operator budgets an operator", func() error { _, err := svc.Manage(ctx, operator, operator.KeyID, auth.Budget); return err }, ""},
		{"a run key manages nothing", func() error { _, err := svc.Manage(ctx, runner, runner.KeyID, auth.Revoke); return err }, agentd.EForbidden},
		{"another organization's admin", func() error { return svc.Revoke(ctx, foreign, runner.KeyID) }, agentd.ENotFound},
		{"an operator reaches every organization", func() error { _, err := svc.Manage(ctx, operator, foreign.KeyID, auth.Budget); return err }, ""},
		{"admin mints an operator key", func() error {
			_, _, err := svc.Mint(ctx, admin, auth.KeySpec{Name: "x", Scopes: []agentd.Scope{agentd.ScopeOperator}})
			return err
		}, agentd.EForbidden},
		{"admin mints for another organization", func() error {
			_, _, err := svc.Mint(ctx, admin, auth.KeySpec{Name: "x", Org: f.other.ID})
			return err
		}, agentd.EForbidden},
		{"admin takes the operator's identity as owner", func() error {
			_, _, err := svc.Mint(ctx, admin, auth.KeySpec{Name: "x", Owner: operator.KeyID})
			return err
		}, agentd.EInvalid},
		{"admin shares the sessions of an operator's owner", func() error {
			_, _, err := svc.Mint(ctx, admin, auth.KeySpec{Name: "x", Owner: "root"})
			return err
		}, agentd.EForbidden},
		{"admin shares the sessions of a run key's owner", func() error {
			_, _, err := svc.Mint(ctx, admin, auth.KeySpec{Name: "x", Owner: "app"})
			return err
		}, ""},
		{"an operator shares anyone's sessions", func() error {
			_, _, err := svc.Mint(ctx, operator, auth.KeySpec{Name: "x", Owner: "root"})
			return err
		}, ""},
		{"an operator mints for another organization", func() error {
			k, _, err := svc.Mint(ctx, operator, auth.KeySpec{Name: "x", Org: f.other.Name, Scopes: []agentd.Scope{agentd.ScopeAdmin}})
			if err == nil && k.OrgID != f.other.ID {
				t.Errorf("minted in %s, want %s", k.OrgID, f.other.ID)
			}
			return err
		}, ""},
		{"a run key mints", func() error { _, _, err := svc.Mint(ctx, runner, auth.KeySpec{Name: "x"}); return err }, agentd.EForbidden},
		{"admin lists another organization", func() error { _, err := svc.List(ctx, admin, f.other.ID); return err }, agentd.EForbidden},
		{"the operator revokes the admin", func() error { return svc.Revoke(ctx, operator, admin.KeyID) }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := agentd.ErrorCode(tt.do()); got != tt.want {
				t.Fatalf("got code %q, want %q", got, tt.want)
			}
		})
	}
	// The refused revocation left the operator key working.
	if _, err := f.db.KeyByID(ctx, operator.KeyID); err != nil {
		t.Fatal(err)
	}
	k, _ := f.db.KeyByID(ctx, operator.KeyID)
	if k.Revoked() {
		t.Error("the operator key was revoked by an admin")
	}
}

// TestRevokeEvictsAtOnce: a revoked key is refused from the next request on.
func TestRevokeEvictsAtOnce(t *testing.T) {
	ctx := context.Background()
	f := setup(t)
	a := auth.New(f.db, clock.Real, auth.Options{})
	svc := auth.NewService(f.db, a, clock.Real)
	admin := f.principal(t, f.org, "boss", agentd.ScopeAdmin)
	k, secret, err := svc.Mint(ctx, admin, auth.KeySpec{Name: "app"})
	if err != nil {
		t.Fatal(err)
	}
	if k.Owner != k.ID || k.Scopes[0] != agentd.ScopeRun || len(k.Scopes) != 1 {
		t.Errorf("defaults: owner %q, scopes %v", k.Owner, k.Scopes)
	}
	if _, err := a.Authenticate(ctx, "Bearer "+secret); err != nil {
		t.Fatal(err)
	}
	if err := svc.Revoke(ctx, admin, k.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Authenticate(ctx, "Bearer "+secret); agentd.ErrorCode(err) != agentd.EUnauthenticated {
		t.Errorf("a revoked key authenticated: %v", err)
	}
}

// TestBootstrap: the first start mints a key to show once; later starts mint
// nothing; AGENTD_BOOTSTRAP_KEY adds its key beside others (replacing a lost one),
// and a revoked one stays revoked with a note saying how to replace it.
func TestBootstrap(t *testing.T) {
	ctx := context.Background()
	f := setup(t)
	svc := auth.NewService(f.db, auth.New(f.db, clock.Real, auth.Options{}), clock.Real)
	minted, note, err := svc.Bootstrap(ctx, f.org, "")
	if err != nil || minted == "" || note != "" {
		t.Fatalf("first start: minted %q, note %q, %v", minted, note, err)
	}
	if again, _, err := svc.Bootstrap(ctx, f.org, ""); err != nil || again != "" {
		t.Fatalf("second start minted %q (%v)", again, err)
	}
	const env = "agd_recovery_key_0123456789"
	if m, note, err := svc.Bootstrap(ctx, f.org, env); err != nil || m != "" || note != "" {
		t.Fatalf("a new AGENTD_BOOTSTRAP_KEY: %q %q %v", m, note, err)
	}
	k, err := f.db.KeyByHash(ctx, auth.Hash(env))
	if err != nil || !slices.Contains(k.Scopes, agentd.ScopeOperator) || k.OrgID != f.org.ID {
		t.Fatalf("the bootstrap key %+v, %v", k, err)
	}
	operator := &agentd.Principal{OrgID: f.org.ID, KeyID: k.ID, Scopes: k.Scopes}
	if err := svc.Revoke(ctx, operator, k.ID); err != nil {
		t.Fatal(err)
	}
	_, note, err = svc.Bootstrap(ctx, f.org, env)
	if err != nil || note == "" {
		t.Fatalf("a revoked AGENTD_BOOTSTRAP_KEY: note %q, %v", note, err)
	}
	if k, _ := f.db.KeyByHash(ctx, auth.Hash(env)); !k.Revoked() {
		t.Error("a revoked bootstrap key came back")
	}
}
