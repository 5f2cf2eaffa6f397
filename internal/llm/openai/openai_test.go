package openai

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentd/agentd/internal/llm"
	"github.com/agentd/agentd/internal/llm/llmtest"
)

// Sources of the recordings are in testdata/README.md.

func load(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Headers as OpenAI sends them with each kind of reply.
func jsonHeader() http.Header {
	return http.Header{
		"Content-Type":         {"application/json"},
		"Openai-Organization":  {"user-abc123"},
		"Openai-Processing-Ms": {"452"},
		"Openai-Version":       {"2020-10-01"},
		"X-Request-Id":         {"req_6c1e1b4d2c3a4f5e8a9b0c1d2e3f4a5b"},
	}
}

func sseHeader() http.Header {
	return http.Header{
		"Content-Type":   {"text/event-stream; charset=utf-8"},
		"Cache-Control":  {"no-cache, must-revalidate"},
		"Openai-Version": {"2020-10-01"},
		"X-Request-Id":   {"req_6c1e1b4d2c3a4f5e8a9b0c1d2e3f4a5b"},
	}
}

// rateLimitHeader is a 429's: the x-ratelimit-* state, and no Retry-After (the
// suite adds its own).
func rateLimitHeader() http.Header {
	h := jsonHeader()
	h.Set("X-Ratelimit-Limit-Requests", "500")
	h.Set("X-Ratelimit-Limit-Tokens", "30000")
	h.Set("X-Ratelimit-Remaining-Requests", "499")
	h.Set("X-Ratelimit-Remaining-Tokens", "63")
	h.Set("X-Ratelimit-Reset-Requests", "120ms")
	h.Set("X-Ratelimit-Reset-Tokens", "644ms")
	return h
}

// wireRequest is a request body as the server reads it.
type wireRequest struct {
	Model               string        `json:"model"`
	Messages            []wireMessage `json:"messages"`
	Temperature         *float64      `json:"temperature"`
	MaxTokens           *int          `json:"max_tokens"`
	MaxCompletionTokens *int          `json:"max_completion_tokens"`
	Tools               []struct {
		Type     string `json:"type"`
		Function struct {
			Name        string          `json:"name"`
			Description string          `json:"description"`
			Parameters  json.RawMessage `json:"parameters"`
			Strict      *bool           `json:"strict"`
		} `json:"function"`
	} `json:"tools"`
	ToolChoice        json.RawMessage `json:"tool_choice"`
	ParallelToolCalls *bool           `json:"parallel_tool_calls"`
	ResponseFormat    *struct {
		Type       string `json:"type"`
		JSONSchema *struct {
			Name        string          `json:"name"`
			Description string          `json:"description"`
			Schema      json.RawMessage `json:"schema"`
			Strict      *bool           `json:"strict"`
		} `json:"json_schema"`
	} `json:"response_format"`
	Stream        *bool `json:"stream"`
	StreamOptions *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
}

type wireMessage struct {
	Role      string          `json:"role"`
	Content   json.RawMessage `json:"content"` // a string, null, or parts
	ToolCalls []struct {
		ID       string `json:"id"`
		Type     string `json:"type"`
		Function struct {
			Name      string `json:"name"`
			Arguments string `json:"arguments"`
		} `json:"function"`
	} `json:"tool_calls"`
	ToolCallID string `json:"tool_call_id"`
}

func decodeRequest(body []byte) (*wireRequest, error) {
	var w wireRequest
	if err := json.Unmarshal(body, &w); err != nil {
		return nil, err
	}
	return &w, nil
}

// neutral maps a message back as strictly as OpenAI reads it: content must be
// present, null only beside tool calls, and every part and call of a known type.
func (m *wireMessage) neutral() (llm.Message, error) {
	out := llm.Message{Role: m.Role, ToolCallID: m.ToolCallID}
	for _, c := range m.ToolCalls {
		if c.Type != "function" {
			return out, fmt.Errorf("tool call of type %q", c.Type)
		}
		out.ToolCalls = append(out.ToolCalls, llm.ToolCall{ID: c.ID, Name: c.Function.Name, Arguments: c.Function.Arguments})
	}
	switch {
	case len(m.Content) == 0:
		return out, errors.New("a message without content")
	case string(m.Content) == "null":
		if len(out.ToolCalls) == 0 {
			return out, errors.New("content null without tool calls")
		}
	case m.Content[0] == '"':
		if err := json.Unmarshal(m.Content, &out.Content); err != nil {
			return out, err
		}
	case m.Content[0] == '[':
		var parts []struct {
			Type     string  `json:"type"`
			Text     *string `json:"text"`
			ImageURL *struct {
				URL    string `json:"url"`
				Detail string `json:"detail"`
			} `json:"image_url"`
		}
		if err := json.Unmarshal(m.Content, &parts); err != nil {
			return out, err
		}
		out.Parts = []llm.Part{}
		for _, p := range parts {
			switch {
			case p.Type == "text" && p.Text != nil && p.ImageURL == nil:
				out.Parts = append(out.Parts, llm.Part{Type: llm.PartText, Text: *p.Text})
			case p.Type == "image_url" && p.ImageURL != nil && p.Text == nil:
				out.Parts = append(out.Parts, llm.Part{Type: llm.PartImage, ImageURL: p.ImageURL.URL, Detail: p.ImageURL.Detail})
			default:
				return out, fmt.Errorf("content part %s", m.Content)
			}
		}
	default:
		return out, fmt.Errorf("content %s", m.Content)
	}
	return out, nil
}

func checkRequest(r *http.Request, body []byte, stream bool) error {
	if got := r.Header.Get("Authorization"); got != "Bearer test-key" {
		return fmt.Errorf("Authorization = %q, want %q", got, "Bearer test-key")
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		return fmt.Errorf("Content-Type = %q", ct)
	}
	w, err := decodeRequest(body)
	if err != nil {
		return err
	}
	if stream {
		if w.Stream == nil || !*w.Stream {
			return errors.New(`a stream without "stream": true`)
		}
		if w.StreamOptions == nil || !w.StreamOptions.IncludeUsage {
			return errors.New("a stream that does not ask for usage (stream_options.include_usage)")
		}
		return nil
	}
	if w.Stream != nil && *w.Stream {
		return errors.New(`Complete sent "stream": true`)
	}
	if w.StreamOptions != nil {
		return errors.New("Complete sent stream_options")
	}
	return nil
}

func decode(body []byte) (*llm.Request, bool, error) {
	w, err := decodeRequest(body)
	if err != nil {
		return nil, false, err
	}
	req := &llm.Request{Model: w.Model, ParallelToolCalls: w.ParallelToolCalls}
	for i := range w.Messages {
		m, err := w.Messages[i].neutral()
		if err != nil {
			return nil, false, fmt.Errorf("message %d: %w", i, err)
		}
		req.Messages = append(req.Messages, m)
	}
	if w.Temperature != nil {
		req.Temperature = *w.Temperature
	}
	switch {
	case w.MaxTokens != nil && w.MaxCompletionTokens != nil:
		return nil, false, errors.New("both max_tokens and max_completion_tokens")
	case w.MaxTokens != nil:
		req.MaxTokens = *w.MaxTokens
	case w.MaxCompletionTokens != nil:
		req.MaxTokens = *w.MaxCompletionTokens
	}
	for _, t := range w.Tools {
		if t.Type != "function" {
			return nil, false, fmt.Errorf("a tool of type %q", t.Type)
		}
		f := t.Function
		tool := llm.Tool{Name: f.Name, Description: f.Description, Strict: f.Strict}
		if len(f.Parameters) > 0 {
			tool.Parameters = []byte(f.Parameters)
		}
		req.Tools = append(req.Tools, tool)
	}
	if len(w.ToolChoice) > 0 {
		var mode string
		var named struct {
			Type     string `json:"type"`
			Function struct {
				Name string `json:"name"`
			} `json:"function"`
		}
		switch {
		case json.Unmarshal(w.ToolChoice, &mode) == nil && (mode == "auto" || mode == "none" || mode == "required"):
			req.ToolChoice = &llm.ToolChoice{Mode: mode}
		case json.Unmarshal(w.ToolChoice, &named) == nil && named.Type == "function" && named.Function.Name != "":
			req.ToolChoice = &llm.ToolChoice{Mode: llm.ToolChoiceFunction, Name: named.Function.Name}
		default:
			return nil, false, fmt.Errorf("tool_choice %s", w.ToolChoice)
		}
	}
	if rf := w.ResponseFormat; rf != nil {
		switch {
		case rf.Type == "json_object" && rf.JSONSchema == nil:
			req.ResponseFormat = &llm.ResponseFormat{Type: llm.FormatJSONObject}
		case rf.Type == "json_schema" && rf.JSONSchema != nil:
			s := rf.JSONSchema
			req.ResponseFormat = &llm.ResponseFormat{Type: llm.FormatJSONSchema, Name: s.Name, Description: s.Description, Strict: s.Strict}
			if len(s.Schema) > 0 {
				req.ResponseFormat.Schema = []byte(s.Schema)
			}
		default:
			return nil, false, fmt.Errorf("response_format %+v", rf)
		}
	}
	return req, w.Stream != nil && *w.Stream, nil
}

func TestConformance(t *testing.T) {
	errs := map[int]llmtest.Recording{}
	for _, status := range []int{400, 401, 403, 404, 429, 500, 503, 529} {
		h := jsonHeader()
		if status == 429 {
			h = rateLimitHeader()
		}
		errs[status] = llmtest.Recording{Header: h, Body: load(t, fmt.Sprintf("error_%d.json", status))}
	}
	// Not from OpenAI's API servers (see testdata/README.md), so not with its headers.
	errs[413] = llmtest.Recording{Header: http.Header{"Content-Type": {"text/html"}, "Server": {"cloudflare"}}, Body: load(t, "error_413.html")}
	errs[422] = llmtest.Recording{Header: http.Header{"Content-Type": {"application/json"}}, Body: load(t, "error_422.json")}
	llmtest.Run(t, llmtest.Wire{
		New: func(baseURL string) llm.Provider {
			return New(Options{BaseURL: baseURL + "/v1", APIKey: "test-key"})
		},
		Path:            "/v1/chat/completions",
		CheckRequest:    checkRequest,
		Decode:          decode,
		Complete:        llmtest.Recording{Header: jsonHeader(), Body: load(t, "complete.json")},
		Stream:          llmtest.Recording{Header: sseHeader(), Body: load(t, "stream.sse")},
		StreamNoUsage:   llmtest.Recording{Header: sseHeader(), Body: load(t, "stream_nousage.sse")},
		StreamError:     llmtest.Recording{Header: sseHeader(), Body: load(t, "stream_error.sse")},
		StreamErrorKind: llm.KindRetryable,
		Errors:          errs,
		ContextTooLong:  llmtest.Recording{Status: 400, Header: jsonHeader(), Body: load(t, "context_length.json")},
		Exhausted:       llmtest.Recording{Status: 429, Header: rateLimitHeader(), Body: load(t, "insufficient_quota.json")},
		Text:            "Hello! How can I assist you today?",
		Usage:           llm.Usage{InputTokens: 19, OutputTokens: 10, Source: llm.SourceProvider},
		Model:           "gpt-5.4",
		Finish:          llm.FinishStop,

		ToolComplete: llmtest.Recording{Header: jsonHeader(), Body: load(t, "tool_complete.json")},
		ToolStream:   llmtest.Recording{Header: sseHeader(), Body: load(t, "tool_stream.sse")},
		ToolCalls: []llm.ToolCall{
			{ID: "call_8Oool8DklZDOCj2ISaJiHkTj", Name: "get_weather", Arguments: `{"city":"Paris","day":"tomorrow"}`},
			{ID: "call_0rLGlkoMXGjtEkDnNfribxUd", Name: "get_weather", Arguments: `{"city":"Lyon","day":"tomorrow"}`},
		},
		ToolUsage:          llm.Usage{InputTokens: 968, OutputTokens: 52, Source: llm.SourceProvider},
		StructuredComplete: llmtest.Recording{Header: jsonHeader(), Body: load(t, "structured.json")},
		StructuredText:     `{"answer":6}`,
	})
}

// seen is one request as a test server received it.
type seen struct {
	path, query string
	header      http.Header
	body        []byte
}

// serve answers every request with status, header and body, and records them.
func serve(t *testing.T, status int, header http.Header, body []byte) (*httptest.Server, func() seen) {
	t.Helper()
	var (
		mu   sync.Mutex
		last seen
	)
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		last = seen{r.URL.Path, r.URL.RawQuery, r.Header.Clone(), b}
		mu.Unlock()
		for k, v := range header {
			w.Header()[k] = v
		}
		w.WriteHeader(status)
		w.Write(body)
	}))
	t.Cleanup(s.Close)
	return s, func() seen {
		mu.Lock()
		defer mu.Unlock()
		return last
	}
}

