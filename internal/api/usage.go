package api

import (
	"context"
	"encoding/csv"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/agentd/agentd"
)

// The usage endpoints read the usage record of the caller's organization: NuGen's
// agents/usage summary and, as extensions, the raw ledger rows (JSON pages or one
// CSV stream) and summaries of the daily rollups. Time bounds are accepted as a UTC
// day (YYYY-MM-DD), an RFC 3339 time or Unix seconds; a day given as "to" includes
// that whole day. Endpoints built on the daily rollups round bounds out to whole
// UTC days.

const maxUsageLimit = agentd.MaxLedgerPage

// timeBound parses the query parameter name as a time bound, or returns the zero
// time when it is absent. A day as the upper bound means the end of that day, so
// that from=D&to=D is the whole day D; other upper bounds are exclusive.
func timeBound(r *http.Request, name string, upper bool) (time.Time, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return time.Time{}, nil
	}
	if d, err := time.Parse(time.DateOnly, v); err == nil {
		if upper {
			d = d.AddDate(0, 0, 1)
		}
		return d, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return t.UTC(), nil
	}
	if isDigits(v) {
		if secs, err := strconv.ParseInt(v, 10, 64); err == nil && secs <= math.MaxInt64/1_000_000 {
			return time.Unix(secs, 0).UTC(), nil
		}
	}
	return time.Time{}, agentd.Invalid("Input should be a day (YYYY-MM-DD), an RFC 3339 time or Unix seconds", "datetime_parsing", "query", name)
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// timeRange reads the from and to parameters; the range may not be empty.
func timeRange(r *http.Request) (from, to time.Time, err error) {
	if from, err = timeBound(r, "from", false); err != nil {
		return from, to, err
	}
	if to, err = timeBound(r, "to", true); err != nil {
		return from, to, err
	}
	if !from.IsZero() && !to.IsZero() && !to.After(from) {
		return from, to, agentd.Invalid("to must be after from", "value_error", "query", "to")
	}
	return from, to, nil
}

// dayRange reads from and to as inclusive UTC days for the rollups; "" is open.
// An exclusive upper bound at midnight does not include the day it starts.
func dayRange(r *http.Request) (fromDay, toDay string, err error) {
	from, to, err := timeRange(r)
	if err != nil {
		return "", "", err
	}
	if !from.IsZero() {
		fromDay = from.Format(time.DateOnly)
	}
	if !to.IsZero() {
		toDay = to.Add(-time.Microsecond).Format(time.DateOnly)
	}
	return fromDay, toDay, nil
}

// usageAgent resolves the agent query parameter (an id or a normalized name, of an
// active or inactive agent of p's organization) to an agent id; "" when absent.
func (s *Server) usageAgent(ctx context.Context, r *http.Request, p *agentd.Principal) (string, error) {
	v := r.URL.Query().Get("agent")
	if v == "" {
		return "", nil
	}
	a, err := s.Agents.Lookup(ctx, p, v)
	if err != nil {
		return "", err
	}
	return a.ID, nil
}

