package bench

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// The load generator's tests run it on a fakeClock: time moves only when the
// test moves it, and requests end only when the test answers them, so what is
// measured is known exactly however slow the machine is.

type loadResult struct {
	res *Result
	err error
}

// startLoad runs a load test on clk in the background.
func startLoad(ctx context.Context, clk clock, client *http.Client, t Target, o LoadOptions) <-chan loadResult {
	done := make(chan loadResult, 1)
	go func() {
		res, err := load(ctx, clk, client, t, o)
		done <- loadResult{res, err}
	}()
	return done
}

// finish waits for a load test started by startLoad.
func finish(t *testing.T, done <-chan loadResult) *Result {
	t.Helper()
	var r loadResult
	select {
	case r = <-done:
	case <-stuck(t):
		t.Fatal("the load test is still running")
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	return r.res
}

func ms(n int) time.Duration { return time.Duration(n) * time.Millisecond }

func TestClosedLoopCounts(t *testing.T) {
	// Two workers, 10 ms of warm-up, then the window [10 ms, 30 ms). A request is
	// measured when it ends in the window; errors count, warm-up included; no
	// request starts once the window has closed.
	srv := newHeldServer(t)
	defer srv.Close()
	clk := newFakeClock(t)
	var starts, ends int
	var startedAt, endedAt time.Time
	done := startLoad(context.Background(), clk, NewClient(2, 0), Target{URL: srv.URL, Body: []byte(`{}`)}, LoadOptions{
		Concurrency: 2, Warmup: ms(10), Duration: ms(20),
		OnStart: func() { starts++; startedAt = clk.Now() },
		OnEnd:   func() { ends++; endedAt = clk.Now() },
	})
	a, b := srv.next(), srv.next() // both workers send at 0
	clk.set(at(ms(5)))
	a.answer(200) // ends at 5 ms, in the warm-up: not measured
	c := srv.next()
	b.answer(500) // a warm-up error: counted
	d := srv.next()
	clk.set(at(ms(15)))
	c.answer(200) // 5 → 15 ms: measured
	e := srv.next()
	clk.set(at(ms(20)))
	d.answer(200) // 5 → 20 ms: measured
	f := srv.next()
	e.answer(500) // an error in the window
	g := srv.next()
	clk.set(at(ms(30)))
	f.answer(200) // ends as the window closes: not measured
	g.answer(200)
	res := finish(t, done)

	if res.Requests != 2 || res.Latency.Count() != 2 || res.Latency.Min() != ms(10) || res.Latency.Max() != ms(15) {
		t.Errorf("%d requests measured, latencies %v–%v (%d); want 2, 10ms–15ms",
			res.Requests, res.Latency.Min(), res.Latency.Max(), res.Latency.Count())
	}
	if res.Errors["status 500"] != 2 || res.ErrorCount() != 2 || !strings.Contains(res.ErrorSample["status 500"], "boom") {
		t.Errorf("errors %v, samples %v; want the 2 500s", res.Errors, res.ErrorSample)
	}
	if res.Elapsed != ms(20) || res.Throughput() != 100 {
		t.Errorf("elapsed %v, throughput %v; want 20ms, 2 requests / 20 ms = 100/s", res.Elapsed, res.Throughput())
	}
	if n := len(srv.arrivals); n != 0 {
		t.Errorf("%d more requests after the window closed", n)
	}
	if starts != 1 || startedAt.Before(at(ms(10))) || ends != 1 || !endedAt.Equal(at(ms(30))) {
		t.Errorf("OnStart called %d times, at %v; OnEnd %d times, at %v; want once each, at 10 ms or later and at 30 ms",
			starts, startedAt.Sub(epoch), ends, endedAt.Sub(epoch))
	}
}

func TestLoadStopsWithItsContext(t *testing.T) {
	// Cut short at 40 ms of a 1 s window: what was measured so far is returned,
	// the request in flight is not an error, and OnEnd still runs.
	srv := newHeldServer(t)
	defer srv.Close()
	clk := newFakeClock(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ends := 0
	done := startLoad(ctx, clk, NewClient(1, 0), Target{URL: srv.URL}, LoadOptions{
		Concurrency: 1, Duration: time.Second, OnEnd: func() { ends++ },
	})
	a := srv.next()
	clk.set(at(ms(10)))
	a.answer(200)
	srv.next() // held until the load gives up on it
	clk.set(at(ms(40)))
	cancel()
	res := finish(t, done)
	if res.Requests != 1 || res.ErrorCount() != 0 || res.Elapsed != ms(40) || ends != 1 {
		t.Errorf("requests %d, errors %v, elapsed %v, OnEnd called %d times; want 1, none, 40ms, once",
			res.Requests, res.Errors, res.Elapsed, ends)
	}
}

func TestOpenLoopFollowsItsTimetable(t *testing.T) {
	// 200/s is a send every 5 ms: 10 in the 50 ms of warm-up, 40 in the 200 ms
	// window. The test moves the clock from one scheduled time to the next and
	// answers each request as it comes: every send waits for its time, and none
	// is dropped, late or left unmeasured.
	const interval = 5 * time.Millisecond
	warmup, duration := ms(50), ms(200)
	srv := newHeldServer(t)
	defer srv.Close()
	clk := newFakeClock(t)
	var starts, ends int
	done := startLoad(context.Background(), clk, NewClient(4, 0), Target{URL: srv.URL}, LoadOptions{
		Concurrency: 4, Rate: 200, Warmup: warmup, Duration: duration,
		OnStart: func() { starts++ }, OnEnd: func() { ends++ },
	})
	sent := 0
	for ; ; sent++ {
		when := at(time.Duration(sent) * interval)
		if !when.Before(at(warmup + duration)) {
			break
		}
		if sent > 0 { // the first is due at once
			sleepers := 1 // the dispatcher, waiting for this send's time
			if when.Equal(at(warmup)) {
				sleepers++ // and OnStart
			}
			clk.waitSleepers(when, sleepers)
			if n := len(srv.arrivals); n != 0 {
				t.Fatalf("%d requests came before %v, the time of send %d", n, when.Sub(epoch), sent)
			}
		}
		clk.set(when)
		srv.next().answer(200)
	}
	clk.set(at(warmup + duration))
	res := finish(t, done)
	if sent != 50 {
		t.Errorf("%d sends in 250 ms at 200/s, want 50", sent)
	}
	if res.Scheduled != 40 || res.Requests != 40 || res.Latency.Count() != 40 || res.Dropped != 0 || res.Late != 0 || res.ErrorCount() != 0 {
		t.Errorf("scheduled %d, requests %d (latencies %d), dropped %d, late %d, errors %v; want 40 scheduled and measured, none dropped, late or failed",
			res.Scheduled, res.Requests, res.Latency.Count(), res.Dropped, res.Late, res.Errors)
	}
	if res.Elapsed != duration || starts != 1 || ends != 1 {
		t.Errorf("elapsed %v, OnStart called %d times, OnEnd %d times", res.Elapsed, starts, ends)
	}
	if n := len(srv.arrivals); n != 0 {
		t.Errorf("%d requests off the timetable", n)
	}
}

func TestOpenLoopCountsFromTheTimetable(t *testing.T) {
	// One worker (and a backlog of one) asked for 100/s over 60 ms: sends are
	// scheduled at 0, 10, …, 50 ms. The test holds the requests so that sends
	// wait in the backlog (late), find it full (dropped), and their latency counts
	// from the scheduled time, not from when they were sent.
	srv := newHeldServer(t)
	defer srv.Close()
	clk := newFakeClock(t)
	var endedAt time.Time
	done := startLoad(context.Background(), clk, NewClient(1, 0), Target{URL: srv.URL}, LoadOptions{
		Concurrency: 1, Rate: 100, Duration: ms(60), OnEnd: func() { endedAt = clk.Now() },
	})
	a := srv.next() // scheduled at 0, sent at 0
	clk.waitSleepers(at(ms(10)), 1)
	clk.set(at(ms(10))) // the worker is busy: 10 waits in the backlog
	clk.waitSleepers(at(ms(20)), 1)
	clk.set(at(ms(20))) // the backlog is full: 20 is dropped
	clk.waitSleepers(at(ms(30)), 1)
	clk.set(at(ms(25)))
	a.answer(200)   // 0 → 25 ms
	b := srv.next() // 10, sent at 25 ms: late
	clk.set(at(ms(30)))
	clk.waitSleepers(at(ms(40)), 1) // 30 waits in the backlog
	clk.set(at(ms(40)))             // 40 is dropped
	clk.waitSleepers(at(ms(50)), 1)
	b.answer(200)   // 10 → 40 ms
	c := srv.next() // 30, sent at 40 ms: late
	clk.set(at(ms(50)))
	c.answer(200)   // 30 → 50 ms
	d := srv.next() // 50, sent at 50 ms: on time
	clk.set(at(ms(60)))
	d.answer(200) // 50 → 60 ms
	res := finish(t, done)

	if res.Scheduled != 6 || res.Dropped != 2 || res.Late != 2 || res.Requests != 4 || res.ErrorCount() != 0 {
		t.Errorf("scheduled %d, dropped %d, late %d, requests %d, errors %v; want 6, 2, 2, 4, none",
			res.Scheduled, res.Dropped, res.Late, res.Requests, res.Errors)
	}
	// From the scheduled time: 25, 30, 20 and 10 ms (sent to answered: 25, 15, 10, 10).
	if l := &res.Latency; l.Count() != 4 || l.Min() != ms(10) || l.Max() != ms(30) || l.Mean() != 21250*time.Microsecond {
		t.Errorf("latencies %v–%v, mean %v (%d); want 10ms–30ms, mean 21.25ms: counted from the scheduled times",
			l.Min(), l.Max(), l.Mean(), l.Count())
	}
	if res.Elapsed != ms(60) || !endedAt.Equal(at(ms(60))) {
		t.Errorf("elapsed %v, OnEnd at %v; want 60ms", res.Elapsed, endedAt.Sub(epoch))
	}
	if n := len(srv.arrivals); n != 0 {
		t.Errorf("%d more requests: dropped sends were sent", n)
	}
}

// scriptedTransport answers every request itself, with a reply read as it
// would come from a server that pauses before the headers and before each read:
// each pause moves the clock on, so the time each piece arrives is exact.
type scriptedTransport struct {
	clk      *fakeClock
	headers  time.Duration
	reads    []scriptedRead
	requests atomic.Int64
}

type scriptedRead struct {
	pause time.Duration
	data  []byte
}

func (s *scriptedTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	s.requests.Add(1)
	if r.Body != nil {
		io.Copy(io.Discard, r.Body)
		r.Body.Close()
	}
	s.clk.advance(s.headers)
	return &http.Response{
		Status: "200 OK", StatusCode: 200, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header:  http.Header{"Content-Type": eventType},
		Body:    &scriptedBody{s: s},
		Request: r, ContentLength: -1,
	}, nil
}

type scriptedBody struct {
	s    *scriptedTransport
	next int
	rest []byte
}

func (b *scriptedBody) Read(p []byte) (int, error) {
	if len(b.rest) == 0 {
		if b.next == len(b.s.reads) {
			return 0, io.EOF
		}
		r := b.s.reads[b.next]
		b.next++
		b.s.clk.advance(r.pause)
		b.rest = r.data
	}
	n := copy(p, b.rest)
	b.rest = b.rest[n:]
	return n, nil
}

func (b *scriptedBody) Close() error { return nil }

func TestLoadTTFB(t *testing.T) {
	// The upstream's stream of three pieces: headers after 5 ms, then the role
	// chunk (no content yet), the first piece 10 ms later, the others 20 ms apart.
	// Time to first byte is taken at the first piece, 15 ms; the whole request
	// takes 55 ms. A 120 ms window holds the first two requests.
	u := NewUpstream(UpstreamOptions{Tokens: 3})
	clk := newFakeClock(t)
	tr := &scriptedTransport{clk: clk, headers: ms(5), reads: []scriptedRead{
		{0, u.first},
		{ms(10), u.pieces[0]},
		{ms(20), u.pieces[1]},
		{ms(20), bytes.Join([][]byte{u.pieces[2], u.finish, u.usage, doneEvent}, nil)},
	}}
	res, err := load(context.Background(), clk, &http.Client{Transport: tr},
		Target{URL: "http://upstream.test/v1/chat/completions", Body: ChatBody("m", true), Stream: true},
		LoadOptions{Concurrency: 1, Duration: ms(120)})
	if err != nil {
		t.Fatal(err)
	}
	if res.ErrorCount() != 0 || res.Requests != 2 || tr.requests.Load() != 3 {
		t.Fatalf("requests %d of %d sent, errors %v; want 2 of 3 (the third ends after the window)", res.Requests, tr.requests.Load(), res.Errors)
	}
	if ttfb, whole := &res.TTFB, &res.Latency; ttfb.Count() != 2 || ttfb.Min() != ms(15) || ttfb.Max() != ms(15) || whole.Min() != ms(55) || whole.Max() != ms(55) {
		t.Errorf("ttfb %v–%v (%d), whole %v–%v; want 15ms at the first piece, 55ms to the end",
			ttfb.Min(), ttfb.Max(), ttfb.Count(), whole.Min(), whole.Max())
	}
}

func TestSendStreamErrors(t *testing.T) {
	tests := []struct {
		name, body, want string
	}{
		{"complete", "data: {\"text\":\"hi\"}\n\ndata: [DONE]\n\n", ""},
		{"no [DONE]", "data: {\"text\":\"hi\"}\n\n", "stream: no [DONE]"},
		{"error event", "event: delta\ndata: {\"text\":\"hi\"}\n\nevent: error\ndata: {\"detail\":\"x\"}\n\ndata: [DONE]\n\n", "stream: error event"},
		{"no content", "data: {\"choices\":[{\"delta\":{\"content\":\"\"}}]}\n\ndata: [DONE]\n\n", "stream: no content"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/event-stream")
				w.Write([]byte(tc.body))
			}))
			defer srv.Close()
			s := Send(context.Background(), http.DefaultClient, &Target{URL: srv.URL, Stream: true}, http.Header{}, nil)
			if s.Err != tc.want {
				t.Errorf("error %q (%s), want %q", s.Err, s.Detail, tc.want)
			}
		})
	}
}

