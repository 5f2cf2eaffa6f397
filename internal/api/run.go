package api

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/internal/llm"
	"github.com/agentd/agentd/internal/reqlog"
	"github.com/agentd/agentd/internal/run"
)

// runRequest is the run body. Extra keys ("stream": false) are tolerated.
type runRequest struct {
	Message *string `json:"message"`
	Stream  bool    `json:"stream"`
	// ToolResults (agentd's extension) answer the tool calls of the session's
	// last turn; message is then optional.
	ToolResults []runToolResult `json:"tool_results"`
}

// runToolResult is one tool's result sent back to a run.
type runToolResult struct {
	ToolCallID *string `json:"tool_call_id"`
	Content    *string `json:"content"`
}

// maxToolResults bounds the results of one run, as OpenAI bounds tools.
const maxToolResults = 128

type runResponse struct {
	AgentID   string   `json:"agent_id"`
	Model     string   `json:"model"`
	Response  string   `json:"response"`
	Usage     runUsage `json:"usage"`
	SessionID *string  `json:"session_id"`
	RunID     string   `json:"run_id"`
	// Context says how much of the session's history the prompt carried.
	Context runContext `json:"context"`
	// ToolCalls (agentd's extension) are the model's calls of the agent's tools,
	// in OpenAI's shape; answer them with tool_results in the session.
	ToolCalls    []chatToolCall `json:"tool_calls,omitempty"`
	FinishReason string         `json:"finish_reason,omitempty"`
}

type runContext struct {
	HistoryTurns int `json:"history_turns"`
	TrimmedTurns int `json:"trimmed_turns"`
}

type runUsage struct {
	InputTokens  int    `json:"input_tokens"`
	OutputTokens int    `json:"output_tokens"`
	TotalTokens  int    `json:"total_tokens"`
	Source       string `json:"source"`
	// Parts of the counts with prices or meanings of their own, when the provider
	// reported any (an extension of NuGen's usage).
	CachedInputTokens int `json:"cached_input_tokens,omitempty"`
	CacheWriteTokens  int `json:"cache_write_tokens,omitempty"`
	ReasoningTokens   int `json:"reasoning_tokens,omitempty"`
}

// runInput is a validated run request: a message, or tool results with an
// optional message (the messages of the run, then).
type runInput struct {
	msg      string
	messages []llm.Message
	sid      string
	stream   bool
	version  int // X-Agent-Version; 0 for none
}

// request is the run of in by p on agent name.
func (in *runInput) request(p *agentd.Principal, name, idem string) *run.Request {
	req := &run.Request{Principal: p, AgentName: name, Message: in.msg, Messages: in.messages, SessionID: in.sid, IdempotencyKey: idem, Version: in.version}
	if in.messages != nil {
		h := sha256.New()
		json.NewEncoder(h).Encode([]any{"nugen.run", name, in.sid, in.messages, in.version})
		req.RequestHash = hex.EncodeToString(h.Sum(nil))
	}
	return req
}

// runError puts a run's error in the request's terms: the runner names the
// messages it was given (body.messages.N), which for a run with tool_results are
// the results, in order, then the message.
func (in *runInput) runError(err error) error {
	var e *agentd.Error
	if in.messages == nil || !errors.As(err, &e) || len(e.Violations) == 0 {
		return err
	}
	out := *e
	out.Violations = make([]agentd.Violation, len(e.Violations))
	for i, v := range e.Violations {
		if len(v.Loc) >= 3 && v.Loc[0] == "body" && v.Loc[1] == "messages" {
			if n, ok := v.Loc[2].(int); ok {
				loc := []any{"body", "message"}
				if n < len(in.messages) && in.messages[n].Role == llm.RoleTool {
					loc = append([]any{"body", "tool_results", n}, v.Loc[3:]...)
				}
				v.Loc = loc
			}
		}
		out.Violations[i] = v
	}
	return &out
}