// agentsUsage answers NuGen's GET /api/v3/agents/usage in both spellings (its docs
// show camelCase, the live service answers snake_case), plus "models".
func (s *Server) agentsUsage(w http.ResponseWriter, r *http.Request, p *agentd.Principal) error {
	ctx := r.Context()
	fromDay, toDay, err := dayRange(r)
	if err != nil {
		return err
	}
	agentID, err := s.usageAgent(ctx, r, p)
	if err != nil {
		return err
	}
	if agentID == "" && p.Restricted() {
		return agentd.Errorf(agentd.EForbidden, "this key is limited to agents (%s): name one with ?agent=", strings.Join(p.Agents, ", "))
	}
	t, err := s.Ledger.Totals(ctx, p.OrgID, fromDay, toDay, agentID)
	if err != nil {
		return err
	}
	tokens := t.InputTokens + t.OutputTokens
	avg := 0.0
	if t.Runs > 0 {
		avg = math.Round(float64(tokens)/float64(t.Runs)*100) / 100
	}
	mostUsed := ""
	byModel := map[string]int64{}
	type modelUsage struct {
		Model        string `json:"model"`
		Runs         int64  `json:"runs"`
		Failed       int64  `json:"failed"`
		InputTokens  int64  `json:"input_tokens"`
		OutputTokens int64  `json:"output_tokens"`
		TotalTokens  int64  `json:"total_tokens"`
		cacheTokens
		Cost agentd.Micros `json:"cost"`
	}
	models := make([]modelUsage, 0, len(t.Models))
	for _, m := range t.Models { // most successful runs first
		if m.Runs > 0 {
			byModel[m.Model] = m.Runs
			if mostUsed == "" {
				mostUsed = m.Model
			}
		}
		models = append(models, modelUsage{Model: m.Model, Runs: m.Runs, Failed: m.Failed, InputTokens: m.InputTokens,
			OutputTokens: m.OutputTokens, TotalTokens: m.InputTokens + m.OutputTokens, cacheTokens: cacheTokens(m.CacheTokens), Cost: m.Cost})
	}
	return writeJSON(w, http.StatusOK, map[string]any{"data": map[string]any{
		"totalUsage": t.Runs, "totalTokens": tokens, "averageTokensPerRequest": avg,
		"mostUsedModel": mostUsed, "usageByModel": byModel,
		"total_usage": t.Runs, "total_tokens": tokens, "average_tokens_per_request": avg,
		"most_used_model": mostUsed, "usage_by_model": byModel,
		"models": models,
	}})
}

// cacheTokens are agentd.CacheTokens as the usage API shows them.
type cacheTokens struct {
	CachedInputTokens int64 `json:"cached_input_tokens"`
	CacheWriteTokens  int64 `json:"cache_write_tokens"`
	ReasoningTokens   int64 `json:"reasoning_tokens"`
}

// usageRecord is one ledger row as the API shows it.
type usageRecord struct {
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
	// Parts of input_tokens and output_tokens (agentd.Usage).
	CachedInputTokens int            `json:"cached_input_tokens"`
	CacheWriteTokens  int            `json:"cache_write_tokens"`
	ReasoningTokens   int            `json:"reasoning_tokens"`
	UsageSource       string         `json:"usage_source"`
	Cost              agentd.Micros  `json:"cost"`
	LatencyMS         int64          `json:"latency_ms"`
	Outcome           agentd.Outcome `json:"outcome"`
	ErrorCode         *string        `json:"error_code"`
}

// recordTime formats a ledger time: RFC 3339, UTC, always with microseconds.
func recordTime(t time.Time) string {
	return t.UTC().Format("2006-01-02T15:04:05.000000Z07:00")
}

func nonEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func newUsageRecord(r *agentd.LedgerRow) usageRecord {
	return usageRecord{
		RunID: r.RunID, CreatedAt: recordTime(r.CreatedAt), OrgID: r.OrgID, KeyID: r.KeyID, Owner: r.Owner,
		AgentID: r.AgentID, AgentName: r.AgentName, AgentVersion: r.AgentVersion, SessionID: nonEmpty(r.SessionID),
		ModelRequested: r.ModelRequested, Model: r.Model,
		InputTokens: r.InputTokens, OutputTokens: r.OutputTokens, TotalTokens: r.InputTokens + r.OutputTokens,
		CachedInputTokens: r.CachedInputTokens, CacheWriteTokens: r.CacheWriteTokens, ReasoningTokens: r.ReasoningTokens,
		UsageSource: r.UsageSource, Cost: r.Cost, LatencyMS: r.LatencyMS, Outcome: r.Outcome, ErrorCode: nonEmpty(r.ErrorCode),
	}
}

// csvColumns are the CSV export's columns: the JSON record's fields, those added
// later (the cache and reasoning tokens) last, so that no column moves.
var csvColumns = []string{"run_id", "created_at", "org_id", "key_id", "owner", "agent_id", "agent_name", "agent_version",
	"session_id", "model_requested", "model", "input_tokens", "output_tokens", "total_tokens", "usage_source", "cost",
	"latency_ms", "outcome", "error_code", "cached_input_tokens", "cache_write_tokens", "reasoning_tokens"}

