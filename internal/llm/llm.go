// Package llm is the provider-neutral contract between a run and a model: messages
// in, text and usage out, whole or streamed. Adapters (offline, openai, anthropic)
// implement Provider; optional capabilities are separate interfaces found by type
// assertion, in the manner of database/sql/driver. It imports no other agentd package.
package llm

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Roles of a message.
const (
	RoleSystem    = "system"
	RoleUser      = "user"
	RoleAssistant = "assistant"
	// RoleTool is a tool's result, answering one of the assistant's ToolCalls.
	RoleTool = "tool"
)

// Message is one chat message.
type Message struct {
	Role    string
	Content string
	// Parts, when not nil, is a user message's content in parts (text and
	// images, in order); Content is then "".
	Parts []Part
	// ToolCalls are an assistant message's calls of tools; its Content may be "".
	ToolCalls []ToolCall
	// ToolCallID is the call a RoleTool message answers.
	ToolCallID string
	// Example marks the messages of a few-shot demonstration. Remote providers send
	// them as ordinary turns; the offline model answers from them.
	Example bool
}

// Text is m's text: Content, or its text parts joined with blank lines.
func (m *Message) Text() string {
	if m.Parts == nil {
		return m.Content
	}
	var b strings.Builder
	for _, p := range m.Parts {
		if p.Type == PartText {
			if b.Len() > 0 {
				b.WriteString("\n\n")
			}
			b.WriteString(p.Text)
		}
	}
	return b.String()
}

// Kinds of content part.
const (
	PartText  = "text"
	PartImage = "image"
)

// Part is one piece of a message's content.
type Part struct {
	Type string // PartText or PartImage
	Text string
	// ImageURL is an image's http(s) URL, or a data: URL carrying it in base64
	// ("data:image/png;base64,…").
	ImageURL string
	// Detail is OpenAI's image detail ("", "auto", "low", "high"); adapters whose
	// API has no such setting ignore it.
	Detail string
}

// ToolCall is one call of a tool by the model.
type ToolCall struct {
	ID   string
	Name string
	// Arguments is the JSON text of the arguments, byte for byte as the model
	// produced it (it may not even be valid JSON: the caller judges).
	Arguments string
}

// Tool is a function the model may call.
type Tool struct {
	Name        string
	Description string
	// Parameters is the JSON schema of the arguments (an object schema), nil
	// for a function that takes none.
	Parameters []byte
	// Strict is OpenAI's strict schema adherence; nil leaves it unsaid.
	Strict *bool
}

// Tool choice modes.
const (
	ToolChoiceAuto     = "auto"     // the model decides
	ToolChoiceNone     = "none"     // no tool calls
	ToolChoiceRequired = "required" // at least one tool call
	ToolChoiceFunction = "function" // a call of the tool named Name
)

// ToolChoice says whether and which tools the model must call.
type ToolChoice struct {
	Mode string
	Name string // for ToolChoiceFunction
}

// Response format types.
const (
	FormatJSONObject = "json_object" // any JSON object
	FormatJSONSchema = "json_schema" // JSON matching Schema
)

// ResponseFormat asks for structured output instead of free text.
type ResponseFormat struct {
	Type        string // FormatJSONObject or FormatJSONSchema
	Name        string // the schema's name (json_schema)
	Description string
	Schema      []byte // JSON schema (json_schema)
	Strict      *bool
}

// Request is one completion request. Model is the upstream model name.
type Request struct {
	Model       string
	Messages    []Message
	Temperature float64
	MaxTokens   int
	// Tools the model may call, and whether it must; ParallelToolCalls nil
	// leaves the provider's default.
	Tools             []Tool
	ToolChoice        *ToolChoice
	ParallelToolCalls *bool
	// ResponseFormat, when set, asks for JSON.
	ResponseFormat *ResponseFormat
	// Params are the client's other parameters, passed on as it sent them.
	Params []Param
}

// Param is a request parameter passed on as the client sent it: its name in
// OpenAI's API (stop, seed, top_p, …, or any field agentd does not know) and its
// JSON value, verbatim. An adapter sends those its API takes, translated where
// its API names them otherwise; a Provider that cannot take one implements
// ParamChecker, so that the caller refuses the request before any call.
type Param struct {
	Name  string
	Value []byte // JSON, never null
}

// ParamChecker is implemented by providers that cannot take every request.
type ParamChecker interface {
	// CheckRequest returns a *ParamError for the first part of req it cannot
	// take: a Param, or a feature (tools, images, response_format) named by its
	// OpenAI field. It is called before any hold, with the caller's messages.
	CheckRequest(req *Request) error
}

// ParamError is a parameter a provider cannot take, or a value it cannot take for it.
type ParamError struct {
	Param  string
	Kind   string // the provider's kind: "anthropic", "offline"
	Reason string // why, when not simply unsupported
}

func (e *ParamError) Error() string {
	if e.Reason != "" {
		return fmt.Sprintf("parameter %q: %s", e.Param, e.Reason)
	}
	return fmt.Sprintf("parameter %q is not supported by %s models", e.Param, e.Kind)
}

// Sources of usage numbers.
const (
	// SourceProvider: the provider reported the counts.
	SourceProvider = "provider"
	// SourceEstimated: agentd counted them with the model's tokenizer (exact for
	// known tokenizers, an upper-bound estimate otherwise).
	SourceEstimated = "estimated"
)

// Usage is what a provider reports. Adapters never invent counts: when the upstream
// reported none, Source is "" and the caller estimates (see EstimateUsage).
type Usage struct {
	InputTokens  int
	OutputTokens int
	// CachedInputTokens and CacheWriteTokens are the parts of InputTokens the
	// provider read from and wrote to its prompt cache (priced apart);
	// ReasoningTokens the part of OutputTokens spent reasoning.
	CachedInputTokens int
	CacheWriteTokens  int
	ReasoningTokens   int
	Source            string
}

