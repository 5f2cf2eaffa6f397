package api

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// rawExchange sends req on a new connection to addr and reads every response
// the server writes until it closes the connection. The 30 s deadline is only a
// failure guard: every exchange of these tests ends with the server closing.
func rawExchange(t *testing.T, addr, req string) []*http.Response {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	go c.Write([]byte(req)) // the server may stop reading an oversized request
	br := bufio.NewReader(c)
	var out []*http.Response
	for {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return out
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body = io.NopCloser(strings.NewReader(string(b)))
		out = append(out, resp)
		if resp.Close {
			return out
		}
	}
}

func TestListener(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/plain" {
				// A handler's own plain-text answer with Connection: close is not
				// net/http's: it is left alone.
				w.Header().Set("Connection", "close")
				http.Error(w, "400 Bad Request", http.StatusBadRequest)
				return
			}
			io.WriteString(w, "ok")
		}),
		MaxHeaderBytes:    1 << 10,
		ReadHeaderTimeout: 5 * time.Second,
	}
	go hs.Serve(Listener(ln))
	defer hs.Close()
	addr := ln.Addr().String()

	big := strings.Repeat("a", 8<<10)
	cases := []struct {
		name, req string
		status    int
		code      string
		detail    string
	}{
		{"header too large", "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + big + "\r\n\r\n", 431, "header_too_large", "too large"},
		{"control character in a header value", "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n", 400, "bad_request", "malformed request"},
		{"space in a header name", "GET / HTTP/1.1\r\nHost: x\r\nBad Name: x\r\n\r\n", 400, "bad_request", "invalid header name"},
		{"missing host", "GET / HTTP/1.1\r\n\r\n", 400, "bad_request", "missing required Host header"},
		{"malformed host", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400, "bad_request", "malformed Host header"},
		{"bad method", "G(T / HTTP/1.1\r\nHost: x\r\n\r\n", 400, "bad_request", "malformed request"},
		{"space in the path", "GET /a b HTTP/1.1\r\nHost: x\r\n\r\n", 400, "bad_request", "malformed request"},
		{"unsupported transfer encoding", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501, "not_implemented", "transfer encoding"},
		{"unsupported version", "GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505, "http_version_not_supported", "protocol version"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rs := rawExchange(t, addr, tc.req)
			if len(rs) != 1 {
				t.Fatalf("%d responses", len(rs))
			}
			checkJSONError(t, rs[0], tc.status, tc.code, tc.detail)
		})
	}

	t.Run("after a good request on the same connection", func(t *testing.T) {
		rs := rawExchange(t, addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\nBad Name: x\r\n\r\n")
		if len(rs) != 2 {
			t.Fatalf("%d responses", len(rs))
		}
		if b, _ := io.ReadAll(rs[0].Body); rs[0].StatusCode != 200 || string(b) != "ok" {
			t.Errorf("first response: %d %q", rs[0].StatusCode, b)
		}
		checkJSONError(t, rs[1], 400, "bad_request", "invalid header name")
	})
	t.Run("a handler's plain-text answer is untouched", func(t *testing.T) {
		rs := rawExchange(t, addr, "GET /plain HTTP/1.1\r\nHost: x\r\n\r\n")
		if len(rs) != 1 {
			t.Fatalf("%d responses", len(rs))
		}
		if ct := rs[0].Header.Get("Content-Type"); rs[0].StatusCode != 400 || !strings.HasPrefix(ct, "text/plain") {
			t.Errorf("rewritten: %d %q", rs[0].StatusCode, ct)
		}
	})
}

func checkJSONError(t *testing.T, resp *http.Response, status int, code, detail string) {
	t.Helper()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != status {
		t.Errorf("status %d, want %d: %s", resp.StatusCode, status, b)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	if cl := resp.Header.Get("Content-Length"); cl != strconv.Itoa(len(b)) {
		t.Errorf("Content-Length %q for %d bytes", cl, len(b))
	}
	if !resp.Close {
		t.Errorf("no Connection: close")
	}
	var e struct{ Detail, Code string }
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatalf("body %q: %v", b, err)
	}
	if e.Code != code || !strings.Contains(e.Detail, detail) {
		t.Errorf("body %s, want code %q and detail containing %q", b, code, detail)
	}
}

func TestRewriteTransportErrorLeavesOtherWrites(t *testing.T) {
	for _, p := range []string{
		"",
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\nDate: x\r\n\r\n400 Bad Request",
		// The right headers, but a body that is not the status line: a handler's.
		"HTTP/1.1 400 Bad Request" + plainErrorHeaders + "something else",
		"HTTP/1.1 418 I'm a teapot" + plainErrorHeaders + "418 I'm a teapot",
		"HTTP/1.0 400 Bad Request" + plainErrorHeaders + "400 Bad Request",
		`{"message":"HTTP/1.1 400 Bad Request"}`,
	} {
		if b, ok := rewriteTransportError([]byte(p)); ok {
			t.Errorf("rewrote %q into %q", p, b)
		}
	}
}

// TestTransportErrorsCoverNetHTTP reads net/http's server.go: its error headers
// are still the ones Listener recognises, and every status it answers on its
// own has an entry in transportErrors. A Go upgrade that changes either fails
// here rather than letting plain text through.
func TestTransportErrorsCoverNetHTTP(t *testing.T) {
	out, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		t.Skipf("go env GOROOT: %v", err)
	}
	src, err := os.ReadFile(filepath.Join(strings.TrimSpace(string(out)), "src", "net", "http", "server.go"))
	if err != nil {
		t.Skipf("net/http source: %v", err)
	}
	s := string(src)
	if !strings.Contains(s, "const errorHeaders = "+strconv.Quote(plainErrorHeaders)) {
		t.Errorf("net/http's errorHeaders is no longer %q", plainErrorHeaders)
	}
	statuses := map[string]int{"StatusBadRequest": 400, "StatusNotImplemented": 501}
	if strings.Contains(s, `"431 Request Header Fields Too Large"`) {
		statuses["StatusRequestHeaderFieldsTooLarge"] = 431
	}
	for _, m := range regexp.MustCompile(`statusError\{(Status\w+),`).FindAllStringSubmatch(s, -1) {
		if _, ok := statuses[m[1]]; !ok {
			statuses[m[1]] = 0
		}
	}
	known := map[string]int{"StatusHTTPVersionNotSupported": 505}
	for name, status := range statuses {
		if status == 0 {
			status = known[name]
		}
		if _, ok := transportErrors[status]; !ok || status == 0 {
			t.Errorf("net/http answers %s itself; transportErrors has no entry for it", name)
		}
	}
	if n := strings.Count(s, "fmt.Fprintf(c.rwc, "); n != 4 {
		t.Errorf("net/http writes its own answers in %d places, this test knows 4", n)
	}
}

// TestTransportErrorStatuses: each rewritten answer keeps net/http's status, and
// the status table gives its code that status.
func TestTransportErrorStatuses(t *testing.T) {
	for status, e := range transportErrors {
		if got := Status(e.Code); got != status {
			t.Errorf("net/http's %d is answered with code %q, whose status is %d", status, e.Code, got)
		}
	}
}
