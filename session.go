package agentd

import "time"

// SessionKey names one conversation. Every part scopes it: the same session id
// used by another owner, agent or organization is another conversation.
type SessionKey struct {
	OrgID, AgentID, Owner, SessionID string
}

// Turn is one stored exchange of a session, with the token counts of its two
// sides cached so that prompt assembly never counts history again. A turn of a
// tool conversation may open with the caller's results for the previous turn's
// calls (User may then be "") and may end with calls of its own; such a turn
// continues the previous one, and trimming keeps or drops them together.
type Turn struct {
	User, Assistant             string
	UserTokens, AssistantTokens int
	TurnTools
}

// TurnTools is what a turn holds besides text: stored as one JSON column, absent
// for a plain exchange.
type TurnTools struct {
	// Results answer the previous turn's Calls, before User.
	Results []ToolResult `json:"results,omitempty"`
	// Images are User's images, after its text.
	Images []Image `json:"images,omitempty"`
	// Calls are the tools the assistant called, after its text.
	Calls []ToolCall `json:"calls,omitempty"`
}

// Empty reports whether t holds nothing.
func (t *TurnTools) Empty() bool {
	return len(t.Results) == 0 && len(t.Images) == 0 && len(t.Calls) == 0
}

// Continues reports whether the turn answers the previous turn's tool calls, so
// that it cannot be sent without it.
func (t *Turn) Continues() bool { return len(t.Results) > 0 }

// ToolCall is a model's call of a tool; Arguments is JSON text, as the model
// produced it.
type ToolCall struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	Arguments string `json:"arguments"`
}

// ToolResult is the caller's answer to the ToolCall with CallID.
type ToolResult struct {
	CallID  string `json:"tool_call_id"`
	Content string `json:"content"`
}

// Image is an image sent with a message: an http(s) URL or a data: URL.
type Image struct {
	URL    string `json:"url"`
	Detail string `json:"detail,omitempty"`
}

// SessionInfo sums up one session.
type SessionInfo struct {
	ID                        string
	Turns                     int
	InputTokens, OutputTokens int64 // summed over the turns' runs
	CreatedAt, LastActive     time.Time
}

// SessionTurn is one stored exchange of a session, with its run's usage.
type SessionTurn struct {
	RunID                     string
	User, Assistant           string
	InputTokens, OutputTokens int
	CreatedAt                 time.Time
	TurnTools
}
