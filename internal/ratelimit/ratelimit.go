// Package ratelimit applies rate limits to keys and organizations: requests per
// minute (RPM), tokens per minute (TPM) and runs in flight (concurrency). It owns
// the counters behind them: in this process's memory, or, given a Redis server,
// in Redis, shared by every replica that names it. When Redis fails, each replica
// limits alone, from its memory, until Redis answers again; no request is ever
// refused because Redis is down.
//
// # Algorithm: a sliding-window log
//
// Every per-minute counter is a log of what was admitted in the last minute:
// one entry per request (RPM) or per run (TPM, weighing the tokens it may use),
// with its time. A request is admitted when what the log holds, plus what it
// asks, is within the limit; entries older than a minute leave the log. Chosen
// over the alternatives because it is exact and because TPM needs settlement:
//
//   - In no window of one minute, wherever it starts, is more admitted than the
//     limit. A fixed window admits twice the limit across a boundary; a sliding
//     window counter interpolates the previous window and is approximate; a
//     token bucket or GCRA with a burst of the limit admits the burst and then
//     the refill, up to twice the limit less one within a minute.
//   - A run is admitted for the most it may use (its prompt and its reply
//     limit), and when it ends its entry is set to what it used, in place, at
//     the time it was admitted: the window then holds what was really spent, and
//     when. A bucket can be refunded, but not at the right time.
//   - Retry-After is exact: the time the entries that must leave the log for
//     the request to fit do leave it.
//
// What it costs is one entry per admitted request (or run) in the last minute for
// each limit that is set, so at most the limit's number of entries for RPM; an
// unlimited counter (0, the default) keeps nothing and costs nothing. Runs in
// flight are a count in memory, and in Redis a set of the runs' slots, each with
// an expiry (Options.SlotTTL) so that a dead replica's runs give their slots back.
//
// In Redis each check is one Lua script, so one round trip, atomic over every
// limit it checks (a key's and its organization's, all admitted or none); the
// time is the replica's own clock, so replicas' clocks should agree (NTP).
package ratelimit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/internal/clock"
)

// Window is the span the per-minute limits count over.
const Window = time.Minute

// Limits are the limits of one key or organization; 0 is unlimited.
type Limits struct {
	RPM        int64 // requests per minute
	TPM        int64 // tokens per minute: what runs may use, settled to what they used
	Concurrent int64 // runs in flight
}

// Options configure a Limiter.
type Options struct {
	// Key applies to every key, field by field unless the key has its own
	// (Principal.RateLimits); Org to every organization.
	Key, Org Limits
	// Redis is a redis://, rediss:// or unix:// URL: the counters are kept there,
	// shared by every replica that names the same server and database. "" keeps
	// them in this process: each replica then limits alone.
	Redis string
	// Prefix starts every Redis key ("agentd:rl:" when empty).
	Prefix string
	// SlotTTL is how long Redis keeps the slot of a run whose replica died
	// before giving it back (5 minutes when zero): longer than a run lives.
	SlotTTL time.Duration
	// Retry is how often, while Redis fails, a request tries it again (1 s when
	// zero); the others use this replica's memory meanwhile.
	Retry time.Duration
	// Timeout bounds each Redis call (500 ms when zero).
	Timeout time.Duration
	Clock   clock.Clock
	Log     *slog.Logger
}

// Limiter applies the limits. Its zero value is not usable; New makes one.
type Limiter struct {
	key, org Limits
	clock    clock.Clock
	log      *slog.Logger
	local    *memory
	shared   *shared // nil without Redis
	retry    time.Duration
	timeout  time.Duration

	degraded    atomic.Bool
	transitions atomic.Int64
	nextTry     atomic.Int64 // Unix µs: when a request next tries Redis while it fails
	idPrefix    string
	ids         atomic.Uint64
}

