package openai

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"

	"github.com/agentd/agentd/internal/llm"
)

// The tool-call cases the conformance suite does not cover: other servers'
// shapes, the deprecated functions API, n > 1, and streams interleaved or cut.

func TestToolReplies(t *testing.T) {
	usage := `"usage":{"prompt_tokens":82,"completion_tokens":17,"total_tokens":99}`
	for _, tc := range []struct {
		name string
		body string
		want llm.Response
	}{
		{"function_call, deprecated", `{"model":"gpt-3.5-turbo-0613","choices":[{"index":0,"message":{"role":"assistant","content":null,"function_call":{"name":"get_current_weather","arguments":"{\n\"location\": \"Boston, MA\"\n}"}},"logprobs":null,"finish_reason":"function_call"}],` + usage + `}`,
			llm.Response{ToolCalls: []llm.ToolCall{{Name: "get_current_weather", Arguments: "{\n\"location\": \"Boston, MA\"\n}"}},
				FinishReason: llm.FinishToolCalls, Model: "gpt-3.5-turbo-0613", Usage: llm.Usage{InputTokens: 82, OutputTokens: 17, Source: llm.SourceProvider}}},
		{"tool calls in the second choice", `{"model":"m","choices":[` +
			`{"index":1,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"call_b","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Lyon\"}"}}]},"finish_reason":"tool_calls"},` +
			`{"index":0,"message":{"role":"assistant","content":"Sunny."},"finish_reason":"stop"}],` + usage + `}`,
			llm.Response{Text: "Sunny.", FinishReason: llm.FinishStop, Model: "m", Usage: llm.Usage{InputTokens: 82, OutputTokens: 17, Source: llm.SourceProvider},
				More: []llm.Choice{{ToolCalls: []llm.ToolCall{{ID: "call_b", Name: "get_weather", Arguments: `{"city":"Lyon"}`}}, FinishReason: llm.FinishToolCalls}}}},
		// \" and \\n are escapes of the model's own JSON; \u00e9 on the wire is é
		// in its text, \\u00e9 an escape it wrote; 1.50 and the spaces are its
		// too. None of it is decoded or re-encoded.
		{"arguments with escapes, byte for byte", `{"model":"m","choices":[{"message":{"content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"say","arguments":"{\"q\":\"say \\\"hi\\\"\\n\u00e9 \\u00e9 ✓\\\\\" , \"n\": 1.50 }"}}]},"finish_reason":"tool_calls"}]}`,
			llm.Response{ToolCalls: []llm.ToolCall{{ID: "c", Name: "say", Arguments: `{"q":"say \"hi\"\né \u00e9 ✓\\" , "n": 1.50 }`}}, FinishReason: llm.FinishToolCalls, Model: "m"}},
		{"arguments cut by the limit, not JSON", `{"model":"m","choices":[{"message":{"content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Par"}}]},"finish_reason":"length"}]}`,
			llm.Response{ToolCalls: []llm.ToolCall{{ID: "c", Name: "get_weather", Arguments: `{"city":"Par`}}, FinishReason: llm.FinishLength, Model: "m"}},
		{"arguments as an object", `{"model":"m","choices":[{"message":{"content":"","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":{"city": "Paris"}}}]},"finish_reason":"tool_calls"}]}`,
			llm.Response{ToolCalls: []llm.ToolCall{{ID: "c", Name: "f", Arguments: `{"city": "Paris"}`}}, FinishReason: llm.FinishToolCalls, Model: "m"}},
		{"a forced function answered with stop", `{"model":"m","choices":[{"message":{"content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]},"finish_reason":"stop"}]}`,
			llm.Response{ToolCalls: []llm.ToolCall{{ID: "c", Name: "f", Arguments: "{}"}}, FinishReason: llm.FinishToolCalls, Model: "m"}},
		{"text before the calls", `{"model":"m","choices":[{"message":{"content":"Let me check.","tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}},{"id":"c2","type":"function","function":{"name":"g","arguments":""}}]},"finish_reason":"tool_calls"}]}`,
			llm.Response{Text: "Let me check.", ToolCalls: []llm.ToolCall{{ID: "c1", Name: "f", Arguments: "{}"}, {ID: "c2", Name: "g"}}, FinishReason: llm.FinishToolCalls, Model: "m"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := serve(t, 200, jsonHeader(), []byte(tc.body))
			resp, err := New(Options{BaseURL: s.URL}).Complete(context.Background(), request())
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(*resp, tc.want) {
				t.Errorf("got  %+v\nwant %+v", *resp, tc.want)
			}
		})
	}
}

