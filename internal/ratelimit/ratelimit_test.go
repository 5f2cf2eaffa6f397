package ratelimit_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/internal/clock/clocktest"
	"github.com/agentd/agentd/internal/ratelimit"
)

func ptr[T any](v T) *T { return &v }

func principal(key, org string) *agentd.Principal {
	return &agentd.Principal{KeyID: key, OrgID: org, Scopes: []agentd.Scope{agentd.ScopeRun}}
}

func newLimiter(t *testing.T, o ratelimit.Options) *ratelimit.Limiter {
	t.Helper()
	l, err := ratelimit.New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// rateError checks that err is a 429 naming limit with its value, and returns
// its Retry-After (0: none).
func rateError(t *testing.T, err error, limit string, value int64) int {
	t.Helper()
	var e *agentd.Error
	if !errors.As(err, &e) || e.Code != agentd.ERateLimited {
		t.Fatalf("err = %v, want %s", err, agentd.ERateLimited)
	}
	if e.Fields["limit"] != limit || e.Fields["limit_value"] != value {
		t.Fatalf("err fields = %v, want limit %s, limit_value %d", e.Fields, limit, value)
	}
	if !strings.Contains(e.Message, limit) {
		t.Errorf("message %q does not name %s", e.Message, limit)
	}
	ra, _ := e.Fields["retry_after"].(int)
	return ra
}

// burst sends n requests of p at once and returns how many were admitted; every
// refusal must be limit's.
func burst(t *testing.T, ls []*ratelimit.Limiter, p *agentd.Principal, n int, limit string) int {
	t.Helper()
	var ok atomic.Int64
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			err := ls[i%len(ls)].Request(context.Background(), p)
			var e *agentd.Error
			switch {
			case err == nil:
				ok.Add(1)
			case errors.As(err, &e) && e.Fields["limit"] == limit:
			default:
				t.Errorf("request %d: %v, want nil or %s", i, err, limit)
			}
		})
	}
	wg.Wait()
	return int(ok.Load())
}

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// TestRequests: requests per minute of a key and of its organization, exactly,
// with the limit's name and the seconds until the next request fits.
func TestRequests(t *testing.T) {
	clk := clocktest.New(t0)
	l := newLimiter(t, ratelimit.Options{Key: ratelimit.Limits{RPM: 3}, Org: ratelimit.Limits{RPM: 5}, Clock: clk})
	ls := []*ratelimit.Limiter{l}
	a, b := principal("key-a", "org-1"), principal("key-b", "org-1")
	ctx := context.Background()

	if got := burst(t, ls, a, 20, "key_rpm"); got != 3 {
		t.Fatalf("%d of 20 requests of key a admitted, want 3", got)
	}
	if ra := rateError(t, l.Request(ctx, a), "key_rpm", 3); ra != 60 {
		t.Errorf("Retry-After %d, want 60", ra)
	}
	// The organization has 2 left: key b gets them, then the organization's limit.
	if got := burst(t, ls, b, 20, "org_rpm"); got != 2 {
		t.Fatalf("%d of 20 requests of key b admitted, want 2 (the organization's 5 less key a's 3)", got)
	}
	clk.Advance(59*time.Second + 500*time.Millisecond)
	if ra := rateError(t, l.Request(ctx, b), "org_rpm", 5); ra != 1 {
		t.Errorf("Retry-After %d half a second before the window moves, want 1", ra)
	}
	clk.Advance(500 * time.Millisecond)
	if got := burst(t, ls, a, 20, "key_rpm"); got != 3 {
		t.Fatalf("a minute later, %d of 20 requests of key a admitted, want 3", got)
	}

	t.Run("a key's own limits", func(t *testing.T) {
		unlimited := principal("key-c", "org-2")
		unlimited.RateLimits.RPM = ptr(int64(0))
		one := principal("key-d", "org-2")
		one.RateLimits.RPM = ptr(int64(1))
		l := newLimiter(t, ratelimit.Options{Key: ratelimit.Limits{RPM: 3}, Clock: clk})
		if got := burst(t, []*ratelimit.Limiter{l}, unlimited, 50, "key_rpm"); got != 50 {
			t.Errorf("a key with rpm 0 (unlimited): %d of 50 admitted", got)
		}
		if got := burst(t, []*ratelimit.Limiter{l}, one, 50, "key_rpm"); got != 1 {
			t.Errorf("a key with rpm 1: %d of 50 admitted", got)
		}
		k, _ := l.Limits(one)
		if k.RPM != 1 {
			t.Errorf("Limits = %+v", k)
		}
	})
}

