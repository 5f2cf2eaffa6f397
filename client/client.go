// Package client is a Go client of agentd's REST API. The CLI and the end-to-end
// tests use it; it depends only on the standard library.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// Client calls one agentd server with one key.
type Client struct {
	BaseURL string // e.g. http://127.0.0.1:8080
	Key     string
	HTTP    *http.Client
	// Received, when set, is called with the body of every successful JSON
	// response before it is decoded (the CLI prints it for --json).
	Received func(body []byte)
}

// New returns a client of the server at baseURL.
func New(baseURL, key string) *Client {
	return &Client{BaseURL: strings.TrimRight(baseURL, "/"), Key: key, HTTP: http.DefaultClient}
}

// Error is an error response. Detail is the message, or the list of validation
// failures for 422.
type Error struct {
	Status int
	Code   string
	Detail string
	Body   map[string]any // the whole decoded body, with fields like required/available
}

// Error is the status, the code and the API's message, e.g. `404 not_found: agent
// "x" not found`; it does not start with "agentd", which callers add if they like.
func (e *Error) Error() string {
	switch {
	case e.Code == "":
		return fmt.Sprintf("%d: %s", e.Status, e.Detail)
	case e.Status == 0: // an error event of a stream that had begun
		return fmt.Sprintf("%s: %s", e.Code, e.Detail)
	}
	return fmt.Sprintf("%d %s: %s", e.Status, e.Code, e.Detail)
}

// Do sends a request with a JSON body (when in is not nil) and decodes a JSON reply
// into out (when out is not nil). Non-2xx replies are returned as *Error.
func (c *Client) Do(ctx context.Context, method, path string, header http.Header, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.BaseURL+path, body)
	if err != nil {
		return err
	}
	for k, vs := range header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.Key != "" {
		req.Header.Set("Authorization", "Bearer "+c.Key)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		return responseError(resp.StatusCode, data)
	}
	if c.Received != nil {
		c.Received(data)
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(data, out)
}

// Demonstration is a few-shot example.
type Demonstration struct {
	Input  string `json:"input"`
	Output string `json:"output"`
}

// AgentSpec creates or updates an agent; nil fields are left out.
type AgentSpec struct {
	Name                      *string         `json:"agent_name,omitempty"`
	Description               *string         `json:"agent_description,omitempty"`
	Model                     *string         `json:"model,omitempty"`
	MaxToken                  *int            `json:"max_token,omitempty"`
	Temperature               *float64        `json:"temperature,omitempty"`
	Instructions              *string         `json:"instructions,omitempty"`
	Demonstrations            []Demonstration `json:"demonstrations,omitempty"`
	Status                    *string         `json:"status,omitempty"`
	ConversationSavingEnabled *bool           `json:"conversation_saving_enabled,omitempty"`
	// Tools and ResponseFormat are OpenAI's JSON, sent as they are (nil: left
	// out; "null" or "[]" removes them).
	Tools          json.RawMessage `json:"tools,omitempty"`
	ResponseFormat json.RawMessage `json:"response_format,omitempty"`
}

// Ptr returns a pointer to v, for AgentSpec fields.
func Ptr[T any](v T) *T { return &v }

// Agent is an agent as the API returns it.
type Agent struct {
	ID                        string          `json:"id"`
	Name                      string          `json:"name"`
	Description               string          `json:"description"`
	BaseModel                 string          `json:"base_model"`
	BaseModelName             string          `json:"base_model_name"`
	CreatedDate               string          `json:"created_date"`
	UpdatedDate               string          `json:"updated_date"`
	Status                    string          `json:"status"`
	Creator                   string          `json:"creator"`
	Endpoint                  string          `json:"endpoint"`
	UsageCount                int64           `json:"usage_count"`
	LastUsed                  *string         `json:"last_used"`
	SystemPrompt              string          `json:"system_prompt"`
	Temperature               float64         `json:"temperature"`
	UncertaintyThreshold      float64         `json:"uncertainty_threshold"`
	MaxToken                  int             `json:"max_token"`
	Demonstrations            []Demonstration `json:"demonstrations"`
	ConversationSavingEnabled bool            `json:"conversation_saving_enabled"`
	Version                   int             `json:"version"`
	Tools                     json.RawMessage `json:"tools"`           // [] for none
	ResponseFormat            json.RawMessage `json:"response_format"` // null for text
	Canary                    *Canary         `json:"canary"`          // nil for none
	PerformanceMetrics        struct {
		TotalRequests       int64    `json:"total_requests"`
		SuccessRate         *float64 `json:"success_rate"`
		AverageResponseTime *float64 `json:"average_response_time"`
	} `json:"performance_metrics"`
}

