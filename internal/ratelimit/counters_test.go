package ratelimit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// EnvRedis names the environment variable with the Redis server of the tests:
// host:port or a redis:// URL. Unset, the Redis tests skip.
const EnvRedis = "AGENTD_TEST_REDIS"

// testRedisURL is the Redis of the tests as a URL, or skips t.
func testRedisURL(t testing.TB) string {
	t.Helper()
	v := os.Getenv(EnvRedis)
	if v == "" {
		t.Skipf("%s is not set: skipping the Redis test (set it to a server such as 127.0.0.1:6379)", EnvRedis)
	}
	if !strings.Contains(v, "://") {
		v = "redis://" + v
	}
	return v
}

// testPrefix is a key prefix of t's own on a shared Redis; its keys are deleted
// when t ends (they would expire within minutes anyway).
func testPrefix(t testing.TB, url string) string {
	t.Helper()
	var b [6]byte
	rand.Read(b[:])
	prefix := "agentd:test:" + hex.EncodeToString(b[:]) + ":"
	t.Cleanup(func() {
		opt, err := redis.ParseURL(url)
		if err != nil {
			return
		}
		c := redis.NewClient(opt)
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		iter := c.Scan(ctx, 0, prefix+"*", 100).Iterator()
		for iter.Next(ctx) {
			c.Del(ctx, iter.Val())
		}
	})
	return prefix
}

// newTestShared returns Redis counters with a prefix of t's own.
func newTestShared(t testing.TB, slotTTL time.Duration) *shared {
	t.Helper()
	url := testRedisURL(t)
	s, err := newShared(url, testPrefix(t, url), slotTTL, 2*time.Second, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.close() })
	return s
}

func TestMemoryCounters(t *testing.T) {
	countersSuite(t, func(t *testing.T) counters { return newMemory() })
}

func TestRedisCounters(t *testing.T) {
	testRedisURL(t)
	countersSuite(t, func(t *testing.T) counters { return newTestShared(t, time.Hour) })
}

// TestRedisSlotsExpire: the slot of a run whose replica died (it never settles)
// comes back after the slot TTL. In memory a slot dies with its process.
func TestRedisSlotsExpire(t *testing.T) {
	c := newTestShared(t, 10*time.Second)
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC).UnixMicro()
	a := []ask{{name: "key_concurrent", key: "k:x:runs", kind: slots, limit: 1, n: 1}}
	wantTake(t, c, t0, "run1", a, -1, 0)
	wantTake(t, c, t0+9_999_999, "run2", a, 0, t0+9_999_999+slotRetry.Microseconds())
	wantTake(t, c, t0+10_000_000, "run3", a, -1, 0)
}

const sec = int64(time.Second / time.Microsecond)

func wantTake(t *testing.T, c counters, now int64, id string, asks []ask, index int, at int64) {
	t.Helper()
	r, err := c.take(context.Background(), now, id, asks)
	if err != nil {
		t.Fatal(err)
	}
	if r.index != index || (index >= 0 && r.at != at) {
		t.Fatalf("take %s at +%dµs = %+v, want index %d at %d", id, now, r, index, at)
	}
}

