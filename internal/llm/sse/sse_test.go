package sse

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

// ev is an Event with its Data copied into a string, so that events compare
// with == and outlive the Next call that returned them.
type ev struct{ Type, Data, ID string }

func (e ev) String() string { return fmt.Sprintf("{Type:%q Data:%q ID:%q}", e.Type, e.Data, e.ID) }

// collect reads events from src until Next returns an error, and returns the
// events (copied) and that error.
func collect(src io.Reader, maxLine int) ([]ev, error) {
	r := NewReader(src, maxLine)
	var out []ev
	for {
		e, err := r.Next()
		if err != nil {
			return out, err
		}
		out = append(out, ev{e.Type, string(e.Data), e.ID})
	}
}

// chunkReader returns its chunks one Read at a time, so a test controls exactly
// where the input is split between reads.
type chunkReader struct{ chunks [][]byte }

func (c *chunkReader) Read(p []byte) (int, error) {
	for len(c.chunks) > 0 && len(c.chunks[0]) == 0 {
		c.chunks = c.chunks[1:]
	}
	if len(c.chunks) == 0 {
		return 0, io.EOF
	}
	n := copy(p, c.chunks[0])
	c.chunks[0] = c.chunks[0][n:]
	return n, nil
}

// flakyReader returns its steps one Read at a time; an empty step is a Read
// that fails with iotest.ErrTimeout, after which reading goes on.
type flakyReader struct{ steps []string }

func (f *flakyReader) Read(p []byte) (int, error) {
	if len(f.steps) == 0 {
		return 0, io.EOF
	}
	step := f.steps[0]
	f.steps = f.steps[1:]
	if step == "" {
		return 0, iotest.ErrTimeout
	}
	return copy(p, step), nil
}

// delivery is one way of handing an input to the Reader.
type delivery struct {
	name string
	r    io.Reader
}

// deliveries returns in delivered whole, a byte at a time, in halves, with
// io.EOF returned together with the last bytes, and split into two reads at
// every position — so every CRLF is also seen split across two reads.
func deliveries(in []byte) []delivery {
	ds := []delivery{
		{"whole", bytes.NewReader(in)},
		{"one-byte", iotest.OneByteReader(bytes.NewReader(in))},
		{"half", iotest.HalfReader(bytes.NewReader(in))},
		{"data-err", iotest.DataErrReader(bytes.NewReader(in))},
	}
	for i := 0; i <= len(in); i++ {
		ds = append(ds, delivery{fmt.Sprintf("split@%d", i), &chunkReader{[][]byte{in[:i], in[i:]}}})
	}
	return ds
}

const openAIStream = `data: {"id":"chatcmpl-A1b2C3","object":"chat.completion.chunk","created":1730000000,"model":"gpt-4o-mini-2024-07-18","system_fingerprint":"fp_0ba0d124f1","choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}]}

data: {"id":"chatcmpl-A1b2C3","object":"chat.completion.chunk","created":1730000000,"model":"gpt-4o-mini-2024-07-18","system_fingerprint":"fp_0ba0d124f1","choices":[{"index":0,"delta":{"content":"Hello"},"logprobs":null,"finish_reason":null}]}

data: {"id":"chatcmpl-A1b2C3","object":"chat.completion.chunk","created":1730000000,"model":"gpt-4o-mini-2024-07-18","system_fingerprint":"fp_0ba0d124f1","choices":[{"index":0,"delta":{"content":" there!"},"logprobs":null,"finish_reason":null}]}

data: {"id":"chatcmpl-A1b2C3","object":"chat.completion.chunk","created":1730000000,"model":"gpt-4o-mini-2024-07-18","system_fingerprint":"fp_0ba0d124f1","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]}

data: [DONE]

`

var openAIEvents = []ev{
	{Data: `{"id":"chatcmpl-A1b2C3","object":"chat.completion.chunk","created":1730000000,"model":"gpt-4o-mini-2024-07-18","system_fingerprint":"fp_0ba0d124f1","choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}]}`},
	{Data: `{"id":"chatcmpl-A1b2C3","object":"chat.completion.chunk","created":1730000000,"model":"gpt-4o-mini-2024-07-18","system_fingerprint":"fp_0ba0d124f1","choices":[{"index":0,"delta":{"content":"Hello"},"logprobs":null,"finish_reason":null}]}`},
	{Data: `{"id":"chatcmpl-A1b2C3","object":"chat.completion.chunk","created":1730000000,"model":"gpt-4o-mini-2024-07-18","system_fingerprint":"fp_0ba0d124f1","choices":[{"index":0,"delta":{"content":" there!"},"logprobs":null,"finish_reason":null}]}`},
	{Data: `{"id":"chatcmpl-A1b2C3","object":"chat.completion.chunk","created":1730000000,"model":"gpt-4o-mini-2024-07-18","system_fingerprint":"fp_0ba0d124f1","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]}`},
	{Data: `[DONE]`},
}

