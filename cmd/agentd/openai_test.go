package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/client"
)

// chatUpstream is an OpenAI-compatible server that answers every chat completion
// with "Hello from upstream" and the same usage whole or streamed (in three
// pieces, with usage last when asked). Model "breaks-model" streams one piece and
// then drops the connection.
type chatUpstream struct {
	*httptest.Server
	mu     sync.Mutex
	bodies []map[string]any
}

const (
	upstreamReply                     = "Hello from upstream"
	upstreamPrompt, upstreamCompleted = 21, 5
)

func newChatUpstream(t *testing.T) *chatUpstream {
	u := &chatUpstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(u.serve))
	t.Cleanup(u.Close)
	return u
}

func (u *chatUpstream) serve(w http.ResponseWriter, r *http.Request) {
	var body map[string]any
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		http.Error(w, err.Error(), 400)
		return
	}
	u.mu.Lock()
	u.bodies = append(u.bodies, body)
	u.mu.Unlock()
	model, _ := body["model"].(string)
	usage := fmt.Sprintf(`{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d}`, upstreamPrompt, upstreamCompleted, upstreamPrompt+upstreamCompleted)
	if stream, _ := body["stream"].(bool); !stream {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id":"chatcmpl-up","object":"chat.completion","created":1741569952,"model":%q,"choices":[{"index":0,"message":{"role":"assistant","content":%q},"finish_reason":"stop"}],"usage":%s}`, model, upstreamReply, usage)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	chunk := func(choices, usage string) {
		fmt.Fprintf(w, "data: {\"id\":\"chatcmpl-up\",\"object\":\"chat.completion.chunk\",\"created\":1741569952,\"model\":%q,\"choices\":%s,\"usage\":%s}\n\n", model, choices, usage)
		w.(http.Flusher).Flush()
	}
	chunk(`[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]`, "null")
	for i, p := range []string{"Hello", " from", " upstream"} {
		if i == 1 && model == "breaks-model" {
			if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
				conn.Close()
			}
			return
		}
		chunk(fmt.Sprintf(`[{"index":0,"delta":{"content":%q},"finish_reason":null}]`, p), "null")
	}
	chunk(`[{"index":0,"delta":{},"finish_reason":"stop"}]`, "null")
	if opts, _ := body["stream_options"].(map[string]any); opts["include_usage"] == true {
		chunk(`[]`, usage)
	}
	fmt.Fprint(w, "data: [DONE]\n\n")
}

func (u *chatUpstream) last() map[string]any {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.bodies[len(u.bodies)-1]
}

func (u *chatUpstream) count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.bodies)
}

// openAIServer is agentd with a priced catalog model on u, agent support_bot on
// the offline model, and 100 credits in organization default.
func openAIServer(t *testing.T, u *chatUpstream) *testServer {
	t.Helper()
	s := startServer(t, fmt.Sprintf(`
providers:
  - {name: up, kind: openai, base_url: %s/v1, api_key_env: UPSTREAM_KEY, max_retries: 0}
models:
  - {id: gpt-test, provider: up, upstream_model: gpt-4o-mini, context_window: 128000, max_output_tokens: 16384, price: {input: 150, output: 600}}
  - {id: breaks, provider: up, upstream_model: breaks-model, context_window: 128000, max_output_tokens: 1024, price: {input: 150, output: 600}}
`, u.URL), map[string]string{"UPSTREAM_KEY": "sk-upstream"})
	op := s.client(s.Key)
	ctx := context.Background()
	if _, err := op.GrantCredits(ctx, agentd.DefaultOrgName, 100); err != nil {
		t.Fatal(err)
	}
	if _, err := op.CreateAgent(ctx, supportBot()); err != nil {
		t.Fatal(err)
	}
	return s
}

