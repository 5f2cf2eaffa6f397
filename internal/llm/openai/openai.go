package openai

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/agentd/agentd/internal/llm"
	"github.com/agentd/agentd/internal/llm/sse"
)

// Options configures a Provider.
type Options struct {
	// BaseURL is the API root, e.g. https://api.openai.com/v1 or
	// http://localhost:11434/v1; requests go to BaseURL + "/chat/completions"
	// (a trailing slash is trimmed; a query string, as Azure's api-version, is
	// kept). "" means OpenAI's.
	BaseURL string
	// APIKey is sent as "Authorization: Bearer <key>"; "" sends no
	// Authorization header, for local servers.
	APIKey string
	// Headers are sent on every request (OpenRouter's HTTP-Referer, Azure's
	// api-key, …). They are set after the adapter's own, so they may replace them.
	Headers map[string]string
	// MaxTokensField is the request field carrying the reply limit: "max_tokens"
	// (the default; what every compatible server accepts) or
	// "max_completion_tokens" (OpenAI's reasoning models require it).
	MaxTokensField string
	// Client sends the requests. nil means a client of the Provider's own, with
	// no Client.Timeout: the caller's context governs, and streams are long.
	Client *http.Client
}

// DefaultBaseURL is OpenAI's API root.
const DefaultBaseURL = "https://api.openai.com/v1"

// maxReply bounds a whole (not streamed) reply. A reply of the largest output any
// model allows is a few hundred KiB of JSON; past this the upstream is broken.
const maxReply = 16 << 20

// Provider is a chat completions client. It is safe for concurrent use.
type Provider struct {
	client           *http.Client
	endpoint         string
	header           http.Header // for Complete
	streamHeader     http.Header // for Stream
	completionTokens bool        // send the limit as max_completion_tokens
}

var _ llm.Provider = (*Provider)(nil)

// New returns a Provider. It panics if MaxTokensField is not one of the two
// fields servers know: that is a wiring mistake, found the first time the
// program starts.
func New(opts Options) *Provider {
	p := &Provider{client: opts.Client, endpoint: endpoint(opts.BaseURL)}
	switch opts.MaxTokensField {
	case "", "max_tokens":
	case "max_completion_tokens":
		p.completionTokens = true
	default:
		panic("openai.New: MaxTokensField must be \"max_tokens\" or \"max_completion_tokens\", not " + `"` + opts.MaxTokensField + `"`)
	}
	if p.client == nil {
		p.client = &http.Client{Transport: newTransport()}
	}
	// The headers are built once and cloned per request: one allocation for the
	// map and one for all its values.
	h := http.Header{"Content-Type": {"application/json"}, "Accept": {"application/json"}}
	if opts.APIKey != "" {
		h.Set("Authorization", "Bearer "+opts.APIKey)
	}
	for k, v := range opts.Headers {
		h.Set(k, v)
	}
	p.header = h
	p.streamHeader = h.Clone()
	p.streamHeader.Set("Accept", "text/event-stream")
	return p
}

// endpoint returns the chat completions URL under base.
func endpoint(base string) string {
	if base == "" {
		base = DefaultBaseURL
	}
	u, err := url.Parse(base)
	if err != nil {
		// Leave it to the first request to report, as a permanent error.
		return strings.TrimRight(base, "/") + "/chat/completions"
	}
	u.Path = strings.TrimRight(u.Path, "/") + "/chat/completions"
	u.RawPath = ""
	return u.String()
}

