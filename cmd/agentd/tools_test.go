package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/shared"

	"github.com/agentd/agentd/client"
)

// serveTools answers the upstream models gpt-tools (OpenAI's chat completions)
// and claude-tools (Anthropic's Messages), whole or streamed as asked: a
// conversation whose last message carries tool results is answered with
// "Weather: " and the results; any other is answered with a call of
// get_weather for Paris, its arguments streamed in two pieces. n numbers the
// call ids.
func serveTools(w http.ResponseWriter, body map[string]any, anthropic bool, n int) {
	msgs, _ := body["messages"].([]any)
	last, _ := msgs[len(msgs)-1].(map[string]any)
	var results []string
	if anthropic {
		if blocks, ok := last["content"].([]any); ok {
			for _, b := range blocks {
				if b, _ := b.(map[string]any); b["type"] == "tool_result" {
					results = append(results, textOf(b["content"]))
				}
			}
		}
	} else {
		for i := len(msgs) - 1; i >= 0; i-- {
			m, _ := msgs[i].(map[string]any)
			if m["role"] != "tool" {
				break
			}
			results = append([]string{textOf(m["content"])}, results...)
		}
	}
	stream, _ := body["stream"].(bool)
	text := "Weather: " + strings.Join(results, "; ")
	id := fmt.Sprintf("call_%d", n)
	if stream {
		w.Header().Set("Content-Type", "text/event-stream")
	}
	switch {
	case anthropic && !stream && results != nil:
		fmt.Fprintf(w, `{"id":"msg_T","type":"message","role":"assistant","content":[{"type":"text","text":%q}],"model":"claude-tools","stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":60,"output_tokens":9}}`, text)
	case anthropic && !stream:
		fmt.Fprintf(w, `{"id":"msg_T","type":"message","role":"assistant","content":[{"type":"text","text":"Let me look."},{"type":"tool_use","id":%q,"name":"get_weather","input":{"city":"Paris"}}],"model":"claude-tools","stop_reason":"tool_use","stop_sequence":null,"usage":{"input_tokens":50,"output_tokens":20}}`, id)
	case anthropic:
		fmt.Fprint(w, "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_T\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-tools\",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":50,\"output_tokens\":1}}}\n\n")
		if results != nil {
			fmt.Fprint(w, "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n")
			for _, piece := range []string{text[:9], text[9:]} {
				b, _ := json.Marshal(piece)
				fmt.Fprintf(w, "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":%s}}\n\n", b)
			}
			fmt.Fprint(w, "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n")
			fmt.Fprint(w, "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":9}}\n\n")
		} else {
			fmt.Fprintf(w, "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"tool_use\",\"id\":%q,\"name\":\"get_weather\",\"input\":{}}}\n\n", id)
			fmt.Fprint(w, "event: ping\ndata: {\"type\": \"ping\"}\n\n")
			for _, piece := range []string{`{\"city\":`, ` \"Paris\"}`} {
				fmt.Fprintf(w, "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"%s\"}}\n\n", piece)
			}
			fmt.Fprint(w, "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n")
			fmt.Fprint(w, "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":20}}\n\n")
		}
		fmt.Fprint(w, "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n")
	case !stream && results != nil:
		fmt.Fprintf(w, `{"id":"chatcmpl-T","object":"chat.completion","created":1741569952,"model":"gpt-tools","choices":[{"index":0,"message":{"role":"assistant","content":%q,"refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":60,"completion_tokens":9,"total_tokens":69}}`, text)
	case !stream:
		fmt.Fprintf(w, `{"id":"chatcmpl-T","object":"chat.completion","created":1741569952,"model":"gpt-tools","choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":%q,"type":"function","function":{"name":"get_weather","arguments":"{\"city\": \"Paris\"}"}}],"refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":50,"completion_tokens":20,"total_tokens":70}}`, id)
	default:
		chunk := func(delta, finish string) {
			fmt.Fprintf(w, "data: {\"id\":\"chatcmpl-T\",\"object\":\"chat.completion.chunk\",\"created\":1741569952,\"model\":\"gpt-tools\",\"choices\":[{\"index\":0,\"delta\":%s,\"logprobs\":null,\"finish_reason\":%s}],\"usage\":null}\n\n", delta, finish)
		}
		if results != nil {
			chunk(`{"role":"assistant","content":""}`, "null")
			for _, piece := range []string{text[:9], text[9:]} {
				b, _ := json.Marshal(piece)
				chunk(`{"content":`+string(b)+`}`, "null")
			}
			chunk(`{}`, `"stop"`)
		} else {
			chunk(fmt.Sprintf(`{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":%q,"type":"function","function":{"name":"get_weather","arguments":""}}]}`, id), "null")
			chunk(`{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":"}}]}`, "null")
			chunk(`{"tool_calls":[{"index":0,"function":{"arguments":" \"Paris\"}"}}]}`, "null")
			chunk(`{}`, `"tool_calls"`)
		}
		fmt.Fprint(w, "data: {\"id\":\"chatcmpl-T\",\"object\":\"chat.completion.chunk\",\"created\":1741569952,\"model\":\"gpt-tools\",\"choices\":[],\"usage\":{\"prompt_tokens\":50,\"completion_tokens\":20,\"total_tokens\":70}}\n\ndata: [DONE]\n\n")
	}
}

