package anthropic

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/agentd/agentd/internal/llm"
)

// Defaults of Options.
const (
	DefaultBaseURL = "https://api.anthropic.com"
	DefaultVersion = "2023-06-01"
	// DefaultMaxTokens is sent when a request sets no MaxTokens: Anthropic requires
	// max_tokens, and 4096 is within every current model's output limit.
	DefaultMaxTokens = 4096
)

const (
	// maxReply bounds a whole (non-streamed) reply. The longest output of any
	// model, JSON-escaped, is a few MiB; more means a broken upstream.
	maxReply = 32 << 20
	// maxErrorBody bounds how much of an error reply is read for its message.
	maxErrorBody = 64 << 10
	// maxSnippet bounds the part of a non-JSON error body kept as the message.
	maxSnippet = 200
)

// Options configures a Provider.
type Options struct {
	// BaseURL is the API root (default DefaultBaseURL); requests go to
	// BaseURL + "/v1/messages".
	BaseURL string
	// APIKey is sent as x-api-key; "" sends none (a proxy that adds it).
	APIKey string
	// Version is the anthropic-version header (default DefaultVersion).
	Version string
	// Headers are sent with every request (anthropic-beta, a proxy's own). They
	// cannot replace x-api-key, anthropic-version or Content-Type, which have
	// their own fields.
	Headers map[string]string
	// DropParams drops the client parameters the Messages API cannot take instead
	// of refusing the request (CheckRequest); an operator's choice, as LiteLLM's
	// drop_params.
	DropParams bool
	// Client sends the requests. nil: a client of its own, pooling up to 256 idle
	// connections, with no overall timeout — the context bounds each call, and a
	// stream may rightly last minutes.
	Client *http.Client
}

// Provider talks to the Messages API. It is safe for concurrent use.
type Provider struct {
	url    string
	header http.Header
	// clone: requests get a copy of header. A caller's Client may have a cookie jar
	// or a RoundTripper that writes to request headers; ours has neither, so its
	// requests share one read-only map.
	clone  bool
	client *http.Client
	drop   bool // Options.DropParams
}

var (
	_ llm.Provider     = (*Provider)(nil)
	_ llm.ParamChecker = (*Provider)(nil)
)

// New returns a Provider for opts.
func New(opts Options) *Provider {
	base := opts.BaseURL
	if base == "" {
		base = DefaultBaseURL
	}
	version := opts.Version
	if version == "" {
		version = DefaultVersion
	}
	h := make(http.Header, len(opts.Headers)+3)
	for k, v := range opts.Headers {
		h.Set(k, v)
	}
	if opts.APIKey != "" {
		h.Set("X-Api-Key", opts.APIKey)
	}
	h.Set("Anthropic-Version", version)
	h.Set("Content-Type", "application/json")
	client, clone := opts.Client, true
	if client == nil {
		clone = false
		client = &http.Client{Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			ForceAttemptHTTP2:     true,
			MaxIdleConns:          256,
			MaxIdleConnsPerHost:   256,
			IdleConnTimeout:       90 * time.Second,
			TLSHandshakeTimeout:   10 * time.Second,
			ExpectContinueTimeout: time.Second,
		}}
	}
	return &Provider{url: strings.TrimRight(base, "/") + "/v1/messages", header: h, clone: clone, client: client, drop: opts.DropParams}
}

// Complete sends req and returns the whole reply.
func (p *Provider) Complete(ctx context.Context, req *llm.Request) (*llm.Response, error) {
	body, forced, err := p.encode(req, false)
	if err != nil {
		return nil, err
	}
	resp, err := p.post(ctx, body)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()

	buf := getBuffer(resp.ContentLength)
	defer putBuffer(buf)
	if _, err := buf.ReadFrom(io.LimitReader(resp.Body, maxReply+1)); err != nil {
		return nil, llm.TransportError(ctx, "anthropic: read the reply", err)
	}
	if buf.Len() > maxReply {
		return nil, &llm.Error{Kind: llm.KindPermanent, Message: fmt.Sprintf("anthropic: reply larger than %d bytes", maxReply)}
	}
	var m message
	if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
		return nil, malformed(err)
	}
	switch m.Type {
	case "message":
	case "error": // not documented on a 200, but a proxy may relay one
		return nil, m.Error.llmError(0, nil)
	default:
		return nil, &llm.Error{Kind: llm.KindPermanent, Message: fmt.Sprintf("anthropic: reply of type %q, want a message", m.Type)}
	}
	var (
		text   strings.Builder
		calls  []llm.ToolCall
		answer = -1 // the block of the forced tool's call, whose input is the text
	)
	for i, b := range m.Content {
		switch b.Type {
		case "text":
			text.WriteString(b.Text)
		case "tool_use":
			if forced != "" {
				if answer < 0 {
					answer = i
				}
				continue
			}
			calls = append(calls, llm.ToolCall{ID: b.ID, Name: b.Name, Arguments: compact(b.Input)})
		}
	}
	out := &llm.Response{Text: text.String(), ToolCalls: calls, FinishReason: finish(m.StopReason, forced != ""), Model: m.Model}
	if answer >= 0 {
		out.Text = compact(m.Content[answer].Input)
	}
	if m.Usage != nil {
		out.Usage = m.Usage.llmUsage()
	}
	return out, nil
}

