package api

// Text completions — POST /v1/completions and NuGen's POST
// /api/v3/inference/completions — through the chat path: the prompt is the one
// user message of a chat call (after an agent's fixed part with model
// agent/<name>), and the reply comes back as OpenAI's text_completion. Everything
// else is the chat endpoint's: sessions, Idempotency-Key, parameters passed on,
// errors.

import (
	"encoding/json"
	"net/http"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/internal/llm"
)

// defaultCompletionTokens is the reply limit of a completion that names none on
// a raw model, OpenAI's and NuGen's documented default.
const defaultCompletionTokens = 16

// completionRequest is a text completion request: the fields agentd takes.
type completionRequest struct {
	Model         *string         `json:"model"`
	Prompt        json.RawMessage `json:"prompt"`
	Stream        *bool           `json:"stream"`
	StreamOptions *struct {
		IncludeUsage *bool `json:"include_usage"`
	} `json:"stream_options"`
	Temperature *float64        `json:"temperature"`
	MaxTokens   *int            `json:"max_tokens"`
	N           *int            `json:"n"`
	BestOf      *int            `json:"best_of"`
	Echo        *bool           `json:"echo"`
	Suffix      *string         `json:"suffix"`
	Logprobs    json.RawMessage `json:"logprobs"`
}

// completionHandled are the fields agentd takes itself; the others go to the
// model as on a chat call.
var completionHandled = map[string]bool{
	"model": true, "prompt": true, "stream": true, "stream_options": true, "temperature": true,
	"max_tokens": true, "n": true, "best_of": true, "echo": true, "suffix": true, "logprobs": true,
}

// chat validates req as the chat call it becomes.
func (req *completionRequest) chat(maxChars int) (*chatCall, error) {
	prompt, err := promptText(req.Prompt)
	if err != nil {
		return nil, err
	}
	switch {
	case req.N != nil && *req.N != 1:
		return nil, unsupported("n must be 1: agentd returns one choice", "n")
	case req.BestOf != nil && *req.BestOf != 1:
		return nil, unsupported("best_of must be 1: agentd returns one choice", "best_of")
	case req.Echo != nil && *req.Echo:
		return nil, unsupported("echo is not supported: the reply is the completion alone", "echo")
	case req.Suffix != nil:
		return nil, unsupported("suffix is not supported: completions go through chat, which has no insertion", "suffix")
	case given(req.Logprobs):
		return nil, unsupported("logprobs is not supported on completions", "logprobs")
	}
	role := "user"
	content, _ := json.Marshal(prompt)
	cr := chatRequest{Model: req.Model, Messages: []chatMessage{{Role: &role, Content: content}},
		Stream: req.Stream, StreamOptions: req.StreamOptions, Temperature: req.Temperature, MaxTokens: req.MaxTokens}
	c, err := cr.call(maxChars)
	if err != nil {
		return nil, promptError(err)
	}
	c.api = "openai.completion"
	return c, nil
}

// promptText is a completion's prompt: a string, or a list of one string.
func promptText(raw json.RawMessage) (string, error) {
	if !given(raw) {
		return "", agentd.Invalid("Field required", "missing", "body", "prompt")
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, nil
	}
	var list []json.RawMessage
	if json.Unmarshal(raw, &list) != nil {
		return "", agentd.Invalid("Input should be a string or a list of strings", "string_type", "body", "prompt")
	}
	if len(list) != 1 {
		return "", unsupported("prompt must be one string: agentd completes one prompt per request", "prompt")
	}
	if json.Unmarshal(list[0], &s) != nil {
		return "", unsupported("token-id prompts are not supported: send text", "prompt", 0)
	}
	return s, nil
}

// promptError names the prompt where the chat call's validation named its one
// message.
func promptError(err error) error {
	e, ok := err.(*agentd.Error)
	if !ok || len(e.Violations) != 1 || len(e.Violations[0].Loc) < 2 || e.Violations[0].Loc[1] != "messages" {
		return err
	}
	v := e.Violations[0]
	return agentd.Invalid(v.Msg, v.Type, "body", "prompt")
}

type textCompletion struct {
	ID      string         `json:"id"`
	Object  string         `json:"object"`
	Created int64          `json:"created"`
	Model   string         `json:"model"`
	Choices []textChoice   `json:"choices"`
	Usage   *chatUsage     `json:"usage,omitempty"`
	Agentd  *chatExtension `json:"agentd,omitempty"`
}

type textChoice struct {
	Text         string    `json:"text"`
	Index        int       `json:"index"`
	Logprobs     *struct{} `json:"logprobs"`
	FinishReason *string   `json:"finish_reason"`
}

// completions is POST /v1/completions.
func (s *Server) completions(w http.ResponseWriter, r *http.Request, p *agentd.Principal) error {
	var body completionRequest
	c, err := s.readCall(w, r, &body, completionHandled, func() (*chatCall, error) { return body.chat(s.MaxMessageChars) })
	if err != nil {
		return err
	}
	if c.agent == "" && c.maxTokens == nil {
		n := defaultCompletionTokens
		c.maxTokens = &n
	}
	res, err := s.answer(w, r, p, c, func() streamShape { return newTextStream(s, c) })
	if res == nil {
		return err // an error, or a stream that has been answered
	}
	u, x, fin := usageOf(res), extensionOf(res), finishReason(res.FinishReason)
	return writeJSON(w, http.StatusOK, &textCompletion{
		ID: "cmpl-" + res.RunID, Object: "text_completion", Created: res.Created / 1_000_000, Model: c.model,
		Choices: []textChoice{{Text: res.Response, FinishReason: &fin}}, Usage: &u, Agentd: &x,
	})
}

// textStream is streamShape for text completions: text_completion events with
// choices[0].text, the last with the finish reason; with include_usage, one with
// empty choices and the usage.
type textStream struct{ base textCompletion }

func newTextStream(s *Server, c *chatCall) *textStream {
	return &textStream{base: textCompletion{ID: agentd.NewID("cmpl"), Object: "text_completion", Created: s.Clock.Now().Unix(), Model: c.model}}
}

func (ts *textStream) piece(text string, first bool) any {
	ev := ts.base
	ev.Choices = []textChoice{{Text: text}}
	return &ev
}

// toolCalls: text completions take no tools.
func (ts *textStream) toolCalls([]llm.ToolCall) any { return nil }

func (ts *textStream) finish(reason string, x *chatExtension) any {
	ev := ts.base
	ev.Choices, ev.Agentd = []textChoice{{FinishReason: &reason}}, x
	return &ev
}

func (ts *textStream) usage(u chatUsage, x *chatExtension) any {
	ev := ts.base
	ev.Choices, ev.Usage, ev.Agentd = []textChoice{}, &u, x
	return &ev
}
