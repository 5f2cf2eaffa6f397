package client

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
)

// ChatMessage is one message of a chat completion.
type ChatMessage struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// AgentChat is what an agent answered to a chat completion, with agentd's
// extension (the run, its cost).
type AgentChat struct {
	Reply        string
	OutputTokens int
	RunID        string
	Cost         float64 // credits
}

// ChatAgent sends messages to agent name as a chat completion (model
// "agent/<name>"), pinned to version when it is not 0 (X-Agent-Version).
func (c *Client) ChatAgent(ctx context.Context, name string, version int, messages []ChatMessage) (*AgentChat, error) {
	h := http.Header{}
	if version > 0 {
		h.Set("X-Agent-Version", strconv.Itoa(version))
	}
	var out struct {
		Choices []struct {
			Message struct {
				Content string `json:"content"`
			} `json:"message"`
		} `json:"choices"`
		Usage struct {
			CompletionTokens int `json:"completion_tokens"`
		} `json:"usage"`
		Agentd struct {
			RunID string  `json:"run_id"`
			Cost  float64 `json:"cost"`
		} `json:"agentd"`
	}
	in := map[string]any{"model": "agent/" + name, "messages": messages}
	if err := c.Do(ctx, http.MethodPost, "/v1/chat/completions", h, in, &out); err != nil {
		return nil, err
	}
	res := &AgentChat{OutputTokens: out.Usage.CompletionTokens, RunID: out.Agentd.RunID, Cost: out.Agentd.Cost}
	if len(out.Choices) > 0 {
		res.Reply = out.Choices[0].Message.Content
	}
	return res, nil
}

// RunEvals asks the server to evaluate version n of agent with its
// demonstrations and cases (a JSON list in the cases-file format; nil for none),
// and returns the stored report as JSON.
func (c *Client) RunEvals(ctx context.Context, agent string, n int, cases json.RawMessage) (json.RawMessage, error) {
	var out json.RawMessage
	var in any
	if cases != nil {
		in = cases
	}
	err := c.Do(ctx, http.MethodPost, evalsPath(agent, n), nil, in, &out)
	return out, err
}

// LatestEvals is the newest stored report of version n of agent, as JSON.
func (c *Client) LatestEvals(ctx context.Context, agent string, n int) (json.RawMessage, error) {
	var out json.RawMessage
	err := c.Do(ctx, http.MethodGet, evalsPath(agent, n), nil, nil, &out)
	return out, err
}

func evalsPath(agent string, n int) string {
	return "/api/v3/agents/" + url.PathEscape(agent) + "/versions/" + strconv.Itoa(n) + "/evals"
}
