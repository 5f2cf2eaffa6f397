package api

// The OpenAI-compatible inference API: POST /v1/chat/completions (also at NuGen's
// POST /api/v3/inference/chat/completions) and GET /v1/models, so that every
// OpenAI SDK can call agentd. A request's model is a catalog model (a raw model
// call) or "agent/<name>": the agent's instructions and demonstrations come first,
// and with X-Session-ID it remembers the conversation. Every error on these routes,
// authentication's included, is in OpenAI's envelope:
// {"error": {"message", "type", "param", "code"}}, with the status the rest of the
// API gives its code (except validation: 400, as OpenAI's clients expect).

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/internal/llm"
	"github.com/agentd/agentd/internal/reqlog"
	"github.com/agentd/agentd/internal/run"
	"github.com/agentd/agentd/internal/toolspec"
)

// agentModelPrefix marks a model that names an agent: "agent/<name>".
const agentModelPrefix = "agent/"

// withOpenAI is `with` for the OpenAI-compatible routes: it authenticates the
// request and checks that the key holds one of scopes, and writes every error of
// h in OpenAI's envelope.
func (s *Server) withOpenAI(h authed, scopes ...agentd.Scope) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p, err := s.Auth.Authenticate(r.Context(), r.Header.Get("Authorization"))
		if err == nil {
			reqlog.SetPrincipal(r.Context(), p.OrgID, p.KeyID)
			err = requireAny(p, scopes...)
		}
		if err == nil {
			err = h(w, r, p)
		}
		if err != nil {
			s.writeOpenAIError(w, r, err)
		}
	}
}

// requireAny returns nil when p holds one of scopes (directly or through a
// broader one), else EForbidden.
func requireAny(p *agentd.Principal, scopes ...agentd.Scope) error {
	names := make([]string, len(scopes))
	for i, sc := range scopes {
		if p.Can(sc) {
			return nil
		}
		names[i] = strconv.Quote(string(sc))
	}
	return agentd.Errorf(agentd.EForbidden, "this key lacks the %s scope", strings.Join(names, " or "))
}

// openAINoRoute answers the paths under /v1 that no route serves, in OpenAI's
// envelope: 405 when another method is served there, else 404.
func (s *Server) openAINoRoute(routes handleFuncer) http.HandlerFunc {
	mux, _ := routes.(*http.ServeMux) // nil only while ReservedAgentNames records patterns
	return func(w http.ResponseWriter, r *http.Request) {
		var allowed []string
		for _, m := range []string{http.MethodGet, http.MethodPost} {
			r2 := r.Clone(r.Context())
			r2.Method = m
			if _, p := mux.Handler(r2); p != "" && p != "/v1/" && p != "/v1" {
				allowed = append(allowed, m)
			}
		}
		var err error = agentd.Errorf(agentd.ENotFound, "Invalid URL (%s %s)", r.Method, r.URL.Path)
		if len(allowed) > 0 {
			w.Header().Set("Allow", strings.Join(allowed, ", "))
			err = agentd.Errorf(agentd.EMethodNotAllowed, "method %s not allowed on %s; use %s", r.Method, r.URL.Path, strings.Join(allowed, ", "))
		}
		s.writeOpenAIError(w, r, err)
	}
}

// openAITypes maps agentd's error codes to OpenAI's error types.
var openAITypes = map[agentd.Code]string{
	agentd.EInvalid:           "invalid_request_error",
	agentd.EBadRequest:        "invalid_request_error",
	agentd.EModelUnavailable:  "invalid_request_error",
	agentd.EAlreadyExists:     "invalid_request_error",
	agentd.EMethodNotAllowed:  "invalid_request_error",
	agentd.EPayloadTooLarge:   "invalid_request_error",
	agentd.EUnauthenticated:   "authentication_error",
	agentd.EForbidden:         "permission_error",
	agentd.ENotFound:          "not_found_error",
	agentd.EInsufficientQuota: "insufficient_quota",
	agentd.ERateLimited:       "rate_limit_error",
	agentd.EConflict:          "conflict_error",
	agentd.ESessionBusy:       "conflict_error",
	agentd.EInferenceFailed:   "server_error",
	agentd.EUpstream:          "server_error",
	agentd.EUpstreamTimeout:   "server_error",
	agentd.EUnavailable:       "server_error",
	agentd.EInternal:          "server_error",

	// api.Listener answers these in agentd's shape whatever the path; listed so
	// that the table stays complete.
	agentd.EHeaderTooLarge:      "invalid_request_error",
	agentd.ENotImplemented:      "invalid_request_error",
	agentd.EVersionNotSupported: "invalid_request_error",
}

