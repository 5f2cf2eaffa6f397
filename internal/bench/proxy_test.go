package bench

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestProxyPassesRequestsThrough(t *testing.T) {
	type seen struct {
		path, auth string
		body       map[string]any
	}
	got := make(chan seen, 1)
	up := NewUpstream(UpstreamOptions{})
	upSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var s seen
		s.path, s.auth = r.URL.RequestURI(), r.Header.Get("Authorization")
		b, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(b, &s.body); err != nil {
			t.Errorf("the upstream got no JSON: %v: %s", err, b)
		}
		got <- s
		r.Body = io.NopCloser(strings.NewReader(string(b)))
		up.ServeHTTP(w, r)
	}))
	defer upSrv.Close()
	p := NewProxy(upSrv.URL, 4)
	defer p.Close()
	srv := httptest.NewServer(p)
	defer srv.Close()

	body := `{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi \u00e9"}], "max_tokens": 64, "temperature": 0.5}`
	req, _ := http.NewRequest("POST", srv.URL+"/v1/chat/completions?x=1", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer sk-test")
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	reply, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	s := <-got
	var want map[string]any
	json.Unmarshal([]byte(body), &want)
	if s.path != "/v1/chat/completions?x=1" || s.auth != "Bearer sk-test" || !reflect.DeepEqual(s.body, want) {
		t.Errorf("upstream saw %s, auth %q, body %v; want the request's", s.path, s.auth, s.body)
	}
	if resp.StatusCode != 200 || string(reply) != string(up.completion) || resp.Header.Get("Content-Type") != "application/json" {
		t.Errorf("status %d, %q: %s; want the upstream's reply", resp.StatusCode, resp.Header.Get("Content-Type"), reply)
	}

	resp, err = http.Post(srv.URL+"/v1/chat/completions", "application/json", strings.NewReader(`{"model":`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Errorf("bad JSON: status %d, want 400", resp.StatusCode)
	}
	select {
	case s := <-got:
		t.Errorf("bad JSON reached the upstream: %v", s)
	default:
	}
}

func TestProxyStreamsThrough(t *testing.T) {
	// The upstream sends the role chunk and the first piece, then waits until the
	// client has read that piece through the proxy before it sends the rest: the
	// proxy must pass each piece on as it arrives.
	u := NewUpstream(UpstreamOptions{Tokens: 3, StreamInterval: time.Hour})
	firstRead := make(chan struct{})
	var pauses atomic.Int32
	var gaveUp atomic.Bool
	giveUp := stuck(t)
	u.pause = func(r *http.Request, d time.Duration) bool {
		if pauses.Add(1) > 1 {
			return true
		}
		select {
		case <-firstRead:
		case <-r.Context().Done():
			return false
		case <-giveUp:
			gaveUp.Store(true)
		}
		return true
	}
	up := httptest.NewServer(u)
	defer up.Close()
	p := NewProxy(up.URL, 4)
	defer p.Close()
	srv := httptest.NewServer(p)
	defer srv.Close()

	resp, err := http.Post(srv.URL+"/v1/chat/completions", "application/json",
		strings.NewReader(`{"model":"m","stream":true,"stream_options":{"include_usage":true}}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("content type %q", resp.Header.Get("Content-Type"))
	}
	var lines []string
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if l := sc.Text(); l != "" {
			lines = append(lines, l)
			if len(lines) == 2 {
				if !hasContent([]byte(l)) {
					t.Errorf("second line %q: want the first piece", l)
				}
				close(firstRead)
			}
		}
	}
	if gaveUp.Load() {
		t.Error("the first piece did not reach the client while the upstream held the rest: the stream was not flushed through")
	}
	if len(lines) != 7 || lines[len(lines)-1] != "data: [DONE]" {
		t.Errorf("%d lines ending %q, want role, 3 pieces, finish, usage, [DONE]", len(lines), lines[len(lines)-1])
	}
}

func TestProxyUpstreamDown(t *testing.T) {
	up := httptest.NewServer(http.NotFoundHandler())
	url := up.URL
	up.Close()
	srv := httptest.NewServer(NewProxy(url, 1))
	defer srv.Close()
	resp, err := http.Post(srv.URL+"/v1/chat/completions", "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway {
		t.Errorf("status %d, want 502", resp.StatusCode)
	}
}
