package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
)

// Session sums up one of the caller's sessions on an agent. Times are RFC 3339, UTC.
type Session struct {
	SessionID    string `json:"session_id"`
	Turns        int    `json:"turns"`
	InputTokens  int64  `json:"input_tokens"`
	OutputTokens int64  `json:"output_tokens"`
	TotalTokens  int64  `json:"total_tokens"`
	CreatedAt    string `json:"created_at"`
	LastActive   string `json:"last_active"`
}

// SessionTurn is one exchange of a session, with its run's usage.
type SessionTurn struct {
	RunID     string `json:"run_id"`
	User      string `json:"user"`
	Assistant string `json:"assistant"`
	Usage     struct {
		InputTokens  int `json:"input_tokens"`
		OutputTokens int `json:"output_tokens"`
		TotalTokens  int `json:"total_tokens"`
	} `json:"usage"`
	CreatedAt string `json:"created_at"`
}

// SessionTurns is a page of a session's turns, oldest first.
type SessionTurns struct {
	SessionID  string        `json:"session_id"`
	AgentID    string        `json:"agent_id"`
	Turns      []SessionTurn `json:"turns"`
	NextCursor *string       `json:"next_cursor"` // nil after the last page
}

// sessionPagePath adds limit (when not 0) and cursor (when not "") to path.
func sessionPagePath(path, cursor string, limit int) string {
	q := url.Values{}
	if limit != 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	if cursor != "" {
		q.Set("cursor", cursor)
	}
	if len(q) == 0 {
		return path
	}
	return path + "?" + q.Encode()
}

func sessionsPath(agent string) string {
	return "/api/v3/agents/" + url.PathEscape(agent) + "/sessions"
}

// Sessions returns a page of the caller's sessions on agent (id or name), the most
// recently active first, and the cursor of the next page ("" after the last).
// cursor is "" for the first page; limit is 1–100, or 0 for the server's default (20).
func (c *Client) Sessions(ctx context.Context, agent, cursor string, limit int) ([]*Session, string, error) {
	var out struct {
		Data       []*Session `json:"data"`
		NextCursor *string    `json:"next_cursor"`
	}
	if err := c.Do(ctx, http.MethodGet, sessionPagePath(sessionsPath(agent), cursor, limit), nil, nil, &out); err != nil {
		return nil, "", err
	}
	next := ""
	if out.NextCursor != nil {
		next = *out.NextCursor
	}
	return out.Data, next, nil
}

// Session returns a page of the turns of the caller's session sessionID on agent,
// oldest first. An unknown session is a 404 *Error.
func (c *Client) Session(ctx context.Context, agent, sessionID, cursor string, limit int) (*SessionTurns, error) {
	var out struct{ Data *SessionTurns }
	err := c.Do(ctx, http.MethodGet, sessionPagePath(sessionsPath(agent)+"/"+url.PathEscape(sessionID), cursor, limit), nil, nil, &out)
	return out.Data, err
}

// DeleteSession deletes the caller's session sessionID on agent and returns how many
// turns it had. It waits for a turn of the session in flight to finish first.
func (c *Client) DeleteSession(ctx context.Context, agent, sessionID string) (int, error) {
	var out struct {
		DeletedTurns int `json:"deleted_turns"`
	}
	err := c.Do(ctx, http.MethodDelete, sessionsPath(agent)+"/"+url.PathEscape(sessionID), nil, nil, &out)
	return out.DeletedTurns, err
}
