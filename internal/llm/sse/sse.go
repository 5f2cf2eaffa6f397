// Package sse reads server-sent events (the text/event-stream format of the HTML
// standard) as OpenAI-compatible servers and Anthropic send them. It is strict about
// size — a line longer than the limit is an error, not an allocation — and lenient
// about everything the standard allows: CRLF, CR or LF line ends, comments, fields
// without a space after the colon, and multi-line data.
package sse

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

// Event is one dispatched event. Data's lines are joined with "\n".
type Event struct {
	Type string // the event field; "" means the default type, "message"
	Data []byte
	ID   string
}

// DefaultMaxLine bounds one line (and one event's data): large enough for any
// chunk a model server sends, small enough that a broken upstream cannot make
// agentd buffer without limit.
const DefaultMaxLine = 1 << 20

// ErrLineTooLong is returned when a line or an event's data exceeds the limit.
var ErrLineTooLong = errors.New("sse: line too long")

// Reader reads events from a stream.
type Reader struct {
	r       *bufio.Reader
	max     int
	line    []byte
	data    []byte
	typ, id string
	hasData bool
	pendCR  bool // the previous line ended in CR; a following LF belongs to it
}

// NewReader returns a Reader of r with lines of at most maxLine bytes
// (DefaultMaxLine if maxLine ≤ 0).
func NewReader(r io.Reader, maxLine int) *Reader {
	if maxLine <= 0 {
		maxLine = DefaultMaxLine
	}
	return &Reader{r: bufio.NewReaderSize(r, 4096), max: maxLine}
}

// Next returns the next event. At the end of the stream it returns io.EOF; an
// event not terminated by a blank line before the end is discarded, as the
// standard says, and the stream reported as ended early with io.ErrUnexpectedEOF.
// The returned Data is valid until the next call.
func (r *Reader) Next() (Event, error) {
	for {
		line, err := r.readLine()
		if err != nil {
			if errors.Is(err, io.EOF) {
				if r.hasData || r.typ != "" || len(line) > 0 {
					r.reset()
					return Event{}, io.ErrUnexpectedEOF
				}
				return Event{}, io.EOF
			}
			return Event{}, err
		}
		if len(line) == 0 { // blank line: dispatch
			if !r.hasData {
				r.typ = "" // an event with no data is not dispatched
				continue
			}
			ev := Event{Type: r.typ, Data: r.data, ID: r.id}
			r.typ, r.hasData = "", false
			r.data = r.data[len(r.data):] // keep capacity, next event starts empty
			if cap(r.data) > 64<<10 {
				r.data = nil
			}
			return ev, nil
		}
		if line[0] == ':' { // comment (keep-alive)
			continue
		}
		field, value := line, []byte(nil)
		if i := bytes.IndexByte(line, ':'); i >= 0 {
			field, value = line[:i], line[i+1:]
			if len(value) > 0 && value[0] == ' ' {
				value = value[1:]
			}
		}
		switch string(field) {
		case "data":
			if r.hasData {
				r.data = append(r.data, '\n')
			}
			if len(r.data)+len(value) > r.max {
				return Event{}, ErrLineTooLong
			}
			r.data = append(r.data, value...)
			r.hasData = true
		case "event":
			r.typ = string(value)
		case "id":
			if bytes.IndexByte(value, 0) < 0 {
				r.id = string(value)
			}
		}
		// "retry" and unknown fields are ignored: we never reconnect.
	}
}

func (r *Reader) reset() { r.typ, r.hasData, r.data = "", false, r.data[:0] }

// readLine returns the next line without its terminator. At the end of input it
// returns the unterminated rest with io.EOF.
func (r *Reader) readLine() ([]byte, error) {
	r.line = r.line[:0]
	for {
		b, err := r.r.ReadByte()
		if err != nil {
			return r.line, err
		}
		if r.pendCR {
			r.pendCR = false
			if b == '\n' {
				continue
			}
		}
		switch b {
		case '\n':
			return r.line, nil
		case '\r':
			r.pendCR = true
			return r.line, nil
		}
		if len(r.line) >= r.max {
			return nil, fmt.Errorf("%w (over %d bytes)", ErrLineTooLong, r.max)
		}
		r.line = append(r.line, b)
	}
}
