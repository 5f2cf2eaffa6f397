package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// Target is the request a load test sends, again and again.
type Target struct {
	Method string // default POST
	URL    string
	Header http.Header
	Body   []byte
	// Stream says the reply is an event stream: the request succeeds only when
	// the stream ends with "data: [DONE]" and carries no "event: error", and its
	// time to first byte (TTFB) is taken at the first data line carrying content.
	Stream bool
	// KeepBody keeps a successful reply's body in its Sample (not for streams).
	KeepBody bool
	// WorkerHeader, when set, adds a worker's own headers (an X-Session-ID of
	// its own, say) to its copy of Header.
	WorkerHeader func(worker int, h http.Header)
}

// LoadOptions shape a load test.
type LoadOptions struct {
	// Concurrency is the number of workers: closed loop, each sends as soon as
	// its previous request is answered; open loop, the most requests in flight.
	Concurrency int
	// Rate, when > 0, makes the test open loop: requests are scheduled on a fixed
	// timetable of Rate per second and their latency counts from the scheduled
	// time, so a stalled server cannot hide its stall by slowing the sender
	// (coordinated omission). A send that finds every worker busy waits in a
	// backlog of Concurrency; when that is full too, it is dropped.
	Rate float64
	// Warmup runs before the measured Duration; its requests are not measured
	// (their errors are counted).
	Warmup, Duration time.Duration
	// OnStart and OnEnd, when set, are called as the measured window opens and
	// closes (to sample /proc, say).
	OnStart, OnEnd func()
}

// Result is what a load test measured over its window.
type Result struct {
	Requests int64         // successful requests in the window
	Elapsed  time.Duration // the window
	Latency  Histogram     // successful requests; open loop: from their scheduled time
	TTFB     Histogram     // streams: time to the first data line carrying content
	// Errors counts failed requests by kind ("status 500", "reset", "eof",
	// "timeout", "stream: no [DONE]", …), warm-up included.
	Errors map[string]int64
	// ErrorSample is one error message of each kind, for the log.
	ErrorSample map[string]string
	// Open loop: sends scheduled in the window, dropped (backlog full), and sent
	// more than a millisecond after their scheduled time.
	Scheduled, Dropped, Late int64
}

// Throughput is successful requests per second over the window.
func (r *Result) Throughput() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Requests) / r.Elapsed.Seconds()
}

// ErrorCount is the number of failed requests.
func (r *Result) ErrorCount() int64 {
	var n int64
	for _, c := range r.Errors {
		n += c
	}
	return n
}

// lateAfter is how far behind its timetable an open-loop send may start before
// it counts as late.
const lateAfter = time.Millisecond

// NewClient returns an HTTP/1.1 client for concurrency workers: it keeps an idle
// keep-alive connection for every one of them and gives up on a request after
// timeout (none if 0).
func NewClient(concurrency int, timeout time.Duration) *http.Client {
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        max(concurrency, 2),
		MaxIdleConnsPerHost: max(concurrency, 2),
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
	}
	return &http.Client{Transport: tr, Timeout: timeout}
}

// worker is one sender's state: its own headers, reader and measurements.
type worker struct {
	header http.Header
	br     *bufio.Reader
	res    Result
}

func newWorker(t *Target, i int) *worker {
	w := &worker{header: t.Header.Clone(), res: Result{Errors: map[string]int64{}, ErrorSample: map[string]string{}}}
	if w.header == nil {
		w.header = http.Header{}
	}
	if t.WorkerHeader != nil {
		t.WorkerHeader(i, w.header)
	}
	if t.Stream {
		w.br = bufio.NewReaderSize(nil, 16<<10)
	}
	return w
}

// clock is a load test's time: the machine's (wallClock), or a test's.
type clock interface {
	Now() time.Time
	// SleepUntil returns once t has come (at once if it has), or when ctx is done.
	SleepUntil(ctx context.Context, t time.Time)
}

// wallClock is the machine's clock.
type wallClock struct{}

func (wallClock) Now() time.Time { return time.Now() }

func (wallClock) SleepUntil(ctx context.Context, t time.Time) {
	d := time.Until(t)
	if d <= 0 {
		return
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
	case <-ctx.Done():
	}
}

// Load runs a load test of t through client: closed loop, or open loop when
// o.Rate > 0. It returns early, with what it measured so far, when ctx is done.
func Load(ctx context.Context, client *http.Client, t Target, o LoadOptions) (*Result, error) {
	return load(ctx, wallClock{}, client, t, o)
}

