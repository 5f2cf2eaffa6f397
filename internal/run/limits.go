package run

import (
	"context"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/internal/ratelimit"
)

// Limiter admits runs under the rate limits of their key and organization:
// tokens per minute and runs in flight (ratelimit.Limiter). Requests per minute
// are counted by the API, once per request.
type Limiter interface {
	// Admit takes a slot among the runs in flight and tokens, the most the run
	// may use, in the minute's window, or fails with ERateLimited naming the
	// limit (taking nothing). The permit's Done, called once the run has ended
	// however it ended, gives the slot back and settles the window to what the
	// run used; a nil permit is valid.
	Admit(ctx context.Context, p *agentd.Principal, tokens int64) (*ratelimit.Permit, error)
}

// admit is Limits.Admit, or nothing without limits. A run is admitted after its
// prompt is counted and before its hold, so that a run refused for its rate
// takes no money; an Idempotency-Key replay is never admitted (it uses nothing).
func (r *Runner) admit(ctx context.Context, p *agentd.Principal, tokens int64) (*ratelimit.Permit, error) {
	if r.Limits == nil {
		return nil, nil
	}
	return r.Limits.Admit(ctx, p, tokens)
}

// maxTokens is the most a prepared run may use, on any model of its plan: every
// input token and the whole reply limit of each choice, the same bound its hold
// prices.
func (pp *prepared) maxTokens(choices int) int64 {
	var n int64
	for _, at := range pp.plan {
		n = max(n, int64(at.inputTokens)+int64(choices)*int64(at.maxTokens))
	}
	return n
}

// usedTokens is what a run used, as tokens per minute count it: input (cached
// and cache writes included) and output (reasoning included).
func usedTokens(u agentd.Usage) int64 { return int64(u.InputTokens) + int64(u.OutputTokens) }