// TestRuns: tokens per minute are admitted for the most a run may use and
// settled to what it used; slots of runs in flight come back when a run ends,
// once, however it ends.
func TestRuns(t *testing.T) {
	clk := clocktest.New(t0)
	ctx := context.Background()
	p := principal("key-a", "org-1")

	t.Run("tokens", func(t *testing.T) {
		l := newLimiter(t, ratelimit.Options{Key: ratelimit.Limits{TPM: 1000}, Clock: clk})
		run1, err := l.Admit(ctx, p, 600)
		if err != nil {
			t.Fatal(err)
		}
		_, err = l.Admit(ctx, p, 500) // 1100: over
		if ra := rateError(t, err, "key_tpm", 1000); ra != 60 {
			t.Errorf("Retry-After %d, want 60", ra)
		}
		run1.Done(150)
		run1.Done(0) // only the first call counts

		run2, err := l.Admit(ctx, p, 500) // 150 + 500
		if err != nil {
			t.Fatalf("after run 1 settled at 150: %v", err)
		}
		_, err = l.Admit(ctx, p, 351) // 150 + 500 + 351
		rateError(t, err, "key_tpm", 1000)
		run2.Done(0)             // it failed: it used nothing
		clk.Advance(time.Minute) // run 1's 150 leave
		if _, err := l.Admit(ctx, p, 1000); err != nil {
			t.Fatalf("a whole minute: %v", err)
		}
		_, err = l.Admit(ctx, p, 1001)
		var e *agentd.Error
		if rateError(t, err, "key_tpm", 1000) != 0 || !errors.As(err, &e) || e.Fields["requested"] != int64(1001) {
			t.Errorf("a run larger than the limit: %v %v, want no Retry-After (it never fits)", err, e.Fields)
		}
	})

	t.Run("slots", func(t *testing.T) {
		l := newLimiter(t, ratelimit.Options{Key: ratelimit.Limits{Concurrent: 3}, Org: ratelimit.Limits{Concurrent: 4}, Clock: clk})
		var permits []*ratelimit.Permit
		var mu sync.Mutex
		var wg sync.WaitGroup
		for range 20 {
			wg.Go(func() {
				pm, err := l.Admit(ctx, p, 10)
				if err == nil {
					mu.Lock()
					permits = append(permits, pm)
					mu.Unlock()
				} else {
					rateError(t, err, "key_concurrent", 3)
				}
			})
		}
		wg.Wait()
		if len(permits) != 3 {
			t.Fatalf("%d of 20 runs admitted, want 3", len(permits))
		}
		other := principal("key-b", "org-1")
		pm, err := l.Admit(ctx, other, 10)
		if err != nil {
			t.Fatal(err)
		}
		_, err = l.Admit(ctx, other, 10)
		if ra := rateError(t, err, "org_concurrent", 4); ra != 1 {
			t.Errorf("Retry-After %d, want 1", ra)
		}
		pm.Done(5)
		pm.Done(5) // once
		permits[0].Done(0)
		for range 2 {
			if _, err := l.Admit(ctx, other, 10); err != nil {
				t.Fatalf("after two runs ended: %v", err)
			}
		}
		_, err = l.Admit(ctx, other, 10)
		rateError(t, err, "org_concurrent", 4)
	})

	t.Run("no limits", func(t *testing.T) {
		l := newLimiter(t, ratelimit.Options{Clock: clk})
		pm, err := l.Admit(ctx, p, 1<<40)
		if err != nil || pm != nil {
			t.Fatalf("Admit without limits = %v, %v", pm, err)
		}
		pm.Done(1) // a nil permit is valid
		if err := l.Request(ctx, p); err != nil {
			t.Fatal(err)
		}
	})
}

