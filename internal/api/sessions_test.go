package api

import (
	"errors"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/agentd/agentd"
)

func TestSessionPage(t *testing.T) {
	cases := []struct {
		name, query string
		wantLimit   int
		wantCursor  string
		wantType    string // violation type when invalid
	}{
		{name: "defaults", query: "", wantLimit: defaultSessionPage},
		{name: "limit and cursor", query: "limit=5&cursor=abc", wantLimit: 5, wantCursor: "abc"},
		{name: "largest", query: "limit=100", wantLimit: 100},
		{name: "empty limit is the default", query: "limit=", wantLimit: defaultSessionPage},
		{name: "zero", query: "limit=0", wantType: "greater_than_equal"},
		{name: "negative", query: "limit=-3", wantType: "greater_than_equal"},
		{name: "too large", query: "limit=101", wantType: "less_than_equal"},
		{name: "not a number", query: "limit=ten", wantType: "int_parsing"},
		{name: "fraction", query: "limit=1.5", wantType: "int_parsing"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			limit, cursor, err := sessionPage(httptest.NewRequest("GET", "/x?"+tc.query, nil))
			if tc.wantType != "" {
				var e *agentd.Error
				if !errors.As(err, &e) || e.Code != agentd.EInvalid || len(e.Violations) != 1 || e.Violations[0].Type != tc.wantType {
					t.Fatalf("err = %#v, want %s", err, tc.wantType)
				}
				return
			}
			if err != nil || limit != tc.wantLimit || cursor != tc.wantCursor {
				t.Errorf("= %d, %q, %v; want %d, %q", limit, cursor, err, tc.wantLimit, tc.wantCursor)
			}
		})
	}
}

// TestPathSessionID: a session id in a path follows the rule of X-Session-ID.
func TestPathSessionID(t *testing.T) {
	for _, tc := range []struct {
		id string
		ok bool
	}{
		{"a.b_c:d-1", true},
		{strings.Repeat("s", 128), true},
		{strings.Repeat("s", 129), false},
		{"", false},
		{"has space", false},
		{"a/b", false},
		{"é", false},
	} {
		r := httptest.NewRequest("GET", "/x", nil)
		r.SetPathValue("session_id", tc.id)
		got, err := pathSessionID(r)
		h := httptest.NewRequest("POST", "/run", nil)
		h.Header.Set("X-Session-ID", tc.id)
		_, headerErr := sessionID(h)
		if tc.ok != (err == nil) || (err == nil) != (headerErr == nil) || (err == nil && got != tc.id) {
			t.Errorf("%q: path %q, %v; header %v; want ok=%v", tc.id, got, err, headerErr, tc.ok)
		}
		if err != nil && agentd.ErrorCode(err) != agentd.EInvalid {
			t.Errorf("%q: code %q", tc.id, agentd.ErrorCode(err))
		}
	}
}