func request() *llm.Request {
	return &llm.Request{
		Model:       "m",
		Messages:    []llm.Message{{Role: llm.RoleSystem, Content: "Be brief."}, {Role: llm.RoleUser, Content: "Hi <b>&</b>"}},
		Temperature: 0,
		MaxTokens:   77,
	}
}

func stream(t *testing.T, p *Provider) ([]string, *llm.Response, error) {
	t.Helper()
	var pieces []string
	resp, err := p.Stream(context.Background(), request(), func(s string) error {
		if s == "" {
			t.Error("emitted an empty piece")
		}
		pieces = append(pieces, s)
		return nil
	})
	if resp == nil {
		t.Fatal("Stream returned no Response")
	}
	return pieces, resp, err
}

func TestRequestFields(t *testing.T) {
	s, last := serve(t, 200, jsonHeader(), load(t, "complete.json"))
	for _, tc := range []struct {
		name  string
		opts  Options
		max   int
		check func(t *testing.T, got seen)
	}{
		{"max_completion_tokens", Options{MaxTokensField: "max_completion_tokens"}, 77, func(t *testing.T, got seen) {
			w, _ := decodeRequest(got.body)
			if w.MaxCompletionTokens == nil || *w.MaxCompletionTokens != 77 || w.MaxTokens != nil {
				t.Errorf("body %s: want max_completion_tokens 77 and no max_tokens", got.body)
			}
		}},
		{"max_tokens by default", Options{}, 77, func(t *testing.T, got seen) {
			w, _ := decodeRequest(got.body)
			if w.MaxTokens == nil || *w.MaxTokens != 77 || w.MaxCompletionTokens != nil {
				t.Errorf("body %s: want max_tokens 77", got.body)
			}
		}},
		{"no limit", Options{}, 0, func(t *testing.T, got seen) {
			if strings.Contains(string(got.body), "max_") {
				t.Errorf("body %s: a zero MaxTokens is sent", got.body)
			}
		}},
		{"zero temperature is sent", Options{}, 0, func(t *testing.T, got seen) {
			w, _ := decodeRequest(got.body)
			if w.Temperature == nil || *w.Temperature != 0 {
				t.Errorf("body %s: want temperature 0", got.body)
			}
		}},
		{"no key, no Authorization", Options{}, 0, func(t *testing.T, got seen) {
			if _, ok := got.header["Authorization"]; ok {
				t.Errorf("Authorization sent: %q", got.header.Get("Authorization"))
			}
		}},
		{"extra headers", Options{APIKey: "k", Headers: map[string]string{"HTTP-Referer": "https://agentd.example", "X-Title": "agentd"}}, 0, func(t *testing.T, got seen) {
			if got.header.Get("Http-Referer") != "https://agentd.example" || got.header.Get("X-Title") != "agentd" {
				t.Errorf("headers %v: extra headers missing", got.header)
			}
			if got.header.Get("Authorization") != "Bearer k" {
				t.Errorf("Authorization = %q", got.header.Get("Authorization"))
			}
		}},
		{"text is not HTML-escaped", Options{}, 0, func(t *testing.T, got seen) {
			if !strings.Contains(string(got.body), `"Hi <b>&</b>"`) {
				t.Errorf("body %s", got.body)
			}
		}},
		{"trailing slash", Options{BaseURL: "/v1/"}, 0, func(t *testing.T, got seen) {
			if got.path != "/v1/chat/completions" {
				t.Errorf("path = %q", got.path)
			}
		}},
		{"query kept", Options{BaseURL: "/openai/deployments/d?api-version=2024-10-21"}, 0, func(t *testing.T, got seen) {
			if got.path != "/openai/deployments/d/chat/completions" || got.query != "api-version=2024-10-21" {
				t.Errorf("path %q query %q", got.path, got.query)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := tc.opts
			opts.BaseURL = s.URL + opts.BaseURL
			req := request()
			req.MaxTokens = tc.max
			if _, err := New(opts).Complete(context.Background(), req); err != nil {
				t.Fatal(err)
			}
			tc.check(t, last())
		})
	}
}

func TestNewPanicsOnUnknownField(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("New accepted MaxTokensField \"max_new_tokens\"")
		}
	}()
	New(Options{MaxTokensField: "max_new_tokens"})
}

