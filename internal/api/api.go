// Package api is agentd's HTTP layer and nothing else: the route table, decoding
// and validation of requests, encoding of responses, and the one table that maps
// error codes to HTTP statuses.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/propagation"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/internal/agents"
	"github.com/agentd/agentd/internal/auth"
	"github.com/agentd/agentd/internal/billing"
	"github.com/agentd/agentd/internal/catalog"
	"github.com/agentd/agentd/internal/clock"
	"github.com/agentd/agentd/internal/reqlog"
	"github.com/agentd/agentd/internal/run"
	"github.com/agentd/agentd/internal/session"
)

// Server holds what the handlers need: the owners' services. It holds no state of
// its own and decides no rule; every change goes through the package that owns it.
type Server struct {
	Auth     *auth.Authenticator
	Keys     *auth.Service
	Agents   *agents.Service
	Runner   *run.Runner
	Sessions *session.Service
	Accounts *billing.Accounts
	Ledger   *billing.Ledger
	Catalog  *catalog.Catalog
	// Limits counts requests against their rate limits (ratelimits.go); nil:
	// none. Runs' tokens and slots are the runner's.
	Limits RequestLimiter
	// Ready reports whether the database answers and takes writes (/readyz).
	Ready     func(context.Context) error
	Log       *slog.Logger
	Clock     clock.Clock
	PublicURL string // base of agents' endpoint URLs, no trailing slash

	MaxBodyBytes    int64
	MaxMessageChars int
	// StreamKeepAlive is how often an idle event stream gets a comment line
	// (15 s when zero).
	StreamKeepAlive time.Duration
	// Draining is set when the server begins a graceful shutdown: /readyz turns 503.
	Draining atomic.Bool
	// Metrics, when set, is served at GET /metrics to requests bearing
	// MetricsToken (metrics.go); nil: /metrics is not served here.
	Metrics      http.Handler
	MetricsToken string
	// Propagator, when tracing is on, reads the caller's traceparent so that a
	// run's span continues the caller's trace.
	Propagator propagation.TextMapPropagator
}

// keepAlive is the stream keep-alive interval.
func (s *Server) keepAlive() time.Duration {
	if s.StreamKeepAlive > 0 {
		return s.StreamKeepAlive
	}
	return 15 * time.Second
}

// Handler returns the root handler: every route, with trailing slashes accepted
// and unclean paths refused (no redirect: a 307 on POST breaks naive clients).
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	s.routes(mux)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.Propagator != nil {
			r = r.WithContext(s.Propagator.Extract(r.Context(), propagation.HeaderCarrier(r.Header)))
		}
		trimTrailingSlashes(r.URL)
		if s.refuseUncleanPath(w, r) { // 404, where ServeMux would redirect (paths.go)
			return
		}
		_, pattern := mux.Handler(r)
		reqlog.SetRoute(r.Context(), pattern) // for the request's log lines and metrics
		if pattern == "" {
			s.writeError(w, r, noRoute(mux, r))
			return
		}
		mux.ServeHTTP(w, r)
	})
}

type handler func(w http.ResponseWriter, r *http.Request) error

type authed func(w http.ResponseWriter, r *http.Request, p *agentd.Principal) error

// public adapts a handler: its error, if any, is written by writeError.
func (s *Server) public(h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			s.writeError(w, r, err)
		}
	}
}

// with authenticates the request and checks that the key holds scope.
func (s *Server) with(scope agentd.Scope, h authed) http.HandlerFunc {
	return s.public(func(w http.ResponseWriter, r *http.Request) error {
		p, err := s.Auth.Authenticate(r.Context(), r.Header.Get("Authorization"))
		if err != nil {
			return err
		}
		reqlog.SetPrincipal(r.Context(), p.OrgID, p.KeyID)
		if err := auth.Require(p, scope); err != nil {
			return err
		}
		return h(w, r, withOrigin(r, p)) // where the request came from, for the audit trail (audit.go)
	})
}

// statuses is the one map from error code to HTTP status.
var statuses = map[agentd.Code]int{
	agentd.EInvalid:           http.StatusUnprocessableEntity,
	agentd.EBadRequest:        http.StatusBadRequest,
	agentd.EModelUnavailable:  http.StatusBadRequest,
	agentd.EAlreadyExists:     http.StatusBadRequest,
	agentd.EUnauthenticated:   http.StatusUnauthorized,
	agentd.EForbidden:         http.StatusForbidden,
	agentd.ENotFound:          http.StatusNotFound,
	agentd.EConflict:          http.StatusConflict,
	agentd.ESessionBusy:       http.StatusConflict,
	agentd.EMethodNotAllowed:  http.StatusMethodNotAllowed,
	agentd.EPayloadTooLarge:   http.StatusRequestEntityTooLarge,
	agentd.EHeaderTooLarge:    http.StatusRequestHeaderFieldsTooLarge,
	agentd.EInsufficientQuota: http.StatusPaymentRequired,
	agentd.ERateLimited:       http.StatusTooManyRequests,
	agentd.EInferenceFailed:   http.StatusInternalServerError,
	agentd.EUpstream:          http.StatusBadGateway,
	agentd.EUpstreamTimeout:   http.StatusGatewayTimeout,
	agentd.EUnavailable:       http.StatusServiceUnavailable,
	agentd.EInternal:          http.StatusInternalServerError,

	agentd.ENotImplemented:      http.StatusNotImplemented,
	agentd.EVersionNotSupported: http.StatusHTTPVersionNotSupported,
}

