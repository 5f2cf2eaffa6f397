package api

import (
	"encoding/json"
	"strings"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/internal/llm"
)

// chatMessage is one message of a chat request.
type chatMessage struct {
	Role         *string         `json:"role"`
	Content      json.RawMessage `json:"content"`
	ToolCalls    json.RawMessage `json:"tool_calls"`
	ToolCallID   *string         `json:"tool_call_id"`
	FunctionCall json.RawMessage `json:"function_call"`
}

// message converts the i-th message: system and developer messages are system
// messages; user content may be text and image parts; an assistant message may
// carry tool calls instead of text; a tool message answers one of them.
func (m *chatMessage) message(i int) (llm.Message, error) {
	if m.Role == nil {
		return llm.Message{}, agentd.Invalid("Field required", "missing", "body", "messages", i, "role")
	}
	switch *m.Role {
	case "system", "developer":
		text, err := contentText(m.Content, i)
		return llm.Message{Role: llm.RoleSystem, Content: text}, err
	case "user":
		return userMessage(m.Content, i)
	case "assistant":
		if given(m.FunctionCall) {
			return llm.Message{}, unsupported("function_call is deprecated by OpenAI and not supported: use tool_calls", "messages", i, "function_call")
		}
		out := llm.Message{Role: llm.RoleAssistant}
		if given(m.ToolCalls) {
			calls, err := toolCalls(m.ToolCalls, i)
			if err != nil {
				return llm.Message{}, err
			}
			out.ToolCalls = calls
		}
		if len(out.ToolCalls) > 0 && !given(m.Content) {
			return out, nil // content is optional beside tool calls
		}
		text, err := contentText(m.Content, i)
		out.Content = text
		return out, err
	case "tool":
		if m.ToolCallID == nil || *m.ToolCallID == "" {
			return llm.Message{}, agentd.Invalid("Field required", "missing", "body", "messages", i, "tool_call_id")
		}
		text, err := contentText(m.Content, i)
		return llm.Message{Role: llm.RoleTool, ToolCallID: *m.ToolCallID, Content: text}, err
	case "function":
		return llm.Message{}, unsupported("function messages are deprecated by OpenAI and not supported: use tool messages", "messages", i, "role")
	}
	return llm.Message{}, agentd.Invalid("Input should be 'system', 'developer', 'user', 'assistant' or 'tool'", "literal_error", "body", "messages", i, "role")
}

// contentPart is one part of a message's content.
type contentPart struct {
	Type     string  `json:"type"`
	Text     *string `json:"text"`
	ImageURL *struct {
		URL    *string `json:"url"`
		Detail *string `json:"detail"`
	} `json:"image_url"`
}

// contentText is a message's content: a string, or the text of an array of text
// parts, joined by newlines.
func contentText(raw json.RawMessage, i int) (string, error) {
	if !given(raw) {
		return "", agentd.Invalid("Field required", "missing", "body", "messages", i, "content")
	}
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", agentd.Invalid("Input should be a valid string", "string_type", "body", "messages", i, "content")
		}
		return s, nil
	}
	var parts []contentPart
	if raw[0] != '[' || json.Unmarshal(raw, &parts) != nil {
		return "", agentd.Invalid("Input should be a string or a list of content parts", "string_type", "body", "messages", i, "content")
	}
	texts := make([]string, len(parts))
	for j, p := range parts {
		switch {
		case p.Type != "text":
			return "", unsupported("only text parts are supported in this message (images go in user messages)", "messages", i, "content", j, "type")
		case p.Text == nil:
			return "", agentd.Invalid("Field required", "missing", "body", "messages", i, "content", j, "text")
		}
		texts[j] = *p.Text
	}
	return strings.Join(texts, "\n"), nil
}

