package llmtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentd/agentd/internal/llm"
)

// Recording is one upstream reply as the provider sends it.
type Recording struct {
	Status int         // 0 means 200
	Header http.Header // Content-Type at least
	Body   []byte
}

// Wire is an adapter under test and the recorded wire format of its provider.
type Wire struct {
	// New returns the adapter talking to baseURL (the httptest server's URL, no
	// trailing slash) with API key "test-key" and no retries of its own.
	New func(baseURL string) llm.Provider
	// Path is the URL path the adapter must post to.
	Path string
	// CheckRequest checks provider-specific parts of a request: authentication,
	// headers, and for streams whatever asks for usage. stream says whether the
	// call was Stream.
	CheckRequest func(r *http.Request, body []byte, stream bool) error
	// Decode maps a request body back to the neutral request it encodes, and
	// reports whether it asked for a stream.
	Decode func(body []byte) (req *llm.Request, stream bool, err error)

	// Complete and Stream answer Text with Usage (event streams with LF line ends:
	// the suite cuts them at blank lines); StreamNoUsage answers Text with
	// no usage (nil Body if the provider always reports usage).
	Complete, Stream, StreamNoUsage Recording
	// StreamError is a stream that fails in-band after some text (nil Body if the
	// provider has no in-band errors); its error must be of kind StreamErrorKind.
	StreamError     Recording
	StreamErrorKind llm.Kind
	// Errors are error replies by status; each must yield an *llm.Error with that
	// status and the kind the suite expects of it (429/5xx retryable, other 4xx
	// permanent).
	Errors map[int]Recording
	// ContextTooLong is the reply to a prompt over the model's window.
	ContextTooLong Recording
	// Exhausted, if the provider has one, is the reply of an account out of quota.
	Exhausted Recording

	Text  string
	Usage llm.Usage // Source "provider"
	Model string    // the model name the recordings report
	// Finish is the finish reason of Complete and Stream (normally "stop").
	Finish string

	// ToolComplete and ToolStream answer ToolRequest with the calls ToolCalls
	// (two, in parallel; the arguments as the model sent them), ToolText
	// before them (often ""), finish reason "tool_calls" and usage ToolUsage.
	// The stream sends each call's arguments in several deltas.
	ToolComplete, ToolStream Recording
	ToolText                 string
	ToolCalls                []llm.ToolCall
	ToolUsage                llm.Usage
	// StructuredComplete answers StructuredRequest with the JSON text
	// StructuredText and finish reason "stop".
	StructuredComplete Recording
	StructuredText     string
}

// ToolRequest is the second step of a tool conversation, sent by every tools
// case of the suite: tools with and without a schema, a forced choice, a user
// message with text and images (by URL and in base64), an assistant message
// that called two tools in parallel, and both results.
func ToolRequest() *llm.Request {
	strict := true
	return &llm.Request{
		Model: "test-model",
		Messages: []llm.Message{
			{Role: llm.RoleSystem, Content: "You are terse."},
			{Role: llm.RoleUser, Parts: []llm.Part{
				{Type: llm.PartText, Text: "What is the weather where these were taken?"},
				{Type: llm.PartImage, ImageURL: "https://example.com/paris.jpg"},
				{Type: llm.PartImage, ImageURL: "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="},
			}},
			{Role: llm.RoleAssistant, ToolCalls: []llm.ToolCall{
				{ID: "call_1", Name: "get_weather", Arguments: `{"city":"Paris"}`},
				{ID: "call_2", Name: "get_weather", Arguments: `{"city":"Lyon"}`},
			}},
			{Role: llm.RoleTool, ToolCallID: "call_1", Content: "18°C, sunny"},
			{Role: llm.RoleTool, ToolCallID: "call_2", Content: "15°C, \"rain\""},
			{Role: llm.RoleUser, Content: "And tomorrow in both?"},
		},
		Temperature: 0.25,
		MaxTokens:   77,
		Tools: []llm.Tool{
			{Name: "get_weather", Description: "The weather in a city.", Strict: &strict,
				Parameters: []byte(`{"type":"object","properties":{"city":{"type":"string"},"day":{"type":"string"}},"required":["city"]}`)},
			{Name: "now", Description: "The current time."},
		},
		ToolChoice: &llm.ToolChoice{Mode: llm.ToolChoiceRequired},
	}
}