// Canary sends Percent % of an agent's runs that pin no version to Version.
type Canary struct {
	Version int     `json:"version"`
	Percent float64 `json:"percent"`
}

// CreateAgent creates an agent.
func (c *Client) CreateAgent(ctx context.Context, spec AgentSpec) (*Agent, error) {
	var out struct{ Data *Agent }
	err := c.Do(ctx, http.MethodPost, "/api/v3/agents/create", nil, spec, &out)
	return out.Data, err
}

// UpdateAgent changes the fields of spec that are set.
func (c *Client) UpdateAgent(ctx context.Context, idOrName string, spec AgentSpec) (*Agent, error) {
	var out struct{ Data *Agent }
	err := c.Do(ctx, http.MethodPatch, "/api/v3/agents/"+url.PathEscape(idOrName), nil, spec, &out)
	return out.Data, err
}

// Agent returns an active agent by id or normalized name.
func (c *Client) Agent(ctx context.Context, idOrName string) (*Agent, error) {
	var out struct{ Data *Agent }
	err := c.Do(ctx, http.MethodGet, "/api/v3/agents/"+url.PathEscape(idOrName), nil, nil, &out)
	return out.Data, err
}

// Agents lists the organization's agents.
func (c *Client) Agents(ctx context.Context, includeInactive bool) ([]*Agent, error) {
	var out struct{ Agents []*Agent }
	path := "/api/v3/agents"
	if includeInactive {
		path += "?include_inactive=true"
	}
	err := c.Do(ctx, http.MethodGet, path, nil, nil, &out)
	return out.Agents, err
}

// DeleteAgent deletes an agent by id or normalized name.
func (c *Client) DeleteAgent(ctx context.Context, idOrName string) error {
	return c.Do(ctx, http.MethodDelete, "/api/v3/agents/"+url.PathEscape(idOrName), nil, nil, nil)
}

// RunResult is a run's response.
type RunResult struct {
	AgentID  string `json:"agent_id"`
	Model    string `json:"model"`
	Response string `json:"response"`
	Usage    struct {
		InputTokens       int    `json:"input_tokens"`
		CachedInputTokens int    `json:"cached_input_tokens"` // parts of InputTokens and OutputTokens
		CacheWriteTokens  int    `json:"cache_write_tokens"`
		ReasoningTokens   int    `json:"reasoning_tokens"`
		OutputTokens      int    `json:"output_tokens"`
		TotalTokens       int    `json:"total_tokens"`
		Source            string `json:"source"`
	} `json:"usage"`
	SessionID *string `json:"session_id"`
	RunID     string  `json:"run_id"`
	// Context says how many earlier turns of the session the prompt carried and
	// how many older ones were left out to fit the model's context window.
	Context struct {
		HistoryTurns int `json:"history_turns"`
		TrimmedTurns int `json:"trimmed_turns"`
	} `json:"context"`
}