func TestDefaultBaseURL(t *testing.T) {
	if got := New(Options{}).endpoint; got != "https://api.openai.com/v1/chat/completions" {
		t.Errorf("endpoint = %q", got)
	}
}

func TestReplies(t *testing.T) {
	for _, tc := range []struct {
		name string
		body string
		want llm.Response
	}{
		{"content null", `{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-5.4","choices":[{"index":0,"message":{"role":"assistant","content":null,"refusal":"I'm sorry, I can't help with that.","annotations":[]},"logprobs":null,"finish_reason":"content_filter"}],"usage":{"prompt_tokens":5,"completion_tokens":0,"total_tokens":5}}`,
			llm.Response{FinishReason: llm.FinishOther, Model: "gpt-5.4", Usage: llm.Usage{InputTokens: 5, Source: llm.SourceProvider}}},
		{"no usage", `{"model":"m","choices":[{"message":{"content":"hi"},"finish_reason":"length"}],"usage":null}`,
			llm.Response{Text: "hi", FinishReason: llm.FinishLength, Model: "m"}},
		{"no finish reason", `{"model":"m","choices":[{"message":{"content":"hi"},"finish_reason":null}]}`,
			llm.Response{Text: "hi", Model: "m"}},
		{"escapes", `{"model":"m","choices":[{"message":{"content":"a\"b\\n\u00e9 ✓"},"finish_reason":"stop"}]}`,
			llm.Response{Text: "a\"b\\n\u00e9 ✓", FinishReason: llm.FinishStop, Model: "m"}},
		{"content parts", `{"model":"magistral-medium-latest","choices":[{"message":{"role":"assistant","content":[{"type":"thinking","thinking":[{"type":"text","text":"hmm"}]},{"type":"text","text":"Hello"},{"type":"text","text":"!"}]},"finish_reason":"stop"}]}`,
			llm.Response{Text: "Hello!", FinishReason: llm.FinishStop, Model: "magistral-medium-latest"}},
		{"ollama", string(load(t, "ollama.json")),
			llm.Response{Text: "Hello! How can I assist you today?", FinishReason: llm.FinishStop, Model: "llama3.2", Usage: llm.Usage{InputTokens: 26, OutputTokens: 10, Source: llm.SourceProvider}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := serve(t, 200, http.Header{"Content-Type": {"application/json; charset=utf-8"}}, []byte(tc.body))
			got, err := New(Options{BaseURL: s.URL}).Complete(context.Background(), request())
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(*got, tc.want) {
				t.Errorf("got %+v\nwant %+v", *got, tc.want)
			}
		})
	}
}

