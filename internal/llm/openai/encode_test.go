package openai

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/agentd/agentd/internal/llm"
)

// reference encodes req the way the hand-written encoder must: encoding/json over
// chatRequest, without HTML escaping. It fails where encode must fail.
func reference(req *llm.Request, stream, completion bool) ([]byte, error) {
	msgs := make([]message, len(req.Messages))
	for i, m := range req.Messages {
		msg := message{Role: m.Role, Content: m.Content, ToolCallID: m.ToolCallID}
		switch {
		case m.Parts != nil:
			if m.Content != "" {
				return nil, errors.New("both Content and Parts")
			}
			parts := make([]any, len(m.Parts))
			for j, p := range m.Parts {
				switch p.Type {
				case llm.PartText:
					parts[j] = textPart{Type: "text", Text: p.Text}
				case llm.PartImage:
					parts[j] = imagePart{Type: "image_url", ImageURL: imageURL{URL: p.ImageURL, Detail: p.Detail}}
				default:
					return nil, fmt.Errorf("part type %q", p.Type)
				}
			}
			msg.Content = parts
		case m.Content == "" && len(m.ToolCalls) > 0:
			msg.Content = nil
		}
		for _, c := range m.ToolCalls {
			msg.ToolCalls = append(msg.ToolCalls, toolCall{ID: c.ID, Type: "function", Function: function{Name: c.Name, Arguments: arguments(c.Arguments)}})
		}
		msgs[i] = msg
	}
	cr := chatRequest{Model: req.Model, Messages: msgs, Temperature: req.Temperature, ParallelToolCalls: req.ParallelToolCalls}
	if completion {
		cr.MaxCompletionTokens = req.MaxTokens
	} else {
		cr.MaxTokens = req.MaxTokens
	}
	for _, t := range req.Tools {
		cr.Tools = append(cr.Tools, tool{Type: "function", Function: toolFunction{
			Name: t.Name, Description: t.Description, Parameters: json.RawMessage(t.Parameters), Strict: t.Strict}})
	}
	if tc := req.ToolChoice; tc != nil {
		switch tc.Mode {
		case llm.ToolChoiceAuto, llm.ToolChoiceNone, llm.ToolChoiceRequired:
			cr.ToolChoice = tc.Mode
		case llm.ToolChoiceFunction:
			named := namedToolChoice{Type: "function"}
			named.Function.Name = tc.Name
			cr.ToolChoice = named
		default:
			return nil, fmt.Errorf("tool choice %q", tc.Mode)
		}
	}
	if rf := req.ResponseFormat; rf != nil {
		switch rf.Type {
		case llm.FormatJSONObject:
			cr.ResponseFormat = &responseFormat{Type: rf.Type}
		case llm.FormatJSONSchema:
			cr.ResponseFormat = &responseFormat{Type: rf.Type, JSONSchema: &jsonSchema{
				Name: rf.Name, Description: rf.Description, Schema: json.RawMessage(rf.Schema), Strict: rf.Strict}}
		default:
			return nil, fmt.Errorf("response format %q", rf.Type)
		}
	}
	if stream {
		cr.Stream, cr.StreamOptions = true, askUsage
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(&cr); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

func checkEncode(t testing.TB, req *llm.Request, stream, completion bool) {
	t.Helper()
	want, werr := reference(req, stream, completion)
	buf, err := encode(req, stream, completion)
	if (err != nil) != (werr != nil) {
		t.Fatalf("encode: %v; encoding/json: %v", err, werr)
	}
	if err != nil {
		return
	}
	defer putBuf(buf)
	got := buf.Bytes()
	// Numbers as written: a schema may hold one (1E1000) that is valid JSON but
	// no float64.
	decode := func(b []byte, v *any) error {
		d := json.NewDecoder(bytes.NewReader(b))
		d.UseNumber()
		return d.Decode(v)
	}
	var g, w any
	if err := decode(got, &g); err != nil {
		t.Fatalf("encode wrote invalid JSON %q: %v", got, err)
	}
	decode(want, &w)
	if !reflect.DeepEqual(g, w) {
		t.Fatalf("encode wrote\n%s\nencoding/json writes\n%s", got, want)
	}
}

var texts = []string{"", "plain", `quote " and \ backslash`, "line\nbreak\r\ttab", "\x00\x01\x1f\x7f",
	"<html> & </html>", "ünïcödé ✓ 日本語 🦩", "bad utf-8 \xff\xfe here", "\u2028\u2029", strings.Repeat("long ", 10000)}

func TestEncodeMatchesEncodingJSON(t *testing.T) {
	for _, temp := range []float64{0, 0.25, 1, 2, 1e-7, 0.1 + 0.2} {
		for _, mt := range []int{0, 77} {
			for _, s := range texts {
				req := &llm.Request{Model: s, Temperature: temp, MaxTokens: mt, Messages: []llm.Message{
					{Role: "system", Content: s}, {Role: "user", Content: "hi"}, {Role: "assistant", Content: s}}}
				for _, stream := range []bool{false, true} {
					checkEncode(t, req, stream, mt%2 == 1)
				}
			}
		}
	}
	if _, err := encode(&llm.Request{Temperature: math.NaN()}, false, false); err == nil {
		t.Error("a NaN temperature was encoded")
	}
}

// richRequest has every kind of message, tool and format there is, with s in
// every string and in the raw JSON; i picks among the choices and formats.
func richRequest(s string, i int) *llm.Request {
	yes, no := true, false
	quoted, _ := json.Marshal(s)
	schema := []byte("{ \"type\": \"object\",\n  \"properties\": {\"q\": {\"type\": \"string\", \"description\": " + string(quoted) + "}} }")
	req := &llm.Request{
		Model: "gpt-5.4",
		Messages: []llm.Message{
			{Role: llm.RoleSystem, Content: s},
			{Role: llm.RoleUser, Parts: []llm.Part{
				{Type: llm.PartText, Text: s},
				{Type: llm.PartImage, ImageURL: "https://example.com/a.png?q=" + s},
				{Type: llm.PartImage, ImageURL: "data:image/png;base64,iVBORw0KGgo=", Detail: "high"},
				{Type: llm.PartText, Text: ""},
			}},
			{Role: llm.RoleUser, Parts: []llm.Part{}},
			{Role: llm.RoleAssistant, ToolCalls: []llm.ToolCall{{ID: s, Name: s, Arguments: s}, {ID: "call_2", Name: "now", Arguments: "{}"}}},
			{Role: llm.RoleAssistant, Content: s, ToolCalls: []llm.ToolCall{{ID: "call_3", Name: "f", Arguments: `{"a":"\u00e9\n"}`}}},
			{Role: llm.RoleTool, ToolCallID: s, Content: s},
			{Role: llm.RoleTool, ToolCallID: "call_2", Parts: []llm.Part{{Type: llm.PartText, Text: s}}},
		},
		Temperature: 0.5,
		MaxTokens:   9,
		Tools: []llm.Tool{
			{Name: s, Description: s, Parameters: schema, Strict: &yes},
			{Name: "now"},
			{Name: "empty", Parameters: []byte{}, Strict: &no},
		},
	}
	switch i % 5 {
	case 1:
		req.ToolChoice = &llm.ToolChoice{Mode: llm.ToolChoiceAuto}
	case 2:
		req.ToolChoice = &llm.ToolChoice{Mode: llm.ToolChoiceNone}
	case 3:
		req.ToolChoice = &llm.ToolChoice{Mode: llm.ToolChoiceRequired}
	case 4:
		req.ToolChoice = &llm.ToolChoice{Mode: llm.ToolChoiceFunction, Name: s}
	}
	switch i % 3 {
	case 1:
		req.ParallelToolCalls = &yes
	case 2:
		req.ParallelToolCalls = &no
	}
	switch i % 4 {
	case 1:
		req.ResponseFormat = &llm.ResponseFormat{Type: llm.FormatJSONObject}
	case 2:
		req.ResponseFormat = &llm.ResponseFormat{Type: llm.FormatJSONSchema, Name: s, Description: s, Schema: schema, Strict: &yes}
	case 3:
		req.ResponseFormat = &llm.ResponseFormat{Type: llm.FormatJSONSchema, Name: "bare"}
	}
	return req
}

func TestEncodeToolsMatchesEncodingJSON(t *testing.T) {
	for i := range 60 { // every combination of choice, parallel and format
		for _, s := range texts {
			checkEncode(t, richRequest(s, i), i%2 == 0, i%7 == 0)
		}
	}
}

// TestEncodeBytes pins the exact bytes of the common shapes: plain messages as
// they always were, and the new ones as OpenAI documents them.
func TestEncodeBytes(t *testing.T) {
	strict := false
	req := &llm.Request{
		Model: "m",
		Messages: []llm.Message{
			{Role: "system", Content: "Be <brief>."},
			{Role: "user", Parts: []llm.Part{{Type: llm.PartText, Text: "What is this?"},
				{Type: llm.PartImage, ImageURL: "https://example.com/a.jpg", Detail: "low"},
				{Type: llm.PartImage, ImageURL: "data:image/png;base64,iVBO"}}},
			{Role: "assistant", ToolCalls: []llm.ToolCall{{ID: "call_1", Name: "look", Arguments: `{"at":"a.jpg"}`}}},
			{Role: "tool", ToolCallID: "call_1", Content: "a cat"},
		},
		Temperature: 0.7,
		Tools: []llm.Tool{{Name: "look", Description: "Look closer.", Strict: &strict,
			Parameters: []byte("{\n  \"type\": \"object\"\n}")}},
		ToolChoice:        &llm.ToolChoice{Mode: llm.ToolChoiceFunction, Name: "look"},
		ParallelToolCalls: &strict,
		ResponseFormat:    &llm.ResponseFormat{Type: llm.FormatJSONObject},
		Params:            []llm.Param{{Name: "seed", Value: []byte("7")}},
	}
	want := `{"model":"m","messages":[` +
		`{"role":"system","content":"Be <brief>."},` +
		`{"role":"user","content":[{"type":"text","text":"What is this?"},` +
		`{"type":"image_url","image_url":{"url":"https://example.com/a.jpg","detail":"low"}},` +
		`{"type":"image_url","image_url":{"url":"data:image/png;base64,iVBO"}}]},` +
		`{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"look","arguments":"{\"at\":\"a.jpg\"}"}}]},` +
		`{"role":"tool","content":"a cat","tool_call_id":"call_1"}],` +
		`"temperature":0.7,` +
		`"tools":[{"type":"function","function":{"name":"look","description":"Look closer.","parameters":{"type":"object"},"strict":false}}],` +
		`"tool_choice":{"type":"function","function":{"name":"look"}},"parallel_tool_calls":false,` +
		`"response_format":{"type":"json_object"},"seed":7,"stream":true,"stream_options":{"include_usage":true}}` + "\n"
	buf, err := encode(req, true, false)
	if err != nil {
		t.Fatal(err)
	}
	defer putBuf(buf)
	if got := buf.String(); got != want {
		t.Errorf("encode wrote\n%s\nwant\n%s", got, want)
	}
}

func TestEncodeErrors(t *testing.T) {
	user := []llm.Message{{Role: "user", Content: "hi"}}
	for _, tc := range []struct {
		name string
		req  llm.Request
	}{
		{"parameters not JSON", llm.Request{Messages: user, Tools: []llm.Tool{{Name: "f", Parameters: []byte(`{"type":`)}}}},
		{"schema not JSON", llm.Request{Messages: user, ResponseFormat: &llm.ResponseFormat{Type: llm.FormatJSONSchema, Name: "s", Schema: []byte(`{'a':1}`)}}},
		{"unknown tool choice", llm.Request{Messages: user, ToolChoice: &llm.ToolChoice{Mode: "any"}}},
		{"unknown response format", llm.Request{Messages: user, ResponseFormat: &llm.ResponseFormat{Type: "yaml"}}},
		{"unknown part", llm.Request{Messages: []llm.Message{{Role: "user", Parts: []llm.Part{{Type: "audio"}}}}}},
		{"content and parts", llm.Request{Messages: []llm.Message{{Role: "user", Content: "lost?", Parts: []llm.Part{{Type: llm.PartText, Text: "x"}}}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if buf, err := encode(&tc.req, false, false); err == nil {
				t.Errorf("encoded %s", buf.Bytes())
			}
			if _, err := reference(&tc.req, false, false); err == nil {
				t.Error("the reference encoded it: the two disagree on what is valid")
			}
		})
	}
}

func FuzzEncode(f *testing.F) {
	f.Add("gpt-4o", "hello", 0.7, 100, `{"city":"Paris"}`, []byte(`{"type":"object"}`))
	f.Add("m\"\\", "a\x00b\xffc\u2028", 1e-9, 0, "{\"a\":\"\\u00e9\"", []byte(" [1, 2 ,{\"b\" : null}] "))
	f.Add("", "", 0.0, 3, "", []byte(`{"a":`))
	f.Fuzz(func(t *testing.T, model, content string, temp float64, maxTokens int, args string, schema []byte) {
		if math.IsNaN(temp) || math.IsInf(temp, 0) {
			return
		}
		req := &llm.Request{Model: model, Temperature: temp, MaxTokens: maxTokens,
			Messages: []llm.Message{{Role: "user", Content: content}, {Role: content, Content: model}}}
		checkEncode(t, req, maxTokens%2 == 0, maxTokens%3 == 0)

		req = richRequest(content, maxTokens)
		req.Model, req.Temperature = model, temp
		req.Messages[3].ToolCalls[1].Arguments = args
		req.Tools[1].Parameters = schema // any bytes: encode must refuse what encoding/json refuses
		if req.ResponseFormat != nil && req.ResponseFormat.Type == llm.FormatJSONSchema {
			req.ResponseFormat.Schema = schema
		}
		checkEncode(t, req, maxTokens%2 == 1, maxTokens%5 == 0)
	})
}

func BenchmarkEncodeLongPrompt(b *testing.B) {
	msgs := make([]llm.Message, 450)
	for i := range msgs {
		msgs[i] = llm.Message{Role: "user", Content: "message number 123 about the weather, with some words"}
	}
	req := &llm.Request{Model: "gpt-4o-mini", Messages: msgs, Temperature: 0.7, MaxTokens: 64}
	b.ReportAllocs()
	for b.Loop() {
		buf, _ := encode(req, false, false)
		putBuf(buf)
	}
}

func BenchmarkEncodeLongPromptReflection(b *testing.B) {
	msgs := make([]llm.Message, 450)
	for i := range msgs {
		msgs[i] = llm.Message{Role: "user", Content: "message number 123 about the weather, with some words"}
	}
	req := &llm.Request{Model: "gpt-4o-mini", Messages: msgs, Temperature: 0.7, MaxTokens: 64}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := reference(req, false, false); err != nil {
			b.Fatal(err)
		}
	}
}
