package anthropic_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentd/agentd/internal/llm"
	"github.com/agentd/agentd/internal/llm/anthropic"
	"github.com/agentd/agentd/internal/llm/llmtest"
)

// recording reads testdata/name, a raw HTTP reply (see testdata/README.md).
func recording(t testing.TB, name string) llmtest.Recording {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(raw)), nil)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return llmtest.Recording{Status: resp.StatusCode, Header: resp.Header, Body: body}
}

func TestConformance(t *testing.T) {
	llmtest.Run(t, llmtest.Wire{
		New: func(baseURL string) llm.Provider {
			return anthropic.New(anthropic.Options{BaseURL: baseURL, APIKey: "test-key"})
		},
		Path:         "/v1/messages",
		CheckRequest: checkRequest,
		Decode:       decode,

		Complete:        recording(t, "complete.http"),
		Stream:          recording(t, "stream.http"),
		StreamError:     recording(t, "stream_error.http"),
		StreamErrorKind: llm.KindRetryable,
		Errors: map[int]llmtest.Recording{
			400: recording(t, "error_400.http"),
			401: recording(t, "error_401.http"),
			403: recording(t, "error_403.http"),
			404: recording(t, "error_404.http"),
			413: recording(t, "error_413.http"),
			429: recording(t, "error_429.http"),
			500: recording(t, "error_500.http"),
			529: recording(t, "error_529.http"),
		},
		ContextTooLong: recording(t, "context_too_long.http"),
		Exhausted:      recording(t, "exhausted.http"),

		Text:   "Hello!",
		Usage:  llm.Usage{InputTokens: 25, OutputTokens: 15, Source: llm.SourceProvider},
		Model:  "claude-3-5-sonnet-20241022",
		Finish: llm.FinishStop,

		ToolComplete: recording(t, "tool_complete.http"),
		ToolStream:   recording(t, "tool_stream.http"),
		ToolText:     "I'll check tomorrow's weather in both cities.",
		ToolCalls: []llm.ToolCall{
			{ID: "toolu_01A09q90qw90lq917835lq9", Name: "get_weather", Arguments: `{"city":"Paris","day":"tomorrow"}`},
			{ID: "toolu_01T1x1fJ34qAmk2tNTrN7Up6", Name: "get_weather", Arguments: `{"city":"Lyon","day":"tomorrow"}`},
		},
		ToolUsage:          llm.Usage{InputTokens: 1587, OutputTokens: 118, Source: llm.SourceProvider},
		StructuredComplete: recording(t, "structured.http"),
		StructuredText:     `{"answer":6}`,
	})
}

func checkRequest(r *http.Request, body []byte, stream bool) error {
	if got := r.Header.Get("X-Api-Key"); got != "test-key" {
		return fmt.Errorf("x-api-key = %q, want test-key", got)
	}
	if got := r.Header.Get("Authorization"); got != "" {
		return fmt.Errorf("Authorization = %q; Anthropic authenticates with x-api-key", got)
	}
	if got := r.Header.Get("Anthropic-Version"); got != "2023-06-01" {
		return fmt.Errorf("anthropic-version = %q, want 2023-06-01", got)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		return fmt.Errorf("Content-Type = %q, want application/json", ct)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil {
		return err
	}
	if _, ok := fields["max_tokens"]; !ok {
		return errors.New("no max_tokens; Anthropic requires it")
	}
	s, ok := fields["stream"]
	switch {
	case stream && string(s) != "true":
		return fmt.Errorf(`a stream asks "stream": %s, want true`, s)
	case !stream && ok && string(s) != "false":
		return fmt.Errorf(`a whole reply asks "stream": %s`, s)
	}
	return nil
}

// wireRequest is the request body as the Messages API defines it. Decoding
// refuses fields it does not know, so the adapter sends nothing unchecked.
type wireRequest struct {
	Model       string          `json:"model"`
	MaxTokens   int             `json:"max_tokens"`
	System      *string         `json:"system"`
	Messages    []wireTurn      `json:"messages"`
	Temperature *float64        `json:"temperature"`
	Tools       []wireTool      `json:"tools"`
	ToolChoice  *wireToolChoice `json:"tool_choice"`
	Stream      bool            `json:"stream"`
}

type wireTurn struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"` // a string, or blocks
}

type wireBlock struct {
	Type      string          `json:"type"`
	Text      string          `json:"text"`
	Source    *wireSource     `json:"source"`
	ID        string          `json:"id"`
	Name      string          `json:"name"`
	Input     json.RawMessage `json:"input"`
	ToolUseID string          `json:"tool_use_id"`
	Content   json.RawMessage `json:"content"`
}

type wireSource struct {
	Type      string `json:"type"`
	URL       string `json:"url"`
	MediaType string `json:"media_type"`
	Data      string `json:"data"`
}