const anthropicStream = `event: message_start
data: {"type":"message_start","message":{"id":"msg_01XFDUDYJgAACzvnptvVoYEL","type":"message","role":"assistant","content":[],"model":"claude-sonnet-4-20250514","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":25,"output_tokens":1}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"!"}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":15}}

event: message_stop
data: {"type":"message_stop"}

`

var anthropicEvents = []ev{
	{"message_start", `{"type":"message_start","message":{"id":"msg_01XFDUDYJgAACzvnptvVoYEL","type":"message","role":"assistant","content":[],"model":"claude-sonnet-4-20250514","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":25,"output_tokens":1}}}`, ""},
	{"content_block_start", `{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}`, ""},
	{"ping", `{"type": "ping"}`, ""},
	{"content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}`, ""},
	{"content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"!"}}`, ""},
	{"content_block_stop", `{"type":"content_block_stop","index":0}`, ""},
	{"message_delta", `{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":15}}`, ""},
	{"message_stop", `{"type":"message_stop"}`, ""},
}

type parseCase struct {
	name    string
	in      string
	maxLine int // 0: DefaultMaxLine
	want    []ev
	err     error // what Next returns after the last event
}

// parseCases follow the HTML standard's "Interpreting an event stream"
// (https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation)
// plus this package's documented limits and end-of-stream rules.
var parseCases = []parseCase{
	// Line endings: CRLF, LF or a lone CR each end a line.
	{name: "lf", in: "data: a\n\n", want: []ev{{Data: "a"}}, err: io.EOF},
	{name: "crlf", in: "data: a\r\n\r\n", want: []ev{{Data: "a"}}, err: io.EOF},
	{name: "lone cr", in: "data: a\r\r", want: []ev{{Data: "a"}}, err: io.EOF},
	{name: "mixed line endings", in: "data: a\r\ndata: b\rdata: c\ndata: d\r\n\r", want: []ev{{Data: "a\nb\nc\nd"}}, err: io.EOF},
	{name: "crlf is one terminator", in: "data: a\r\n\r\ndata: b\r\n\r\n", want: []ev{{Data: "a"}, {Data: "b"}}, err: io.EOF},
	{name: "lf cr is two terminators", in: "data: a\n\rdata: b\n\n", want: []ev{{Data: "a"}, {Data: "b"}}, err: io.EOF},
	{name: "cr cr lf is cr then crlf", in: "data: a\r\r\ndata: b\n\n", want: []ev{{Data: "a"}, {Data: "b"}}, err: io.EOF},
	{name: "cr lf lf is crlf then lf", in: "data: a\r\n\ndata: b\n\n", want: []ev{{Data: "a"}, {Data: "b"}}, err: io.EOF},

	// Comments.
	{name: "comment ignored", in: ": keep-alive\n\ndata: a\n\n", want: []ev{{Data: "a"}}, err: io.EOF},
	{name: "bare colon comment", in: ":\ndata: a\n\n", want: []ev{{Data: "a"}}, err: io.EOF},
	{name: "comment between data lines", in: "data: a\n: keep-alive\ndata: b\n\n", want: []ev{{Data: "a\nb"}}, err: io.EOF},
	{name: "comment looking like a field", in: ":data: x\n\ndata: a\n\n", want: []ev{{Data: "a"}}, err: io.EOF},
	{name: "only comments", in: ": one\r\n: two\r: three\n", err: io.EOF},

	// Field values: one leading space removed, no more.
	{name: "no space after colon", in: "data:x\n\n", want: []ev{{Data: "x"}}, err: io.EOF},
	{name: "one space after colon", in: "data: x\n\n", want: []ev{{Data: "x"}}, err: io.EOF},
	{name: "two spaces after colon", in: "data:  x\n\n", want: []ev{{Data: " x"}}, err: io.EOF},
	{name: "tab after colon kept", in: "data:\tx\n\n", want: []ev{{Data: "\tx"}}, err: io.EOF},
	{name: "trailing space kept", in: "data: x \n\n", want: []ev{{Data: "x "}}, err: io.EOF},
	{name: "colon in value", in: "data: a: b:c\n\n", want: []ev{{Data: "a: b:c"}}, err: io.EOF},
	{name: "empty value", in: "data:\n\n", want: []ev{{Data: ""}}, err: io.EOF},
	{name: "space only value", in: "data: \n\n", want: []ev{{Data: ""}}, err: io.EOF},
	{name: "utf-8 and nul in data", in: "data: h\u00e9llo \u4e16\x00!\n\n", want: []ev{{Data: "h\u00e9llo \u4e16\x00!"}}, err: io.EOF},

	// Multi-line data.
	{name: "multi-line data", in: "data: a\ndata: b\ndata: c\n\n", want: []ev{{Data: "a\nb\nc"}}, err: io.EOF},
	{name: "empty data line in the middle", in: "data: a\ndata:\ndata: b\n\n", want: []ev{{Data: "a\n\nb"}}, err: io.EOF},
	{name: "empty last data line", in: "data: a\ndata:\n\n", want: []ev{{Data: "a\n"}}, err: io.EOF},
	{name: "empty first data line", in: "data\ndata: a\n\n", want: []ev{{Data: "\na"}}, err: io.EOF},

	// Field without a colon: the whole line is the name, the value is empty.
	{name: "data without colon", in: "data\n\n", want: []ev{{Data: ""}}, err: io.EOF},
	{name: "two data lines without colon", in: "data\ndata\n\n", want: []ev{{Data: "\n"}}, err: io.EOF},
	{name: "event without colon", in: "event: a\nevent\ndata: x\n\n", want: []ev{{Data: "x"}}, err: io.EOF},

	// Event type.
	{name: "event type", in: "event: add\ndata: 1\n\n", want: []ev{{Type: "add", Data: "1"}}, err: io.EOF},
	{name: "event type without space", in: "event:add\ndata: 1\n\n", want: []ev{{Type: "add", Data: "1"}}, err: io.EOF},
	{name: "event type after data", in: "data: 1\nevent: add\n\n", want: []ev{{Type: "add", Data: "1"}}, err: io.EOF},
	{name: "last event type wins", in: "event: a\nevent: b\ndata: 1\n\n", want: []ev{{Type: "b", Data: "1"}}, err: io.EOF},
	{name: "event type reset between events", in: "event: add\ndata: 1\n\ndata: 2\n\n", want: []ev{{Type: "add", Data: "1"}, {Data: "2"}}, err: io.EOF},
	{name: "event type reset by undispatched event", in: "event: lost\n\ndata: 2\n\n", want: []ev{{Data: "2"}}, err: io.EOF},

	// Last event ID: set by id, kept across events, ignored if it holds NUL.
	{name: "id", in: "id: 7\ndata: a\n\n", want: []ev{{Data: "a", ID: "7"}}, err: io.EOF},
	{name: "id persists", in: "id: 7\ndata: a\n\ndata: b\n\nid: 8\ndata: c\n\n", want: []ev{{Data: "a", ID: "7"}, {Data: "b", ID: "7"}, {Data: "c", ID: "8"}}, err: io.EOF},
	{name: "id set without dispatch", in: "id: 9\n\ndata: a\n\n", want: []ev{{Data: "a", ID: "9"}}, err: io.EOF},
	{name: "empty id resets", in: "id: 7\ndata: a\n\nid\ndata: b\n\n", want: []ev{{Data: "a", ID: "7"}, {Data: "b"}}, err: io.EOF},
	{name: "id with nul ignored", in: "id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n", want: []ev{{Data: "a", ID: "1"}, {Data: "b", ID: "1"}}, err: io.EOF},

	// Unknown fields and retry are ignored; field names are case-sensitive.
	{name: "unknown fields ignored", in: "foo: bar\nretry: 1000\nDATA: x\nData: y\n data: z\ndata : w\nid : v\ndata: a\n\n", want: []ev{{Data: "a"}}, err: io.EOF},
	{name: "unknown field alone is no event", in: "foo: bar\n\n", err: io.EOF},

	// Blank lines with no data dispatch nothing.
	{name: "blank lines only", in: "\n\n\r\n\r\r\n\n", err: io.EOF},
	{name: "blank lines between events", in: "\n\ndata: a\n\n\n\n\ndata: b\n\n\n", want: []ev{{Data: "a"}, {Data: "b"}}, err: io.EOF},

	// End of stream.
	{name: "empty stream", in: "", err: io.EOF},
	{name: "clean end after comment", in: "data: a\n\n: bye\n", want: []ev{{Data: "a"}}, err: io.EOF},
	{name: "clean end after id", in: "data: a\n\nid: 3\n", want: []ev{{Data: "a"}}, err: io.EOF},
	{name: "final event without blank line", in: "data: a\n\ndata: b\n", want: []ev{{Data: "a"}}, err: io.ErrUnexpectedEOF},
	{name: "final event without line end", in: "data: a\n\ndata: b", want: []ev{{Data: "a"}}, err: io.ErrUnexpectedEOF},
	{name: "final event with lone cr", in: "data: a\r\rdata: b\r", want: []ev{{Data: "a"}}, err: io.ErrUnexpectedEOF},
	{name: "final event type only", in: "event: x\n", err: io.ErrUnexpectedEOF},
	{name: "final unterminated comment", in: "data: a\n\n: ke", want: []ev{{Data: "a"}}, err: io.ErrUnexpectedEOF},

	// Limits: a line of exactly maxLine bytes is fine, one more is not; the
	// data of an event is bounded the same way, across all its lines.
	{name: "line at limit", in: "data: 0123456789\n\n", maxLine: 16, want: []ev{{Data: "0123456789"}}, err: io.EOF},
	{name: "line over limit", in: "data: a\n\ndata: 01234567890\n\n", maxLine: 16, want: []ev{{Data: "a"}}, err: ErrLineTooLong},
	{name: "line over limit with crlf", in: "data: 01234567890\r\n\r\n", maxLine: 16, err: ErrLineTooLong},
	{name: "unterminated line over limit", in: "data: 01234567890", maxLine: 16, err: ErrLineTooLong},
	{name: "comment over limit", in: ": 012345678901234\n\n", maxLine: 16, err: ErrLineTooLong},
	{name: "blank line after long lines", in: "data: 0123456789\r\n\r\n", maxLine: 16, want: []ev{{Data: "0123456789"}}, err: io.EOF},
	{name: "data at limit over lines", in: "data: 0123456\ndata: 01234567\n\n", maxLine: 16, want: []ev{{Data: "0123456\n01234567"}}, err: io.EOF},
	{name: "data over limit over lines", in: "data: 0123456\ndata: 012345678\n\n", maxLine: 16, err: ErrLineTooLong},
	{name: "data at limit by empty lines", in: "data:0123456789a\n" + strings.Repeat("data\n", 5) + "\n", maxLine: 16, want: []ev{{Data: "0123456789a\n\n\n\n\n"}}, err: io.EOF},
	{name: "data over limit by empty lines", in: "data:0123456789a\n" + strings.Repeat("data\n", 6) + "\n", maxLine: 16, err: ErrLineTooLong},
	{name: "data limit is per event", in: "data: 0123456789\n\ndata: 0123456789\n\n", maxLine: 16, want: []ev{{Data: "0123456789"}, {Data: "0123456789"}}, err: io.EOF},

	// One UTF-8 byte order mark at the start of the stream is dropped.
	{name: "bom", in: "\xEF\xBB\xBFdata: a\n\n", want: []ev{{Data: "a"}}, err: io.EOF},
	{name: "bom before comment", in: "\xEF\xBB\xBF: hi\r\ndata: a\r\n\r\n", want: []ev{{Data: "a"}}, err: io.EOF},
	{name: "bom alone", in: "\xEF\xBB\xBF", err: io.EOF},
	{name: "second bom kept", in: "\xEF\xBB\xBF\xEF\xBB\xBFdata: a\n\ndata: b\n\n", want: []ev{{Data: "b"}}, err: io.EOF},
	{name: "bom after start kept", in: "data: a\n\n\xEF\xBB\xBFdata: b\n\n", want: []ev{{Data: "a"}}, err: io.EOF},
	{name: "bom in value kept", in: "data: \xEF\xBB\xBFa\n\n", want: []ev{{Data: "\xEF\xBB\xBFa"}}, err: io.EOF},
	{name: "bom counts toward the limit", in: "\xEF\xBB\xBFdata: 0123456\n\n", maxLine: 15, err: ErrLineTooLong},

	// Real streams.
	{name: "openai stream", in: openAIStream, want: openAIEvents, err: io.EOF},
	{name: "openai stream with crlf and keep-alives", in: strings.ReplaceAll(": OPENROUTER PROCESSING\n\n"+openAIStream, "\n", "\r\n"), want: openAIEvents, err: io.EOF},
	{name: "openai stream cut off", in: openAIStream[:len(openAIStream)-len("data: [DONE]\n\n")+len("data: [DO")], want: openAIEvents[:len(openAIEvents)-1], err: io.ErrUnexpectedEOF},
	{name: "anthropic stream", in: anthropicStream, want: anthropicEvents, err: io.EOF},
	{name: "anthropic stream with cr", in: strings.ReplaceAll(anthropicStream, "\n", "\r"), want: anthropicEvents, err: io.EOF},
}

func TestParse(t *testing.T) {
	for _, tc := range parseCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			for _, d := range deliveries([]byte(tc.in)) {
				got, err := collect(d.r, tc.maxLine)
				if !slices.Equal(got, tc.want) {
					t.Errorf("%s: events\n got %v\nwant %v", d.name, got, tc.want)
				}
				if !errors.Is(err, tc.err) {
					t.Errorf("%s: err = %v, want %v", d.name, err, tc.err)
				}
			}
		})
	}
}