func TestBadReplies(t *testing.T) {
	for _, tc := range []struct {
		name string
		body string
		kind llm.Kind
	}{
		{"no choices", `{"id":"x","object":"chat.completion","model":"m","choices":[]}`, llm.KindPermanent},
		{"not JSON", "<html>hello</html>", llm.KindPermanent},
		{"empty", "", llm.KindPermanent},
		{"content a number", `{"choices":[{"message":{"content":7}}]}`, llm.KindPermanent},
		// OpenRouter answers 200 with an error when the model fails after the
		// request was accepted.
		{"error with 200, numeric 502", `{"error":{"code":502,"message":"Provider returned error"}}`, llm.KindRetryable},
		{"error with 200, server_error", `{"error":{"code":"server_error","message":"boom"}}`, llm.KindRetryable},
		{"error with 200, 400", `{"error":{"code":400,"message":"bad"}}`, llm.KindPermanent},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := serve(t, 200, jsonHeader(), []byte(tc.body))
			_, err := New(Options{BaseURL: s.URL}).Complete(context.Background(), request())
			if k := llm.KindOf(err); k != tc.kind {
				t.Errorf("kind %v, want %v (err %v)", k, tc.kind, err)
			}
		})
	}
}

func TestStatusErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status int
		body   string
		kind   llm.Kind
		code   string
		msg    string
	}{
		{"vLLM context", 400, `{"object":"error","message":"This model's maximum context length is 8192 tokens. However, you requested 9000 tokens (8900 in the messages, 100 in the completion). Please reduce the length of the messages or completion.","type":"BadRequestError","param":null,"code":400}`,
			llm.KindContextLength, "BadRequestError", "This model's maximum context length is 8192 tokens."},
		{"vLLM error object", 400, `{"error":{"message":"[{'type': 'missing', 'loc': ('body', 'messages')}]","type":"BadRequestError","param":null,"code":400}}`,
			llm.KindPermanent, "BadRequestError", "[{'type'"},
		{"llama.cpp context", 400, `{"error":{"code":400,"message":"the request exceeds the available context size, try increasing it","type":"exceed_context_size_error","n_prompt_tokens":5000,"n_ctx":4096}}`,
			llm.KindContextLength, "exceed_context_size_error", "the request exceeds"},
		{"Groq context", 400, `{"error":{"message":"Please reduce the length of the messages or completion.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}`,
			llm.KindContextLength, "context_length_exceeded", "Please reduce"},
		{"Ollama", 404, `{"error":{"message":"model \"llama9\" not found, try pulling it first","type":"not_found_error","param":null,"code":null}}`,
			llm.KindPermanent, "not_found_error", `model "llama9" not found`},
		{"Gemini array", 429, `[{"error":{"code":429,"message":"Resource has been exhausted (e.g. check quota).","status":"RESOURCE_EXHAUSTED"}}]`,
			llm.KindRetryable, "RESOURCE_EXHAUSTED", "Resource has been exhausted"},
		{"OpenRouter no credits", 402, `{"error":{"code":402,"message":"Insufficient credits. Add more using https://openrouter.ai/settings/credits"}}`,
			llm.KindExhausted, "402", "Insufficient credits"},
		{"error string", 500, `{"error":"llama runner process has terminated: signal: killed"}`,
			llm.KindRetryable, "", "llama runner process"},
		{"FastAPI detail", 422, `{"detail":"Not Found"}`, llm.KindPermanent, "", "Not Found"},
		{"old insufficient_quota", 429, `{"error":{"message":"You exceeded your current quota, please check your plan and billing details.","type":"insufficient_quota","param":null,"code":null}}`,
			llm.KindExhausted, "insufficient_quota", "You exceeded"},
		{"HTML", 503, "<html>" + strings.Repeat("busy ", 100) + "</html>", llm.KindRetryable, "", "<html>busy"},
		{"empty", 504, "", llm.KindRetryable, "", "Gateway Timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := serve(t, tc.status, jsonHeader(), []byte(tc.body))
			_, err := New(Options{BaseURL: s.URL}).Complete(context.Background(), request())
			var e *llm.Error
			if !errors.As(err, &e) {
				t.Fatalf("err %v, want an *llm.Error", err)
			}
			if e.Kind != tc.kind || e.StatusCode != tc.status || e.Code != tc.code {
				t.Errorf("kind %v status %d code %q, want %v %d %q", e.Kind, e.StatusCode, e.Code, tc.kind, tc.status, tc.code)
			}
			if !strings.Contains(e.Message, tc.msg) || len(e.Message) > maxMessage+len("openai: …") {
				t.Errorf("message %q, want it to contain %q, briefly", e.Message, tc.msg)
			}
		})
	}
}