// ---------------------------------------------------------------------------
// Redis

func testRedisURL(t *testing.T) string {
	t.Helper()
	v := os.Getenv("AGENTD_TEST_REDIS")
	if v == "" {
		t.Skip("AGENTD_TEST_REDIS is not set: skipping the Redis test (set it to a server such as 127.0.0.1:6379)")
	}
	if !strings.Contains(v, "://") {
		v = "redis://" + v
	}
	return v
}

func uniquePrefix() string {
	return fmt.Sprintf("agentd:test:%d:%d:", time.Now().UnixNano(), os.Getpid())
}

// TestSharedByReplicas: three limiters (three replicas) on one Redis admit
// exactly the limit between them, requests and runs alike.
func TestSharedByReplicas(t *testing.T) {
	url := testRedisURL(t)
	clk := clocktest.New(t0)
	prefix := uniquePrefix()
	var ls []*ratelimit.Limiter
	for range 3 {
		ls = append(ls, newLimiter(t, ratelimit.Options{Key: ratelimit.Limits{RPM: 7, Concurrent: 4}, Redis: url, Prefix: prefix, Clock: clk}))
	}
	p := principal("key-a", "org-1")
	if got := burst(t, ls, p, 60, "key_rpm"); got != 7 {
		t.Fatalf("%d of 60 requests across 3 replicas admitted, want 7", got)
	}
	clk.Advance(time.Minute)
	if got := burst(t, ls, p, 60, "key_rpm"); got != 7 {
		t.Fatalf("a minute later, %d of 60 admitted, want 7", got)
	}

	var mu sync.Mutex
	var permits []*ratelimit.Permit
	var wg sync.WaitGroup
	for i := range 30 {
		wg.Go(func() {
			pm, err := ls[i%3].Admit(context.Background(), p, 10)
			if err != nil {
				rateError(t, err, "key_concurrent", 4)
				return
			}
			mu.Lock()
			permits = append(permits, pm)
			mu.Unlock()
		})
	}
	wg.Wait()
	if len(permits) != 4 {
		t.Fatalf("%d of 30 runs across 3 replicas admitted, want 4", len(permits))
	}
	permits[0].Done(1) // a run admitted by one replica ends: another may start one
	if _, err := ls[2].Admit(context.Background(), p, 10); err != nil {
		t.Fatal(err)
	}
	for _, l := range ls {
		if l.Degraded() || l.Transitions() != 0 || !l.Shared() {
			t.Errorf("degraded %v, transitions %d, shared %v", l.Degraded(), l.Transitions(), l.Shared())
		}
	}
}

// redisServer is a redis-server process of a test's own, to stop and start.
type redisServer struct {
	port int
	cmd  *exec.Cmd
	done chan struct{}
}

