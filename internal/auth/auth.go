// Package auth owns keys: it mints them (keeping only their SHA-256 at rest),
// decides who may mint, revoke or re-budget which key, and turns a presented key
// into a Principal. Lookups are served from a cache; a change to a key evicts it
// at once on the replica that made it and, through a notification, on every other.
package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"strings"
	"sync"
	"time"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/internal/clock"
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

// Keys reads keys by hash and tells when one changes (store.DB).
type Keys interface {
	KeyByHash(ctx context.Context, hash string) (*agentd.Key, error)
	// Subscribe calls fn with the payload of every notification of topic, on
	// every replica, and with "" when some may have been missed.
	Subscribe(topic string, fn func(payload string)) (cancel func())
	// Dialect is "sqlite" or "postgres".
	Dialect() string
}

// keyTopic is the notification of a change to a key; its payload is the key's id.
const keyTopic = "key"

// DefaultTTL is how long, on PostgreSQL, a cached principal is served before its
// key is read again when Options.TTL is 0.
const DefaultTTL = 5 * time.Second

// Options tune an Authenticator.
type Options struct {
	// TTL bounds how long a principal is served from the cache without reading its
	// key again: the safety net for a notification that never arrives (a listener
	// whose connection died silently). 0 means DefaultTTL on PostgreSQL and no
	// expiry on SQLite, where the one process that owns the file makes every change
	// and evicts exactly.
	TTL time.Duration
}

// Authenticator resolves secrets to principals through a cache. Every change of a
// key is notified (keyTopic) and evicts it on every replica.
type Authenticator struct {
	keys   Keys
	clock  clock.Clock
	ttl    time.Duration // 0: entries live until evicted
	cancel func()

	mu    sync.RWMutex
	cache map[string]cached // hash → principal of a live key
	byID  map[string]string // key id → hash, for eviction
	// gen counts evictions. A lookup that raced one may have read the key before
	// the change that caused it (a revocation committing); it reads the key again,
	// and caches nothing. This guards every eviction, whatever its cause, where a
	// set of "revoked" ids would refuse forever a key evicted for any other change
	// and would grow with every revocation on every replica.
	gen uint64

	stats cacheStats // lookups served from the cache, and read from the database
}

type cached struct {
	p       *agentd.Principal
	expires time.Time // zero without a TTL
}

// New returns an Authenticator over keys, subscribed to their changes until Close.
func New(keys Keys, clk clock.Clock, o Options) *Authenticator {
	if o.TTL <= 0 && keys.Dialect() == "postgres" {
		o.TTL = DefaultTTL
	}
	a := &Authenticator{keys: keys, clock: clk, ttl: max(o.TTL, 0), cache: map[string]cached{}, byID: map[string]string{}}
	a.cancel = keys.Subscribe(keyTopic, func(id string) {
		if id == "" {
			a.drop()
			return
		}
		a.Evict(id)
	})
	return a
}

// Close ends the subscription to key changes.
func (a *Authenticator) Close() { a.cancel() }

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
	var now time.Time
	if a.ttl > 0 {
		now = a.clock.Now()
	}
	a.mu.RLock()
	e, hit := a.cache[hash]
	gen := a.gen
	a.mu.RUnlock()
	if hit && (a.ttl == 0 || now.Before(e.expires)) {
		a.stats.hit()
		if err := a.expired(e.p); err != nil {
			return nil, err // checked at each use: the cache never serves an expired key
		}
		return e.p, nil
	}
	a.stats.miss()
	p, err := a.lookup(ctx, hash)
	a.mu.Lock()
	if a.gen != gen {
		// An eviction ran during the read, which may predate the change behind it:
		// read again, after it, and cache nothing.
		a.mu.Unlock()
		return a.lookup(ctx, hash)
	}
	defer a.mu.Unlock()
	switch {
	case agentd.ErrorCode(err) == agentd.EUnauthenticated && hit: // expired, and revoked or gone since
		delete(a.cache, hash)
		delete(a.byID, e.p.KeyID)
		return nil, err
	case err != nil:
		return nil, err
	}
	e = cached{p: p}
	if a.ttl > 0 {
		e.expires = now.Add(a.ttl) // from before the read: never later than the data's age allows
	}
	a.cache[hash] = e
	a.byID[p.KeyID] = hash
	return p, nil
}

// lookup reads the principal of the key with hash from the database.
func (a *Authenticator) lookup(ctx context.Context, hash string) (*agentd.Principal, error) {
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
	p := &agentd.Principal{OrgID: k.OrgID, OrgName: k.OrgName, KeyID: k.ID, Owner: k.Owner, Scopes: k.Scopes,
		RateLimits: k.RateLimits, Agents: k.Agents}
	if k.ExpiresAt != nil {
		p.ExpiresAt = *k.ExpiresAt
	}
	if err := a.expired(p); err != nil {
		return nil, err
	}
	return p, nil
}

// expired refuses p's key once it has expired, as a revoked one is refused
// (EUnauthenticated), with a message that says so. Expiry is time logic on the
// injected clock, checked at every use: a cached principal expires on time.
func (a *Authenticator) expired(p *agentd.Principal) error {
	if p.ExpiresAt.IsZero() || a.clock.Now().Before(p.ExpiresAt) {
		return nil
	}
	return agentd.Errorf(agentd.EUnauthenticated, "API key expired at %s", p.ExpiresAt.UTC().Format(time.RFC3339))
}

// Evict forgets the key keyID after a change to it has committed: the next
// request reads it again, and so does a lookup that raced the change. A
// notification of keyTopic calls it on every replica; the replica that made the
// change calls it too, so that the change holds there from the moment it returns.
func (a *Authenticator) Evict(keyID string) {
	a.mu.Lock()
	a.gen++
	if h, ok := a.byID[keyID]; ok {
		delete(a.cache, h)
		delete(a.byID, keyID)
	}
	a.mu.Unlock()
}

// drop forgets every key: notifications may have been missed.
func (a *Authenticator) drop() {
	a.mu.Lock()
	a.gen++
	clear(a.cache)
	clear(a.byID)
	a.mu.Unlock()
}

// Require returns EForbidden unless p holds scope s.
func Require(p *agentd.Principal, s agentd.Scope) error {
	if p.Can(s) {
		return nil
	}
	return agentd.Errorf(agentd.EForbidden, "this key lacks the %q scope", s)
}