type wireTool struct {
	Name        string          `json:"name"`
	Description string          `json:"description"`
	InputSchema json.RawMessage `json:"input_schema"`
	Strict      *bool           `json:"strict"`
}

type wireToolChoice struct {
	Type                   string `json:"type"`
	Name                   string `json:"name"`
	DisableParallelToolUse bool   `json:"disable_parallel_tool_use"`
}

// turn is a turn whose content is a plain string.
type turn struct {
	Role    string
	Content string
}

func strictJSON(b []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	return d.Decode(v)
}

func parse(body []byte) (*wireRequest, error) {
	var w wireRequest
	if err := strictJSON(body, &w); err != nil {
		return nil, err
	}
	return &w, nil
}

// plainText is content sent as a string; ok is false for blocks.
func plainText(content json.RawMessage) (s string, ok bool) {
	return s, json.Unmarshal(content, &s) == nil
}

func blocksOf(content json.RawMessage) ([]wireBlock, error) {
	var bs []wireBlock
	if err := strictJSON(content, &bs); err != nil {
		return nil, fmt.Errorf("content %s: %w", content, err)
	}
	return bs, nil
}

// plain returns the turns, each of which must be a plain string.
func (w *wireRequest) plain(t *testing.T) []turn {
	t.Helper()
	out := make([]turn, len(w.Messages))
	for i, m := range w.Messages {
		s, ok := plainText(m.Content)
		if !ok {
			t.Fatalf("message %d is not a plain string: %s", i, m.Content)
		}
		out[i] = turn{m.Role, s}
	}
	return out
}

// decode maps a Messages request back to the neutral request: tool_result
// blocks to tool messages, a forced call of the only tool (with parallel use
// off) to the response format it asks, blocks to parts.
func decode(body []byte) (*llm.Request, bool, error) {
	w, err := parse(body)
	if err != nil {
		return nil, false, err
	}
	req := &llm.Request{Model: w.Model, MaxTokens: w.MaxTokens}
	if w.Temperature != nil {
		req.Temperature = *w.Temperature
	}
	if w.System != nil {
		req.Messages = append(req.Messages, llm.Message{Role: llm.RoleSystem, Content: *w.System})
	}
	for _, m := range w.Messages {
		msgs, err := decodeTurn(m)
		if err != nil {
			return nil, false, err
		}
		req.Messages = append(req.Messages, msgs...)
	}
	if err := decodeTools(w, req); err != nil {
		return nil, false, err
	}
	return req, w.Stream, nil
}

func decodeTurn(m wireTurn) ([]llm.Message, error) {
	if s, ok := plainText(m.Content); ok {
		return []llm.Message{{Role: m.Role, Content: s}}, nil
	}
	bs, err := blocksOf(m.Content)
	if err != nil {
		return nil, err
	}
	var out []llm.Message
	i := 0
	for ; i < len(bs) && bs[i].Type == "tool_result"; i++ {
		if m.Role != llm.RoleUser {
			return nil, fmt.Errorf("a tool_result in a %s message", m.Role)
		}
		msg := llm.Message{Role: llm.RoleTool, ToolCallID: bs[i].ToolUseID}
		if c := bs[i].Content; c != nil {
			if s, ok := plainText(c); ok {
				msg.Content = s
			} else if inner, err := blocksOf(c); err != nil {
				return nil, err
			} else if msg.Parts, err = decodeParts(inner); err != nil {
				return nil, err
			}
		}
		out = append(out, msg)
	}
	rest := bs[i:]
	switch {
	case len(rest) == 0:
	case m.Role == llm.RoleUser && i > 0 && len(rest) == 1 && rest[0].Type == "text":
		// A user message after tool results joins their turn as a text block.
		out = append(out, llm.Message{Role: llm.RoleUser, Content: rest[0].Text})
	case m.Role == llm.RoleUser:
		parts, err := decodeParts(rest)
		if err != nil {
			return nil, err
		}
		out = append(out, llm.Message{Role: llm.RoleUser, Parts: parts})
	case m.Role == llm.RoleAssistant:
		msg := llm.Message{Role: llm.RoleAssistant}
		for _, b := range rest {
			switch b.Type {
			case "text":
				msg.Content += b.Text
			case "tool_use":
				msg.ToolCalls = append(msg.ToolCalls, llm.ToolCall{ID: b.ID, Name: b.Name, Arguments: string(b.Input)})
			default:
				return nil, fmt.Errorf("a %s block in an assistant message", b.Type)
			}
		}
		out = append(out, msg)
	default:
		return nil, fmt.Errorf("blocks in a message of role %q", m.Role)
	}
	return out, nil
}

