package ratelimit

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// shared keeps the counters in Redis, for every replica that names the same
// server. Each counter is one or two keys under the prefix:
//
//	<prefix>w:<counter>  sorted set: the window's entries, "<id>|<n>" scored by time (Unix µs)
//	<prefix>s:<counter>  string: the sum of the window's n
//	<prefix>c:<counter>  sorted set: the slots of runs in flight, "<id>" scored by expiry
//
// Each key expires a little after its last entry could matter, so counters of
// keys no longer used leave nothing behind. A check (take) and a run's end
// (settle) are one script each: one round trip, atomic over all their counters.
// Redis Cluster is not supported (a check spans a key's and its organization's
// counters, which a cluster would place apart); a single server, with replicas
// of its own or not, is.
type shared struct {
	c       *redis.Client
	prefix  string
	slotTTL time.Duration
}

var _ counters = (*shared)(nil)

func newShared(rawURL, prefix string, slotTTL, timeout time.Duration, log *slog.Logger) (*shared, error) {
	opt, err := redis.ParseURL(rawURL)
	if err != nil {
		return nil, fmt.Errorf("ratelimit: redis URL %s: %w", redact(rawURL), err)
	}
	// Fail fast, so that a request waits little for a Redis that is gone before
	// it is limited from memory; a URL's own timeouts win.
	if opt.DialTimeout == 0 {
		opt.DialTimeout = timeout
	}
	if opt.ReadTimeout == 0 {
		opt.ReadTimeout = timeout
	}
	if opt.WriteTimeout == 0 {
		opt.WriteTimeout = timeout
	}
	if opt.MaxRetries == 0 {
		opt.MaxRetries = -1 // no retries: the next check tries again, after Retry
	}
	opt.DialerRetries = 1
	opt.ContextTimeoutEnabled = true
	opt.DisableIdentity = true
	opt.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	redis.SetLogger(redisLog{log})
	return &shared{c: redis.NewClient(opt), prefix: prefix, slotTTL: slotTTL}, nil
}

// redisLog is go-redis's logger, which is one for the whole process: its lines
// (one per failed dial while Redis is down) go to the log at debug level, so
// that an outage is told by the limiter's own lines, one when Redis fails and
// one when it answers again.
type redisLog struct{ log *slog.Logger }

func (l redisLog) Printf(_ context.Context, format string, v ...any) {
	l.log.Debug("ratelimit: go-redis: " + fmt.Sprintf(format, v...))
}

// redact hides a password in a Redis URL.
func redact(raw string) string {
	at := strings.LastIndex(raw, "@")
	scheme := strings.Index(raw, "://")
	if at < 0 || scheme < 0 || at < scheme {
		return raw
	}
	return raw[:scheme+3] + "…" + raw[at:]
}

func (s *shared) close() error { return s.c.Close() }

// keys are the two keys of each ask: a window's entries and sum, or a slot set
// (twice, so that every ask has two).
func (s *shared) keys(asks []ask) []string {
	keys := make([]string, 0, 2*len(asks))
	for _, a := range asks {
		if a.kind == slots {
			k := s.prefix + "c:" + a.key
			keys = append(keys, k, k)
		} else {
			keys = append(keys, s.prefix+"w:"+a.key, s.prefix+"s:"+a.key)
		}
	}
	return keys
}

// kindArg is what the scripts call an ask's kind: 's' for slots, 'w' for a window.
func kindArg(k kind) string {
	if k == slots {
		return "s"
	}
	return "w"
}

