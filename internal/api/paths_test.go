package api

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

func TestTrimTrailingSlashes(t *testing.T) {
	for _, tc := range []struct{ in, path, escaped string }{
		{"/", "/", "/"},
		{"/a", "/a", "/a"},
		{"/a/", "/a", "/a"},
		{"/a///", "/a", "/a"},
		{"//", "/", "/"},
		{"/a%2Fb/", "/a/b", "/a%2Fb"},       // the escaped slash stays in its segment
		{"/a/%2F", "/a//", "/a/%2F"},        // an escaped slash is not a trailing slash
		{"/a/%2F/", "/a//", "/a/%2F"},       // only the real one goes
		{"/a%20b/", "/a b", "/a%20b"},       // other escapes are kept
		{"/%7Euser/", "/~user", "/%7Euser"}, // as the client escaped it
	} {
		u, err := url.ParseRequestURI(tc.in)
		if err != nil {
			t.Fatal(err)
		}
		trimTrailingSlashes(u)
		if u.Path != tc.path || u.EscapedPath() != tc.escaped {
			t.Errorf("%s: path %q escaped %q, want %q %q", tc.in, u.Path, u.EscapedPath(), tc.path, tc.escaped)
		}
	}
}

func TestCanonicalPath(t *testing.T) {
	for _, tc := range []struct {
		esc  string
		want bool
	}{
		{"/", true},
		{"/api/v3/agents", true},
		{"/api/v3/agents/a%2Fb", true},
		{"/api/v3/agents/a%2F..%2Fb", true}, // one segment, "a/../b"
		{"/api/v3/agents/...", true},
		{"/api/v3/agents/.hidden", true},
		{"", false},
		{"api", false},
		{"//api", false},
		{"/api/v3//agents", false},
		{"/api/v3/./agents", false},
		{"/api/v3/agents/../keys", false},
		{"/api/v3/agents/..", false},
		{"/api/v3/agents/%2e%2e/keys", false},
		{"/api/v3/%2E/agents", false},
	} {
		if got := canonicalPath(tc.esc); got != tc.want {
			t.Errorf("canonicalPath(%q) = %v, want %v", tc.esc, got, tc.want)
		}
	}
}

// TestUncleanPaths: no redirect, a 404 in the API's shape (OpenAI's under /v1).
func TestUncleanPaths(t *testing.T) {
	s := &Server{Log: slog.New(slog.DiscardHandler)}
	h := s.Handler()
	for _, tc := range []struct {
		method, target string
		status         int
		openAI         bool
	}{
		{"GET", "/healthz", 200, false},
		{"GET", "/healthz/", 200, false},
		{"GET", "//healthz", 404, false},
		{"GET", "/./healthz", 404, false},
		{"GET", "/api/v3//agents", 404, false},
		{"GET", "/api/v3/./agents", 404, false},
		{"GET", "/api/v3/agents/../keys", 404, false},
		{"POST", "/api/v3/agents/run-agents/x/../y/run", 404, false},
		{"DELETE", "/api/v3/keys/%2e%2e/", 404, false},
		{"POST", "/v1//chat/completions", 404, true},
		{"GET", "/v1/./models", 404, true},
		{"GET", "/x/../v1/models", 404, true},
	} {
		t.Run(tc.method+" "+tc.target, func(t *testing.T) {
			w := httptest.NewRecorder()
			h.ServeHTTP(w, httptest.NewRequest(tc.method, tc.target, strings.NewReader("{}")))
			b, _ := io.ReadAll(w.Body)
			if w.Code != tc.status || w.Header().Get("Location") != "" {
				t.Fatalf("status %d Location %q: %s", w.Code, w.Header().Get("Location"), b)
			}
			if tc.status == 200 {
				return
			}
			var body struct {
				Detail string
				Code   string
				Error  *struct{ Message, Type, Code string }
			}
			if err := json.Unmarshal(b, &body); err != nil || w.Header().Get("Content-Type") != "application/json" {
				t.Fatalf("body %q: %v", b, err)
			}
			msg, code := body.Detail, body.Code
			if tc.openAI {
				if body.Error == nil {
					t.Fatalf("not in OpenAI's envelope: %s", b)
				}
				msg, code = body.Error.Message, body.Error.Code
			}
			if code != "not_found" || !strings.Contains(msg, "not canonical") {
				t.Errorf("body %s", b)
			}
		})
	}
}