// On a live stream an event is dispatched as soon as its blank line has
// arrived: in particular the Reader does not wait for the byte after a lone CR
// to learn whether it is the start of a CRLF.
func TestDispatchWithoutWaiting(t *testing.T) {
	for _, in := range []string{"data: a\n\n", "data: a\r\n\r\n", "data: a\r\r", "data: a\n\r"} {
		pr, pw := io.Pipe()
		go func() {
			for i := range in { // a byte per write, as slowly as a server may send
				pw.Write([]byte{in[i]})
			}
		}()
		got := make(chan error, 1)
		go func() {
			e, err := NewReader(pr, 0).Next()
			if err == nil && string(e.Data) != "a" {
				err = fmt.Errorf("Data %q, want %q", e.Data, "a")
			}
			got <- err
		}()
		select {
		case err := <-got:
			if err != nil {
				t.Errorf("%q: %v", in, err)
			}
		case <-time.After(30 * time.Second): // a failure guard: the event comes at once
			t.Errorf("%q: no event while the stream stays open", in)
		}
		pw.Close()
	}
}

// endless reads as prefix followed by fill repeated forever, and counts what
// it hands out.
type endless struct {
	prefix, fill []byte
	off          int
	n            int64
}

func (e *endless) Read(p []byte) (int, error) {
	n := copy(p, e.prefix)
	e.prefix = e.prefix[n:]
	for n < len(p) {
		c := copy(p[n:], e.fill[e.off:])
		n += c
		e.off = (e.off + c) % len(e.fill)
	}
	e.n += int64(n)
	return n, nil
}

