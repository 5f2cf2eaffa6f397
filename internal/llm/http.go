package llm

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Helpers shared by the HTTP adapters, so every adapter classifies the same
// failure the same way.

// StatusKind classifies an upstream HTTP status: 408, 409 (OpenAI's "try again"
// lock conflict), 429 and 5xx (including Anthropic's 529) are retryable; any other
// status that is not a success is permanent.
func StatusKind(status int) Kind {
	switch {
	case status == http.StatusRequestTimeout, status == http.StatusConflict,
		status == http.StatusTooManyRequests, status >= 500:
		return KindRetryable
	case status >= 400:
		return KindPermanent
	}
	return KindUnknown
}

// ParseRetryAfter reads the delay an upstream asked for: OpenAI's retry-after-ms,
// else Retry-After in seconds or as an HTTP date. It returns 0 when there is none
// or it is unparseable, and caps the delay at an hour.
func ParseRetryAfter(h http.Header, now time.Time) time.Duration {
	const ceiling = time.Hour
	if v := h.Get("Retry-After-Ms"); v != "" {
		if ms, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil && ms > 0 {
			return min(time.Duration(ms*float64(time.Millisecond)), ceiling)
		}
	}
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseFloat(v, 64); err == nil {
		if s <= 0 {
			return 0
		}
		return min(time.Duration(s*float64(time.Second)), ceiling)
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return min(d, ceiling)
		}
	}
	return 0
}

// TransportError classifies a failure to get or read a reply (as opposed to a
// reply that says failure): the caller's cancellation is permanent, everything
// else — deadlines, refused or reset connections, a body cut short — retryable.
// ctx is the request's context; its error wins over the transport's wording.
func TransportError(ctx context.Context, what string, err error) *Error {
	if cerr := ctx.Err(); cerr != nil {
		kind := KindPermanent
		if errors.Is(cerr, context.DeadlineExceeded) {
			kind = KindRetryable
		}
		return &Error{Kind: kind, Message: what + ": " + cerr.Error(), Err: cerr}
	}
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF // an EOF where a reply should continue is a cut
	}
	return &Error{Kind: KindRetryable, Message: what + ": " + err.Error(), Err: err}
}