func TestHasContent(t *testing.T) {
	tests := []struct {
		data string
		want bool
	}{
		{`{"choices":[{"delta":{"role":"assistant","content":"","refusal":null}}]}`, false},
		{`{"choices":[{"delta":{"content":"Hello"}}]}`, true},
		{`{"choices":[{"delta":{"content": "Hello"}}]}`, true},
		{`{"text":"Hi","choices":[{"index":0,"delta":{"text":"Hi"}}]}`, true},
		{`{"choices":[],"usage":{"prompt_tokens":1}}`, false},
		{`{"choices":[{"delta":{"content":null}}]}`, false},
	}
	for _, tc := range tests {
		if got := hasContent([]byte(tc.data)); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.data, got, tc.want)
		}
	}
}

func TestWorkerHeader(t *testing.T) {
	// Each worker sends at once, with its own headers; the clock stands still
	// while the test holds their first requests, then closes the window.
	srv := newHeldServer(t)
	defer srv.Close()
	clk := newFakeClock(t)
	done := startLoad(context.Background(), clk, NewClient(3, 0), Target{
		URL: srv.URL, Header: http.Header{"Authorization": {"Bearer k"}},
		WorkerHeader: func(w int, h http.Header) { h.Set("X-Session-ID", string(rune('a'+w))) },
	}, LoadOptions{Concurrency: 3, Duration: ms(100)})
	seen := map[string]bool{}
	var held []*heldRequest
	for range 3 {
		r := srv.next()
		seen[r.Header.Get("X-Session-ID")+"|"+r.Header.Get("Authorization")] = true
		held = append(held, r)
	}
	clk.set(at(ms(100)))
	for _, r := range held {
		r.answer(200)
	}
	finish(t, done)
	if len(seen) != 3 || !seen["a|Bearer k"] || !seen["b|Bearer k"] || !seen["c|Bearer k"] {
		t.Errorf("headers seen: %v", seen)
	}
	if n := len(srv.arrivals); n != 0 {
		t.Errorf("%d more requests after the window closed", n)
	}
}