// decodeRun reads and validates a run request: its message (or tool results),
// session id, and whether it asks for a stream ("stream": true or Accept:
// text/event-stream).
func (s *Server) decodeRun(w http.ResponseWriter, r *http.Request) (*runInput, error) {
	in := &runInput{}
	var err error
	if in.sid, err = sessionID(r); err != nil {
		return nil, err
	}
	if in.version, err = agentVersion(r); err != nil {
		return nil, err
	}
	var req runRequest
	if err := s.decode(w, r, &req); err != nil {
		return nil, err
	}
	in.stream = req.Stream || strings.Contains(r.Header.Get("Accept"), "text/event-stream")
	if req.ToolResults == nil {
		in.msg, err = validateMessage(req.Message, s.MaxMessageChars)
		return in, err
	}
	switch {
	case in.sid == "":
		return nil, agentd.Invalid("tool_results answer the calls of a session's last turn: send them with its X-Session-ID", "missing", "header", "X-Session-ID")
	case len(req.ToolResults) == 0:
		return nil, agentd.Invalid("List should have at least 1 item", "too_short", "body", "tool_results")
	case len(req.ToolResults) > maxToolResults:
		return nil, agentd.Invalid("List should have at most "+strconv.Itoa(maxToolResults)+" items", "too_long", "body", "tool_results")
	}
	for i, tr := range req.ToolResults {
		switch {
		case tr.ToolCallID == nil || *tr.ToolCallID == "":
			return nil, agentd.Invalid("Field required", "missing", "body", "tool_results", i, "tool_call_id")
		case tr.Content == nil:
			return nil, agentd.Invalid("Field required", "missing", "body", "tool_results", i, "content")
		}
		in.messages = append(in.messages, llm.Message{Role: llm.RoleTool, ToolCallID: *tr.ToolCallID, Content: *tr.Content})
	}
	if req.Message != nil {
		msg, err := validateMessage(req.Message, s.MaxMessageChars)
		if err != nil {
			return nil, err
		}
		in.messages = append(in.messages, llm.Message{Role: llm.RoleUser, Content: msg})
	}
	return in, nil
}

// validateMessage checks a decoded message; its UTF-8 was checked with the body
// (decodeJSON refuses invalid UTF-8 before encoding/json could replace it).
func validateMessage(m *string, maxChars int) (string, error) {
	switch {
	case m == nil:
		return "", agentd.Invalid("Field required", "missing", "body", "message")
	case len(*m) == 0:
		return "", agentd.Invalid("String should have at least 1 character", "string_too_short", "body", "message")
	case len(*m) > maxChars && utf8.RuneCountInString(*m) > maxChars:
		return "", agentd.Invalid("String should have at most "+strconv.Itoa(maxChars)+" characters", "string_too_long", "body", "message")
	}
	return *m, nil
}

func (s *Server) runAgent(w http.ResponseWriter, r *http.Request, p *agentd.Principal) error {
	return s.run(w, r, p, r.PathValue("agent_name"))
}

// runAgentByID is the older NuGen route, by id; it also takes a normalized name.
func (s *Server) runAgentByID(w http.ResponseWriter, r *http.Request, p *agentd.Principal) error {
	name := r.PathValue("agent_id")
	if len(name) > 6 && name[:6] == "agent-" {
		a, err := s.Agents.Get(r.Context(), p, name)
		if err != nil {
			return err
		}
		name = a.Name
	}
	return s.run(w, r, p, name)
}

// idempotencyKey reads the Idempotency-Key header: 1 to 255 printable ASCII
// characters, or absent.
func idempotencyKey(r *http.Request) (string, error) {
	k := r.Header.Get("Idempotency-Key")
	if len(k) > 255 {
		return "", agentd.Invalid("Idempotency-Key must be at most 255 characters", "string_too_long", "header", "Idempotency-Key")
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x21 || k[i] > 0x7e {
			return "", agentd.Invalid("Idempotency-Key must be printable ASCII without spaces", "string_pattern_mismatch", "header", "Idempotency-Key")
		}
	}
	return k, nil
}