// countersSuite is what every implementation of counters must do: exactly the
// limit of concurrent asks admitted, a sliding window with exact retry times,
// token windows settled in place, all-or-none over several counters, slots.
func countersSuite(t *testing.T, newCounters func(t *testing.T) counters) {
	ctx := context.Background()
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC).UnixMicro()
	rpm := func(limit int64) []ask {
		return []ask{{name: "key_rpm", key: "k:a:rpm", kind: requests, limit: limit, n: 1}}
	}
	tpm := func(limit, n int64) []ask {
		return []ask{{name: "key_tpm", key: "k:a:tpm", kind: tokensWindow, limit: limit, n: n}}
	}

	t.Run("exactly the limit of concurrent requests", func(t *testing.T) {
		c := newCounters(t)
		const k, n = 7, 60
		for round, now := range []int64{t0, t0 + windowMicros} { // a whole window later, again
			var admitted atomic.Int64
			var wg sync.WaitGroup
			for i := range n {
				wg.Go(func() {
					r, err := c.take(ctx, now, fmt.Sprintf("r%d-%d", round, i), rpm(k))
					if err != nil {
						t.Error(err)
						return
					}
					if r.index < 0 {
						admitted.Add(1)
					} else if r.at != t0+windowMicros && r.at != t0+2*windowMicros {
						t.Errorf("refused until %d", r.at)
					}
				})
			}
			wg.Wait()
			if got := admitted.Load(); got != k {
				t.Fatalf("%d of %d concurrent requests admitted at %d, want exactly %d", got, n, now, k)
			}
		}
	})

	t.Run("a sliding window, exact to the microsecond", func(t *testing.T) {
		c := newCounters(t)
		for i := range 3 {
			wantTake(t, c, t0, "a"+string(rune('0'+i)), rpm(5), -1, 0)
		}
		wantTake(t, c, t0+30*sec, "b0", rpm(5), -1, 0)
		wantTake(t, c, t0+30*sec, "b1", rpm(5), -1, 0)
		// Full: the next fits when the first three leave, a minute after t0.
		wantTake(t, c, t0+30*sec, "c0", rpm(5), 0, t0+windowMicros)
		wantTake(t, c, t0+windowMicros-1, "c1", rpm(5), 0, t0+windowMicros)
		for i := range 3 {
			wantTake(t, c, t0+windowMicros, "d"+string(rune('0'+i)), rpm(5), -1, 0)
		}
		// Full again: now the two of t0+30 s are the oldest.
		wantTake(t, c, t0+windowMicros, "e0", rpm(5), 0, t0+30*sec+windowMicros)
	})

	t.Run("tokens: admitted for the most, settled to what was used", func(t *testing.T) {
		c := newCounters(t)
		wantTake(t, c, t0, "run1", tpm(100, 60), -1, 0)
		wantTake(t, c, t0+sec, "run2", tpm(100, 50), 0, t0+windowMicros)
		if err := c.settle(ctx, t0+2*sec, "run1", tpm(100, 60), 20); err != nil {
			t.Fatal(err)
		}
		wantTake(t, c, t0+3*sec, "run2", tpm(100, 50), -1, 0) // 20 + 50
		wantTake(t, c, t0+4*sec, "run3", tpm(100, 31), 0, t0+windowMicros)
		// run1's 20 leave at t0 + 1 min, at the time it was admitted: then 31 fit.
		wantTake(t, c, t0+windowMicros, "run3", tpm(100, 31), -1, 0)
		// A run that failed used nothing.
		if err := c.settle(ctx, t0+windowMicros, "run3", tpm(100, 31), 0); err != nil {
			t.Fatal(err)
		}
		wantTake(t, c, t0+windowMicros, "run4", tpm(100, 50), -1, 0) // 50 (run2) + 50
		// More than the limit never fits.
		wantTake(t, c, t0+windowMicros, "big", tpm(100, 101), 0, 0)
		// Settling a run whose entry already left the window changes nothing.
		if err := c.settle(ctx, t0+5*windowMicros, "run2", tpm(100, 50), 99); err != nil {
			t.Fatal(err)
		}
		wantTake(t, c, t0+5*windowMicros, "run5", tpm(100, 100), -1, 0)
	})

	t.Run("a settled run may have used more than it was admitted for", func(t *testing.T) {
		c := newCounters(t)
		wantTake(t, c, t0, "run1", tpm(100, 10), -1, 0)
		if err := c.settle(ctx, t0, "run1", tpm(100, 10), 95); err != nil {
			t.Fatal(err)
		}
		wantTake(t, c, t0+sec, "run2", tpm(100, 10), 0, t0+windowMicros)
		wantTake(t, c, t0+sec, "run3", tpm(100, 5), -1, 0)
	})

	t.Run("all or none, and the refusal that lasts longest", func(t *testing.T) {
		c := newCounters(t)
		both := func(keyLimit, orgLimit int64) []ask {
			return []ask{
				{name: "key_rpm", key: "k:a:rpm", kind: requests, limit: keyLimit, n: 1},
				{name: "org_rpm", key: "o:a:rpm", kind: requests, limit: orgLimit, n: 1},
			}
		}
		wantTake(t, c, t0, "r1", both(3, 1), -1, 0)
		wantTake(t, c, t0+sec, "r2", both(3, 1), 1, t0+windowMicros)
		// The refused check recorded nothing on the key: two more fit there.
		wantTake(t, c, t0+sec, "r3", rpm(3), -1, 0)
		wantTake(t, c, t0+2*sec, "r4", rpm(3), -1, 0)
		// Now both are full; the key's last entry leaves latest (at t0+1s+1min,
		// since its oldest, at t0, is shared with the org's full window).
		wantTake(t, c, t0+3*sec, "r5", both(2, 1), 0, t0+sec+windowMicros)
		// Never beats any time.
		asks := append(both(3, 1), ask{name: "org_tpm", key: "o:a:tpm", kind: tokensWindow, limit: 10, n: 11})
		wantTake(t, c, t0+3*sec, "r6", asks, 2, 0)
	})

	t.Run("slots: runs in flight", func(t *testing.T) {
		c := newCounters(t)
		run := []ask{
			{name: "key_concurrent", key: "k:a:runs", kind: slots, limit: 2, n: 1},
			{name: "org_tpm", key: "o:a:tpm", kind: tokensWindow, limit: 1000, n: 10},
		}
		wantTake(t, c, t0, "run1", run, -1, 0)
		wantTake(t, c, t0, "run2", run, -1, 0)
		wantTake(t, c, t0, "run3", run, 0, t0+slotRetry.Microseconds())
		if err := c.settle(ctx, t0+sec, "run1", run, 3); err != nil {
			t.Fatal(err)
		}
		wantTake(t, c, t0+sec, "run3", run, -1, 0)
		wantTake(t, c, t0+sec, "run4", run, 0, t0+sec+slotRetry.Microseconds())
		// The refused run took no tokens: 3 + 10 + 10 are in the window, 977 fit.
		wantTake(t, c, t0+sec, "fill", []ask{{name: "org_tpm", key: "o:a:tpm", kind: tokensWindow, limit: 1000, n: 977}}, -1, 0)
		wantTake(t, c, t0+sec, "more", []ask{{name: "org_tpm", key: "o:a:tpm", kind: tokensWindow, limit: 1000, n: 1}}, 0, t0+windowMicros)
	})

	t.Run("the retry time of a long window", func(t *testing.T) {
		c := newCounters(t)
		for i := range int64(300) {
			wantTake(t, c, t0+i, fmt.Sprint("run", i), tpm(300, 1), -1, 0)
		}
		// 200 fit once the 200 oldest have left: the 200th (past Redis's first
		// page of 128) was admitted at t0 + 199 µs.
		wantTake(t, c, t0+sec, "big", tpm(300, 200), 0, t0+199+windowMicros)
	})

	t.Run("counters of different keys are apart", func(t *testing.T) {
		c := newCounters(t)
		wantTake(t, c, t0, "a", []ask{{name: "key_rpm", key: "k:one:rpm", kind: requests, limit: 1, n: 1}}, -1, 0)
		wantTake(t, c, t0, "b", []ask{{name: "key_rpm", key: "k:two:rpm", kind: requests, limit: 1, n: 1}}, -1, 0)
		wantTake(t, c, t0, "c", []ask{{name: "key_rpm", key: "k:one:rpm", kind: requests, limit: 1, n: 1}}, 0, t0+windowMicros)
	})
}