// Run runs the agent named name with message; sessionID may be "".
func (c *Client) Run(ctx context.Context, name, message, sessionID string) (*RunResult, error) {
	h := http.Header{}
	if sessionID != "" {
		h.Set("X-Session-ID", sessionID)
	}
	var out RunResult
	err := c.Do(ctx, http.MethodPost, "/api/v3/agents/run-agents/"+url.PathEscape(name)+"/run", h, map[string]string{"message": message}, &out)
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// Org is an organization, its money in credits. Held, Available, HoldsInFlight
// and CreatedAt are set in listings (Orgs).
type Org struct {
	ID            string  `json:"id"`
	Name          string  `json:"name"`
	Balance       float64 `json:"balance"`
	Held          float64 `json:"held"`
	Available     float64 `json:"available"`
	HoldsInFlight int     `json:"holds_in_flight"`
	CreatedAt     string  `json:"created_at"`
}

// CreateOrg creates an organization (operator keys only).
func (c *Client) CreateOrg(ctx context.Context, name string) (*Org, error) {
	var out struct{ Data *Org }
	err := c.Do(ctx, http.MethodPost, "/api/v3/admin/orgs", nil, map[string]string{"name": name}, &out)
	return out.Data, err
}

// Billing is an organization's money, in credits.
type Billing struct {
	OrgID     string  `json:"org_id"`
	OrgName   string  `json:"org_name"`
	Balance   float64 `json:"balance"`
	Held      float64 `json:"held"`
	Available float64 `json:"available"`
}

// GrantCredits adds amount credits (negative for a correction) to org (id or name).
func (c *Client) GrantCredits(ctx context.Context, org string, amount float64) (*Billing, error) {
	var out struct{ Data *Billing }
	err := c.Do(ctx, http.MethodPost, "/api/v3/admin/orgs/"+url.PathEscape(org)+"/credits", nil, map[string]float64{"amount": amount}, &out)
	return out.Data, err
}

// Billing returns the caller's organization's balance and holds.
func (c *Client) Billing(ctx context.Context) (*Billing, error) {
	var out struct{ Data *Billing }
	err := c.Do(ctx, http.MethodGet, "/api/v3/billing", nil, nil, &out)
	return out.Data, err
}

// Key is an API key; Secret is set only when it was just created.
type Key struct {
	ID        string   `json:"id"`
	Name      string   `json:"name"`
	Owner     string   `json:"owner"`
	OrgID     string   `json:"org_id"`
	Prefix    string   `json:"prefix"`
	Scopes    []string `json:"scopes"`
	CreatedAt string   `json:"created_at"`
	RevokedAt *string  `json:"revoked_at"`
	// Budget is in credits per BudgetPeriod; nil: none.
	Budget       *float64 `json:"budget"`
	BudgetPeriod string   `json:"budget_period"`
	Secret       string   `json:"key"`
}

// KeySpec creates a key.
type KeySpec struct {
	Name   string   `json:"name"`
	Scopes []string `json:"scopes,omitempty"`
	OrgID  string   `json:"org_id,omitempty"`
	Owner  string   `json:"owner,omitempty"`
	// Budget in credits per BudgetPeriod (none, daily, monthly); nil: none.
	Budget       *float64 `json:"budget,omitempty"`
	BudgetPeriod string   `json:"budget_period,omitempty"`
}

// CreateKey mints a key; the secret is in the result only this once.
func (c *Client) CreateKey(ctx context.Context, spec KeySpec) (*Key, error) {
	var out struct{ Data *Key }
	err := c.Do(ctx, http.MethodPost, "/api/v3/keys", nil, spec, &out)
	return out.Data, err
}

// Keys lists the caller's organization's keys.
func (c *Client) Keys(ctx context.Context) ([]*Key, error) {
	var out struct{ Data []*Key }
	err := c.Do(ctx, http.MethodGet, "/api/v3/keys", nil, nil, &out)
	return out.Data, err
}

// RevokeKey revokes a key by id.
func (c *Client) RevokeKey(ctx context.Context, id string) error {
	return c.Do(ctx, http.MethodDelete, "/api/v3/keys/"+url.PathEscape(id), nil, nil, nil)
}

// responseError decodes a non-2xx response: the API's JSON error shape, or the
// body as text when it is not JSON.
func responseError(status int, data []byte) *Error {
	e := &Error{Status: status}
	if json.Unmarshal(data, &e.Body) != nil {
		e.Detail = strings.TrimSpace(string(data))
		return e
	}
	e.Code, _ = e.Body["code"].(string)
	switch d := e.Body["detail"].(type) {
	case string:
		e.Detail = d
	default:
		b, _ := json.Marshal(d)
		e.Detail = string(b)
	}
	return e
}