func decodeParts(bs []wireBlock) ([]llm.Part, error) {
	parts := make([]llm.Part, len(bs))
	for i, b := range bs {
		switch {
		case b.Type == "text":
			parts[i] = llm.Part{Type: llm.PartText, Text: b.Text}
		case b.Type == "image" && b.Source != nil && b.Source.Type == "url":
			parts[i] = llm.Part{Type: llm.PartImage, ImageURL: b.Source.URL}
		case b.Type == "image" && b.Source != nil && b.Source.Type == "base64":
			parts[i] = llm.Part{Type: llm.PartImage, ImageURL: "data:" + b.Source.MediaType + ";base64," + b.Source.Data}
		default:
			return nil, fmt.Errorf("unexpected block %+v", b)
		}
	}
	return parts, nil
}

func decodeTools(w *wireRequest, req *llm.Request) error {
	if c := w.ToolChoice; len(w.Tools) == 1 && c != nil && c.Type == "tool" && c.Name == w.Tools[0].Name && c.DisableParallelToolUse {
		t := w.Tools[0]
		rf := &llm.ResponseFormat{Type: llm.FormatJSONSchema, Name: t.Name, Description: t.Description, Schema: []byte(t.InputSchema), Strict: t.Strict}
		if t.Name == "json_response" {
			rf.Name = ""
			if string(t.InputSchema) == `{"type":"object"}` {
				rf.Type, rf.Schema = llm.FormatJSONObject, nil
			}
		}
		req.ResponseFormat = rf
		return nil
	}
	for _, t := range w.Tools {
		params := []byte(t.InputSchema)
		if string(params) == `{"type":"object","properties":{}}` {
			params = nil // what a tool without parameters is sent with
		}
		req.Tools = append(req.Tools, llm.Tool{Name: t.Name, Description: t.Description, Parameters: params, Strict: t.Strict})
	}
	if c := w.ToolChoice; c != nil {
		mode, ok := map[string]string{"auto": llm.ToolChoiceAuto, "any": llm.ToolChoiceRequired, "tool": llm.ToolChoiceFunction, "none": llm.ToolChoiceNone}[c.Type]
		if !ok {
			return fmt.Errorf("tool_choice of type %q", c.Type)
		}
		req.ToolChoice = &llm.ToolChoice{Mode: mode, Name: c.Name}
		if c.DisableParallelToolUse {
			no := false
			req.ParallelToolCalls = &no
		}
	}
	return nil
}

// upstream is a test server answering every request with one reply.
type upstream struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []*http.Request
	body [][]byte
}

func serve(t testing.TB, status int, contentType, body string) *upstream {
	t.Helper()
	u := &upstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		u.mu.Lock()
		u.reqs, u.body = append(u.reqs, r), append(u.body, b)
		u.mu.Unlock()
		w.Header().Set("Content-Type", contentType)
		w.WriteHeader(status)
		io.WriteString(w, body)
	}))
	t.Cleanup(u.Close)
	return u
}

func (u *upstream) last(t *testing.T) (*http.Request, *wireRequest) {
	t.Helper()
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.reqs) == 0 {
		t.Fatal("no request reached the server")
	}
	w, err := parse(u.body[len(u.body)-1])
	if err != nil {
		t.Fatalf("request body: %v\n%s", err, u.body[len(u.body)-1])
	}
	return u.reqs[len(u.reqs)-1], w
}

func (u *upstream) count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.reqs)
}

func (u *upstream) provider() *anthropic.Provider {
	return anthropic.New(anthropic.Options{BaseURL: u.URL, APIKey: "test-key"})
}

const okReply = `{"id":"msg_1","type":"message","role":"assistant","content":[{"type":"text","text":"ok"}],"model":"claude-test","stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":3,"output_tokens":1}}`

func msgs(roleContent ...string) []llm.Message {
	var out []llm.Message
	for i := 0; i < len(roleContent); i += 2 {
		out = append(out, llm.Message{Role: roleContent[i], Content: roleContent[i+1]})
	}
	return out
}

func complete(t *testing.T, p *anthropic.Provider, req *llm.Request) (*llm.Response, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // a failure guard
	defer cancel()
	return p.Complete(ctx, req)
}

func stream(t *testing.T, p *anthropic.Provider, req *llm.Request) ([]string, *llm.Response, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // a failure guard
	defer cancel()
	var pieces []string
	resp, err := p.Stream(ctx, req, func(s string) error {
		pieces = append(pieces, s)
		return nil
	})
	return pieces, resp, err
}

func wantKind(t *testing.T, err error, kind llm.Kind) *llm.Error {
	t.Helper()
	var e *llm.Error
	if !errors.As(err, &e) {
		t.Fatalf("err = %v (%T), want an *llm.Error", err, err)
	}
	if e.Kind != kind {
		t.Errorf("kind = %v, want %v (%v)", e.Kind, kind, err)
	}
	return e
}

