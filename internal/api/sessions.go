package api

import (
	"net/http"
	"strconv"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/internal/llm"
)

// Page sizes of the sessions endpoints.
const (
	defaultSessionPage = 20
	maxSessionPage     = 100
)

// sessionInfo is one session in a listing.
type sessionInfo struct {
	SessionID    string `json:"session_id"`
	Turns        int    `json:"turns"`
	InputTokens  int64  `json:"input_tokens"`
	OutputTokens int64  `json:"output_tokens"`
	TotalTokens  int64  `json:"total_tokens"`
	CreatedAt    string `json:"created_at"`
	LastActive   string `json:"last_active"`
}

// sessionTurn is one exchange of a session, with its run's usage.
type sessionTurn struct {
	RunID     string `json:"run_id"`
	User      string `json:"user"`
	Assistant string `json:"assistant"`
	Usage     struct {
		InputTokens  int `json:"input_tokens"`
		OutputTokens int `json:"output_tokens"`
		TotalTokens  int `json:"total_tokens"`
	} `json:"usage"`
	CreatedAt string `json:"created_at"`
	// A tool conversation's parts, when the turn has them: the results it
	// opened with, the user's images, the assistant's tool calls.
	ToolResults []agentd.ToolResult `json:"tool_results,omitempty"`
	Images      []agentd.Image      `json:"images,omitempty"`
	ToolCalls   []chatToolCall      `json:"tool_calls,omitempty"`
}

// sessionPage reads the limit and cursor query parameters of a paginated endpoint.
func sessionPage(r *http.Request) (limit int, cursor string, err error) {
	limit, err = pageLimit(r, defaultSessionPage, maxSessionPage)
	return limit, r.URL.Query().Get("cursor"), err
}

// pageLimit reads the limit query parameter: def when absent, 1 to most.
func pageLimit(r *http.Request, def, most int) (int, error) {
	v := r.URL.Query().Get("limit")
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	switch {
	case err != nil:
		return 0, agentd.Invalid("Input should be a valid integer, unable to parse string as an integer", "int_parsing", "query", "limit")
	case n < 1:
		return 0, agentd.Invalid("Input should be greater than or equal to 1", "greater_than_equal", "query", "limit")
	case n > most:
		return 0, agentd.Invalid("Input should be less than or equal to "+strconv.Itoa(most), "less_than_equal", "query", "limit")
	}
	return n, nil
}

// pathSessionID validates the {session_id} path segment by the rule of X-Session-ID.
func pathSessionID(r *http.Request) (string, error) {
	v := r.PathValue("session_id")
	if !sessionIDPattern.MatchString(v) {
		return "", agentd.Invalid("session_id must be 1 to 128 characters of A-Z a-z 0-9 . _ : -", "string_pattern_mismatch", "path", "session_id")
	}
	return v, nil
}

// sessionKey resolves the agent of the path (id or normalized name, in p's
// organization) and names p's session on it.
func (s *Server) sessionKey(r *http.Request, p *agentd.Principal, sid string) (agentd.SessionKey, error) {
	a, err := s.Agents.Get(r.Context(), p, r.PathValue("agent_id"))
	if err != nil {
		return agentd.SessionKey{}, err
	}
	return agentd.SessionKey{OrgID: p.OrgID, AgentID: a.ID, Owner: p.Owner, SessionID: sid}, nil
}

func nextCursor(next string) *string {
	if next == "" {
		return nil
	}
	return &next
}

// listSessions lists the caller's own sessions on an agent, most recently active first.
func (s *Server) listSessions(w http.ResponseWriter, r *http.Request, p *agentd.Principal) error {
	limit, cursor, err := sessionPage(r)
	if err != nil {
		return err
	}
	k, err := s.sessionKey(r, p, "")
	if err != nil {
		return err
	}
	list, next, err := s.Sessions.List(r.Context(), k.OrgID, k.AgentID, k.Owner, cursor, limit)
	if err != nil {
		return err
	}
	out := make([]sessionInfo, len(list))
	for i, si := range list {
		out[i] = sessionInfo{
			SessionID: si.ID, Turns: si.Turns,
			InputTokens: si.InputTokens, OutputTokens: si.OutputTokens, TotalTokens: si.InputTokens + si.OutputTokens,
			CreatedAt: isoTime(si.CreatedAt), LastActive: isoTime(si.LastActive),
		}
	}
	return writeJSON(w, http.StatusOK, map[string]any{"data": out, "next_cursor": nextCursor(next)})
}

// getSession returns a page of one of the caller's sessions' turns, oldest first.
func (s *Server) getSession(w http.ResponseWriter, r *http.Request, p *agentd.Principal) error {
	limit, cursor, err := sessionPage(r)
	if err != nil {
		return err
	}
	sid, err := pathSessionID(r)
	if err != nil {
		return err
	}
	k, err := s.sessionKey(r, p, sid)
	if err != nil {
		return err
	}
	turns, next, err := s.Sessions.Turns(r.Context(), k, cursor, limit)
	if err != nil {
		return err
	}
	out := make([]sessionTurn, len(turns))
	for i, t := range turns {
		o := &out[i]
		o.RunID, o.User, o.Assistant, o.CreatedAt = t.RunID, t.User, t.Assistant, isoTime(t.CreatedAt)
		o.Usage.InputTokens, o.Usage.OutputTokens, o.Usage.TotalTokens = t.InputTokens, t.OutputTokens, t.InputTokens+t.OutputTokens
		o.ToolResults, o.Images = t.Results, t.Images
		if len(t.Calls) > 0 {
			calls := make([]llm.ToolCall, len(t.Calls))
			for j, c := range t.Calls {
				calls[j] = llm.ToolCall{ID: c.ID, Name: c.Name, Arguments: c.Arguments}
			}
			o.ToolCalls = toolCallsOf(calls, false)
		}
	}
	return writeJSON(w, http.StatusOK, map[string]any{"data": map[string]any{
		"session_id": sid, "agent_id": k.AgentID, "turns": out, "next_cursor": nextCursor(next),
	}})
}

// deleteSession deletes one of the caller's sessions (session.Service.Delete: a
// turn in flight is stored before the delete and none starts during it).
func (s *Server) deleteSession(w http.ResponseWriter, r *http.Request, p *agentd.Principal) error {
	sid, err := pathSessionID(r)
	if err != nil {
		return err
	}
	k, err := s.sessionKey(r, p, sid)
	if err != nil {
		return err
	}
	n, err := s.Sessions.Delete(r.Context(), k)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"session_id": sid, "deleted_turns": n})
}