func TestStreams(t *testing.T) {
	const hello = "Hello! How can I assist you today?"
	for _, tc := range []struct {
		name   string
		file   string
		text   string // the text emitted
		want   llm.Response
		kind   llm.Kind // of the error; KindUnknown for none
		header http.Header
	}{
		{name: "llama.cpp usage on the last choice", file: "llamacpp_stream.sse", text: hello,
			want: llm.Response{Text: hello, FinishReason: llm.FinishStop, Model: "qwen2.5-7b-instruct", Usage: llm.Usage{InputTokens: 19, OutputTokens: 10, Source: llm.SourceProvider}}},
		{name: "Ollama", file: "ollama_stream.sse", text: hello,
			want: llm.Response{Text: hello, FinishReason: llm.FinishStop, Model: "llama3.2", Usage: llm.Usage{InputTokens: 26, OutputTokens: 10, Source: llm.SourceProvider}}},
		{name: "vLLM error in band", file: "vllm_stream_error.sse", text: "Hello! How", kind: llm.KindPermanent,
			want: llm.Response{Text: "Hello! How", Model: "meta-llama/Llama-3.1-8B-Instruct"}},
		{name: "OpenRouter error in band", file: "openrouter_stream_error.sse", text: "Hello!", kind: llm.KindRetryable,
			want: llm.Response{Text: "Hello!", Model: "openai/gpt-4o"}},
		{name: "whole reply to a stream", file: "complete.json", text: hello, header: jsonHeader(),
			want: llm.Response{Text: hello, FinishReason: llm.FinishStop, Model: "gpt-5.4", Usage: llm.Usage{InputTokens: 19, OutputTokens: 10, Source: llm.SourceProvider}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := tc.header
			if h == nil {
				h = sseHeader()
			}
			s, _ := serve(t, 200, h, load(t, tc.file))
			pieces, resp, err := stream(t, New(Options{BaseURL: s.URL}))
			if got := strings.Join(pieces, ""); got != tc.text {
				t.Errorf("emitted %q, want %q", got, tc.text)
			}
			if k := llm.KindOf(err); k != tc.kind {
				t.Errorf("kind %v, want %v (err %v)", k, tc.kind, err)
			}
			if !reflect.DeepEqual(*resp, tc.want) {
				t.Errorf("got %+v\nwant %+v", *resp, tc.want)
			}
		})
	}
}

