package anthropic_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"

	"github.com/agentd/agentd/internal/llm"
	"github.com/agentd/agentd/internal/llm/anthropic"
	"github.com/agentd/agentd/internal/llm/llmtest"
)

// sameJSON fails unless got is want, up to insignificant space.
func sameJSON(t *testing.T, what string, got json.RawMessage, want string) {
	t.Helper()
	var g, w bytes.Buffer
	if err := json.Compact(&w, []byte(want)); err != nil {
		t.Fatalf("bad want %s: %v", want, err)
	}
	if got != nil {
		if err := json.Compact(&g, got); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	if g.String() != w.String() {
		t.Errorf("%s =\n%s\nwant\n%s", what, g.String(), w.String())
	}
}

// fields is the last request's body as top-level fields.
func (u *upstream) fields(t *testing.T) map[string]json.RawMessage {
	t.Helper()
	u.mu.Lock()
	defer u.mu.Unlock()
	var f map[string]json.RawMessage
	if err := json.Unmarshal(u.body[len(u.body)-1], &f); err != nil {
		t.Fatal(err)
	}
	return f
}

var weather = []llm.Tool{{Name: "get_weather", Parameters: []byte(`{"type":"object","properties":{"city":{"type":"string"}}}`)}, {Name: "now"}}

func TestToolResultsMerge(t *testing.T) {
	u := serve(t, 200, "application/json", okReply)
	req := &llm.Request{Model: "m", Tools: weather, Messages: []llm.Message{
		{Role: llm.RoleUser, Content: "Weather and time?"},
		{Role: llm.RoleAssistant, Content: "Checking.", ToolCalls: []llm.ToolCall{
			{ID: "a", Name: "get_weather", Arguments: ` {"city": "Paris"} `},
			{ID: "b", Name: "now"}, // no arguments: {}
		}},
		{Role: llm.RoleSystem, Content: "Be brief."}, // joins the system prompt; the results still follow the calls
		{Role: llm.RoleTool, ToolCallID: "a", Content: "sunny"},
		{Role: llm.RoleTool, ToolCallID: "b", Parts: []llm.Part{
			{Type: llm.PartText, Text: "12:00"},
			{Type: llm.PartImage, ImageURL: "data:image/PNG;base64,iVBORw0KGgo="},
		}},
		{Role: llm.RoleUser, Content: "Thanks."},
		{Role: llm.RoleUser}, // empty: no empty text block, which the API refuses
		{Role: llm.RoleUser, Parts: []llm.Part{{Type: llm.PartText, Text: "And this?"}, {Type: llm.PartText}, {Type: llm.PartImage, ImageURL: "https://example.com/a.jpg", Detail: "high"}}},
	}}
	if _, err := complete(t, u.provider(), req); err != nil {
		t.Fatal(err)
	}
	_, w := u.last(t)
	if w.System == nil || *w.System != "Be brief." {
		t.Errorf("system = %v", w.System)
	}
	if len(w.Messages) != 3 {
		t.Fatalf("%d turns, want user, assistant, user: %+v", len(w.Messages), w.Messages)
	}
	sameJSON(t, "the first turn", w.Messages[0].Content, `"Weather and time?"`)
	sameJSON(t, "the calls", w.Messages[1].Content, `[
		{"type":"text","text":"Checking."},
		{"type":"tool_use","id":"a","name":"get_weather","input":{"city":"Paris"}},
		{"type":"tool_use","id":"b","name":"now","input":{}}]`)
	// Both results and the user messages after them in one turn, results first;
	// the empty text part is left out, the detail dropped.
	sameJSON(t, "the results", w.Messages[2].Content, `[
		{"type":"tool_result","tool_use_id":"a","content":"sunny"},
		{"type":"tool_result","tool_use_id":"b","content":[
			{"type":"text","text":"12:00"},
			{"type":"image","source":{"type":"base64","media_type":"image/png","data":"iVBORw0KGgo="}}]},
		{"type":"text","text":"Thanks."},
		{"type":"text","text":"And this?"},
		{"type":"image","source":{"type":"url","url":"https://example.com/a.jpg"}}]`)
}

// Results must answer the calls right before them: the API refuses anything
// else, so the adapter does before sending.
func TestToolResultsOutOfPlace(t *testing.T) {
	u := serve(t, 200, "application/json", okReply)
	p := u.provider()
	call := llm.Message{Role: llm.RoleAssistant, ToolCalls: []llm.ToolCall{{ID: "a", Name: "now"}}}
	result := llm.Message{Role: llm.RoleTool, ToolCallID: "a", Content: "12:00"}
	user := llm.Message{Role: llm.RoleUser, Content: "hi"}
	for name, ms := range map[string][]llm.Message{
		"first":                      {result, user},
		"after a user message":       {user, result},
		"after a plain answer":       {user, {Role: llm.RoleAssistant, Content: "hello"}, result},
		"after the text that closed": {user, call, result, user, result},
		"without a call id":          {user, call, {Role: llm.RoleTool, Content: "12:00"}},
	} {
		t.Run(name, func(t *testing.T) {
			req := &llm.Request{Model: "m", Messages: ms}
			_, err := complete(t, p, req)
			if e := wantKind(t, err, llm.KindPermanent); !strings.Contains(e.Message, "tool message") {
				t.Errorf("message %q does not name the problem", e.Message)
			}
			// The conversation's shape is no parameter: the call reports it.
			if err := p.CheckRequest(req); err != nil {
				t.Errorf("CheckRequest: %v", err)
			}
		})
	}
	if n := u.count(); n != 0 {
		t.Errorf("%d requests sent", n)
	}
}

func TestCheckRequestRefusals(t *testing.T) {
	image := func(url string) []llm.Message {
		return []llm.Message{{Role: llm.RoleUser, Parts: []llm.Part{{Type: llm.PartText, Text: "what is it?"}, {Type: llm.PartImage, ImageURL: url}}}}
	}
	calling := func(args string) []llm.Message {
		return []llm.Message{{Role: llm.RoleUser, Content: "weather?"},
			{Role: llm.RoleAssistant, ToolCalls: []llm.ToolCall{{ID: "a", Name: "get_weather", Arguments: args}}},
			{Role: llm.RoleTool, ToolCallID: "a", Content: "sunny"}}
	}
	schema := &llm.ResponseFormat{Type: llm.FormatJSONSchema, Name: "x", Schema: []byte(`{"type":"object"}`)}
	for _, tc := range []struct {
		name, param string
		req         llm.Request
		dropped     bool // DropParams takes the request
	}{
		{"a data URL not in base64", "messages", llm.Request{Messages: image("data:image/png,%89PNG")}, false},
		{"a data URL with no data", "messages", llm.Request{Messages: image("data:image/png;base64,")}, false},
		{"a data URL of another media type", "messages", llm.Request{Messages: image("data:image/bmp;base64,Qk0=")}, false},
		{"svg", "messages", llm.Request{Messages: image("data:image/svg+xml;base64,PHN2Zz4=")}, false},
		{"an image by file name", "messages", llm.Request{Messages: image("file:///etc/passwd")}, false},
		{"an image in the system prompt", "messages", llm.Request{Messages: []llm.Message{
			{Role: llm.RoleSystem, Parts: []llm.Part{{Type: llm.PartImage, ImageURL: "https://example.com/a.png"}}}, {Role: llm.RoleUser, Content: "hi"}}}, false},
		{"an image in an assistant message", "messages", llm.Request{Messages: []llm.Message{{Role: llm.RoleUser, Content: "hi"},
			{Role: llm.RoleAssistant, Parts: []llm.Part{{Type: llm.PartImage, ImageURL: "https://example.com/a.png"}}}}}, false},
		{"a part of unknown type", "messages", llm.Request{Messages: []llm.Message{{Role: llm.RoleUser, Parts: []llm.Part{{Type: "input_audio"}}}}}, false},
		{"arguments that are a list", "messages", llm.Request{Messages: calling(`["Paris"]`), Tools: weather}, false},
		{"arguments that are a string", "messages", llm.Request{Messages: calling(`"Paris"`), Tools: weather}, false},
		{"arguments cut short", "messages", llm.Request{Messages: calling(`{"city": "Par`), Tools: weather}, false},
		{"parameters that are no object", "tools", llm.Request{Messages: image("https://example.com/a.png"),
			Tools: []llm.Tool{{Name: "f", Parameters: []byte(`[]`)}}}, false},
		{"a function choice without a name", "tool_choice", llm.Request{Messages: image("https://example.com/a.png"),
			Tools: weather, ToolChoice: &llm.ToolChoice{Mode: llm.ToolChoiceFunction}}, false},
		{"a schema that is no object", "response_format", llm.Request{Messages: image("https://example.com/a.png"),
			ResponseFormat: &llm.ResponseFormat{Type: llm.FormatJSONSchema, Schema: []byte(`"object"`)}}, false},
		{"a format of unknown type", "response_format", llm.Request{Messages: image("https://example.com/a.png"),
			ResponseFormat: &llm.ResponseFormat{Type: "xml"}}, false},
		{"a refusal behind a misshapen start", "messages", llm.Request{Messages: append([]llm.Message{{Role: llm.RoleAssistant, Content: "hi"}},
			image("data:image/tiff;base64,SUkqAA==")...)}, false},
		{"tools and a response format", "response_format", llm.Request{Messages: calling(`{"city":"Paris"}`), Tools: weather, ResponseFormat: schema}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := serve(t, 200, "application/json", okReply)
			for _, drop := range []bool{false, true} {
				p := anthropic.New(anthropic.Options{BaseURL: u.URL, APIKey: "k", DropParams: drop})
				req := tc.req
				req.Model = "m"
				err := p.CheckRequest(&req)
				if drop && tc.dropped {
					if err != nil {
						t.Errorf("DropParams: %v", err)
					}
					continue
				}
				var pe *llm.ParamError
				if !errors.As(err, &pe) {
					t.Fatalf("DropParams=%v: CheckRequest = %v, want a *llm.ParamError", drop, err)
				}
				if pe.Param != tc.param || pe.Kind != "anthropic" || pe.Reason == "" {
					t.Errorf("DropParams=%v: %+v, want param %q with a reason", drop, pe, tc.param)
				}
				// A caller that skipped the check gets the refusal from the call.
				_, err = complete(t, p, &req)
				wantKind(t, err, llm.KindPermanent)
				if !errors.As(err, &pe) || pe.Param != tc.param {
					t.Errorf("DropParams=%v: Complete: %v, want it to wrap the refusal", drop, err)
				}
			}
			if n := u.count(); n != 0 {
				t.Errorf("%d requests sent", n)
			}
		})
	}
}

