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
// encode writes requests by hand; chatRequest is what it must be equivalent to
// (encode_test.go holds it to that), and reply is what decoding reads.

type chatRequest struct {
	Model               string          `json:"model"`
	Messages            []message       `json:"messages"`
	Temperature         float64         `json:"temperature"`
	MaxTokens           int             `json:"max_tokens,omitempty"`
	MaxCompletionTokens int             `json:"max_completion_tokens,omitempty"`
	Tools               []tool          `json:"tools,omitempty"`
	ToolChoice          any             `json:"tool_choice,omitempty"` // a mode, or a namedToolChoice
	ParallelToolCalls   *bool           `json:"parallel_tool_calls,omitempty"`
	ResponseFormat      *responseFormat `json:"response_format,omitempty"`
	Stream              bool            `json:"stream,omitempty"`
	StreamOptions       *streamOptions  `json:"stream_options,omitempty"`
}

type message struct {
	Role string `json:"role"`
	// Content is a string; nil (null) for an assistant message that only calls
	// tools; or []any of textPart and imagePart.
	Content    any        `json:"content"`
	ToolCalls  []toolCall `json:"tool_calls,omitempty"`
	ToolCallID string     `json:"tool_call_id,omitempty"`
}

type textPart struct {
	Type string `json:"type"` // "text"
	Text string `json:"text"`
}

type imagePart struct {
	Type     string   `json:"type"` // "image_url"
	ImageURL imageURL `json:"image_url"`
}

type imageURL struct {
	URL    string `json:"url"`
	Detail string `json:"detail,omitempty"`
}

type tool struct {
	Type     string       `json:"type"` // "function"
	Function toolFunction `json:"function"`
}

type toolFunction struct {
	Name        string          `json:"name"`
	Description string          `json:"description,omitempty"`
	Parameters  json.RawMessage `json:"parameters,omitempty"`
	Strict      *bool           `json:"strict,omitempty"`
}

type namedToolChoice struct {
	Type     string `json:"type"` // "function"
	Function struct {
		Name string `json:"name"`
	} `json:"function"`
}

type responseFormat struct {
	Type       string      `json:"type"`
	JSONSchema *jsonSchema `json:"json_schema,omitempty"`
}

type jsonSchema struct {
	Name        string          `json:"name"`
	Description string          `json:"description,omitempty"`
	Schema      json.RawMessage `json:"schema,omitempty"`
	Strict      *bool           `json:"strict,omitempty"`
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
	Content   content    `json:"content"`
	ToolCalls []toolCall `json:"tool_calls"`
	// FunctionCall is the deprecated single call of the functions API, which a
	// client may still ask for through its own params.
	FunctionCall *function `json:"function_call"`
}

// toolCall is a call in a request's assistant message or a whole reply, or a
// piece of one in a stream's delta (by Index; only the first piece of a call
// has its ID and name).
type toolCall struct {
	Index    int      `json:"index,omitempty"` // only in streams
	ID       string   `json:"id"`
	Type     string   `json:"type"`
	Function function `json:"function"`
}

type function struct {
	Name      string    `json:"name"`
	Arguments arguments `json:"arguments"`
}

