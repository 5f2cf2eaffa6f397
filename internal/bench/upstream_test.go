package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// shape is a JSON value with every leaf replaced by its type, and arrays by
// the shape of their first element: what "the same wire format" compares.
func shape(v any) any {
	switch v := v.(type) {
	case map[string]any:
		out := map[string]any{}
		for k, x := range v {
			out[k] = shape(x)
		}
		return out
	case []any:
		if len(v) == 0 {
			return "array"
		}
		return []any{shape(v[0])}
	case string:
		return "string"
	case float64:
		return "number"
	case bool:
		return "bool"
	case nil:
		return "null"
	}
	return fmt.Sprintf("%T", v)
}

// sameShape reports the fields of want that got lacks or types differently.
// Fields only got has are allowed when listed in extra.
func sameShape(t *testing.T, what string, got, want []byte, extra ...string) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("%s: not JSON: %v\n%s", what, err, got)
	}
	if err := json.Unmarshal(want, &w); err != nil {
		t.Fatalf("%s: recording not JSON: %v", what, err)
	}
	diff(t, what, shape(g), shape(w), extra)
}

func diff(t *testing.T, path string, got, want any, extra []string) {
	t.Helper()
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			t.Errorf("%s: %v, want an object", path, got)
			return
		}
		keys := make([]string, 0, len(w))
		for k := range w {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if _, ok := g[k]; !ok {
				t.Errorf("%s.%s: missing", path, k)
				continue
			}
			diff(t, path+"."+k, g[k], w[k], extra)
		}
		for k := range g {
			if _, ok := w[k]; !ok && !contains(extra, k) {
				t.Errorf("%s.%s: not in OpenAI's reply", path, k)
			}
		}
	case []any:
		g, ok := got.([]any)
		if !ok {
			t.Errorf("%s: %v, want an array", path, got)
			return
		}
		diff(t, path+"[0]", g[0], w[0], extra)
	default:
		if got != want {
			t.Errorf("%s: %v, want %v", path, got, want)
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func post(t *testing.T, url, body string) *http.Response {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// events reads an event stream's data lines.
func events(t *testing.T, r io.Reader) []string {
	t.Helper()
	var out []string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if d, ok := strings.CutPrefix(line, "data: "); ok {
			out = append(out, d)
		} else if line != "" {
			t.Errorf("unexpected stream line %q", line)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

const chatRequest = `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`

func TestUpstreamCompletion(t *testing.T) {
	srv := httptest.NewServer(NewUpstream(UpstreamOptions{Tokens: 5, PromptTokens: 7}))
	defer srv.Close()
	resp := post(t, srv.URL+"/v1/chat/completions", chatRequest)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("status %d, content type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	body, _ := io.ReadAll(resp.Body)
	want, _ := os.ReadFile("testdata/complete.json")
	sameShape(t, "chat.completion", body, want, "system_fingerprint")

	type usage struct {
		PromptTokens     int `json:"prompt_tokens"`
		CompletionTokens int `json:"completion_tokens"`
		TotalTokens      int `json:"total_tokens"`
	}
	var c struct {
		Object  string `json:"object"`
		Model   string `json:"model"`
		Choices []struct {
			Message struct {
				Role, Content string
			}
			FinishReason string `json:"finish_reason"`
		}
		Usage usage
	}
	if err := json.Unmarshal(body, &c); err != nil {
		t.Fatal(err)
	}
	if c.Object != "chat.completion" || c.Model != "gpt-4o-mini" || len(c.Choices) != 1 ||
		c.Choices[0].Message.Role != "assistant" || c.Choices[0].Message.Content != "The quick brown fox jumps" ||
		c.Choices[0].FinishReason != "stop" || c.Usage != (usage{7, 5, 12}) {
		t.Errorf("reply %+v", c)
	}
}

func TestUpstreamStream(t *testing.T) {
	srv := httptest.NewServer(NewUpstream(UpstreamOptions{Tokens: 5}))
	defer srv.Close()
	recorded, _ := os.ReadFile("testdata/stream.sse")
	var want []string
	for line := range strings.Lines(string(recorded)) {
		if d, ok := strings.CutPrefix(strings.TrimSpace(line), "data: "); ok {
			want = append(want, d)
		}
	}
	tests := []struct {
		name, body string
		usage      bool
	}{
		{"include_usage", `{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[]}`, true},
		{"spaced JSON", `{"model": "m", "stream": true, "stream_options": {"include_usage": true}, "messages": []}`, true},
		{"no usage asked", `{"model":"m","stream":true,"messages":[]}`, false},
		{"include_usage false", `{"model":"m","stream":true,"stream_options":{"include_usage":false}}`, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp := post(t, srv.URL+"/v1/chat/completions", tc.body)
			if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
				t.Fatalf("status %d, content type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
			}
			ev := events(t, resp.Body)
			n := 1 + 5 + 1 + 1 // role, pieces, finish, [DONE]
			if tc.usage {
				n++
			}
			if len(ev) != n || ev[len(ev)-1] != "[DONE]" {
				t.Fatalf("%d events ending %q, want %d ending [DONE]:\n%s", len(ev), ev[len(ev)-1], n, strings.Join(ev, "\n"))
			}
			sameShape(t, "role chunk", []byte(ev[0]), []byte(want[0]))
			sameShape(t, "content chunk", []byte(ev[1]), []byte(want[1]))
			sameShape(t, "finish chunk", []byte(ev[6]), []byte(want[len(want)-3]))
			if tc.usage {
				sameShape(t, "usage chunk", []byte(ev[7]), []byte(want[len(want)-2]))
			}
			var text strings.Builder
			for _, e := range ev[:len(ev)-1] {
				var c struct {
					Object  string
					Choices []struct {
						Delta struct{ Content string }
					}
					Usage *struct {
						CompletionTokens int `json:"completion_tokens"`
					}
				}
				if err := json.Unmarshal([]byte(e), &c); err != nil {
					t.Fatal(err)
				}
				if c.Object != "chat.completion.chunk" {
					t.Errorf("object %q", c.Object)
				}
				for _, ch := range c.Choices {
					text.WriteString(ch.Delta.Content)
				}
				if c.Usage != nil && c.Usage.CompletionTokens != 5 {
					t.Errorf("usage %+v", c.Usage)
				}
			}
			if text.String() != "The quick brown fox jumps" {
				t.Errorf("streamed text %q", text.String())
			}
		})
	}
}

func TestUpstreamModelsAndErrors(t *testing.T) {
	srv := httptest.NewServer(NewUpstream(UpstreamOptions{Model: "m-1", ErrorRate: 1}))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	var models struct {
		Object string
		Data   []struct{ ID, Object string }
	}
	json.NewDecoder(resp.Body).Decode(&models)
	resp.Body.Close()
	if models.Object != "list" || len(models.Data) != 1 || models.Data[0].ID != "m-1" || models.Data[0].Object != "model" {
		t.Errorf("models %+v", models)
	}

	resp = post(t, srv.URL+"/v1/chat/completions", chatRequest)
	body, _ := io.ReadAll(resp.Body)
	want, _ := os.ReadFile("testdata/error_500.json")
	if resp.StatusCode != 500 {
		t.Errorf("status %d with error rate 1", resp.StatusCode)
	}
	sameShape(t, "error", body, want)
	var g, w any
	json.Unmarshal(body, &g)
	json.Unmarshal(want, &w)
	if fmt.Sprint(g) != fmt.Sprint(w) {
		t.Errorf("500 body %s, want OpenAI's %s", body, want)
	}

	if resp := post(t, srv.URL+"/v1/chat/completions", `{"stream": tru`); resp.StatusCode != 400 {
		t.Errorf("bad JSON: status %d, want 400", resp.StatusCode)
	}
	if resp := post(t, srv.URL+"/v1/embeddings", `{}`); resp.StatusCode != 404 {
		t.Errorf("unknown path: status %d, want 404", resp.StatusCode)
	}
}

func TestStreamFlags(t *testing.T) {
	tests := []struct {
		body                   string
		stream, usage, decoded bool
	}{
		{`{"model":"m"}`, false, false, true},
		{`{"model":"m","stream":true}`, true, false, true},
		{`{"stream":true,"stream_options":{"include_usage":true}}`, true, true, true},
		{`{"stream": true, "stream_options": {"include_usage": true}}`, true, true, true},
		{`{"stream":false,"stream_options":{"include_usage":true}}`, false, true, true},
		{`{"stream_options":{"include_usage":true}}`, false, false, true},
		{`{"messages":[{"role":"user","content":"say \"stream\":true"}]}`, false, false, true},
		{`{"stream": tru`, false, false, false},
	}
	for _, tc := range tests {
		stream, usage, ok := streamFlags([]byte(tc.body))
		if stream != tc.stream || usage != tc.usage || ok != tc.decoded {
			t.Errorf("%s: stream %v usage %v ok %v, want %v %v %v", tc.body, stream, usage, ok, tc.stream, tc.usage, tc.decoded)
		}
	}
}

func TestUpstreamPauses(t *testing.T) {
	// The upstream waits Latency before the first byte of a reply and
	// StreamInterval between two pieces of a stream: the test records what the
	// reply held at each pause, and ends the reply where the client leaves.
	u := NewUpstream(UpstreamOptions{Latency: 30 * time.Millisecond, Tokens: 4, StreamInterval: 20 * time.Millisecond})
	type pause struct {
		d       time.Duration
		written string // the reply so far
		flushed bool
	}
	var pauses []pause
	var rec *httptest.ResponseRecorder
	leaveAt := 0 // the client leaves during this pause (1: the first); 0: never
	u.pause = func(r *http.Request, d time.Duration) bool {
		pauses = append(pauses, pause{d, rec.Body.String(), rec.Flushed})
		return len(pauses) != leaveAt
	}
	serve := func(body string) string {
		pauses, rec = nil, httptest.NewRecorder()
		u.ServeHTTP(rec, httptest.NewRequest("POST", "/v1/chat/completions", strings.NewReader(body)))
		return rec.Body.String()
	}
	first, p := string(u.first), func(i int) string { return string(u.pieces[i]) }
	latency := pause{30 * time.Millisecond, "", false}
	interval := func(written string) pause { return pause{20 * time.Millisecond, written, true} }
	check := func(what, got, want string, wantPauses ...pause) {
		t.Helper()
		if got != want {
			t.Errorf("%s: reply\n%s\nwant\n%s", what, got, want)
		}
		if !reflect.DeepEqual(pauses, wantPauses) {
			t.Errorf("%s: pauses %+v\nwant %+v", what, pauses, wantPauses)
		}
	}

	check("completion", serve(chatRequest), string(u.completion), latency)
	check("stream", serve(`{"stream":true}`), first+p(0)+p(1)+p(2)+p(3)+string(u.finish)+string(doneEvent),
		latency, interval(first+p(0)), interval(first+p(0)+p(1)), interval(first+p(0)+p(1)+p(2)))
	leaveAt = 1
	check("client gone during the latency", serve(`{"stream":true}`), "", latency)
	leaveAt = 3
	check("client gone between pieces", serve(`{"stream":true}`), first+p(0)+p(1),
		latency, interval(first+p(0)), interval(first+p(0)+p(1)))
}

func TestSleepCtx(t *testing.T) {
	r := httptest.NewRequest("POST", "/", nil)
	start := time.Now()
	if !sleepCtx(r, 10*time.Millisecond) {
		t.Error("sleepCtx: false with the client still there")
	}
	// A timer never fires early, however loaded the machine: a lower bound only.
	if d := time.Since(start); d < 10*time.Millisecond {
		t.Errorf("sleepCtx(10ms) returned after %v", d)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan bool)
	go func() { done <- sleepCtx(r.WithContext(ctx), time.Hour) }()
	cancel()
	if <-done {
		t.Error("sleepCtx: true when the client left")
	}
}

func TestUpstreamRates(t *testing.T) {
	// The draws come from a seeded source, so the counts are the same on every
	// run; the test checks they are what the rates ask for.
	u := NewUpstream(UpstreamOptions{ErrorRate: 0.1, ResetRate: 0.05})
	var mu sync.Mutex
	rng := rand.New(rand.NewPCG(1, 2))
	u.draw = func() float64 {
		mu.Lock()
		defer mu.Unlock()
		return rng.Float64()
	}
	srv := httptest.NewServer(u)
	defer srv.Close()
	c := NewClient(4, 0)
	const n = 1000
	var ok, errs, resets int
	for range n {
		resp, err := c.Post(srv.URL+"/v1/chat/completions", "application/json", strings.NewReader(chatRequest))
		if err != nil {
			if k := errorKind(err); k != "reset" && k != "eof" {
				t.Fatalf("error %v (kind %s), want a reset", err, k)
			}
			resets++
			continue
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		switch resp.StatusCode {
		case 200:
			ok++
		case 500:
			errs++
		default:
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	// Within 4 standard deviations of the binomial's mean. Errors are drawn from
	// the requests not reset.
	if resets < 50-28 || resets > 50+28 {
		t.Errorf("%d resets in %d requests, want about 50", resets, n)
	}
	if want := 0.1 * float64(n-resets); float64(errs) < want-38 || float64(errs) > want+38 {
		t.Errorf("%d errors in %d requests, want about %.0f", errs, n, want)
	}
	if ok+errs+resets != n {
		t.Errorf("%d + %d + %d ≠ %d", ok, errs, resets, n)
	}
}

func TestErrorKind(t *testing.T) {
	if k := errorKind(errors.New("something")); k != "transport" {
		t.Errorf("kind %q", k)
	}
	if k := errorKind(io.ErrUnexpectedEOF); k != "eof" {
		t.Errorf("kind %q", k)
	}
}