// New returns a Limiter. With Options.Redis it checks the URL but does not
// connect: a Redis that is down at start is found by the first request, which
// then uses this replica's memory.
func New(o Options) (*Limiter, error) {
	for _, v := range []int64{o.Key.RPM, o.Key.TPM, o.Key.Concurrent, o.Org.RPM, o.Org.TPM, o.Org.Concurrent} {
		if v < 0 || v > agentd.MaxRateLimit {
			return nil, fmt.Errorf("ratelimit: a limit must be between 0 (unlimited) and %d, not %d", int64(agentd.MaxRateLimit), v)
		}
	}
	if o.Clock == nil {
		o.Clock = clock.Real
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	l := &Limiter{
		key: o.Key, org: o.Org, clock: o.Clock, log: o.Log, local: newMemory(),
		retry: cmpOr(o.Retry, time.Second), timeout: cmpOr(o.Timeout, 500*time.Millisecond),
	}
	var b [6]byte
	rand.Read(b[:])
	l.idPrefix = hex.EncodeToString(b[:]) + "."
	if o.Redis != "" {
		s, err := newShared(o.Redis, cmpOr(o.Prefix, "agentd:rl:"), cmpOr(o.SlotTTL, 5*time.Minute), l.timeout, l.log)
		if err != nil {
			return nil, err
		}
		l.shared = s
	}
	return l, nil
}

func cmpOr[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// Close closes the connections to Redis.
func (l *Limiter) Close() error {
	if l.shared == nil {
		return nil
	}
	return l.shared.close()
}

// Shared reports whether the limits are kept in Redis (when it answers).
func (l *Limiter) Shared() bool { return l.shared != nil }

// Degraded reports whether Redis is failing, so that this replica limits alone.
// Always false without Redis.
func (l *Limiter) Degraded() bool { return l.degraded.Load() }

// Transitions counts the changes between shared and degraded, each way, since
// New: metrics read it (an odd count is degraded now).
func (l *Limiter) Transitions() int64 { return l.transitions.Load() }

// Limits are the limits that apply to p: its key's (the key's own where set,
// else the defaults) and its organization's.
func (l *Limiter) Limits(p *agentd.Principal) (key, org Limits) {
	key = l.key
	if v := p.RateLimits.RPM; v != nil {
		key.RPM = *v
	}
	if v := p.RateLimits.TPM; v != nil {
		key.TPM = *v
	}
	if v := p.RateLimits.Concurrent; v != nil {
		key.Concurrent = *v
	}
	return key, l.org
}

// Request counts one request of p against its key's and its organization's
// requests per minute, or fails with ERateLimited, naming the limit, when
// either is spent (and counts it against neither).
func (l *Limiter) Request(ctx context.Context, p *agentd.Principal) error {
	k, o := l.Limits(p)
	var buf [2]ask
	asks := buf[:0]
	if k.RPM > 0 {
		asks = append(asks, ask{name: "key_rpm", key: "k:" + p.KeyID + ":rpm", kind: requests, limit: k.RPM, n: 1})
	}
	if o.RPM > 0 {
		asks = append(asks, ask{name: "org_rpm", key: "o:" + p.OrgID + ":rpm", kind: requests, limit: o.RPM, n: 1})
	}
	if len(asks) == 0 {
		return nil
	}
	_, _, err := l.take(ctx, asks)
	return err
}

// Admit admits a run of p that may use up to tokens tokens: it takes a slot
// among the runs in flight of its key and of its organization, and tokens in
// their windows, or fails with ERateLimited naming the limit (taking nothing).
// The run must call the permit's Done when it ends, however it ends. A nil
// permit (no limit applies) is valid.
func (l *Limiter) Admit(ctx context.Context, p *agentd.Principal, tokens int64) (*Permit, error) {
	k, o := l.Limits(p)
	tokens = max(tokens, 0)
	var asks []ask
	if k.TPM > 0 {
		asks = append(asks, ask{name: "key_tpm", key: "k:" + p.KeyID + ":tpm", kind: tokensWindow, limit: k.TPM, n: tokens})
	}
	if k.Concurrent > 0 {
		asks = append(asks, ask{name: "key_concurrent", key: "k:" + p.KeyID + ":runs", kind: slots, limit: k.Concurrent, n: 1})
	}
	if o.TPM > 0 {
		asks = append(asks, ask{name: "org_tpm", key: "o:" + p.OrgID + ":tpm", kind: tokensWindow, limit: o.TPM, n: tokens})
	}
	if o.Concurrent > 0 {
		asks = append(asks, ask{name: "org_concurrent", key: "o:" + p.OrgID + ":runs", kind: slots, limit: o.Concurrent, n: 1})
	}
	if len(asks) == 0 {
		return nil, nil
	}
	c, id, err := l.take(ctx, asks)
	if err != nil {
		return nil, err
	}
	return &Permit{l: l, c: c, id: id, asks: asks}, nil
}

// Permit is a run admitted by Admit.
type Permit struct {
	l    *Limiter
	c    counters // where the run was admitted: Redis, or this replica's memory
	id   string
	asks []ask
	once sync.Once
}

// Done ends the permit's run: its slots are given back, and its entries in the
// token windows, which held the most it could use, are set to used, what it did
// use (0 for a run that failed). It uses a context of its own, so that a client
// that went away still gives the slot back. Only the first call counts; a nil
// permit does nothing.
func (pm *Permit) Done(used int64) {
	if pm == nil {
		return
	}
	pm.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), pm.l.timeout)
		defer cancel()
		now := pm.l.clock.Now().UnixMicro()
		if err := pm.c.settle(ctx, now, pm.id, pm.asks, max(used, 0)); err != nil && pm.c == counters(pm.l.shared) {
			// The slot stays in Redis until it expires (SlotTTL), the tokens
			// until they leave the window.
			pm.l.failed(now, err)
		}
	})
}