func TestMergesConsecutiveRoles(t *testing.T) {
	u := serve(t, 200, "application/json", okReply)
	_, err := complete(t, u.provider(), &llm.Request{Model: "m", Messages: msgs(
		llm.RoleUser, "a", llm.RoleUser, "b",
		llm.RoleAssistant, "c", llm.RoleAssistant, "d",
		llm.RoleUser, "e")})
	if err != nil {
		t.Fatal(err)
	}
	_, w := u.last(t)
	want := []turn{{"user", "a\n\nb"}, {"assistant", "c\n\nd"}, {"user", "e"}}
	if got := w.plain(t); !reflect.DeepEqual(got, want) {
		t.Errorf("messages = %q, want %q", got, want)
	}
}

func TestSystemMessages(t *testing.T) {
	u := serve(t, 200, "application/json", okReply)
	p := u.provider()
	// Every system message, wherever it stands, joins the system prompt; the turns
	// it stood between then merge.
	_, err := complete(t, p, &llm.Request{Model: "m", Messages: msgs(
		llm.RoleSystem, "Be terse.", llm.RoleUser, "x",
		llm.RoleSystem, "Answer in French.", llm.RoleUser, "y",
		llm.RoleSystem, "")})
	if err != nil {
		t.Fatal(err)
	}
	_, w := u.last(t)
	if w.System == nil || *w.System != "Be terse.\n\nAnswer in French." {
		t.Errorf("system = %v", w.System)
	}
	if want, got := []turn{{"user", "x\n\ny"}}, w.plain(t); !reflect.DeepEqual(got, want) {
		t.Errorf("messages = %q, want %q", got, want)
	}

	if _, err := complete(t, p, &llm.Request{Model: "m", Messages: msgs(llm.RoleUser, "x")}); err != nil {
		t.Fatal(err)
	}
	if _, w := u.last(t); w.System != nil {
		t.Errorf("system = %q with no system message, want it omitted", *w.System)
	}
}

func TestRejectsUnsendableConversations(t *testing.T) {
	u := serve(t, 200, "application/json", okReply)
	p := u.provider()
	for name, req := range map[string]*llm.Request{
		"starts with assistant": {Model: "m", Messages: msgs(llm.RoleSystem, "s", llm.RoleAssistant, "hello", llm.RoleUser, "hi")},
		"no user message":       {Model: "m", Messages: msgs(llm.RoleSystem, "s")},
		"unknown role":          {Model: "m", Messages: msgs(llm.RoleUser, "x", "function", "y")},
		"NaN temperature":       {Model: "m", Messages: msgs(llm.RoleUser, "x"), Temperature: math.NaN()},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := complete(t, p, req)
			wantKind(t, err, llm.KindPermanent)
			pieces, resp, err := stream(t, p, req)
			wantKind(t, err, llm.KindPermanent)
			if resp == nil || len(pieces) != 0 {
				t.Errorf("Stream returned %v, emitted %q", resp, pieces)
			}
		})
	}
	if n := u.count(); n != 0 {
		t.Errorf("%d requests sent for conversations Anthropic would reject", n)
	}
	_, err := complete(t, p, &llm.Request{Model: "m", Messages: msgs(llm.RoleAssistant, "hello", llm.RoleUser, "hi")})
	if e := wantKind(t, err, llm.KindPermanent); !strings.Contains(e.Message, "assistant") {
		t.Errorf("message %q does not name the problem", e.Message)
	}
}

func TestMaxTokensAndTemperature(t *testing.T) {
	u := serve(t, 200, "application/json", okReply)
	p := u.provider()
	for _, tc := range []struct {
		maxTokens, wantMax int
		temp, wantTemp     float64
	}{
		{0, anthropic.DefaultMaxTokens, 0.7, 0.7},
		{-5, 4096, 0, 0}, // 0 is sent: it asks for the most deterministic reply
		{100, 100, 1.7, 1},
		{100, 100, 2, 1},
		{100, 100, -0.5, 0},
	} {
		if _, err := complete(t, p, &llm.Request{Model: "m", Messages: msgs(llm.RoleUser, "x"), MaxTokens: tc.maxTokens, Temperature: tc.temp}); err != nil {
			t.Fatal(err)
		}
		_, w := u.last(t)
		if w.MaxTokens != tc.wantMax {
			t.Errorf("MaxTokens %d → max_tokens %d, want %d", tc.maxTokens, w.MaxTokens, tc.wantMax)
		}
		if w.Temperature == nil || *w.Temperature != tc.wantTemp {
			t.Errorf("Temperature %v → temperature %v, want %v", tc.temp, w.Temperature, tc.wantTemp)
		}
	}
}

