package agentd_test

import (
	"encoding/json"
	"math"
	"strings"
	"testing"

	"github.com/agentd/agentd"
)

func TestNormalizeName(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"spaces become underscore", "Support Bot", "support_bot"},
		{"surrounding spaces trimmed", "  Your First Agent ", "your_first_agent"},
		{"runs of separators collapse", "a--b__c", "a_b_c"},
		{"leading non-ascii dropped", "ÄÖ x", "x"},
		{"only punctuation", "!!!", ""},
		{"empty", "", ""},
		{"upper and digits", "ABC123", "abc123"},
		{"already normal", "support_bot", "support_bot"},
		{"leading and trailing underscores", "__a__", "a"},
		{"non-ascii letter inside word splits it", "caféteria", "caf_teria"},
		{"non-ascii digits dropped", "agent ١٢٣", "agent"},
		{"fullwidth letters dropped", "ＡＢＣ bot", "bot"},
		{"kelvin sign is not k", "\u212Aelvin", "elvin"},
		{"dotted capital I is not i", "\u0130d", "d"},
		{"tabs and newlines", "a\tb\nc", "a_b_c"},
		{"emoji between words", "hello 👋 world", "hello_world"},
		{"invalid utf-8", "a\xffb", "a_b"},
		{"mixed case", "GPT-4o Mini", "gpt_4o_mini"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := agentd.NormalizeName(tt.in); got != tt.want {
				t.Errorf("NormalizeName(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func FuzzNormalizeName(f *testing.F) {
	for _, s := range []string{"Support Bot", "  Your First Agent ", "a--b__c", "ÄÖ x", "!!!", "", "ABC123", "a\xffb", "_", "__a__b__", "x\u212A"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := agentd.NormalizeName(s)
		for i := 0; i < len(got); i++ {
			c := got[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
				t.Fatalf("NormalizeName(%q) = %q: byte %q outside [a-z0-9_]", s, got, c)
			}
		}
		if strings.HasPrefix(got, "_") || strings.HasSuffix(got, "_") || strings.Contains(got, "__") {
			t.Fatalf("NormalizeName(%q) = %q: leading, trailing or double underscore", s, got)
		}
		if again := agentd.NormalizeName(got); again != got {
			t.Fatalf("not idempotent: NormalizeName(%q) = %q, NormalizeName(%q) = %q", s, got, got, again)
		}
		hasAlnum := strings.IndexFunc(s, func(r rune) bool {
			return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'
		}) >= 0
		if (got == "") == hasAlnum {
			t.Fatalf("NormalizeName(%q) = %q, but input has ASCII letter/digit = %v", s, got, hasAlnum)
		}
	})
}

func TestMicrosString(t *testing.T) {
	tests := []struct {
		name string
		in   agentd.Micros
		want string
	}{
		{"zero", 0, "0"},
		{"one micro", 1, "0.000001"},
		{"one credit", 1_000_000, "1"},
		{"two and a half", 2_500_000, "2.5"},
		{"minus one micro", -1, "-0.000001"},
		{"many digits", 123_456_789, "123.456789"},
		{"trailing zeros trimmed", 1_230_000, "1.23"},
		{"negative whole", -3_000_000, "-3"},
		{"max int64", math.MaxInt64, "9223372036854.775807"},
		{"min int64", math.MinInt64, "-9223372036854.775808"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.in.String(); got != tt.want {
				t.Errorf("Micros(%d).String() = %q, want %q", int64(tt.in), got, tt.want)
			}
			js, err := json.Marshal(struct {
				V agentd.Micros `json:"v"`
			}{tt.in})
			if err != nil {
				t.Fatalf("json.Marshal: %v", err)
			}
			if want := `{"v":` + tt.want + `}`; string(js) != want {
				t.Errorf("json = %s, want %s", js, want)
			}
			// The JSON is a number that decodes back to the same amount of credits.
			var back struct{ V json.Number }
			if err := json.Unmarshal(js, &back); err != nil {
				t.Fatalf("decode %s: %v", js, err)
			}
			if back.V.String() != tt.want {
				t.Errorf("decoded %s, want %s", back.V, tt.want)
			}
		})
	}
}