// Status returns the HTTP status of an error code.
func Status(code agentd.Code) int {
	if s, ok := statuses[code]; ok {
		return s
	}
	return http.StatusInternalServerError
}

// publicError is err as a client may see it: an *agentd.Error as it is; anything
// else is internal, logged with the request id that the client gets instead.
func (s *Server) publicError(r *http.Request, err error) *agentd.Error {
	var e *agentd.Error
	if errors.As(honest(err, false), &e) {
		return e
	}
	id := reqlog.ID(r.Context())
	if id == "" { // a caller that did not pass r through identified
		id = reqlog.NewID()
	}
	s.Log.ErrorContext(r.Context(), "internal error", "request_id", id, "method", r.Method, "path", r.URL.Path, "err", err)
	return &agentd.Error{Code: agentd.EInternal, Message: "internal error (request " + id + ")"}
}

// identified is r carrying its request id, which every error body carries:
// reqlog.Middleware gives every request one (answered in X-Request-ID); a
// request that came another way (a test of the handler alone) gets one here.
func identified(r *http.Request) *http.Request {
	if reqlog.From(r.Context()) != nil {
		return r
	}
	return r.WithContext(reqlog.With(r.Context(), &reqlog.Info{ID: reqlog.NewID()}))
}

// writeError writes err in the API's error shape. Errors that are not *agentd.Error
// are internal: the client gets a request id, the log gets the cause.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	if !errors.As(err, new(*agentd.Error)) && errors.Is(err, context.Canceled) {
		return // the client went away; nobody reads this response
	}
	r = identified(r)
	e := s.publicError(r, err)
	status := Status(e.Code)
	if status >= 500 && e.Code != agentd.EInternal {
		s.Log.WarnContext(r.Context(), "request failed", "method", r.Method, "path", r.URL.Path, "code", string(e.Code), "err", err)
	}
	body := make(map[string]any, 3+len(e.Fields))
	for k, v := range e.Fields {
		body[k] = v
	}
	if e.Code == agentd.EInvalid && len(e.Violations) > 0 {
		body["detail"] = e.Violations
	} else {
		body["detail"] = e.Message
	}
	body["code"] = e.Code
	body["request_id"] = reqlog.ID(r.Context())
	if ra, ok := e.Fields["retry_after"].(int); ok {
		w.Header().Set("Retry-After", strconv.Itoa(ra))
	}
	writeJSON(w, status, body)
}

// inferenceCodes is the code a failed inference is answered with, by the class
// of its cause (run.Class*). The OpenAI-compatible routes answer every class so;
// NuGen's run route keeps its documented 500 inference_failed, the class in the
// body, except for the request's own faults, which are 400 there too.
var inferenceCodes = map[string]agentd.Code{
	run.ClassInvalidRequest: agentd.EBadRequest,
	run.ClassContextLength:  agentd.EBadRequest,
	run.ClassProviderAuth:   agentd.EUpstream,
	run.ClassProviderQuota:  agentd.EUpstream,
	run.ClassRateLimited:    agentd.ERateLimited,
	run.ClassTimeout:        agentd.EUpstreamTimeout,
	run.ClassUpstream:       agentd.EUpstream,
}

// honest returns err with the code the class of a failed inference gives it:
// for every class when all, else only for the request's own faults.
func honest(err error, all bool) error {
	var e *agentd.Error
	if !errors.As(err, &e) || e.Code != agentd.EInferenceFailed {
		return err
	}
	class, _ := e.Fields["class"].(string)
	code, ok := inferenceCodes[class]
	if !ok || (!all && code != agentd.EBadRequest) {
		return err
	}
	c := *e
	c.Code = code
	return &c
}

func writeJSON(w http.ResponseWriter, status int, v any) error {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	return json.NewEncoder(w).Encode(v)
}

// noRoute tells a wrong method (405) from an unknown path (404), in JSON.
func noRoute(mux *http.ServeMux, r *http.Request) error {
	var allowed []string
	for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPatch, http.MethodDelete} {
		r2 := r.Clone(r.Context())
		r2.Method = m
		if _, p := mux.Handler(r2); p != "" {
			allowed = append(allowed, m)
		}
	}
	if len(allowed) > 0 {
		return agentd.Errorf(agentd.EMethodNotAllowed, "method %s not allowed on %s; use %s", r.Method, r.URL.Path, strings.Join(allowed, ", "))
	}
	return agentd.Errorf(agentd.ENotFound, "no route for %s %s", r.Method, r.URL.Path)
}
