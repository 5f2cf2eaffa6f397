package metrics

import (
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/internal/run"
)

// TestObservers: what each observer call adds, by its exact series, and the
// exposition a scrape serves.
func TestObservers(t *testing.T) {
	m := New(Options{})
	m.ObserveHTTP("POST /v1/chat/completions", 200, 10, 3*time.Millisecond)
	m.ObserveHTTP("POST /v1/chat/completions", 200, 10, 3*time.Millisecond)
	m.ObserveHTTP("", 404, 10, time.Millisecond)
	m.RunEnded(run.RunEvent{Model: "gpt", OrgName: "acme", Outcome: "ok", Usage: agentd.Usage{InputTokens: 100, OutputTokens: 20, CachedInputTokens: 60, ReasoningTokens: 5}, Cost: 2_500_000})
	m.RunEnded(run.RunEvent{Model: "gpt", OrgName: "acme", Outcome: "failed", Class: run.ClassRateLimited})
	m.RunEnded(run.RunEvent{Model: "gpt", OrgName: "acme", Outcome: run.OutcomeRejected, Class: "insufficient_quota"})
	m.ProviderCalled(run.ProviderCall{Provider: "p", Model: "gpt", Took: time.Second, Class: run.ClassRateLimited, Next: run.NextRetry})
	m.ProviderCalled(run.ProviderCall{Provider: "p", Model: "gpt", Took: time.Second, Class: run.ClassRateLimited, Next: run.NextFallback})
	m.ProviderCalled(run.ProviderCall{Provider: "p", Model: "gpt", Took: time.Second})
	m.Reserved(run.ReservationHold, 1)
	m.Reserved(run.ReservationHold, 1)
	m.Reserved(run.ReservationHold, -1)
	m.Reserved(run.ReservationLease, 1)
	m.ObserveCommit(8, time.Millisecond)
	hits := uint64(0)
	m.WatchCache("keys", func() (uint64, uint64) { hits++; return hits, 2 })

	for _, tc := range []struct {
		got  float64
		want float64
		what string
	}{
		{value(t, m.httpRequests.WithLabelValues("POST /v1/chat/completions", "200")), 2, "requests"},
		{value(t, m.httpRequests.WithLabelValues("unmatched", "404")), 1, "unmatched"},
		{value(t, m.runs.WithLabelValues("gpt", "ok", "")), 1, "ok runs"},
		{value(t, m.runs.WithLabelValues("gpt", "failed", "rate_limited")), 1, "failed runs"},
		{value(t, m.runs.WithLabelValues("gpt", "rejected", "insufficient_quota")), 1, "rejected runs"},
		{value(t, m.tokens.WithLabelValues("gpt", "input")), 100, "input"},
		{value(t, m.tokens.WithLabelValues("gpt", "output")), 20, "output"},
		{value(t, m.tokens.WithLabelValues("gpt", "cached_input")), 60, "cached"},
		{value(t, m.tokens.WithLabelValues("gpt", "cache_write")), 0, "cache write"},
		{value(t, m.tokens.WithLabelValues("gpt", "reasoning")), 5, "reasoning"},
		{value(t, m.credits.WithLabelValues("gpt")), 2.5, "credits"},
		{value(t, m.upErrors.WithLabelValues("p", "rate_limited")), 2, "upstream errors"},
		{value(t, m.retries.WithLabelValues("p", "gpt")), 1, "retries"},
		{value(t, m.fallbacks.WithLabelValues("p", "gpt")), 1, "fallbacks"},
		{value(t, m.holds), 1, "holds"},
		{value(t, m.leases), 1, "leases"},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %v, want %v", tc.what, tc.got, tc.want)
		}
	}

	w := httptest.NewRecorder()
	m.Handler().ServeHTTP(w, httptest.NewRequest("GET", "/metrics", nil))
	body := w.Body.String()
	for _, want := range []string{
		`agentd_cache_requests_total{cache="keys",result="hit"} 1`,
		`agentd_cache_requests_total{cache="keys",result="miss"} 2`,
		`agentd_writer_batch_writes_sum 8`,
		`agentd_upstream_request_duration_seconds_count{model="gpt",provider="p"} 3`,
		"go_goroutines", "process_cpu_seconds_total",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("exposition lacks %q", want)
		}
	}
	if strings.Contains(body, "acme") {
		t.Errorf("organization labels without PerOrg")
	}
}

func TestPerOrg(t *testing.T) {
	m := New(Options{PerOrg: true})
	m.RunEnded(run.RunEvent{Model: "gpt", OrgName: "acme", Outcome: "ok", Usage: agentd.Usage{InputTokens: 7}, Cost: 1})
	m.RunEnded(run.RunEvent{Model: "gpt", OrgName: "beta", Outcome: "ok", Usage: agentd.Usage{InputTokens: 3}})
	if got := value(t, m.tokens.WithLabelValues("gpt", "input", "acme")); got != 7 {
		t.Errorf("acme input = %v", got)
	}
	if got := value(t, m.tokens.WithLabelValues("gpt", "input", "beta")); got != 3 {
		t.Errorf("beta input = %v", got)
	}
	if got := value(t, m.runs.WithLabelValues("gpt", "ok", "")); got != 2 {
		t.Errorf("runs = %v (runs carry no organization)", got)
	}
}

// BenchmarkRunPath is what the observers add to one run that answers: its
// HTTP request, one provider call, a hold, the run's end and its commit.
func BenchmarkRunPath(b *testing.B) {
	m := New(Options{})
	ev := run.RunEvent{Model: "gpt", OrgName: "acme", Outcome: "ok", Usage: agentd.Usage{InputTokens: 100, OutputTokens: 20}, Cost: 100}
	call := run.ProviderCall{Provider: "p", Model: "gpt", Took: time.Millisecond}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			m.Reserved(run.ReservationHold, 1)
			m.ProviderCalled(call)
			m.Reserved(run.ReservationHold, -1)
			m.RunEnded(ev)
			m.ObserveHTTP("POST /api/v3/agents/run-agents/{agent_name}/run", 200, 300, time.Millisecond)
			m.ObserveCommit(1, time.Millisecond)
		}
	})
}

// value is the value of a counter or gauge.
func value(t *testing.T, c prometheus.Metric) float64 {
	t.Helper()
	var d dto.Metric
	if err := c.Write(&d); err != nil {
		t.Fatal(err)
	}
	switch {
	case d.Counter != nil:
		return d.Counter.GetValue()
	case d.Gauge != nil:
		return d.Gauge.GetValue()
	}
	t.Fatalf("%v is neither a counter nor a gauge", c.Desc())
	return 0
}