// csvRecord fills row (len(csvColumns)) with r; cost is in credits with 6 decimals.
func csvRecord(row []string, r *agentd.LedgerRow) {
	row[0], row[1], row[2], row[3], row[4] = r.RunID, recordTime(r.CreatedAt), r.OrgID, r.KeyID, r.Owner
	row[5], row[6], row[7] = r.AgentID, r.AgentName, strconv.Itoa(r.AgentVersion)
	row[8], row[9], row[10] = r.SessionID, r.ModelRequested, r.Model
	row[11], row[12] = strconv.Itoa(r.InputTokens), strconv.Itoa(r.OutputTokens)
	row[13], row[14] = strconv.Itoa(r.InputTokens+r.OutputTokens), r.UsageSource
	row[15], row[16], row[17], row[18] = credits6(r.Cost), strconv.FormatInt(r.LatencyMS, 10), string(r.Outcome), r.ErrorCode
	row[19], row[20], row[21] = strconv.Itoa(r.CachedInputTokens), strconv.Itoa(r.CacheWriteTokens), strconv.Itoa(r.ReasoningTokens)
	escapeCSVText(row) // no text cell is a formula (csvsafe.go)
}

// credits6 formats m in credits with exactly six decimals.
func credits6(m agentd.Micros) string {
	sign, u := "", uint64(m)
	if m < 0 {
		sign, u = "-", uint64(-m)
	}
	frac := strconv.FormatUint(u%agentd.MicrosPerCredit+agentd.MicrosPerCredit, 10)[1:]
	return sign + strconv.FormatUint(u/agentd.MicrosPerCredit, 10) + "." + frac
}

// usageRecords answers GET /api/v3/usage/records: ledger rows in (created_at,
// run_id) order, a page at a time, or every matching row as CSV (format=csv).
func (s *Server) usageRecords(w http.ResponseWriter, r *http.Request, p *agentd.Principal) error {
	ctx := r.Context()
	q := r.URL.Query()
	from, to, err := timeRange(r)
	if err != nil {
		return err
	}
	f := agentd.LedgerFilter{OrgID: p.OrgID, KeyID: q.Get("key"), Model: q.Get("model"), Cursor: q.Get("cursor"), Limit: agentd.DefaultLedgerPage,
		From: from, To: to, AgentNames: p.Agents} // a key limited to agents reads only their rows
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		switch {
		case err != nil:
			return agentd.Invalid("Input should be a valid integer, unable to parse string as an integer", "int_parsing", "query", "limit")
		case n < 1:
			return agentd.Invalid("Input should be greater than or equal to 1", "greater_than_equal", "query", "limit")
		case n > maxUsageLimit:
			return agentd.Invalid("Input should be less than or equal to "+strconv.Itoa(maxUsageLimit), "less_than_equal", "query", "limit")
		}
		f.Limit = n
	}
	csvOut := false
	switch v := q.Get("format"); v {
	case "", "json":
	case "csv":
		csvOut = true
	default:
		return agentd.Invalid("Input should be 'json' or 'csv'", "enum", "query", "format")
	}
	if f.AgentID, err = s.usageAgent(ctx, r, p); err != nil {
		return err
	}
	if v := q.Get("version"); v != "" {
		n, err := strconv.Atoi(v)
		switch {
		case err != nil || n < 1:
			return agentd.Invalid("version must be a version number (1, 2, …)", "int_parsing", "query", "version")
		case f.AgentID == "":
			return agentd.Invalid("version needs agent: a version number is an agent's", "missing", "query", "agent")
		}
		f.AgentVersion = n
	}
	if csvOut {
		return s.usageCSV(w, r, f)
	}
	runs, next, err := s.Ledger.Page(ctx, f)
	if err != nil {
		return err
	}
	data := make([]usageRecord, len(runs))
	for i := range runs {
		data[i] = newUsageRecord(&runs[i])
	}
	return writeJSON(w, http.StatusOK, map[string]any{"data": data, "next_cursor": nonEmpty(next)})
}