func TestCreditsToMicros(t *testing.T) {
	tests := []struct {
		name    string
		in      float64
		want    agentd.Micros
		wantErr bool
	}{
		{"zero", 0, 0, false},
		{"one", 1, 1_000_000, false},
		{"fraction", 2.5, 2_500_000, false},
		{"float noise", 0.1 + 0.2, 300_000, false},
		{"rounds down below half", 0.0000004, 0, false},
		{"rounds up above half", 0.0000006, 1, false},
		{"smallest unit", 0.000001, 1, false},
		{"negative rounds away", -0.0000006, -1, false},
		{"negative", -2.5, -2_500_000, false},
		{"limit", 1e12, agentd.MaxMicros, false},
		{"negative limit", -1e12, -agentd.MaxMicros, false},
		{"above limit", 1.000001e12, 0, true},
		{"the grant that once overflowed", 9e12, 0, true},
		{"way above limit", 1e300, 0, true},
		{"NaN", math.NaN(), 0, true},
		{"+Inf", math.Inf(1), 0, true},
		{"-Inf", math.Inf(-1), 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := agentd.CreditsToMicros(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("CreditsToMicros(%v) = %d, want error", tt.in, got)
				}
				return
			}
			if err != nil {
				t.Fatalf("CreditsToMicros(%v): %v", tt.in, err)
			}
			if got != tt.want {
				t.Errorf("CreditsToMicros(%v) = %d, want %d", tt.in, got, tt.want)
			}
		})
	}
}

func TestPriceCost(t *testing.T) {
	oneTwo := agentd.Price{InputPerM: 1_000_000, OutputPerM: 2_000_000} // 1 and 2 credits per million tokens
	tests := []struct {
		name          string
		price         agentd.Price
		input, output int
		want          agentd.Micros
	}{
		{"nothing used", oneTwo, 0, 0, 0},
		{"exact micro", oneTwo, 1, 0, 1},
		{"input and output", oneTwo, 1, 1, 3},
		{"a million input tokens", oneTwo, 1_000_000, 0, 1_000_000},
		{"a million of each", oneTwo, 1_000_000, 1_000_000, 3_000_000},
		{"fraction rounds up", agentd.Price{InputPerM: 2_500_000}, 1, 0, 3},
		{"tiny fraction rounds up", agentd.Price{InputPerM: 1}, 1, 0, 1},
		{"just under a micro rounds up", agentd.Price{InputPerM: 999_999}, 1, 0, 1},
		{"just over a micro rounds up to two", agentd.Price{InputPerM: 1_000_001}, 1, 0, 2},
		{"zero price", agentd.Price{}, 123_456, 654_321, 0},
		{"zero input price", agentd.Price{OutputPerM: 10_000_000}, 1_000_000, 100, 1_000},
		// 1e6 credits per million tokens (the config maximum) over two million
		// tokens each way: 4e18 micro-token-products, still inside int64.
		{"large values", agentd.Price{InputPerM: 1e12, OutputPerM: 1e12}, 2_000_000, 2_000_000, 4e12},
		{"large odd values", agentd.Price{InputPerM: 2_500_001, OutputPerM: 10_000_003}, 1_000_000, 128_000, 2_500_001 + 1_280_001},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.price.Cost(tt.input, tt.output)
			if got != tt.want {
				t.Errorf("%+v.Cost(%d, %d) = %d, want %d", tt.price, tt.input, tt.output, got, tt.want)
			}
			if got < 0 {
				t.Errorf("negative cost %d", got)
			}
		})
	}
}

