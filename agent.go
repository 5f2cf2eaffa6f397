package agentd

import (
	"strings"
	"time"
)

// Agent is a stored agent: its identity and stats, and its active Version.
type Agent struct {
	ID          string
	OrgID       string
	Name        string // normalized; unique per organization
	Description string
	Active      bool
	Creator     string
	CreatedAt   time.Time
	UpdatedAt   time.Time
	// ConversationSaving says whether session turns are stored.
	ConversationSaving bool

	UsageCount     int64 // successful runs
	FailedCount    int64 // runs whose inference failed
	TotalLatencyMS int64 // over successful runs
	LastUsed       *time.Time

	Version Version
	// Canary, when set, sends a share of the runs that pin no version to another
	// stored version (versions.go).
	Canary *Canary
}

// Version is one immutable configuration of an agent. Every update makes a new one,
// so a ledger row can say exactly which configuration answered.
type Version struct {
	Number         int
	Model          string
	Instructions   string
	Demonstrations []Demonstration
	Temperature    float64
	MaxTokens      int
	// Tools and ResponseFormat are sent with every run, in OpenAI's JSON (a
	// "tools" array, a "response_format" object); nil for none.
	Tools          []byte
	ResponseFormat []byte
	CreatedAt      time.Time
	// Note says why the version was made; AuthorKeyID is the key that made it
	// ("" for versions from before they were recorded).
	Note        string
	AuthorKeyID string
	// EvalStatus is EvalPassed or EvalFailed, "" when never evaluated.
	EvalStatus string
}

// Demonstration is a few-shot example: a user input and the reply the agent should give.
type Demonstration struct {
	Input  string `json:"input"`
	Output string `json:"output"`
}

// Agent defaults, from the NuGen API.
const (
	DefaultInstructions = "You are a helpful AI assistant."
	DefaultTemperature  = 0.7
	DefaultMaxTokens    = 1000
	MaxNameLen          = 64
)

// NormalizeName turns a display name into the name used in run URLs: lowercase, each
// run of characters outside [a-z0-9] becomes one "_", leading and trailing "_" trimmed.
// It returns "" when nothing is left; callers reject that. Names longer than
// MaxNameLen are the caller's to reject too.
func NormalizeName(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	pendingSep := false
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
		case r >= 'A' && r <= 'Z':
			r += 'a' - 'A'
		default:
			pendingSep = true
			continue
		}
		if pendingSep && b.Len() > 0 {
			b.WriteByte('_')
		}
		pendingSep = false
		b.WriteRune(r)
	}
	return b.String()
}

// AgentRef names an agent without its configuration, for listings that need only
// names (GET /v1/models).
type AgentRef struct {
	ID        string
	Name      string
	Model     string // of the active version
	Active    bool
	CreatedAt time.Time
}

// Size is what the agent's configuration takes: the bytes of its description,
// instructions and demonstrations.
func (a *Agent) Size() int {
	n := len(a.Description) + len(a.Version.Instructions) + len(a.Version.Tools) + len(a.Version.ResponseFormat)
	for _, d := range a.Version.Demonstrations {
		n += len(d.Input) + len(d.Output)
	}
	return n
}