func TestCheckRequestTakes(t *testing.T) {
	p := anthropic.New(anthropic.Options{})
	upper := &llm.Request{Model: "m", Messages: []llm.Message{{Role: llm.RoleUser, Parts: []llm.Part{
		{Type: llm.PartImage, ImageURL: "data:IMAGE/JPEG;name=a.jpg;BASE64,/9j/4AAQ"},
		{Type: llm.PartImage, ImageURL: "HTTPS://example.com/a.webp"},
	}}}}
	for name, req := range map[string]*llm.Request{
		"the suite's tool request":       llmtest.ToolRequest(),
		"the suite's structured request": llmtest.StructuredRequest(),
		"media types in any case":        upper,
	} {
		if err := p.CheckRequest(req); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}

	u := serve(t, 200, "application/json", okReply)
	if _, err := complete(t, u.provider(), upper); err != nil {
		t.Fatal(err)
	}
	_, w := u.last(t)
	sameJSON(t, "images", w.Messages[0].Content, `[
		{"type":"image","source":{"type":"base64","media_type":"image/jpeg","data":"/9j/4AAQ"}},
		{"type":"image","source":{"type":"url","url":"HTTPS://example.com/a.webp"}}]`)
}

// With DropParams, tools win over a response format: the request is sent as a
// plain tools request and its reply read as one.
func TestDropParamsDropsResponseFormat(t *testing.T) {
	u := serve(t, 200, "application/json", `{"type":"message","content":[{"type":"tool_use","id":"toolu_1","name":"now","input":{}}],"model":"m","stop_reason":"tool_use","usage":{"input_tokens":1,"output_tokens":2}}`)
	p := anthropic.New(anthropic.Options{BaseURL: u.URL, DropParams: true})
	resp, err := complete(t, p, &llm.Request{Model: "m", Messages: msgs(llm.RoleUser, "time?"), Tools: weather,
		ResponseFormat: &llm.ResponseFormat{Type: llm.FormatJSONObject}})
	if err != nil {
		t.Fatal(err)
	}
	f := u.fields(t)
	sameJSON(t, "tools", f["tools"], `[
		{"name":"get_weather","input_schema":{"type":"object","properties":{"city":{"type":"string"}}}},
		{"name":"now","input_schema":{"type":"object","properties":{}}}]`)
	if _, ok := f["tool_choice"]; ok {
		t.Errorf("tool_choice %s sent", f["tool_choice"])
	}
	if want := []llm.ToolCall{{ID: "toolu_1", Name: "now", Arguments: "{}"}}; !reflect.DeepEqual(resp.ToolCalls, want) || resp.FinishReason != llm.FinishToolCalls {
		t.Errorf("reply %+v", resp)
	}
}