// takeScript checks every ask and records them all if each fits (see memory.take,
// which it mirrors). Times are Unix µs; numbers are written back with %.0f, since
// Lua's numbers are doubles (exact to 2^53) that Redis would format with fewer
// digits.
//
// KEYS: two per ask. ARGV: now, window, slot ttl, id, then kind, limit, n per ask.
// Returns {index, at}: index -1 when every ask fit, else the 0-based index of the
// ask that fits last and when it would (0: never).
var takeScript = redis.NewScript(`
local now, win, ttl, id = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local function str(x) return string.format('%.0f', x) end
local function weight(m) return tonumber(string.match(m, '|(%d+)$')) end
local asks = #KEYS / 2
local worst, worst_at = -1, 0
for i = 1, asks do
  local zk, sk = KEYS[2*i-1], KEYS[2*i]
  local kind, limit, n = ARGV[3*i+2], tonumber(ARGV[3*i+3]), tonumber(ARGV[3*i+4])
  local fits, at = true, 0
  if kind == 's' then
    redis.call('ZREMRANGEBYSCORE', zk, '-inf', str(now))
    if redis.call('ZCARD', zk) + n > limit then fits, at = false, now + 1000000 end
  else
    local old = redis.call('ZRANGEBYSCORE', zk, '-inf', str(now - win))
    if #old > 0 then
      local freed = 0
      for _, m in ipairs(old) do freed = freed + weight(m) end
      redis.call('ZREMRANGEBYSCORE', zk, '-inf', str(now - win))
      redis.call('DECRBY', sk, str(freed))
    end
    local sum = 0
    if redis.call('EXISTS', zk) == 1 then sum = tonumber(redis.call('GET', sk) or '0') end
    if sum + n > limit then
      fits = false
      if n <= limit then
        local need, start = sum + n - limit, 0
        while at == 0 do
          local page = redis.call('ZRANGE', zk, start, start + 127, 'WITHSCORES')
          if #page == 0 then at = now + win end
          for j = 1, #page, 2 do
            need = need - weight(page[j])
            if need <= 0 then at = tonumber(page[j+1]) + win break end
          end
          start = start + 128
        end
      end
    end
  end
  if not fits and (worst < 0 or (worst_at ~= 0 and (at == 0 or at > worst_at))) then
    worst, worst_at = i - 1, at
  end
end
if worst >= 0 then return {worst, worst_at} end
for i = 1, asks do
  local zk, sk = KEYS[2*i-1], KEYS[2*i]
  local kind, n = ARGV[3*i+2], ARGV[3*i+4]
  if kind == 's' then
    redis.call('ZADD', zk, str(now + ttl), id)
    redis.call('PEXPIRE', zk, str(ttl / 1000 + 1000))
  else
    if redis.call('EXISTS', zk) == 0 then redis.call('SET', sk, n) else redis.call('INCRBY', sk, n) end
    redis.call('ZADD', zk, str(now), id .. '|' .. n)
    redis.call('PEXPIRE', zk, str(win / 1000 + 1000))
    redis.call('PEXPIRE', sk, str(win / 1000 + 1000))
  end
end
return {-1, 0}
`)

// settleScript sets a run's token entries to what it used, at their own time,
// and removes its slots (see memory.settle). An entry that already left the
// window is left alone: it no longer counts.
//
// KEYS: two per ask, as takeScript's. ARGV: now, window, id, used, then kind and
// n per ask.
var settleScript = redis.NewScript(`
local now, win, id, used = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], ARGV[4]
for i = 1, #KEYS / 2 do
  local zk, sk = KEYS[2*i-1], KEYS[2*i]
  local kind, n = ARGV[2*i+3], ARGV[2*i+4]
  if kind == 's' then
    redis.call('ZREM', zk, id)
  else
    local m = id .. '|' .. n
    local score = redis.call('ZSCORE', zk, m)
    if score and tonumber(score) > now - win then
      redis.call('ZREM', zk, m)
      redis.call('DECRBY', sk, n)
      if tonumber(used) > 0 then
        redis.call('ZADD', zk, score, id .. '|' .. used)
        redis.call('INCRBY', sk, used)
      end
    end
  end
end
return 0
`)

func (s *shared) take(ctx context.Context, now int64, id string, asks []ask) (refusal, error) {
	args := make([]any, 0, 4+3*len(asks))
	args = append(args, now, windowMicros, s.slotTTL.Microseconds(), id)
	for _, a := range asks {
		args = append(args, kindArg(a.kind), a.limit, a.n)
	}
	res, err := takeScript.Run(ctx, s.c, s.keys(asks), args...).Int64Slice()
	if err != nil {
		return refusal{}, fmt.Errorf("ratelimit: redis: %w", err)
	}
	if len(res) != 2 || res[0] < -1 || res[0] >= int64(len(asks)) {
		return refusal{}, fmt.Errorf("ratelimit: redis: unexpected reply %v", res)
	}
	return refusal{index: int(res[0]), at: res[1]}, nil
}

func (s *shared) settle(ctx context.Context, now int64, id string, asks []ask, used int64) error {
	var settled []ask
	for _, a := range asks {
		if a.kind != requests {
			settled = append(settled, a)
		}
	}
	if len(settled) == 0 {
		return nil
	}
	args := make([]any, 0, 4+2*len(settled))
	args = append(args, now, windowMicros, id, strconv.FormatInt(used, 10))
	for _, a := range settled {
		args = append(args, kindArg(a.kind), a.n)
	}
	if err := settleScript.Run(ctx, s.c, s.keys(settled), args...).Err(); err != nil {
		return fmt.Errorf("ratelimit: redis: %w", err)
	}
	return nil
}