// load is Load on clock clk.
func load(ctx context.Context, clk clock, client *http.Client, t Target, o LoadOptions) (*Result, error) {
	if o.Concurrency < 1 {
		return nil, fmt.Errorf("load: concurrency %d: want at least 1", o.Concurrency)
	}
	if o.Duration <= 0 {
		return nil, fmt.Errorf("load: duration %v: want more than 0", o.Duration)
	}
	if t.Method == "" {
		t.Method = http.MethodPost
	}
	workers := make([]*worker, o.Concurrency)
	for i := range workers {
		workers[i] = newWorker(&t, i)
	}
	start := clk.Now()
	win := window{start: start.Add(o.Warmup)}
	win.end = win.start.Add(o.Duration)

	// The window's callbacks run on their own timers, on time even when every
	// worker is blocked on a slow request.
	var cb sync.WaitGroup
	runAt := func(at time.Time, f func()) {
		if f == nil {
			return
		}
		cb.Add(1)
		go func() {
			defer cb.Done()
			clk.SleepUntil(ctx, at)
			f()
		}()
	}
	runAt(win.start, o.OnStart)
	runAt(win.end, o.OnEnd)

	var open openLoop
	if o.Rate > 0 {
		open.run(ctx, clk, client, &t, workers, o.Rate, start, win)
	} else {
		closedLoop(ctx, clk, client, &t, workers, win)
	}
	cb.Wait()

	res := &Result{Errors: map[string]int64{}, ErrorSample: map[string]string{}, Scheduled: open.scheduled, Dropped: open.dropped}
	res.Elapsed = o.Duration
	if now := clk.Now(); now.Before(win.end) { // cut short by ctx
		res.Elapsed = max(now.Sub(win.start), 0)
	}
	for _, w := range workers {
		res.Requests += w.res.Requests
		res.Late += w.res.Late
		res.Latency.Merge(&w.res.Latency)
		res.TTFB.Merge(&w.res.TTFB)
		for k, n := range w.res.Errors {
			res.Errors[k] += n
			if _, ok := res.ErrorSample[k]; !ok {
				res.ErrorSample[k] = w.res.ErrorSample[k]
			}
		}
	}
	return res, nil
}

// window is the measured interval [start, end).
type window struct{ start, end time.Time }

func (w window) holds(t time.Time) bool { return !t.Before(w.start) && t.Before(w.end) }

// closedLoop: every worker sends until the window closes; requests answered
// within the window are measured.
func closedLoop(ctx context.Context, clk clock, client *http.Client, t *Target, workers []*worker, win window) {
	var wg sync.WaitGroup
	for _, w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				begin := clk.Now()
				if !begin.Before(win.end) {
					return
				}
				s := send(ctx, clk, client, t, w.header, w.br)
				end := begin.Add(s.Latency)
				w.res.add(s, win.holds(end), s.Latency)
			}
		}()
	}
	wg.Wait()
}

// openLoop: a dispatcher walks the timetable; workers take scheduled times from
// a backlog and measure each request from its scheduled time.
type openLoop struct {
	scheduled, dropped int64
}

func (l *openLoop) run(ctx context.Context, clk clock, client *http.Client, t *Target, workers []*worker, rate float64, start time.Time, win window) {
	backlog := make(chan time.Time, len(workers))
	var wg sync.WaitGroup
	for _, w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for at := range backlog {
				begin := clk.Now()
				measured := win.holds(at)
				if measured && begin.Sub(at) > lateAfter {
					w.res.Late++
				}
				s := send(ctx, clk, client, t, w.header, w.br)
				w.res.add(s, measured, begin.Add(s.Latency).Sub(at))
			}
		}()
	}
	interval := float64(time.Second) / rate
	for i := 0; ctx.Err() == nil; i++ {
		at := start.Add(time.Duration(float64(i) * interval))
		if !at.Before(win.end) {
			break
		}
		clk.SleepUntil(ctx, at)
		measured := win.holds(at)
		if measured {
			l.scheduled++
		}
		select {
		case backlog <- at:
		default:
			if measured {
				l.dropped++
			}
		}
	}
	close(backlog)
	wg.Wait()
}

// add records one request: its errors always, its latency when measured.
func (r *Result) add(s Sample, measured bool, latency time.Duration) {
	if s.Err != "" {
		if s.Err == errCancelled {
			return
		}
		r.Errors[s.Err]++
		if _, ok := r.ErrorSample[s.Err]; !ok {
			r.ErrorSample[s.Err] = s.Detail
		}
		return
	}
	if !measured {
		return
	}
	r.Requests++
	r.Latency.Record(latency)
	if s.TTFB > 0 {
		r.TTFB.Record(s.TTFB + latency - s.Latency) // open loop: from the scheduled time too
	}
}