// openAICodes are the OpenAI error codes that clients match, where agentd's code
// has a well-known OpenAI equivalent.
var openAICodes = map[agentd.Code]string{
	agentd.EUnauthenticated:   "invalid_api_key",
	agentd.EInsufficientQuota: "insufficient_quota",
	agentd.ERateLimited:       "rate_limit_exceeded",
}

// openAICoded is a client error with the OpenAI code it is reported with, where
// agentd's code does not say it (an unknown model is "model_not_found").
type openAICoded struct {
	err  *agentd.Error
	code string
}

func (e *openAICoded) Error() string { return e.err.Error() }
func (e *openAICoded) Unwrap() error { return e.err }

// modelNotFound is the 404 of a model that is neither in the catalog nor an
// active agent of the caller's organization.
func modelNotFound(model string) error {
	return &openAICoded{code: "model_not_found", err: agentd.Errorf(agentd.ENotFound,
		"The model `%s` does not exist or you do not have access to it; GET /v1/models lists the models and agents you can use.", model)}
}

// openAIFailure is an error as an OpenAI client sees it: the status, the error
// object inside the envelope, and Retry-After seconds (0 for none).
type openAIFailure struct {
	status     int
	retryAfter int
	body       map[string]any
}

// toOpenAIError translates a client error (an *agentd.Error, possibly wrapped in
// an *openAICoded) into OpenAI's terms. Anything else is reported as internal,
// without its text: callers pass errors through publicError first.
func toOpenAIError(err error) openAIFailure {
	var e *agentd.Error
	if !errors.As(err, &e) {
		e = &agentd.Error{Code: agentd.EInternal, Message: "internal error"}
	}
	f := openAIFailure{status: Status(e.Code), body: make(map[string]any, 4+len(e.Fields))}
	for k, v := range e.Fields {
		f.body[k] = v // 402's required and available, 409's retry_after, …
	}
	typ, ok := openAITypes[e.Code]
	if !ok {
		typ = "api_error"
	}
	code, ok := openAICodes[e.Code]
	if !ok {
		code = string(e.Code)
	}
	msg := e.Message
	var param any // JSON null unless a field is to blame
	if e.Code == agentd.EInvalid {
		f.status = http.StatusBadRequest // OpenAI's clients expect 400 for a bad request
		if len(e.Violations) > 0 {
			v := e.Violations[0]
			if p := openAIParam(v); p != "" {
				param = p
			}
			code = v.Type
			if msg == "" {
				msg = violationText(e.Violations)
			}
		}
		if _, ok := e.Fields["required_tokens"]; ok { // the prompt does not fit (prompt.Build)
			code, param = "context_length_exceeded", "messages"
		}
	}
	if class, ok := e.Fields["class"].(string); ok && e.Code != agentd.ERateLimited {
		code = class // a failed inference: its cause's class (run.Class*)
		if class == run.ClassContextLength {
			param = "messages"
		}
	}
	var coded *openAICoded
	if errors.As(err, &coded) {
		code = coded.code
	}
	if ra, ok := e.Fields["retry_after"].(int); ok {
		f.retryAfter = ra
	}
	f.body["message"], f.body["type"], f.body["param"], f.body["code"] = msg, typ, param, code
	return f
}

// openAIParam names the field a violation is about the way OpenAI does
// ("messages.[0].content"), without FastAPI's leading "body"; "" when the
// violation is about the body as a whole (malformed JSON).
func openAIParam(v agentd.Violation) string {
	if v.Type == "json_invalid" || len(v.Loc) < 2 {
		return ""
	}
	var b strings.Builder
	for i, part := range v.Loc[1:] {
		if i > 0 {
			b.WriteByte('.')
		}
		switch x := part.(type) {
		case int:
			b.WriteString("[" + strconv.Itoa(x) + "]")
		default:
			fmt.Fprint(&b, x)
		}
	}
	return b.String()
}

// violationText is the message of a validation error: each violation's text,
// after the field it is about.
func violationText(vs []agentd.Violation) string {
	parts := make([]string, len(vs))
	for i, v := range vs {
		parts[i] = v.Msg
		if p := openAIParam(v); p != "" && !strings.HasPrefix(v.Msg, p) {
			parts[i] = p + ": " + v.Msg
		}
	}
	return strings.Join(parts, "; ")
}

// openAIError is err as an OpenAI client may see it, with the request id in the
// error object. Internal errors are logged with it, and the client gets it
// instead of the cause.
func (s *Server) openAIError(r *http.Request, err error) openAIFailure {
	r = identified(r)
	err = honest(err, true)
	e := s.publicError(r, err)
	if Status(e.Code) >= 500 && e.Code != agentd.EInternal {
		s.Log.WarnContext(r.Context(), "request failed", "method", r.Method, "path", r.URL.Path, "code", string(e.Code), "err", err)
	}
	var f openAIFailure
	if errors.As(err, new(*agentd.Error)) {
		f = toOpenAIError(err) // as it is, with the OpenAI code it may carry
	} else {
		f = toOpenAIError(e)
	}
	f.body["request_id"] = reqlog.ID(r.Context())
	return f
}

