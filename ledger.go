package agentd

import "time"

// LedgerRow is the money record of one run, successful or not: who ran what, on
// which model, how many tokens it used (and whether the provider counted them),
// what it cost and how it ended.
type LedgerRow struct {
	RunID          string
	CreatedAt      time.Time
	OrgID          string
	KeyID          string
	Owner          string
	AgentID        string // "" for a raw model call
	AgentName      string
	AgentVersion   int
	SessionID      string // "" when none
	ModelRequested string
	Model          string // the model that answered
	InputTokens    int
	OutputTokens   int
	// Parts of InputTokens and OutputTokens with prices or meanings of their own
	// (Usage).
	CachedInputTokens int
	CacheWriteTokens  int
	ReasoningTokens   int
	UsageSource       string // UsageProvider or UsageEstimated
	Cost              Micros
	LatencyMS         int64
	Outcome           Outcome
	ErrorCode         string
}

// Outcome is how a run ended.
type Outcome string

// Run outcomes.
const (
	OutcomeOK     Outcome = "ok"
	OutcomeFailed Outcome = "failed" // the model failed; nothing is charged
	// OutcomeCancelled: the client went away mid-stream; the tokens generated
	// until then are charged, and no session turn is stored.
	OutcomeCancelled Outcome = "cancelled"
)

// LedgerFilter selects ledger rows of one organization. Empty strings and zero
// times match everything.
type LedgerFilter struct {
	OrgID string
	// From (inclusive) and To (exclusive) bound CreatedAt; zero leaves that side open.
	From, To time.Time
	// AgentID, KeyID and Model match exactly; Model is the model that answered.
	AgentID, KeyID, Model string
	// AgentVersion, when not 0 (with AgentID), keeps the rows of that version.
	AgentVersion int
	// AgentNames, when set, keeps only rows of agents with these names (a key's
	// allow-list): rows of raw model calls are left out too.
	AgentNames []string
	// Cursor is a previous page's next cursor, "" for the first page.
	Cursor string
	// Limit is the page size: DefaultLedgerPage when ≤ 0, at most MaxLedgerPage.
	Limit int
}

// Ledger page sizes.
const (
	DefaultLedgerPage = 100
	MaxLedgerPage     = 1000
)

// Usage summary groupings.
const (
	GroupByDay   = "day"
	GroupByAgent = "agent"
	GroupByModel = "model"
	GroupByKey   = "key"
	// GroupByVersion groups by agent and agent version.
	GroupByVersion = "version"
)

// UsageRow is the usage of one group of a usage summary over a range of days.
type UsageRow struct {
	// Group is the day (YYYY-MM-DD), the agent's name, the model id or the key id.
	Group string
	// AgentID is set when grouping by agent or version: names can be reused
	// after a delete.
	AgentID string
	// Version is the agent version when grouping by version; 0 for the runs
	// rolled up before rollups had versions (see store.DB.UsageSummary).
	Version      int
	Runs         int64 // successful
	Failed       int64
	InputTokens  int64
	OutputTokens int64
	CacheTokens
	Cost Micros
	// AvgLatencyMS is the mean latency of the successful runs; 0 when none.
	AvgLatencyMS float64
}

// ModelUsage is the usage of one answering model.
type ModelUsage struct {
	Model        string
	Runs         int64 // successful
	Failed       int64
	InputTokens  int64
	OutputTokens int64
	CacheTokens
	Cost Micros
}

// CacheTokens are the parts of a sum of usage with prices or meanings of their
// own: input read from and written to the provider's prompt cache, and reasoning.
type CacheTokens struct {
	CachedInputTokens int64
	CacheWriteTokens  int64
	ReasoningTokens   int64
}

// Add adds o to t.
func (t *CacheTokens) Add(o CacheTokens) {
	t.CachedInputTokens += o.CachedInputTokens
	t.CacheWriteTokens += o.CacheWriteTokens
	t.ReasoningTokens += o.ReasoningTokens
}

// UsageTotals is an organization's usage over a range of days.
type UsageTotals struct {
	Runs         int64 // successful
	Failed       int64
	InputTokens  int64
	OutputTokens int64
	CacheTokens
	Cost Micros
	// Models is the usage per answering model, most successful runs first.
	Models []ModelUsage
}