// textOf is a message content's text: a string, or its text blocks joined.
func textOf(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	var b strings.Builder
	blocks, _ := v.([]any)
	for _, x := range blocks {
		if x, _ := x.(map[string]any); x["type"] == "text" {
			b.WriteString(fmt.Sprint(x["text"]))
		}
	}
	return b.String()
}

var weatherTool = openai.ChatCompletionToolUnionParam{OfFunction: &openai.ChatCompletionFunctionToolParam{
	Function: shared.FunctionDefinitionParam{
		Name: "get_weather", Description: openai.String("The weather in a city."),
		Parameters: shared.FunctionParameters{"type": "object", "properties": map[string]any{"city": map[string]any{"type": "string"}}, "required": []string{"city"}},
	},
}}

// TestToolConversation: a two-step tool conversation (the model calls a tool,
// the client sends its result, the model answers) through the official OpenAI
// SDK, whole and streamed, for a catalog model on an OpenAI-compatible server
// and on Anthropic, for an agent with its own tools, and for that agent in a
// session, where agentd remembers the call and the client sends only the
// result. The upstream gets the tools, the call and the result in its API's
// terms; the client gets finish_reason tool_calls with the call as sent.
func TestToolConversation(t *testing.T) {
	u := newUpstream(t, nil)
	cfg := fmt.Sprintf(`
providers:
  - {name: compat, kind: openai, base_url: %[1]s/v1, api_key_env: UPSTREAM_KEY}
  - {name: claude, kind: anthropic, base_url: %[1]s, api_key_env: ANTHROPIC_KEY}
models:
  - {id: gpt-tools, provider: compat, upstream_model: gpt-tools, context_window: 8192, max_output_tokens: 512, price: {input: 1, output: 2}}
  - {id: claude-tools, provider: claude, upstream_model: claude-tools, context_window: 8192, max_output_tokens: 512, price: {input: 1, output: 2}}
`, u.URL)
	s, op := fundedServer(t, cfg, 100)
	ctx := context.Background()
	agentTools := json.RawMessage(`[{"type":"function","function":{"name":"get_weather","description":"The weather in a city.","parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}}]`)
	var created map[string]any
	if err := op.Do(ctx, "POST", "/api/v3/agents/create", nil, map[string]any{
		"agent_name": "weather_bot", "agent_description": "t", "model": "gpt-tools", "max_token": 64,
		"conversation_saving_enabled": true, "tools": agentTools,
	}, &created); err != nil {
		t.Fatal(err)
	}
	oc := newOpenAI(s, s.Key)
	lastBody := func(model string) map[string]any { t.Helper(); return u.lastBody(t, model) }
	wantTools := map[string]string{
		"gpt-tools":    `[{"function":{"description":"The weather in a city.","name":"get_weather","parameters":{"properties":{"city":{"type":"string"}},"required":["city"],"type":"object"}},"type":"function"}]`,
		"claude-tools": `[{"description":"The weather in a city.","input_schema":{"properties":{"city":{"type":"string"}},"required":["city"],"type":"object"},"name":"get_weather"}]`,
	}

	cases := []struct {
		name, model, upstream, session string
		clientTools                    bool
	}{
		{"catalog model", "gpt-tools", "gpt-tools", "", true},
		{"anthropic", "claude-tools", "claude-tools", "", true},
		{"agent with its own tools", "agent/weather_bot", "gpt-tools", "", false},
		{"agent in a session", "agent/weather_bot", "gpt-tools", "weather-1", false},
	}
	for _, tc := range cases {
		for _, stream := range []bool{false, true} {
			name := tc.name
			if stream {
				name += " streamed"
			}
			t.Run(name, func(t *testing.T) {
				var opts []option.RequestOption
				if tc.session != "" {
					opts = append(opts, option.WithHeader("X-Session-ID", fmt.Sprintf("%s-%v", tc.session, stream)))
				}
				ask := func(msgs ...openai.ChatCompletionMessageParamUnion) openai.ChatCompletionMessage {
					t.Helper()
					p := chatParams(tc.model, msgs...)
					if tc.clientTools {
						p.Tools = []openai.ChatCompletionToolUnionParam{weatherTool}
					}
					if !stream {
						c, err := oc.Chat.Completions.New(ctx, p, opts...)
						if err != nil {
							t.Fatal(err)
						}
						if c.Usage.TotalTokens == 0 {
							t.Errorf("no usage: %s", c.RawJSON())
						}
						if len(c.Choices[0].Message.ToolCalls) > 0 && c.Choices[0].FinishReason != "tool_calls" {
							t.Errorf("finish_reason = %q with tool calls, want tool_calls", c.Choices[0].FinishReason)
						}
						return c.Choices[0].Message
					}
					got, err := streamChat(t, oc, p, opts...)
					if err != nil {
						t.Fatal(err)
					}
					if len(got.acc.Choices) != 1 {
						t.Fatalf("stream assembled %d choices", len(got.acc.Choices))
					}
					if calls := got.acc.Choices[0].Message.ToolCalls; len(calls) > 0 && got.acc.Choices[0].FinishReason != "tool_calls" {
						t.Errorf("finish_reason = %q with tool calls, want tool_calls", got.acc.Choices[0].FinishReason)
					}
					return got.acc.Choices[0].Message
				}

				question := openai.UserMessage("What is the weather in Paris?")
				first := ask(question)
				if len(first.ToolCalls) != 1 {
					t.Fatalf("step 1 answered %+v, want one tool call", first)
				}
				call := first.ToolCalls[0]
				if call.Function.Name != "get_weather" || !strings.HasPrefix(call.ID, "call_") && !strings.HasPrefix(call.ID, "toolu_") {
					t.Errorf("tool call = %+v", call)
				}
				var args map[string]any
				if err := json.Unmarshal([]byte(call.Function.Arguments), &args); err != nil || args["city"] != "Paris" {
					t.Errorf("arguments %q, want city Paris", call.Function.Arguments)
				}
				if tc.upstream == "gpt-tools" && call.Function.Arguments != `{"city": "Paris"}` {
					t.Errorf("arguments %q, want them byte for byte as the model sent them", call.Function.Arguments)
				}
				if got := asJSON(lastBody(tc.upstream)["tools"]); got != wantTools[tc.upstream] {
					t.Errorf("upstream tools = %s\nwant %s", got, wantTools[tc.upstream])
				}

				result := openai.ToolMessage("18°C and sunny", call.ID)
				var second openai.ChatCompletionMessage
				if tc.session != "" {
					second = ask(result) // the session holds the question and the call
				} else {
					second = ask(question, first.ToParam(), result)
				}
				if second.Content != "Weather: 18°C and sunny" || len(second.ToolCalls) != 0 {
					t.Errorf("step 2 answered %+v", second)
				}
				body := lastBody(tc.upstream)
				msgs, _ := body["messages"].([]any)
				switch tc.upstream {
				case "gpt-tools":
					wantTail := fmt.Sprintf(`[{"content":"What is the weather in Paris?","role":"user"},{"content":null,"role":"assistant","tool_calls":[{"function":{"arguments":%q,"name":"get_weather"},"id":%q,"type":"function"}]},{"content":"18°C and sunny","role":"tool","tool_call_id":%q}]`,
						call.Function.Arguments, call.ID, call.ID)
					if got := asJSON(msgs[len(msgs)-3:]); got != wantTail {
						t.Errorf("upstream messages end\n%s\nwant\n%s", got, wantTail)
					}
				case "claude-tools":
					if got := asJSON(msgs[len(msgs)-1]); !strings.Contains(got, `"tool_use_id":"`+call.ID+`"`) || !strings.Contains(got, `"type":"tool_result"`) {
						t.Errorf("upstream's last message %s is not the tool result", got)
					}
					if got := asJSON(msgs[len(msgs)-2]); !strings.Contains(got, `"type":"tool_use"`) || !strings.Contains(got, `"input":{"city":"Paris"}`) {
						t.Errorf("upstream's assistant message %s is not the tool call", got)
					}
				}
			})
		}
	}

	t.Run("images and tool settings reach the model", func(t *testing.T) {
		img := openai.UserMessage([]openai.ChatCompletionContentPartUnionParam{
			openai.TextContentPart("Where is this?"),
			openai.ImageContentPart(openai.ChatCompletionContentPartImageImageURLParam{URL: "https://example.com/a.png", Detail: "high"}),
			openai.ImageContentPart(openai.ChatCompletionContentPartImageImageURLParam{URL: "data:image/png;base64,iVBORw0KGgo="}),
		})
		for model, want := range map[string]string{
			"gpt-tools":    `[{"text":"Where is this?","type":"text"},{"image_url":{"detail":"high","url":"https://example.com/a.png"},"type":"image_url"},{"image_url":{"url":"data:image/png;base64,iVBORw0KGgo="},"type":"image_url"}]`,
			"claude-tools": `[{"text":"Where is this?","type":"text"},{"source":{"type":"url","url":"https://example.com/a.png"},"type":"image"},{"source":{"data":"iVBORw0KGgo=","media_type":"image/png","type":"base64"},"type":"image"}]`,
		} {
			p := chatParams(model, img)
			p.Tools = []openai.ChatCompletionToolUnionParam{weatherTool}
			p.ToolChoice = openai.ChatCompletionToolChoiceOptionUnionParam{OfAuto: openai.String("required")}
			p.ParallelToolCalls = openai.Bool(false)
			if _, err := oc.Chat.Completions.New(ctx, p); err != nil {
				t.Fatalf("%s: %v", model, err)
			}
			body := lastBody(model)
			msgs, _ := body["messages"].([]any)
			last, _ := msgs[len(msgs)-1].(map[string]any)
			if got := asJSON(last["content"]); got != want {
				t.Errorf("%s got content %s\nwant %s", model, got, want)
			}
			choice, parallel := asJSON(body["tool_choice"]), asJSON(body["parallel_tool_calls"])
			if model == "gpt-tools" && (choice != `"required"` || parallel != "false") {
				t.Errorf("%s got tool_choice %s, parallel_tool_calls %s", model, choice, parallel)
			}
			if model == "claude-tools" && (choice != `{"disable_parallel_tool_use":true,"type":"any"}` || parallel != "null") {
				t.Errorf("%s got tool_choice %s, parallel_tool_calls %s", model, choice, parallel)
			}
		}
		// A tool choice naming no tool, or asking for a call with none, is the caller's mistake.
		p := chatParams("gpt-tools", openai.UserMessage("hi"))
		p.ToolChoice = openai.ChatCompletionToolChoiceOptionUnionParam{OfAuto: openai.String("required")}
		if e := wantAPIError(t, err2(oc.Chat.Completions.New(ctx, p)), 400, "invalid_request_error", "value_error"); e.Param != "tool_choice" {
			t.Errorf("required without tools: param %q", e.Param)
		}
		p.Tools = []openai.ChatCompletionToolUnionParam{weatherTool}
		p.ToolChoice = openai.ToolChoiceOptionFunctionToolChoice(openai.ChatCompletionNamedToolChoiceFunctionParam{Name: "get_time"})
		if e := wantAPIError(t, err2(oc.Chat.Completions.New(ctx, p)), 400, "invalid_request_error", "value_error"); e.Param != "tool_choice.function.name" {
			t.Errorf("an unknown function: param %q", e.Param)
		}
		// The agent's own tool may not be redefined by the caller.
		p = chatParams("agent/weather_bot", openai.UserMessage("hi"))
		p.Tools = []openai.ChatCompletionToolUnionParam{weatherTool}
		if e := wantAPIError(t, err2(oc.Chat.Completions.New(ctx, p)), 400, "invalid_request_error", "value_error"); e.Param != "tools.[0].function.name" {
			t.Errorf("a tool named like the agent's: param %q", e.Param)
		}
	})

	t.Run("session remembers the call and the result", func(t *testing.T) {
		var page struct {
			Data struct {
				Turns []struct {
					User        string           `json:"user"`
					Assistant   string           `json:"assistant"`
					ToolCalls   []map[string]any `json:"tool_calls"`
					ToolResults []map[string]any `json:"tool_results"`
				} `json:"turns"`
			} `json:"data"`
		}
		if err := op.Do(ctx, "GET", "/api/v3/agents/weather_bot/sessions/weather-1-false", nil, nil, &page); err != nil {
			t.Fatal(err)
		}
		turns := page.Data.Turns
		if len(turns) != 2 || turns[0].User != "What is the weather in Paris?" || len(turns[0].ToolCalls) != 1 ||
			turns[1].User != "" || len(turns[1].ToolResults) != 1 || turns[1].Assistant != "Weather: 18°C and sunny" {
			t.Fatalf("turns = %+v", turns)
		}
		// The session holds the calls: an assistant message with calls of its own
		// would store results for calls the session never made.
		calls := openai.ChatCompletionMessageParamUnion{OfAssistant: &openai.ChatCompletionAssistantMessageParam{
			ToolCalls: []openai.ChatCompletionMessageToolCallUnionParam{{OfFunction: &openai.ChatCompletionMessageFunctionToolCallParam{
				ID: "call_mine", Function: openai.ChatCompletionMessageFunctionToolCallFunctionParam{Name: "get_weather", Arguments: "{}"}}}},
		}}
		p := chatParams("agent/weather_bot", openai.UserMessage("Weather in Lyon?"), calls, openai.ToolMessage("9°C", "call_mine"))
		_, err := oc.Chat.Completions.New(ctx, p, option.WithHeader("X-Session-ID", "weather-1-false"))
		if e := wantAPIError(t, err, 400, "invalid_request_error", "value_error"); e.Param != "messages.[1].tool_calls" {
			t.Errorf("an assistant message with calls in a session: param %q", e.Param)
		}
	})

	t.Run("NuGen run endpoint", func(t *testing.T) {
		c := s.client(s.Key)
		h := http.Header{"X-Session-Id": {"nugen-tools"}}
		var first struct {
			Response  string           `json:"response"`
			ToolCalls []map[string]any `json:"tool_calls"`
			Finish    string           `json:"finish_reason"`
		}
		if err := c.Do(ctx, "POST", "/api/v3/agents/run-agents/weather_bot/run", h, map[string]any{"message": "Weather in Paris?"}, &first); err != nil {
			t.Fatal(err)
		}
		if len(first.ToolCalls) != 1 || first.Finish != "tool_calls" {
			t.Fatalf("run answered %+v, want a tool call", first)
		}
		callID, _ := first.ToolCalls[0]["id"].(string)
		var second struct {
			Response  string           `json:"response"`
			ToolCalls []map[string]any `json:"tool_calls"`
		}
		if err := c.Do(ctx, "POST", "/api/v3/agents/run-agents/weather_bot/run", h,
			map[string]any{"tool_results": []map[string]any{{"tool_call_id": callID, "content": "12°C"}}}, &second); err != nil {
			t.Fatal(err)
		}
		if second.Response != "Weather: 12°C" || second.ToolCalls != nil {
			t.Fatalf("run answered %+v", second)
		}
		// A result for a call the session did not make is the caller's mistake.
		err := c.Do(ctx, "POST", "/api/v3/agents/run-agents/weather_bot/run", h,
			map[string]any{"tool_results": []map[string]any{{"tool_call_id": "call_nope", "content": "x"}}}, nil)
		if ae := (*client.Error)(nil); !errorsAs(err, &ae) || ae.Status != 422 || !strings.Contains(ae.Error(), "call_nope") ||
			!strings.Contains(ae.Detail, `["body","tool_results",0,"tool_call_id"]`) {
			t.Fatalf("a stray tool result: %v, want a 422 naming it at tool_results.0.tool_call_id", err)
		}
	})

	t.Run("agent tools are validated", func(t *testing.T) {
		for _, tc := range []struct{ tools, want string }{
			{`[{"type":"function","function":{"name":"bad name"}}]`, "tools"},
			{`[{"type":"function"}]`, "function"},
			{`{"type":"function"}`, "tools"},
		} {
			err := op.Do(ctx, "PATCH", "/api/v3/agents/weather_bot", nil, map[string]any{"tools": json.RawMessage(tc.tools)}, nil)
			if ae := (*client.Error)(nil); !errorsAs(err, &ae) || ae.Status != 422 || !strings.Contains(ae.Error(), tc.want) {
				t.Errorf("tools %s: %v, want a 422 naming %s", tc.tools, err, tc.want)
			}
		}
		var info struct {
			Data map[string]any `json:"data"`
		}
		if err := op.Do(ctx, "GET", "/api/v3/agents/weather_bot", nil, nil, &info); err != nil {
			t.Fatal(err)
		}
		var stored any
		json.Unmarshal(agentTools, &stored)
		if got, want := asJSON(info.Data["tools"]), asJSON(stored); got != want {
			t.Errorf("stored tools = %s, want %s", got, want)
		}
		if info.Data["response_format"] != nil {
			t.Errorf("response_format = %v, want null", info.Data["response_format"])
		}
		// An agent on the offline model cannot take tools: refused when stored.
		err := op.Do(ctx, "POST", "/api/v3/agents/create", nil, map[string]any{
			"agent_name": "offline_tools", "agent_description": "t", "model": "offline", "tools": agentTools,
		}, nil)
		if ae := (*client.Error)(nil); !errorsAs(err, &ae) || ae.Status != 422 || !strings.Contains(ae.Error(), "offline") {
			t.Errorf("tools on an offline agent: %v, want a 422 naming the provider", err)
		}
	})
}