// userMessage is a user message: text, or parts of text and images. Content
// that is only text parts stays text, as before parts existed.
func userMessage(raw json.RawMessage, i int) (llm.Message, error) {
	out := llm.Message{Role: llm.RoleUser}
	if !given(raw) || raw[0] != '[' {
		text, err := contentText(raw, i)
		out.Content = text
		return out, err
	}
	var parts []contentPart
	if json.Unmarshal(raw, &parts) != nil {
		return out, agentd.Invalid("Input should be a string or a list of content parts", "string_type", "body", "messages", i, "content")
	}
	images := false
	for _, p := range parts {
		images = images || p.Type == "image_url"
	}
	if !images {
		text, err := contentText(raw, i)
		out.Content = text
		return out, err
	}
	out.Parts = make([]llm.Part, len(parts))
	for j, p := range parts {
		switch p.Type {
		case "text":
			if p.Text == nil {
				return out, agentd.Invalid("Field required", "missing", "body", "messages", i, "content", j, "text")
			}
			out.Parts[j] = llm.Part{Type: llm.PartText, Text: *p.Text}
		case "image_url":
			if p.ImageURL == nil || p.ImageURL.URL == nil {
				return out, agentd.Invalid("Field required", "missing", "body", "messages", i, "content", j, "image_url", "url")
			}
			url := *p.ImageURL.URL
			if !imageURL(url) {
				return out, agentd.Invalid("an image is an http(s) URL or a data:image/…;base64 URL", "url_parsing", "body", "messages", i, "content", j, "image_url", "url")
			}
			part := llm.Part{Type: llm.PartImage, ImageURL: url}
			if d := p.ImageURL.Detail; d != nil {
				switch *d {
				case "auto", "low", "high":
					part.Detail = *d
				default:
					return out, agentd.Invalid("Input should be 'auto', 'low' or 'high'", "literal_error", "body", "messages", i, "content", j, "image_url", "detail")
				}
			}
			out.Parts[j] = part
		default:
			return out, unsupported("content parts of type "+quote(p.Type)+" are not supported: text and image_url are", "messages", i, "content", j, "type")
		}
	}
	return out, nil
}

func quote(s string) string { b, _ := json.Marshal(s); return string(b) }

// imageURL reports whether url names an image a provider can fetch or decode.
func imageURL(url string) bool {
	if rest, ok := strings.CutPrefix(url, "data:"); ok {
		mediaType, data, ok := strings.Cut(rest, ";base64,")
		return ok && strings.HasPrefix(mediaType, "image/") && data != ""
	}
	return strings.HasPrefix(url, "https://") || strings.HasPrefix(url, "http://")
}

// toolCalls reads an assistant message's tool_calls.
func toolCalls(raw json.RawMessage, i int) ([]llm.ToolCall, error) {
	var list []struct {
		ID       *string `json:"id"`
		Type     *string `json:"type"`
		Function *struct {
			Name      *string `json:"name"`
			Arguments *string `json:"arguments"`
		} `json:"function"`
	}
	if raw[0] != '[' || json.Unmarshal(raw, &list) != nil {
		return nil, agentd.Invalid("Input should be a list of tool calls", "list_type", "body", "messages", i, "tool_calls")
	}
	if len(list) == 0 {
		return nil, nil
	}
	calls := make([]llm.ToolCall, len(list))
	for j, c := range list {
		loc := func(f ...any) []any { return append([]any{"body", "messages", i, "tool_calls", j}, f...) }
		switch {
		case c.ID == nil || *c.ID == "":
			return nil, agentd.Invalid("Field required", "missing", loc("id")...)
		case c.Type != nil && *c.Type != "function":
			return nil, agentd.Invalid("Input should be 'function'", "literal_error", loc("type")...)
		case c.Function == nil || c.Function.Name == nil || *c.Function.Name == "":
			return nil, agentd.Invalid("Field required", "missing", loc("function", "name")...)
		case c.Function.Arguments == nil:
			return nil, agentd.Invalid("Field required", "missing", loc("function", "arguments")...)
		}
		for _, seen := range calls[:j] {
			if seen.ID == *c.ID {
				return nil, agentd.Invalid("tool call ids of a message must differ", "value_error", loc("id")...)
			}
		}
		calls[j] = llm.ToolCall{ID: *c.ID, Name: *c.Function.Name, Arguments: *c.Function.Arguments}
	}
	return calls, nil
}
