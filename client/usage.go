package client

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// Time bounds (from, to) are a UTC day (YYYY-MM-DD, "to" including that whole day),
// an RFC 3339 time or Unix seconds; "" leaves that side open. Costs are in credits.

// AgentsUsage is NuGen's usage summary of the caller's organization (the server
// sends every field in camelCase too).
type AgentsUsage struct {
	TotalUsage              int64            `json:"total_usage"` // successful runs
	TotalTokens             int64            `json:"total_tokens"`
	AverageTokensPerRequest float64          `json:"average_tokens_per_request"`
	MostUsedModel           string           `json:"most_used_model"`
	UsageByModel            map[string]int64 `json:"usage_by_model"` // successful runs per model
	Models                  []ModelUsage     `json:"models"`
}

// ModelUsage is the usage of one answering model.
type ModelUsage struct {
	Model        string `json:"model"`
	Runs         int64  `json:"runs"`
	Failed       int64  `json:"failed"`
	InputTokens  int64  `json:"input_tokens"`
	OutputTokens int64  `json:"output_tokens"`
	TotalTokens  int64  `json:"total_tokens"`
	CacheTokens
	Cost float64 `json:"cost"`
}

// CacheTokens are the parts of a usage's input and output tokens with prices or
// meanings of their own.
type CacheTokens struct {
	CachedInputTokens int64 `json:"cached_input_tokens"`
	CacheWriteTokens  int64 `json:"cache_write_tokens"`
	ReasoningTokens   int64 `json:"reasoning_tokens"`
}

// Usage returns the organization's usage summary between from and to.
func (c *Client) Usage(ctx context.Context, from, to string) (*AgentsUsage, error) {
	q := url.Values{}
	setNonEmpty(q, "from", from)
	setNonEmpty(q, "to", to)
	var out struct{ Data *AgentsUsage }
	err := c.Do(ctx, http.MethodGet, withQuery("/api/v3/agents/usage", q), nil, nil, &out)
	return out.Data, err
}

// UsageFilter selects usage records; empty fields match everything.
type UsageFilter struct {
	From, To string
	Agent    string // id or name
	Key      string // key id
	Model    string // the model that answered
	Version  int    // the agent's version that ran (with Agent); 0 for every one
	Cursor   string // NextCursor of the previous page
	Limit    int    // 1–1000; the server's default (100) when 0
}

func (f UsageFilter) query() url.Values {
	q := url.Values{}
	setNonEmpty(q, "from", f.From)
	setNonEmpty(q, "to", f.To)
	setNonEmpty(q, "agent", f.Agent)
	setNonEmpty(q, "key", f.Key)
	setNonEmpty(q, "model", f.Model)
	if f.Version != 0 {
		q.Set("version", strconv.Itoa(f.Version))
	}
	setNonEmpty(q, "cursor", f.Cursor)
	if f.Limit != 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	return q
}

// UsageRecord is one run's ledger row.
type UsageRecord struct {
	RunID          string  `json:"run_id"`
	CreatedAt      string  `json:"created_at"`
	OrgID          string  `json:"org_id"`
	KeyID          string  `json:"key_id"`
	Owner          string  `json:"owner"`
	AgentID        string  `json:"agent_id"`
	AgentName      string  `json:"agent_name"`
	AgentVersion   int     `json:"agent_version"`
	SessionID      *string `json:"session_id"`
	ModelRequested string  `json:"model_requested"`
	Model          string  `json:"model"`
	InputTokens    int     `json:"input_tokens"`
	OutputTokens   int     `json:"output_tokens"`
	TotalTokens    int     `json:"total_tokens"`
	// Parts of InputTokens and OutputTokens: read from and written to the
	// provider's prompt cache, and spent reasoning.
	CachedInputTokens int     `json:"cached_input_tokens"`
	CacheWriteTokens  int     `json:"cache_write_tokens"`
	ReasoningTokens   int     `json:"reasoning_tokens"`
	UsageSource       string  `json:"usage_source"`
	Cost              float64 `json:"cost"`
	LatencyMS         int64   `json:"latency_ms"`
	Outcome           string  `json:"outcome"`
	ErrorCode         *string `json:"error_code"`
}

// UsagePage is a page of usage records; NextCursor is nil after the last page.
type UsagePage struct {
	Data       []UsageRecord `json:"data"`
	NextCursor *string       `json:"next_cursor"`
}

// UsageRecords returns one page of the organization's usage records, oldest first.
func (c *Client) UsageRecords(ctx context.Context, f UsageFilter) (*UsagePage, error) {
	var out UsagePage
	if err := c.Do(ctx, http.MethodGet, withQuery("/api/v3/usage/records", f.query()), nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// UsageCSV writes every usage record matching f (its Cursor and Limit aside) to w
// as CSV with a header row, as the server streams it.
func (c *Client) UsageCSV(ctx context.Context, f UsageFilter, w io.Writer) error {
	f.Cursor, f.Limit = "", 0
	q := f.query()
	q.Set("format", "csv")
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.BaseURL+withQuery("/api/v3/usage/records", q), nil)
	if err != nil {
		return err
	}
	if c.Key != "" {
		req.Header.Set("Authorization", "Bearer "+c.Key)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		data, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		return responseError(resp.StatusCode, data)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/csv") {
		return fmt.Errorf("the usage export answered %q, not CSV", ct)
	}
	_, err = io.Copy(w, resp.Body)
	return err
}

// UsageSummary is the organization's usage summed by a grouping.
type UsageSummary struct {
	GroupBy string            `json:"group_by"`
	From    *string           `json:"from"`
	To      *string           `json:"to"`
	Data    []UsageSummaryRow `json:"data"`
}

// UsageSummaryRow is one group's usage.
type UsageSummaryRow struct {
	Group        string `json:"group"`              // day, agent name, model or key id
	AgentID      string `json:"agent_id,omitempty"` // when grouped by agent or version
	Version      int    `json:"version,omitempty"`  // when grouped by version (0: before versions were rolled up)
	Runs         int64  `json:"runs"`
	Failed       int64  `json:"failed"`
	InputTokens  int64  `json:"input_tokens"`
	OutputTokens int64  `json:"output_tokens"`
	TotalTokens  int64  `json:"total_tokens"`
	CacheTokens
	Cost         float64 `json:"cost"`
	AvgLatencyMS float64 `json:"avg_latency_ms"`
}

// UsageSummary sums the organization's usage from one UTC day to another by
// groupBy: "day", "agent", "model", "key" or "version" (per agent and version).
func (c *Client) UsageSummary(ctx context.Context, groupBy, from, to string) (*UsageSummary, error) {
	q := url.Values{}
	setNonEmpty(q, "group_by", groupBy)
	setNonEmpty(q, "from", from)
	setNonEmpty(q, "to", to)
	var out UsageSummary
	if err := c.Do(ctx, http.MethodGet, withQuery("/api/v3/usage/summary", q), nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

func setNonEmpty(q url.Values, k, v string) {
	if v != "" {
		q.Set(k, v)
	}
}

func withQuery(path string, q url.Values) string {
	if len(q) == 0 {
		return path
	}
	return path + "?" + q.Encode()
}
