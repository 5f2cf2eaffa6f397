package main

import (
	"fmt"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// Tests synchronize on events, never on sleeps: a fake upstream counts the
// requests it sees, the server reports each request it has finished
// (serveHooks.handled), and a test waits for the count it needs. eventGuard only
// turns an event that never comes into a failure instead of a hang; nothing is
// expected to take anywhere near it.
const eventGuard = 30 * time.Second

// tally counts events by name and lets a test wait until a count is reached.
// The zero tally is ready to use.
type tally struct {
	mu      sync.Mutex
	n       map[string]int
	changed chan struct{} // closed and replaced on every add
}

func (c *tally) add(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	c.n[name]++
	if c.changed != nil {
		close(c.changed)
		c.changed = nil
	}
}

func (c *tally) count(name string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[name]
}

// wait blocks until name has been counted at least n times.
func (c *tally) wait(t testing.TB, name string, n int) {
	t.Helper()
	guard := time.NewTimer(eventGuard)
	defer guard.Stop()
	for {
		c.mu.Lock()
		if c.n[name] >= n {
			c.mu.Unlock()
			return
		}
		if c.changed == nil {
			c.changed = make(chan struct{})
		}
		ch := c.changed
		c.mu.Unlock()
		select {
		case <-ch:
		case <-guard.C:
			t.Fatalf("waited %v for %d × %q, saw %d", eventGuard, n, name, c.count(name))
		}
	}
}

// handledHooks returns server hooks that count each finished request by path.
func handledHooks(done *tally) *serveHooks {
	return &serveHooks{handled: func(r *http.Request) { done.add(r.URL.Path) }}
}

// runPath is the path of an agent's run endpoint.
func runPath(agent string) string { return "/api/v3/agents/run-agents/" + agent + "/run" }

// await fails the test unless ch delivers within eventGuard.
func await[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(eventGuard):
		t.Fatalf("waited %v for %s", eventGuard, what)
		panic("unreachable")
	}
}

// agentdGoroutines returns the goroutines that run agentd's code or were started
// by it, by goroutine id ("goroutine 42"), with their stacks. Package main's own
// functions (the server's loops, the tests) are named main.* and not included.
func agentdGoroutines() map[string]string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	out := map[string]string{}
	for _, g := range strings.Split(string(buf), "\n\n") {
		head, _, _ := strings.Cut(g, " [")
		if strings.HasPrefix(head, "goroutine ") && strings.Contains(g, "github.com/agentd/agentd/") {
			out[head] = g
		}
	}
	return out
}

// checkNoGoroutinesLeft fails the test if a goroutine of agentd's that was not
// running at baseline (agentdGoroutines) is running now. Call it at a point where
// everything the test started has finished by an event (the server stopped, its
// handlers returned), so that whatever still runs was left behind.
func checkNoGoroutinesLeft(t *testing.T, baseline map[string]string) {
	t.Helper()
	var left []string
	for id, stack := range agentdGoroutines() {
		if _, ok := baseline[id]; !ok {
			left = append(left, stack)
		}
	}
	slices.Sort(left)
	if len(left) > 0 {
		t.Errorf("%d goroutines left behind:\n\n%s", len(left), strings.Join(left, "\n\n"))
	}
}

// waitTimers is clk.WaitTimers(n) within eventGuard.
func waitTimers(t testing.TB, clk interface{ WaitTimers(int) }, n int) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		clk.WaitTimers(n)
		close(done)
	}()
	await(t, done, fmt.Sprintf("%d timers armed on the fake clock", n))
}