func TestStreamEvents(t *testing.T) {
	chunk := func(content string) string {
		return `data: {"model":"m","choices":[{"index":0,"delta":{"content":` + content + `},"finish_reason":null}]}` + "\n\n"
	}
	for _, tc := range []struct {
		name string
		body string
		text string
		kind llm.Kind
	}{
		{"named error event", chunk(`"a"`) + "event: error\ndata: {\"error\":{\"message\":\"overloaded\",\"type\":\"overloaded_error\"}}\n\n", "a", llm.KindRetryable},
		{"in-band context length", chunk(`"a"`) + `data: {"error":{"message":"This model's maximum context length is 4096 tokens.","code":"context_length_exceeded"}}` + "\n\n", "a", llm.KindContextLength},
		{"in-band unknown", chunk(`"a"`) + `data: {"error":{"message":"content rejected","type":"invalid_request_error"}}` + "\n\n", "a", llm.KindPermanent},
		{"in-band string", chunk(`"a"`) + `data: {"error":"upstream went away"}` + "\n\n", "a", llm.KindPermanent},
		{"CRLF and no space", strings.ReplaceAll(chunk(`"a"`)+chunk(`"b"`), "\n", "\r\n") + "data:[DONE]\r\n\r\n", "ab", llm.KindUnknown},
		{"clean end without [DONE]", chunk(`"a"`) + chunk(`"b"`), "ab", llm.KindRetryable},
		{"null and empty content", chunk(`null`) + chunk(`""`) + chunk(`"x"`) + "data: [DONE]\n\n", "x", llm.KindUnknown},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := serve(t, 200, sseHeader(), []byte(tc.body))
			pieces, resp, err := stream(t, New(Options{BaseURL: s.URL}))
			if got := strings.Join(pieces, ""); got != tc.text || resp.Text != tc.text {
				t.Errorf("emitted %q, Text %q, want %q", got, resp.Text, tc.text)
			}
			if k := llm.KindOf(err); k != tc.kind {
				t.Errorf("kind %v, want %v (err %v)", k, tc.kind, err)
			}
		})
	}
}

