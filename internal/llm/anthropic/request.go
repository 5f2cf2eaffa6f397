package anthropic

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strings"

	"github.com/agentd/agentd/internal/llm"
)

// The request body.
type request struct {
	Model         string      `json:"model"`
	MaxTokens     int         `json:"max_tokens"`
	System        string      `json:"system,omitempty"`
	Messages      []turn      `json:"messages"`
	Temperature   float64     `json:"temperature"`
	TopP          *float64    `json:"top_p,omitempty"`
	StopSequences []string    `json:"stop_sequences,omitempty"`
	Metadata      *metadata   `json:"metadata,omitempty"`
	Tools         []tool      `json:"tools,omitempty"`
	ToolChoice    *toolChoice `json:"tool_choice,omitempty"`
	Stream        bool        `json:"stream,omitempty"`
}

type metadata struct {
	UserID string `json:"user_id"`
}

// turn is one message of the conversation: its text, or its blocks if it has
// any (then Content is unused). Text turns, the common case, carry no more.
type turn struct {
	Role    string `json:"role"`
	Content string `json:"content"`
	b       *turnBlocks
}

type turnBlocks struct {
	list    []contentBlock
	results bool // tool results only, so far
	calls   bool // tool calls among them
}

// withBlocks is a request whose conversation has blocks: its Messages, being
// shallower, hide the request's in the JSON. Each turn's Content points at the
// turn's text or its blocks, which one field of a concrete type could not hold;
// a pointer in an interface costs no allocation.
type withBlocks struct {
	*request
	Messages []blockTurn `json:"messages"`
}

type blockTurn struct {
	Role    string `json:"role"`
	Content any    `json:"content"`
}

// contentBlock is a block of a message's content: text, image, tool_use or
// tool_result.
type contentBlock struct {
	Type      string          `json:"type"`
	Text      string          `json:"text,omitempty"`
	Source    *imageSource    `json:"source,omitempty"`
	ID        string          `json:"id,omitempty"`
	Name      string          `json:"name,omitempty"`
	Input     json.RawMessage `json:"input,omitempty"`
	ToolUseID string          `json:"tool_use_id,omitempty"`
	Content   any             `json:"content,omitempty"` // tool_result: a string or []contentBlock
}

type imageSource struct {
	Type      string `json:"type"` // "url" or "base64"
	URL       string `json:"url,omitempty"`
	MediaType string `json:"media_type,omitempty"`
	Data      string `json:"data,omitempty"`
}

type tool struct {
	Name        string          `json:"name"`
	Description string          `json:"description,omitempty"`
	InputSchema json.RawMessage `json:"input_schema"`
	Strict      *bool           `json:"strict,omitempty"`
}

type toolChoice struct {
	Type                   string `json:"type"` // auto, any, tool, none
	Name                   string `json:"name,omitempty"`
	DisableParallelToolUse bool   `json:"disable_parallel_tool_use,omitempty"`
}

// jsonResponseTool names the tool a response format is asked through when the
// format names no schema.
const jsonResponseTool = "json_response"

var (
	// noParameters is the input schema of a tool that takes none: Anthropic
	// requires one.
	noParameters = json.RawMessage(`{"type":"object","properties":{}}`)
	anyObject    = json.RawMessage(`{"type":"object"}`)
	noArguments  = json.RawMessage(`{}`)
)