func TestToolStreams(t *testing.T) {
	// chunk is a stream chunk with delta; finish is the finish reason or "null".
	chunk := func(delta, finish string) string {
		return `data: {"id":"chatcmpl-1","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":` + delta + `,"logprobs":null,"finish_reason":` + finish + `}]}` + "\n\n"
	}
	start := func(index, id, name, args string) string {
		return `{"index":` + index + `,"id":"` + id + `","type":"function","function":{"name":"` + name + `","arguments":` + args + `}}`
	}
	args := func(index, piece string) string {
		return `{"index":` + index + `,"function":{"arguments":` + piece + `}}`
	}
	calls := func(pieces ...string) string { return `{"tool_calls":[` + strings.Join(pieces, ",") + `]}` }
	const done = "data: [DONE]\n\n"
	for _, tc := range []struct {
		name string
		body string
		text string // emitted
		want llm.Response
		kind llm.Kind // of the error; KindUnknown for none
	}{
		{name: "parallel calls interleaved, index 1 before index 0 ends",
			body: chunk(`{"role":"assistant","content":null,"tool_calls":[`+start("0", "call_a", "get_weather", `""`)+`]}`, "null") +
				chunk(calls(args("0", `"{\"city\":"`)), "null") +
				chunk(calls(start("1", "call_b", "get_time", `"{\"tz\""`)), "null") +
				chunk(calls(args("0", `"\"Paris\""`), args("1", `":\"CET\"}"`)), "null") +
				chunk(calls(args("0", `"}"`)), "null") +
				chunk(`{}`, `"tool_calls"`) + done,
			want: llm.Response{ToolCalls: []llm.ToolCall{
				{ID: "call_a", Name: "get_weather", Arguments: `{"city":"Paris"}`},
				{ID: "call_b", Name: "get_time", Arguments: `{"tz":"CET"}`}}, FinishReason: llm.FinishToolCalls, Model: "m"}},
		{name: "index 1 opened first",
			body: chunk(calls(start("1", "call_b", "g", `"{}"`)), "null") +
				chunk(calls(start("0", "call_a", "f", `"{}"`)), "null") +
				chunk(`{}`, `"tool_calls"`) + done,
			want: llm.Response{ToolCalls: []llm.ToolCall{{ID: "call_a", Name: "f", Arguments: "{}"}, {ID: "call_b", Name: "g", Arguments: "{}"}},
				FinishReason: llm.FinishToolCalls, Model: "m"}},
		// An escape the model wrote, split between two deltas, and one of the
		// wire: the pieces are decoded each on its own and joined as text.
		{name: "escapes across deltas, byte for byte",
			body: chunk(calls(start("0", "c", "say", `""`)), "null") +
				chunk(calls(args("0", `"{\"q\":\"a\\"`)), "null") +
				chunk(calls(args("0", `"\"b\\u00e9\u00e9\\n\"}"`)), "null") +
				chunk(`{}`, `"tool_calls"`) + done,
			want: llm.Response{ToolCalls: []llm.ToolCall{{ID: "c", Name: "say", Arguments: `{"q":"a\"b\u00e9é\n"}`}}, FinishReason: llm.FinishToolCalls, Model: "m"}},
		// A chunk's pieces must not carry over to the next: a one-call delta
		// after a two-call one, then a delta with no calls at all.
		{name: "fewer pieces after more",
			body: chunk(calls(start("0", "c1", "f", `"{\"a\""`), start("1", "c2", "g", `"{\"b\""`)), "null") +
				chunk(calls(args("1", `":2}"`)), "null") +
				chunk(`{"content":""}`, "null") +
				chunk(calls(args("0", `":1}"`)), "null") +
				chunk(`{}`, `"tool_calls"`) + done,
			want: llm.Response{ToolCalls: []llm.ToolCall{{ID: "c1", Name: "f", Arguments: `{"a":1}`}, {ID: "c2", Name: "g", Arguments: `{"b":2}`}},
				FinishReason: llm.FinishToolCalls, Model: "m"}},
		{name: "text, then a call", text: "Checking.",
			body: chunk(`{"role":"assistant","content":"Checking."}`, "null") +
				chunk(calls(start("0", "c", "f", `"{}"`)), "null") +
				chunk(`{}`, `"tool_calls"`) + done,
			want: llm.Response{Text: "Checking.", ToolCalls: []llm.ToolCall{{ID: "c", Name: "f", Arguments: "{}"}}, FinishReason: llm.FinishToolCalls, Model: "m"}},
		{name: "cut short in the arguments", kind: llm.KindRetryable,
			body: chunk(calls(start("0", "call_a", "get_weather", `""`)), "null") +
				chunk(calls(args("0", `"{\"city\":\"Pa"`)), "null"),
			want: llm.Response{ToolCalls: []llm.ToolCall{{ID: "call_a", Name: "get_weather", Arguments: `{"city":"Pa`}}, Model: "m"}},
		{name: "cut short after a whole call", kind: llm.KindRetryable,
			body: chunk(calls(start("0", "call_a", "f", `"{}"`)), "null") +
				chunk(calls(start("1", "call_b", "g", `"{\"x"`)), "null"),
			want: llm.Response{ToolCalls: []llm.ToolCall{{ID: "call_a", Name: "f", Arguments: "{}"}, {ID: "call_b", Name: "g", Arguments: `{"x`}}, Model: "m"}},
		// Older Ollama: each call whole in its own chunk, every one at index 0,
		// and "stop" at the end.
		{name: "whole calls all at index 0",
			body: chunk(`{"role":"assistant","content":"","tool_calls":[`+start("0", "call_x", "f", `"{\"a\":1}"`)+`]}`, "null") +
				chunk(`{"role":"assistant","content":"","tool_calls":[`+start("0", "call_y", "g", `"{\"b\":2}"`)+`]}`, "null") +
				chunk(`{"role":"assistant","content":""}`, `"stop"`) + done,
			want: llm.Response{ToolCalls: []llm.ToolCall{{ID: "call_x", Name: "f", Arguments: `{"a":1}`}, {ID: "call_y", Name: "g", Arguments: `{"b":2}`}},
				FinishReason: llm.FinishToolCalls, Model: "m"}},
		{name: "function_call, deprecated",
			body: chunk(`{"role":"assistant","content":null,"function_call":{"name":"get_current_weather","arguments":""}}`, "null") +
				chunk(`{"function_call":{"arguments":"{\"location\":"}}`, "null") +
				chunk(`{"function_call":{"arguments":"\"Boston\"}"}}`, "null") +
				chunk(`{}`, `"function_call"`) + done,
			want: llm.Response{ToolCalls: []llm.ToolCall{{Name: "get_current_weather", Arguments: `{"location":"Boston"}`}}, FinishReason: llm.FinishToolCalls, Model: "m"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := serve(t, 200, sseHeader(), []byte(tc.body))
			pieces, resp, err := stream(t, New(Options{BaseURL: s.URL}))
			if got := strings.Join(pieces, ""); got != tc.text {
				t.Errorf("emitted %q, want %q", got, tc.text)
			}
			if k := llm.KindOf(err); k != tc.kind {
				t.Errorf("kind %v, want %v (err %v)", k, tc.kind, err)
			}
			if !reflect.DeepEqual(*resp, tc.want) {
				t.Errorf("got  %+v\nwant %+v", *resp, tc.want)
			}
		})
	}
}