// writeOpenAIError writes err in OpenAI's envelope, with Retry-After when the
// error carries one.
func (s *Server) writeOpenAIError(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, run.ErrClientGone) || (!errors.As(err, new(*agentd.Error)) && errors.Is(err, context.Canceled)) {
		return // the client went away; nobody reads this response
	}
	f := s.openAIError(r, err)
	if f.retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(f.retryAfter))
	}
	writeJSON(w, f.status, map[string]any{"error": f.body})
}

// chatRequest is a chat completion request as OpenAI's clients send it: the
// fields agentd takes itself. The others (top_p, user, stop, seed, …) go to the
// model (bodyParams).
type chatRequest struct {
	Model         *string       `json:"model"`
	Messages      []chatMessage `json:"messages"`
	Stream        *bool         `json:"stream"`
	StreamOptions *struct {
		IncludeUsage *bool `json:"include_usage"`
	} `json:"stream_options"`
	Temperature         *float64        `json:"temperature"`
	MaxTokens           *int            `json:"max_tokens"`
	MaxCompletionTokens *int            `json:"max_completion_tokens"`
	N                   *int            `json:"n"`
	Tools               json.RawMessage `json:"tools"`
	ToolChoice          json.RawMessage `json:"tool_choice"`
	ParallelToolCalls   *bool           `json:"parallel_tool_calls"`
	ResponseFormat      json.RawMessage `json:"response_format"`
	// Deprecated by OpenAI for tools, and refused unless they ask for nothing.
	Functions    json.RawMessage `json:"functions"`
	FunctionCall json.RawMessage `json:"function_call"`
}

// chatCall is a validated chat request.
type chatCall struct {
	model          string // as the caller named it; responses echo it
	agent          string // the agent's normalized name; "" for a catalog model
	version        int    // the agent's version pinned by "agent/<name>@N"; 0 for none
	messages       []llm.Message
	temperature    *float64
	maxTokens      *int
	maxTokensField string // the field that set maxTokens, for errors about it
	stream         bool
	includeUsage   bool
	params         []llm.Param // the rest of the body, for the model (bodyParams)
	api            string      // for the request hash: "" (chat) or "openai.completion"
	n              int         // choices asked for (0: one)
	tools          []llm.Tool
	toolChoice     *llm.ToolChoice
	parallel       *bool
	format         *llm.ResponseFormat
}

// maxChoices bounds n, as OpenAI does.
const maxChoices = 128

// chatHandled are the fields of a chat request that agentd takes itself; every
// other field is passed to the model as sent (bodyParams).
var chatHandled = map[string]bool{
	"model": true, "messages": true, "stream": true, "stream_options": true,
	"temperature": true, "max_tokens": true, "max_completion_tokens": true, "n": true,
	"tools": true, "tool_choice": true, "functions": true, "function_call": true,
	"parallel_tool_calls": true, "response_format": true,
}

// bodyParams are the fields of a request body that are not handled, by name,
// with their JSON as sent; a null is no value.
func bodyParams(data []byte, handled map[string]bool) ([]llm.Param, error) {
	var params []llm.Param
	err := topFields(data, func(name, v []byte) {
		if handled[string(name)] || string(v) == "null" {
			return
		}
		for i := range params {
			if params[i].Name == string(name) { // a repeated member: the last wins, as in decoding
				params[i].Value = v
				return
			}
		}
		params = append(params, llm.Param{Name: string(name), Value: v})
	})
	if err != nil {
		return nil, agentd.Invalid("JSON decode error: "+err.Error(), "json_invalid", "body")
	}
	slices.SortFunc(params, func(a, b llm.Param) int { return strings.Compare(a.Name, b.Name) })
	return params, nil
}

// unsupported is the 400 of a feature agentd does not offer.
func unsupported(msg string, loc ...any) *agentd.Error {
	return agentd.Invalid(msg, "unsupported_value", append([]any{"body"}, loc...)...)
}

// given reports whether a raw JSON value is present and not null.
func given(raw json.RawMessage) bool { return len(raw) > 0 && string(raw) != "null" }

