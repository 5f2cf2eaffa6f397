package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentd/agentd/client"
)

// BenchmarkRunHTTP measures the whole run path over real HTTP on loopback: auth,
// agent cache, prompt assembly, hold, the offline model, the group-committed ledger
// write (synchronous=FULL) and the JSON response. "session" adds a history load and
// a turn append per run, each parallel client on its own session. "openai" runs
// stateless on an OpenAI-compatible upstream in the same process (zero latency), so
// it adds the adapter: encoding, one HTTP round trip, decoding the reply.
//
//	go test ./cmd/agentd -run XXX -bench RunHTTP -benchtime 5s
//
// AGENTD_BENCH_OBSERVE picks what is observed: "metrics" (the default: metrics
// on, tracing off), "off" (both off) or "all" (metrics, and every run traced and
// exported over OTLP/HTTP to a receiver in the benchmark that reads and drops
// each export).
func BenchmarkRunHTTP(b *testing.B) {
	up := newUpstream(b, nil)
	var env map[string]string
	extra := ""
	switch mode := os.Getenv("AGENTD_BENCH_OBSERVE"); mode {
	case "", "metrics":
	case "off":
		extra = "metrics: {enabled: false}\n"
	case "all":
		sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "application/x-protobuf")
		}))
		b.Cleanup(sink.Close)
		env = map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": sink.URL}
	default:
		b.Fatalf("AGENTD_BENCH_OBSERVE=%q: want off, metrics or all", mode)
	}
	s := startServer(b, fmt.Sprintf(`
providers:
  - {name: up, kind: openai, base_url: %s/v1}
models:
  - {id: gpt-bench, provider: up, upstream_model: gpt-4o-mini, context_window: 128000, max_output_tokens: 4096}
%s`, up.URL, extra), env)
	ctx := context.Background()
	op := s.client(s.Key)
	for name, model := range map[string]string{"bench": "offline", "bench_openai": "gpt-bench"} {
		if _, err := op.CreateAgent(ctx, client.AgentSpec{
			Name: client.Ptr(name), Description: client.Ptr("b"), Model: client.Ptr(model), MaxToken: client.Ptr(64),
			Instructions:   client.Ptr("Answer briefly."),
			Demonstrations: []client.Demonstration{{Input: "ping", Output: "pong"}, {Input: "status?", Output: "all systems nominal"}},
		}); err != nil {
			b.Fatal(err)
		}
	}
	tr := &http.Transport{MaxIdleConnsPerHost: 256, MaxConnsPerHost: 256}
	hc := &http.Client{Transport: tr}
	for _, mode := range []string{"stateless", "session", "openai", "openai-session"} {
		url := s.URL + "/api/v3/agents/run-agents/bench/run"
		if strings.HasPrefix(mode, "openai") {
			url = s.URL + "/api/v3/agents/run-agents/bench_openai/run"
		}
		b.Run(mode, func(b *testing.B) {
			var sessions atomic.Int64
			b.SetParallelism(32) // 64 concurrent clients on 2 cores
			b.ReportAllocs()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				sid := fmt.Sprintf("bench-%d-%d", time.Now().UnixNano(), sessions.Add(1))
				for pb.Next() {
					req, _ := http.NewRequest("POST", url, strings.NewReader(`{"message":"ping"}`))
					req.Header.Set("Authorization", "Bearer "+s.Key)
					if strings.HasSuffix(mode, "session") {
						req.Header.Set("X-Session-ID", sid)
					}
					resp, err := hc.Do(req)
					if err != nil {
						b.Error(err)
						return
					}
					var buf [512]byte
					for {
						if _, err := resp.Body.Read(buf[:]); err != nil {
							break
						}
					}
					resp.Body.Close()
					if resp.StatusCode != 200 {
						b.Errorf("status %d", resp.StatusCode)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "runs/s")
		})
	}
}

// BenchmarkStreamTTFB measures time to first byte of a streamed reply, one
// request at a time: straight from a zero-latency OpenAI-compatible upstream
// (its first content chunk), and through agentd's streaming run endpoint (its
// first delta event) on the same upstream. The difference is agentd's overhead
// before the first token: auth, agent cache, prompt, hold, the upstream request.
//
//	go test ./cmd/agentd -run XXX -bench StreamTTFB -benchtime 2000x
func BenchmarkStreamTTFB(b *testing.B) {
	u := newSlowStreamB(b, []string{"Hello", " there", "!"})
	s := startServer(b, streamConfigB(u.URL), nil)
	op := s.client(s.Key)
	ctx := context.Background()
	if _, err := op.CreateAgent(ctx, client.AgentSpec{Name: client.Ptr("slow"), Description: client.Ptr("d"), Model: client.Ptr("slow"), MaxToken: client.Ptr(64)}); err != nil {
		b.Fatal(err)
	}
	if _, err := op.GrantCredits(ctx, "default", 1000); err != nil {
		b.Fatal(err)
	}
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	cases := []struct {
		name, url, body, key string
		first                string // the line prefix that carries the first token
	}{
		{"upstream", u.URL + "/v1/chat/completions", `{"model":"slow-model","stream":true,"messages":[{"role":"user","content":"hi"}]}`, "", `data: {"id"`},
		{"agentd-run", s.URL + "/api/v3/agents/run-agents/slow/run", `{"message":"hi","stream":true}`, s.Key, "event: delta"},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			ttfb := make([]time.Duration, 0, b.N)
			for b.Loop() {
				req, _ := http.NewRequest("POST", tc.url, strings.NewReader(tc.body))
				if tc.key != "" {
					req.Header.Set("Authorization", "Bearer "+tc.key)
				}
				start := time.Now()
				resp, err := hc.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				br := bufio.NewReader(resp.Body)
				seen := false
				for {
					line, err := br.ReadString('\n')
					if !seen && strings.HasPrefix(line, tc.first) {
						ttfb = append(ttfb, time.Since(start))
						seen = true
					}
					if err != nil {
						break
					}
				}
				resp.Body.Close()
				if !seen || resp.StatusCode != 200 {
					b.Fatalf("status %d, no first token", resp.StatusCode)
				}
			}
			slices.Sort(ttfb)
			b.ReportMetric(float64(ttfb[len(ttfb)/2].Microseconds()), "ttfb-p50-µs")
			b.ReportMetric(float64(ttfb[len(ttfb)*99/100].Microseconds()), "ttfb-p99-µs")
		})
	}
}