// A line longer than the limit is an error once the limit is passed: the
// Reader neither reads nor buffers the rest of it (here it never ends).
func TestLineTooLongIsBounded(t *testing.T) {
	for _, maxLine := range []int{1, 64, 4096, 100 << 10, DefaultMaxLine} {
		t.Run(fmt.Sprint(maxLine), func(t *testing.T) {
			src := &endless{prefix: []byte("data: "), fill: []byte("x")}
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			_, err := NewReader(src, maxLine).Next()
			runtime.ReadMemStats(&after)
			if !errors.Is(err, ErrLineTooLong) {
				t.Fatalf("err = %v, want ErrLineTooLong", err)
			}
			if limit := int64(maxLine) + 2*4096; src.n > limit {
				t.Errorf("read %d bytes of an endless line, want ≤ %d", src.n, limit)
			}
			// Growing a buffer to maxLine costs a few times maxLine in all.
			if alloc, limit := after.TotalAlloc-before.TotalAlloc, uint64(8*maxLine+64<<10); alloc > limit {
				t.Errorf("allocated %d bytes, want ≤ %d", alloc, limit)
			}
		})
	}
}

// An event whose data grows over many short lines is cut off at the limit too.
func TestDataTooLongIsBounded(t *testing.T) {
	const maxLine = 4096
	src := &endless{fill: []byte("data: " + strings.Repeat("y", 100) + "\n")}
	_, err := NewReader(src, maxLine).Next()
	if !errors.Is(err, ErrLineTooLong) {
		t.Fatalf("err = %v, want ErrLineTooLong", err)
	}
	if limit := int64(2*maxLine + 2*4096); src.n > limit {
		t.Errorf("read %d bytes of endless data, want ≤ %d", src.n, limit)
	}
}

