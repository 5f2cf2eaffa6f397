package openai

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/agentd/agentd/internal/llm"
)

// The JSON of the chat completions API, reduced to the fields agentd uses.

type chatRequest struct {
	Model               string         `json:"model"`
	Messages            []message      `json:"messages"`
	Temperature         float64        `json:"temperature"`
	MaxTokens           int            `json:"max_tokens,omitempty"`
	MaxCompletionTokens int            `json:"max_completion_tokens,omitempty"`
	Stream              bool           `json:"stream,omitempty"`
	StreamOptions       *streamOptions `json:"stream_options,omitempty"`
}

type message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

type streamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

var askUsage = &streamOptions{IncludeUsage: true}

// reply is a chat.completion object, or a chat.completion.chunk of a stream: the
// same fields under message or delta.
type reply struct {
	Model   string   `json:"model"`
	Choices []choice `json:"choices"`
	Usage   *usage   `json:"usage"`
	// Error is an error sent with status 200: in a stream (vLLM, OpenRouter,
	// OpenAI) or as a whole reply (OpenRouter).
	Error json.RawMessage `json:"error"`
}

type choice struct {
	Index        int    `json:"index"`
	Message      delta  `json:"message"`
	Delta        delta  `json:"delta"`
	FinishReason string `json:"finish_reason"`
}

type delta struct {
	Content content `json:"content"`
}

type usage struct {
	PromptTokens        int `json:"prompt_tokens"`
	CompletionTokens    int `json:"completion_tokens"`
	PromptTokensDetails *struct {
		CachedTokens int `json:"cached_tokens"`
	} `json:"prompt_tokens_details"`
	CompletionTokensDetails *struct {
		ReasoningTokens int `json:"reasoning_tokens"`
	} `json:"completion_tokens_details"`
}

func (u *usage) neutral() llm.Usage {
	out := llm.Usage{InputTokens: u.PromptTokens, OutputTokens: u.CompletionTokens, Source: llm.SourceProvider}
	if d := u.PromptTokensDetails; d != nil {
		out.CachedInputTokens = d.CachedTokens // a part of prompt_tokens
	}
	if d := u.CompletionTokensDetails; d != nil {
		out.ReasoningTokens = d.ReasoningTokens // a part of completion_tokens
	}
	return out
}

// reset empties r for the next chunk of a stream. Decoding into a slice reuses its
// elements without zeroing them, so a field absent from one chunk would keep the
// previous chunk's value; clearing keeps the capacity and drops the values.
func (r *reply) reset() {
	clear(r.Choices[:cap(r.Choices)])
	*r = reply{Choices: r.Choices[:0]}
}

// content is a message's text: a string, null, or an array of typed parts
// (Mistral's reasoning models) whose "text" parts are the reply.
type content string

func (c *content) UnmarshalJSON(b []byte) error {
	switch {
	case len(b) == 0 || b[0] == 'n':
		*c = ""
		return nil
	case b[0] == '"':
		// Most pieces have no escapes: take the bytes as they are rather than
		// decode them a second time.
		if bytes.IndexByte(b, '\\') < 0 && utf8.Valid(b) {
			*c = content(b[1 : len(b)-1])
			return nil
		}
		var s string
		err := json.Unmarshal(b, &s)
		*c = content(s)
		return err
	case b[0] == '[':
		var parts []struct {
			Type string `json:"type"`
			Text string `json:"text"`
		}
		if err := json.Unmarshal(b, &parts); err != nil {
			return err
		}
		var sb strings.Builder
		for _, p := range parts {
			if p.Type == "text" {
				sb.WriteString(p.Text)
			}
		}
		*c = content(sb.String())
		return nil
	}
	return errors.New("openai: message content is neither text nor parts")
}

// Buffers for request and reply bodies, so a call allocates little beyond the
// strings it returns. Buffers grown past maxPooled by a large prompt or reply are
// left to the collector rather than pinned in the pool.
const maxPooled = 1 << 20

var bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

func getBuf() *bytes.Buffer { return bufPool.Get().(*bytes.Buffer) }

func putBuf(b *bytes.Buffer) {
	if b.Cap() > maxPooled {
		return
	}
	b.Reset()
	bufPool.Put(b)
}