// TestPriceCharge: each part of the input at its own price, parts clamped to the
// whole, the sum rounded up once, MaxCost at the highest input price.
func TestPriceCharge(t *testing.T) {
	p := agentd.Price{InputPerM: 3_000_000, CachedInputPerM: 300_000, CacheWritePerM: 3_750_000, OutputPerM: 15_000_000}
	for _, tc := range []struct {
		name string
		t    agentd.Tokens
		want agentd.Micros
	}{
		{"no cache", agentd.Tokens{Input: 1000, Output: 50}, 3750},
		{"reads and writes", agentd.Tokens{Input: 1000, CachedInput: 800, CacheWrite: 100, Output: 50}, 300 + 240 + 375 + 750},
		{"all read", agentd.Tokens{Input: 1000, CachedInput: 1000}, 300},
		{"parts past the whole count as the whole", agentd.Tokens{Input: 10, CachedInput: 8, CacheWrite: 50}, 10}, // 8×0.3 + 2×3.75 = 9.9 µ-credits
		{"negative parts count as none", agentd.Tokens{Input: 1000, CachedInput: -5, CacheWrite: -5}, 3000},
		{"one rounding for the sum", agentd.Tokens{Input: 3, CachedInput: 1, CacheWrite: 2}, 8}, // 0.3 + 7.5 = 7.8, not 1 + 8
		{"overflow is the maximum", agentd.Tokens{Input: 1 << 62, Output: 1 << 62}, agentd.MaxMicros},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := p.Charge(tc.t); got != tc.want {
				t.Errorf("Charge(%+v) = %d, want %d", tc.t, got, tc.want)
			}
		})
	}
	if got := p.MaxCost(1000, 50); got != 3750+750 { // 1000 at 3.75 + 50 at 15
		t.Errorf("MaxCost = %d, want %d", got, 3750+750)
	}
	if got := (agentd.Price{InputPerM: 1_000_000, OutputPerM: 2_000_000}).Charge(agentd.Tokens{Input: 1, Output: 1}); got != 3 {
		t.Errorf("without cache prices, Charge = %d, want Cost's 3", got)
	}
}

func TestPrincipalCan(t *testing.T) {
	all := agentd.AllScopes
	tests := []struct {
		name   string
		scopes []agentd.Scope
		can    []agentd.Scope // everything else must be refused
	}{
		{"no scopes", nil, nil},
		{"operator has all", []agentd.Scope{agentd.ScopeOperator}, all},
		{"admin has all but operator", []agentd.Scope{agentd.ScopeAdmin},
			[]agentd.Scope{agentd.ScopeAdmin, agentd.ScopeAgentsWrite, agentd.ScopeAgentsRead, agentd.ScopeRun, agentd.ScopeUsage}},
		{"agents:write implies agents:read", []agentd.Scope{agentd.ScopeAgentsWrite},
			[]agentd.Scope{agentd.ScopeAgentsWrite, agentd.ScopeAgentsRead}},
		{"agents:read only reads", []agentd.Scope{agentd.ScopeAgentsRead}, []agentd.Scope{agentd.ScopeAgentsRead}},
		{"run only run", []agentd.Scope{agentd.ScopeRun}, []agentd.Scope{agentd.ScopeRun}},
		{"usage only usage", []agentd.Scope{agentd.ScopeUsage}, []agentd.Scope{agentd.ScopeUsage}},
		{"run and usage", []agentd.Scope{agentd.ScopeRun, agentd.ScopeUsage}, []agentd.Scope{agentd.ScopeRun, agentd.ScopeUsage}},
		{"unknown scope grants nothing", []agentd.Scope{"root"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &agentd.Principal{Scopes: tt.scopes}
			for _, s := range all {
				want := false
				for _, c := range tt.can {
					want = want || c == s
				}
				if got := p.Can(s); got != want {
					t.Errorf("Principal%v.Can(%q) = %v, want %v", tt.scopes, s, got, want)
				}
			}
		})
	}
}

func TestValidScope(t *testing.T) {
	for _, s := range agentd.AllScopes {
		if !agentd.ValidScope(s) {
			t.Errorf("ValidScope(%q) = false", s)
		}
	}
	for _, s := range []agentd.Scope{"", "root", "Run", "agents"} {
		if agentd.ValidScope(s) {
			t.Errorf("ValidScope(%q) = true", s)
		}
	}
}