func TestHeaders(t *testing.T) {
	u := serve(t, 200, "application/json", okReply)
	p := anthropic.New(anthropic.Options{BaseURL: u.URL, APIKey: "k", Version: "2024-01-01", Headers: map[string]string{
		"anthropic-beta": "prompt-caching-2024-07-31",
		"x-api-key":      "not-this",
		"X-Proxy-Token":  "p",
	}})
	if _, err := complete(t, p, &llm.Request{Model: "m", Messages: msgs(llm.RoleUser, "x")}); err != nil {
		t.Fatal(err)
	}
	r, _ := u.last(t)
	for k, want := range map[string]string{
		"Anthropic-Beta": "prompt-caching-2024-07-31", "X-Proxy-Token": "p",
		"X-Api-Key": "k", "Anthropic-Version": "2024-01-01", "Content-Type": "application/json",
	} {
		if got := r.Header.Values(k); len(got) != 1 || got[0] != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}

	p = anthropic.New(anthropic.Options{BaseURL: u.URL})
	if _, err := complete(t, p, &llm.Request{Model: "m", Messages: msgs(llm.RoleUser, "x")}); err != nil {
		t.Fatal(err)
	}
	if r, _ := u.last(t); r.Header.Get("X-Api-Key") != "" || r.Header.Get("Anthropic-Version") != anthropic.DefaultVersion {
		t.Errorf("no key: headers %v", r.Header)
	}
}

func TestBaseURL(t *testing.T) {
	u := serve(t, 200, "application/json", okReply)
	for _, base := range []string{u.URL + "/", u.URL + "//", u.URL + "/proxy/"} {
		p := anthropic.New(anthropic.Options{BaseURL: base, APIKey: "k"})
		if _, err := complete(t, p, &llm.Request{Model: "m", Messages: msgs(llm.RoleUser, "x")}); err != nil {
			t.Fatal(err)
		}
		r, _ := u.last(t)
		want := "/v1/messages"
		if strings.HasSuffix(base, "/proxy/") {
			want = "/proxy/v1/messages"
		}
		if r.URL.Path != want {
			t.Errorf("BaseURL %q posts to %q, want %q", base, r.URL.Path, want)
		}
	}
}

func TestCompleteReply(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		want       llm.Response
	}{
		{"cache tokens are input", `{"id":"msg_1","type":"message","role":"assistant","content":[{"type":"text","text":"hi"}],"model":"claude-x","stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":21,"cache_creation_input_tokens":188086,"cache_read_input_tokens":5,"output_tokens":393}}`,
			llm.Response{Text: "hi", FinishReason: llm.FinishStop, Model: "claude-x", Usage: llm.Usage{InputTokens: 188112, OutputTokens: 393, CachedInputTokens: 5, CacheWriteTokens: 188086, Source: llm.SourceProvider}}},
		{"thinking is skipped, tool use is a call", `{"id":"msg_1","type":"message","role":"assistant","content":[{"type":"thinking","thinking":"Let me add.","signature":"EqQB"},{"type":"redacted_thinking","data":"xyz"},{"type":"text","text":"It is "},{"type":"tool_use","id":"toolu_1","name":"calc","input":{ "x" : 1,"s":"a<b \u00e9" }},{"type":"text","text":"4."}],"model":"claude-x","stop_reason":"tool_use","stop_sequence":null,"usage":{"input_tokens":10,"output_tokens":20}}`,
			llm.Response{Text: "It is 4.", ToolCalls: []llm.ToolCall{{ID: "toolu_1", Name: "calc", Arguments: `{"x":1,"s":"a<b \u00e9"}`}},
				FinishReason: llm.FinishToolCalls, Model: "claude-x", Usage: llm.Usage{InputTokens: 10, OutputTokens: 20, Source: llm.SourceProvider}}},
		{"max tokens", `{"type":"message","content":[{"type":"text","text":"cut"}],"model":"m","stop_reason":"max_tokens","usage":{"input_tokens":1,"output_tokens":2}}`,
			llm.Response{Text: "cut", FinishReason: llm.FinishLength, Model: "m", Usage: llm.Usage{InputTokens: 1, OutputTokens: 2, Source: llm.SourceProvider}}},
		{"stop sequence", `{"type":"message","content":[{"type":"text","text":"a"}],"model":"m","stop_reason":"stop_sequence","stop_sequence":"\n\nHuman:","usage":{"input_tokens":1,"output_tokens":2}}`,
			llm.Response{Text: "a", FinishReason: llm.FinishStop, Model: "m", Usage: llm.Usage{InputTokens: 1, OutputTokens: 2, Source: llm.SourceProvider}}},
		{"no usage is not invented", `{"type":"message","content":[{"type":"text","text":"a"}],"model":"m","stop_reason":"refusal"}`,
			llm.Response{Text: "a", FinishReason: llm.FinishOther, Model: "m"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := serve(t, 200, "application/json", tc.body)
			resp, err := complete(t, u.provider(), &llm.Request{Model: "m", Messages: msgs(llm.RoleUser, "x")})
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(*resp, tc.want) {
				t.Errorf("got %+v\nwant %+v", *resp, tc.want)
			}
		})
	}
}