// CheckRequest implements llm.ParamChecker. Of the client's params the Messages
// API takes OpenAI's stop (as stop_sequences), top_p and user (as
// metadata.user_id); with DropParams the rest are dropped, else refused. Of the
// request it refuses what the API cannot be sent (see the package
// documentation): images it cannot take, tool-call arguments that are not a JSON
// object, a tool schema that is not one, and tools together with a response
// format. Values that are wrong are refused even with DropParams.
func (p *Provider) CheckRequest(req *llm.Request) error {
	var r request
	for _, prm := range req.Params {
		if err := apply(&r, prm); err != nil {
			if !p.drop || err.Reason != "" {
				return err
			}
		}
	}
	// Building the body is the check, so that what is refused here and what
	// encode fails on cannot drift apart. Errors of the conversation's shape
	// (an assistant turn first, an unknown role) are no parameter's: the call
	// reports them.
	if _, _, err := p.build(req, false); err != nil {
		if pe, ok := err.(*llm.ParamError); ok {
			return pe
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

// encode builds the request body. forced is the name of the tool a response
// format is asked through ("" without one): its input is the reply's text.
func (p *Provider) encode(req *llm.Request, stream bool) (body []byte, forced string, err error) {
	r, forced, err := p.build(req, stream)
	if err != nil {
		if pe, ok := err.(*llm.ParamError); ok {
			// The caller skipped CheckRequest: the request fails as it would have.
			return nil, "", &llm.Error{Kind: llm.KindPermanent, Message: "anthropic: " + pe.Error(), Err: pe}
		}
		return nil, "", err
	}
	body, err = json.Marshal(r.payload())
	if err != nil {
		return nil, "", permanent("anthropic: encode the request: " + err.Error())
	}
	return body, forced, nil
}

// build fits req to the API's rules (see the package documentation). Its error is
// a *llm.ParamError for a part of req the API cannot take, else a KindPermanent
// *llm.Error for a conversation the API would refuse.
func (p *Provider) build(req *llm.Request, stream bool) (*request, string, error) {
	if req == nil {
		return nil, "", permanent("anthropic: nil request")
	}
	r := &request{Model: req.Model, MaxTokens: req.MaxTokens, Stream: stream,
		Messages: make([]turn, 0, len(req.Messages))}
	if r.MaxTokens <= 0 {
		r.MaxTokens = DefaultMaxTokens
	}
	switch t := req.Temperature; {
	case math.IsNaN(t):
		return nil, "", permanent("anthropic: temperature is NaN")
	case t < 0:
		r.Temperature = 0
	case t > 1:
		r.Temperature = 1
	default:
		r.Temperature = t
	}
	var (
		system strings.Builder
		// shape is the first problem of the conversation's shape. It is
		// reported after any refusal, so that CheckRequest sees every part of
		// req the API cannot take.
		shape error
	)
	misshapen := func(msg string) {
		if shape == nil {
			shape = permanent("anthropic: " + msg)
		}
	}
	for i := range req.Messages {
		m := &req.Messages[i]
		var err error
		switch m.Role {
		case llm.RoleSystem:
			err = noImages(m, "the system prompt")
			if text := m.Text(); err == nil && text != "" {
				if system.Len() > 0 {
					system.WriteString("\n\n")
				}
				system.WriteString(text)
			}
		case llm.RoleUser:
			err = r.addUser(m)
		case llm.RoleAssistant:
			if len(r.Messages) == 0 {
				misshapen("the conversation starts with an assistant message; the Messages API requires a user message first")
			}
			err = r.addAssistant(m)
		case llm.RoleTool:
			switch {
			case m.ToolCallID == "":
				misshapen(fmt.Sprintf("tool message %d answers no tool call (its tool call id is empty)", i))
			case !r.answersCalls():
				misshapen(fmt.Sprintf("tool message %d does not follow the assistant's tool calls or other tool results; the Messages API requires results right after the calls", i))
			}
			err = r.addResult(m)
		default:
			misshapen(fmt.Sprintf("message %d has unknown role %q", i, m.Role))
		}
		if err != nil {
			return nil, "", err
		}
	}
	if len(r.Messages) == 0 {
		misshapen("the request has no user message")
	}
	r.System = system.String()
	for _, prm := range req.Params {
		apply(r, prm) // CheckRequest has refused what cannot be sent; the rest is dropped
	}
	forced, err := p.tools(r, req)
	if err != nil {
		return nil, "", err
	}
	if shape != nil {
		return nil, "", shape
	}
	return r, forced, nil
}

// payload is what r is sent as: r itself when every turn is plain text, which
// keeps the text-only path as cheap as it was, else r with its blocks.
func (r *request) payload() any {
	i := 0
	for i < len(r.Messages) && r.Messages[i].b == nil {
		i++
	}
	if i == len(r.Messages) {
		return r
	}
	view := make([]blockTurn, len(r.Messages))
	for i := range r.Messages {
		t := &r.Messages[i]
		view[i].Role = t.Role
		if t.b != nil {
			view[i].Content = &t.b.list
		} else {
			view[i].Content = &t.Content
		}
	}
	return &withBlocks{request: r, Messages: view}
}

// last returns the last turn if it has role, else nil.
func (r *request) last(role string) *turn {
	if n := len(r.Messages); n > 0 && r.Messages[n-1].Role == role {
		return &r.Messages[n-1]
	}
	return nil
}

// add appends a message's content to the conversation: merged into the last
// turn if it has the same role, since the API requires turns to alternate.
// Plain texts merge as text, joined with a blank line; anything else as blocks.
// It returns the turn, whose b is set if it has blocks.
func (r *request) add(role, text string, list []contentBlock) *turn {
	t := r.last(role)
	switch {
	case t == nil && list == nil:
		r.Messages = append(r.Messages, turn{Role: role, Content: text})
		return &r.Messages[len(r.Messages)-1]
	case t == nil:
		r.Messages = append(r.Messages, turn{Role: role, b: &turnBlocks{list: list}})
		return &r.Messages[len(r.Messages)-1]
	case t.b == nil && list == nil:
		t.Content += "\n\n" + text
		return t
	case t.b == nil:
		t.b = &turnBlocks{}
		if t.Content != "" {
			t.b.list = append(t.b.list, contentBlock{Type: "text", Text: t.Content})
		}
		t.Content = ""
	}
	if list == nil {
		if text != "" {
			t.b.list = append(t.b.list, contentBlock{Type: "text", Text: text})
		}
		return t
	}
	t.b.list = append(t.b.list, list...)
	return t
}

func (r *request) addUser(m *llm.Message) error {
	list, err := partBlocks(m.Parts, true)
	if err != nil {
		return err
	}
	text := m.Content
	if list != nil {
		text = ""
	}
	if t := r.add(llm.RoleUser, text, list); t.b != nil {
		t.b.results = false // text after the results closes them
	}
	return nil
}

func (r *request) addAssistant(m *llm.Message) error {
	if err := noImages(m, "an assistant message"); err != nil {
		return err
	}
	blocks, err := partBlocks(m.Parts, false)
	if err != nil {
		return err
	}
	if len(m.ToolCalls) == 0 {
		r.add(llm.RoleAssistant, m.Content, blocks)
		return nil
	}
	if blocks == nil && m.Content != "" {
		blocks = make([]contentBlock, 0, len(m.ToolCalls)+1)
		blocks = append(blocks, contentBlock{Type: "text", Text: m.Content})
	}
	for _, c := range m.ToolCalls {
		input, why := toolInput(c.Arguments)
		if why != "" {
			return &llm.ParamError{Param: "messages", Kind: "anthropic",
				Reason: fmt.Sprintf("the arguments of tool call %q are %s; Anthropic takes a JSON object", c.ID, why)}
		}
		blocks = append(blocks, contentBlock{Type: "tool_use", ID: c.ID, Name: c.Name, Input: input})
	}
	r.add(llm.RoleAssistant, "", blocks).b.calls = true
	return nil
}

// answersCalls reports whether a tool result may come next: the API wants every
// result of one assistant turn in the next user message, ahead of any text, so
// results must follow the calls or each other.
func (r *request) answersCalls() bool {
	if a := r.last(llm.RoleAssistant); a != nil {
		return a.b != nil && a.b.calls
	}
	u := r.last(llm.RoleUser)
	return u != nil && u.b != nil && u.b.results
}

// addResult adds a tool's result to the user turn that answers the calls.
func (r *request) addResult(m *llm.Message) error {
	b := contentBlock{Type: "tool_result", ToolUseID: m.ToolCallID}
	switch blocks, err := partBlocks(m.Parts, true); {
	case err != nil:
		return err
	case blocks != nil:
		b.Content = blocks
	case m.Content != "":
		b.Content = m.Content
	}
	r.add(llm.RoleUser, "", []contentBlock{b}).b.results = true
	return nil
}

// partBlocks returns parts as content blocks, nil if there are none (the message
// is its Content). Empty text parts are left out: the API refuses empty text
// blocks.
func partBlocks(parts []llm.Part, images bool) ([]contentBlock, error) {
	var blocks []contentBlock
	for _, p := range parts {
		switch p.Type {
		case llm.PartText:
			if p.Text != "" {
				blocks = append(blocks, contentBlock{Type: "text", Text: p.Text})
			}
		case llm.PartImage:
			if !images {
				continue // noImages has refused them
			}
			src, why := imageSourceOf(p.ImageURL)
			if why != "" {
				return nil, &llm.ParamError{Param: "messages", Kind: "anthropic", Reason: why}
			}
			blocks = append(blocks, contentBlock{Type: "image", Source: src})
		default:
			return nil, &llm.ParamError{Param: "messages", Kind: "anthropic", Reason: fmt.Sprintf("content part of type %q is not supported", p.Type)}
		}
	}
	return blocks, nil
}

// noImages refuses images in a message whose content the API takes as text only.
func noImages(m *llm.Message, where string) error {
	for _, p := range m.Parts {
		if p.Type == llm.PartImage {
			return &llm.ParamError{Param: "messages", Kind: "anthropic",
				Reason: "Anthropic takes images in user messages and tool results, not in " + where}
		}
	}
	return nil
}

// imageSourceOf is the source of an image at u, or why the API cannot take it.
func imageSourceOf(u string) (*imageSource, string) {
	switch {
	case hasPrefixFold(u, "https://"), hasPrefixFold(u, "http://"):
		return &imageSource{Type: "url", URL: u}, ""
	case !hasPrefixFold(u, "data:"):
		return nil, "an image must be an http(s) URL or a base64 data: URL"
	}
	meta, data, ok := strings.Cut(u[len("data:"):], ",")
	semi := strings.LastIndexByte(meta, ';')
	if !ok || semi < 0 || !strings.EqualFold(meta[semi+1:], "base64") {
		return nil, "an image data: URL must carry base64 data (data:<media type>;base64,<data>)"
	}
	mt, _, _ := strings.Cut(meta, ";") // parameters other than base64 (charset, name) say nothing here
	switch mt = strings.ToLower(strings.TrimSpace(mt)); mt {
	case "image/jpeg", "image/png", "image/gif", "image/webp":
	default:
		return nil, fmt.Sprintf("Anthropic takes images of type image/jpeg, image/png, image/gif or image/webp, not %q", mt)
	}
	if data == "" {
		return nil, "an image data: URL has no data"
	}
	return &imageSource{Type: "base64", MediaType: mt, Data: data}, ""
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// toolInput is a call's arguments as the JSON object tool_use wants, or what
// they are instead. "" is a call without arguments.
func toolInput(args string) (json.RawMessage, string) {
	if strings.TrimSpace(args) == "" {
		return noArguments, ""
	}
	return jsonObject([]byte(args))
}

// jsonObject returns b if it is a JSON object, else what it is instead.
func jsonObject(b []byte) (json.RawMessage, string) {
	if !json.Valid(b) {
		return nil, "not valid JSON"
	}
	if t := bytes.TrimLeft(b, " \t\r\n"); t[0] != '{' {
		return nil, "JSON but not an object"
	}
	return b, ""
}

// tools sets r's tools and tool_choice from req's, or from its response format,
// which is asked as a call of one tool whose input schema is the format's: the
// Messages API has no response format that every model takes, and a forced
// tool's input is validated against its schema. It returns that tool's name.
func (p *Provider) tools(r *request, req *llm.Request) (string, error) {
	rf := req.ResponseFormat
	if rf != nil && len(req.Tools) > 0 {
		if !p.drop {
			return "", &llm.ParamError{Param: "response_format", Kind: "anthropic",
				Reason: "Anthropic is asked for JSON through a forced tool call, which cannot be combined with tools the model may call; send either tools or response_format"}
		}
		rf = nil // the operator's choice: tools win, the reply is free text
	}
	if rf != nil {
		return forceTool(r, rf)
	}
	if len(req.Tools) == 0 {
		// Nothing to choose from: tool_choice and parallel_tool_calls ask nothing.
		return "", nil
	}
	r.Tools = make([]tool, len(req.Tools))
	for i, t := range req.Tools {
		schema := noParameters
		if t.Parameters != nil {
			var why string
			if schema, why = jsonObject(t.Parameters); why != "" {
				return "", &llm.ParamError{Param: "tools", Kind: "anthropic",
					Reason: fmt.Sprintf("the parameters of tool %q are %s; a JSON schema object is required", t.Name, why)}
			}
		}
		// Strict is Anthropic's too (strict tool use): inputs sampled to match
		// the schema. It is sent as given, so the caller gets what it asked for
		// or the API's refusal on a model without it.
		r.Tools[i] = tool{Name: t.Name, Description: t.Description, InputSchema: schema, Strict: t.Strict}
	}
	var c toolChoice
	if tc := req.ToolChoice; tc != nil {
		switch tc.Mode {
		case llm.ToolChoiceAuto:
			c.Type = "auto"
		case llm.ToolChoiceRequired:
			c.Type = "any"
		case llm.ToolChoiceFunction:
			if tc.Name == "" {
				return "", &llm.ParamError{Param: "tool_choice", Kind: "anthropic", Reason: "a function choice must name the function"}
			}
			c.Type, c.Name = "tool", tc.Name
		case llm.ToolChoiceNone:
			c.Type = "none"
		default:
			return "", &llm.ParamError{Param: "tool_choice", Kind: "anthropic", Reason: fmt.Sprintf("unknown tool choice %q", tc.Mode)}
		}
	}
	if pt := req.ParallelToolCalls; pt != nil && !*pt && c.Type != "none" {
		// Anthropic says it inside tool_choice; with no choice, the default is auto.
		if c.Type == "" {
			c.Type = "auto"
		}
		c.DisableParallelToolUse = true
	}
	if c.Type != "" {
		r.ToolChoice = &c
	}
	return "", nil
}

// forceTool asks for rf as the input of one tool the model must call.
func forceTool(r *request, rf *llm.ResponseFormat) (string, error) {
	name := rf.Name
	if name == "" {
		name = jsonResponseTool
	}
	schema := anyObject
	switch rf.Type {
	case llm.FormatJSONObject:
	case llm.FormatJSONSchema:
		if rf.Schema != nil {
			var why string
			if schema, why = jsonObject(rf.Schema); why != "" {
				return "", &llm.ParamError{Param: "response_format", Kind: "anthropic",
					Reason: "the schema is " + why + "; a JSON schema object is required"}
			}
		}
	default:
		return "", &llm.ParamError{Param: "response_format", Kind: "anthropic", Reason: fmt.Sprintf("unknown response format type %q", rf.Type)}
	}
	r.Tools = []tool{{Name: name, Description: rf.Description, InputSchema: schema, Strict: rf.Strict}}
	// One call: the reply is one JSON object.
	r.ToolChoice = &toolChoice{Type: "tool", Name: name, DisableParallelToolUse: true}
	return name, nil
}
