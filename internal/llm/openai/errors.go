package openai

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/agentd/agentd/internal/llm"
)

const (
	// maxErrorBody bounds how much of an error reply is read: enough for any
	// JSON error, little enough that an HTML page from a proxy costs nothing.
	maxErrorBody = 64 << 10
	// maxMessage bounds the message taken from a body that is not a JSON error.
	maxMessage = 200
)

// upstreamError is an error object in any of the shapes compatible servers use:
// OpenAI's {"message", "type", "param", "code"}, with code a string; vLLM's and
// llama.cpp's, with code a number; OpenRouter's {"code": number, "message"};
// Gemini's {"code", "message", "status"}.
type upstreamError struct {
	Message string `json:"message"`
	Type    string `json:"type"`
	Code    code   `json:"code"`
	Status  string `json:"status"`
}

// code is an error code, a string or a number on the wire.
type code struct {
	s string
	n int // the code as a number, 0 if it is not one
}

func (c *code) UnmarshalJSON(b []byte) error {
	switch {
	case len(b) == 0 || b[0] == 'n':
		*c = code{}
		return nil
	case b[0] == '"':
		return json.Unmarshal(b, &c.s)
	}
	c.s = string(b)
	c.n, _ = strconv.Atoi(c.s)
	return nil
}

// name is the code to report: the upstream's symbolic code, else its type, else
// Gemini's status, else the numeric code.
func (e *upstreamError) name() string {
	switch {
	case e.Code.s != "" && e.Code.n == 0:
		return e.Code.s
	case e.Type != "":
		return e.Type
	case e.Status != "":
		return e.Status
	}
	return e.Code.s
}

// errorEnvelope is an error reply. Besides {"error": {...}} it takes the legacy
// vLLM shape, {"object": "error", "message", "type", "code"}, whose fields sit at
// the top level, and {"error": "text"} and FastAPI's {"detail": "text"}.
type errorEnvelope struct {
	Error json.RawMessage `json:"error"`
	upstreamError
	Detail json.RawMessage `json:"detail"`
}

// parseError reads an error body. ok is false when body is not a JSON error.
func parseError(body []byte) (e upstreamError, ok bool) {
	body = bytes.TrimSpace(body)
	if len(body) > 0 && body[0] == '[' { // Gemini wraps its error in an array
		var list []json.RawMessage
		if json.Unmarshal(body, &list) != nil || len(list) == 0 {
			return e, false
		}
		body = list[0]
	}
	var env errorEnvelope
	if err := json.Unmarshal(body, &env); err != nil && !isTypeError(err) {
		return e, false
	}
	if e, ok = parseErrorValue(env.Error); ok {
		return e, true
	}
	e = env.upstreamError
	if e.Message == "" && len(env.Detail) > 0 && env.Detail[0] == '"' {
		json.Unmarshal(env.Detail, &e.Message)
	}
	return e, e.Message != "" || e.name() != ""
}

// parseErrorValue reads the value of an "error" field: an object, or a string
// that is the message.
func parseErrorValue(raw []byte) (e upstreamError, ok bool) {
	raw = bytes.TrimSpace(raw)
	switch {
	case len(raw) > 0 && raw[0] == '{':
		if err := json.Unmarshal(raw, &e); err != nil && !isTypeError(err) {
			return e, false
		}
	case len(raw) > 0 && raw[0] == '"':
		json.Unmarshal(raw, &e.Message)
	}
	return e, e.Message != "" || e.name() != ""
}

// isTypeError reports an error after which json.Unmarshal has still decoded every
// field it could: a field of an unexpected type is skipped, not fatal.
func isTypeError(err error) bool {
	var te *json.UnmarshalTypeError
	return errors.As(err, &te)
}

// statusError classifies a non-2xx reply and closes its body.
func statusError(resp *http.Response) *llm.Error {
	buf := getBuf()
	defer putBuf(buf)
	buf.ReadFrom(io.LimitReader(resp.Body, maxErrorBody)) // what arrived is enough; the status decides
	closeBody(resp.Body)

	status := resp.StatusCode
	e := &llm.Error{
		Kind:       llm.StatusKind(status),
		StatusCode: status,
		RetryAfter: llm.ParseRetryAfter(resp.Header, time.Now()),
	}
	if ue, ok := parseError(buf.Bytes()); ok {
		e.Code, e.Message = ue.name(), ue.Message
		if k := refine(status, &ue); k != llm.KindUnknown {
			e.Kind = k
		}
	}
	if e.Message == "" {
		e.Message = snippet(buf.Bytes())
	}
	if e.Message == "" {
		e.Message = http.StatusText(status)
	}
	e.Message = "openai: " + e.Message
	if e.Kind == llm.KindUnknown { // a 1xx or 3xx the client did not follow
		e.Kind = llm.KindPermanent
	}
	return e
}

