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
	started bool // the first line has been read (and a leading BOM dropped)
	err     error
}

// utf8BOM is the byte order mark the standard drops from the start of a stream.
var utf8BOM = []byte("\xEF\xBB\xBF")

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
// The returned Data is valid until the next call. An error is final: once Next
// has returned one, it returns the same error on every later call, since the
// rest of a line cut off by a read error or the limit is no line of its own.
func (r *Reader) Next() (Event, error) {
	if r.err != nil {
		return Event{}, r.err
	}
	ev, err := r.next()
	r.err = err
	return ev, err
}

func (r *Reader) next() (Event, error) {
	for {
		line, err := r.readLine()
		if !r.started {
			r.started = true
			line = bytes.TrimPrefix(line, utf8BOM)
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				if r.hasData || r.typ != "" || len(line) > 0 {
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
			r.data = r.data[:0] // reused: Data is valid until the next call
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

// readLine returns the next line without its terminator. At the end of input it
// returns the unterminated rest with io.EOF. The line is valid until the next
// read: it is often a slice of the read buffer itself.
func (r *Reader) readLine() ([]byte, error) {
	r.line = r.line[:0]
	for {
		// All that is buffered, or the next read if nothing is; never waits
		// for more than one read, so a line ended by a lone CR is returned
		// without waiting for the byte after it.
		buf, err := r.r.Peek(max(r.r.Buffered(), 1))
		if len(buf) == 0 {
			return r.line, err
		}
		if r.pendCR {
			r.pendCR = false
			if buf[0] == '\n' {
				r.r.Discard(1)
				continue
			}
		}
		end := bytes.IndexByte(buf, '\n') // the line ends at the first LF or CR
		beforeLF := buf
		if end >= 0 {
			beforeLF = buf[:end]
		}
		if cr := bytes.IndexByte(beforeLF, '\r'); cr >= 0 {
			end = cr
		}
		if end < 0 {
			if len(r.line)+len(buf) > r.max {
				return nil, fmt.Errorf("%w (over %d bytes)", ErrLineTooLong, r.max)
			}
			r.line = append(r.line, buf...)
			r.r.Discard(len(buf))
			continue
		}
		if len(r.line)+end > r.max {
			return nil, fmt.Errorf("%w (over %d bytes)", ErrLineTooLong, r.max)
		}
		line := buf[:end]
		n := end + 1
		if buf[end] == '\r' {
			if n < len(buf) && buf[n] == '\n' {
				n++
			} else {
				r.pendCR = true
			}
		}
		if len(r.line) > 0 {
			line = append(r.line, line...)
			r.line = line
		}
		r.r.Discard(n) // line stays valid: Discard does not read
		return line, nil
	}
}