// call validates req. maxChars bounds the last (user) message, like a run's
// message; the body limit bounds the rest.
func (req *chatRequest) call(maxChars int) (*chatCall, error) {
	c := &chatCall{}
	if req.Model == nil || *req.Model == "" {
		return nil, agentd.Invalid("Field required", "missing", "body", "model")
	}
	c.model = *req.Model
	if name, ok := strings.CutPrefix(c.model, agentModelPrefix); ok {
		var err error
		if name, c.version, err = pinnedModel(name); err != nil {
			return nil, err
		}
		if c.agent = agentd.NormalizeName(name); c.agent == "" {
			return nil, modelNotFound(c.model)
		}
	}
	if len(req.Messages) == 0 {
		if req.Messages == nil {
			return nil, agentd.Invalid("Field required", "missing", "body", "messages")
		}
		return nil, agentd.Invalid("List should have at least 1 item", "too_short", "body", "messages")
	}
	switch {
	case given(req.Functions) && string(req.Functions) != "[]":
		return nil, unsupported("functions is deprecated by OpenAI and not supported: use tools", "functions")
	case given(req.FunctionCall) && string(req.FunctionCall) != `"none"`:
		return nil, unsupported("function_call is deprecated by OpenAI and not supported: use tool_choice", "function_call")
	}
	if err := c.readTools(req); err != nil {
		return nil, err
	}
	if req.N != nil {
		switch n := *req.N; {
		case n < 1 || n > maxChoices:
			return nil, agentd.Invalid(fmt.Sprintf("n must be between 1 and %d", maxChoices), "less_than_equal", "body", "n")
		case n > 1 && req.Stream != nil && *req.Stream:
			return nil, unsupported("n > 1 is not supported with stream: agentd streams one choice", "n")
		}
		c.n = *req.N
	}
	if t := req.Temperature; t != nil && (*t < 0 || *t > 2) {
		return nil, agentd.Invalid("temperature must be between 0 and 2", "less_than_equal", "body", "temperature")
	}
	c.temperature = req.Temperature
	c.maxTokens, c.maxTokensField = req.MaxTokens, "max_tokens"
	if req.MaxCompletionTokens != nil {
		c.maxTokens, c.maxTokensField = req.MaxCompletionTokens, "max_completion_tokens"
	}
	if c.maxTokens != nil && *c.maxTokens < 1 {
		return nil, agentd.Invalid("Input should be greater than or equal to 1", "greater_than_equal", "body", c.maxTokensField)
	}
	if req.Stream != nil {
		c.stream = *req.Stream
	}
	if o := req.StreamOptions; o != nil && o.IncludeUsage != nil {
		c.includeUsage = *o.IncludeUsage
	}
	c.messages = make([]llm.Message, len(req.Messages))
	for i, m := range req.Messages {
		msg, err := m.message(i)
		if err != nil {
			return nil, err
		}
		c.messages[i] = msg
	}
	last := len(c.messages) - 1
	if r := c.messages[last].Role; r != llm.RoleUser && r != llm.RoleTool {
		return nil, agentd.Invalid("the last message must be a user message or a tool result: it is what the model answers", "value_error", "body", "messages", last, "role")
	}
	if text := c.messages[last].Text(); len(text) > maxChars && utf8.RuneCountInString(text) > maxChars {
		return nil, agentd.Invalid("String should have at most "+strconv.Itoa(maxChars)+" characters", "string_too_long", "body", "messages", last, "content")
	}
	return c, nil
}

// readTools reads the tools, the tool choice, parallel_tool_calls and the
// response format of req into c.
func (c *chatCall) readTools(req *chatRequest) error {
	var err error
	if given(req.Tools) {
		if c.tools, err = toolspec.Tools(req.Tools, "body", "tools"); err != nil {
			return err
		}
	}
	if given(req.ToolChoice) {
		if c.toolChoice, err = toolspec.Choice(req.ToolChoice, "body", "tool_choice"); err != nil {
			return err
		}
	}
	c.parallel = req.ParallelToolCalls
	if given(req.ResponseFormat) {
		if c.format, err = toolspec.Format(req.ResponseFormat, "body", "response_format"); err != nil {
			return err
		}
	}
	return nil
}

// hash identifies what a call asks, for Idempotency-Key: the model (an agent by
// its normalized name), the messages, the settings, the stream flag and the
// session, so that a key reused for anything else is refused.
func (c *chatCall) hash(sessionID string) string {
	model := c.model
	if c.agent != "" {
		model = agentModelPrefix + c.agent
		if c.version != 0 {
			model += "@" + strconv.Itoa(c.version)
		}
	}
	msgs := make([][2]string, len(c.messages))
	var rich []llm.Message // messages with more than text, whole
	for i, m := range c.messages {
		msgs[i] = [2]string{m.Role, m.Content}
		if m.Parts != nil || m.ToolCalls != nil || m.ToolCallID != "" {
			rich = c.messages
		}
	}
	if rich != nil {
		msgs = nil
	}
	h := sha256.New()
	json.NewEncoder(h).Encode(struct {
		API         string              `json:"api"`
		Model       string              `json:"model"`
		Messages    [][2]string         `json:"messages"`
		Rich        []llm.Message       `json:"rich,omitempty"`
		Temperature *float64            `json:"temperature"`
		MaxTokens   *int                `json:"max_tokens"`
		Stream      bool                `json:"stream"`
		Session     string              `json:"session"`
		Params      [][2]string         `json:"params,omitempty"`
		N           int                 `json:"n,omitempty"`
		Tools       []llm.Tool          `json:"tools,omitempty"`
		ToolChoice  *llm.ToolChoice     `json:"tool_choice,omitempty"`
		Parallel    *bool               `json:"parallel_tool_calls,omitempty"`
		Format      *llm.ResponseFormat `json:"response_format,omitempty"`
	}{cmp.Or(c.api, "openai.chat"), model, msgs, rich, c.temperature, c.maxTokens, c.stream, sessionID, paramPairs(c.params), c.n,
		c.tools, c.toolChoice, c.parallel, c.format})
	return hex.EncodeToString(h.Sum(nil))
}