// refine returns the kind an upstream error code gives a reply with status, or
// KindUnknown to keep the status's kind.
func refine(status int, e *upstreamError) llm.Kind {
	switch {
	case status == http.StatusPaymentRequired: // OpenRouter: the account has no credits
		return llm.KindExhausted
	case status == http.StatusTooManyRequests && (e.Code.s == "insufficient_quota" || e.Type == "insufficient_quota"):
		return llm.KindExhausted
	case status >= 400 && status < 500 && status != http.StatusTooManyRequests && tooLong(e):
		return llm.KindContextLength
	}
	return llm.KindUnknown
}

// tooLong reports whether e says the prompt exceeds the model's window, as OpenAI,
// Groq and DeepSeek say it with a code, vLLM and Mistral only in words, and
// llama.cpp with its own type.
func tooLong(e *upstreamError) bool {
	if e.Code.s == "context_length_exceeded" || e.Type == "exceed_context_size_error" {
		return true
	}
	m := strings.ToLower(e.Message)
	return strings.Contains(m, "context length") || strings.Contains(m, "context window") ||
		strings.Contains(m, "context size")
}

// bandError classifies the value of an "error" field sent with status 200, inside a stream or
// as the whole reply. There is no HTTP status to go by, so the code decides:
// a numeric code is read as a status (OpenRouter, vLLM and llama.cpp send the
// status they would have used); a server-side code or type is retryable; the rest
// permanent, since an upstream that names no transient cause has most likely
// refused this request and would refuse it again.
func bandError(raw []byte) *llm.Error {
	ue, ok := parseErrorValue(raw)
	if !ok {
		ue.Message = snippet(raw)
	}
	e := &llm.Error{Kind: llm.KindPermanent, Code: ue.name(), Message: "openai: upstream error: " + ue.Message}
	switch n := ue.Code.n; {
	case tooLong(&ue):
		e.Kind = llm.KindContextLength
	case ue.Code.s == "insufficient_quota" || ue.Type == "insufficient_quota" || n == http.StatusPaymentRequired:
		e.Kind = llm.KindExhausted
	case n >= 400 && n < 600:
		e.Kind = llm.StatusKind(n)
	case transient(ue.Code.s) || transient(ue.Type) || transient(ue.Status):
		e.Kind = llm.KindRetryable
	}
	return e
}

// transient reports whether an error code or type names a failure on the server's
// side or a limit that passes, as OpenAI (server_error, rate_limit_exceeded),
// Ollama (api_error), vLLM (InternalServerError) and Gemini (UNAVAILABLE) name
// them.
func transient(s string) bool {
	switch strings.ToLower(s) {
	case "server_error", "internal_error", "internal_server_error", "internalservererror",
		"api_error", "service_unavailable", "serviceunavailableerror", "unavailable",
		"overloaded", "overloaded_error", "timeout", "deadline_exceeded",
		"rate_limit_exceeded", "rate_limit_error", "resource_exhausted":
		return true
	}
	return false
}

// snippet is the start of a body that is not a JSON error, for the log: trimmed,
// at most maxMessage bytes, cut at a rune boundary.
func snippet(b []byte) string {
	b = bytes.TrimSpace(b)
	if len(b) <= maxMessage {
		return strings.ToValidUTF8(string(b), "\uFFFD")
	}
	b = b[:maxMessage]
	for i := 1; i < utf8.UTFMax && len(b) > 0; i++ { // drop a rune cut in two
		if r, size := utf8.DecodeLastRune(b); r != utf8.RuneError || size != 1 {
			break
		}
		b = b[:len(b)-1]
	}
	return strings.ToValidUTF8(string(b), "\uFFFD") + "…"
}

// closeBody drains a little of what is left, so that a finished reply's
// connection can be reused, and closes the body.
func closeBody(body io.ReadCloser) {
	io.CopyN(io.Discard, body, 4<<10)
	body.Close()
}