// StructuredRequest asks for JSON matching a schema.
func StructuredRequest() *llm.Request {
	req := sampleRequest()
	req.ResponseFormat = &llm.ResponseFormat{Type: llm.FormatJSONSchema, Name: "sum",
		Schema: []byte(`{"type":"object","properties":{"answer":{"type":"integer"}},"required":["answer"]}`)}
	return req
}

// The request every call of the suite sends: a system prompt, a demonstration, a
// turn of history and the message, as the run path builds them.
func sampleRequest() *llm.Request {
	return &llm.Request{
		Model: "test-model",
		Messages: []llm.Message{
			{Role: llm.RoleSystem, Content: "You are terse."},
			{Role: llm.RoleUser, Content: "hi", Example: true},
			{Role: llm.RoleAssistant, Content: "hello", Example: true},
			{Role: llm.RoleUser, Content: "what is 2+2?"},
			{Role: llm.RoleAssistant, Content: "4"},
			{Role: llm.RoleUser, Content: "and \"3+3\"? ünïcödé ✓"},
		},
		Temperature: 0.25,
		MaxTokens:   77,
	}
}

// capture is what the server saw of one request.
type capture struct {
	req  *http.Request
	body []byte
}

// server serves rec, recording requests.
type server struct {
	*httptest.Server
	mu   sync.Mutex
	seen []capture
}

func newServer(t *testing.T, w *Wire, h func(rw http.ResponseWriter, r *http.Request)) *server {
	t.Helper()
	s := &server{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		var buf bytes.Buffer
		buf.ReadFrom(r.Body)
		s.mu.Lock()
		s.seen = append(s.seen, capture{r, buf.Bytes()})
		s.mu.Unlock()
		if r.URL.Path != w.Path {
			http.Error(rw, "wrong path "+r.URL.Path, http.StatusNotFound)
			return
		}
		h(rw, r)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *server) last(t *testing.T) capture {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.seen) == 0 {
		t.Fatal("the adapter sent no request")
	}
	return s.seen[len(s.seen)-1]
}

func (s *server) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.seen)
}

func replay(rec Recording) func(http.ResponseWriter, *http.Request) {
	return func(rw http.ResponseWriter, r *http.Request) {
		for k, vs := range rec.Header {
			k = http.CanonicalHeaderKey(k)
			if k == "Content-Length" || k == "Transfer-Encoding" {
				continue // the body replayed may not be the one recorded
			}
			rw.Header()[k] = vs
		}
		status := rec.Status
		if status == 0 {
			status = http.StatusOK
		}
		rw.WriteHeader(status)
		rw.Write(rec.Body)
	}
}

// streamed calls Stream, collecting the pieces.
func streamed(ctx context.Context, p llm.Provider) ([]string, *llm.Response, error) {
	var pieces []string
	resp, err := p.Stream(ctx, sampleRequest(), func(s string) error {
		pieces = append(pieces, s)
		return nil
	})
	return pieces, resp, err
}

func wantKind(t *testing.T, err error, status int, kind llm.Kind) *llm.Error {
	t.Helper()
	var e *llm.Error
	if !errors.As(err, &e) {
		t.Fatalf("err = %v (%T), want an *llm.Error", err, err)
	}
	if e.Kind != kind {
		t.Errorf("kind = %v, want %v (err: %v)", e.Kind, kind, err)
	}
	if status != 0 && e.StatusCode != status {
		t.Errorf("StatusCode = %d, want %d", e.StatusCode, status)
	}
	return e
}

