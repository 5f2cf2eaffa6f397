// Package reqlog gives every HTTP request an id and carries it, with the
// request's route, organization and key, in the request's context, so that
// every log line written while the request is served names them (Handler). Its
// Middleware answers the id in X-Request-ID on every response, writes the
// access log when asked, and tells a metrics observer how each request ended.
// Handler also keeps secrets, and unless asked message contents, out of logs.
package reqlog

import (
	"context"

	"github.com/agentd/agentd"
)

// Header is the request id's header: taken from the request when well formed
// (ValidID), else minted; always answered.
const Header = "X-Request-ID"

// MaxIDLen bounds a request id a client may choose.
const MaxIDLen = 128

// ValidID reports whether id may be taken from a client: 1 to 128 of
// A-Za-z0-9 . _ : - (the rule of X-Session-ID), so that it is safe in logs,
// headers and JSON as it is.
func ValidID(id string) bool {
	if len(id) == 0 || len(id) > MaxIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == ':' || c == '-') {
			return false
		}
	}
	return true
}

// NewID mints a request id: "req-" and 16 random base32 characters.
func NewID() string { return agentd.NewID("req") }

// Info is what a request's log lines say about it. Middleware puts it in the
// request's context with the id; the API sets the route once it is matched
// and the organization and key once the caller is authenticated. It belongs to
// the request's goroutine: set it before starting goroutines that log.
type Info struct {
	ID    string
	Route string // the route table's pattern ("POST /v1/chat/completions"); "" when none matched
	OrgID string
	KeyID string
}

type ctxKey struct{}

// With returns ctx carrying info.
func With(ctx context.Context, info *Info) context.Context {
	return context.WithValue(ctx, ctxKey{}, info)
}

// From returns the Info ctx carries, or nil.
func From(ctx context.Context) *Info {
	info, _ := ctx.Value(ctxKey{}).(*Info)
	return info
}

// ID returns the request id ctx carries, or "".
func ID(ctx context.Context) string {
	if info := From(ctx); info != nil {
		return info.ID
	}
	return ""
}

// SetRoute records the route the request matched.
func SetRoute(ctx context.Context, route string) {
	if info := From(ctx); info != nil {
		info.Route = route
	}
}

// SetPrincipal records who the request is from.
func SetPrincipal(ctx context.Context, orgID, keyID string) {
	if info := From(ctx); info != nil {
		info.OrgID, info.KeyID = orgID, keyID
	}
}
