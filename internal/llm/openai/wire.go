package openai

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
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
	Message      delta  `json:"message"`
	Delta        delta  `json:"delta"`
	FinishReason string `json:"finish_reason"`
}

type delta struct {
	Content content `json:"content"`
}

type usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
}

func (u *usage) neutral() llm.Usage {
	return llm.Usage{InputTokens: u.PromptTokens, OutputTokens: u.CompletionTokens, Source: llm.SourceProvider}
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

// encode writes req as a chat completions request into a pooled buffer.
func encode(req *llm.Request, stream, completionTokens bool) (*bytes.Buffer, error) {
	msgs := make([]message, len(req.Messages))
	for i, m := range req.Messages {
		msgs[i] = message{Role: m.Role, Content: m.Content}
	}
	cr := chatRequest{Model: req.Model, Messages: msgs, Temperature: req.Temperature}
	if completionTokens {
		cr.MaxCompletionTokens = req.MaxTokens
	} else {
		cr.MaxTokens = req.MaxTokens
	}
	if stream {
		cr.Stream, cr.StreamOptions = true, askUsage
	}
	buf := getBuf()
	enc := json.NewEncoder(buf)
	enc.SetEscapeHTML(false) // prompts are full of <, > and &; no browser reads this
	if err := enc.Encode(&cr); err != nil {
		putBuf(buf)
		return nil, err
	}
	return buf, nil
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
