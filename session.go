package agentd

import "time"

// SessionKey names one conversation. Every part scopes it: the same session id
// used by another owner, agent or organization is another conversation.
type SessionKey struct {
	OrgID, AgentID, Owner, SessionID string
}

// Turn is one stored exchange of a session, with the token counts of its two
// messages cached so that prompt assembly never counts history again.
type Turn struct {
	User, Assistant             string
	UserTokens, AssistantTokens int
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
}