// paramPairs are params as name/value pairs, for the request hash.
func paramPairs(params []llm.Param) [][2]string {
	if len(params) == 0 {
		return nil
	}
	pairs := make([][2]string, len(params))
	for i, p := range params {
		pairs[i] = [2]string{p.Name, string(p.Value)}
	}
	return pairs
}

// runError puts an error of the run in the call's terms: an unknown agent is an
// unknown model, and a limit on max_tokens names the field the caller used.
func (c *chatCall) runError(err error) error {
	var e *agentd.Error
	if !errors.As(err, &e) {
		return err
	}
	switch {
	case e.Code == agentd.ENotFound && c.agent != "" && c.version != 0:
		return &openAICoded{code: "model_not_found", err: e} // says which version the agent lacks
	case e.Code == agentd.ENotFound && c.agent != "":
		return modelNotFound(c.model)
	case e.Code == agentd.EInvalid && c.maxTokensField != "max_tokens" && len(e.Violations) == 1 &&
		len(e.Violations[0].Loc) == 2 && e.Violations[0].Loc[1] == "max_tokens":
		v := e.Violations[0]
		return agentd.Invalid(strings.Replace(v.Msg, "max_tokens", c.maxTokensField, 1), v.Type, "body", c.maxTokensField)
	}
	return err
}

// finishReason is OpenAI's finish_reason for an llm finish reason.
func finishReason(r string) string {
	if r == "" || r == llm.FinishOther {
		return llm.FinishStop
	}
	return r
}

type chatCompletion struct {
	ID                string        `json:"id"`
	Object            string        `json:"object"`
	Created           int64         `json:"created"`
	Model             string        `json:"model"`
	Choices           []chatChoice  `json:"choices"`
	Usage             chatUsage     `json:"usage"`
	SystemFingerprint *string       `json:"system_fingerprint"`
	Agentd            chatExtension `json:"agentd"`
}

type chatChoice struct {
	Index        int       `json:"index"`
	Message      chatReply `json:"message"`
	Logprobs     *struct{} `json:"logprobs"`
	FinishReason string    `json:"finish_reason"`
}

type chatReply struct {
	Role      string         `json:"role"`
	Content   *string        `json:"content"` // null when the reply is only tool calls
	Refusal   *string        `json:"refusal"`
	ToolCalls []chatToolCall `json:"tool_calls,omitempty"`
}

// chatToolCall is a tool call in a reply; Index only in stream deltas.
type chatToolCall struct {
	Index    *int   `json:"index,omitempty"`
	ID       string `json:"id"`
	Type     string `json:"type"`
	Function struct {
		Name      string `json:"name"`
		Arguments string `json:"arguments"`
	} `json:"function"`
}

// replyOf is the message of a choice: its text (null when there are only tool
// calls) and its tool calls.
func replyOf(text string, calls []llm.ToolCall) chatReply {
	r := chatReply{Role: llm.RoleAssistant, Content: &text}
	if len(calls) > 0 {
		if text == "" {
			r.Content = nil
		}
		r.ToolCalls = toolCallsOf(calls, false)
	}
	return r
}

func toolCallsOf(calls []llm.ToolCall, indexed bool) []chatToolCall {
	out := make([]chatToolCall, len(calls))
	for i, c := range calls {
		out[i] = chatToolCall{ID: c.ID, Type: "function"}
		out[i].Function.Name, out[i].Function.Arguments = c.Name, c.Arguments
		if indexed {
			out[i].Index = &i
		}
	}
	return out
}

type chatUsage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
	// OpenAI's details, when the provider reported cached or reasoning tokens;
	// cache writes (Anthropic's) in agentd's own member of the prompt details.
	PromptTokensDetails     *promptDetails     `json:"prompt_tokens_details,omitempty"`
	CompletionTokensDetails *completionDetails `json:"completion_tokens_details,omitempty"`
}

