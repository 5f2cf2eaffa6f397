package api

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"

	"github.com/agentd/agentd"
)

// metrics answers GET /metrics on the API listener: the Prometheus metrics, to
// a request bearing the metrics token (AGENTD_METRICS_TOKEN), which is no API
// key and opens nothing else. Without a token configured they are not served
// here (404; the admin listener serves them), so that a public listener never
// shows them to anyone who asks.
func (s *Server) metrics(w http.ResponseWriter, r *http.Request) error {
	if s.Metrics == nil || s.MetricsToken == "" {
		return agentd.Errorf(agentd.ENotFound, "no route for GET /metrics: metrics are served on the admin listener (--admin-addr), or here when AGENTD_METRICS_TOKEN is set")
	}
	if !tokenMatches(r.Header.Get("Authorization"), s.MetricsToken) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="agentd metrics"`)
		return &agentd.Error{Code: agentd.EUnauthenticated, Message: "missing or invalid metrics token (Authorization: Bearer <AGENTD_METRICS_TOKEN>)"}
	}
	s.Metrics.ServeHTTP(w, r)
	return nil
}

// tokenMatches reports whether header is "Bearer <token>", in time that does
// not depend on how much of it matches.
func tokenMatches(header, token string) bool {
	got, ok := strings.CutPrefix(header, "Bearer ")
	if !ok {
		got, ok = strings.CutPrefix(header, "bearer ")
	}
	a, b := sha256.Sum256([]byte(strings.TrimSpace(got))), sha256.Sum256([]byte(token))
	return ok && subtle.ConstantTimeCompare(a[:], b[:]) == 1
}