func TestToolChoice(t *testing.T) {
	no, yes := false, true
	for _, tc := range []struct {
		name     string
		choice   *llm.ToolChoice
		parallel *bool
		want     string // "" for none sent
	}{
		{"unsaid", nil, nil, ""},
		{"auto", &llm.ToolChoice{Mode: llm.ToolChoiceAuto}, nil, `{"type":"auto"}`},
		{"none", &llm.ToolChoice{Mode: llm.ToolChoiceNone}, nil, `{"type":"none"}`},
		{"required", &llm.ToolChoice{Mode: llm.ToolChoiceRequired}, nil, `{"type":"any"}`},
		{"function", &llm.ToolChoice{Mode: llm.ToolChoiceFunction, Name: "now"}, nil, `{"type":"tool","name":"now"}`},
		{"parallel off, no choice", nil, &no, `{"type":"auto","disable_parallel_tool_use":true}`},
		{"parallel off, required", &llm.ToolChoice{Mode: llm.ToolChoiceRequired}, &no, `{"type":"any","disable_parallel_tool_use":true}`},
		{"parallel off, function", &llm.ToolChoice{Mode: llm.ToolChoiceFunction, Name: "now"}, &no, `{"type":"tool","name":"now","disable_parallel_tool_use":true}`},
		// Anthropic's none has no such field: without calls there is nothing in parallel.
		{"parallel off, none", &llm.ToolChoice{Mode: llm.ToolChoiceNone}, &no, `{"type":"none"}`},
		{"parallel on is the default", nil, &yes, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := serve(t, 200, "application/json", okReply)
			req := &llm.Request{Model: "m", Messages: msgs(llm.RoleUser, "x"), Tools: weather, ToolChoice: tc.choice, ParallelToolCalls: tc.parallel}
			if err := u.provider().CheckRequest(req); err != nil {
				t.Fatal(err)
			}
			if _, err := complete(t, u.provider(), req); err != nil {
				t.Fatal(err)
			}
			got, ok := u.fields(t)["tool_choice"]
			if tc.want == "" {
				if ok {
					t.Errorf("tool_choice %s sent", got)
				}
				return
			}
			sameJSON(t, "tool_choice", got, tc.want)
		})
	}

	t.Run("strict", func(t *testing.T) {
		u := serve(t, 200, "application/json", okReply)
		tools := []llm.Tool{{Name: "a", Description: "A.", Strict: &yes}, {Name: "b", Strict: &no}, {Name: "c"}}
		if _, err := complete(t, u.provider(), &llm.Request{Model: "m", Messages: msgs(llm.RoleUser, "x"), Tools: tools}); err != nil {
			t.Fatal(err)
		}
		sameJSON(t, "tools", u.fields(t)["tools"], `[
			{"name":"a","description":"A.","input_schema":{"type":"object","properties":{}},"strict":true},
			{"name":"b","input_schema":{"type":"object","properties":{}},"strict":false},
			{"name":"c","input_schema":{"type":"object","properties":{}}}]`)
	})

	t.Run("no tools", func(t *testing.T) {
		// Nothing to choose from: the run layer refuses a choice that needs a
		// tool; the rest asks nothing of the API.
		u := serve(t, 200, "application/json", okReply)
		req := &llm.Request{Model: "m", Messages: msgs(llm.RoleUser, "x"), ToolChoice: &llm.ToolChoice{Mode: llm.ToolChoiceNone}, ParallelToolCalls: &no}
		if _, err := complete(t, u.provider(), req); err != nil {
			t.Fatal(err)
		}
		f := u.fields(t)
		if f["tools"] != nil || f["tool_choice"] != nil {
			t.Errorf("sent tools %s, tool_choice %s", f["tools"], f["tool_choice"])
		}
	})
}