func TestStreamStatusError(t *testing.T) {
	s, _ := serve(t, 429, rateLimitHeader(), load(t, "insufficient_quota.json"))
	pieces, resp, err := stream(t, New(Options{BaseURL: s.URL}))
	if llm.KindOf(err) != llm.KindExhausted || len(pieces) != 0 || !reflect.DeepEqual(*resp, llm.Response{}) {
		t.Errorf("err %v, pieces %q, resp %+v", err, pieces, resp)
	}
}

// TestConnectionReuse checks that bodies are read to the end and closed, so that
// calls share connections rather than each opening one.
func TestConnectionReuse(t *testing.T) {
	var (
		mu    sync.Mutex
		conns = map[string]bool{}
	)
	bodies := [][]byte{load(t, "complete.json"), load(t, "stream.sse"), load(t, "error_429.json")}
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		mu.Lock()
		conns[r.RemoteAddr] = true
		mu.Unlock()
		switch r.URL.Query().Get("n") {
		case "0":
			w.Write(bodies[0])
		case "1":
			w.Header().Set("Content-Type", "text/event-stream")
			w.Write(bodies[1])
		default:
			w.WriteHeader(429)
			w.Write(bodies[2])
		}
	}))
	defer s.Close()
	for i := range 9 {
		p := New(Options{BaseURL: s.URL + fmt.Sprintf("?n=%d", i%3), Client: s.Client()})
		if i%3 == 1 {
			if _, err := p.Stream(context.Background(), request(), func(string) error { return nil }); err != nil {
				t.Fatal(err)
			}
		} else {
			p.Complete(context.Background(), request())
		}
	}
	if len(conns) != 1 {
		t.Errorf("9 sequential calls used %d connections", len(conns))
	}
}

