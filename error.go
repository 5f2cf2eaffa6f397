package agentd

import (
	"errors"
	"fmt"
)

// Code is the kind of an error a client sees. The set is closed: every error a
// client sees carries one of Codes, and internal/api maps each to exactly one HTTP
// status (a test checks that every code has one).
type Code string

// Error codes.
const (
	EInvalid           Code = "invalid"             // 422: the request is malformed or fails validation
	EBadRequest        Code = "bad_request"         // 400: well-formed but not acceptable
	EModelUnavailable  Code = "model_not_available" // 400: the model is not in the catalog
	EAlreadyExists     Code = "already_exists"      // 400: a name is taken (NuGen clients match the text)
	EUnauthenticated   Code = "unauthenticated"     // 401
	EForbidden         Code = "forbidden"           // 403
	ENotFound          Code = "not_found"           // 404
	EMethodNotAllowed  Code = "method_not_allowed"  // 405
	EConflict          Code = "conflict"            // 409
	ESessionBusy       Code = "session_busy"        // 409
	EPayloadTooLarge   Code = "payload_too_large"   // 413
	EHeaderTooLarge    Code = "header_too_large"    // 431: the request line and headers exceed the limit
	EInsufficientQuota Code = "insufficient_quota"  // 402
	ERateLimited       Code = "rate_limited"        // 429
	EInferenceFailed   Code = "inference_failed"    // 500
	EUpstream          Code = "upstream_error"      // 502: the model provider failed or refused agentd
	EUpstreamTimeout   Code = "upstream_timeout"    // 504: the model provider did not answer in time
	EUnavailable       Code = "unavailable"         // 503
	EInternal          Code = "internal"            // 500

	// Requests that net/http refuses before any handler runs (api.Listener).
	ENotImplemented      Code = "not_implemented"            // 501: a transfer encoding the server does not support
	EVersionNotSupported Code = "http_version_not_supported" // 505: a protocol version the server does not speak
)

// Codes lists every error code.
var Codes = []Code{
	EInvalid, EBadRequest, EModelUnavailable, EAlreadyExists, EUnauthenticated, EForbidden, ENotFound,
	EMethodNotAllowed, EConflict, ESessionBusy, EPayloadTooLarge, EHeaderTooLarge, EInsufficientQuota,
	ERateLimited, EInferenceFailed, EUpstream, EUpstreamTimeout, EUnavailable, EInternal, ENotImplemented, EVersionNotSupported,
}

// Error is an error meant for the client: Code picks the status, Message is safe to
// show. Fields carries extra members of the error body (402's required/available).
// Err, when set, is the cause: it is logged, never shown. Anything that is not an
// *Error is internal and its text is never shown.
type Error struct {
	Code    Code
	Message string
	Fields  map[string]any
	// Violations is set for EInvalid errors that name the offending fields.
	Violations []Violation
	Err        error
}

// Violation is one failed validation rule, in FastAPI's shape.
type Violation struct {
	Loc  []any  `json:"loc"`
	Msg  string `json:"msg"`
	Type string `json:"type"`
}

func (e *Error) Error() string {
	msg := e.Message
	if len(e.Violations) > 0 && msg == "" {
		v := e.Violations[0]
		msg = fmt.Sprintf("%v: %s", v.Loc, v.Msg)
	}
	if e.Err != nil {
		return fmt.Sprintf("agentd: %s: %s: %v", e.Code, msg, e.Err)
	}
	return fmt.Sprintf("agentd: %s: %s", e.Code, msg)
}

// Unwrap returns the cause, for errors.Is and errors.As.
func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error with the code and a formatted message.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Invalid returns an EInvalid error for one field. loc follows FastAPI: the first
// element says where ("body", "header", "query", "path").
func Invalid(msg, typ string, loc ...any) *Error {
	return &Error{Code: EInvalid, Violations: []Violation{{Loc: loc, Msg: msg, Type: typ}}}
}

// ErrorCode returns the code of err, or EInternal when err is not an *Error.
func ErrorCode(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	if err == nil {
		return ""
	}
	return EInternal
}

// ErrorMessage returns the client-safe message of err.
func ErrorMessage(err error) string {
	var e *Error
	if errors.As(err, &e) {
		if e.Message == "" && len(e.Violations) > 0 {
			return e.Violations[0].Msg
		}
		return e.Message
	}
	return "internal error"
}