// Sample is one request's outcome.
type Sample struct {
	Latency time.Duration // from sending to the end of the reply
	TTFB    time.Duration // streams: to the first data line carrying content
	Status  int
	Err     string // "" when the request succeeded; else its kind
	Detail  string // the error's message
	Body    []byte // with Target.KeepBody: the reply
}

// errCancelled marks a request cut by the end of the test, not by the server.
const errCancelled = "cancelled"

// Send sends one request of t with header h and reads its whole reply. br, for
// streams, is a reader to reuse (nil: a new one).
func Send(ctx context.Context, client *http.Client, t *Target, h http.Header, br *bufio.Reader) Sample {
	if t.Method == "" {
		tt := *t
		tt.Method = http.MethodPost
		t = &tt
	}
	return send(ctx, wallClock{}, client, t, h, br)
}

func send(ctx context.Context, clk clock, client *http.Client, t *Target, h http.Header, br *bufio.Reader) (s Sample) {
	var body io.Reader = http.NoBody
	if t.Body != nil {
		body = bytes.NewReader(t.Body)
	}
	req, err := http.NewRequestWithContext(ctx, t.Method, t.URL, body)
	if err != nil {
		return Sample{Err: "request", Detail: err.Error()}
	}
	req.Header = h
	start := clk.Now()
	defer func() {
		s.Latency = clk.Now().Sub(start)
		if s.Err != "" && ctx.Err() != nil {
			s.Err = errCancelled
		}
	}()
	resp, err := client.Do(req)
	if err != nil {
		return Sample{Err: errorKind(err), Detail: err.Error()}
	}
	defer resp.Body.Close()
	s.Status = resp.StatusCode
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		io.Copy(io.Discard, resp.Body)
		s.Err, s.Detail = "status "+strconv.Itoa(resp.StatusCode), string(b)
		return s
	}
	if t.KeepBody && !t.Stream {
		var err error
		if s.Body, err = io.ReadAll(resp.Body); err != nil {
			s.Err, s.Detail = errorKind(err), err.Error()
		}
		return s
	}
	if !t.Stream {
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			s.Err, s.Detail = errorKind(err), err.Error()
		}
		return s
	}
	if br == nil {
		br = bufio.NewReaderSize(resp.Body, 16<<10)
	} else {
		br.Reset(resp.Body)
	}
	defer br.Reset(nil)
	done, errorEvent := false, false
	for {
		line, err := br.ReadSlice('\n')
		switch {
		case bytes.HasPrefix(line, []byte("data:")):
			data := bytes.TrimSpace(line[5:])
			if bytes.Equal(data, []byte("[DONE]")) {
				done = true
			} else if s.TTFB == 0 && hasContent(data) {
				s.TTFB = clk.Now().Sub(start)
			}
		case bytes.HasPrefix(line, []byte("event: error")), bytes.HasPrefix(line, []byte("event:error")):
			errorEvent = true
		}
		if err == bufio.ErrBufferFull {
			continue // a long line: its head was looked at, skip the rest
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			s.Err, s.Detail = errorKind(err), err.Error()
			return s
		}
	}
	switch {
	case errorEvent:
		s.Err, s.Detail = "stream: error event", "the stream carried an error event"
	case !done:
		s.Err, s.Detail = "stream: no [DONE]", "the stream ended without data: [DONE]"
	case s.TTFB == 0:
		s.Err, s.Detail = "stream: no content", "no data line carried content"
	}
	return s
}

// hasContent reports whether an event's data has a non-empty "content" or
// "text" string: OpenAI's chunks carry the reply in choices[].delta.content
// (the first one has "content":""), agentd's run stream in "text".
func hasContent(data []byte) bool {
	for _, key := range [][]byte{[]byte(`"content":`), []byte(`"text":`)} {
		b := data
		for {
			i := bytes.Index(b, key)
			if i < 0 {
				break
			}
			b = bytes.TrimLeft(b[i+len(key):], " ")
			if len(b) >= 2 && b[0] == '"' && b[1] != '"' {
				return true
			}
		}
	}
	return false
}

// errorKind names a transport error's kind.
func errorKind(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNRESET):
		return "reset"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return "eof"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded),
		errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, syscall.EPIPE):
		return "broken pipe"
	}
	return "transport"
}