// The contract of Next: the returned Event.Data is valid until the next call
// to Next — the Reader may reuse its buffer after that, so a caller that keeps
// data across calls must copy it. The test reads events of growing and
// shrinking sizes (so any buffer is reused and regrown) delivered a byte at a
// time (so nothing is still in the read buffer) and checks each event's Data
// right when Next returns it, and that the copies all stay intact.
func TestDataValidUntilNextCall(t *testing.T) {
	var in strings.Builder
	var want []string
	for i, n := range []int{10, 1000, 3, 70 << 10, 5, 0, 200 << 10, 7, 100} {
		d := strings.Repeat(string(rune('a'+i)), n)
		want = append(want, d)
		in.WriteString(": c\ndata: " + d + "\n\n")
	}
	r := NewReader(iotest.OneByteReader(strings.NewReader(in.String())), 0)
	var kept [][]byte
	for i := 0; ; i++ {
		e, err := r.Next()
		if err == io.EOF {
			if i != len(want) {
				t.Fatalf("got %d events, want %d", i, len(want))
			}
			break
		}
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		if string(e.Data) != want[i] {
			t.Fatalf("event %d: Data has %d bytes, want %d", i, len(e.Data), len(want[i]))
		}
		kept = append(kept, bytes.Clone(e.Data))
		if i > 0 && string(kept[i-1]) != want[i-1] {
			t.Fatalf("copy of event %d changed", i-1)
		}
	}
}

