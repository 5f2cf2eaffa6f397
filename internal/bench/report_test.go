package bench

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestReportTargets(t *testing.T) {
	cpu := 140 * time.Microsecond
	rep := &Report{SlowNS: int64(50 * time.Millisecond), GrowthMax: 1000, Rows: []Row{
		{ID: "direct", Concurrency: 1, Requests: 100, Throughput: 10000, P50: 100 * time.Microsecond},
		{ID: "proxy", Concurrency: 64, Requests: 100, Throughput: 8000},
		{ID: "chat", Concurrency: 1, Direct: "direct", Requests: 100, P50: 350 * time.Microsecond},
		{ID: "chat", Concurrency: 64, Direct: "direct", Requests: 100, Throughput: 7000, Gateway: "agentd", GatewayCPUPerReq: &cpu, GatewayPeakRSS: 40 << 20},
		{ID: "chat", Concurrency: 256, Requests: 100, P99: 95 * time.Millisecond, Errors: map[string]int64{"status 503": 2}},
		{ID: "postgres", Concurrency: 64, NA: "n/a: needs a PostgreSQL server; measured by BenchmarkReplicas (docs/benchmarks.md)"},
	}}
	rep.finish()
	verdict := func(prefix string) string {
		for _, c := range rep.Targets {
			if strings.HasPrefix(c.Target, prefix) {
				return c.Verdict + " " + c.Measured
			}
		}
		return "no such target"
	}
	want := map[string]string{
		"/v1/chat/completions c=64": "PASS 0.88× (7,000 vs 8,000 req/s)",
		"agentd CPU":                "PASS 140 µs",
		"added p50":                 "PASS +250µs",
		"p99":                       "FAIL 95.0ms",
		"agentd peak RSS":           "PASS 40.0 MiB (chat c=64)",
		"run endpoint":              "not measured —",
		"zero errors":               "FAIL chat c=256: 2",
	}
	for k, v := range want {
		if got := verdict(k); got != v {
			t.Errorf("%s…: %q, want %q", k, got, v)
		}
	}

	var md bytes.Buffer
	rep.WriteMarkdown(&md)
	for _, s := range []string{"| chat | ", "| 1 | ", "+250µs", "n/a: needs a PostgreSQL server", "| target | measured | result |", "2 (status 503: 2)"} {
		if !strings.Contains(md.String(), s) {
			t.Errorf("markdown lacks %q:\n%s", s, md.String())
		}
	}
	var js bytes.Buffer
	if err := rep.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(js.Bytes(), &back); err != nil || len(back.Rows) != len(rep.Rows) || back.Rows[2].AddedP50 == nil || *back.Rows[2].AddedP50 != 250*time.Microsecond {
		t.Errorf("JSON round trip: %v, %+v", err, back.Rows)
	}
}

func TestFormat(t *testing.T) {
	tests := []struct{ got, want string }{
		{num(7234.4), "7,234"},
		{num(1234567), "1,234,567"},
		{num(12.34), "12.3"},
		{dur(412 * time.Microsecond), "412µs"},
		{dur(1234 * time.Microsecond), "1.23ms"},
		{dur(56789 * time.Microsecond), "56.8ms"},
		{dur(2500 * time.Millisecond), "2.50s"},
		{signed(-30 * time.Microsecond), "−30µs"},
	}
	for _, tc := range tests {
		if tc.got != tc.want {
			t.Errorf("%q, want %q", tc.got, tc.want)
		}
	}
}

func TestMatrix(t *testing.T) {
	ids := map[string]bool{}
	for _, s := range matrix() {
		k := s.name()
		if ids[k] {
			t.Errorf("two rows named %q", k)
		}
		ids[k] = true
		if s.na == "" && s.target == nil {
			t.Errorf("%s: no target", k)
		}
	}
	for _, need := range []string{"direct c=1 ", "proxy c=64 ", "chat c=256 ", "chat-slow c=256 ", "direct-slow c=256 ", "run-session c=64 ", "session-growth c=1 ", "ttfb-run c=1 ", "postgres c=64 "} {
		found := false
		for k := range ids {
			if strings.HasPrefix(k, need) {
				found = true
			}
		}
		if !found {
			t.Errorf("no row %q", need)
		}
	}
}
