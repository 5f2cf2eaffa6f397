package auth_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/internal/auth"
	"github.com/agentd/agentd/internal/clock"
	"github.com/agentd/agentd/internal/store"
)

func TestMint(t *testing.T) {
	const n = 2000
	seen := make(map[string]bool, n)
	for range n {
		k := auth.Mint()
		body, ok := strings.CutPrefix(k, "agd_")
		if !ok || !strings.HasPrefix(k, auth.KeyPrefix) {
			t.Fatalf("Mint() = %q, want prefix agd_", k)
		}
		if len(body) != 43 { // 256 bits in unpadded base64
			t.Fatalf("Mint() = %q: %d characters after the prefix, want 43", k, len(body))
		}
		if strings.Trim(body, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") != "" {
			t.Fatalf("Mint() = %q: characters outside base64url", k)
		}
		if seen[k] {
			t.Fatalf("Mint() repeated %q", k)
		}
		seen[k] = true
	}
}

func TestHash(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"empty", "", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
		{"abc", "abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
		{"key", "agd_secret", func() string { h := sha256.Sum256([]byte("agd_secret")); return hex.EncodeToString(h[:]) }()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := auth.Hash(tt.in); got != tt.want {
				t.Errorf("Hash(%q) = %s, want %s", tt.in, got, tt.want)
			}
		})
	}
}