// kindForStatus is the classification the contract asks of every adapter.
func kindForStatus(status int) llm.Kind {
	if status == http.StatusTooManyRequests || status == http.StatusRequestTimeout || status == http.StatusConflict || status >= 500 {
		return llm.KindRetryable
	}
	return llm.KindPermanent
}

// guard bounds a call that is expected to return at once: it only turns a hang
// into a failure.
const guard = 30 * time.Second

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// Run runs the conformance suite against w.
func Run(t *testing.T, w Wire) {
	t.Run("tools", func(t *testing.T) { runTools(t, &w) })
	t.Run("request", func(t *testing.T) {
		for _, stream := range []bool{false, true} {
			rec := w.Complete
			if stream {
				rec = w.Stream
			}
			s := newServer(t, &w, replay(rec))
			p := w.New(s.URL)
			var err error
			if stream {
				_, _, err = streamed(ctxTimeout(t, guard), p)
			} else {
				_, err = p.Complete(ctxTimeout(t, guard), sampleRequest())
			}
			if err != nil {
				t.Fatalf("stream=%v: %v", stream, err)
			}
			c := s.last(t)
			if c.req.Method != http.MethodPost {
				t.Errorf("method = %s, want POST", c.req.Method)
			}
			if ct := c.req.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				t.Errorf("Content-Type = %q, want application/json", ct)
			}
			if err := w.CheckRequest(c.req, c.body, stream); err != nil {
				t.Errorf("stream=%v: %v\nbody: %s", stream, err, c.body)
			}
			got, gotStream, err := w.Decode(c.body)
			if err != nil {
				t.Fatalf("decode the request: %v\nbody: %s", err, c.body)
			}
			if gotStream != stream {
				t.Errorf("request asks stream=%v, want %v", gotStream, stream)
			}
			want := sampleRequest()
			for i := range want.Messages {
				want.Messages[i].Example = false // not on the wire
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("stream=%v: the request encodes\n%+v\nwant\n%+v\nbody: %s", stream, got, want, c.body)
			}
		}
	})

	t.Run("complete", func(t *testing.T) {
		s := newServer(t, &w, replay(w.Complete))
		resp, err := w.New(s.URL).Complete(ctxTimeout(t, guard), sampleRequest())
		if err != nil {
			t.Fatal(err)
		}
		checkResponse(t, &w, resp, w.Usage)
	})

	t.Run("stream", func(t *testing.T) {
		s := newServer(t, &w, replay(w.Stream))
		pieces, resp, err := streamed(ctxTimeout(t, guard), w.New(s.URL))
		if err != nil {
			t.Fatal(err)
		}
		checkPieces(t, &w, pieces)
		checkResponse(t, &w, resp, w.Usage)
	})

	t.Run("stream without usage", func(t *testing.T) {
		if w.StreamNoUsage.Body == nil {
			t.Skip("this provider always reports usage in streams")
		}
		s := newServer(t, &w, replay(w.StreamNoUsage))
		pieces, resp, err := streamed(ctxTimeout(t, guard), w.New(s.URL))
		if err != nil {
			t.Fatal(err)
		}
		checkPieces(t, &w, pieces)
		// Adapters report what the provider said and never invent counts.
		checkResponse(t, &w, resp, llm.Usage{})
	})

	t.Run("errors", func(t *testing.T) {
		if len(w.Errors) == 0 {
			t.Fatal("Wire.Errors is empty")
		}
		for _, status := range []int{400, 401, 429, 500, 529} {
			if _, ok := w.Errors[status]; !ok {
				t.Errorf("Wire.Errors has no recording for %d", status)
			}
		}
		for status, rec := range w.Errors {
			rec.Status = status
			t.Run(strconv.Itoa(status), func(t *testing.T) {
				s := newServer(t, &w, replay(rec))
				p := w.New(s.URL)
				_, err := p.Complete(ctxTimeout(t, guard), sampleRequest())
				e := wantKind(t, err, status, kindForStatus(status))
				if e.Message == "" {
					t.Error("the error has no message (the upstream's message belongs in the log)")
				}
				pieces, resp, err := streamed(ctxTimeout(t, guard), p)
				wantKind(t, err, status, kindForStatus(status))
				if resp == nil {
					t.Error("a failed Stream returned no Response")
				}
				if len(pieces) != 0 {
					t.Errorf("an error reply emitted %q", pieces)
				}
				if n := s.count(); n != 2 {
					t.Errorf("the adapter sent %d requests for 2 calls; retries are the caller's job", n)
				}
			})
		}
		t.Run("non-JSON body", func(t *testing.T) {
			// A proxy in front of the provider answers in HTML.
			s := newServer(t, &w, replay(Recording{Status: 502, Header: http.Header{"Content-Type": {"text/html"}},
				Body: []byte("<html><body><h1>502 Bad Gateway</h1></body></html>\n")}))
			_, err := w.New(s.URL).Complete(ctxTimeout(t, guard), sampleRequest())
			wantKind(t, err, 502, llm.KindRetryable)
		})
		t.Run("context too long", func(t *testing.T) {
			s := newServer(t, &w, replay(w.ContextTooLong))
			_, err := w.New(s.URL).Complete(ctxTimeout(t, guard), sampleRequest())
			wantKind(t, err, w.ContextTooLong.Status, llm.KindContextLength)
		})
		t.Run("exhausted", func(t *testing.T) {
			if w.Exhausted.Body == nil {
				t.Skip("this provider has no distinct out-of-quota reply")
			}
			s := newServer(t, &w, replay(w.Exhausted))
			_, err := w.New(s.URL).Complete(ctxTimeout(t, guard), sampleRequest())
			wantKind(t, err, w.Exhausted.Status, llm.KindExhausted)
		})
	})

	t.Run("retry-after", func(t *testing.T) {
		rec := w.Errors[429]
		// An HTTP date 90 s ahead (to the second, as the format has it): the delay is
		// that date less the adapter's now, which falls between before and after.
		at := time.Now().Add(90 * time.Second).Truncate(time.Second)
		date := at.UTC().Format(http.TimeFormat)
		for _, tc := range []struct {
			header, value string
			min, max      time.Duration
		}{
			{"Retry-After", "7", 7 * time.Second, 7 * time.Second},
			{"Retry-After", date, 0, 0}, // bounds measured below
			{"Retry-After-Ms", "1500", 1500 * time.Millisecond, 1500 * time.Millisecond},
			{"Retry-After", "soon", 0, 0}, // unparseable: no hint
		} {
			r := rec
			r.Status = 429
			r.Header = rec.Header.Clone()
			if r.Header == nil {
				r.Header = http.Header{}
			}
			r.Header.Del("Retry-After")
			r.Header.Del("Retry-After-Ms")
			r.Header.Set(tc.header, tc.value)
			s := newServer(t, &w, replay(r))
			before := time.Now()
			_, err := w.New(s.URL).Complete(ctxTimeout(t, guard), sampleRequest())
			if tc.value == date {
				tc.min, tc.max = at.Sub(time.Now()), at.Sub(before)
			}
			e := wantKind(t, err, 429, llm.KindRetryable)
			if e.RetryAfter < tc.min || e.RetryAfter > tc.max {
				t.Errorf("%s: %s → RetryAfter %v, want %v..%v", tc.header, tc.value, e.RetryAfter, tc.min, tc.max)
			}
		}
	})

	t.Run("stream error in band", func(t *testing.T) {
		if w.StreamError.Body == nil {
			t.Skip("this provider has no in-band stream errors")
		}
		s := newServer(t, &w, replay(w.StreamError))
		pieces, resp, err := streamed(ctxTimeout(t, guard), w.New(s.URL))
		wantKind(t, err, 0, w.StreamErrorKind)
		if resp == nil {
			t.Fatal("a failed stream returned no Response")
		}
		if len(pieces) == 0 {
			t.Error("the recording's text before the error was not emitted")
		}
		if resp.Text != strings.Join(pieces, "") {
			t.Errorf("Response.Text = %q, want the text emitted, %q", resp.Text, strings.Join(pieces, ""))
		}
	})

	t.Run("stream cut", func(t *testing.T) {
		body := w.Stream.Body
		events := bytes.SplitAfter(body, []byte("\n\n"))
		if len(events) < 4 {
			t.Fatalf("the Stream recording has %d events; need at least 4", len(events))
		}
		for _, cut := range []struct {
			name string
			n    int
		}{
			{"between events", len(bytes.Join(events[:len(events)/2], nil))},
			{"inside an event", len(bytes.Join(events[:len(events)/2], nil)) + len(events[len(events)/2])/2},
		} {
			t.Run(cut.name, func(t *testing.T) {
				s := newServer(t, &w, cutAfter(w.Stream, cut.n))
				pieces, resp, err := streamed(ctxTimeout(t, guard), w.New(s.URL))
				wantKind(t, err, 0, llm.KindRetryable)
				if resp == nil {
					t.Fatal("a cut stream returned no Response")
				}
				if resp.Text != strings.Join(pieces, "") {
					t.Errorf("Response.Text = %q, want the text emitted, %q", resp.Text, strings.Join(pieces, ""))
				}
				if !strings.HasPrefix(w.Text, resp.Text) {
					t.Errorf("emitted %q, not a prefix of %q", resp.Text, w.Text)
				}
			})
		}
		t.Run("complete body", func(t *testing.T) {
			s := newServer(t, &w, cutAfter(w.Complete, len(w.Complete.Body)/2))
			_, err := w.New(s.URL).Complete(ctxTimeout(t, guard), sampleRequest())
			wantKind(t, err, 0, llm.KindRetryable)
		})
	})

	t.Run("malformed", func(t *testing.T) {
		bad := Recording{Header: w.Complete.Header, Body: []byte(`{"id": "x", "choices": [}` + "\n")}
		s := newServer(t, &w, replay(bad))
		_, err := w.New(s.URL).Complete(ctxTimeout(t, guard), sampleRequest())
		wantKind(t, err, 0, llm.KindPermanent)

		// A data line that is not JSON, after one good event.
		events := bytes.SplitAfter(w.Stream.Body, []byte("\n\n"))
		body := append(bytes.Clone(events[0]), []byte("data: {not json\n\n")...)
		body = append(body, bytes.Join(events[1:], nil)...)
		s = newServer(t, &w, replay(Recording{Header: w.Stream.Header, Body: body}))
		_, _, err = streamed(ctxTimeout(t, guard), w.New(s.URL))
		wantKind(t, err, 0, llm.KindPermanent)

		// An event larger than any real chunk.
		huge := append(bytes.Clone(events[0]), []byte("data: \""+strings.Repeat("x", 4<<20)+"\"\n\n")...)
		s = newServer(t, &w, replay(Recording{Header: w.Stream.Header, Body: huge}))
		_, _, err = streamed(ctxTimeout(t, guard), w.New(s.URL))
		if err == nil {
			t.Error("a 4 MiB event was accepted")
		}
	})

	t.Run("cancel", func(t *testing.T) {
		// The upstream accepts and then says nothing; the caller gives up.
		accepted := make(chan struct{}, 1)
		s := newServer(t, &w, func(rw http.ResponseWriter, r *http.Request) {
			accepted <- struct{}{}
			<-r.Context().Done()
		})
		p := w.New(s.URL)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		done := make(chan error, 1)
		go func() {
			_, err := p.Complete(ctx, sampleRequest())
			done <- err
		}()
		select {
		case <-accepted:
		case err := <-done:
			t.Fatalf("Complete returned before the upstream answered: %v", err)
		case <-time.After(guard):
			t.Fatal("the request never reached the upstream")
		}
		cancel()
		select {
		case err := <-done:
			if err == nil || !errors.Is(err, context.Canceled) {
				t.Errorf("Complete after cancel: %v, want it to wrap context.Canceled", err)
			}
		case <-time.After(guard):
			t.Fatalf("Complete did not return within %v of the cancel", guard)
		}
	})

	t.Run("stream that never ends", func(t *testing.T) {
		events := bytes.SplitAfter(w.Stream.Body, []byte("\n\n"))
		s := newServer(t, &w, func(rw http.ResponseWriter, r *http.Request) {
			for k, vs := range w.Stream.Header {
				rw.Header()[k] = vs
			}
			rw.Write(events[0])
			rw.(http.Flusher).Flush()
			tick := time.NewTicker(10 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-r.Context().Done():
					return
				case <-tick.C:
					if _, err := rw.Write([]byte(": keep-alive\n\n")); err != nil {
						return
					}
					rw.(http.Flusher).Flush()
				}
			}
		})
		// The deadline is what is under test: it ends the stream. Nothing depends on
		// when it passes (before or after the first event, the error is the same);
		// guard only turns a stream that outlives it into a failure.
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		type result struct {
			resp *llm.Response
			err  error
		}
		done := make(chan result, 1)
		go func() {
			_, resp, err := streamed(ctx, w.New(s.URL))
			done <- result{resp, err}
		}()
		var resp *llm.Response
		var err error
		select {
		case r := <-done:
			resp, err = r.resp, r.err
		case <-time.After(guard):
			t.Fatalf("Stream did not return within %v; its deadline was 200ms", guard)
		}
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("err = %v, want it to wrap context.DeadlineExceeded", err)
		}
		if llm.KindOf(err) != llm.KindRetryable {
			t.Errorf("kind = %v, want retryable (a deadline)", llm.KindOf(err))
		}
		if resp == nil {
			t.Error("a stream ended by its deadline returned no Response")
		}
	})

	t.Run("emit error stops the stream", func(t *testing.T) {
		s := newServer(t, &w, replay(w.Stream))
		stop := errors.New("client went away")
		n := 0
		resp, err := w.New(s.URL).Stream(ctxTimeout(t, guard), sampleRequest(), func(string) error {
			n++
			return stop
		})
		if !errors.Is(err, stop) {
			t.Errorf("err = %v, want the emit error", err)
		}
		if n != 1 {
			t.Errorf("emit called %d times after failing", n)
		}
		if resp == nil || resp.Text == "" {
			t.Errorf("Response = %+v, want the text emitted", resp)
		}
	})

	t.Run("concurrent", func(t *testing.T) {
		s := newServer(t, &w, replay(w.Complete))
		p := w.New(s.URL)
		var wg sync.WaitGroup
		errs := make(chan error, 16)
		for range 16 {
			wg.Go(func() {
				resp, err := p.Complete(ctxTimeout(t, guard), sampleRequest())
				if err == nil && resp.Text != w.Text {
					err = fmt.Errorf("text %q", resp.Text)
				}
				errs <- err
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Error(err)
			}
		}
	})
}

