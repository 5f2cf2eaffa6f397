package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// newSlowStreamB is a zero-latency streaming upstream for benchmarks: it answers
// every chat completion with pieces as chat.completion.chunk events and usage.
func newSlowStreamB(tb testing.TB, pieces []string) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		var b strings.Builder
		for _, p := range pieces {
			fmt.Fprintf(&b, "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"slow\",\"choices\":[{\"index\":0,\"delta\":{\"content\":%q},\"finish_reason\":null}]}\n\n", p)
			w.Write([]byte(b.String()))
			w.(http.Flusher).Flush()
			b.Reset()
		}
		fmt.Fprintf(w, "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"slow\",\"choices\":[],\"usage\":{\"prompt_tokens\":8,\"completion_tokens\":%d,\"total_tokens\":%d}}\n\ndata: [DONE]\n\n", len(pieces), 8+len(pieces))
	}))
	tb.Cleanup(srv.Close)
	return srv
}

func streamConfigB(url string) string {
	return fmt.Sprintf(`
providers:
  - {name: up, kind: openai, base_url: %s/v1, max_retries: 0}
models:
  - {id: slow, provider: up, upstream_model: slow-model, context_window: 100000, max_output_tokens: 1000, price: {input: 1, output: 1}}
`, url)
}