func TestPrefix(t *testing.T) {
	tests := []struct{ in, want string }{
		{"agd_0123456789abcdef", "agd_01234567"},
		{"agd_short", "agd_short"},
		{"", ""},
	}
	for _, tt := range tests {
		if got := auth.Prefix(tt.in); got != tt.want {
			t.Errorf("Prefix(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

type fixture struct {
	db    *store.DB
	org   *agentd.Org
	other *agentd.Org
}

func setup(t *testing.T) *fixture {
	t.Helper()
	ctx := context.Background()
	db, err := store.Open(ctx, "sqlite:"+filepath.Join(t.TempDir(), "agentd.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	f := &fixture{db: db,
		org:   &agentd.Org{ID: agentd.NewID("org"), Name: "acme", CreatedAt: time.Now()},
		other: &agentd.Org{ID: agentd.NewID("org"), Name: "other", CreatedAt: time.Now()}}
	err = db.Tx(ctx, func(tx *store.Tx) error {
		if err := tx.CreateOrg(ctx, f.org); err != nil {
			return err
		}
		return tx.CreateOrg(ctx, f.other)
	})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// key stores a new key of org and returns its id and secret.
func (f *fixture) key(t *testing.T, org *agentd.Org, owner string, scopes ...agentd.Scope) (id, secret string) {
	t.Helper()
	ctx := context.Background()
	secret = auth.Mint()
	k := &agentd.Key{ID: agentd.NewID("key"), OrgID: org.ID, Name: owner + "'s key", Owner: owner,
		Prefix: auth.Prefix(secret), Hash: auth.Hash(secret), Scopes: scopes, CreatedAt: time.Now()}
	if err := f.db.Tx(ctx, func(tx *store.Tx) error { return tx.CreateKey(ctx, k) }); err != nil {
		t.Fatal(err)
	}
	return k.ID, secret
}

func (f *fixture) revoke(t *testing.T, org *agentd.Org, id string) {
	t.Helper()
	ctx := context.Background()
	if err := f.db.Tx(ctx, func(tx *store.Tx) error { return tx.RevokeKey(ctx, id, time.Now().UnixMicro()) }); err != nil {
		t.Fatal(err)
	}
}

func TestAuthenticate(t *testing.T) {
	ctx := context.Background()
	f := setup(t)
	aliceID, alice := f.key(t, f.org, "alice", agentd.ScopeRun, agentd.ScopeAgentsRead)
	bobID, bob := f.key(t, f.other, "bob", agentd.ScopeAdmin)
	revokedID, revoked := f.key(t, f.org, "carol", agentd.ScopeRun)
	f.revoke(t, f.org, revokedID)
	a := auth.New(f.db, clock.Real, auth.Options{})

	tests := []struct {
		name   string
		header string
		want   *agentd.Principal // nil: EUnauthenticated
	}{
		{"valid key", "Bearer " + alice, &agentd.Principal{OrgID: f.org.ID, OrgName: "acme", KeyID: aliceID, Owner: "alice", Scopes: []agentd.Scope{agentd.ScopeRun, agentd.ScopeAgentsRead}}},
		{"valid key again (cached)", "Bearer " + alice, &agentd.Principal{OrgID: f.org.ID, OrgName: "acme", KeyID: aliceID, Owner: "alice", Scopes: []agentd.Scope{agentd.ScopeRun, agentd.ScopeAgentsRead}}},
		{"lowercase bearer", "bearer " + alice, &agentd.Principal{OrgID: f.org.ID, OrgName: "acme", KeyID: aliceID, Owner: "alice", Scopes: []agentd.Scope{agentd.ScopeRun, agentd.ScopeAgentsRead}}},
		{"surrounding spaces", "Bearer  " + alice + " ", &agentd.Principal{OrgID: f.org.ID, OrgName: "acme", KeyID: aliceID, Owner: "alice", Scopes: []agentd.Scope{agentd.ScopeRun, agentd.ScopeAgentsRead}}},
		{"another org's key", "Bearer " + bob, &agentd.Principal{OrgID: f.other.ID, OrgName: "other", KeyID: bobID, Owner: "bob", Scopes: []agentd.Scope{agentd.ScopeAdmin}}},
		{"no Bearer", alice, nil},
		{"other scheme", "Basic " + alice, nil},
		{"Bearer without space", "Bearer" + alice, nil},
		{"empty header", "", nil},
		{"empty key", "Bearer ", nil},
		{"blank key", "Bearer    ", nil},
		{"unknown key", "Bearer " + auth.Mint(), nil},
		{"key with a character changed", "Bearer " + alice[:len(alice)-1] + "!", nil},
		{"revoked key", "Bearer " + revoked, nil},
		{"oversized key", "Bearer " + strings.Repeat("x", 513), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := a.Authenticate(ctx, tt.header)
			if tt.want == nil {
				if got := agentd.ErrorCode(err); got != agentd.EUnauthenticated {
					t.Fatalf("Authenticate = %+v, %v (code %q), want %s", p, err, got, agentd.EUnauthenticated)
				}
				if p != nil {
					t.Errorf("principal %+v returned with an error", p)
				}
				return
			}
			if err != nil {
				t.Fatalf("Authenticate: %v", err)
			}
			if p.OrgID != tt.want.OrgID || p.OrgName != tt.want.OrgName || p.KeyID != tt.want.KeyID ||
				p.Owner != tt.want.Owner || !slices.Equal(p.Scopes, tt.want.Scopes) {
				t.Errorf("principal %+v, want %+v", p, tt.want)
			}
		})
	}
}

func TestRevocationIsImmediate(t *testing.T) {
	ctx := context.Background()
	f := setup(t)
	id, secret := f.key(t, f.org, "alice", agentd.ScopeRun)
	_, other := f.key(t, f.org, "bob", agentd.ScopeRun)
	a := auth.New(f.db, clock.Real, auth.Options{})
	for _, s := range []string{secret, other} {
		if _, err := a.Authenticate(ctx, "Bearer "+s); err != nil {
			t.Fatalf("before revocation: %v", err)
		}
	}
	f.revoke(t, f.org, id)
	a.Evict(id)
	for range 3 {
		if _, err := a.Authenticate(ctx, "Bearer "+secret); agentd.ErrorCode(err) != agentd.EUnauthenticated {
			t.Fatalf("revoked and evicted key: %v, want %s", err, agentd.EUnauthenticated)
		}
	}
	// Other keys are untouched.
	if _, err := a.Authenticate(ctx, "Bearer "+other); err != nil {
		t.Errorf("another key after the revocation: %v", err)
	}
	// A fresh authenticator (another process, a restart) refuses it from the database.
	if _, err := auth.New(f.db, clock.Real, auth.Options{}).Authenticate(ctx, "Bearer "+secret); agentd.ErrorCode(err) != agentd.EUnauthenticated {
		t.Errorf("fresh authenticator: %v", err)
	}
}

// TestRevocationRacesLookups: lookups racing a revocation never let the key back
// in once Evict has returned.
func TestRevocationRacesLookups(t *testing.T) {
	ctx := context.Background()
	f := setup(t)
	id, secret := f.key(t, f.org, "alice", agentd.ScopeRun)
	a := auth.New(f.db, clock.Real, auth.Options{})
	stop := make(chan struct{})
	var wg, racing sync.WaitGroup
	racing.Add(8)
	for range 8 {
		wg.Go(func() {
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				a.Authenticate(ctx, "Bearer "+secret)
				if n == 0 {
					racing.Done() // the key is cached and this lookup goes on racing
				}
			}
		})
	}
	racing.Wait()
	f.revoke(t, f.org, id)
	a.Evict(id)
	for range 50 {
		if _, err := a.Authenticate(ctx, "Bearer "+secret); agentd.ErrorCode(err) != agentd.EUnauthenticated {
			close(stop)
			wg.Wait()
			t.Fatalf("after Evict: %v", err)
		}
	}
	close(stop)
	wg.Wait()
	if _, err := a.Authenticate(ctx, "Bearer "+secret); agentd.ErrorCode(err) != agentd.EUnauthenticated {
		t.Fatalf("after the racing lookups: %v", err)
	}
}

func TestRequire(t *testing.T) {
	tests := []struct {
		name   string
		scopes []agentd.Scope
		need   agentd.Scope
		want   agentd.Code
	}{
		{"has it", []agentd.Scope{agentd.ScopeRun}, agentd.ScopeRun, ""},
		{"through admin", []agentd.Scope{agentd.ScopeAdmin}, agentd.ScopeAgentsWrite, ""},
		{"through agents:write", []agentd.Scope{agentd.ScopeAgentsWrite}, agentd.ScopeAgentsRead, ""},
		{"run cannot write agents", []agentd.Scope{agentd.ScopeRun}, agentd.ScopeAgentsWrite, agentd.EForbidden},
		{"admin is not operator", []agentd.Scope{agentd.ScopeAdmin}, agentd.ScopeOperator, agentd.EForbidden},
		{"no scopes", nil, agentd.ScopeUsage, agentd.EForbidden},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := auth.Require(&agentd.Principal{Scopes: tt.scopes}, tt.need)
			if got := agentd.ErrorCode(err); got != tt.want {
				t.Fatalf("Require(%v, %q) = %v, want code %q", tt.scopes, tt.need, err, tt.want)
			}
			if err != nil && !strings.Contains(agentd.ErrorMessage(err), string(tt.need)) {
				t.Errorf("message %q does not name the scope %q", agentd.ErrorMessage(err), tt.need)
			}
		})
	}
}