// newOpenAI is the official OpenAI Go SDK pointed at s.
func newOpenAI(s *testServer, key string, opts ...option.RequestOption) openai.Client {
	return openai.NewClient(append([]option.RequestOption{
		option.WithBaseURL(s.URL + "/v1/"), option.WithAPIKey(key), option.WithMaxRetries(0),
	}, opts...)...)
}

func chatParams(model string, msgs ...openai.ChatCompletionMessageParamUnion) openai.ChatCompletionNewParams {
	return openai.ChatCompletionNewParams{Model: model, Messages: msgs}
}

// streamed is what a streamed completion delivered: the accumulated completion,
// its content pieces, and agentd's extension from the last chunks.
type streamed struct {
	acc    openai.ChatCompletionAccumulator
	pieces []string
	ids    map[string]bool
	ext    agentdExtension
}

type agentdExtension struct {
	RunID       string  `json:"run_id"`
	Model       string  `json:"model"`
	UsageSource string  `json:"usage_source"`
	SessionID   *string `json:"session_id"`
}

func streamChat(t *testing.T, oc openai.Client, p openai.ChatCompletionNewParams, opts ...option.RequestOption) (*streamed, error) {
	t.Helper()
	stream := oc.Chat.Completions.NewStreaming(context.Background(), p, opts...)
	defer stream.Close()
	out := &streamed{ids: map[string]bool{}}
	for stream.Next() {
		ch := stream.Current()
		if !out.acc.AddChunk(ch) {
			t.Fatalf("accumulator refused chunk %s", ch.RawJSON())
		}
		out.ids[ch.ID] = true
		if len(ch.Choices) > 0 && ch.Choices[0].Delta.Content != "" {
			out.pieces = append(out.pieces, ch.Choices[0].Delta.Content)
		}
		if x, ok := ch.JSON.ExtraFields["agentd"]; ok && x.Raw() != "null" {
			if err := json.Unmarshal([]byte(x.Raw()), &out.ext); err != nil {
				t.Fatal(err)
			}
		}
	}
	return out, stream.Err()
}

func extensionOf(t *testing.T, c *openai.ChatCompletion) agentdExtension {
	t.Helper()
	var x agentdExtension
	if err := json.Unmarshal([]byte(c.JSON.ExtraFields["agentd"].Raw()), &x); err != nil {
		t.Fatalf("agentd extension of %s: %v", c.RawJSON(), err)
	}
	return x
}

func ledgerRow(t *testing.T, s *testServer, runID string) agentd.LedgerRow {
	t.Helper()
	rows, _ := ledger(t, s)
	for _, r := range rows {
		if r.RunID == runID {
			return r
		}
	}
	t.Fatalf("no ledger row for run %q", runID)
	return agentd.LedgerRow{}
}

func ledgerRows(t *testing.T, s *testServer, runID string) int {
	rows, _ := ledger(t, s)
	n := 0
	for _, r := range rows {
		if r.RunID == runID {
			n++
		}
	}
	return n
}

func wantAPIError(t *testing.T, err error, status int, typ, code string) *openai.Error {
	t.Helper()
	var e *openai.Error
	if !errors.As(err, &e) {
		t.Fatalf("err = %v, want an *openai.Error %d", err, status)
	}
	if e.StatusCode != status || e.Type != typ || (code != "" && e.Code != code) || e.Message == "" {
		t.Fatalf("error %d type %q code %q message %q, want %d %q %q: %s", e.StatusCode, e.Type, e.Code, e.Message, status, typ, code, e.RawJSON())
	}
	return e
}