// startRedis starts redis-server on port (0: a free one) without persistence and
// returns once it accepts connections, as it says on its output.
func startRedis(t *testing.T, port int) *redisServer {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("no redis-server in PATH: skipping the test that stops Redis")
	}
	if port == 0 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port = ln.Addr().(*net.TCPAddr).Port
		ln.Close()
	}
	cmd := exec.Command(bin, "--port", fmt.Sprint(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--loglevel", "notice")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &redisServer{port: port, cmd: cmd, done: make(chan struct{})}
	var log bytes.Buffer
	sc := bufio.NewScanner(out)
	ready := false
	for sc.Scan() {
		log.WriteString(sc.Text() + "\n")
		if strings.Contains(sc.Text(), "Ready to accept connections") {
			ready = true
			break
		}
	}
	go func() {
		for sc.Scan() {
		}
		cmd.Wait()
		close(s.done)
	}()
	if !ready {
		s.stop()
		t.Fatalf("redis-server on port %d did not start:\n%s", port, log.String())
	}
	t.Cleanup(s.stop)
	return s
}

// stop kills the server and waits until it has exited.
func (s *redisServer) stop() {
	s.cmd.Process.Kill()
	<-s.done
}

// syncBuffer is a log that goroutines write and a test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// TestRedisStops: with Redis stopped mid-test, requests are still served and
// each replica limits alone, from its memory, with one log line; when Redis is
// back, the first request after the retry interval finds it, with one log line,
// and the limits are shared again.
func TestRedisStops(t *testing.T) {
	testRedisURL(t) // the Redis tests run together
	srv := startRedis(t, 0)
	clk := clocktest.New(t0)
	var logs syncBuffer
	o := ratelimit.Options{
		Key: ratelimit.Limits{RPM: 3, Concurrent: 1}, Redis: fmt.Sprintf("redis://127.0.0.1:%d/0", srv.port), Clock: clk,
		Log: slog.New(slog.NewTextHandler(&logs, nil)), Retry: time.Second,
	}
	a, b := newLimiter(t, o), newLimiter(t, o) // two replicas
	p := principal("key-a", "org-1")
	ctx := context.Background()
	if got := burst(t, []*ratelimit.Limiter{a, b}, p, 10, "key_rpm"); got != 3 {
		t.Fatalf("shared: %d of 10 admitted, want 3", got)
	}
	run, err := a.Admit(ctx, p, 10) // a run in flight when Redis goes
	if err != nil {
		t.Fatal(err)
	}

	srv.stop()
	// Every request is served: a's first finds Redis gone; a then limits alone,
	// from a fresh memory, and so does b.
	if err := a.Request(ctx, p); err != nil {
		t.Fatalf("first request with Redis down: %v", err)
	}
	if !a.Degraded() || a.Transitions() != 1 {
		t.Fatalf("degraded %v, transitions %d; want true, 1", a.Degraded(), a.Transitions())
	}
	if got := burst(t, []*ratelimit.Limiter{a}, p, 10, "key_rpm"); got != 2 {
		t.Errorf("replica a alone: %d of 10 more admitted, want 2 (its own limit of 3)", got)
	}
	if got := burst(t, []*ratelimit.Limiter{b}, p, 10, "key_rpm"); got != 3 {
		t.Errorf("replica b alone: %d of 10 admitted, want 3", got)
	}
	if !b.Degraded() || b.Transitions() != 1 {
		t.Errorf("b: degraded %v, transitions %d", b.Degraded(), b.Transitions())
	}
	run.Done(10) // its slot was in Redis: it expires there
	pm, err := a.Admit(ctx, p, 10)
	if err != nil {
		t.Fatalf("a run with Redis down: %v", err)
	}
	_, err = a.Admit(ctx, p, 10)
	rateError(t, err, "key_concurrent", 1)
	pm.Done(10)
	if _, err := a.Admit(ctx, p, 10); err != nil {
		t.Fatalf("after the local run ended: %v", err)
	}
	if n := strings.Count(logs.String(), "Redis failed"); n != 2 { // one line per replica
		t.Errorf("%d log lines saying Redis failed, want one per replica:\n%s", n, logs.String())
	}

	// Redis is back (empty: no persistence). Until the retry interval has
	// passed, the replicas keep their own counts; then the next request finds it.
	startRedis(t, srv.port)
	rateError(t, a.Request(ctx, p), "key_rpm", 3)
	if !a.Degraded() {
		t.Error("a found Redis before the retry interval")
	}
	clk.Advance(time.Second)
	if err := a.Request(ctx, p); err != nil {
		t.Fatalf("first request with Redis back: %v", err)
	}
	if a.Degraded() || a.Transitions() != 2 {
		t.Fatalf("degraded %v, transitions %d; want false, 2", a.Degraded(), a.Transitions())
	}
	if got := burst(t, []*ratelimit.Limiter{a, b}, p, 10, "key_rpm"); got != 2 {
		t.Errorf("shared again: %d of 10 admitted, want 2", got)
	}
	if b.Degraded() || b.Transitions() != 2 {
		t.Errorf("b: degraded %v, transitions %d; want false, 2", b.Degraded(), b.Transitions())
	}
	if n := strings.Count(logs.String(), "Redis answers again"); n != 2 {
		t.Errorf("%d log lines saying Redis is back, want one per replica:\n%s", n, logs.String())
	}
}
