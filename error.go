package agentd

import (
	"errors"
	"fmt"
)

// Error codes. The set is closed: every error a client sees carries one of these,
// and internal/api maps each to exactly one HTTP status.
const (
	EInvalid           = "invalid"             // 422: the request is malformed or fails validation
	EBadRequest        = "bad_request"         // 400: well-formed but not acceptable
	EModelUnavailable  = "model_not_available" // 400: the model is not in the catalog
	EAlreadyExists     = "already_exists"      // 400: a name is taken (NuGen clients match the text)
	EUnauthenticated   = "unauthenticated"     // 401
	EForbidden         = "forbidden"           // 403
	ENotFound          = "not_found"           // 404
	EMethodNotAllowed  = "method_not_allowed"  // 405
	EConflict          = "conflict"            // 409
	ESessionBusy       = "session_busy"        // 409
	EPayloadTooLarge   = "payload_too_large"   // 413
	EInsufficientQuota = "insufficient_quota"  // 402
	ERateLimited       = "rate_limited"        // 429
	EInferenceFailed   = "inference_failed"    // 500
	EUnavailable       = "unavailable"         // 503
	EInternal          = "internal"            // 500

	// Requests that net/http refuses before any handler runs (api.Listener).
	EHeaderTooLarge      = "header_too_large"           // 431: the request line and headers exceed the limit
	ENotImplemented      = "not_implemented"            // 501: a transfer encoding the server does not support
	EVersionNotSupported = "http_version_not_supported" // 505: a protocol version the server does not speak
)

// Error is an error meant for the client: Code picks the status, Message is safe to
// show. Fields carries extra members of the error body (402's required/available).
// Anything that is not an *Error is internal and its text is never shown.
type Error struct {
	Code    string
	Message string
	Fields  map[string]any
	// Violations is set for EInvalid errors that name the offending fields.
	Violations []Violation
}

// Violation is one failed validation rule, in FastAPI's shape.
type Violation struct {
	Loc  []any  `json:"loc"`
	Msg  string `json:"msg"`
	Type string `json:"type"`
}

func (e *Error) Error() string {
	if len(e.Violations) > 0 && e.Message == "" {
		v := e.Violations[0]
		return fmt.Sprintf("agentd: %s: %v: %s", e.Code, v.Loc, v.Msg)
	}
	return fmt.Sprintf("agentd: %s: %s", e.Code, e.Message)
}

// Errorf returns an *Error with the code and a formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Invalid returns an EInvalid error for one field. loc follows FastAPI: the first
// element says where ("body", "header", "query", "path").
func Invalid(msg, typ string, loc ...any) *Error {
	return &Error{Code: EInvalid, Violations: []Violation{{Loc: loc, Msg: msg, Type: typ}}}
}

// ErrorCode returns the code of err, or EInternal when err is not an *Error.
func ErrorCode(err error) string {
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