// TestRoundTrip encodes random events in every way the standard allows —
// random line endings, with or without the space after the colon, "data"
// without a colon, comments, unknown fields, id lines and stray blank lines —
// and checks that reading them back, in reads of random sizes, gives the same
// events.
func TestRoundTrip(t *testing.T) {
	n := 2000
	if testing.Short() {
		n = 200
	}
	for seed := range uint64(n) {
		rng := rand.New(rand.NewPCG(seed, 0x55e))
		in, want := randomStream(rng)
		var chunks [][]byte
		for rest := in; len(rest) > 0; {
			k := min(len(rest), 1+rng.IntN(1+rng.IntN(64)))
			chunks, rest = append(chunks, rest[:k]), rest[k:]
		}
		got, err := collect(&chunkReader{chunks}, 0)
		if err != io.EOF || !slices.Equal(got, want) {
			t.Fatalf("seed %d: input %q\n got %v, %v\nwant %v, EOF", seed, in, got, err, want)
		}
	}
}

// randomStream returns an encoded stream of random events and the events.
func randomStream(rng *rand.Rand) ([]byte, []ev) {
	var (
		out    []byte
		want   []ev
		id     string
		prevCR bool
	)
	line := func(s string) {
		eol := []string{"\n", "\r\n", "\r"}[rng.IntN(3)]
		// After a lone CR, an empty line ended by LF would read as a CRLF
		// ending the previous line: the format cannot express that.
		for prevCR && s == "" && eol == "\n" {
			eol = []string{"\n", "\r\n", "\r"}[rng.IntN(3)]
		}
		out = append(out, s...)
		out = append(out, eol...)
		prevCR = eol == "\r"
	}
	field := func(name, value string) string {
		switch {
		case value == "" && rng.IntN(3) == 0:
			return name
		case !strings.HasPrefix(value, " ") && rng.IntN(2) == 0:
			return name + ":" + value
		default:
			return name + ": " + value
		}
	}
	noise := func() {
		for rng.IntN(3) == 0 {
			switch rng.IntN(5) {
			case 0:
				line(":" + randomText(rng, ""))
			case 1:
				line(": keep-alive")
			case 2:
				line(field([]string{"retry", "foo", "Data", "ev", "data ", " data"}[rng.IntN(6)], randomText(rng, "")))
			case 3:
				line("")
			case 4:
				line(field("event", "lost")) // not dispatched, reset by the blank line
				line("")
			}
		}
	}
	for range rng.IntN(12) {
		noise()
		if rng.IntN(3) == 0 {
			id = randomText(rng, "\x00")
			line(field("id", id))
			noise()
		}
		var values, lines []string
		for range 1 + rng.IntN(4) {
			v := randomText(rng, "")
			values = append(values, v)
			lines = append(lines, field("data", v))
		}
		var typ string
		if rng.IntN(2) == 0 {
			typ = randomText(rng, "")
			lines = slices.Insert(lines, rng.IntN(len(lines)+1), field("event", typ))
		}
		data := strings.Join(values, "\n")
		for _, l := range lines {
			line(l)
			if rng.IntN(4) == 0 {
				line(": " + randomText(rng, ""))
			}
		}
		line("")
		want = append(want, ev{typ, data, id})
	}
	noise()
	return out, want
}

