// Package auth owns keys: it mints them (keeping only their SHA-256 at rest),
// decides who may mint, revoke or re-budget which key, and turns a presented key
// into a Principal. Lookups are served from a cache; revocation evicts at once.
package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"strings"
	"sync"

	"github.com/agentd/agentd"
)

// KeyPrefix starts every minted key.
const KeyPrefix = "agd_"

// displayLen is how much of a key is kept in clear to help people tell keys apart.
const displayLen = 12

// Mint returns a new secret key: "agd_" and 256 random bits in unpadded base64url.
func Mint() string {
	var b [32]byte
	rand.Read(b[:]) // never fails on supported platforms (crypto/rand docs)
	return KeyPrefix + base64.RawURLEncoding.EncodeToString(b[:])
}

// Hash returns the hex SHA-256 of a secret, the form stored and looked up.
func Hash(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}

// Prefix returns the displayable start of a secret.
func Prefix(secret string) string {
	if len(secret) > displayLen {
		return secret[:displayLen]
	}
	return secret
}

// Keys reads keys by hash.
type Keys interface {
	KeyByHash(ctx context.Context, hash string) (*agentd.Key, error)
}

// Authenticator resolves secrets to principals through a cache.
type Authenticator struct {
	keys  Keys
	mu    sync.RWMutex
	cache map[string]*agentd.Principal // hash → principal of a live key
	byID  map[string]string            // key id → hash, for eviction
	// revoked remembers evicted ids so that a lookup racing the revocation cannot put
	// the key back into the cache. Revocations are rare; the set stays small.
	revoked map[string]bool
}

// New returns an Authenticator over keys.
func New(keys Keys) *Authenticator {
	return &Authenticator{keys: keys, cache: map[string]*agentd.Principal{}, byID: map[string]string{}, revoked: map[string]bool{}}
}

var errUnauthenticated = &agentd.Error{Code: agentd.EUnauthenticated, Message: "missing or invalid API key"}

// Authenticate returns the principal of an Authorization header value
// ("Bearer <key>"). Unknown and revoked keys are EUnauthenticated.
func (a *Authenticator) Authenticate(ctx context.Context, header string) (*agentd.Principal, error) {
	secret, ok := strings.CutPrefix(header, "Bearer ")
	if !ok {
		if s, ok2 := strings.CutPrefix(header, "bearer "); ok2 {
			secret, ok = s, true
		}
	}
	secret = strings.TrimSpace(secret)
	if !ok || secret == "" || len(secret) > 512 {
		return nil, errUnauthenticated
	}
	hash := Hash(secret)
	a.mu.RLock()
	p := a.cache[hash]
	a.mu.RUnlock()
	if p != nil {
		return p, nil
	}
	k, err := a.keys.KeyByHash(ctx, hash)
	if agentd.ErrorCode(err) == agentd.ENotFound {
		return nil, errUnauthenticated
	}
	if err != nil {
		return nil, err
	}
	if k.Revoked() {
		return nil, errUnauthenticated
	}
	p = &agentd.Principal{OrgID: k.OrgID, OrgName: k.OrgName, KeyID: k.ID, Owner: k.Owner, Scopes: k.Scopes}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.revoked[k.ID] {
		return nil, errUnauthenticated
	}
	a.cache[hash] = p
	a.byID[k.ID] = hash
	return p, nil
}

// Evict forgets a revoked key: from now on, for the life of the process, it is
// refused without a lookup, even by a lookup that raced the revocation. Call it
// after the revocation has committed.
func (a *Authenticator) Evict(keyID string) {
	a.mu.Lock()
	a.revoked[keyID] = true
	if h, ok := a.byID[keyID]; ok {
		delete(a.cache, h)
		delete(a.byID, keyID)
	}
	a.mu.Unlock()
}

// Require returns EForbidden unless p holds scope s.
func Require(p *agentd.Principal, s agentd.Scope) error {
	if p.Can(s) {
		return nil
	}
	return agentd.Errorf(agentd.EForbidden, "this key lacks the %q scope", s)
}
