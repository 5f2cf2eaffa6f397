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
	// of refusing the request (CheckParams); an operator's choice, as LiteLLM's
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
	resp, err := p.post(ctx, req, false)
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
	var text strings.Builder
	for _, b := range m.Content {
		if b.Type == "text" {
			text.WriteString(b.Text)
		}
	}
	out := &llm.Response{Text: text.String(), FinishReason: finish(m.StopReason), Model: m.Model}
	if m.Usage != nil {
		out.Usage = m.Usage.llmUsage()
	}
	return out, nil
}

// post sends req and returns a successful reply; any other status becomes an error
// and its body is read and closed.
func (p *Provider) post(ctx context.Context, req *llm.Request, stream bool) (*http.Response, error) {
	body, err := encode(req, stream)
	if err != nil {
		return nil, err
	}
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

// The request body.
type request struct {
	Model         string    `json:"model"`
	MaxTokens     int       `json:"max_tokens"`
	System        string    `json:"system,omitempty"`
	Messages      []turn    `json:"messages"`
	Temperature   float64   `json:"temperature"`
	TopP          *float64  `json:"top_p,omitempty"`
	StopSequences []string  `json:"stop_sequences,omitempty"`
	Metadata      *metadata `json:"metadata,omitempty"`
	Stream        bool      `json:"stream,omitempty"`
}

type metadata struct {
	UserID string `json:"user_id"`
}

// CheckParams implements llm.ParamChecker: the Messages API takes OpenAI's stop
// (as stop_sequences), top_p and user (as metadata.user_id); with DropParams the
// rest are dropped, else refused.
func (p *Provider) CheckParams(params []llm.Param) error {
	var r request
	for _, prm := range params {
		if err := apply(&r, prm); err != nil {
			if !p.drop || err.Reason != "" {
				return err
			}
		}
	}
	return nil
}

// apply sets what prm asks on r, or says why it cannot.
func apply(r *request, prm llm.Param) *llm.ParamError {
	bad := func(why string) *llm.ParamError {
		return &llm.ParamError{Param: prm.Name, Kind: "anthropic", Reason: why}
	}
	switch prm.Name {
	case "stop":
		var one string
		if json.Unmarshal(prm.Value, &one) == nil {
			r.StopSequences = []string{one}
			return nil
		}
		if json.Unmarshal(prm.Value, &r.StopSequences) != nil {
			return bad("must be a string or a list of strings")
		}
	case "top_p":
		var v float64
		if json.Unmarshal(prm.Value, &v) != nil || v < 0 || v > 1 {
			return bad("must be a number between 0 and 1")
		}
		r.TopP = &v
	case "user":
		var v string
		if json.Unmarshal(prm.Value, &v) != nil {
			return bad("must be a string")
		}
		r.Metadata = &metadata{UserID: v}
	default:
		return &llm.ParamError{Param: prm.Name, Kind: "anthropic"}
	}
	return nil
}

type turn struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// encode builds the request body, fitting req to the API's rules (see the package
// documentation).
func encode(req *llm.Request, stream bool) ([]byte, error) {
	if req == nil {
		return nil, permanent("anthropic: nil request")
	}
	r := request{Model: req.Model, MaxTokens: req.MaxTokens, Stream: stream,
		Messages: make([]turn, 0, len(req.Messages))}
	if r.MaxTokens <= 0 {
		r.MaxTokens = DefaultMaxTokens
	}
	switch t := req.Temperature; {
	case math.IsNaN(t):
		return nil, permanent("anthropic: temperature is NaN")
	case t < 0:
		r.Temperature = 0
	case t > 1:
		r.Temperature = 1
	default:
		r.Temperature = t
	}
	var system strings.Builder
	for i, m := range req.Messages {
		switch m.Role {
		case llm.RoleSystem:
			if m.Content == "" {
				continue
			}
			if system.Len() > 0 {
				system.WriteString("\n\n")
			}
			system.WriteString(m.Content)
		case llm.RoleUser, llm.RoleAssistant:
			if n := len(r.Messages); n > 0 && r.Messages[n-1].Role == m.Role {
				r.Messages[n-1].Content += "\n\n" + m.Content
				continue
			}
			if len(r.Messages) == 0 && m.Role == llm.RoleAssistant {
				return nil, permanent("anthropic: the conversation starts with an assistant message; the Messages API requires a user message first")
			}
			r.Messages = append(r.Messages, turn{Role: m.Role, Content: m.Content})
		default:
			return nil, permanent(fmt.Sprintf("anthropic: message %d has unknown role %q", i, m.Role))
		}
	}
	if len(r.Messages) == 0 {
		return nil, permanent("anthropic: the request has no user message")
	}
	r.System = system.String()
	for _, prm := range req.Params {
		apply(&r, prm) // CheckParams has refused what cannot be sent; the rest is dropped
	}
	return json.Marshal(&r)
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
	Type string `json:"type"`
	Text string `json:"text"`
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

func finish(stopReason string) string {
	switch stopReason {
	case "end_turn", "stop_sequence":
		return llm.FinishStop
	case "max_tokens",
		"model_context_window_exceeded": // the reply ran into the window: cut short all the same
		return llm.FinishLength
	}
	return llm.FinishOther // tool_use, pause_turn, refusal, and reasons yet to come
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
