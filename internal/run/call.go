package run

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"github.com/agentd/agentd/internal/catalog"
	"github.com/agentd/agentd/internal/llm"
)

// Backoff shapes the wait between attempts on one model: exponential from Initial,
// capped at Max, with equal jitter (half fixed, half random) so that clients
// failing together do not retry together. A longer Retry-After from the provider
// wins, unless it is longer than the run has left: then the run falls back at once.
type Backoff struct {
	Initial, Max time.Duration
}

// delay is the wait before retry number n (0 for the first retry).
func (b Backoff) delay(n int) time.Duration {
	d := b.Initial
	for i := 0; i < n && d < b.Max; i++ {
		d *= 2
	}
	d = min(d, b.Max)
	if d <= 0 {
		return 0
	}
	return d/2 + rand.N(d/2+1)
}

// attempt is one model a run may be answered by, with the limits that apply to it.
type attempt struct {
	model       *catalog.Model
	inputTokens int // the prompt counted with this model's tokenizer
	maxTokens   int // the agent's reply limit within this model's
}

// call asks the models of plan in order, retrying retryable failures on each
// within its retry budget and the deadline of ctx, and falling back to the next on
// failures another model may not share. With emit non-nil it streams, and the
// first piece delivered is the commit point: after it nothing is retried and a
// failure ends the call. It returns the response, the attempt that answered (or
// the last one tried), and the error of the last try.
//
// base is the request without its model and limit, which each attempt sets.
func (r *Runner) call(ctx context.Context, plan []attempt, base *llm.Request, emit func(string) error) *callResult {
	out := &callResult{}
	var send func(string) error
	if emit != nil {
		send = func(s string) error {
			out.committed = true
			if err := emit(s); err != nil {
				out.emitFailed = true
				return err
			}
			return nil
		}
	}
	for i := range plan {
		a := &plan[i]
		out.used = a
		m := a.model
		req := *base
		req.Model, req.MaxTokens = m.UpstreamModel, a.maxTokens
		fallback := "" // what follows this model's last failure (observe.go)
		if i+1 < len(plan) {
			fallback = NextFallback
		}
		for try := 0; ; try++ {
			began := r.callStarted()
			resp, err := r.once(ctx, m, &req, send, try)
			out.resp, out.err = resp, err
			if err == nil {
				r.providerCalled(m.ProviderName, m.ID, began, nil, false, "")
				if resp.Usage.Source == "" {
					llm.EstimateUsage(m.Count, &req, resp)
				}
				return out
			}
			if out.committed || ctx.Err() != nil {
				r.providerCalled(m.ProviderName, m.ID, began, err, out.emitFailed || errors.Is(ctx.Err(), context.Canceled), "")
				return out
			}
			kind := llm.KindOf(err)
			if kind != llm.KindRetryable && kind != llm.KindExhausted {
				r.providerCalled(m.ProviderName, m.ID, began, err, false, "")
				return out // the same request fails the same way anywhere
			}
			if kind == llm.KindExhausted || try >= m.MaxRetries {
				r.providerCalled(m.ProviderName, m.ID, began, err, false, fallback)
				break
			}
			wait := max(r.Backoff.delay(try), llm.RetryAfter(err))
			if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= wait {
				r.providerCalled(m.ProviderName, m.ID, began, err, false, fallback)
				break // no time to wait: the next model may answer now
			}
			r.providerCalled(m.ProviderName, m.ID, began, err, false, NextRetry)
			r.Log.InfoContext(ctx, "retrying model", "model", m.ID, "attempt", try+2, "wait", wait, "err", err)
			if !r.sleep(ctx, wait) {
				return out
			}
		}
		if i+1 < len(plan) {
			r.Log.WarnContext(ctx, "falling back", "from", m.ID, "to", plan[i+1].model.ID, "err", out.err)
		}
	}
	return out
}

// callResult is how a call ended.
type callResult struct {
	resp *llm.Response // the answer; on failure, what the last try delivered (may be nil)
	used *attempt      // the attempt that answered, or the last one tried
	err  error
	// committed: a piece reached the client, so nothing was retried after it;
	// emitFailed: delivering a piece failed (the client is gone).
	committed, emitFailed bool
}

// once makes one attempt on m within its per-attempt timeout, try numbering it
// among m's (0: the first).
func (r *Runner) once(ctx context.Context, m *catalog.Model, req *llm.Request, emit func(string) error, try int) (resp *llm.Response, err error) {
	ctx, span := r.startAttempt(ctx, m, req, try)
	defer func() { endAttempt(span, resp, err) }()
	if m.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, m.Timeout)
		defer cancel()
	}
	if emit != nil {
		return m.Provider.Stream(ctx, req, emit)
	}
	return m.Provider.Complete(ctx, req)
}

// sleep waits d on the runner's clock; it reports false if ctx ended first.
func (r *Runner) sleep(ctx context.Context, d time.Duration) bool {
	t := r.Clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C():
		return true
	}
}