// take checks asks, and records them if every one fits, in Redis or, when it
// fails, in memory. It returns where they were recorded and under which id.
func (l *Limiter) take(ctx context.Context, asks []ask) (counters, string, error) {
	now := l.clock.Now().UnixMicro()
	id := l.idPrefix + strconv.FormatUint(l.ids.Add(1), 36)
	if use, probe := l.useShared(now); use {
		cctx, cancel := context.WithTimeout(ctx, l.timeout)
		r, err := l.shared.take(cctx, now, id, asks)
		cancel()
		if err == nil {
			if probe {
				l.recovered()
			}
			return l.shared, id, refused(asks, r, now)
		}
		if ctx.Err() != nil {
			return nil, "", ctx.Err() // the caller went away; Redis did not fail
		}
		l.failed(now, err)
	}
	r, err := l.local.take(ctx, now, id, asks)
	if err != nil {
		return nil, "", err
	}
	return l.local, id, refused(asks, r, now)
}

// useShared reports whether a check at now goes to Redis: always while it
// answers; while it fails, one check per Retry interval (a probe).
func (l *Limiter) useShared(now int64) (use, probe bool) {
	if l.shared == nil {
		return false, false
	}
	if !l.degraded.Load() {
		return true, false
	}
	next := l.nextTry.Load()
	if now >= next && l.nextTry.CompareAndSwap(next, now+l.retry.Microseconds()) {
		return true, true
	}
	return false, false
}

// failed notes that Redis failed at now: from shared to degraded, with one log
// line, if it was not degraded yet.
func (l *Limiter) failed(now int64, err error) {
	l.nextTry.Store(now + l.retry.Microseconds())
	if l.degraded.CompareAndSwap(false, true) {
		l.transitions.Add(1)
		l.log.Warn("rate limits: Redis failed; each replica limits alone, from its own memory, until it answers again", "err", err)
	}
}

// recovered notes that Redis answered a probe: from degraded to shared, with one
// log line.
func (l *Limiter) recovered() {
	if l.degraded.CompareAndSwap(true, false) {
		l.transitions.Add(1)
		l.log.Info("rate limits: Redis answers again; the limits are shared by every replica")
	}
}

// kind is what a counter counts.
type kind byte

const (
	requests     kind = 'r' // a window of requests, one each, never settled
	tokensWindow kind = 't' // a window of runs' tokens, settled when they end
	slots        kind = 's' // runs in flight
)

// ask is one limit a request is checked against.
type ask struct {
	name  string // the limit's name in errors: key_rpm, org_tpm, …
	key   string // the counter: "k:<key id>:rpm", "o:<org id>:runs", …
	kind  kind
	limit int64
	n     int64 // what the request takes: 1, or a run's tokens
}

// counters keeps the counts: memory in one process, Redis across replicas. Both
// pass the same conformance test (countersSuite).
type counters interface {
	// take records every ask under id at now (Unix µs) if all of them fit, and
	// none of them otherwise; the refusal names the ask that fits last.
	take(ctx context.Context, now int64, id string, asks []ask) (refusal, error)
	// settle sets the token entries that id recorded for asks to used, keeping
	// their time, and gives back id's slots. Request windows are left as they are.
	settle(ctx context.Context, now int64, id string, asks []ask, used int64) error
}

// refusal says which ask did not fit (index -1: every one did) and when it
// would (Unix µs), or 0 for never: it asks for more than its limit.
type refusal struct {
	index int
	at    int64
}

// worse reports whether a refusal at `at` is worse than r: later, or never.
func (r refusal) worse(at int64) bool {
	return r.index < 0 || (r.at != 0 && (at == 0 || at > r.at))
}

// slotRetry is when a check refused for runs in flight suggests trying again:
// runs end when they end.
const slotRetry = time.Second

// refused is the error of r, nil when every ask fit.
func refused(asks []ask, r refusal, now int64) error {
	if r.index < 0 {
		return nil
	}
	a := asks[r.index]
	who := "this key"
	if a.name[0] == 'o' {
		who = "this organization"
	}
	fields := map[string]any{"limit": a.name, "limit_value": a.limit}
	if r.at == 0 {
		fields["requested"] = a.n
		return &agentd.Error{Code: agentd.ERateLimited, Fields: fields, Message: fmt.Sprintf(
			"this run may use up to %d tokens, more than %s may use in a minute (%s: %d): lower its max_tokens, shorten the prompt, or raise the limit",
			a.n, who, a.name, a.limit)}
	}
	secs := max(int((r.at-now+999_999)/1_000_000), 1)
	fields["retry_after"] = secs
	var msg string
	switch a.kind {
	case requests:
		msg = fmt.Sprintf("rate limit reached: %s may make %d requests per minute (%s); retry in %d s", who, a.limit, a.name, secs)
	case tokensWindow:
		fields["requested"] = a.n
		msg = fmt.Sprintf("rate limit reached: %s may use %d tokens per minute (%s) and this run may use up to %d; retry in %d s", who, a.limit, a.name, a.n, secs)
	default:
		msg = fmt.Sprintf("rate limit reached: %s may have %d runs in flight (%s); retry when one ends", who, a.limit, a.name)
	}
	return &agentd.Error{Code: agentd.ERateLimited, Message: msg, Fields: fields}
}