func (s *Server) run(w http.ResponseWriter, r *http.Request, p *agentd.Principal, name string) error {
	idem, err := idempotencyKey(r)
	if err != nil {
		return err
	}
	in, err := s.decodeRun(w, r)
	if err != nil {
		return err
	}
	req := in.request(p, name, idem)
	if in.stream {
		return in.runError(s.runStream(w, r, req))
	}
	res, err := s.Runner.Run(r.Context(), req)
	if err != nil {
		return in.runError(err)
	}
	if res.Replayed {
		w.Header().Set("Idempotent-Replayed", "true")
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	return json.NewEncoder(w).Encode(toRunResponse(res))
}

// toRunResponse is the run endpoint's answer, also the data of a stream's done event.
func toRunResponse(res *run.Result) *runResponse {
	out := runResponse{
		AgentID: res.AgentID, Model: res.Model, Response: res.Response, RunID: res.RunID,
		Usage: runUsage{
			InputTokens: res.Usage.InputTokens, OutputTokens: res.Usage.OutputTokens,
			TotalTokens: res.Usage.InputTokens + res.Usage.OutputTokens, Source: res.Usage.Source,
			CachedInputTokens: res.Usage.CachedInputTokens, CacheWriteTokens: res.Usage.CacheWriteTokens, ReasoningTokens: res.Usage.ReasoningTokens,
		},
		Context: runContext{HistoryTurns: res.HistoryTurns, TrimmedTurns: res.TrimmedTurns},
	}
	if res.SessionID != "" {
		out.SessionID = &res.SessionID
	}
	if len(res.ToolCalls) > 0 {
		out.ToolCalls, out.FinishReason = toolCallsOf(res.ToolCalls, false), res.FinishReason
	}
	return &out
}

// streamDelta is one piece of a streamed reply, in agentd's shape ({"text"}) and
// NuGen's (choices[0].delta.text), so clients written for either read it.
type streamDelta struct {
	Text    string         `json:"text"`
	Choices [1]deltaChoice `json:"choices"`
}

type deltaChoice struct {
	Index int `json:"index"`
	Delta struct {
		Text string `json:"text"`
	} `json:"delta"`
}

// runStream answers a run as server-sent events: "delta" events as the reply
// arrives, then "done" with the whole response, then "data: [DONE]". An error
// before the first event gets its own status; after it, an "error" event.
func (s *Server) runStream(w http.ResponseWriter, r *http.Request, req *run.Request) error {
	st := newEventStream(w, s.keepAlive())
	defer st.close()
	delta := func(piece string) error {
		var d streamDelta
		d.Text, d.Choices[0].Delta.Text = piece, piece
		b, err := json.Marshal(&d)
		if err != nil {
			return err
		}
		return st.event("delta", b)
	}
	req.Emit = delta
	res, err := s.Runner.Run(r.Context(), req)
	if errors.Is(err, run.ErrClientGone) {
		return nil // charged for what it received; nobody is listening
	}
	if err != nil {
		st.close() // no keep-alive may start the response behind our back
		if !st.Started() {
			return err
		}
		r = identified(r)
		e := s.publicError(r, err)
		ev := map[string]any{
			"detail": e.Message, "code": e.Code, "request_id": reqlog.ID(r.Context()),
			"error": map[string]string{"message": e.Message, "code": string(e.Code)}, // NuGen stream clients look for "error"
		}
		for _, k := range []string{"run_id", "class"} { // a failed inference's
			if v, ok := e.Fields[k]; ok {
				ev[k] = v
			}
		}
		b, _ := json.Marshal(ev)
		st.event("error", b)
		st.event("", []byte("[DONE]"))
		return nil
	}
	if res.Replayed {
		// Before the first byte, as without a stream. What is left is written at
		// once: no keep-alive may start the response (or touch its headers) now.
		st.close()
		if !st.Started() {
			w.Header().Set("Idempotent-Replayed", "true")
		}
		if res.Response != "" {
			delta(res.Response) // a replay has no live pieces: the stored reply is one
		}
	}
	b, err := json.Marshal(toRunResponse(res))
	if err != nil {
		return err
	}
	st.event("done", b)
	st.event("", []byte("[DONE]"))
	return nil
}

// estimate answers what a run with this body would hold, without running it.
func (s *Server) estimate(w http.ResponseWriter, r *http.Request, p *agentd.Principal) error {
	in, err := s.decodeRun(w, r)
	if err != nil {
		return err
	}
	e, err := s.Runner.Estimate(r.Context(), in.request(p, r.PathValue("agent_name"), ""))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{
		"agent_id": e.AgentID, "model": e.Model, "models": e.Models,
		"input_tokens": e.InputTokens, "max_output_tokens": e.MaxOutputTokens,
		"hold": e.Hold, "available": e.Available, "affordable": e.Affordable, "unit": "credits",
		"context": runContext{HistoryTurns: e.HistoryTurns, TrimmedTurns: e.TrimmedTurns},
	})
}