func TestCompleteNotAMessage(t *testing.T) {
	// An OpenAI-style reply at an Anthropic URL: a misconfiguration, not an empty answer.
	u := serve(t, 200, "application/json", `{"id":"chatcmpl-1","object":"chat.completion","choices":[]}`)
	_, err := complete(t, u.provider(), &llm.Request{Model: "m", Messages: msgs(llm.RoleUser, "x")})
	wantKind(t, err, llm.KindPermanent)
}

func TestErrors(t *testing.T) {
	for _, tc := range []struct {
		name        string
		status      int
		contentType string
		body        string
		kind        llm.Kind
		code, msg   string
	}{
		{"credit", 400, "application/json", `{"type":"error","error":{"type":"invalid_request_error","message":"Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits."},"request_id":"req_1"}`,
			llm.KindExhausted, "invalid_request_error", "Your credit balance is too low"},
		{"usage limit", 400, "application/json", `{"type":"error","error":{"type":"invalid_request_error","message":"You have reached your specified API usage limits. You will regain access on 2026-04-01 at 00:00 UTC."},"request_id":"req_1"}`,
			llm.KindExhausted, "invalid_request_error", "You have reached"},
		{"billing", 402, "application/json", `{"type":"error","error":{"type":"billing_error","message":"There is an issue with your billing."},"request_id":"req_1"}`,
			llm.KindExhausted, "billing_error", "There is an issue"},
		{"spend limit", 429, "application/json", `{"type":"error","error":{"type":"rate_limit_error","message":"Spend limit reached.","details":{"error_code":"enforced_spend_limit_reached"}},"request_id":"req_1"}`,
			llm.KindExhausted, "rate_limit_error", "Spend limit reached."},
		{"context limit", 400, "application/json", `{"type":"error","error":{"type":"invalid_request_error","message":"input length and ` + "`max_tokens`" + ` exceed context limit: 188240 + 21333 > 200000, decrease input length or ` + "`max_tokens`" + ` and try again"}}`,
			llm.KindContextLength, "invalid_request_error", "input length"},
		{"permission", 403, "application/json", `{"type":"error","error":{"type":"permission_error","message":"Your API key does not have permission to use the specified resource."},"request_id":"req_1"}`,
			llm.KindPermanent, "permission_error", "Your API key"},
		{"too large from the edge", 413, "text/html", "<html>\r\n<head><title>413 Request Entity Too Large</title></head>\r\n<body>\r\n<center><h1>413 Request Entity Too Large</h1></center>\r\n<hr><center>cloudflare</center>\r\n</body>\r\n</html>\r\n" + strings.Repeat("<!-- padding -->\n", 20),
			llm.KindPermanent, "", "<html>"},
		{"empty 503", 503, "text/plain", "", llm.KindRetryable, "", "Service Unavailable"},
		{"overloaded", 529, "application/json", `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_1"}`,
			llm.KindRetryable, "overloaded_error", "Overloaded"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := serve(t, tc.status, tc.contentType, tc.body)
			_, err := complete(t, u.provider(), &llm.Request{Model: "m", Messages: msgs(llm.RoleUser, "x")})
			e := wantKind(t, err, tc.kind)
			if e.StatusCode != tc.status || e.Code != tc.code || !strings.HasPrefix(e.Message, tc.msg) {
				t.Errorf("got status %d code %q message %q, want %d %q %q…", e.StatusCode, e.Code, e.Message, tc.status, tc.code, tc.msg)
			}
			if len(e.Message) > 200 {
				t.Errorf("message of %d bytes; a non-JSON body is cut to 200", len(e.Message))
			}
		})
	}
}

// sse builds a stream from (event, data) pairs.
func sse(pairs ...string) string {
	var b strings.Builder
	for i := 0; i < len(pairs); i += 2 {
		fmt.Fprintf(&b, "event: %s\ndata: %s\n\n", pairs[i], pairs[i+1])
	}
	return b.String()
}

const (
	evStart = `{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"claude-x","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":472,"cache_creation_input_tokens":100,"cache_read_input_tokens":2000,"output_tokens":2}}}`
	evBlock = `{"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}}`
	evStop  = `{"type":"message_stop"}`
)