// newTransport is a transport for many concurrent calls to a few hosts: the
// default transport's settings, with more idle connections kept per host so that
// bursts of calls do not each pay for a TLS handshake.
func newTransport() *http.Transport {
	return &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: (&net.Dialer{
			Timeout:   30 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
}

// post sends req and returns the reply, whatever its status. It makes exactly one
// request: retrying is the caller's decision.
func (p *Provider) post(ctx context.Context, req *llm.Request, stream bool) (*http.Response, error) {
	buf, err := encode(req, stream, p.completionTokens)
	if err != nil {
		return nil, &llm.Error{Kind: llm.KindPermanent, Message: "openai: encode request: " + err.Error(), Err: err}
	}
	body := &reqBody{buf: buf}
	defer body.finish()
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, p.endpoint, nil)
	if err != nil {
		return nil, &llm.Error{Kind: llm.KindPermanent, Message: "openai: build request: " + err.Error(), Err: err}
	}
	if stream {
		hreq.Header = p.streamHeader.Clone()
	} else {
		hreq.Header = p.header.Clone()
	}
	hreq.ContentLength = int64(buf.Len())
	hreq.GetBody = body.open
	hreq.Body, _ = body.open() // cannot fail before finish
	resp, err := p.client.Do(hreq)
	if err != nil {
		return nil, llm.TransportError(ctx, "openai: send request", err)
	}
	return resp, nil
}

func ok(status int) bool { return status >= 200 && status < 300 }

// Complete implements llm.Provider.
func (p *Provider) Complete(ctx context.Context, req *llm.Request) (*llm.Response, error) {
	resp, err := p.post(ctx, req, false)
	if err != nil {
		return nil, err
	}
	if !ok(resp.StatusCode) {
		return nil, statusError(resp)
	}
	return readReply(ctx, resp)
}

// readReply reads and decodes a whole reply with a 2xx status, and closes it.
func readReply(ctx context.Context, resp *http.Response) (*llm.Response, error) {
	defer closeBody(resp.Body)
	buf := getBuf()
	defer putBuf(buf)
	if _, err := buf.ReadFrom(io.LimitReader(resp.Body, maxReply+1)); err != nil {
		return nil, llm.TransportError(ctx, "openai: read reply", err)
	}
	if buf.Len() > maxReply {
		return nil, &llm.Error{Kind: llm.KindPermanent, Message: "openai: reply larger than 16 MiB"}
	}
	return decodeReply(buf.Bytes())
}

// decodeReply reads a whole chat.completion object.
func decodeReply(body []byte) (*llm.Response, error) {
	var r reply
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, &llm.Error{Kind: llm.KindPermanent, Message: "openai: malformed reply: " + err.Error() + ": " + snippet(body), Err: err}
	}
	if hasError(r.Error) {
		return nil, bandError(r.Error)
	}
	if len(r.Choices) == 0 {
		return nil, &llm.Error{Kind: llm.KindPermanent, Message: "openai: reply has no choices: " + snippet(body)}
	}
	slices.SortStableFunc(r.Choices, func(a, b choice) int { return a.Index - b.Index }) // n > 1
	c := &r.Choices[0]
	out := &llm.Response{Text: string(c.Message.Content), ToolCalls: c.Message.neutralCalls(), Model: r.Model}
	out.FinishReason = finish(c.FinishReason, len(out.ToolCalls) > 0)
	for i := range r.Choices[1:] {
		c := &r.Choices[i+1]
		calls := c.Message.neutralCalls()
		out.More = append(out.More, llm.Choice{Text: string(c.Message.Content), ToolCalls: calls, FinishReason: finish(c.FinishReason, len(calls) > 0)})
	}
	if r.Usage != nil {
		out.Usage = r.Usage.neutral()
	}
	return out, nil
}

func hasError(raw json.RawMessage) bool { return len(raw) > 0 && string(raw) != "null" }

// finish normalizes a finish reason; calls says whether the reply called tools.
// "" stays "": the server gave none. A reply that called tools and says "stop"
// is llm.FinishToolCalls: OpenAI and vLLM answer a forced choice of one
// function with "stop", yet the model waits for the result all the same.
func finish(reason string, calls bool) string {
	switch reason {
	case "stop":
		if calls {
			return llm.FinishToolCalls
		}
		return llm.FinishStop
	case "length":
		return llm.FinishLength
	case "tool_calls", "function_call": // function_call: the deprecated functions API
		return llm.FinishToolCalls
	case "":
		return ""
	}
	return llm.FinishOther
}

// doneData is the data of the event that ends a stream.
var doneData = []byte("[DONE]")

