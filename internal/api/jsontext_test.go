package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/agentd/agentd"
)

func TestJSONTextProblem(t *testing.T) {
	for _, tc := range []struct {
		name, data string
		at         int    // -1: accepted
		problem    string // part of the message
	}{
		{"ascii", `{"message":"hi"}`, -1, ""},
		{"utf-8", `{"message":"héllo, 世界, 🙂"}`, -1, ""},
		{"escaped bmp", `{"message":"\u00e9\u4e16"}`, -1, ""},
		{"valid pair", `{"message":"\ud83d\ude42"}`, -1, ""},
		{"valid pair, upper case", `{"message":"\uD83D\uDE42"}`, -1, ""},
		{"two pairs", `{"m":"\ud83d\ude42\ud83d\ude42"}`, -1, ""},
		{"nul escape", `{"m":"\u0000"}`, -1, ""},
		{"last bmp before surrogates", `{"m":"\ud7ff\ue000"}`, -1, ""},
		{"lone high", `{"message":"\ud800"}`, 12, `\ud800`},
		{"lone high at the end of the body", `"\udbff`, 1, `\udbff`},
		{"high then text", `{"m":"\ud83dx"}`, 6, `\ud83d`},
		{"high then another high", `{"m":"\ud83d\ud83d"}`, 6, `\ud83d`},
		{"high then a non-surrogate escape", `{"m":"\ud83d\u0041"}`, 6, `\ud83d`},
		{"high then an escaped newline", `{"m":"\ud83d\n"}`, 6, `\ud83d`},
		{"lone low", `{"m":"\udc00"}`, 6, `\udc00`},
		{"low then high", `{"m":"\ude42\ud83d"}`, 6, `\ude42`},
		{"pair then lone low", `{"m":"\ud83d\ude42\ude42"}`, 18, `\ude42`},
		{"lone surrogate in a key", `{"\ud800":1}`, 2, `\ud800`},
		{"escaped backslash before u", `{"m":"\\ud800"}`, -1, ""},
		{"escaped backslash, then a real escape", `{"m":"\\\ud800"}`, 8, `\ud800`},
		{"two escaped backslashes", `{"m":"\\\\ud800"}`, -1, ""},
		{"escaped quote keeps the string open", `{"m":"\"\ud800"}`, 8, `\ud800`},
		{"outside strings", `{"m":1} \ud800`, -1, ""}, // a syntax error: the decoder's
		{"after a closed string", `{"a":"\\","b":"\udc00"}`, 15, `\udc00`},
		{"short escape", `{"m":"\ud8"}`, -1, ""}, // a syntax error: the decoder's
		{"invalid byte", "{\"m\":\"a\xffb\"}", 7, "invalid UTF-8"},
		{"truncated sequence", "{\"m\":\"\xe4\xb8\"}", 6, "invalid UTF-8"},
		{"overlong slash", "{\"m\":\"\xc0\xaf\"}", 6, "invalid UTF-8"},
		{"overlong nul", "{\"m\":\"\xe0\x80\x80\"}", 6, "invalid UTF-8"},
		{"encoded surrogate", "{\"m\":\"\xed\xa0\x80\"}", 6, "invalid UTF-8"},
		{"beyond U+10FFFF", "{\"m\":\"\xf4\x90\x80\x80\"}", 6, "invalid UTF-8"},
		{"invalid byte outside a string", "\xff{}", 0, "invalid UTF-8"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			at, problem := jsonTextProblem([]byte(tc.data))
			if at != tc.at || !strings.Contains(problem, tc.problem) {
				t.Errorf("jsonTextProblem(%q) = %d %q, want %d %q", tc.data, at, problem, tc.at, tc.problem)
			}
			err := decodeJSON([]byte(tc.data), new(any))
			if tc.at < 0 {
				return
			}
			var e *agentd.Error
			if !errors.As(err, &e) || e.Code != agentd.EInvalid || len(e.Violations) != 1 ||
				e.Violations[0].Type != "json_invalid" || e.Violations[0].Loc[0] != "body" {
				t.Errorf("decodeJSON: %#v", err)
			}
		})
	}
}

// noSilentReplacement is the invariant the fuzz targets check on what they
// accept: a U+FFFD in the result was in the body (as UTF-8 or as an escape),
// never made up by the decoder; and the body was valid UTF-8.
func noSilentReplacement(t *testing.T, body []byte, decoded ...string) {
	t.Helper()
	if !bytes.ContainsRune(body, '\uFFFD') && !strings.Contains(strings.ToLower(string(body)), `\ufffd`) {
		for _, s := range decoded {
			if strings.ContainsRune(s, '\uFFFD') {
				t.Fatalf("accepted %q, decoded to %q with a U+FFFD the client did not send", body, s)
			}
		}
	}
}

// FuzzJSONText holds the scanner against encoding/json itself: on a valid JSON
// text with no U+FFFD of its own, the scanner finds a problem exactly when the
// decoder would put a U+FFFD into one of its strings (keys included).
func FuzzJSONText(f *testing.F) {
	for _, seed := range []string{`{"m":"hi"}`, `{"m":"\ud800"}`, `{"m":"\\ud800"}`, `["\ud83d\ude42","\ude42"]`,
		"{\"m\":\"\xff\"}", `{"\udc00":"\"\\"}`, `"\ud83d\u0041"`} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if !json.Valid(data) || bytes.ContainsRune(data, '\uFFFD') || strings.Contains(strings.ToLower(string(data)), `\ufffd`) {
			return
		}
		replaced := false
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.UseNumber() // 1E700 is valid JSON
		for {
			tok, err := dec.Token()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("valid JSON %q: %v", data, err)
			}
			if s, ok := tok.(string); ok && strings.ContainsRune(s, '\uFFFD') {
				replaced = true
			}
		}
		if at, problem := jsonTextProblem(data); (at >= 0) != replaced {
			t.Fatalf("%q: scanner says %d %q, decoder replaced: %v", data, at, problem, replaced)
		}
	})
}

func BenchmarkCheckJSONText(b *testing.B) {
	plain := []byte(`{"message":"` + strings.Repeat("how do I reset my password? ", 40) + `","stream":false}`)
	escaped := []byte(`{"message":"` + strings.Repeat(`caf\u00e9 \ud83d\ude42 \"quoted\" `, 40) + `"}`)
	for _, bc := range []struct {
		name string
		data []byte
	}{{"plain", plain}, {"escaped", escaped}} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(bc.data)))
			for b.Loop() {
				if err := checkJSONText(bc.data); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
