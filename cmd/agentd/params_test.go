package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/shared"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/client"
)

// fundedServer is a server on cfg (with providerEnv's keys) whose default
// organization holds credits, and its operator client.
func fundedServer(t *testing.T, cfg string, credits float64) (*testServer, *client.Client) {
	t.Helper()
	s := startServer(t, cfg, providerEnv)
	op := s.client(s.Key)
	if _, err := op.GrantCredits(context.Background(), agentd.DefaultOrgName, credits); err != nil {
		t.Fatal(err)
	}
	return s, op
}

// TestParamsReachTheModel: every parameter an OpenAI SDK sends reaches the model,
// or the request is refused with a 400 that names it and the provider. An
// OpenAI-compatible upstream gets each as sent, unknown fields included, whole
// and streamed, for a catalog model and an agent; an Anthropic one gets what its
// API calls them; a provider with drop_params drops what it cannot take.
func TestParamsReachTheModel(t *testing.T) {
	u := newUpstream(t, nil)
	cfg := fmt.Sprintf(`
providers:
  - {name: compat, kind: openai, base_url: %[1]s/v1, api_key_env: UPSTREAM_KEY}
  - {name: claude, kind: anthropic, base_url: %[1]s, api_key_env: ANTHROPIC_KEY}
  - {name: lenient, kind: anthropic, base_url: %[1]s, api_key_env: ANTHROPIC_KEY, drop_params: true}
models:
  - {id: gpt-test, provider: compat, upstream_model: gpt-params, context_window: 8192, max_output_tokens: 512, price: {input: 1, output: 1}}
  - {id: claude-test, provider: claude, upstream_model: claude-params, context_window: 8192, max_output_tokens: 512, price: {input: 1, output: 1}}
  - {id: claude-lenient, provider: lenient, upstream_model: claude-lenient, context_window: 8192, max_output_tokens: 512, price: {input: 1, output: 1}}
  - {id: claude-json, provider: claude, upstream_model: claude-json, context_window: 8192, max_output_tokens: 512, price: {input: 1, output: 1}}
  - {id: gpt-falls, provider: compat, upstream_model: gpt-falls, context_window: 8192, max_output_tokens: 512, price: {input: 1, output: 1}, fallbacks: [claude-test]}
`, u.URL)
	s, op := fundedServer(t, cfg, 100)
	ctx := context.Background()
	if _, err := op.CreateAgent(ctx, client.AgentSpec{Name: client.Ptr("params_bot"), Description: client.Ptr("t"),
		Model: client.Ptr("gpt-test"), MaxToken: client.Ptr(64)}); err != nil {
		t.Fatal(err)
	}
	oc := newOpenAI(s, s.Key)
	lastBody := func(model string) map[string]any { t.Helper(); return u.lastBody(t, model) }

	// Every parameter of OpenAI's API that agentd does not take itself, through
	// the SDK's own fields, and one it does not know (extra fields).
	params := func(model string) openai.ChatCompletionNewParams {
		p := chatParams(model, openai.UserMessage("hi"))
		p.Stop = openai.ChatCompletionNewParamsStopUnion{OfStringArray: []string{"\n\n", "END"}}
		p.Seed = openai.Int(42)
		p.TopP = openai.Float(0.5)
		p.FrequencyPenalty = openai.Float(0.25)
		p.PresencePenalty = openai.Float(-0.5)
		p.LogitBias = map[string]int64{"50256": -100}
		p.Logprobs = openai.Bool(true)
		p.TopLogprobs = openai.Int(3)
		p.User = openai.String("end-user-7")
		p.Metadata = shared.Metadata{"team": "search"}
		p.Store = openai.Bool(false)
		p.ServiceTier = openai.ChatCompletionNewParamsServiceTierFlex
		p.ReasoningEffort = shared.ReasoningEffortLow
		p.SetExtraFields(map[string]any{"prediction_hint": map[string]any{"k": []int{1, 2}}})
		return p
	}
	want := map[string]string{
		"stop": `["\n\n","END"]`, "seed": `42`, "top_p": `0.5`, "frequency_penalty": `0.25`, "presence_penalty": `-0.5`,
		"logit_bias": `{"50256":-100}`, "logprobs": `true`, "top_logprobs": `3`, "user": `"end-user-7"`,
		"metadata": `{"team":"search"}`, "store": `false`, "service_tier": `"flex"`, "reasoning_effort": `"low"`,
		"prediction_hint": `{"k":[1,2]}`,
	}
	for _, tc := range []struct{ name, model string }{{"catalog model", "gpt-test"}, {"agent", "agent/params_bot"}} {
		for _, stream := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s stream=%v", tc.name, stream), func(t *testing.T) {
				if stream {
					if _, err := streamChat(t, oc, params(tc.model)); err != nil {
						t.Fatal(err)
					}
				} else if _, err := oc.Chat.Completions.New(ctx, params(tc.model)); err != nil {
					t.Fatal(err)
				}
				body := lastBody("gpt-params")
				for name, w := range want {
					if got := asJSON(body[name]); got != w {
						t.Errorf("upstream got %s = %s, want %s", name, got, w)
					}
				}
				if stream && body["stream"] != true {
					t.Errorf("stream = %v, want true", body["stream"])
				}
			})
		}
	}

	t.Run("anthropic translates what it can take", func(t *testing.T) {
		p := chatParams("claude-test", openai.UserMessage("hi"))
		p.Stop = openai.ChatCompletionNewParamsStopUnion{OfString: openai.String("END")}
		p.TopP = openai.Float(0.5)
		p.User = openai.String("end-user-7")
		if _, err := oc.Chat.Completions.New(ctx, p); err != nil {
			t.Fatal(err)
		}
		body := lastBody("claude-params")
		if got := asJSON([]any{body["stop_sequences"], body["top_p"], body["metadata"], body["stop"], body["user"]}); got != `[["END"],0.5,{"user_id":"end-user-7"},null,null]` {
			t.Errorf("anthropic upstream got stop_sequences, top_p, metadata, stop, user = %s", got)
		}
	})

	t.Run("a parameter a provider cannot take is a 400 naming both", func(t *testing.T) {
		before := u.count("claude-params") + u.count("gpt-falls")
		for _, tc := range []struct {
			model, says string
		}{
			{"claude-test", `parameter "seed" is not supported by anthropic models (model claude-test, provider claude)`},
			{"gpt-falls", `parameter "seed" is not supported by anthropic models (model claude-test, provider claude, a fallback of gpt-falls)`},
		} {
			p := chatParams(tc.model, openai.UserMessage("hi"))
			p.Seed = openai.Int(42)
			_, err := oc.Chat.Completions.New(ctx, p)
			e := wantAPIError(t, err, 400, "invalid_request_error", "unsupported_parameter")
			if e.Param != "seed" || !strings.Contains(e.Message, tc.says) {
				t.Errorf("%s: param %q, message %q; want seed, %q", tc.model, e.Param, e.Message, tc.says)
			}
		}
		p := chatParams("claude-test", openai.UserMessage("hi"))
		p.TopP = openai.Float(7)
		_, err := oc.Chat.Completions.New(ctx, p)
		if e := wantAPIError(t, err, 400, "invalid_request_error", "unsupported_parameter"); e.Param != "top_p" || !strings.Contains(e.Message, "between 0 and 1") {
			t.Errorf("top_p 7: %q %q", e.Param, e.Message)
		}
		if after := u.count("claude-params") + u.count("gpt-falls"); after != before {
			t.Errorf("refused requests reached the upstream: %d calls, want %d", after, before)
		}
	})

	t.Run("drop_params drops what the provider cannot take", func(t *testing.T) {
		p := chatParams("claude-lenient", openai.UserMessage("hi"))
		p.Seed = openai.Int(42)
		p.TopP = openai.Float(0.5)
		if _, err := oc.Chat.Completions.New(ctx, p); err != nil {
			t.Fatal(err)
		}
		body := lastBody("claude-lenient")
		if _, ok := body["seed"]; ok || body["top_p"] != 0.5 {
			t.Errorf("lenient upstream got %s", asJSON(body))
		}
	})

	t.Run("structured output", func(t *testing.T) {
		format := func(model string) openai.ChatCompletionNewParams {
			p := chatParams(model, openai.UserMessage("hi"))
			p.ResponseFormat = openai.ChatCompletionNewParamsResponseFormatUnion{OfJSONSchema: &shared.ResponseFormatJSONSchemaParam{
				JSONSchema: shared.ResponseFormatJSONSchemaJSONSchemaParam{Name: "answer", Strict: openai.Bool(true),
					Schema: map[string]any{"type": "object", "properties": map[string]any{"n": map[string]any{"type": "integer"}}}}}}
			return p
		}
		if _, err := oc.Chat.Completions.New(ctx, format("gpt-test")); err != nil {
			t.Fatal(err)
		}
		if got := asJSON(lastBody("gpt-params")["response_format"]); got != `{"json_schema":{"name":"answer","schema":{"properties":{"n":{"type":"integer"}},"type":"object"},"strict":true},"type":"json_schema"}` {
			t.Errorf("openai upstream got response_format %s", got)
		}
		// Anthropic has no response_format: a forced tool whose input schema is
		// the schema, its input the reply.
		c, err := oc.Chat.Completions.New(ctx, format("claude-json"))
		if err != nil {
			t.Fatal(err)
		}
		if c.Choices[0].Message.Content != `{"n":4}` || c.Choices[0].FinishReason != "stop" || len(c.Choices[0].Message.ToolCalls) != 0 {
			t.Errorf("claude answered %s", c.RawJSON())
		}
		body := lastBody("claude-json")
		if got := asJSON(body["tools"]); got != `[{"input_schema":{"properties":{"n":{"type":"integer"}},"type":"object"},"name":"answer","strict":true}]` {
			t.Errorf("anthropic upstream got tools %s", got)
		}
		if got := asJSON(body["tool_choice"]); got != `{"disable_parallel_tool_use":true,"name":"answer","type":"tool"}` {
			t.Errorf("anthropic upstream got tool_choice %s", got)
		}
		// With tools of its own as well, it cannot: refused by name.
		both := format("claude-test")
		both.Tools = []openai.ChatCompletionToolUnionParam{weatherTool}
		if e := wantAPIError(t, err2(oc.Chat.Completions.New(ctx, both)), 400, "invalid_request_error", "unsupported_parameter"); e.Param != "response_format" || !strings.Contains(e.Message, "provider claude") {
			t.Errorf("response_format with tools on anthropic: %q %q", e.Param, e.Message)
		}
		says := `parameter "response_format": the offline model answers from demonstrations and cannot promise JSON`
		if e := wantAPIError(t, err2(oc.Chat.Completions.New(ctx, format("offline"))), 400, "invalid_request_error", "unsupported_parameter"); e.Param != "response_format" || !strings.Contains(e.Message, says) {
			t.Errorf("offline: %q %q, want %q", e.Param, e.Message, says)
		}
		// Plain text is what every model gives: asked for, it is not passed on.
		p := chatParams("claude-test", openai.UserMessage("hi"))
		p.ResponseFormat = openai.ChatCompletionNewParamsResponseFormatUnion{OfText: &shared.ResponseFormatTextParam{}}
		if _, err := oc.Chat.Completions.New(ctx, p); err != nil {
			t.Errorf("text response_format on anthropic: %v", err)
		}
	})

	t.Run("the offline model refuses log probabilities", func(t *testing.T) {
		p := chatParams("offline", openai.UserMessage("hi"))
		p.Logprobs = openai.Bool(true)
		_, err := oc.Chat.Completions.New(ctx, p)
		if e := wantAPIError(t, err, 400, "invalid_request_error", "unsupported_parameter"); e.Param != "logprobs" {
			t.Errorf("param %q", e.Param)
		}
		p = chatParams("offline", openai.UserMessage("hi"))
		p.Seed, p.User = openai.Int(1), openai.String("u")
		if _, err := oc.Chat.Completions.New(ctx, p, option.WithHeader("X-Test", "1")); err != nil {
			t.Errorf("seed and user on the offline model: %v", err)
		}
	})
}