// TestStreamEmitErrorKeepsCalls: a caller that stops a stream mid-call still
// learns of the calls begun.
func TestStreamEmitErrorKeepsCalls(t *testing.T) {
	body := `data: {"model":"m","choices":[{"index":0,"delta":{"content":null,"tool_calls":[{"index":0,"id":"c","type":"function","function":{"name":"f","arguments":"{\"a\""}}]},"finish_reason":null}]}` + "\n\n" +
		`data: {"model":"m","choices":[{"index":0,"delta":{"content":"x"},"finish_reason":null}]}` + "\n\n" +
		"data: [DONE]\n\n"
	s, _ := serve(t, 200, sseHeader(), []byte(body))
	stop := errors.New("client went away")
	resp, err := New(Options{BaseURL: s.URL}).Stream(context.Background(), request(), func(string) error { return stop })
	if !errors.Is(err, stop) {
		t.Fatalf("err %v, want the emit error", err)
	}
	want := []llm.ToolCall{{ID: "c", Name: "f", Arguments: `{"a"`}}
	if resp.Text != "x" || !reflect.DeepEqual(resp.ToolCalls, want) {
		t.Errorf("got %+v, want text \"x\" and calls %+v", *resp, want)
	}
}

// TestToolRequestRoundTrip encodes a request with every new field, including an
// image's detail, and reads it back as a server would.
func TestToolRequestRoundTrip(t *testing.T) {
	yes := true
	want := &llm.Request{
		Model: "gpt-5.4",
		Messages: []llm.Message{
			{Role: llm.RoleUser, Parts: []llm.Part{
				{Type: llm.PartText, Text: "Compare:"},
				{Type: llm.PartImage, ImageURL: "https://example.com/a.jpg", Detail: "high"},
				{Type: llm.PartImage, ImageURL: "https://example.com/b.jpg", Detail: "low"},
				{Type: llm.PartImage, ImageURL: "data:image/gif;base64,R0lGODlhAQABAAAAACw="},
			}},
			{Role: llm.RoleAssistant, Content: "Looking.", ToolCalls: []llm.ToolCall{{ID: "call_1", Name: "zoom", Arguments: `{"x": 1}`}}},
			{Role: llm.RoleTool, ToolCallID: "call_1", Content: "zoomed"},
		},
		Temperature:       1,
		MaxTokens:         5,
		Tools:             []llm.Tool{{Name: "zoom", Parameters: []byte(`{"type":"object"}`), Strict: &yes}},
		ToolChoice:        &llm.ToolChoice{Mode: llm.ToolChoiceFunction, Name: "zoom"},
		ParallelToolCalls: &yes,
		ResponseFormat:    &llm.ResponseFormat{Type: llm.FormatJSONSchema, Name: "cmp", Description: "A comparison.", Schema: []byte(`{"type":"object"}`), Strict: &yes},
	}
	buf, err := encode(want, false, false)
	if err != nil {
		t.Fatal(err)
	}
	defer putBuf(buf)
	got, stream, err := decode(buf.Bytes())
	if err != nil || stream {
		t.Fatalf("decode: %v, stream %v\nbody: %s", err, stream, buf.Bytes())
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("read back\n%+v\nwant\n%+v\nbody: %s", got, want, buf.Bytes())
	}
	if !strings.Contains(buf.String(), `{"type":"image_url","image_url":{"url":"https://example.com/a.jpg","detail":"high"}}`) {
		t.Errorf("body %s: the image's detail is not where OpenAI reads it", buf.Bytes())
	}
}

// BenchmarkStreamToolCalls is BenchmarkStream with a reply of two parallel
// calls, for the cost of assembling them.
func BenchmarkStreamToolCalls(b *testing.B) {
	body := load(b, "tool_stream.sse")
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		w.Write(body)
	}))
	defer s.Close()
	p := New(Options{BaseURL: s.URL + "/v1", APIKey: "test-key"})
	req := request()
	ctx := context.Background()
	emit := func(string) error { return nil }
	b.ReportAllocs()
	for b.Loop() {
		if resp, err := p.Stream(ctx, req, emit); err != nil || len(resp.ToolCalls) != 2 {
			b.Fatal(resp, err)
		}
	}
}