func delta(text string) string {
	b, _ := json.Marshal(text)
	return `{"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":` + string(b) + `}}`
}

func TestStreamReply(t *testing.T) {
	body := sse(
		"message_start", evStart,
		"content_block_start", `{"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":"","signature":""}}`,
		"content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"2+2 is 4."}}`,
		"content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"EqQBCgIYAhIM"}}`,
		"content_block_stop", `{"type":"content_block_stop","index":0}`,
		"content_block_start", evBlock,
		"content_block_delta", delta("It is"),
		"content_block_delta", delta(""), // never emitted
		"content_block_citation", `{"type":"content_block_citation","index":1,"citation":{}}`, // a type Anthropic may add
		"content_block_delta", `{"type":"content_block_delta","index":1,"delta":{"type":"citations_delta","citation":{}}}`,
		"content_block_delta", delta(" 4."),
		"content_block_stop", `{"type":"content_block_stop","index":1}`,
		"content_block_start", `{"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_1","name":"calc","input":{}}}`,
		"content_block_delta", `{"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"{\"x\": 1}"}}`,
		"content_block_stop", `{"type":"content_block_stop","index":2}`,
		// Newer API versions repeat (and may raise) the input counts in message_delta.
		"message_delta", `{"type":"message_delta","delta":{"stop_reason":"max_tokens","stop_sequence":null},"usage":{"input_tokens":480,"cache_creation_input_tokens":100,"cache_read_input_tokens":2000,"output_tokens":57}}`,
		"message_stop", evStop,
	) + ": trailing comment\n\n"
	u := serve(t, 200, "text/event-stream; charset=utf-8", body)
	pieces, resp, err := stream(t, u.provider(), &llm.Request{Model: "m", Messages: msgs(llm.RoleUser, "x")})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"It is", " 4."}; !reflect.DeepEqual(pieces, want) {
		t.Errorf("pieces = %q, want %q", pieces, want)
	}
	want := llm.Response{Text: "It is 4.", ToolCalls: []llm.ToolCall{{ID: "toolu_1", Name: "calc", Arguments: `{"x": 1}`}}, FinishReason: llm.FinishLength, Model: "claude-x",
		Usage: llm.Usage{InputTokens: 480 + 100 + 2000, OutputTokens: 57, CachedInputTokens: 2000, CacheWriteTokens: 100, Source: llm.SourceProvider}}
	if !reflect.DeepEqual(*resp, want) {
		t.Errorf("got %+v\nwant %+v", *resp, want)
	}
}

func TestStreamDispatchesOnData(t *testing.T) {
	// The data's type decides, whatever the event line says; no event line at all
	// is fine too.
	body := "data: " + evStart + "\n\n" +
		"event: ping\ndata: " + delta("a") + "\n\n" +
		"data: " + delta("b") + "\n\n" +
		"data: " + `{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":2}}` + "\n\n" +
		"event: message_stop\ndata: {}\n\n" // no type in the data: the event line names it
	u := serve(t, 200, "text/event-stream", body)
	pieces, resp, err := stream(t, u.provider(), &llm.Request{Model: "m", Messages: msgs(llm.RoleUser, "x")})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(pieces, "|") != "a|b" || resp.Usage.OutputTokens != 2 || resp.FinishReason != llm.FinishStop {
		t.Errorf("pieces %q, resp %+v", pieces, resp)
	}
}

func TestStreamErrorEvents(t *testing.T) {
	for typ, kind := range map[string]llm.Kind{
		"overloaded_error":      llm.KindRetryable,
		"api_error":             llm.KindRetryable,
		"rate_limit_error":      llm.KindRetryable,
		"timeout_error":         llm.KindRetryable,
		"some_future_error":     llm.KindRetryable,
		"invalid_request_error": llm.KindPermanent,
		"authentication_error":  llm.KindPermanent,
		"permission_error":      llm.KindPermanent,
		"not_found_error":       llm.KindPermanent,
		"billing_error":         llm.KindExhausted,
	} {
		t.Run(typ, func(t *testing.T) {
			u := serve(t, 200, "text/event-stream", sse(
				"message_start", evStart, "content_block_start", evBlock, "content_block_delta", delta("partial"),
				"error", `{"type":"error","error":{"type":"`+typ+`","message":"boom"}}`))
			pieces, resp, err := stream(t, u.provider(), &llm.Request{Model: "m", Messages: msgs(llm.RoleUser, "x")})
			e := wantKind(t, err, kind)
			if e.Code != typ || e.Message != "boom" || e.StatusCode != 0 {
				t.Errorf("error %+v", e)
			}
			if resp == nil || resp.Text != "partial" || resp.Model != "claude-x" || strings.Join(pieces, "") != "partial" {
				t.Fatalf("resp %+v, pieces %q", resp, pieces)
			}
			// message_start's output count is a placeholder: reporting it would
			// undercount the text already emitted, so the caller estimates.
			if resp.Usage != (llm.Usage{}) {
				t.Errorf("usage %+v before the final counts, want none", resp.Usage)
			}
		})
	}
}

