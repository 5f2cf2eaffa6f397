package run

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/internal/catalog"
	"github.com/agentd/agentd/internal/llm"
)

// TestInferenceErrorClasses: every kind of provider failure gets its class, the
// run id, a Retry-After for rate limits, and the provider's words only when they
// are about the request — keys masked, length bounded.
func TestInferenceErrorClasses(t *testing.T) {
	m := &catalog.Model{ID: "gpt-x", ProviderName: "acme"}
	long := strings.Repeat("é", 400) // 800 bytes
	for _, tc := range []struct {
		name    string
		err     error
		class   string
		says    string
		hides   string
		retryIn int
	}{
		{"bad parameter", &llm.Error{Kind: llm.KindPermanent, StatusCode: 400, Message: "openai: Invalid 'seed': key sk-live-1234567890"},
			ClassInvalidRequest, "model gpt-x refused the request (upstream status 400): Invalid 'seed': key sk-…", "1234567890", 0},
		{"unknown upstream model", &llm.Error{Kind: llm.KindPermanent, StatusCode: 404, Message: "openai: The model `x` does not exist"},
			ClassInvalidRequest, "(upstream status 404): The model `x` does not exist", "", 0},
		{"too large", &llm.Error{Kind: llm.KindPermanent, StatusCode: 413, Message: "anthropic: request_too_large"}, ClassInvalidRequest, "413", "", 0},
		{"unprocessable", &llm.Error{Kind: llm.KindPermanent, StatusCode: 422, Message: "openai: " + long}, ClassInvalidRequest, "…", long, 0},
		{"context length", &llm.Error{Kind: llm.KindContextLength, StatusCode: 400, Message: "openai: This model's maximum context length is 8192 tokens. However, you requested 9000 tokens"},
			ClassContextLength, "the prompt does not fit the context window of model gpt-x: This model's maximum context length is 8192 tokens. However, you requested 9000 tokens", "", 0},
		{"wrong key", &llm.Error{Kind: llm.KindPermanent, StatusCode: 401, Message: "openai: Incorrect API key provided: sk-abc"},
			ClassProviderAuth, "provider acme refused agentd's credentials (upstream status 401)", "Incorrect", 0},
		{"forbidden", &llm.Error{Kind: llm.KindPermanent, StatusCode: 403, Message: "anthropic: permission denied for org"}, ClassProviderAuth, "403", "permission", 0},
		{"out of quota", &llm.Error{Kind: llm.KindExhausted, StatusCode: 429, Message: "openai: You exceeded your current quota"},
			ClassProviderQuota, "provider acme has no quota left", "exceeded", 0},
		{"rate limited", &llm.Error{Kind: llm.KindRetryable, StatusCode: 429, RetryAfter: 2500 * time.Millisecond, Message: "openai: Rate limit reached for org-123"},
			ClassRateLimited, "retry in 3 s", "org-123", 3},
		{"rate limited, no wait given", &llm.Error{Kind: llm.KindRetryable, StatusCode: 429}, ClassRateLimited, "retry in 1 s", "", 1},
		{"server error", &llm.Error{Kind: llm.KindRetryable, StatusCode: 503, Message: "openai: upstream connect error, internal host 10.0.0.7"},
			ClassUpstream, "model gpt-x failed (upstream status 503)", "10.0.0.7", 0},
		{"connection refused", fmt.Errorf("post: %w", errors.New("dial tcp 10.0.0.7:443: connection refused")), ClassUpstream, "no answer from the provider", "10.0.0.7", 0},
		{"broken stream", &llm.Error{Kind: llm.KindRetryable, Message: "openai: stream ended without [DONE]"}, ClassUpstream, "broken-off reply", "DONE", 0},
		{"deadline", fmt.Errorf("post: %w", context.DeadlineExceeded), ClassTimeout, "model gpt-x did not answer in time", "", 0},
		{"impossible usage", fmt.Errorf("%w: 1 input", errImpossibleUsage), ClassUpstream, "impossible usage reported", "", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := inferenceError(tc.err, m, "run-1")
			if e.Code != agentd.EInferenceFailed || e.Fields["class"] != tc.class || e.Fields["run_id"] != "run-1" {
				t.Errorf("code %s, fields %v; want inference_failed, class %s, run-1", e.Code, e.Fields, tc.class)
			}
			if !strings.Contains(e.Message, tc.says) || !strings.HasSuffix(e.Message, "; nothing was charged") {
				t.Errorf("message %q does not say %q", e.Message, tc.says)
			}
			if tc.hides != "" && strings.Contains(e.Message, tc.hides) {
				t.Errorf("message %q passes on %q", e.Message, tc.hides)
			}
			if ra, _ := e.Fields["retry_after"].(int); ra != tc.retryIn {
				t.Errorf("retry_after %v, want %d", e.Fields["retry_after"], tc.retryIn)
			}
			if !errors.Is(e, tc.err) && e.Err != tc.err {
				t.Errorf("the cause is not kept for the log")
			}
		})
	}
}

// TestValidUsageParts: cache and reasoning parts beyond their totals, or
// negative, are impossible usage; parts within them are not.
func TestValidUsageParts(t *testing.T) {
	m := &catalog.Model{ID: "m", ContextWindow: 1000, MaxOutputTokens: 100}
	for _, tc := range []struct {
		u  llm.Usage
		ok bool
	}{
		{llm.Usage{InputTokens: 100, OutputTokens: 10, CachedInputTokens: 60, CacheWriteTokens: 40, ReasoningTokens: 10}, true},
		{llm.Usage{InputTokens: 100, CachedInputTokens: 101}, false},
		{llm.Usage{InputTokens: 100, CachedInputTokens: 60, CacheWriteTokens: 41}, false},
		{llm.Usage{InputTokens: 100, OutputTokens: 10, ReasoningTokens: 11}, false},
		{llm.Usage{InputTokens: 100, CachedInputTokens: -1}, false},
		{llm.Usage{OutputTokens: 10, ReasoningTokens: -1}, false},
	} {
		if err := validUsage(tc.u, m, 1); (err == nil) != tc.ok || (err != nil && !errors.Is(err, errImpossibleUsage)) {
			t.Errorf("validUsage(%+v) = %v, want ok %v", tc.u, err, tc.ok)
		}
	}
}