// runTools is the tools, images and structured output part of the suite.
func runTools(t *testing.T, w *Wire) {
	if w.ToolComplete.Body == nil {
		t.Skip("the wire has no tool recordings")
	}
	for _, stream := range []bool{false, true} {
		name := "whole"
		rec := w.ToolComplete
		if stream {
			name, rec = "streamed", w.ToolStream
		}
		t.Run(name, func(t *testing.T) {
			s := newServer(t, w, replay(rec))
			p := w.New(s.URL)
			var resp *llm.Response
			var err error
			var text strings.Builder
			if stream {
				resp, err = p.Stream(ctxTimeout(t, guard), ToolRequest(), func(piece string) error {
					text.WriteString(piece)
					return nil
				})
				if text.String() != w.ToolText {
					t.Errorf("streamed text = %q, want %q", text.String(), w.ToolText)
				}
			} else {
				resp, err = p.Complete(ctxTimeout(t, guard), ToolRequest())
			}
			if err != nil {
				t.Fatal(err)
			}
			c := s.last(t)
			got, _, err := w.Decode(c.body)
			if err != nil {
				t.Fatalf("decode the request: %v\nbody: %s", err, c.body)
			}
			if want := ToolRequest(); !reflect.DeepEqual(got, want) {
				t.Errorf("the request encodes\n%+v\nwant\n%+v\nbody: %s", got, want, c.body)
			}
			if resp.Text != w.ToolText {
				t.Errorf("Text = %q, want %q", resp.Text, w.ToolText)
			}
			if !reflect.DeepEqual(resp.ToolCalls, w.ToolCalls) {
				t.Errorf("ToolCalls = %+v, want %+v", resp.ToolCalls, w.ToolCalls)
			}
			if resp.FinishReason != llm.FinishToolCalls {
				t.Errorf("FinishReason = %q, want %q", resp.FinishReason, llm.FinishToolCalls)
			}
			if resp.Usage != w.ToolUsage {
				t.Errorf("Usage = %+v, want %+v", resp.Usage, w.ToolUsage)
			}
		})
	}
	t.Run("structured output", func(t *testing.T) {
		s := newServer(t, w, replay(w.StructuredComplete))
		resp, err := w.New(s.URL).Complete(ctxTimeout(t, guard), StructuredRequest())
		if err != nil {
			t.Fatal(err)
		}
		got, _, err := w.Decode(s.last(t).body)
		if err != nil {
			t.Fatalf("decode the request: %v", err)
		}
		want := StructuredRequest()
		for i := range want.Messages {
			want.Messages[i].Example = false
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("the request encodes\n%+v\nwant\n%+v\nbody: %s", got, want, s.last(t).body)
		}
		if resp.Text != w.StructuredText || resp.FinishReason != llm.FinishStop || len(resp.ToolCalls) != 0 {
			t.Errorf("reply = %q (%s, %d tool calls), want %q (stop, none)", resp.Text, resp.FinishReason, len(resp.ToolCalls), w.StructuredText)
		}
	})
}