type promptDetails struct {
	CachedTokens     int `json:"cached_tokens"`
	CacheWriteTokens int `json:"cache_write_tokens,omitempty"`
}

type completionDetails struct {
	ReasoningTokens int `json:"reasoning_tokens"`
}

// chatExtension is what agentd adds to OpenAI's response: the run, the catalog
// model that answered, where the token counts came from, and the session.
type chatExtension struct {
	RunID       string  `json:"run_id"`
	Model       string  `json:"model"`
	UsageSource string  `json:"usage_source"`
	SessionID   *string `json:"session_id"`
	// Cost is what the run was charged, in credits.
	Cost agentd.Micros `json:"cost"`
}

func usageOf(res *run.Result) chatUsage {
	u := res.Usage
	out := chatUsage{PromptTokens: u.InputTokens, CompletionTokens: u.OutputTokens, TotalTokens: u.InputTokens + u.OutputTokens}
	if u.CachedInputTokens > 0 || u.CacheWriteTokens > 0 {
		out.PromptTokensDetails = &promptDetails{CachedTokens: u.CachedInputTokens, CacheWriteTokens: u.CacheWriteTokens}
	}
	if u.ReasoningTokens > 0 {
		out.CompletionTokensDetails = &completionDetails{ReasoningTokens: u.ReasoningTokens}
	}
	return out
}

func extensionOf(res *run.Result) chatExtension {
	x := chatExtension{RunID: res.RunID, Model: res.Model, UsageSource: res.Usage.Source, Cost: res.Cost}
	if res.SessionID != "" {
		x.SessionID = &res.SessionID
	}
	return x
}

// chatCompletions is POST /v1/chat/completions.
func (s *Server) chatCompletions(w http.ResponseWriter, r *http.Request, p *agentd.Principal) error {
	var body chatRequest
	c, err := s.readCall(w, r, &body, chatHandled, func() (*chatCall, error) { return body.call(s.MaxMessageChars) })
	if err != nil {
		return err
	}
	res, err := s.answer(w, r, p, c, func() streamShape { return newChatStream(s, c) })
	if res == nil {
		return err // an error, or a stream that has been answered
	}
	choices := []chatChoice{{Message: replyOf(res.Response, res.ToolCalls), FinishReason: finishReason(res.FinishReason)}}
	for i, more := range res.More {
		choices = append(choices, chatChoice{Index: i + 1, Message: replyOf(more.Text, more.ToolCalls), FinishReason: finishReason(more.FinishReason)})
	}
	return writeJSON(w, http.StatusOK, &chatCompletion{
		ID: "chatcmpl-" + res.RunID, Object: "chat.completion", Created: res.Created / 1_000_000, Model: c.model,
		Choices: choices, Usage: usageOf(res), Agentd: extensionOf(res),
	})
}

// readCall decodes the request body into body and makes it a call (toCall), with
// the fields handled does not name as the parameters passed on.
func (s *Server) readCall(w http.ResponseWriter, r *http.Request, body any, handled map[string]bool, toCall func() (*chatCall, error)) (*chatCall, error) {
	data, err := s.readBody(w, r)
	if err != nil {
		return nil, err
	}
	if err := decodeJSON(data, body); err != nil {
		return nil, err
	}
	c, err := toCall()
	if err != nil {
		return nil, err
	}
	if c.params, err = bodyParams(data, handled); err != nil {
		return nil, err
	}
	return c, nil
}

// answer runs call c for p, with the request's session and Idempotency-Key.
// Streamed, it answers in events of the shape made by shape and returns no
// result; else it returns the result (a replay marked in the headers) for the
// caller to write, or the error in the call's terms.
func (s *Server) answer(w http.ResponseWriter, r *http.Request, p *agentd.Principal, c *chatCall, shape func() streamShape) (*run.Result, error) {
	sid, err := sessionID(r)
	if err != nil {
		return nil, err
	}
	idem, err := idempotencyKey(r)
	if err != nil {
		return nil, err
	}
	if c.version == 0 && c.agent != "" {
		if c.version, err = agentVersion(r); err != nil { // agent/<name>@N wins over X-Agent-Version
			return nil, err
		}
	}
	req := &run.Request{
		Principal: p, AgentName: c.agent, Messages: c.messages,
		Temperature: c.temperature, MaxTokens: c.maxTokens, Params: c.params, N: c.n, SessionID: sid,
		Tools: c.tools, ToolChoice: c.toolChoice, ParallelToolCalls: c.parallel, ResponseFormat: c.format,
		IdempotencyKey: idem, RequestHash: c.hash(sid), Version: c.version,
	}
	if c.agent == "" {
		if _, err := s.Catalog.Model(c.model); err != nil {
			return nil, modelNotFound(c.model)
		}
		req.Model = c.model
	}
	if c.stream {
		return nil, s.streamChat(w, r, c, req, shape())
	}
	res, err := s.Runner.Run(r.Context(), req)
	if err != nil {
		return nil, c.runError(err)
	}
	if res.Replayed {
		w.Header().Set("Idempotent-Replayed", "true")
	}
	return res, nil
}