// randomText returns a short random value without CR or LF or the bytes in
// not, drawn from characters that matter to the parser.
func randomText(rng *rand.Rand, not string) string {
	const alphabet = " :a\tx{}\"é世\x00"
	var b strings.Builder
	for range rng.IntN(12) {
		r := []rune(alphabet)[rng.IntN(len([]rune(alphabet)))]
		if !strings.ContainsRune(not, r) {
			b.WriteRune(r)
		}
	}
	return b.String()
}

// refParse is a second, independent reading of the standard, written the way
// the standard words it: split the input into lines, keep a data buffer with
// an LF after every data value, drop the last LF when dispatching, dispatch
// only if the buffer is not empty; and drop a leading BOM. It applies this package's limit (a line or
// an event's data longer than maxLine) and end-of-stream rule (a pending event
// or unterminated line at the end → io.ErrUnexpectedEOF).
func refParse(in []byte, maxLine int) ([]ev, error) {
	var (
		out       []ev
		buf       []byte // the data buffer, each value followed by LF
		typ, id   string
		cutOff    bool
		remaining = in
		first     = true
	)
	for {
		end := bytes.IndexAny(remaining, "\r\n")
		if end < 0 {
			cutOff = true
			end = len(remaining)
		}
		line := remaining[:end]
		if len(line) > maxLine {
			return out, ErrLineTooLong
		}
		if first { // the stream's first line, where a BOM may be
			line, first = bytes.TrimPrefix(line, []byte("\xEF\xBB\xBF")), false
		}
		if cutOff {
			if len(buf) > 0 || typ != "" || len(line) > 0 {
				return out, io.ErrUnexpectedEOF
			}
			return out, io.EOF
		}
		if strings.HasPrefix(string(remaining[end:]), "\r\n") {
			remaining = remaining[end+2:]
		} else {
			remaining = remaining[end+1:]
		}
		switch {
		case len(line) == 0:
			if len(buf) > 0 {
				out = append(out, ev{typ, string(buf[:len(buf)-1]), id})
			}
			buf, typ = nil, ""
		case line[0] == ':':
		default:
			name, value, _ := strings.Cut(string(line), ":")
			value = strings.TrimPrefix(value, " ")
			switch name {
			case "event":
				typ = value
			case "data":
				buf = append(append(buf, value...), '\n')
				if len(buf)-1 > maxLine {
					return out, ErrLineTooLong
				}
			case "id":
				if !strings.Contains(value, "\x00") {
					id = value
				}
			}
		}
	}
}

// After an error Next returns it again and nothing else: in particular it
// does not read the tail of a line cut off at the limit as a line of its own,
// nor dispatch an event whose data went over the limit.
func TestErrorsAreFinal(t *testing.T) {
	for _, tc := range []struct {
		name    string
		src     io.Reader
		maxLine int
		err     error
	}{
		{"line over limit", strings.NewReader("data: 0123456789Zdata: injected\n\n"), 16, ErrLineTooLong},
		{"data over limit", strings.NewReader("data:0123456789a\n" + strings.Repeat("data\n", 6) + "\ndata: after\n\n"), 16, ErrLineTooLong},
		{"unexpected eof", strings.NewReader("data: a"), 0, io.ErrUnexpectedEOF},
		{"eof", strings.NewReader(""), 0, io.EOF},
		{"read error mid-line", &flakyReader{[]string{"data: abc", "", "data: injected\n\n"}}, 0, iotest.ErrTimeout},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := NewReader(tc.src, tc.maxLine)
			for i := range 3 {
				e, err := r.Next()
				if !errors.Is(err, tc.err) || e.Data != nil || e.Type != "" {
					t.Fatalf("call %d: %v, %v; want no event, %v", i, ev{e.Type, string(e.Data), e.ID}, err, tc.err)
				}
			}
		})
	}
}