func checkPieces(t *testing.T, w *Wire, pieces []string) {
	t.Helper()
	if len(pieces) < 2 {
		t.Errorf("the stream emitted %d pieces, want each delta as it arrives", len(pieces))
	}
	for i, p := range pieces {
		if p == "" {
			t.Errorf("piece %d is empty", i)
		}
	}
	if got := strings.Join(pieces, ""); got != w.Text {
		t.Errorf("pieces join to %q, want %q", got, w.Text)
	}
}

func checkResponse(t *testing.T, w *Wire, resp *llm.Response, usage llm.Usage) {
	t.Helper()
	if resp.Text != w.Text {
		t.Errorf("Text = %q, want %q", resp.Text, w.Text)
	}
	if resp.Usage != usage {
		t.Errorf("Usage = %+v, want %+v", resp.Usage, usage)
	}
	finish := w.Finish
	if finish == "" {
		finish = llm.FinishStop
	}
	if resp.FinishReason != finish {
		t.Errorf("FinishReason = %q, want %q", resp.FinishReason, finish)
	}
	if resp.Model != w.Model {
		t.Errorf("Model = %q, want %q", resp.Model, w.Model)
	}
}

// cutAfter serves rec's first n bytes under a Content-Length of the whole body
// (for a JSON reply) or as a chunked stream, then drops the connection.
func cutAfter(rec Recording, n int) func(http.ResponseWriter, *http.Request) {
	return func(rw http.ResponseWriter, r *http.Request) {
		for k, vs := range rec.Header {
			rw.Header()[k] = vs
		}
		if !strings.HasPrefix(rw.Header().Get("Content-Type"), "text/event-stream") {
			rw.Header().Set("Content-Length", strconv.Itoa(len(rec.Body)))
		}
		rw.WriteHeader(http.StatusOK)
		rw.Write(rec.Body[:n])
		rw.(http.Flusher).Flush()
		conn, _, err := http.NewResponseController(rw).Hijack()
		if err == nil {
			conn.Close()
		}
	}
}