// cutBefore is the tool stream recording up to the event that holds marker,
// and up to the middle of that event.
func cutBefore(t *testing.T, marker string) (between, inside string) {
	t.Helper()
	body := string(recording(t, "tool_stream.http").Body)
	at := strings.Index(body, marker)
	if at < 0 {
		t.Fatalf("no %q in the recording", marker)
	}
	start := strings.LastIndex(body[:at], "event:")
	return body[:start], body[:at]
}

func TestToolStreamCut(t *testing.T) {
	between, inside := cutBefore(t, `ty\":\"Lyon`)
	first := llm.ToolCall{ID: "toolu_01A09q90qw90lq917835lq9", Name: "get_weather", Arguments: `{"city":"Paris","day":"tomorrow"}`}
	second := llm.ToolCall{ID: "toolu_01T1x1fJ34qAmk2tNTrN7Up6", Name: "get_weather", Arguments: `{"ci`}
	for _, tc := range []struct {
		name, body string
		kind       llm.Kind
	}{
		{"between events", between, llm.KindRetryable},
		{"inside an event", inside, llm.KindRetryable},
		{"by an error event", between + "event: error\ndata: {\"type\": \"error\", \"error\": {\"type\": \"overloaded_error\", \"message\": \"Overloaded\"}}\n\n", llm.KindRetryable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := serve(t, 200, "text/event-stream", tc.body)
			pieces, resp, err := stream(t, u.provider(), llmtest.ToolRequest())
			wantKind(t, err, tc.kind)
			if resp == nil {
				t.Fatal("no Response")
			}
			if got := strings.Join(pieces, ""); got != "I'll check tomorrow's weather in both cities." || resp.Text != got {
				t.Errorf("emitted %q, Text %q", got, resp.Text)
			}
			// The calls so far, the last as far as it came: the caller must not
			// run them, but may count them.
			if want := []llm.ToolCall{first, second}; !reflect.DeepEqual(resp.ToolCalls, want) {
				t.Errorf("ToolCalls = %+v, want %+v", resp.ToolCalls, want)
			}
			if resp.Usage != (llm.Usage{}) || resp.FinishReason != "" {
				t.Errorf("usage %+v, finish %q before message_delta", resp.Usage, resp.FinishReason)
			}
		})
	}
	t.Run("reason", func(t *testing.T) {
		u := serve(t, 200, "text/event-stream", between)
		_, _, err := stream(t, u.provider(), llmtest.ToolRequest())
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("err = %v, want it to wrap io.ErrUnexpectedEOF", err)
		}
	})
}