// TestCompletions: text completions through the chat path, with the official SDK:
// the prompt is the user message the upstream gets (after an agent's fixed part),
// the reply comes back as text_completion, whole and streamed, at /v1 and at
// NuGen's inference path; what a chat cannot do is refused by name.
func TestCompletions(t *testing.T) {
	u := newUpstream(t, nil)
	cfg := fmt.Sprintf(`
providers:
  - {name: compat, kind: openai, base_url: %[1]s/v1, api_key_env: UPSTREAM_KEY}
models:
  - {id: gpt-test, provider: compat, upstream_model: gpt-complete, context_window: 8192, max_output_tokens: 512, price: {input: 1, output: 1}}
`, u.URL)
	s, op := fundedServer(t, cfg, 100)
	ctx := context.Background()
	if _, err := op.CreateAgent(ctx, client.AgentSpec{Name: client.Ptr("writer"), Description: client.Ptr("t"),
		Model: client.Ptr("gpt-test"), MaxToken: client.Ptr(64), Instructions: client.Ptr("Write tersely.")}); err != nil {
		t.Fatal(err)
	}
	oc := newOpenAI(s, s.Key)
	last := func() map[string]any {
		u.mu.Lock()
		defer u.mu.Unlock()
		b := u.bodies["gpt-complete"]
		return b[len(b)-1]
	}
	asJSON := func(v any) string { b, _ := json.Marshal(v); return string(b) }

	res, err := oc.Completions.New(ctx, openai.CompletionNewParams{Model: "gpt-test",
		Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("Once upon a time")}, TopP: openai.Float(0.5)})
	if err != nil {
		t.Fatal(err)
	}
	if res.Object != "text_completion" || len(res.Choices) != 1 || res.Choices[0].Text != "Upstream says hi (gpt-complete)" ||
		res.Choices[0].FinishReason != "stop" || res.Usage.PromptTokens != 42 || res.Usage.CompletionTokens != 8 || !strings.HasPrefix(res.ID, "cmpl-run-") {
		t.Errorf("completion %s", res.RawJSON())
	}
	body := last()
	if got := asJSON([]any{body["messages"], body["max_tokens"], body["top_p"]}); got != `[[{"content":"Once upon a time","role":"user"}],16,0.5]` {
		t.Errorf("upstream got messages, max_tokens, top_p = %s", got)
	}

	// An agent: its fixed part first; its own reply limit.
	if _, err := oc.Completions.New(ctx, openai.CompletionNewParams{Model: "agent/writer",
		Prompt: openai.CompletionNewParamsPromptUnion{OfArrayOfStrings: []string{"a haiku"}}}); err != nil {
		t.Fatal(err)
	}
	body = last()
	if got := asJSON([]any{body["messages"], body["max_tokens"]}); got != `[[{"content":"Write tersely.","role":"system"},{"content":"a haiku","role":"user"}],64]` {
		t.Errorf("agent completion: upstream got %s", got)
	}

	// Streamed: text pieces, then the finish reason, then the usage.
	stream := oc.Completions.NewStreaming(ctx, openai.CompletionNewParams{Model: "gpt-test",
		Prompt:        openai.CompletionNewParamsPromptUnion{OfString: openai.String("Once")},
		StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}})
	var text, finish string
	var usage openai.CompletionUsage
	for stream.Next() {
		ch := stream.Current()
		if ch.Object != "text_completion" {
			t.Errorf("chunk %s", ch.RawJSON())
		}
		for _, c := range ch.Choices {
			text += c.Text
			if c.FinishReason != "" {
				finish = string(c.FinishReason)
			}
		}
		if ch.Usage.TotalTokens > 0 {
			usage = ch.Usage
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if text != "Upstream says hi (gpt-complete)" || finish != "stop" || usage.TotalTokens == 0 {
		t.Errorf("stream: %q, finish %q, usage %+v", text, finish, usage)
	}

	// NuGen's path answers the same.
	status, _, raw := rawCall(t, "POST", s.URL+"/api/v3/inference/completions", s.Key, nil, `{"model":"gpt-test","prompt":"hi","max_tokens":5}`)
	if status != 200 || jsonField(string(raw), "object") != "text_completion" || !strings.Contains(string(raw), `"text":"Upstream says hi (gpt-complete)"`) {
		t.Errorf("NuGen completions: %d %s", status, raw)
	}

	for _, tc := range []struct{ body, param string }{
		{`{"model":"gpt-test","prompt":["a","b"]}`, "prompt"},
		{`{"model":"gpt-test","prompt":[[1,2,3]]}`, "prompt.[0]"},
		{`{"model":"gpt-test"}`, "prompt"},
		{`{"model":"gpt-test","prompt":"x","n":2}`, "n"},
		{`{"model":"gpt-test","prompt":"x","echo":true}`, "echo"},
		{`{"model":"gpt-test","prompt":"x","suffix":"y"}`, "suffix"},
		{`{"model":"gpt-test","prompt":"x","logprobs":2}`, "logprobs"},
		{`{"model":"gpt-test","prompt":"x","max_tokens":0}`, "max_tokens"},
	} {
		status, _, raw := rawCall(t, "POST", s.URL+"/v1/completions", s.Key, nil, tc.body)
		var e struct{ Error struct{ Param *string } }
		json.Unmarshal(raw, &e)
		if status != 400 || e.Error.Param == nil || *e.Error.Param != tc.param {
			t.Errorf("%s: %d %s, want 400 naming %s", tc.body, status, raw, tc.param)
		}
	}
}

// TestSeveralChoices: n reaches an OpenAI-compatible upstream; every choice comes
// back in order and is held for and billed (the provider's usage covers them
// all); a session remembers the first; providers that give one answer refuse n
// by name, and so does a stream.
func TestSeveralChoices(t *testing.T) {
	u := newUpstream(t, nil)
	cfg := fmt.Sprintf(`
providers:
  - {name: compat, kind: openai, base_url: %[1]s/v1, api_key_env: UPSTREAM_KEY}
  - {name: claude, kind: anthropic, base_url: %[1]s, api_key_env: ANTHROPIC_KEY}
models:
  - {id: gpt-n, provider: compat, upstream_model: gpt-n, context_window: 8192, max_output_tokens: 512, price: {input: 1000, output: 1000}}
  - {id: claude-test, provider: claude, upstream_model: claude-n, context_window: 8192, max_output_tokens: 512, price: {input: 1, output: 1}}
`, u.URL)
	s, op := fundedServer(t, cfg, 100)
	ctx := context.Background()
	if _, err := op.CreateAgent(ctx, client.AgentSpec{Name: client.Ptr("chooser"), Description: client.Ptr("t"),
		Model: client.Ptr("gpt-n"), MaxToken: client.Ptr(64), ConversationSavingEnabled: client.Ptr(true)}); err != nil {
		t.Fatal(err)
	}
	oc := newOpenAI(s, s.Key)
	p := chatParams("agent/chooser", openai.UserMessage("pick"))
	p.N = openai.Int(3)
	res, err := oc.Chat.Completions.New(ctx, p, option.WithHeader("X-Session-ID", "n-1"))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for i, c := range res.Choices {
		if c.Index != int64(i) || c.FinishReason != "stop" {
			t.Errorf("choice %d: %s", i, c.RawJSON())
		}
		got = append(got, c.Message.Content)
	}
	if strings.Join(got, "|") != "choice 0|choice 1|choice 2" || res.Usage.CompletionTokens != 15 {
		t.Errorf("choices %q, usage %s", got, res.Usage.RawJSON())
	}
	u.mu.Lock()
	sent := u.bodies["gpt-n"][0]["n"]
	u.mu.Unlock()
	if sent != 3.0 {
		t.Errorf("upstream got n = %v", sent)
	}
	page, err := op.UsageRecords(ctx, client.UsageFilter{Model: "gpt-n"})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Data) != 1 || page.Data[0].OutputTokens != 15 || page.Data[0].Cost != 0.035 { // (20 + 15) × 1000 / 1e6
		t.Errorf("ledger %+v", page.Data)
	}
	sess, err := op.Session(ctx, "chooser", "n-1", "", 10)
	if err != nil || len(sess.Turns) != 1 || sess.Turns[0].Assistant != "choice 0" {
		t.Errorf("session %+v, %v: want the first choice remembered", sess, err)
	}

	for _, tc := range []struct{ model, says string }{
		{"claude-test", `parameter "n" is not supported by anthropic models`},
		{"offline", `parameter "n": the offline model gives one answer`},
	} {
		p := chatParams(tc.model, openai.UserMessage("pick"))
		p.N = openai.Int(2)
		_, err := oc.Chat.Completions.New(ctx, p)
		if e := wantAPIError(t, err, 400, "invalid_request_error", "unsupported_parameter"); e.Param != "n" || !strings.Contains(e.Message, tc.says) {
			t.Errorf("%s: %q %q", tc.model, e.Param, e.Message)
		}
	}
	p = chatParams("gpt-n", openai.UserMessage("pick"))
	p.N = openai.Int(2)
	_, err = streamChat(t, oc, p)
	if e := wantAPIError(t, err, 400, "invalid_request_error", "unsupported_value"); e.Param != "n" || !strings.Contains(e.Message, "n > 1 is not supported with stream") {
		t.Errorf("streamed n = 2: %q %q", e.Param, e.Message)
	}
}
