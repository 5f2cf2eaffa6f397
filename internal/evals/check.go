package evals

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/agentd/agentd"
)

// Observation is what one run of a case gave.
type Observation struct {
	RunID        string
	Reply        string
	OutputTokens int
	Cost         agentd.Micros
	LatencyMS    int64
}

// Check returns how o fails c's expectations, one line each; none when it passes.
// The expectations were validated when c was parsed.
func Check(c *Case, o *Observation) []string {
	var fails []string
	e := &c.Expect
	reply := strings.TrimSpace(o.Reply)
	if e.Equals != nil && reply != strings.TrimSpace(*e.Equals) {
		fails = append(fails, fmt.Sprintf("equals: got %s, want %s", clip(reply), clip(strings.TrimSpace(*e.Equals))))
	}
	for _, s := range e.Contains {
		if !strings.Contains(o.Reply, s) {
			fails = append(fails, fmt.Sprintf("contains: no %q in the reply", s))
		}
	}
	if e.Regex != "" {
		if re, err := regexp.Compile(e.Regex); err != nil || !re.MatchString(o.Reply) {
			fails = append(fails, fmt.Sprintf("regex: the reply does not match %s", e.Regex))
		}
	}
	if len(e.JSONSchema) > 0 {
		s, err := ParseSchema(e.JSONSchema)
		if err == nil {
			err = s.Validate(reply)
		}
		if err != nil {
			fails = append(fails, "json_schema: "+err.Error())
		}
	}
	if e.MaxOutputTokens > 0 && o.OutputTokens > e.MaxOutputTokens {
		fails = append(fails, fmt.Sprintf("max_output_tokens: %d output tokens, at most %d", o.OutputTokens, e.MaxOutputTokens))
	}
	if e.MaxCost != nil {
		if limit, _ := agentd.CreditsToMicros(*e.MaxCost); o.Cost > limit {
			fails = append(fails, fmt.Sprintf("max_cost: cost %s credits, at most %s", o.Cost, limit))
		}
	}
	if e.MaxLatencyMS > 0 && o.LatencyMS > e.MaxLatencyMS {
		fails = append(fails, fmt.Sprintf("max_latency_ms: %d ms, at most %d", o.LatencyMS, e.MaxLatencyMS))
	}
	return fails
}

// clip quotes s, shortened to 200 bytes.
func clip(s string) string {
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return fmt.Sprintf("%q", s)
}

// CaseResult is how one case went.
type CaseResult struct {
	Name         string        `json:"name"`
	Source       string        `json:"source"`
	Passed       bool          `json:"passed"`
	Failures     []string      `json:"failures,omitempty"`
	Error        string        `json:"error,omitempty"` // the run failed: no reply to check
	RunID        string        `json:"run_id,omitempty"`
	Reply        string        `json:"reply"`
	OutputTokens int           `json:"output_tokens"`
	Cost         agentd.Micros `json:"cost"`
	LatencyMS    int64         `json:"latency_ms"`
}

// Report is a run of an agent version's cases.
type Report struct {
	ID         string        `json:"id,omitempty"`
	Agent      string        `json:"agent"`
	AgentID    string        `json:"agent_id,omitempty"`
	Version    int           `json:"version"`
	Status     string        `json:"status"` // StatusPassed or StatusFailed
	Passed     int           `json:"passed"`
	Failed     int           `json:"failed"`
	Cost       agentd.Micros `json:"cost"`
	StartedAt  time.Time     `json:"started_at"`
	FinishedAt time.Time     `json:"finished_at"`
	KeyID      string        `json:"key_id,omitempty"` // who ran it (server-side evals)
	Cases      []CaseResult  `json:"cases"`
}

// Eval statuses, as a version's eval_status stores them.
const (
	StatusPassed = agentd.EvalPassed
	StatusFailed = agentd.EvalFailed
)

// RunFunc runs one case and says what it gave. An error is the run's failure,
// reported as the case's; Run stops only when its context ends.
type RunFunc func(ctx context.Context, c *Case) (*Observation, error)

// Run runs cases one after another, in order, calling progress (when not nil)
// after each, and sums their results into a report. A version with no case
// fails: nothing shows that it works. Run returns an error only when ctx ends.
func Run(ctx context.Context, cases []Case, run RunFunc, now func() time.Time, progress func(done int, r *CaseResult)) (*Report, error) {
	rep := &Report{StartedAt: now(), Cases: make([]CaseResult, 0, len(cases))}
	for i := range cases {
		c := &cases[i]
		r := CaseResult{Name: c.Name, Source: c.Source}
		o, err := run(ctx, c)
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, ctxErr
		}
		if err != nil {
			r.Error = err.Error()
		} else {
			r.RunID, r.Reply, r.OutputTokens, r.Cost, r.LatencyMS = o.RunID, o.Reply, o.OutputTokens, o.Cost, o.LatencyMS
			r.Failures = Check(c, o)
			r.Passed = len(r.Failures) == 0
		}
		if r.Passed {
			rep.Passed++
		} else {
			rep.Failed++
		}
		rep.Cost, _ = agentd.AddMicros(rep.Cost, r.Cost)
		rep.Cases = append(rep.Cases, r)
		if progress != nil {
			progress(i+1, &rep.Cases[i])
		}
	}
	rep.FinishedAt = now()
	rep.Status = StatusPassed
	if rep.Failed > 0 || len(cases) == 0 {
		rep.Status = StatusFailed
	}
	return rep, nil
}