// A call whose start carries its input and no deltas follow (a proxy that
// buffers) has that input as its arguments.
func TestStreamToolInputWithoutDeltas(t *testing.T) {
	u := serve(t, 200, "text/event-stream", sse(
		"message_start", evStart,
		"content_block_start", `{"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"toolu_1","name":"get_weather","input":{"city": "Paris"}}}`,
		"content_block_stop", `{"type":"content_block_stop","index":0}`,
		"content_block_start", `{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_2","name":"now","input":{}}}`,
		"content_block_delta", `{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}`,
		"content_block_stop", `{"type":"content_block_stop","index":1}`,
		"message_delta", `{"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":9}}`,
		"message_stop", evStop))
	pieces, resp, err := stream(t, u.provider(), &llm.Request{Model: "m", Messages: msgs(llm.RoleUser, "x"), Tools: weather})
	if err != nil {
		t.Fatal(err)
	}
	want := []llm.ToolCall{{ID: "toolu_1", Name: "get_weather", Arguments: `{"city":"Paris"}`}, {ID: "toolu_2", Name: "now", Arguments: "{}"}}
	if len(pieces) != 0 || !reflect.DeepEqual(resp.ToolCalls, want) || resp.FinishReason != llm.FinishToolCalls {
		t.Errorf("pieces %q, resp %+v", pieces, resp)
	}
}