func TestDefaultClient(t *testing.T) {
	p := New(Options{})
	if p.client.Timeout != 0 {
		t.Errorf("client Timeout %v: streams would be cut", p.client.Timeout)
	}
	tr, ok := p.client.Transport.(*http.Transport)
	if !ok || tr.MaxIdleConnsPerHost != 256 || tr.IdleConnTimeout != 90*time.Second || !tr.ForceAttemptHTTP2 ||
		tr.Proxy == nil || tr.TLSHandshakeTimeout != 10*time.Second || tr == http.DefaultTransport {
		t.Errorf("transport %+v", p.client.Transport)
	}
}

func BenchmarkComplete(b *testing.B) {
	body := load(b, "complete.json")
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	}))
	defer s.Close()
	p := New(Options{BaseURL: s.URL + "/v1", APIKey: "test-key"})
	req := request()
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := p.Complete(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkStream(b *testing.B) {
	body := load(b, "stream.sse")
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
		if _, err := p.Stream(ctx, req, emit); err != nil {
			b.Fatal(err)
		}
	}
}

// TestHTTP2 runs calls over HTTP/2, where the transport may still be reading the
// pooled request body from its own goroutine when the reply arrives: the server
// here answers an error before reading a large body. Run with -race.
func TestHTTP2(t *testing.T) {
	complete, events := load(t, "complete.json"), load(t, "stream.sse")
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor != 2 {
			t.Errorf("request over %s", r.Proto)
		}
		switch r.URL.Query().Get("reply") {
		case "early":
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(400)
			w.Write(load(t, "error_400.json"))
			return
		case "stream":
			io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "text/event-stream")
			w.Write(events)
		default:
			io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "application/json")
			w.Write(complete)
		}
	}))
	s.EnableHTTP2 = true
	s.StartTLS()
	defer s.Close()

	big := request()
	big.Messages[1].Content = strings.Repeat("long prompt ", 100_000)
	var wg sync.WaitGroup
	for i := range 24 {
		wg.Go(func() {
			switch i % 3 {
			case 0:
				_, err := New(Options{BaseURL: s.URL + "?reply=early", Client: s.Client()}).Complete(context.Background(), big)
				if llm.KindOf(err) != llm.KindPermanent {
					t.Errorf("early reply: %v", err)
				}
			case 1:
				resp, err := New(Options{BaseURL: s.URL + "?reply=stream", Client: s.Client()}).Stream(context.Background(), big, func(string) error { return nil })
				if err != nil || resp.Text != "Hello! How can I assist you today?" {
					t.Errorf("stream: %+v, %v", resp, err)
				}
			default:
				resp, err := New(Options{BaseURL: s.URL, Client: s.Client()}).Complete(context.Background(), request())
				if err != nil || resp.Model != "gpt-5.4" {
					t.Errorf("complete: %+v, %v", resp, err)
				}
			}
		})
	}
	wg.Wait()
}