// neutralCalls converts a reply's tool calls (and a legacy function call) to
// llm.ToolCalls; nil if there are none.
func (d *delta) neutralCalls() []llm.ToolCall {
	if len(d.ToolCalls) == 0 && d.FunctionCall == nil {
		return nil
	}
	out := make([]llm.ToolCall, 0, len(d.ToolCalls)+1)
	for i := range d.ToolCalls {
		c := &d.ToolCalls[i]
		out = append(out, llm.ToolCall{ID: c.ID, Name: c.Function.Name, Arguments: string(c.Function.Arguments)})
	}
	if f := d.FunctionCall; f != nil {
		out = append(out, llm.ToolCall{Name: f.Name, Arguments: string(f.Arguments)})
	}
	return out
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
// previous chunk's value; clearing keeps the capacity and drops the values. That
// includes each delta's ToolCalls: cleared to nil, a chunk's tool-call pieces
// are decoded into a fresh slice and never mixed with the previous chunk's.
func (r *reply) reset() {
	clear(r.Choices[:cap(r.Choices)])
	*r = reply{Choices: r.Choices[:0]}
}

// arguments are a tool call's arguments: a JSON string whose text the model
// wrote (often, not always, JSON), kept exactly and never re-encoded. A server
// that sends them as a JSON value rather than a string (some compatible servers
// do) has them kept as that value's JSON text.
type arguments string

func (a *arguments) UnmarshalJSON(b []byte) error {
	switch {
	case len(b) == 0 || b[0] == 'n':
		*a = ""
		return nil
	case b[0] == '"':
		s, err := unquote(b)
		*a = arguments(s)
		return err
	}
	*a = arguments(b)
	return nil
}

// unquote decodes a JSON string. Most pieces of a reply have no escapes: their
// bytes are taken as they are rather than decoded a second time.
func unquote(b []byte) (string, error) {
	if bytes.IndexByte(b, '\\') < 0 && utf8.Valid(b) {
		return string(b[1 : len(b)-1]), nil
	}
	var s string
	err := json.Unmarshal(b, &s)
	return s, err
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
		s, err := unquote(b)
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
	b, err := appendRequest(buf.AvailableBuffer(), req, stream, completionTokens)
	if err != nil {
		putBuf(buf)
		return nil, err
	}
	buf.Write(b)
	return buf, nil
}

func appendRequest(b []byte, req *llm.Request, stream, completionTokens bool) ([]byte, error) {
	var err error
	b = append(b, `{"model":`...)
	b = appendString(b, req.Model)
	b = append(b, `,"messages":[`...)
	for i := range req.Messages {
		m := &req.Messages[i] // not a copy: a Message is over 100 bytes
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"role":`...)
		b = appendString(b, m.Role)
		b = append(b, `,"content":`...)
		if m.Parts == nil && len(m.ToolCalls) == 0 && m.ToolCallID == "" {
			// Nearly every message of a prompt: kept on the short path.
			b = appendString(b, m.Content)
			b = append(b, '}')
			continue
		}
		if b, err = appendRichMessage(b, m); err != nil {
			return b, fmt.Errorf("message %d: %w", i, err)
		}
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
	if len(req.Tools) > 0 {
		if b, err = appendTools(b, req.Tools); err != nil {
			return b, err
		}
	}
	if tc := req.ToolChoice; tc != nil {
		b = append(b, `,"tool_choice":`...)
		switch tc.Mode {
		case llm.ToolChoiceAuto, llm.ToolChoiceNone, llm.ToolChoiceRequired:
			b = appendString(b, tc.Mode)
		case llm.ToolChoiceFunction:
			b = append(b, `{"type":"function","function":{"name":`...)
			b = appendString(b, tc.Name)
			b = append(b, "}}"...)
		default:
			return b, fmt.Errorf("unknown tool choice mode %q", tc.Mode)
		}
	}
	if p := req.ParallelToolCalls; p != nil {
		b = append(b, `,"parallel_tool_calls":`...)
		b = strconv.AppendBool(b, *p)
	}
	if rf := req.ResponseFormat; rf != nil {
		if b, err = appendResponseFormat(b, rf); err != nil {
			return b, err
		}
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
	return append(b, "}\n"...), nil
}

// appendRichMessage appends the rest of a message with parts, tool calls or a
// call it answers, after its "content": key.
func appendRichMessage(b []byte, m *llm.Message) ([]byte, error) {
	switch {
	case m.Parts != nil:
		if m.Content != "" {
			return b, errors.New("both Content and Parts") // one would be lost
		}
		b = append(b, '[')
		for i := range m.Parts {
			p := &m.Parts[i]
			if i > 0 {
				b = append(b, ',')
			}
			switch p.Type {
			case llm.PartText:
				b = append(b, `{"type":"text","text":`...)
				b = appendString(b, p.Text)
				b = append(b, '}')
			case llm.PartImage:
				b = append(b, `{"type":"image_url","image_url":{"url":`...)
				b = appendString(b, p.ImageURL)
				if p.Detail != "" {
					b = append(b, `,"detail":`...)
					b = appendString(b, p.Detail)
				}
				b = append(b, "}}"...)
			default:
				return b, fmt.Errorf("part %d: unknown type %q", i, p.Type)
			}
		}
		b = append(b, ']')
	case m.Content == "" && len(m.ToolCalls) > 0:
		b = append(b, "null"...) // as OpenAI's own clients send a message of calls only
	default:
		b = appendString(b, m.Content)
	}
	if len(m.ToolCalls) > 0 {
		b = append(b, `,"tool_calls":[`...)
		for i := range m.ToolCalls {
			c := &m.ToolCalls[i]
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"id":`...)
			b = appendString(b, c.ID)
			b = append(b, `,"type":"function","function":{"name":`...)
			b = appendString(b, c.Name)
			b = append(b, `,"arguments":`...)
			b = appendString(b, c.Arguments)
			b = append(b, "}}"...)
		}
		b = append(b, ']')
	}
	if m.ToolCallID != "" {
		b = append(b, `,"tool_call_id":`...)
		b = appendString(b, m.ToolCallID)
	}
	return append(b, '}'), nil
}

func appendTools(b []byte, tools []llm.Tool) ([]byte, error) {
	var err error
	b = append(b, `,"tools":[`...)
	for i := range tools {
		t := &tools[i]
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"type":"function","function":{"name":`...)
		b = appendString(b, t.Name)
		if t.Description != "" {
			b = append(b, `,"description":`...)
			b = appendString(b, t.Description)
		}
		if len(t.Parameters) > 0 {
			b = append(b, `,"parameters":`...)
			if b, err = appendRaw(b, t.Parameters); err != nil {
				return b, fmt.Errorf("tool %q: parameters: %w", t.Name, err)
			}
		}
		if t.Strict != nil {
			b = append(b, `,"strict":`...)
			b = strconv.AppendBool(b, *t.Strict)
		}
		b = append(b, "}}"...)
	}
	return append(b, ']'), nil
}

func appendResponseFormat(b []byte, rf *llm.ResponseFormat) ([]byte, error) {
	switch rf.Type {
	case llm.FormatJSONObject:
		return append(b, `,"response_format":{"type":"json_object"}`...), nil
	case llm.FormatJSONSchema:
	default:
		return b, fmt.Errorf("unknown response format %q", rf.Type)
	}
	var err error
	b = append(b, `,"response_format":{"type":"json_schema","json_schema":{"name":`...)
	b = appendString(b, rf.Name)
	if rf.Description != "" {
		b = append(b, `,"description":`...)
		b = appendString(b, rf.Description)
	}
	if len(rf.Schema) > 0 {
		b = append(b, `,"schema":`...)
		if b, err = appendRaw(b, rf.Schema); err != nil {
			return b, fmt.Errorf("response format schema: %w", err)
		}
	}
	if rf.Strict != nil {
		b = append(b, `,"strict":`...)
		b = strconv.AppendBool(b, *rf.Strict)
	}
	return append(b, "}}"...), nil
}

// appendRaw appends the JSON raw compacted, as encoding/json writes a
// json.RawMessage. Compacting also checks it: a schema that is not JSON would
// make the whole body unreadable to the server, so it fails here, by name.
func appendRaw(b, raw []byte) ([]byte, error) {
	w := bytes.NewBuffer(b)
	if err := json.Compact(w, raw); err != nil {
		return b, err
	}
	return w.Bytes(), nil
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