func TestErrorCode(t *testing.T) {
	tests := []struct {
		name     string
		err      error
		wantCode agentd.Code
		wantMsg  string
	}{
		{"nil", nil, "", "internal error"},
		{"agentd error", agentd.Errorf(agentd.ENotFound, "agent %q not found", "x"), agentd.ENotFound, `agent "x" not found`},
		{"wrapped", wrapErr(agentd.Errorf(agentd.EConflict, "busy")), agentd.EConflict, "busy"},
		{"plain error is internal", errPlain("disk on fire"), agentd.EInternal, "internal error"},
		{"violation message", agentd.Invalid("Field required", "missing", "body", "message"), agentd.EInvalid, "Field required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := agentd.ErrorCode(tt.err); got != tt.wantCode {
				t.Errorf("ErrorCode = %q, want %q", got, tt.wantCode)
			}
			if got := agentd.ErrorMessage(tt.err); got != tt.wantMsg {
				t.Errorf("ErrorMessage = %q, want %q", got, tt.wantMsg)
			}
		})
	}
}

type errPlain string

func (e errPlain) Error() string { return string(e) }

type wrapped struct{ err error }

func (w wrapped) Error() string { return "op: " + w.err.Error() }
func (w wrapped) Unwrap() error { return w.err }

func wrapErr(err error) error { return wrapped{err} }

func TestNewID(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		id := agentd.NewID("agent")
		rest, ok := strings.CutPrefix(id, "agent-")
		if !ok || len(rest) != 16 {
			t.Fatalf("NewID = %q, want agent- and 16 characters", id)
		}
		if strings.Trim(rest, "abcdefghijklmnopqrstuvwxyz234567") != "" {
			t.Fatalf("NewID = %q has characters outside lowercase base32", id)
		}
		if seen[id] {
			t.Fatalf("NewID repeated %q", id)
		}
		seen[id] = true
	}
}

func TestPriceCostSaturates(t *testing.T) {
	max := agentd.Price{InputPerM: agentd.MaxMicros, OutputPerM: agentd.MaxMicros}
	tests := []struct {
		name          string
		price         agentd.Price
		input, output int
		want          agentd.Micros
	}{
		{"2^62 tokens at a small price", agentd.Price{InputPerM: 1_000_000}, 1 << 62, 0, agentd.MaxMicros},
		{"2^62 output tokens", agentd.Price{OutputPerM: 3}, 0, 1 << 62, 13_835_058_055_283}, // ⌈2^62·3/10^6⌉
		{"both huge", max, 1 << 62, 1 << 62, agentd.MaxMicros},
		{"negative counts are zero", agentd.Price{InputPerM: 1_000_000}, -5, -1 << 62, 0},
		{"negative prices are zero", agentd.Price{InputPerM: -1_000_000}, 10, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.price.Cost(tt.input, tt.output); got != tt.want {
				t.Errorf("Cost(%d, %d) = %d, want %d", tt.input, tt.output, got, tt.want)
			}
		})
	}
}

func TestAddMicros(t *testing.T) {
	tests := []struct {
		a, b   agentd.Micros
		want   agentd.Micros
		wantOK bool
	}{
		{1, 2, 3, true},
		{agentd.MaxMicros, 0, agentd.MaxMicros, true},
		{agentd.MaxMicros, 1, 0, false},
		{-agentd.MaxMicros, -1, 0, false},
		{agentd.MaxMicros, -agentd.MaxMicros, 0, true},
		{9e18, 9e18, 0, false}, // each beyond the cap
	}
	for _, tt := range tests {
		got, ok := agentd.AddMicros(tt.a, tt.b)
		if ok != tt.wantOK || (ok && got != tt.want) {
			t.Errorf("AddMicros(%d, %d) = %d, %v; want %d, %v", tt.a, tt.b, got, ok, tt.want, tt.wantOK)
		}
	}
}
