package reqlog

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestValidID(t *testing.T) {
	for _, tc := range []struct {
		id   string
		want bool
	}{
		{"", false},
		{"a", true},
		{"req-abc.DEF_0:9", true},
		{strings.Repeat("x", 128), true},
		{strings.Repeat("x", 129), false},
		{"has space", false},
		{"semi;colon", false},
		{"new\nline", false},
		{"ünï", false},
		{"quote\"", false},
	} {
		if got := ValidID(tc.id); got != tc.want {
			t.Errorf("ValidID(%q) = %v, want %v", tc.id, got, tc.want)
		}
	}
	if id := NewID(); !ValidID(id) || !strings.HasPrefix(id, "req-") {
		t.Errorf("NewID() = %q", id)
	}
}

// TestHandler: a request's attributes come first, from its context, never
// twice; credentials and key-like text are masked; contents only when allowed.
func TestHandler(t *testing.T) {
	for _, tc := range []struct {
		name     string
		contents bool
		log      func(l *slog.Logger, ctx context.Context)
		want     map[string]any
		absent   []string
	}{
		{"request attributes", false, func(l *slog.Logger, ctx context.Context) {
			l.InfoContext(ctx, "hello", "request_id", "other", "org_id", "dup", "n", 3)
		}, map[string]any{"request_id": "req-1", "route": "POST /x", "org_id": "org-1", "key_id": "key-1", "n": float64(3)}, []string{"dup", "other"}},
		{"credentials", false, func(l *slog.Logger, ctx context.Context) {
			l.InfoContext(ctx, "auth", "Authorization", "Bearer agd_supersecretvalue", "api_key", "sk-abcdef")
		}, map[string]any{"Authorization": "[redacted]", "api_key": "[redacted]"}, []string{"supersecret", "sk-abcdef"}},
		{"key-like text in strings and errors", false, func(l *slog.Logger, ctx context.Context) {
			l.WarnContext(ctx, "failed for agd_0123456789abc", "err", errors.New("upstream status 401: Incorrect API key provided: sk-upstr*****cret"),
				"note", "header was bearer abc.def-ghi and AIzaSyA0123456789abcdefghij")
		}, map[string]any{"msg": "failed for agd_…", "err": "upstream status 401: Incorrect API key provided: sk-…*****cret",
			"note": "header was bearer … and AIza…"}, []string{"0123456789abc", "abc.def-ghi"}},
		{"contents off", false, func(l *slog.Logger, ctx context.Context) {
			l.InfoContext(ctx, "x", "message", "private words", "response", "more private words")
		}, map[string]any{"message": "[not logged: log.contents is off]"}, []string{"private words"}},
		{"contents on", true, func(l *slog.Logger, ctx context.Context) {
			l.InfoContext(ctx, "x", "message", "private words")
		}, map[string]any{"message": "private words"}, nil},
		{"groups and With", false, func(l *slog.Logger, ctx context.Context) {
			l.With("token", "t0ps3cret").InfoContext(ctx, "x", slog.Group("g", "password", "hunter2", "ok", "fine"))
		}, map[string]any{"token": "[redacted]", "g": map[string]any{"password": "[redacted]", "ok": "fine"}}, []string{"t0ps3cret", "hunter2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			l := slog.New(NewHandler(slog.NewJSONHandler(&buf, nil), HandlerOptions{Contents: tc.contents}))
			ctx := With(context.Background(), &Info{ID: "req-1", Route: "POST /x", OrgID: "org-1", KeyID: "key-1"})
			tc.log(l, ctx)
			line := buf.String()
			var got map[string]any
			if err := json.Unmarshal([]byte(line), &got); err != nil {
				t.Fatal(err)
			}
			for k, v := range tc.want {
				if g, _ := json.Marshal(got[k]); string(g) != mustJSON(v) {
					t.Errorf("%s = %s, want %s (line %s)", k, g, mustJSON(v), line)
				}
			}
			for _, a := range tc.absent {
				if strings.Contains(line, a) {
					t.Errorf("line holds %q: %s", a, line)
				}
			}
			if strings.Count(line, `"request_id"`) != 1 || strings.Count(line, `"org_id"`) != 1 {
				t.Errorf("an attribute twice: %s", line)
			}
		})
	}
}

func mustJSON(v any) string { b, _ := json.Marshal(v); return string(b) }

// TestMiddleware: the id is answered before the handler writes, the handler
// sees it in its context, and the observer and the access log see the route,
// the status and the bytes.
func TestMiddleware(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(NewHandler(slog.NewJSONHandler(&buf, nil), HandlerOptions{}))
	var seen struct {
		route  string
		status int
		bytes  int64
	}
	h := Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		SetRoute(r.Context(), "GET /thing")
		SetPrincipal(r.Context(), "org-1", "key-1")
		if w.Header().Get(Header) != ID(r.Context()) {
			t.Errorf("header %q, context %q", w.Header().Get(Header), ID(r.Context()))
		}
		if r.URL.Path == "/silent" {
			return
		}
		w.WriteHeader(http.StatusTeapot)
		w.Write([]byte("12345"))
		http.NewResponseController(w).Flush()
	}), Options{Log: log, Access: true, Observe: func(route string, status int, n int64, _ time.Duration) {
		seen.route, seen.status, seen.bytes = route, status, n
	}})

	w := httptest.NewRecorder()
	r := httptest.NewRequest("GET", "/thing", nil)
	r.Header.Set(Header, "mine-1")
	h.ServeHTTP(w, r)
	if w.Header().Get(Header) != "mine-1" || seen.route != "GET /thing" || seen.status != 418 || seen.bytes != 5 || !w.Flushed {
		t.Errorf("response %v, seen %+v, flushed %v", w.Header(), seen, w.Flushed)
	}
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]any{"msg": "request", "request_id": "mine-1", "route": "GET /thing", "org_id": "org-1", "key_id": "key-1",
		"method": "GET", "status": float64(418), "bytes": float64(5)} {
		if line[k] != v {
			t.Errorf("access line %s = %v, want %v: %s", k, line[k], v, buf.String())
		}
	}

	// A handler that writes nothing is net/http's 200; a client gone first, 499.
	w = httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/silent", nil))
	if seen.status != 200 || !strings.HasPrefix(w.Header().Get(Header), "req-") {
		t.Errorf("silent: %+v %v", seen, w.Header())
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/silent", nil).WithContext(ctx))
	if seen.status != StatusClientClosed {
		t.Errorf("gone: %+v", seen)
	}
}

// BenchmarkMiddleware is what every request pays: an id minted, the context,
// the recorder and an observation.
func BenchmarkMiddleware(b *testing.B) {
	h := Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		SetRoute(r.Context(), "GET /x")
		w.WriteHeader(200)
	}), Options{Observe: func(string, int, int64, time.Duration) {}})
	r := httptest.NewRequest("GET", "/x", nil)
	w := httptest.NewRecorder()
	b.ReportAllocs()
	for b.Loop() {
		h.ServeHTTP(w, r)
	}
}
