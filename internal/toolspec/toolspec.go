// Package toolspec reads tool definitions, tool choices and response formats
// as OpenAI's chat completions API writes them (the format of agentd's own
// APIs and of an agent's stored configuration) into llm's provider-neutral
// types, refusing what no provider would take with errors that name the field.
package toolspec

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/internal/llm"
)

// MaxTools is how many tools one request may carry, as OpenAI allows.
const MaxTools = 128

// validName reports whether s is a function or schema name OpenAI takes:
// 1 to 64 letters, digits, underscores and dashes.
func validName(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

func at(loc []any, more ...any) []any { return append(append([]any{}, loc...), more...) }

func isObject(raw json.RawMessage) bool {
	raw = bytes.TrimLeft(raw, " \t\r\n")
	return len(raw) > 0 && raw[0] == '{'
}

// compact is raw without insignificant space; raw is valid JSON.
func compact(raw json.RawMessage) []byte {
	var b bytes.Buffer
	if json.Compact(&b, raw) != nil {
		return raw
	}
	return b.Bytes()
}

// Tools reads a "tools" array at loc ("body", "tools").
func Tools(raw json.RawMessage, loc ...any) ([]llm.Tool, error) {
	var list []json.RawMessage
	if raw = bytes.TrimSpace(raw); len(raw) == 0 || raw[0] != '[' || json.Unmarshal(raw, &list) != nil {
		return nil, agentd.Invalid("Input should be a valid list", "list_type", loc...)
	}
	if len(list) > MaxTools {
		return nil, agentd.Invalid(fmt.Sprintf("List should have at most %d items", MaxTools), "too_long", loc...)
	}
	tools := make([]llm.Tool, 0, len(list))
	for i, item := range list {
		var d struct {
			Type     *string `json:"type"`
			Function *struct {
				Name        *string         `json:"name"`
				Description *string         `json:"description"`
				Parameters  json.RawMessage `json:"parameters"`
				Strict      *bool           `json:"strict"`
			} `json:"function"`
		}
		if !isObject(item) || json.Unmarshal(item, &d) != nil {
			return nil, agentd.Invalid("Input should be an object with type and function", "model_attributes_type", at(loc, i)...)
		}
		switch {
		case d.Type == nil:
			return nil, agentd.Invalid("Field required", "missing", at(loc, i, "type")...)
		case *d.Type != "function":
			return nil, agentd.Invalid("Input should be 'function'", "literal_error", at(loc, i, "type")...)
		case d.Function == nil:
			return nil, agentd.Invalid("Field required", "missing", at(loc, i, "function")...)
		case d.Function.Name == nil:
			return nil, agentd.Invalid("Field required", "missing", at(loc, i, "function", "name")...)
		case !validName(*d.Function.Name):
			return nil, agentd.Invalid("a function name is 1 to 64 letters, digits, underscores or dashes", "string_pattern_mismatch", at(loc, i, "function", "name")...)
		case len(d.Function.Parameters) > 0 && string(d.Function.Parameters) != "null" && !isObject(d.Function.Parameters):
			return nil, agentd.Invalid("Input should be a JSON schema object", "model_attributes_type", at(loc, i, "function", "parameters")...)
		}
		t := llm.Tool{Name: *d.Function.Name, Strict: d.Function.Strict}
		if d.Function.Description != nil {
			t.Description = *d.Function.Description
		}
		if len(d.Function.Parameters) > 0 && string(d.Function.Parameters) != "null" {
			t.Parameters = compact(d.Function.Parameters)
		}
		for _, seen := range tools {
			if seen.Name == t.Name {
				return nil, agentd.Invalid(fmt.Sprintf("function %q is defined twice", t.Name), "value_error", at(loc, i, "function", "name")...)
			}
		}
		tools = append(tools, t)
	}
	return tools, nil
}

// Choice reads a "tool_choice": "none", "auto", "required" or a function by name.
func Choice(raw json.RawMessage, loc ...any) (*llm.ToolChoice, error) {
	var mode string
	if json.Unmarshal(raw, &mode) == nil {
		switch mode {
		case llm.ToolChoiceNone, llm.ToolChoiceAuto, llm.ToolChoiceRequired:
			return &llm.ToolChoice{Mode: mode}, nil
		}
		return nil, agentd.Invalid("Input should be 'none', 'auto', 'required' or a function", "literal_error", loc...)
	}
	var c struct {
		Type     *string `json:"type"`
		Function *struct {
			Name *string `json:"name"`
		} `json:"function"`
	}
	if !isObject(raw) || json.Unmarshal(raw, &c) != nil {
		return nil, agentd.Invalid("Input should be 'none', 'auto', 'required' or a function", "literal_error", loc...)
	}
	switch {
	case c.Type == nil:
		return nil, agentd.Invalid("Field required", "missing", at(loc, "type")...)
	case *c.Type != "function":
		return nil, agentd.Invalid("Input should be 'function'", "literal_error", at(loc, "type")...)
	case c.Function == nil || c.Function.Name == nil:
		return nil, agentd.Invalid("Field required", "missing", at(loc, "function", "name")...)
	}
	return &llm.ToolChoice{Mode: llm.ToolChoiceFunction, Name: *c.Function.Name}, nil
}

// Format reads a "response_format": nil for plain text (what every model gives
// unasked), else JSON on demand, with a schema for json_schema.
func Format(raw json.RawMessage, loc ...any) (*llm.ResponseFormat, error) {
	var f struct {
		Type       *string `json:"type"`
		JSONSchema *struct {
			Name        *string         `json:"name"`
			Description *string         `json:"description"`
			Schema      json.RawMessage `json:"schema"`
			Strict      *bool           `json:"strict"`
		} `json:"json_schema"`
	}
	if !isObject(raw) || json.Unmarshal(raw, &f) != nil {
		return nil, agentd.Invalid("Input should be an object", "model_attributes_type", loc...)
	}
	switch {
	case f.Type == nil:
		return nil, agentd.Invalid("Field required", "missing", at(loc, "type")...)
	case *f.Type == "text":
		return nil, nil
	case *f.Type == llm.FormatJSONObject:
		return &llm.ResponseFormat{Type: llm.FormatJSONObject}, nil
	case *f.Type != llm.FormatJSONSchema:
		return nil, agentd.Invalid("Input should be 'text', 'json_object' or 'json_schema'", "literal_error", at(loc, "type")...)
	case f.JSONSchema == nil:
		return nil, agentd.Invalid("Field required", "missing", at(loc, "json_schema")...)
	case f.JSONSchema.Name == nil || *f.JSONSchema.Name == "":
		return nil, agentd.Invalid("Field required", "missing", at(loc, "json_schema", "name")...)
	case !validName(*f.JSONSchema.Name):
		return nil, agentd.Invalid("a schema name is 1 to 64 letters, digits, underscores or dashes", "string_pattern_mismatch", at(loc, "json_schema", "name")...)
	case len(f.JSONSchema.Schema) > 0 && string(f.JSONSchema.Schema) != "null" && !isObject(f.JSONSchema.Schema):
		return nil, agentd.Invalid("Input should be an object", "model_attributes_type", at(loc, "json_schema", "schema")...)
	}
	rf := &llm.ResponseFormat{Type: llm.FormatJSONSchema, Name: *f.JSONSchema.Name, Strict: f.JSONSchema.Strict}
	if f.JSONSchema.Description != nil {
		rf.Description = *f.JSONSchema.Description
	}
	if len(f.JSONSchema.Schema) > 0 && string(f.JSONSchema.Schema) != "null" {
		rf.Schema = compact(f.JSONSchema.Schema)
	}
	return rf, nil
}