// Stream implements llm.Provider.
func (p *Provider) Stream(ctx context.Context, req *llm.Request, emit func(string) error) (*llm.Response, error) {
	out := &llm.Response{}
	resp, err := p.post(ctx, req, true)
	if err != nil {
		return out, err
	}
	if !ok(resp.StatusCode) {
		return out, statusError(resp)
	}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		// The server ignored "stream": a whole reply, delivered as one piece.
		return streamWhole(ctx, resp, emit)
	}

	var (
		text   strings.Builder
		calls  callAssembler
		reason string // as the server said it: normalized once the calls are known
		chunk  reply
		events = sse.NewReader(resp.Body, 0)
	)
	// fail ends the stream early: the body is closed without draining, since the
	// upstream may still be sending. The calls so far are returned with the text,
	// their arguments possibly cut short, for the caller's accounting.
	fail := func(err error) (*llm.Response, error) {
		resp.Body.Close()
		out.Text, out.ToolCalls = text.String(), calls.done()
		out.FinishReason = finish(reason, len(out.ToolCalls) > 0)
		return out, err
	}
	for {
		ev, err := events.Next()
		if err != nil {
			if errors.Is(err, sse.ErrLineTooLong) {
				return fail(&llm.Error{Kind: llm.KindPermanent, Message: "openai: stream event too large", Err: err})
			}
			// io.EOF included: a stream that ends before [DONE] was cut.
			return fail(llm.TransportError(ctx, "openai: read stream", err))
		}
		data := bytes.TrimSpace(ev.Data)
		if bytes.Equal(data, doneData) {
			break
		}
		if ev.Type == "error" { // a server that names its error events
			return fail(bandError(errorValue(data)))
		}
		chunk.reset()
		if err := json.Unmarshal(data, &chunk); err != nil {
			return fail(&llm.Error{Kind: llm.KindPermanent, Message: "openai: malformed stream chunk: " + err.Error() + ": " + snippet(data), Err: err})
		}
		if hasError(chunk.Error) {
			return fail(bandError(chunk.Error))
		}
		if chunk.Model != "" {
			out.Model = chunk.Model
		}
		if chunk.Usage != nil { // the usage chunk, or llama.cpp's and vLLM's last choice chunk
			out.Usage = chunk.Usage.neutral()
		}
		if len(chunk.Choices) == 0 {
			continue
		}
		c := &chunk.Choices[0]
		if c.FinishReason != "" {
			reason = c.FinishReason
		}
		if len(c.Delta.ToolCalls) > 0 || c.Delta.FunctionCall != nil {
			calls.add(&c.Delta)
		}
		if piece := string(c.Delta.Content); piece != "" {
			text.WriteString(piece)
			if err := emit(piece); err != nil {
				return fail(err)
			}
		}
	}
	closeBody(resp.Body)
	out.Text, out.ToolCalls = text.String(), calls.done()
	out.FinishReason = finish(reason, len(out.ToolCalls) > 0)
	return out, nil
}

// callAssembler puts together the tool calls of a stream from their pieces.
// Each call is streamed by index: its first piece has the id and the name, the
// next ones pieces of the arguments, concatenated byte for byte. OpenAI sends
// parallel calls one after another, other servers interleave them; older Ollama
// sends each call whole, all at index 0, told apart only by their ids.
type callAssembler struct {
	calls []assembly // nil until a stream calls a tool
}

type assembly struct {
	index    int
	id, name string
	args     []byte // not a strings.Builder: assemblies are moved as the slice grows and sorts
}

func (a *callAssembler) add(d *delta) {
	for i := range d.ToolCalls {
		p := &d.ToolCalls[i]
		a.piece(p.Index, p.ID, &p.Function)
	}
	if f := d.FunctionCall; f != nil { // the deprecated functions API: one call, no id
		a.piece(0, "", f)
	}
}

func (a *callAssembler) piece(index int, id string, f *function) {
	var c *assembly
	for i := len(a.calls) - 1; i >= 0; i-- { // the latest call at index
		if a.calls[i].index == index {
			c = &a.calls[i]
			break
		}
	}
	if c == nil || (id != "" && c.id != "" && id != c.id) {
		a.calls = append(a.calls, assembly{index: index})
		c = &a.calls[len(a.calls)-1]
	}
	if c.id == "" {
		c.id = id
	}
	if c.name == "" {
		c.name = f.Name
	}
	c.args = append(c.args, f.Arguments...)
}

// done returns the calls in the order of their indexes (calls sharing one in the
// order they came), or nil if there were none.
func (a *callAssembler) done() []llm.ToolCall {
	if len(a.calls) == 0 {
		return nil
	}
	slices.SortStableFunc(a.calls, func(x, y assembly) int { return x.index - y.index })
	out := make([]llm.ToolCall, len(a.calls))
	for i := range a.calls {
		c := &a.calls[i]
		out[i] = llm.ToolCall{ID: c.id, Name: c.name, Arguments: string(c.args)}
	}
	return out
}

// errorValue returns the "error" value of an error event's data for bandError:
// the data's own error field if it has one, else the data itself.
func errorValue(data []byte) []byte {
	var env struct {
		Error json.RawMessage `json:"error"`
	}
	if json.Unmarshal(data, &env) == nil && hasError(env.Error) {
		return env.Error
	}
	return data
}

// streamWhole answers a stream with a whole reply, sent by a server that does not
// stream.
func streamWhole(ctx context.Context, resp *http.Response, emit func(string) error) (*llm.Response, error) {
	r, err := readReply(ctx, resp)
	if err != nil {
		return &llm.Response{}, err
	}
	if r.Text != "" {
		if err := emit(r.Text); err != nil {
			return r, err
		}
	}
	return r, nil
}