// usageCSV streams every row matching f (its limit and cursor aside) as CSV, read
// and flushed a page at a time so that memory stays bounded whatever the size of
// the ledger. It stops when the client goes away.
func (s *Server) usageCSV(w http.ResponseWriter, r *http.Request, f agentd.LedgerFilter) error {
	ctx := r.Context()
	f.Limit, f.Cursor = agentd.MaxLedgerPage, ""
	// The first page is read before anything is written, so that its failure is
	// still an ordinary error response.
	runs, next, err := s.Ledger.Page(ctx, f)
	if err != nil {
		return err
	}
	h := w.Header()
	h.Set("Content-Type", "text/csv; charset=utf-8")
	h.Set("Content-Disposition", `attachment; filename="agentd-usage.csv"`)
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	cw := csv.NewWriter(w)
	row := make([]string, len(csvColumns))
	cw.Write(csvColumns)
	for {
		for i := range runs {
			csvRecord(row, &runs[i])
			cw.Write(row)
		}
		cw.Flush()
		if cw.Error() != nil {
			return nil // the client is gone
		}
		if err := rc.Flush(); err != nil {
			return nil
		}
		if next == "" || ctx.Err() != nil {
			return nil
		}
		f.Cursor = next
		if runs, next, err = s.Ledger.Page(ctx, f); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			// The status is sent: abort the response, so that the client sees a
			// broken transfer instead of a complete-looking file that lacks rows.
			s.Log.ErrorContext(ctx, "usage export failed mid-stream", "org_id", f.OrgID, "err", err)
			panic(http.ErrAbortHandler)
		}
	}
}

// usageSummary answers GET /api/v3/usage/summary: the daily rollups summed by day,
// agent, model, key or agent version (per agent and version).
func (s *Server) usageSummary(w http.ResponseWriter, r *http.Request, p *agentd.Principal) error {
	groupBy := r.URL.Query().Get("group_by")
	switch groupBy {
	case "":
		return agentd.Invalid("Field required", "missing", "query", "group_by")
	case agentd.GroupByDay, agentd.GroupByAgent, agentd.GroupByModel, agentd.GroupByKey, agentd.GroupByVersion:
	default:
		return agentd.Invalid("Input should be 'day', 'agent', 'model', 'key' or 'version'", "enum", "query", "group_by")
	}
	fromDay, toDay, err := dayRange(r)
	if err != nil {
		return err
	}
	byAgent := groupBy == agentd.GroupByAgent || groupBy == agentd.GroupByVersion
	if p.Restricted() && !byAgent {
		return agentd.Errorf(agentd.EForbidden, "this key is limited to agents: it reads the summary by agent only (group_by=agent or version), filtered to its agents")
	}
	rows, err := s.Ledger.Summary(r.Context(), p.OrgID, groupBy, fromDay, toDay)
	if err != nil {
		return err
	}
	if p.Restricted() {
		rows = slices.DeleteFunc(rows, func(u agentd.UsageRow) bool { return !p.MayUse(u.Group) })
	}
	type summaryRow struct {
		Group        string `json:"group"`
		AgentID      string `json:"agent_id,omitempty"`
		Version      *int   `json:"version,omitempty"` // group_by=version
		Runs         int64  `json:"runs"`
		Failed       int64  `json:"failed"`
		InputTokens  int64  `json:"input_tokens"`
		OutputTokens int64  `json:"output_tokens"`
		TotalTokens  int64  `json:"total_tokens"`
		cacheTokens
		Cost         agentd.Micros `json:"cost"`
		AvgLatencyMS float64       `json:"avg_latency_ms"`
	}
	data := make([]summaryRow, len(rows))
	for i, row := range rows {
		data[i] = summaryRow{Group: row.Group, AgentID: row.AgentID, Runs: row.Runs, Failed: row.Failed,
			InputTokens: row.InputTokens, OutputTokens: row.OutputTokens, TotalTokens: row.InputTokens + row.OutputTokens,
			cacheTokens: cacheTokens(row.CacheTokens), Cost: row.Cost, AvgLatencyMS: math.Round(row.AvgLatencyMS*100) / 100}
		if groupBy == agentd.GroupByVersion {
			data[i].Version = &rows[i].Version
		}
	}
	return writeJSON(w, http.StatusOK, map[string]any{"data": data, "group_by": groupBy, "from": nonEmpty(fromDay), "to": nonEmpty(toDay)})
}
