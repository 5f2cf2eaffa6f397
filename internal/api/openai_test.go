package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/internal/llm"
	"github.com/agentd/agentd/internal/reqlog"
)

// TestChatRequest: what a chat completion body becomes, and how each bad one is
// answered (OpenAI's status, code and param).
func TestChatRequest(t *testing.T) {
	type want struct {
		model, agent string
		messages     string // role:content|role:content
		temp         string // "" for unset
		maxTokens    string
		field        string
		stream, incl bool
		tools        string // names, comma-separated
		choice       string // mode and name
		parallel     string
	}
	cases := []struct {
		name   string
		body   string
		want   want
		status int    // of the error; 0 for success
		code   string // OpenAI code of the error
		param  any    // OpenAI param of the error (nil: JSON null)
	}{
		{name: "minimal", body: `{"model":"gpt-test","messages":[{"role":"user","content":"hi"}]}`,
			want: want{model: "gpt-test", messages: "user:hi"}},
		{name: "agent normalized", body: `{"model":"agent/Support Bot","messages":[{"role":"user","content":"hi"}]}`,
			want: want{model: "agent/Support Bot", agent: "support_bot", messages: "user:hi"}},
		{name: "developer is system, text parts joined", body: `{"model":"m","messages":[{"role":"developer","content":"be brief"},{"role":"system","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]},{"role":"assistant","content":"ok","refusal":null,"tool_calls":[]},{"role":"user","content":[{"type":"text","text":"q"}],"name":"bob"}]}`,
			want: want{model: "m", messages: "system:be brief|system:a\nb|assistant:ok|user:q"}},
		{name: "settings", body: `{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0.2,"max_tokens":50,"stream":true,"stream_options":{"include_usage":true}}`,
			want: want{model: "m", messages: "user:hi", temp: "0.2", maxTokens: "50", field: "max_tokens", stream: true, incl: true}},
		{name: "max_completion_tokens wins", body: `{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":50,"max_completion_tokens":70}`,
			want: want{model: "m", messages: "user:hi", maxTokens: "70", field: "max_completion_tokens"}},
		{name: "ignored and harmless fields", body: `{"model":"m","messages":[{"role":"user","content":"hi"}],"top_p":0.5,"user":"u","stop":["x"],"seed":1,"n":1,"tools":null,"tool_choice":"none","response_format":{"type":"text"},"stream":null,"logit_bias":{}}`,
			want: want{model: "m", messages: "user:hi", choice: "none "}},

		{name: "empty body", body: ``, status: 400, code: "missing"},
		{name: "malformed", body: `{"model":`, status: 400, code: "json_invalid"},
		{name: "not an object", body: `[]`, status: 400, code: "model_attributes_type"},
		{name: "no model", body: `{"messages":[{"role":"user","content":"hi"}]}`, status: 400, code: "missing", param: "model"},
		{name: "model not a string", body: `{"model":3,"messages":[{"role":"user","content":"hi"}]}`, status: 400, code: "string_type", param: "model"},
		{name: "empty agent name", body: `{"model":"agent/!!","messages":[{"role":"user","content":"hi"}]}`, status: 404, code: "model_not_found"},
		{name: "no messages", body: `{"model":"m"}`, status: 400, code: "missing", param: "messages"},
		{name: "empty messages", body: `{"model":"m","messages":[]}`, status: 400, code: "too_short", param: "messages"},
		{name: "no role", body: `{"model":"m","messages":[{"content":"hi"}]}`, status: 400, code: "missing", param: "messages.[0].role"},
		{name: "unknown role", body: `{"model":"m","messages":[{"role":"robot","content":"hi"}]}`, status: 400, code: "literal_error", param: "messages.[0].role"},
		{name: "tool message", body: `{"model":"m","messages":[{"role":"user","content":"hi"},{"role":"assistant","content":null,"tool_calls":[{"id":"x","type":"function","function":{"name":"f","arguments":"{\"a\": 1}"}}]},{"role":"tool","content":"42","tool_call_id":"x"}]}`,
			want: want{model: "m", messages: `user:hi|assistant:[x f {"a": 1}]|tool[x]:42`}},
		{name: "tool message without id", body: `{"model":"m","messages":[{"role":"user","content":"hi"},{"role":"tool","content":"42"}]}`, status: 400, code: "missing", param: "messages.[1].tool_call_id"},
		{name: "function message", body: `{"model":"m","messages":[{"role":"function","content":"42"}]}`, status: 400, code: "unsupported_value", param: "messages.[0].role"},
		{name: "tool call without name", body: `{"model":"m","messages":[{"role":"assistant","content":null,"tool_calls":[{"id":"c"}]},{"role":"user","content":"hi"}]}`, status: 400, code: "missing", param: "messages.[0].tool_calls.[0].function.name"},
		{name: "tool call without id", body: `{"model":"m","messages":[{"role":"assistant","tool_calls":[{"type":"function","function":{"name":"f","arguments":"{}"}}]},{"role":"user","content":"hi"}]}`, status: 400, code: "missing", param: "messages.[0].tool_calls.[0].id"},
		{name: "tool calls twice the same id", body: `{"model":"m","messages":[{"role":"assistant","tool_calls":[{"id":"c","function":{"name":"f","arguments":"{}"}},{"id":"c","function":{"name":"f","arguments":"{}"}}]},{"role":"user","content":"hi"}]}`, status: 400, code: "value_error", param: "messages.[0].tool_calls.[1].id"},
		{name: "null content", body: `{"model":"m","messages":[{"role":"user","content":null}]}`, status: 400, code: "missing", param: "messages.[0].content"},
		{name: "numeric content", body: `{"model":"m","messages":[{"role":"user","content":5}]}`, status: 400, code: "string_type", param: "messages.[0].content"},
		{name: "image part", body: `{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"what"},{"type":"image_url","image_url":{"url":"https://x/y.png","detail":"low"}}]}]}`,
			want: want{model: "m", messages: "user:[text what][image https://x/y.png low]"}},
		{name: "image part base64", body: `{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/png;base64,iVBO"}}]}]}`,
			want: want{model: "m", messages: "user:[image data:image/png;base64,iVBO ]"}},
		{name: "image part not a URL", body: `{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"file:///etc/passwd"}}]}]}`, status: 400, code: "url_parsing", param: "messages.[0].content.[0].image_url.url"},
		{name: "image part bad detail", body: `{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://x/y.png","detail":"max"}}]}]}`, status: 400, code: "literal_error", param: "messages.[0].content.[0].image_url.detail"},
		{name: "audio part", body: `{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://x/y.png"}},{"type":"input_audio","input_audio":{}}]}]}`, status: 400, code: "unsupported_value", param: "messages.[0].content.[1].type"},
		{name: "image in a system message", body: `{"model":"m","messages":[{"role":"system","content":[{"type":"image_url","image_url":{"url":"https://x/y.png"}}]},{"role":"user","content":"hi"}]}`, status: 400, code: "unsupported_value", param: "messages.[0].content.[0].type"},
		{name: "text part without text", body: `{"model":"m","messages":[{"role":"user","content":[{"type":"text"}]}]}`, status: 400, code: "missing", param: "messages.[0].content.[0].text"},
		{name: "last message not user", body: `{"model":"m","messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"hello"}]}`, status: 400, code: "value_error", param: "messages.[1].role"},
		{name: "last message too long", body: `{"model":"m","messages":[{"role":"user","content":"` + strings.Repeat("é", 11) + `"}]}`, status: 400, code: "string_too_long", param: "messages.[0].content"},
		{name: "n 2", body: `{"model":"m","messages":[{"role":"user","content":"hi"}],"n":2}`, want: want{model: "m", messages: "user:hi"}},
		{name: "n 2 streamed", body: `{"model":"m","messages":[{"role":"user","content":"hi"}],"n":2,"stream":true}`, status: 400, code: "unsupported_value", param: "n"},
		{name: "n 0", body: `{"model":"m","messages":[{"role":"user","content":"hi"}],"n":0}`, status: 400, code: "less_than_equal", param: "n"},
		{name: "n 129", body: `{"model":"m","messages":[{"role":"user","content":"hi"}],"n":129}`, status: 400, code: "less_than_equal", param: "n"},
		{name: "tools", body: `{"model":"m","messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":{"type":"function","function":{"name":"f"}},"parallel_tool_calls":false}`,
			want: want{model: "m", messages: "user:hi", tools: "f", choice: "function f", parallel: "false"}},
		{name: "tool without type", body: `{"model":"m","messages":[{"role":"user","content":"hi"}],"tools":[{"function":{"name":"f"}}]}`, status: 400, code: "missing", param: "tools.[0].type"},
		{name: "tool with a bad name", body: `{"model":"m","messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"get weather"}}]}`, status: 400, code: "string_pattern_mismatch", param: "tools.[0].function.name"},
		{name: "tool parameters not an object", body: `{"model":"m","messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"f","parameters":[]}}]}`, status: 400, code: "model_attributes_type", param: "tools.[0].function.parameters"},
		{name: "tool defined twice", body: `{"model":"m","messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"f"}},{"type":"function","function":{"name":"f"}}]}`, status: 400, code: "value_error", param: "tools.[1].function.name"},
		{name: "tool_choice auto", body: `{"model":"m","messages":[{"role":"user","content":"hi"}],"tool_choice":"auto"}`, want: want{model: "m", messages: "user:hi", choice: "auto "}},
		{name: "tool_choice unknown", body: `{"model":"m","messages":[{"role":"user","content":"hi"}],"tool_choice":"any"}`, status: 400, code: "literal_error", param: "tool_choice"},
		{name: "functions", body: `{"model":"m","messages":[{"role":"user","content":"hi"}],"functions":[{"name":"f"}]}`, status: 400, code: "unsupported_value", param: "functions"},
		{name: "json response format", body: `{"model":"m","messages":[{"role":"user","content":"hi"}],"response_format":{"type":"json_object"}}`,
			want: want{model: "m", messages: "user:hi"}},
		{name: "json schema response format", body: `{"model":"m","messages":[{"role":"user","content":"hi"}],"response_format":{"type":"json_schema","json_schema":{"name":"r","schema":{"type":"object"},"strict":true}}}`,
			want: want{model: "m", messages: "user:hi"}},
		{name: "response format without type", body: `{"model":"m","messages":[{"role":"user","content":"hi"}],"response_format":{}}`, status: 400, code: "missing", param: "response_format.type"},
		{name: "response format of unknown type", body: `{"model":"m","messages":[{"role":"user","content":"hi"}],"response_format":{"type":"xml"}}`, status: 400, code: "literal_error", param: "response_format.type"},
		{name: "json schema without name", body: `{"model":"m","messages":[{"role":"user","content":"hi"}],"response_format":{"type":"json_schema","json_schema":{"schema":{}}}}`, status: 400, code: "missing", param: "response_format.json_schema.name"},
		{name: "json schema not an object", body: `{"model":"m","messages":[{"role":"user","content":"hi"}],"response_format":{"type":"json_schema","json_schema":{"name":"r","schema":[]}}}`, status: 400, code: "model_attributes_type", param: "response_format.json_schema.schema"},
		{name: "response format not an object", body: `{"model":"m","messages":[{"role":"user","content":"hi"}],"response_format":"json"}`, status: 400, code: "model_attributes_type", param: "response_format"},
		{name: "temperature above 2", body: `{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":2.5}`, status: 400, code: "less_than_equal", param: "temperature"},
		{name: "temperature negative", body: `{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":-1}`, status: 400, code: "less_than_equal", param: "temperature"},
		{name: "max_tokens zero", body: `{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":0}`, status: 400, code: "greater_than_equal", param: "max_tokens"},
		{name: "max_completion_tokens negative", body: `{"model":"m","messages":[{"role":"user","content":"hi"}],"max_completion_tokens":-3}`, status: 400, code: "greater_than_equal", param: "max_completion_tokens"},
		{name: "max_tokens fractional", body: `{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":1.5}`, status: 400, code: "integer_type", param: "max_tokens"},
		{name: "stream not a bool", body: `{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":"yes"}`, status: 400, code: "bool_type", param: "stream"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var req chatRequest
			err := decodeJSON([]byte(tc.body), &req)
			var c *chatCall
			if err == nil {
				c, err = req.call(10)
			}
			if tc.status != 0 {
				if err == nil {
					t.Fatalf("accepted: %+v", c)
				}
				f := toOpenAIError(err)
				if f.status != tc.status || f.body["code"] != tc.code || f.body["param"] != tc.param {
					t.Fatalf("status %d code %v param %v, want %d %q %v (%v)", f.status, f.body["code"], f.body["param"], tc.status, tc.code, tc.param, err)
				}
				if m, _ := f.body["message"].(string); m == "" {
					t.Errorf("no message: %v", f.body)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var msgs []string
			for _, m := range c.messages {
				s := m.Role + ":" + m.Content
				switch {
				case m.Role == llm.RoleTool:
					s = "tool[" + m.ToolCallID + "]:" + m.Content
				case m.ToolCalls != nil:
					for _, tc := range m.ToolCalls {
						s += "[" + tc.ID + " " + tc.Name + " " + tc.Arguments + "]"
					}
				case m.Parts != nil:
					s = m.Role + ":"
					for _, p := range m.Parts {
						if p.Type == llm.PartText {
							s += "[text " + p.Text + "]"
						} else {
							s += "[image " + p.ImageURL + " " + p.Detail + "]"
						}
					}
				}
				msgs = append(msgs, s)
			}
			got := want{model: c.model, agent: c.agent, messages: strings.Join(msgs, "|"), stream: c.stream, incl: c.includeUsage}
			var names []string
			for _, tool := range c.tools {
				names = append(names, tool.Name)
			}
			got.tools = strings.Join(names, ",")
			if c.toolChoice != nil {
				got.choice = c.toolChoice.Mode + " " + c.toolChoice.Name
			}
			if c.parallel != nil {
				got.parallel = fmt.Sprint(*c.parallel)
			}
			if c.temperature != nil {
				got.temp = fmt.Sprint(*c.temperature)
			}
			if c.maxTokens != nil {
				got.maxTokens, got.field = fmt.Sprint(*c.maxTokens), c.maxTokensField
			}
			if got != tc.want {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

// TestOpenAIErrors: agentd's codes in OpenAI's envelope, with the statuses of the
// rest of the API (validation: 400), their types and codes, and extra fields.
func TestOpenAIErrors(t *testing.T) {
	quota := &agentd.Error{Code: agentd.EInsufficientQuota, Message: "insufficient balance",
		Fields: map[string]any{"required": agentd.Micros(2043), "available": agentd.Micros(0), "limit": "balance"}}
	busy := &agentd.Error{Code: agentd.ESessionBusy, Message: "another turn of this session is still running; retry in 2s",
		Fields: map[string]any{"retry_after": 2}}
	tooLong := &agentd.Error{Code: agentd.EInvalid, Message: "prompt does not fit",
		Fields: map[string]any{"required_tokens": 9000, "available_tokens": 8000}}
	cases := []struct {
		name         string
		err          error
		status       int
		typ, code    string
		param        any
		retryAfter   int
		extra, lacks []string
	}{
		{"validation", agentd.Invalid("Field required", "missing", "body", "messages", 0, "content"), 400, "invalid_request_error", "missing", "messages.[0].content", 0, nil, nil},
		{"header validation", agentd.Invalid("bad", "string_pattern_mismatch", "header", "X-Session-ID"), 400, "invalid_request_error", "string_pattern_mismatch", "X-Session-ID", 0, nil, nil},
		{"context length", tooLong, 400, "invalid_request_error", "context_length_exceeded", "messages", 0, []string{"required_tokens"}, nil},
		{"bad request", agentd.Errorf(agentd.EBadRequest, "X-Session-ID needs an agent"), 400, "invalid_request_error", "bad_request", nil, 0, nil, nil},
		{"model not available", agentd.Errorf(agentd.EModelUnavailable, "gone"), 400, "invalid_request_error", "model_not_available", nil, 0, nil, nil},
		{"payload too large", agentd.Errorf(agentd.EPayloadTooLarge, "big"), 413, "invalid_request_error", "payload_too_large", nil, 0, nil, nil},
		{"unauthenticated", agentd.Errorf(agentd.EUnauthenticated, "invalid API key"), 401, "authentication_error", "invalid_api_key", nil, 0, nil, nil},
		{"forbidden", agentd.Errorf(agentd.EForbidden, "lacks run"), 403, "permission_error", "forbidden", nil, 0, nil, nil},
		{"not found", agentd.Errorf(agentd.ENotFound, "nope"), 404, "not_found_error", "not_found", nil, 0, nil, nil},
		{"model not found", modelNotFound("agent/nobody"), 404, "not_found_error", "model_not_found", nil, 0, nil, nil},
		{"insufficient quota", quota, 402, "insufficient_quota", "insufficient_quota", nil, 0, []string{"required", "available", "limit"}, nil},
		{"rate limited", agentd.Errorf(agentd.ERateLimited, "slow down"), 429, "rate_limit_error", "rate_limit_exceeded", nil, 0, nil, nil},
		{"conflict", agentd.Errorf(agentd.EConflict, "in flight"), 409, "conflict_error", "conflict", nil, 0, nil, nil},
		{"session busy", busy, 409, "conflict_error", "session_busy", nil, 2, []string{"retry_after"}, nil},
		{"inference failed", agentd.Errorf(agentd.EInferenceFailed, "inference failed; nothing was charged"), 500, "server_error", "inference_failed", nil, 0, nil, nil},
		{"unavailable", agentd.Errorf(agentd.EUnavailable, "busy"), 503, "server_error", "unavailable", nil, 0, nil, nil},
		{"wrapped", fmt.Errorf("op: %w", agentd.Errorf(agentd.EForbidden, "no")), 403, "permission_error", "forbidden", nil, 0, nil, nil},
		{"not a client error", errors.New("disk on fire"), 500, "server_error", "internal", nil, 0, nil, []string{"disk"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := toOpenAIError(tc.err)
			if f.status != tc.status || f.body["type"] != tc.typ || f.body["code"] != tc.code || f.body["param"] != tc.param || f.retryAfter != tc.retryAfter {
				t.Errorf("got %d %v %v %v retry %d, want %d %s %s %v retry %d", f.status, f.body["type"], f.body["code"], f.body["param"], f.retryAfter,
					tc.status, tc.typ, tc.code, tc.param, tc.retryAfter)
			}
			for _, k := range tc.extra {
				if _, ok := f.body[k]; !ok {
					t.Errorf("body lacks %q: %v", k, f.body)
				}
			}
			b, _ := json.Marshal(f.body)
			for _, s := range tc.lacks {
				if strings.Contains(string(b), s) {
					t.Errorf("body %s shows %q", b, s)
				}
			}
			if m, _ := f.body["message"].(string); m == "" {
				t.Errorf("no message: %s", b)
			}
		})
	}
	// Every code of the status table has a type.
	for code := range statuses {
		if openAITypes[code] == "" {
			t.Errorf("code %q has no OpenAI type", code)
		}
	}
}

// TestWriteOpenAIError: the envelope on the wire, Retry-After, and an internal
// error that shows a request id, never its cause.
func TestWriteOpenAIError(t *testing.T) {
	var logs strings.Builder
	s := &Server{Log: slog.New(slog.NewTextHandler(&logs, nil))}
	w := httptest.NewRecorder()
	req := httptest.NewRequest("POST", "/v1/chat/completions", nil)
	req = req.WithContext(reqlog.With(req.Context(), &reqlog.Info{ID: "req-test-1"})) // as reqlog.Middleware gives it
	s.writeOpenAIError(w, req, &agentd.Error{Code: agentd.ESessionBusy, Message: "busy", Fields: map[string]any{"retry_after": 3}})
	if w.Code != 409 || w.Header().Get("Retry-After") != "3" || w.Header().Get("Content-Type") != "application/json" {
		t.Errorf("session busy: %d %v", w.Code, w.Header())
	}
	want := `{"error":{"code":"session_busy","message":"busy","param":null,"request_id":"req-test-1","retry_after":3,"type":"conflict_error"}}`
	if got := strings.TrimSpace(w.Body.String()); got != want {
		t.Errorf("body %s\nwant %s", got, want)
	}

	w = httptest.NewRecorder()
	s.writeOpenAIError(w, httptest.NewRequest("POST", "/v1/chat/completions", nil), fmt.Errorf("store: %w", errors.New("disk on fire")))
	var env struct {
		Error struct {
			Message, Type, Code string
			RequestID           string `json:"request_id"`
		}
	}
	if err := json.Unmarshal(w.Body.Bytes(), &env); err != nil {
		t.Fatal(err)
	}
	if w.Code != 500 || env.Error.Type != "server_error" || env.Error.Code != "internal" || strings.Contains(w.Body.String(), "disk") {
		t.Errorf("internal: %d %s", w.Code, w.Body)
	}
	id := strings.TrimSuffix(strings.TrimPrefix(env.Error.Message, "internal error (request "), ")")
	if !strings.HasPrefix(id, "req-") || id != env.Error.RequestID || !strings.Contains(logs.String(), id) || !strings.Contains(logs.String(), "disk on fire") {
		t.Errorf("message %q; log %q", env.Error.Message, logs.String())
	}
}

// TestOpenAIRoutes: the OpenAI paths reach their handlers; other paths under /v1
// get OpenAI's envelope (404, or 405 with the methods served).
func TestOpenAIRoutes(t *testing.T) {
	s := &Server{Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	h := s.Handler()
	mux := http.NewServeMux()
	s.routes(mux)
	for _, tc := range []struct{ method, path, pattern string }{
		{"POST", "/v1/chat/completions", "POST /v1/chat/completions"},
		{"POST", "/api/v3/inference/chat/completions", "POST /api/v3/inference/chat/completions"},
		{"GET", "/v1/models", "GET /v1/models"},
	} {
		if _, p := mux.Handler(httptest.NewRequest(tc.method, tc.path, nil)); p != tc.pattern {
			t.Errorf("%s %s matched %q", tc.method, tc.path, p)
		}
	}
	for _, tc := range []struct {
		method, path string
		status       int
		typ, allow   string
	}{
		{"GET", "/v1/chat/completions", 405, "invalid_request_error", "POST"},
		{"POST", "/v1/models/", 405, "invalid_request_error", "GET"},
		{"GET", "/v1/embeddings", 405, "invalid_request_error", "POST"},
		{"GET", "/v1/audio/speech", 404, "not_found_error", ""},
		{"GET", "/v1", 404, "not_found_error", ""},
		{"GET", "/v1/", 404, "not_found_error", ""},
	} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(tc.method, tc.path, nil))
		var env struct {
			Error struct{ Message, Type string }
		}
		if err := json.Unmarshal(w.Body.Bytes(), &env); err != nil || w.Code != tc.status || env.Error.Type != tc.typ || w.Header().Get("Allow") != tc.allow {
			t.Errorf("%s %s: %d %s (Allow %q)", tc.method, tc.path, w.Code, w.Body, w.Header().Get("Allow"))
		}
	}
}

func TestRequireAny(t *testing.T) {
	for _, tc := range []struct {
		have []agentd.Scope
		ok   bool
	}{
		{[]agentd.Scope{agentd.ScopeRun}, true},
		{[]agentd.Scope{agentd.ScopeAgentsRead}, true},
		{[]agentd.Scope{agentd.ScopeAgentsWrite}, true},
		{[]agentd.Scope{agentd.ScopeAdmin}, true},
		{[]agentd.Scope{agentd.ScopeOperator}, true},
		{[]agentd.Scope{agentd.ScopeUsage}, false},
		{nil, false},
	} {
		err := requireAny(&agentd.Principal{Scopes: tc.have}, agentd.ScopeAgentsRead, agentd.ScopeRun)
		if (err == nil) != tc.ok || (err != nil && agentd.ErrorCode(err) != agentd.EForbidden) {
			t.Errorf("%v: %v", tc.have, err)
		}
	}
}

// TestChatHash: the Idempotency-Key hash changes with everything the call asks,
// and not with how an agent's name is spelled.
func TestChatHash(t *testing.T) {
	base := func() *chatCall {
		return &chatCall{model: "agent/support_bot", agent: "support_bot", messages: []llm.Message{{Role: "user", Content: "hi"}}}
	}
	h0 := base().hash("s1")
	if h := base().hash("s1"); h != h0 || len(h) != 64 {
		t.Fatalf("hash not stable: %s %s", h, h0)
	}
	temp, mt := 0.5, 10
	for name, c := range map[string]func(c *chatCall){
		"model":       func(c *chatCall) { c.model, c.agent = "offline", "" },
		"message":     func(c *chatCall) { c.messages[0].Content = "hi!" },
		"role":        func(c *chatCall) { c.messages[0].Role = "system" },
		"more":        func(c *chatCall) { c.messages = append(c.messages, llm.Message{Role: "user", Content: ""}) },
		"temperature": func(c *chatCall) { c.temperature = &temp },
		"max tokens":  func(c *chatCall) { c.maxTokens = &mt },
		"stream":      func(c *chatCall) { c.stream = true },
	} {
		x := base()
		c(x)
		if x.hash("s1") == h0 {
			t.Errorf("%s: same hash", name)
		}
	}
	if base().hash("s2") == h0 {
		t.Error("session: same hash")
	}
	spelled := base()
	spelled.model = "agent/Support Bot"
	if spelled.hash("s1") != h0 {
		t.Error("agent spelling changes the hash")
	}
}

// TestChatRunError: an unknown agent is an unknown model; a max_tokens limit names
// the field the caller used.
func TestChatRunError(t *testing.T) {
	c := &chatCall{model: "agent/x", agent: "x", maxTokensField: "max_completion_tokens"}
	if f := toOpenAIError(c.runError(agentd.Errorf(agentd.ENotFound, "agent \"x\" not found"))); f.status != 404 || f.body["code"] != "model_not_found" {
		t.Errorf("unknown agent: %+v", f)
	}
	err := c.runError(agentd.Invalid("max_tokens must be between 1 and 100 (the agent's max_token)", "less_than_equal", "body", "max_tokens"))
	if f := toOpenAIError(err); f.body["param"] != "max_completion_tokens" || !strings.HasPrefix(f.body["message"].(string), "max_completion_tokens must be") {
		t.Errorf("max tokens: %+v", f)
	}
	c.maxTokensField = "max_tokens"
	if f := toOpenAIError(c.runError(agentd.Invalid("max_tokens must be between 1 and 100", "less_than_equal", "body", "max_tokens"))); f.body["param"] != "max_tokens" {
		t.Errorf("max tokens: %+v", f)
	}
	if got := finishReason(""); got != "stop" {
		t.Errorf("finishReason(\"\") = %q", got)
	}
	if got := finishReason(llm.FinishOther); got != "stop" {
		t.Errorf("finishReason(other) = %q", got)
	}
	if got := finishReason(llm.FinishLength); got != "length" {
		t.Errorf("finishReason(length) = %q", got)
	}
}

// FuzzChatRequest: any body either becomes a call whose last message is the
// user's, or fails with a 4xx in OpenAI's envelope; never a panic or a 500.
func FuzzChatRequest(f *testing.F) {
	for _, seed := range []string{
		`{"model":"m","messages":[{"role":"user","content":"hi"}]}`,
		`{"model":"agent/x","messages":[{"role":"system","content":[{"type":"text","text":"a"}]},{"role":"user","content":[]}]}`,
		`{"model":"m","messages":[{"role":"user","content":[{"type":"image_url"}]}],"n":2}`,
		`{"model":"m","messages":[{"role":"user","content":null}],"tools":[],"max_tokens":0}`,
		`{"model":"agent/","messages":"hi"}`, `[]`, `{}`, "\xff", `{"messages":[{"content":" \"x"}]}`,
		`{"model":"m","messages":[{"role":"user","content":"\udc00"}]}`, `{"model":"m\ud83d\ude42","messages":[{"role":"user","content":"\\ud800"}]}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var req chatRequest
		err := decodeJSON(body, &req)
		var c *chatCall
		if err == nil {
			c, err = req.call(64)
		}
		if err != nil {
			if code := agentd.ErrorCode(err); code == agentd.EInternal {
				t.Fatalf("internal error for %q: %v", body, err)
			}
			if f := toOpenAIError(err); f.status < 400 || f.status >= 500 {
				t.Fatalf("status %d for %q", f.status, body)
			}
			return
		}
		if c.model == "" || len(c.messages) == 0 || c.messages[len(c.messages)-1].Role != llm.RoleUser {
			t.Fatalf("accepted %q as %+v", body, c)
		}
		if !utf8.Valid(body) {
			t.Fatalf("accepted a body that is not UTF-8: %q", body)
		}
		decoded := []string{c.model}
		for _, m := range c.messages {
			decoded = append(decoded, m.Content)
		}
		noSilentReplacement(t, body, decoded...)
	})
}

// BenchmarkChatParams is what finding the parameters to pass on adds to a chat
// completion request: a second parse of the body's top level.
//
//	go test ./internal/api -run XXX -bench ChatParams
func BenchmarkChatParams(b *testing.B) {
	msgs := `"messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"` + strings.Repeat("word ", 200) + `"}]`
	for _, tc := range []struct{ name, body string }{
		{"plain", `{"model":"gpt-4o-mini",` + msgs + `,"temperature":0.2,"max_tokens":64}`},
		{"six params", `{"model":"gpt-4o-mini",` + msgs + `,"temperature":0.2,"max_tokens":64,"top_p":0.9,"stop":["\n\n"],"seed":7,"user":"u-1","metadata":{"team":"search"},"store":false}`},
	} {
		b.Run(tc.name, func(b *testing.B) {
			data := []byte(tc.body)
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				if _, err := bodyParams(data, chatHandled); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
