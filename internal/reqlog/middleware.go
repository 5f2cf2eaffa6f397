package reqlog

import (
	"log/slog"
	"net/http"
	"time"
)

// Options configure Middleware.
type Options struct {
	// Log receives the access log; nil (or Access false): none.
	Log *slog.Logger
	// Access writes one line per request at level info: method, status, bytes,
	// duration (and, from the context, request id, route, organization, key).
	Access bool
	// Observe, when set, is told how every request ended: the route it
	// matched ("" for none), its status, the body bytes written and how long
	// it took (a stream's whole life).
	Observe func(route string, status int, bytes int64, took time.Duration)
}

// canonicalHeader is Header as net/http keys it, so that reading and setting
// it costs no canonicalization.
var canonicalHeader = http.CanonicalHeaderKey(Header)

// StatusClientClosed is the status recorded for a request whose client went
// away before anything was answered (nginx's 499): net/http sends nothing then.
const StatusClientClosed = 499

// Middleware gives every request served by next an id (the client's
// X-Request-ID when ValidID, else a new one), answers it in X-Request-ID before
// next writes anything, and carries an Info in the request's context for the
// log lines and for the API to complete.
func Middleware(next http.Handler, o Options) http.Handler {
	if !o.Access {
		o.Log = nil
	}
	return &middleware{next: next, o: o}
}

type middleware struct {
	next http.Handler
	o    Options
}

// served is one request's state: its Info and what was written, in one
// allocation.
type served struct {
	info Info
	rec  recorder
}

func (m *middleware) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s := &served{}
	id := ""
	if v := r.Header[canonicalHeader]; len(v) > 0 {
		id = v[0]
	}
	if !ValidID(id) {
		id = NewID()
	}
	s.info.ID = id
	w.Header()[canonicalHeader] = []string{id}
	r = r.WithContext(With(r.Context(), &s.info))
	if m.o.Observe == nil && m.o.Log == nil {
		m.next.ServeHTTP(w, r)
		return
	}
	s.rec.ResponseWriter = w
	start := time.Now()
	m.next.ServeHTTP(&s.rec, r)
	took := time.Since(start)
	status := s.rec.status
	if status == 0 {
		status = http.StatusOK // net/http's answer to a handler that wrote nothing
		if r.Context().Err() != nil {
			status = StatusClientClosed
		}
	}
	if m.o.Observe != nil {
		m.o.Observe(s.info.Route, status, s.rec.bytes, took)
	}
	if m.o.Log != nil {
		attrs := []slog.Attr{
			slog.String("method", r.Method), slog.Int("status", status),
			slog.Int64("bytes", s.rec.bytes), slog.Duration("duration", took),
		}
		if s.info.Route == "" {
			attrs = append(attrs, slog.String("path", r.URL.Path))
		}
		m.o.Log.LogAttrs(r.Context(), slog.LevelInfo, "request", attrs...)
	}
}

// recorder notes a response's status and body size on its way through.
// http.ResponseController reaches the connection beneath it (Unwrap), so
// flushing and deadlines work as without it.
type recorder struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (rw *recorder) WriteHeader(status int) {
	if rw.status == 0 && (status >= 200 || status == http.StatusSwitchingProtocols) {
		rw.status = status
	}
	rw.ResponseWriter.WriteHeader(status)
}

func (rw *recorder) Write(p []byte) (int, error) {
	if rw.status == 0 {
		rw.status = http.StatusOK
	}
	n, err := rw.ResponseWriter.Write(p)
	rw.bytes += int64(n)
	return n, err
}

// FlushError sends what is buffered (http.ResponseController's first choice),
// with the connection's error.
func (rw *recorder) FlushError() error {
	if rw.status == 0 {
		rw.status = http.StatusOK
	}
	return http.NewResponseController(rw.ResponseWriter).Flush()
}

// Flush is FlushError for callers that look for http.Flusher.
func (rw *recorder) Flush() { rw.FlushError() }

// Unwrap is the ResponseWriter beneath, for http.ResponseController.
func (rw *recorder) Unwrap() http.ResponseWriter { return rw.ResponseWriter }