type chatChunk struct {
	ID                string        `json:"id"`
	Object            string        `json:"object"`
	Created           int64         `json:"created"`
	Model             string        `json:"model"`
	SystemFingerprint *string       `json:"system_fingerprint"`
	Choices           []chunkChoice `json:"choices"`
	// Usage is omitted, or with stream_options.include_usage null on every chunk
	// but the last, whose choices are empty.
	Usage  any            `json:"usage,omitempty"`
	Agentd *chatExtension `json:"agentd,omitempty"`
}

type chunkChoice struct {
	Index        int       `json:"index"`
	Delta        chatDelta `json:"delta"`
	Logprobs     *struct{} `json:"logprobs"`
	FinishReason *string   `json:"finish_reason"`
}

type chatDelta struct {
	Role      string         `json:"role,omitempty"`
	Content   *string        `json:"content,omitempty"`
	ToolCalls []chatToolCall `json:"tool_calls,omitempty"`
}

// streamShape makes the events of a streamed answer: chat.completion.chunk
// (chatStream) or text_completion (completions.go).
type streamShape interface {
	// piece is an event with text; first is set for the first one.
	piece(text string, first bool) any
	// toolCalls is an event with the reply's tool calls, whole (nil: the shape
	// has none).
	toolCalls(calls []llm.ToolCall) any
	// finish is the event with the finish reason and agentd's extension.
	finish(reason string, x *chatExtension) any
	// usage is the last event, with stream_options.include_usage.
	usage(u chatUsage, x *chatExtension) any
}

// chatStream is streamShape for chat completions: the assistant role with the
// first piece, one chunk per piece, a chunk with the finish reason, with
// stream_options.include_usage a chunk with the usage. The chunks share an id of
// their own: the run id is known only when the run ends, and the last ones carry
// it in their agentd extension.
type chatStream struct{ base chatChunk }

func newChatStream(s *Server, c *chatCall) *chatStream {
	cs := &chatStream{base: chatChunk{ID: agentd.NewID("chatcmpl"), Object: "chat.completion.chunk", Created: s.Clock.Now().Unix(), Model: c.model}}
	if c.includeUsage {
		cs.base.Usage = json.RawMessage("null")
	}
	return cs
}

func (cs *chatStream) piece(text string, first bool) any {
	ch := cs.base
	d := chatDelta{Content: &text}
	if first {
		empty := ""
		d = chatDelta{Role: llm.RoleAssistant, Content: &empty}
	}
	ch.Choices = []chunkChoice{{Delta: d}}
	return &ch
}

// toolCalls sends each call whole in one delta, indexed as OpenAI's streams
// index them: clients assemble deltas by index, and one delta is a whole call.
func (cs *chatStream) toolCalls(calls []llm.ToolCall) any {
	ch := cs.base
	ch.Choices = []chunkChoice{{Delta: chatDelta{ToolCalls: toolCallsOf(calls, true)}}}
	return &ch
}

func (cs *chatStream) finish(reason string, x *chatExtension) any {
	ch := cs.base
	ch.Choices = []chunkChoice{{Delta: chatDelta{}, FinishReason: &reason}}
	ch.Agentd = x
	return &ch
}

func (cs *chatStream) usage(u chatUsage, x *chatExtension) any {
	ch := cs.base
	ch.Choices, ch.Usage, ch.Agentd = []chunkChoice{}, u, x
	return &ch
}