func TestStreamCutAfterFinalUsage(t *testing.T) {
	u := serve(t, 200, "text/event-stream", sse(
		"message_start", evStart, "content_block_start", evBlock, "content_block_delta", delta("done"),
		"message_delta", `{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":9}}`))
	_, resp, err := stream(t, u.provider(), &llm.Request{Model: "m", Messages: msgs(llm.RoleUser, "x")})
	wantKind(t, err, llm.KindRetryable)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("err = %v, want it to wrap io.ErrUnexpectedEOF", err)
	}
	want := llm.Usage{InputTokens: 2572, OutputTokens: 9, CachedInputTokens: 2000, CacheWriteTokens: 100, Source: llm.SourceProvider}
	if resp.Text != "done" || resp.Usage != want {
		t.Errorf("resp %+v, want text done and usage %+v", resp, want)
	}
}

func TestStreamNotAnEventStream(t *testing.T) {
	// A proxy that ignored "stream": true.
	u := serve(t, 200, "application/json", okReply)
	pieces, resp, err := stream(t, u.provider(), &llm.Request{Model: "m", Messages: msgs(llm.RoleUser, "x")})
	wantKind(t, err, llm.KindPermanent)
	if resp == nil || len(pieces) != 0 {
		t.Errorf("resp %v, pieces %q", resp, pieces)
	}
}

func TestStreamHTTPError(t *testing.T) {
	u := serve(t, 529, "application/json", `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_1"}`)
	_, resp, err := stream(t, u.provider(), &llm.Request{Model: "m", Messages: msgs(llm.RoleUser, "x")})
	if e := wantKind(t, err, llm.KindRetryable); e.StatusCode != 529 || e.Code != "overloaded_error" {
		t.Errorf("error %+v", e)
	}
	if resp == nil {
		t.Error("Stream returned no Response")
	}
}

// roundTripper writes to the request's headers, as many hand-written ones do.
type roundTripper struct{ n int64 }

func (rt *roundTripper) RoundTrip(r *http.Request) (*http.Response, error) {
	r.Header.Set("X-Attempt", fmt.Sprint(atomic.AddInt64(&rt.n, 1)))
	return http.DefaultTransport.RoundTrip(r)
}

func TestCallerClient(t *testing.T) {
	// Run with -race: the adapter must not share its header map with a Client that
	// writes to it.
	u := serve(t, 200, "application/json", okReply)
	p := anthropic.New(anthropic.Options{BaseURL: u.URL, APIKey: "k", Client: &http.Client{Transport: &roundTripper{}}})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // a failure guard
			defer cancel()
			if _, err := p.Complete(ctx, &llm.Request{Model: "m", Messages: msgs(llm.RoleUser, "x")}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if r, _ := u.last(t); r.Header.Get("X-Api-Key") != "k" || len(r.Header.Values("X-Attempt")) != 1 {
		t.Errorf("headers %v", r.Header)
	}
}

func BenchmarkComplete(b *testing.B) {
	rec := recording(b, "complete.http")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Write(rec.Body)
	}))
	defer srv.Close()
	p := anthropic.New(anthropic.Options{BaseURL: srv.URL, APIKey: "test-key"})
	req := &llm.Request{Model: "claude-3-5-sonnet-20241022", Temperature: 0.7, MaxTokens: 1000, Messages: msgs(
		llm.RoleSystem, "You are a support agent. Answer briefly.",
		llm.RoleUser, "How do I reset my password?",
		llm.RoleAssistant, "Open Settings, then Security, then Reset password.",
		llm.RoleUser, "And my username?")}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := p.Complete(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkStream(b *testing.B) {
	rec := recording(b, "stream.http")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/event-stream; charset=utf-8")
		w.Write(rec.Body)
	}))
	defer srv.Close()
	p := anthropic.New(anthropic.Options{BaseURL: srv.URL, APIKey: "test-key"})
	req := &llm.Request{Model: "claude-3-5-sonnet-20241022", Temperature: 0.7, MaxTokens: 1000, Messages: msgs(
		llm.RoleSystem, "You are a support agent. Answer briefly.",
		llm.RoleUser, "How do I reset my password?")}
	ctx := context.Background()
	emit := func(string) error { return nil }
	b.ReportAllocs()
	for b.Loop() {
		if _, err := p.Stream(ctx, req, emit); err != nil {
			b.Fatal(err)
		}
	}
}