// encode writes req as a chat completions request into a pooled buffer. It writes
// the JSON by hand: a session's prompt is hundreds of messages, and reflection-based
// encoding of them was the largest cost of a session turn. The output is what
// encoding/json would produce for chatRequest, without HTML escaping (prompts are
// full of <, > and &; no browser reads this); TestEncodeMatchesEncodingJSON and
// FuzzEncode hold it to that.
func encode(req *llm.Request, stream, completionTokens bool) (*bytes.Buffer, error) {
	if math.IsNaN(req.Temperature) || math.IsInf(req.Temperature, 0) {
		return nil, fmt.Errorf("temperature %v is not a number JSON can carry", req.Temperature)
	}
	buf := getBuf()
	b := buf.AvailableBuffer()
	b = append(b, `{"model":`...)
	b = appendString(b, req.Model)
	b = append(b, `,"messages":[`...)
	for i, m := range req.Messages {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"role":`...)
		b = appendString(b, m.Role)
		b = append(b, `,"content":`...)
		b = appendString(b, m.Content)
		b = append(b, '}')
	}
	b = append(b, `],"temperature":`...)
	b = appendFloat(b, req.Temperature)
	if req.MaxTokens != 0 {
		if completionTokens {
			b = append(b, `,"max_completion_tokens":`...)
		} else {
			b = append(b, `,"max_tokens":`...)
		}
		b = strconv.AppendInt(b, int64(req.MaxTokens), 10)
	}
	for _, p := range req.Params { // the client's own, verbatim: this is its API
		b = append(b, ',')
		b = appendString(b, p.Name)
		b = append(b, ':')
		b = append(b, p.Value...)
	}
	if stream {
		b = append(b, `,"stream":true,"stream_options":{"include_usage":true}`...)
	}
	b = append(b, "}\n"...)
	buf.Write(b)
	return buf, nil
}

// appendFloat formats f as encoding/json does.
func appendFloat(b []byte, f float64) []byte {
	abs, format := math.Abs(f), byte('f')
	if abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' { // clean up e-09 to e-9, as encoding/json does
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string, escaping as encoding/json does with
// HTML escaping off: quotes, backslashes, control characters, U+2028 and U+2029
// (JavaScript line terminators); invalid UTF-8 becomes U+FFFD.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// reqBody lends a pooled buffer to the transport as a request body. The transport
// may read the body from its own goroutine, for HTTP/2 even after Do has returned,
// and may rewind it through GetBody; so the buffer goes back to the pool only when
// the call is over and every reader handed out has been closed, and a reader
// closed while another goroutine still holds it reads nothing more.
type reqBody struct {
	mu      sync.Mutex
	buf     *bytes.Buffer // nil once released
	readers int           // handed out and not yet closed
	done    bool          // the call no longer needs the buffer
}

type bodyReader struct {
	owner  *reqBody
	off    int
	closed bool
}

var errReleased = errors.New("openai: request body already released")

func (b *reqBody) open() (io.ReadCloser, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.buf == nil {
		return nil, errReleased
	}
	b.readers++
	return &bodyReader{owner: b}, nil
}

// finish records that the call is over with the buffer.
func (b *reqBody) finish() {
	b.mu.Lock()
	b.done = true
	b.release()
	b.mu.Unlock()
}

func (b *reqBody) release() {
	if b.done && b.readers == 0 && b.buf != nil {
		putBuf(b.buf)
		b.buf = nil
	}
}

func (r *bodyReader) Read(p []byte) (int, error) {
	b := r.owner
	b.mu.Lock()
	defer b.mu.Unlock()
	if r.closed {
		return 0, http.ErrBodyReadAfterClose
	}
	data := b.buf.Bytes()
	if r.off >= len(data) {
		return 0, io.EOF
	}
	n := copy(p, data[r.off:])
	r.off += n
	return n, nil
}

func (r *bodyReader) Close() error {
	b := r.owner
	b.mu.Lock()
	defer b.mu.Unlock()
	if !r.closed {
		r.closed = true
		b.readers--
		b.release()
	}
	return nil
}