func TestResponseFormat(t *testing.T) {
	strict := true
	for _, tc := range []struct {
		name          string
		rf            llm.ResponseFormat
		tools, choice string
	}{
		{"json_object", llm.ResponseFormat{Type: llm.FormatJSONObject},
			`[{"name":"json_response","input_schema":{"type":"object"}}]`,
			`{"type":"tool","name":"json_response","disable_parallel_tool_use":true}`},
		{"json_schema", llm.ResponseFormat{Type: llm.FormatJSONSchema, Name: "person", Description: "A person.", Strict: &strict,
			Schema: []byte(`{"type": "object", "properties": {"name": {"type": "string"}}}`)},
			`[{"name":"person","description":"A person.","input_schema":{"type":"object","properties":{"name":{"type":"string"}}},"strict":true}]`,
			`{"type":"tool","name":"person","disable_parallel_tool_use":true}`},
		{"json_schema without a name or schema", llm.ResponseFormat{Type: llm.FormatJSONSchema},
			`[{"name":"json_response","input_schema":{"type":"object"}}]`,
			`{"type":"tool","name":"json_response","disable_parallel_tool_use":true}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// A text block before the call (which a forced tool_choice should
			// not produce) is not part of the JSON.
			u := serve(t, 200, "application/json", `{"type":"message","content":[{"type":"text","text":"Here:"},{"type":"tool_use","id":"toolu_1","name":"x","input":{"name": "Ada", "tags": [1, 2]}}],"model":"m","stop_reason":"tool_use","usage":{"input_tokens":1,"output_tokens":2}}`)
			rf := tc.rf
			req := &llm.Request{Model: "m", Messages: msgs(llm.RoleUser, "Who wrote the first program? JSON."), ResponseFormat: &rf}
			if err := u.provider().CheckRequest(req); err != nil {
				t.Fatal(err)
			}
			resp, err := complete(t, u.provider(), req)
			if err != nil {
				t.Fatal(err)
			}
			f := u.fields(t)
			sameJSON(t, "tools", f["tools"], tc.tools)
			sameJSON(t, "tool_choice", f["tool_choice"], tc.choice)
			if resp.Text != `{"name":"Ada","tags":[1,2]}` || resp.FinishReason != llm.FinishStop || resp.ToolCalls != nil {
				t.Errorf("reply %+v", resp)
			}
		})
	}

	t.Run("streamed", func(t *testing.T) {
		u := serve(t, 200, "text/event-stream", sse(
			"message_start", evStart,
			"content_block_start", `{"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"toolu_1","name":"json_response","input":{}}}`,
			"ping", `{"type": "ping"}`,
			"content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":""}}`,
			"content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{\"name\":"}}`,
			"content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":" \"Ada\"}"}}`,
			"content_block_stop", `{"type":"content_block_stop","index":0}`,
			// A second call (which disable_parallel_tool_use rules out) is not
			// the answer: the first is, as in a whole reply.
			"content_block_start", `{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_2","name":"json_response","input":{}}}`,
			"content_block_delta", `{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{}"}}`,
			"content_block_stop", `{"type":"content_block_stop","index":1}`,
			"message_delta", `{"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":12}}`,
			"message_stop", evStop))
		pieces, resp, err := stream(t, u.provider(), &llm.Request{Model: "m", Messages: msgs(llm.RoleUser, "x"),
			ResponseFormat: &llm.ResponseFormat{Type: llm.FormatJSONObject}})
		if err != nil {
			t.Fatal(err)
		}
		// The JSON is the text, emitted as it arrives, byte for byte.
		if want := []string{`{"name":`, ` "Ada"}`}; !reflect.DeepEqual(pieces, want) {
			t.Errorf("pieces %q, want %q", pieces, want)
		}
		if resp.Text != `{"name": "Ada"}` || resp.FinishReason != llm.FinishStop || resp.ToolCalls != nil || resp.Usage.OutputTokens != 12 {
			t.Errorf("reply %+v", resp)
		}
	})

	t.Run("cut by max_tokens", func(t *testing.T) {
		u := serve(t, 200, "application/json", `{"type":"message","content":[{"type":"tool_use","id":"toolu_1","name":"json_response","input":{}}],"model":"m","stop_reason":"max_tokens","usage":{"input_tokens":1,"output_tokens":2}}`)
		resp, err := complete(t, u.provider(), &llm.Request{Model: "m", Messages: msgs(llm.RoleUser, "x"), ResponseFormat: &llm.ResponseFormat{Type: llm.FormatJSONObject}})
		if err != nil {
			t.Fatal(err)
		}
		if resp.FinishReason != llm.FinishLength {
			t.Errorf("finish %q, want length", resp.FinishReason)
		}
	})
}