// post sends a request body and returns a successful reply; any other status
// becomes an error and its body is read and closed.
func (p *Provider) post(ctx context.Context, body []byte) (*http.Response, error) {
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url, bytes.NewReader(body))
	if err != nil {
		return nil, &llm.Error{Kind: llm.KindPermanent, Message: "anthropic: " + err.Error(), Err: err}
	}
	hreq.Header = p.header
	if p.clone {
		hreq.Header = p.header.Clone()
	}
	resp, err := p.client.Do(hreq)
	if err != nil {
		return nil, llm.TransportError(ctx, "anthropic: send the request", err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, statusError(resp)
	}
	return resp, nil
}

// The reply, and message_start's message.
type message struct {
	Type       string   `json:"type"`
	Model      string   `json:"model"`
	Content    []block  `json:"content"`
	StopReason string   `json:"stop_reason"`
	Usage      *usage   `json:"usage"`
	Error      apiError `json:"error"` // when Type is "error"
}

type block struct {
	Type  string          `json:"type"`
	Text  string          `json:"text"`
	ID    string          `json:"id"`    // tool_use
	Name  string          `json:"name"`  // tool_use
	Input json.RawMessage `json:"input"` // tool_use
}

type usage struct {
	InputTokens              int `json:"input_tokens"`
	OutputTokens             int `json:"output_tokens"`
	CacheCreationInputTokens int `json:"cache_creation_input_tokens"`
	CacheReadInputTokens     int `json:"cache_read_input_tokens"`
}

// llmUsage counts cache writes and reads as input: they are billed input tokens,
// at their own rates. A negative part, or parts whose sum would overflow, make the
// input count -1: impossible counts stay visibly impossible, for the caller to
// refuse, instead of wrapping or cancelling out into a plausible number.
func (u *usage) llmUsage() llm.Usage {
	in := u.InputTokens
	for _, part := range []int{u.CacheCreationInputTokens, u.CacheReadInputTokens} {
		if in < 0 || part < 0 || in > math.MaxInt-part {
			in = -1
			break
		}
		in += part
	}
	return llm.Usage{InputTokens: in, OutputTokens: u.OutputTokens, Source: llm.SourceProvider,
		CachedInputTokens: u.CacheReadInputTokens, CacheWriteTokens: u.CacheCreationInputTokens}
}

// merge keeps the larger of each count: Anthropic's counts are cumulative, and
// message_delta may repeat message_start's input counts or omit them.
func (u *usage) merge(v *usage) {
	u.InputTokens = max(u.InputTokens, v.InputTokens)
	u.OutputTokens = max(u.OutputTokens, v.OutputTokens)
	u.CacheCreationInputTokens = max(u.CacheCreationInputTokens, v.CacheCreationInputTokens)
	u.CacheReadInputTokens = max(u.CacheReadInputTokens, v.CacheReadInputTokens)
}

// finish normalizes a stop reason. structured says the request asked for a
// response format: the forced tool's call is the answer, not a call to make.
func finish(stopReason string, structured bool) string {
	switch stopReason {
	case "end_turn", "stop_sequence":
		return llm.FinishStop
	case "tool_use":
		if structured {
			return llm.FinishStop
		}
		return llm.FinishToolCalls
	case "max_tokens",
		"model_context_window_exceeded": // the reply ran into the window: cut short all the same
		return llm.FinishLength
	}
	return llm.FinishOther // pause_turn, refusal, and reasons yet to come
}

// compact is a tool_use input as JSON text: Anthropic sends an object, which is
// passed on with its keys in order and its insignificant space removed.
func compact(input json.RawMessage) string {
	var b bytes.Buffer
	if json.Compact(&b, input) != nil {
		return string(input) // absent or not JSON: as sent, for the caller to judge
	}
	return b.String()
}

func permanent(msg string) *llm.Error { return &llm.Error{Kind: llm.KindPermanent, Message: msg} }

func malformed(err error) *llm.Error {
	return &llm.Error{Kind: llm.KindPermanent, Message: "anthropic: malformed reply: " + err.Error(), Err: err}
}

// Reply buffers are pooled: a reply is read whole before it is decoded, which keeps
// a truncated body (retryable) apart from a malformed one (permanent).
var buffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

func getBuffer(size int64) *bytes.Buffer {
	b := buffers.Get().(*bytes.Buffer)
	if size > 0 && size <= maxReply {
		b.Grow(int(size) + bytes.MinRead) // ReadFrom wants MinRead spare to see EOF without growing
	}
	return b
}

func putBuffer(b *bytes.Buffer) {
	if b.Cap() > 1<<20 {
		return // a rare huge reply should not pin its memory
	}
	b.Reset()
	buffers.Put(b)
}