// TestOpenAICompatible drives the OpenAI-compatible API with the official OpenAI Go
// SDK: catalog models and agents, whole and streamed, sessions, usage against the
// ledger, models, errors, the NuGen path and Idempotency-Key.
func TestOpenAICompatible(t *testing.T) {
	u := newChatUpstream(t)
	s := openAIServer(t, u)
	ctx := context.Background()
	oc := newOpenAI(s, s.Key)
	const answer = "Use Settings, then Reset password."

	t.Run("catalog model", func(t *testing.T) {
		resp, err := oc.Chat.Completions.New(ctx, chatParams("gpt-test", openai.SystemMessage("Be brief."), openai.UserMessage("hello")))
		if err != nil {
			t.Fatal(err)
		}
		if resp.Object != "chat.completion" || resp.Model != "gpt-test" || !strings.HasPrefix(resp.ID, "chatcmpl-run-") || resp.Created == 0 {
			t.Errorf("completion %s", resp.RawJSON())
		}
		if len(resp.Choices) != 1 || resp.Choices[0].Message.Content != upstreamReply || resp.Choices[0].FinishReason != "stop" || resp.Choices[0].Message.Role != "assistant" {
			t.Fatalf("choices %+v", resp.Choices)
		}
		if resp.Usage.PromptTokens != upstreamPrompt || resp.Usage.CompletionTokens != upstreamCompleted || resp.Usage.TotalTokens != upstreamPrompt+upstreamCompleted {
			t.Errorf("usage %+v", resp.Usage)
		}
		// The caller's messages went upstream as they were, to the upstream model.
		body := u.last()
		msgs, _ := json.Marshal(body["messages"])
		if body["model"] != "gpt-4o-mini" || string(msgs) != `[{"content":"Be brief.","role":"system"},{"content":"hello","role":"user"}]` {
			t.Errorf("upstream got model %v messages %s", body["model"], msgs)
		}
		x := extensionOf(t, resp)
		if "chatcmpl-"+x.RunID != resp.ID || x.Model != "gpt-test" || x.UsageSource != "provider" || x.SessionID != nil {
			t.Errorf("extension %+v", x)
		}
		// Usage is the ledger's, and the charge is tokens × price (150 and 600
		// credits per million tokens: micro-credits per token).
		row := ledgerRow(t, s, x.RunID)
		if int64(row.InputTokens) != resp.Usage.PromptTokens || int64(row.OutputTokens) != resp.Usage.CompletionTokens || row.AgentID != "" || row.ModelRequested != "gpt-test" {
			t.Errorf("ledger row %+v, response usage %+v", row, resp.Usage)
		}
		if want := resp.Usage.PromptTokens*150 + resp.Usage.CompletionTokens*600; int64(row.Cost) != want {
			t.Errorf("cost %d micro-credits, want %d", row.Cost, want)
		}

		// The same input streamed: pieces as they come, the same text and usage.
		p := chatParams("gpt-test", openai.SystemMessage("Be brief."), openai.UserMessage("hello"))
		p.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
		st, err := streamChat(t, oc, p)
		if err != nil {
			t.Fatal(err)
		}
		if got := st.acc.Choices[0].Message.Content; got != upstreamReply || len(st.pieces) != 3 || st.acc.Choices[0].FinishReason != "stop" {
			t.Errorf("streamed %q in %q, finish %q", got, st.pieces, st.acc.Choices[0].FinishReason)
		}
		if st.acc.Usage.PromptTokens != resp.Usage.PromptTokens || st.acc.Usage.CompletionTokens != resp.Usage.CompletionTokens || st.acc.Usage.TotalTokens != resp.Usage.TotalTokens {
			t.Errorf("streamed usage %+v, whole %+v", st.acc.Usage, resp.Usage)
		}
		if len(st.ids) != 1 || st.acc.Model != "gpt-test" || st.ext.RunID == "" {
			t.Errorf("chunk ids %v, model %q, extension %+v", st.ids, st.acc.Model, st.ext)
		}
		if row := ledgerRow(t, s, st.ext.RunID); int64(row.InputTokens) != st.acc.Usage.PromptTokens || int64(row.OutputTokens) != st.acc.Usage.CompletionTokens {
			t.Errorf("streamed ledger row %+v, usage %+v", row, st.acc.Usage)
		}
		if body := u.last(); body["stream"] != true {
			t.Errorf("upstream was not asked to stream: %v", body)
		}

		// Without include_usage the stream has no usage chunk.
		st, err = streamChat(t, oc, chatParams("gpt-test", openai.UserMessage("hello")))
		if err != nil {
			t.Fatal(err)
		}
		if st.acc.Usage.TotalTokens != 0 || st.acc.Choices[0].Message.Content != upstreamReply {
			t.Errorf("stream without include_usage: usage %+v, content %q", st.acc.Usage, st.acc.Choices[0].Message.Content)
		}
	})

	t.Run("agent", func(t *testing.T) {
		resp, err := oc.Chat.Completions.New(ctx, chatParams("agent/support_bot", openai.UserMessage("how do i reset my password")))
		if err != nil {
			t.Fatal(err)
		}
		if resp.Choices[0].Message.Content != answer || resp.Model != "agent/support_bot" {
			t.Errorf("reply %q from %q", resp.Choices[0].Message.Content, resp.Model)
		}
		x := extensionOf(t, resp)
		row := ledgerRow(t, s, x.RunID)
		if x.Model != "offline" || row.AgentName != "support_bot" || int64(row.InputTokens) != resp.Usage.PromptTokens ||
			int64(row.OutputTokens) != resp.Usage.CompletionTokens || row.Cost != 0 {
			t.Errorf("extension %+v, ledger row %+v, usage %+v", x, row, resp.Usage)
		}
		p := chatParams("agent/support_bot", openai.UserMessage("how do i reset my password"))
		p.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
		st, err := streamChat(t, oc, p)
		if err != nil {
			t.Fatal(err)
		}
		if st.acc.Choices[0].Message.Content != answer || len(st.pieces) < 2 {
			t.Errorf("streamed %q", st.pieces)
		}
		if st.acc.Usage.PromptTokens != resp.Usage.PromptTokens || st.acc.Usage.CompletionTokens != resp.Usage.CompletionTokens || st.acc.Usage.TotalTokens != resp.Usage.TotalTokens {
			t.Errorf("streamed usage %+v, whole %+v", st.acc.Usage, resp.Usage)
		}
		// A display name is normalized, as in run URLs.
		if resp, err := oc.Chat.Completions.New(ctx, chatParams("agent/Support Bot", openai.UserMessage("how do i reset my password"))); err != nil || resp.Choices[0].Message.Content != answer {
			t.Errorf("agent/Support Bot: %v", err)
		}
	})

	t.Run("session", func(t *testing.T) {
		sess := option.WithHeader("X-Session-ID", "oa-chat-1")
		turn := func(msg string, opts ...option.RequestOption) *openai.ChatCompletion {
			t.Helper()
			resp, err := oc.Chat.Completions.New(ctx, chatParams("agent/support_bot", openai.UserMessage(msg)), opts...)
			if err != nil {
				t.Fatal(err)
			}
			return resp
		}
		first := turn("what are your opening hours", sess)
		if x := extensionOf(t, first); x.SessionID == nil || *x.SessionID != "oa-chat-1" {
			t.Errorf("session_id = %v", x.SessionID)
		}
		if got := turn("thanks", sess).Choices[0].Message.Content; !strings.Contains(got, "1 earlier turn") {
			t.Errorf("second turn %q does not see the first", got)
		}
		// A streamed turn remembers too.
		st, err := streamChat(t, oc, chatParams("agent/support_bot", openai.UserMessage("bye")), sess)
		if err != nil {
			t.Fatal(err)
		}
		if got := st.acc.Choices[0].Message.Content; !strings.Contains(got, "2 earlier turns") {
			t.Errorf("streamed third turn %q", got)
		}
		if got := turn("thanks").Choices[0].Message.Content; !strings.Contains(got, "0 earlier turns") {
			t.Errorf("without a session: %q", got)
		}
		// Sessions need an agent.
		_, err = oc.Chat.Completions.New(ctx, chatParams("gpt-test", openai.UserMessage("hi")), sess)
		wantAPIError(t, err, 400, "invalid_request_error", "bad_request")
		_, err = oc.Chat.Completions.New(ctx, chatParams("agent/support_bot", openai.UserMessage("hi")), option.WithHeader("X-Session-ID", "no spaces allowed"))
		if e := wantAPIError(t, err, 400, "invalid_request_error", ""); e.Param != "X-Session-ID" {
			t.Errorf("param %q", e.Param)
		}
	})

	t.Run("models", func(t *testing.T) {
		page, err := oc.Models.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for _, m := range page.Data {
			got[m.ID] = m.OwnedBy
			if m.Object != "model" || m.Created == 0 {
				t.Errorf("model %s", m.RawJSON())
			}
		}
		for id, owner := range map[string]string{"gpt-test": "agentd", "offline": "agentd", "agent/support_bot": agentd.DefaultOrgName} {
			if got[id] != owner {
				t.Errorf("%s owned by %q, want %q (list %v)", id, got[id], owner, got)
			}
		}
		if page.Object != "list" || page.Data[0].JSON.ExtraFields["provider"].Raw() == "" {
			t.Errorf("list %s", page.RawJSON())
		}
		// One model: a catalog model, an agent (by any spelling of its name), or 404.
		for id, want := range map[string]string{"gpt-test": "gpt-test agentd", "agent/support_bot": "agent/support_bot " + agentd.DefaultOrgName,
			"agent/Support Bot": "agent/support_bot " + agentd.DefaultOrgName} {
			m, err := oc.Models.Get(ctx, id)
			if err != nil || m.ID+" "+m.OwnedBy != want || m.Object != "model" {
				t.Errorf("GET /v1/models/%s: %v %+v, want %s", id, err, m, want)
			}
		}
		for _, id := range []string{"gpt-9", "agent/nobody", "agent/!!"} {
			_, err := oc.Models.Get(ctx, id)
			wantAPIError(t, err, 404, "not_found_error", "model_not_found")
		}
		// agents:read or run may list; usage alone may not.
		op := s.client(s.Key)
		for scope, status := range map[string]int{"agents:read": 200, "run": 200, "usage": 403} {
			k, err := op.CreateKey(ctx, client.KeySpec{Name: scope, Scopes: []string{scope}})
			if err != nil {
				t.Fatal(err)
			}
			kc := newOpenAI(s, k.Secret)
			_, err = kc.Models.List(ctx)
			if status == 200 && err != nil {
				t.Errorf("%s: %v", scope, err)
			}
			if status == 403 {
				wantAPIError(t, err, 403, "permission_error", "forbidden")
			}
		}
	})

	t.Run("errors", func(t *testing.T) {
		_, err := oc.Chat.Completions.New(ctx, chatParams("gpt-9", openai.UserMessage("hi")))
		wantAPIError(t, err, 404, "not_found_error", "model_not_found")
		_, err = oc.Chat.Completions.New(ctx, chatParams("agent/nobody", openai.UserMessage("hi")))
		wantAPIError(t, err, 404, "not_found_error", "model_not_found")
		_, err = streamChat(t, oc, chatParams("agent/nobody", openai.UserMessage("hi")))
		wantAPIError(t, err, 404, "not_found_error", "model_not_found") // before the first byte: a status

		bad := newOpenAI(s, "agd_not_a_key")
		_, err = bad.Chat.Completions.New(ctx, chatParams("gpt-test", openai.UserMessage("hi")))
		wantAPIError(t, err, 401, "authentication_error", "invalid_api_key")

		p := chatParams("agent/support_bot", openai.UserMessage("hi"))
		p.N = openai.Int(2)
		if e := wantAPIError(t, err2(oc.Chat.Completions.New(ctx, p)), 400, "invalid_request_error", ""); e.Param != "n" {
			t.Errorf("n: param %q", e.Param)
		}
		img := chatParams("agent/support_bot", openai.UserMessage([]openai.ChatCompletionContentPartUnionParam{
			openai.TextContentPart("what is this?"), openai.ImageContentPart(openai.ChatCompletionContentPartImageImageURLParam{URL: "https://example.com/a.png"}),
		}))
		// The agent's offline model cannot see images: refused by name, before any hold.
		if e := wantAPIError(t, err2(oc.Chat.Completions.New(ctx, img)), 400, "invalid_request_error", "unsupported_parameter"); e.Param != "messages" || !strings.Contains(e.Message, "the offline model cannot see images") {
			t.Errorf("image: %q %q", e.Param, e.Message)
		}

		// A priced model with no credits: 402 insufficient_quota, with the numbers.
		op := s.client(s.Key)
		poor, err := op.CreateOrg(ctx, "poor")
		if err != nil {
			t.Fatal(err)
		}
		k, err := op.CreateKey(ctx, client.KeySpec{Name: "poor", OrgID: poor.ID, Scopes: []string{"run"}})
		if err != nil {
			t.Fatal(err)
		}
		pc := newOpenAI(s, k.Secret)
		e := wantAPIError(t, err2(pc.Chat.Completions.New(ctx, chatParams("gpt-test", openai.UserMessage("hi")))), 402, "insufficient_quota", "insufficient_quota")
		var numbers struct{ Required, Available *float64 }
		if json.Unmarshal([]byte(e.RawJSON()), &numbers); numbers.Required == nil || *numbers.Required <= 0 || numbers.Available == nil || *numbers.Available != 0 {
			t.Errorf("402 lacks required/available: %s", e.RawJSON())
		}
		_, err = streamChat(t, pc, chatParams("gpt-test", openai.UserMessage("hi")))
		wantAPIError(t, err, 402, "insufficient_quota", "insufficient_quota")

		// An upstream that dies mid-stream: an error event ends the stream, and
		// nothing is charged.
		rowsBefore, balance := ledger(t, s)
		_, err = streamChat(t, oc, chatParams("breaks", openai.UserMessage("hi")))
		if err == nil || !strings.Contains(err.Error(), `"code":"upstream_error"`) || !strings.Contains(err.Error(), `"run_id":"run-`) {
			t.Errorf("mid-stream failure: %v", err)
		}
		rows, after := ledger(t, s)
		if last := rows[len(rows)-1]; len(rows) != len(rowsBefore)+1 || last.Outcome != agentd.OutcomeFailed || last.Cost != 0 || after != balance {
			t.Errorf("after a failed stream: %d rows (was %d), last %+v, balance %d → %d", len(rows), len(rowsBefore), last, balance, after)
		}
	})

	t.Run("nugen inference path", func(t *testing.T) {
		post := func(path, body string) (int, map[string]any) {
			t.Helper()
			req, _ := http.NewRequest("POST", s.URL+path, strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+s.Key)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var out map[string]any
			if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
				t.Fatal(err)
			}
			return resp.StatusCode, out
		}
		body := `{"model":"agent/support_bot","messages":[{"role":"user","content":"how do i reset my password"}]}`
		s1, v1 := post("/v1/chat/completions", body)
		s2, v2 := post("/api/v3/inference/chat/completions", body)
		if s1 != 200 || s2 != 200 {
			t.Fatalf("statuses %d %d: %v %v", s1, s2, v1, v2)
		}
		for _, k := range []string{"object", "model", "choices", "usage"} {
			if a, b := fmt.Sprint(v1[k]), fmt.Sprint(v2[k]); a != b {
				t.Errorf("%s: %s vs %s", k, a, b)
			}
		}
		if v1["id"] == v2["id"] {
			t.Errorf("two runs share id %v", v1["id"])
		}
		st, out := post("/api/v3/inference/chat/completions/", `{"model":"nope","messages":[{"role":"user","content":"x"}]}`)
		if e, _ := out["error"].(map[string]any); st != 404 || e["code"] != "model_not_found" {
			t.Errorf("unknown model on the NuGen path: %d %v", st, out)
		}
	})

	t.Run("idempotency", func(t *testing.T) {
		key := option.WithHeader("Idempotency-Key", "oa-idem-1")
		calls := u.count()
		var h1, h2 *http.Response
		r1, err := oc.Chat.Completions.New(ctx, chatParams("gpt-test", openai.UserMessage("once")), key, option.WithResponseInto(&h1))
		if err != nil {
			t.Fatal(err)
		}
		r2, err := oc.Chat.Completions.New(ctx, chatParams("gpt-test", openai.UserMessage("once")), key, option.WithResponseInto(&h2))
		if err != nil {
			t.Fatal(err)
		}
		if r1.ID != r2.ID || r2.Choices[0].Message.Content != r1.Choices[0].Message.Content || r2.Usage.TotalTokens != r1.Usage.TotalTokens {
			t.Errorf("replay %s, first %s", r2.RawJSON(), r1.RawJSON())
		}
		if h1.Header.Get("Idempotent-Replayed") != "" || h2.Header.Get("Idempotent-Replayed") != "true" {
			t.Errorf("Idempotent-Replayed: %q then %q", h1.Header.Get("Idempotent-Replayed"), h2.Header.Get("Idempotent-Replayed"))
		}
		if n := u.count() - calls; n != 1 || ledgerRows(t, s, extensionOf(t, r1).RunID) != 1 {
			t.Errorf("%d upstream calls, %d ledger rows", n, ledgerRows(t, s, extensionOf(t, r1).RunID))
		}
		rows, _ := ledger(t, s)
		// The same key with another body is refused.
		_, err = oc.Chat.Completions.New(ctx, chatParams("gpt-test", openai.UserMessage("twice")), key)
		wantAPIError(t, err, 400, "invalid_request_error", "bad_request")
		if after, _ := ledger(t, s); len(after) != len(rows) {
			t.Errorf("a refused key wrote %d rows", len(after)-len(rows))
		}
		// A streamed call replays as a stream: the stored reply in one piece.
		skey := option.WithHeader("Idempotency-Key", "oa-idem-stream")
		p := chatParams("agent/support_bot", openai.UserMessage("how do i reset my password"))
		p.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
		s1, err := streamChat(t, oc, p, skey)
		if err != nil {
			t.Fatal(err)
		}
		var h *http.Response
		s2, err := streamChat(t, oc, p, skey, option.WithResponseInto(&h))
		if err != nil {
			t.Fatal(err)
		}
		if s2.acc.Choices[0].Message.Content != answer || len(s2.pieces) != 1 || s2.ext.RunID != s1.ext.RunID ||
			s2.acc.Usage.TotalTokens != s1.acc.Usage.TotalTokens || h.Header.Get("Idempotent-Replayed") != "true" {
			t.Errorf("streamed replay %q (%d pieces), run %s vs %s, usage %d vs %d, replayed %q", s2.acc.Choices[0].Message.Content, len(s2.pieces),
				s2.ext.RunID, s1.ext.RunID, s2.acc.Usage.TotalTokens, s1.acc.Usage.TotalTokens, h.Header.Get("Idempotent-Replayed"))
		}
		if n := ledgerRows(t, s, s1.ext.RunID); n != 1 {
			t.Errorf("%d ledger rows for the streamed run", n)
		}
	})

	t.Run("not found path", func(t *testing.T) {
		resp, err := http.Get(s.URL + "/v1/audio/speech")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 404 || !strings.Contains(string(b), `"type":"not_found_error"`) {
			t.Errorf("%d %s", resp.StatusCode, b)
		}
	})
}

// err2 is the error of a call that returns a value and an error.
func err2[T any](_ T, err error) error { return err }
