package anthropic

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/agentd/agentd/internal/llm"
)

// apiError is the error object of an error reply and of a stream's error event:
// {"type": "error", "error": {"type": "...", "message": "..."}, "request_id": "..."}.
type apiError struct {
	Type    string `json:"type"`
	Message string `json:"message"`
	Details struct {
		ErrorCode string `json:"error_code"`
	} `json:"details"`
}

type errorReply struct {
	Type  string   `json:"type"`
	Error apiError `json:"error"`
}

// statusError reads, drains and closes an unsuccessful reply and classifies it.
func statusError(resp *http.Response) *llm.Error {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody)) // a cut body still says something
	io.CopyN(io.Discard, resp.Body, maxErrorBody)                  // so the connection can be reused
	resp.Body.Close()

	var r errorReply
	if json.Unmarshal(body, &r) != nil || r.Error.Message == "" {
		// Not Anthropic's JSON: a proxy or load balancer answered.
		msg := snippet(body)
		if msg == "" {
			msg = http.StatusText(resp.StatusCode)
		}
		r.Error.Message = msg
	}
	return r.Error.llmError(resp.StatusCode, resp.Header)
}

// llmError classifies e, from a reply of the given status (0 for an error inside
// a stream) and header.
func (e *apiError) llmError(status int, h http.Header) *llm.Error {
	err := &llm.Error{Kind: e.kind(status), StatusCode: status, Code: e.Type, Message: e.Message}
	if err.Message == "" {
		err.Message = "anthropic: error of type " + e.Type
	}
	if h != nil {
		err.RetryAfter = llm.ParseRetryAfter(h, time.Now())
	}
	return err
}

func (e *apiError) kind(status int) llm.Kind {
	if e.exhausted(status) {
		return llm.KindExhausted
	}
	if (status == http.StatusBadRequest || e.Type == "invalid_request_error") && contextLength(e.Message) {
		return llm.KindContextLength
	}
	if status != 0 {
		return llm.StatusKind(status)
	}
	switch e.Type {
	case "invalid_request_error", "authentication_error", "permission_error", "not_found_error", "request_too_large":
		return llm.KindPermanent
	}
	// overloaded_error, api_error, rate_limit_error, timeout_error, and types yet
	// to come: a stream that failed after Anthropic accepted the request is most
	// likely a passing fault on its side.
	return llm.KindRetryable
}

// exhausted reports an account that cannot pay for the request: no credit left,
// a spend limit reached, a billing problem. Anthropic reports most of these as
// invalid_request_error, told apart only by their wording.
func (e *apiError) exhausted(status int) bool {
	if status == http.StatusPaymentRequired || e.Type == "billing_error" ||
		e.Details.ErrorCode == "enforced_spend_limit_reached" {
		return true
	}
	if status != http.StatusBadRequest && e.Type != "invalid_request_error" {
		return false
	}
	m := strings.ToLower(e.Message)
	return strings.Contains(m, "credit balance is too low") ||
		strings.Contains(m, "reached your specified api usage limits")
}

// contextLength recognizes Anthropic's "prompt is too long: 208410 tokens > 200000
// maximum" and the older "input length and `max_tokens` exceed context limit".
func contextLength(msg string) bool {
	m := strings.ToLower(msg)
	return strings.Contains(m, "prompt is too long") || strings.Contains(m, "exceed context limit")
}

// snippet is the start of a body that is not Anthropic's JSON, for the log.
func snippet(b []byte) string {
	b = bytes.TrimSpace(b)
	if len(b) > maxSnippet {
		b = b[:maxSnippet]
	}
	return strings.ToValidUTF8(string(b), "")
}
