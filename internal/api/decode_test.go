package api

import (
	"bytes"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/agentd/agentd"
)

func TestDecodeRun(t *testing.T) {
	s := &Server{MaxBodyBytes: 1024, MaxMessageChars: 10}
	cases := []struct {
		name, body, session string
		wantMsg             string
		wantCode            agentd.Code
		wantLoc             string
	}{
		{name: "ok", body: `{"message":"hi"}`, wantMsg: "hi"},
		{name: "extra keys tolerated", body: `{"message":"hi","stream":false,"x":{"y":1}}`, wantMsg: "hi"},
		{name: "session ok", body: `{"message":"hi"}`, session: "a.b_c:d-1", wantMsg: "hi"},
		{name: "ten runes", body: `{"message":"éééééééééé"}`, wantMsg: "éééééééééé"},
		{name: "eleven runes", body: `{"message":"ééééééééééé"}`, wantCode: agentd.EInvalid, wantLoc: "message"},
		{name: "empty body", body: ``, wantCode: agentd.EInvalid, wantLoc: "body"},
		{name: "null message", body: `{"message":null}`, wantCode: agentd.EInvalid, wantLoc: "message"},
		{name: "number message", body: `{"message":1}`, wantCode: agentd.EInvalid, wantLoc: "message"},
		{name: "array body", body: `[1]`, wantCode: agentd.EInvalid, wantLoc: "body"},
		{name: "truncated", body: `{"message":"hi"`, wantCode: agentd.EInvalid, wantLoc: "body"},
		{name: "too large", body: `{"message":"` + strings.Repeat("a", 2000) + `"}`, wantCode: agentd.EPayloadTooLarge},
		{name: "bad session", body: `{"message":"hi"}`, session: "has space", wantCode: agentd.EInvalid, wantLoc: "X-Session-ID"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("POST", "/run", strings.NewReader(tc.body))
			if tc.session != "" {
				r.Header.Set("X-Session-ID", tc.session)
			}
			in, err := s.decodeRun(httptest.NewRecorder(), r)
			var msg, sid string
			if in != nil {
				msg, sid = in.msg, in.sid
			}
			if code := agentd.ErrorCode(err); code != tc.wantCode {
				t.Fatalf("code %q, want %q (err %v)", code, tc.wantCode, err)
			}
			if err != nil {
				var e *agentd.Error
				errors.As(err, &e)
				if tc.wantLoc != "" && (len(e.Violations) == 0 || !strings.Contains(strings.Join(locStrings(e.Violations[0].Loc), "."), tc.wantLoc)) {
					t.Errorf("violations %+v do not name %q", e.Violations, tc.wantLoc)
				}
				return
			}
			if msg != tc.wantMsg || sid != tc.session {
				t.Errorf("got %q %q", msg, sid)
			}
		})
	}
}

func locStrings(loc []any) []string {
	out := make([]string, len(loc))
	for i, l := range loc {
		switch v := l.(type) {
		case string:
			out[i] = v
		default:
			out[i] = "#"
		}
	}
	return out
}

// FuzzDecodeRun: any body and session header either decodes to a valid message or
// fails with a client error; never a panic, never an internal error.
func FuzzDecodeRun(f *testing.F) {
	for _, seed := range []string{`{"message":"hi"}`, `{"message":""}`, `{}`, `[]`, `{"message":1}`, `{"message":"\u0000"}`, "\xff", `{"message":"a","message":"b"}`,
		`{"message":"\ud83d\ude42"}`, `{"message":"\ud800"}`, `{"message":"\\ud800"}`, "{\"message\":\"\xc0\xaf\"}"} {
		f.Add([]byte(seed), "sess-1")
	}
	s := &Server{MaxBodyBytes: 4096, MaxMessageChars: 64}
	f.Fuzz(func(t *testing.T, body []byte, session string) {
		r := httptest.NewRequest(http.MethodPost, "/run", bytes.NewReader(body))
		if session != "" {
			r.Header["X-Session-Id"] = []string{session}
		}
		in, err := s.decodeRun(httptest.NewRecorder(), r)
		var msg, sid string
		if in != nil {
			msg, sid = in.msg, in.sid
		}
		if err != nil {
			code := agentd.ErrorCode(err)
			if code != agentd.EInvalid && code != agentd.EPayloadTooLarge {
				t.Fatalf("unexpected error code %q: %v", code, err)
			}
			if Status(code) >= 500 {
				t.Fatalf("client input produced a %d", Status(code))
			}
			return
		}
		if msg == "" || !utf8.ValidString(msg) || utf8.RuneCountInString(msg) > s.MaxMessageChars {
			t.Fatalf("accepted invalid message %q", msg)
		}
		if !utf8.Valid(body) {
			t.Fatalf("accepted a body that is not UTF-8: %q", body)
		}
		noSilentReplacement(t, body, msg)
		if sid != "" && !sessionIDPattern.MatchString(sid) {
			t.Fatalf("accepted invalid session id %q", sid)
		}
	})
}

// TestStatusTable: every error code of the closed set has its own entry in the
// one status table, with exactly the status DESIGN.md gives it.
func TestStatusTable(t *testing.T) {
	want := map[agentd.Code]int{
		agentd.EInvalid: 422, agentd.EBadRequest: 400, agentd.EModelUnavailable: 400, agentd.EAlreadyExists: 400,
		agentd.EUnauthenticated: 401, agentd.EForbidden: 403, agentd.ENotFound: 404, agentd.EMethodNotAllowed: 405,
		agentd.EConflict: 409, agentd.ESessionBusy: 409, agentd.EPayloadTooLarge: 413, agentd.EHeaderTooLarge: 431,
		agentd.EInsufficientQuota: 402, agentd.ERateLimited: 429, agentd.EInferenceFailed: 500, agentd.EUpstream: 502, agentd.EUpstreamTimeout: 504,
		agentd.ENotImplemented: 501, agentd.EVersionNotSupported: 505, agentd.EUnavailable: 503, agentd.EInternal: 500,
	}
	for _, code := range agentd.Codes {
		status, ok := statuses[code]
		if !ok {
			t.Errorf("code %q has no status", code)
			continue
		}
		if status != want[code] {
			t.Errorf("Status(%q) = %d, want %d", code, status, want[code])
		}
	}
	if len(statuses) != len(agentd.Codes) || len(want) != len(agentd.Codes) {
		t.Errorf("statuses has %d codes, agentd.Codes %d, this test %d", len(statuses), len(agentd.Codes), len(want))
	}
}