func TestRefParse(t *testing.T) {
	for _, tc := range parseCases {
		maxLine := tc.maxLine
		if maxLine == 0 {
			maxLine = DefaultMaxLine
		}
		got, err := refParse([]byte(tc.in), maxLine)
		if !slices.Equal(got, tc.want) || !errors.Is(err, tc.err) {
			t.Errorf("%s: got %v, %v; want %v, %v", tc.name, got, err, tc.want, tc.err)
		}
	}
}

// FuzzReader: whatever the input, Next never panics, never returns more data
// than the limit or a CR in a field, returns one of its documented errors
// eventually and then again, agrees with refParse, and does not depend on how
// the input is split into reads.
func FuzzReader(f *testing.F) {
	for _, tc := range parseCases {
		f.Add([]byte(tc.in))
	}
	const maxLine = 64
	f.Fuzz(func(t *testing.T, in []byte) {
		wantEvents, wantErr := refParse(in, maxLine)
		for _, d := range []delivery{
			{"whole", bytes.NewReader(in)},
			{"one-byte", iotest.OneByteReader(bytes.NewReader(in))},
		} {
			r := NewReader(d.r, maxLine)
			var got []ev
			var err error
			for calls := 0; err == nil; calls++ {
				// Every event takes at least a line and its end.
				if calls > len(in)/2+1 {
					t.Fatalf("%s: Next returned %d events from %d bytes without an error", d.name, calls, len(in))
				}
				var e Event
				if e, err = r.Next(); err != nil {
					break
				}
				if len(e.Data) > maxLine {
					t.Fatalf("%s: Data of %d bytes, limit %d", d.name, len(e.Data), maxLine)
				}
				if bytes.IndexByte(e.Data, '\r') >= 0 || strings.ContainsAny(e.Type+e.ID, "\r\n") {
					t.Fatalf("%s: line end in event %q", d.name, e)
				}
				got = append(got, ev{e.Type, string(e.Data), e.ID})
			}
			if err != io.EOF && err != io.ErrUnexpectedEOF && !errors.Is(err, ErrLineTooLong) {
				t.Fatalf("%s: unexpected error %v", d.name, err)
			}
			if !slices.Equal(got, wantEvents) || !errors.Is(err, wantErr) {
				t.Fatalf("%s: got %v, %v\nwant %v, %v", d.name, got, err, wantEvents, wantErr)
			}
			if e, again := r.Next(); again != err || e.Data != nil {
				t.Fatalf("%s: after %v, Next returned %q, %v", d.name, err, e.Data, again)
			}
		}
	})
}

// benchStream is a realistic OpenAI chat completion stream of 100 chunks.
func benchStream() []byte {
	var b bytes.Buffer
	words := strings.Fields("The quick brown fox jumps over the lazy dog, and then it writes a long answer about server-sent events and why line endings matter.")
	for i := range 100 {
		delta := fmt.Sprintf(`{"content":%q}`, " "+words[i%len(words)])
		finish := "null"
		if i == 0 {
			delta = `{"role":"assistant","content":"","refusal":null}`
		}
		if i == 99 {
			delta, finish = `{}`, `"stop"`
		}
		fmt.Fprintf(&b, `data: {"id":"chatcmpl-AzJ7qKxZ3bN1mV2cR8tY5uW0pLsD","object":"chat.completion.chunk","created":1730000000,"model":"gpt-4o-mini-2024-07-18","system_fingerprint":"fp_0ba0d124f1","choices":[{"index":0,"delta":%s,"logprobs":null,"finish_reason":%s}],"usage":null}`+"\n\n", delta, finish)
	}
	b.WriteString("data: [DONE]\n\n")
	return b.Bytes()
}

func BenchmarkReader(b *testing.B) {
	stream := benchStream()
	b.SetBytes(int64(len(stream)))
	b.ReportAllocs()
	for b.Loop() {
		r := NewReader(bytes.NewReader(stream), 0)
		n := 0
		for {
			_, err := r.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
			n++
		}
		if n != 101 {
			b.Fatalf("%d events, want 101", n)
		}
	}
}
