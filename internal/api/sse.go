package api

import (
	"bytes"
	"net/http"
	"sync"
	"time"
)

// eventStream writes server-sent events. Nothing is sent until the first event
// or keep-alive, so an error found before then (404, 402, …) still gets its own
// HTTP status. Each event is flushed as it is written; a comment line keeps idle
// connections (and the proxies between) open.
type eventStream struct {
	w  http.ResponseWriter
	rc *http.ResponseController

	mu      sync.Mutex
	started bool
	err     error // the first write error: the client is gone
	buf     bytes.Buffer

	stop     chan struct{}
	done     chan struct{}
	stopOnce sync.Once
}

// newEventStream starts the keep-alive ticker (every keepAlive; none if ≤ 0).
// close must be called when the handler is done with the stream.
func newEventStream(w http.ResponseWriter, keepAlive time.Duration) *eventStream {
	s := &eventStream{w: w, rc: http.NewResponseController(w), stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		if keepAlive <= 0 {
			<-s.stop
			return
		}
		t := time.NewTicker(keepAlive)
		defer t.Stop()
		for {
			select {
			case <-s.stop:
				return
			case <-t.C:
				s.write([]byte(": keep-alive\n\n"))
			}
		}
	}()
	return s
}

// close stops the keep-alive ticker and waits for it. It may be called again.
func (s *eventStream) close() {
	s.stopOnce.Do(func() { close(s.stop) })
	<-s.done
}

// Started reports whether the response has begun (its status is sent).
func (s *eventStream) Started() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.started
}

// event writes one event: "event: name" (omitted when name is "") and data, which
// must not contain a newline (JSON written by encoding/json never does).
func (s *eventStream) event(name string, data []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.buf.Reset()
	if name != "" {
		s.buf.WriteString("event: ")
		s.buf.WriteString(name)
		s.buf.WriteByte('\n')
	}
	s.buf.WriteString("data: ")
	s.buf.Write(data)
	s.buf.WriteString("\n\n")
	return s.writeLocked(s.buf.Bytes())
}

func (s *eventStream) write(b []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.writeLocked(b)
}

func (s *eventStream) writeLocked(b []byte) error {
	if s.err != nil {
		return s.err
	}
	if !s.started {
		h := s.w.Header()
		h.Set("Content-Type", "text/event-stream; charset=utf-8")
		h.Set("Cache-Control", "no-cache")
		h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
		s.w.WriteHeader(http.StatusOK)
		s.started = true
	}
	if _, err := s.w.Write(b); err != nil {
		s.err = err
		return err
	}
	if err := s.rc.Flush(); err != nil {
		s.err = err
		return err
	}
	return nil
}