// Finish reasons, normalized across providers.
const (
	FinishStop      = "stop"       // the model ended its reply
	FinishLength    = "length"     // the reply hit MaxTokens
	FinishToolCalls = "tool_calls" // the model called tools and waits for their results
	FinishOther     = "other"      // anything else the provider said (content filter, …)
)

// Response is a finished completion.
type Response struct {
	Text string
	// ToolCalls are the model's calls of tools, in order; streamed calls are
	// assembled by index before Stream returns.
	ToolCalls    []ToolCall
	FinishReason string
	Usage        Usage  // of every choice
	Model        string // the model that answered, as the provider names it
	// More are the choices after the first when the request asked for several
	// (the param n), in order.
	More []Choice
}

// Choice is one of several answers to a request.
type Choice struct {
	Text         string
	ToolCalls    []ToolCall
	FinishReason string
}

// Provider completes chat requests. Implementations must be safe for concurrent use
// and must return an *Error (possibly wrapped) for failures they can classify.
type Provider interface {
	Complete(ctx context.Context, req *Request) (*Response, error)
	// Stream is Complete delivered piece by piece: emit is called with each piece of
	// text in order, from the calling goroutine. If emit returns an error the stream
	// stops and Stream returns that error. On any failure Stream still returns the
	// Response so far (the text emitted, and usage if the provider sent it), so a
	// caller can account for what was generated; its ToolCalls may then be cut
	// short and must not be run.
	Stream(ctx context.Context, req *Request, emit func(text string) error) (*Response, error)
}

// Kind classifies a provider failure for retry and fallback decisions.
type Kind int

// Kinds of provider failure.
const (
	KindUnknown Kind = iota
	// KindRetryable: 429, 5xx, timeouts, connection resets, a stream cut short.
	// Worth retrying on the same model, then falling back.
	KindRetryable
	// KindPermanent: 400, 401, 403, 404, a malformed reply. The same request will
	// fail the same way anywhere; do not retry or fall back.
	KindPermanent
	// KindContextLength: the prompt is too long for the model. Permanent.
	KindContextLength
	// KindExhausted: the provider account is out of quota (OpenAI's 429
	// insufficient_quota). Retrying this provider is pointless; another may answer.
	KindExhausted
)

func (k Kind) String() string {
	switch k {
	case KindRetryable:
		return "retryable"
	case KindPermanent:
		return "permanent"
	case KindContextLength:
		return "context_length"
	case KindExhausted:
		return "exhausted"
	}
	return "unknown"
}

// Error is a provider failure. Message may contain upstream text: it is for logs,
// not for clients.
type Error struct {
	Kind       Kind
	StatusCode int           // upstream HTTP status, 0 if none
	Code       string        // upstream error type or code, if any
	RetryAfter time.Duration // from a Retry-After header, 0 if none
	Message    string
	Err        error
}

func (e *Error) Error() string {
	if e.StatusCode != 0 {
		return fmt.Sprintf("llm: upstream status %d: %s", e.StatusCode, e.Message)
	}
	return "llm: " + e.Message
}

func (e *Error) Unwrap() error { return e.Err }

// KindOf returns the kind of err: the Kind of the *Error it wraps; KindRetryable for
// a deadline (the next attempt may be faster); KindPermanent for cancellation by the
// caller (nobody is waiting for a retry); KindUnknown otherwise.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return KindRetryable
	case errors.Is(err, context.Canceled):
		return KindPermanent
	}
	return KindUnknown
}

// Retryable reports whether err is worth retrying on the same model.
func Retryable(err error) bool { return KindOf(err) == KindRetryable }

// Fallible reports whether another model may succeed where err failed.
func Fallible(err error) bool {
	k := KindOf(err)
	return k == KindRetryable || k == KindExhausted
}

// RetryAfter returns the delay err's provider asked for, or 0.
func RetryAfter(err error) time.Duration {
	var e *Error
	if errors.As(err, &e) {
		return e.RetryAfter
	}
	return 0
}

// EstimateUsage fills in what the provider did not report: input as
// CountMessages of req and its tool definitions, output as the count of the
// reply and its tool calls, with Source "estimated". Counts the provider did
// report are kept.
func EstimateUsage(count func(string) int, req *Request, resp *Response) {
	if resp.Usage.Source != "" {
		return
	}
	out := count(resp.Text) + countCalls(count, resp.ToolCalls)
	for _, c := range resp.More {
		out += count(c.Text) + countCalls(count, c.ToolCalls)
	}
	resp.Usage = Usage{
		InputTokens:  CountMessages(count, req.Messages) + CountTools(count, req.Tools, req.ResponseFormat),
		OutputTokens: out,
		Source:       SourceEstimated,
	}
}

func countCalls(count func(string) int, calls []ToolCall) int {
	n := 0
	for _, c := range calls {
		n += TokensPerToolCall + count(c.Name) + count(c.Arguments)
	}
	return n
}

// EmbedRequest asks for one vector per input, in order.
type EmbedRequest struct {
	Model  string
	Input  []string
	Params []Param // as Request.Params: dimensions, user, …
}

// EmbedResponse is the vectors of an EmbedRequest, in its order, and the input
// tokens the provider counted (0 with Source "" when it reported none).
type EmbedResponse struct {
	Vectors     [][]float32
	InputTokens int
	Source      string
	Model       string
}

// Embedder is a Provider that also computes embeddings.
type Embedder interface {
	Embed(ctx context.Context, req *EmbedRequest) (*EmbedResponse, error)
}