// streamChat answers a call as events of sh, then [DONE]. An error before the
// first byte keeps its status; after it, an error event ends the stream.
func (s *Server) streamChat(w http.ResponseWriter, r *http.Request, c *chatCall, req *run.Request, sh streamShape) error {
	st := newEventStream(w, s.keepAlive())
	defer st.close()
	send := func(ev any) error {
		b, err := json.Marshal(ev)
		if err != nil {
			return err
		}
		return st.event("", b)
	}
	started := false
	emit := func(text string) error {
		if !started {
			started = true
			if err := send(sh.piece("", true)); err != nil {
				return err
			}
		}
		if text == "" {
			return nil
		}
		return send(sh.piece(text, false))
	}
	req.Emit = emit
	res, err := s.Runner.Run(r.Context(), req)
	// What is left is written at once: no keep-alive may start the response (or
	// touch its headers) behind our back.
	st.close()
	if errors.Is(err, run.ErrClientGone) {
		return nil // charged for what it received; nobody is listening
	}
	if err != nil {
		err = c.runError(err)
		if !st.Started() {
			return err
		}
		f := s.openAIError(r, err)
		ev := map[string]any{"message": f.body["message"], "type": f.body["type"], "code": f.body["code"], "request_id": f.body["request_id"]}
		if id, ok := f.body["run_id"]; ok {
			ev["run_id"], ev["class"] = id, f.body["class"]
		}
		b, _ := json.Marshal(map[string]any{"error": ev})
		st.event("", b)
		st.event("", []byte("[DONE]"))
		return nil
	}
	if res.Replayed && !st.Started() {
		w.Header().Set("Idempotent-Replayed", "true")
	}
	// A replay has no live pieces: the stored reply is one. An empty reply still
	// gets the first piece.
	text := ""
	if !started || res.Replayed {
		text = res.Response
	}
	if err := emit(text); err != nil {
		return nil
	}
	if len(res.ToolCalls) > 0 {
		if ev := sh.toolCalls(res.ToolCalls); ev != nil {
			if err := send(ev); err != nil {
				return nil
			}
		}
	}
	x := extensionOf(res)
	if err := send(sh.finish(finishReason(res.FinishReason), &x)); err != nil {
		return nil
	}
	if c.includeUsage {
		if err := send(sh.usage(usageOf(res), &x)); err != nil {
			return nil
		}
	}
	st.event("", []byte("[DONE]"))
	return nil
}

// openAIModel is one entry of GET /v1/models, with agentd's extensions: the
// provider of a catalog model; the id and catalog model of an agent.
type openAIModel struct {
	ID        string `json:"id"`
	Object    string `json:"object"`
	Created   int64  `json:"created"`
	OwnedBy   string `json:"owned_by"`
	Provider  string `json:"provider,omitempty"`
	AgentID   string `json:"agent_id,omitempty"`
	BaseModel string `json:"base_model,omitempty"`
}

// getModel is GET /v1/models/{id}: a catalog model, or agent/<name> for an active
// agent of the caller's organization; else 404 model_not_found.
func (s *Server) getModel(w http.ResponseWriter, r *http.Request, p *agentd.Principal) error {
	id := r.PathValue("id")
	if name, ok := strings.CutPrefix(id, agentModelPrefix); ok {
		n := agentd.NormalizeName(name)
		if n == "" {
			return modelNotFound(id)
		}
		a, err := s.Agents.Get(r.Context(), p, n)
		if agentd.ErrorCode(err) == agentd.ENotFound {
			return modelNotFound(id)
		}
		if err != nil {
			return err
		}
		owner := p.OrgName
		if owner == "" {
			owner = "agentd"
		}
		return writeJSON(w, http.StatusOK, openAIModel{ID: agentModelPrefix + a.Name, Object: "model", Created: a.CreatedAt.Unix(),
			OwnedBy: owner, AgentID: a.ID, BaseModel: a.Version.Model})
	}
	m, err := s.Catalog.Model(id)
	if err != nil {
		return modelNotFound(id)
	}
	if p.Restricted() {
		return agentd.Errorf(agentd.EForbidden, "this key is limited to agents: it may not call catalog model %q", id)
	}
	return writeJSON(w, http.StatusOK, openAIModel{ID: m.ID, Object: "model", Created: s.Clock.Now().Unix(), OwnedBy: "agentd", Provider: m.ProviderName})
}

// listModels is GET /v1/models: the catalog's models, then the caller's
// organization's active agents as "agent/<name>". Catalog models have no creation
// time of their own: theirs is the time of the request. Agents are read a page at
// a time by name only (never their configuration), so the answer's memory is a
// few hundred bytes per agent.
func (s *Server) listModels(w http.ResponseWriter, r *http.Request, p *agentd.Principal) error {
	now := s.Clock.Now().Unix()
	data := make([]openAIModel, 0, len(s.Catalog.Models()))
	for _, m := range s.Catalog.Models() {
		if p.Restricted() {
			break // a key limited to agents calls only them (run.Runner refuses catalog models)
		}
		data = append(data, openAIModel{ID: m.ID, Object: "model", Created: now, OwnedBy: "agentd", Provider: m.ProviderName})
	}
	owner := p.OrgName
	if owner == "" {
		owner = "agentd"
	}
	for cursor := ""; ; {
		refs, next, err := s.Agents.Refs(r.Context(), p, false, cursor, refPage)
		if err != nil {
			return err
		}
		for _, a := range refs {
			data = append(data, openAIModel{ID: agentModelPrefix + a.Name, Object: "model", Created: a.CreatedAt.Unix(), OwnedBy: owner,
				AgentID: a.ID, BaseModel: a.Model})
		}
		if next == "" {
			break
		}
		cursor = next
	}
	return writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": data})
}
