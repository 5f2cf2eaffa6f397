package run

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/internal/catalog"
	"github.com/agentd/agentd/internal/llm"
)

// Classes of a failed inference: the "class" member of the error body, which the
// API turns into a status (api.inferenceCode; the README's table of errors).
const (
	// ClassInvalidRequest: the provider refused the request itself (upstream 400,
	// 404, 413, 422); the client is told the provider's words.
	ClassInvalidRequest = "invalid_request"
	// ClassContextLength: the prompt does not fit the model's context window.
	ClassContextLength = "context_length_exceeded"
	// ClassProviderAuth: the provider refused agentd's own credentials (401, 403).
	ClassProviderAuth = "provider_auth"
	// ClassProviderQuota: the provider account agentd uses has no quota left.
	ClassProviderQuota = "provider_quota"
	// ClassRateLimited: the provider kept answering 429 through the retries.
	ClassRateLimited = "rate_limited"
	// ClassTimeout: no answer within the run's or the attempt's deadline.
	ClassTimeout = "timeout"
	// ClassUpstream: anything else — 5xx, a network failure, an unreadable or
	// impossible reply.
	ClassUpstream = "upstream_error"
)

// maxUpstreamText bounds the provider's words passed to the client.
const maxUpstreamText = 500

// secretLike matches what looks like an API key in a provider's message, so that
// none reaches a client even from a message about the request.
var secretLike = regexp.MustCompile(`\b(sk|pk|rk|key)-[A-Za-z0-9_\-]{6,}`)

// inferenceError is what the client is told about an inference that failed with
// err on model m (the last one tried): inference_failed, with the class of the
// cause and the run id as members of the body, Retry-After when the provider
// asked for a wait, and the provider's own message only when it is about the
// request. The cause itself is logged, never shown.
func inferenceError(err error, m *catalog.Model, runID string) *agentd.Error {
	var le *llm.Error
	errors.As(err, &le)
	status := 0
	if le != nil {
		status = le.StatusCode
	}
	e := &agentd.Error{Code: agentd.EInferenceFailed, Err: err, Fields: map[string]any{"run_id": runID}}
	var text string
	class := failureClass(err)
	switch class {
	case ClassContextLength:
		text = fmt.Sprintf("the prompt does not fit the context window of model %s: %s", m.ID, upstreamText(le))
	case ClassProviderQuota:
		text = fmt.Sprintf("provider %s has no quota left on agentd's account", m.ProviderName)
	case ClassProviderAuth:
		text = fmt.Sprintf("provider %s refused agentd's credentials (upstream status %d); an operator must fix its key", m.ProviderName, status)
	case ClassInvalidRequest:
		text = fmt.Sprintf("model %s refused the request (upstream status %d): %s", m.ID, status, upstreamText(le))
	case ClassRateLimited:
		wait := max(int((le.RetryAfter+time.Second-1)/time.Second), 1)
		e.Fields["retry_after"] = wait
		text = fmt.Sprintf("provider %s is limiting agentd's rate; retry in %d s", m.ProviderName, wait)
	case ClassTimeout:
		text = fmt.Sprintf("model %s did not answer in time", m.ID)
	case ClassUpstream:
		if status >= 500 {
			text = fmt.Sprintf("model %s failed (upstream status %d)", m.ID, status)
		} else {
			text = fmt.Sprintf("model %s failed (%s)", m.ID, causeOf(err))
		}
	}
	e.Fields["class"] = class
	e.Message = "inference failed: " + text + "; nothing was charged"
	return e
}

// failureClass is the class (Class*) of a failed inference's error: the one
// rule for what the client is told (inferenceError) and what metrics count.
func failureClass(err error) string {
	var le *llm.Error
	errors.As(err, &le)
	status := 0
	if le != nil {
		status = le.StatusCode
	}
	switch kind := llm.KindOf(err); {
	case kind == llm.KindContextLength:
		return ClassContextLength
	case kind == llm.KindExhausted:
		return ClassProviderQuota
	case status == 401 || status == 403:
		return ClassProviderAuth
	case status == 400 || status == 404 || status == 413 || status == 422:
		return ClassInvalidRequest
	case status == 429:
		return ClassRateLimited
	case errors.Is(err, context.DeadlineExceeded):
		return ClassTimeout
	}
	return ClassUpstream
}

// upstreamText is the provider's message of le, without the adapter's prefix,
// keys masked, at most maxUpstreamText bytes.
func upstreamText(le *llm.Error) string {
	if le == nil || le.Message == "" {
		return "no reason given"
	}
	msg := le.Message
	if i := strings.Index(msg, ": "); i > 0 && i < 12 && !strings.Contains(msg[:i], " ") {
		msg = msg[i+2:] // "openai: …", "anthropic: …"
	}
	msg = secretLike.ReplaceAllString(msg, "$1-…")
	if len(msg) > maxUpstreamText {
		cut := maxUpstreamText
		for cut > 0 && msg[cut]&0xC0 == 0x80 { // not inside a rune
			cut--
		}
		msg = msg[:cut] + "…"
	}
	return msg
}

// causeOf names a failure that has no upstream status, without its text.
func causeOf(err error) string {
	var le *llm.Error
	if errors.As(err, &le) {
		return "an unusable or broken-off reply"
	}
	if errors.Is(err, errImpossibleUsage) {
		return "impossible usage reported"
	}
	return "no answer from the provider"
}
