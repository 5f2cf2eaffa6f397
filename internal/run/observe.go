package run

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/agentd/agentd"
)

// Observer is told what runs do, for metrics (internal/metrics implements it).
// Its methods are called on the run path, from the run's own goroutine: they
// must be quick and must not block. Nothing it is told names a run, a session
// or an agent: labels made of those would grow without bound.
type Observer interface {
	// RunEnded is called once for every run and embeddings call that found its
	// model, when it ends. An Idempotency-Key replay is no run and is not told.
	RunEnded(e RunEvent)
	// ProviderCalled is called after each call of a provider (each attempt).
	ProviderCalled(c ProviderCall)
	// Reserved is told when a run takes (+1) and ends (-1) a reservation.
	Reserved(what Reservation, delta int)
}

// OutcomeRejected is a RunEvent's outcome when agentd answered the run with an
// error of its own before or after the model (no credits, a busy session, a
// prompt that does not fit, a write that failed): nothing was charged. The
// other outcomes are the ledger's: ok, failed (the model failed), cancelled
// (the client went away).
const OutcomeRejected = "rejected"

// ClassClientClosed is the class of a cancelled run and of a provider call
// that ended because the client went away.
const ClassClientClosed = "client_closed"

// RunEvent is how one run ended.
type RunEvent struct {
	// Model is the model that answered, or the last one tried; for a rejected
	// run, the model it asked for.
	Model string
	// OrgName is the caller's organization.
	OrgName string
	// Outcome is ok, failed, cancelled or rejected (OutcomeRejected).
	Outcome string
	// Class is a failed run's class (Class*), a rejected run's error code
	// (insufficient_quota, session_busy, …), ClassClientClosed for a cancelled
	// run; "" for ok.
	Class string
	// Usage and Cost are what was charged (ok and cancelled runs).
	Usage agentd.Usage
	Cost  agentd.Micros
}

// What a ProviderCall was followed by.
const (
	NextRetry    = "retry"    // another try on the same model
	NextFallback = "fallback" // the next model of the chain
)

// ProviderCall is one call of a provider.
type ProviderCall struct {
	Provider string // the provider's name in the configuration
	Model    string // the catalog model
	Took     time.Duration
	// Class is "" when the provider answered, ClassClientClosed when the client
	// went away, else the class its failure has (Class*).
	Class string
	// Next is what the run did next: NextRetry, NextFallback, or "" (it
	// answered, or the run ended with this failure).
	Next string
}

// Reservation is what a run holds while it is in flight.
type Reservation int

const (
	ReservationHold  Reservation = iota // money held for the run (Accounts.Hold)
	ReservationLease                    // its session's turn lease (session.Service.Begin)
)

// reserved tells the observer, if any, that a reservation was taken or ended.
func (r *Runner) reserved(what Reservation, delta int) {
	if r.Observer != nil {
		r.Observer.Reserved(what, delta)
	}
}

// providerCalled tells the observer, if any, how a provider call ended: err is
// its error, gone whether the client went away meanwhile.
func (r *Runner) providerCalled(provider, model string, began time.Time, err error, gone bool, next string) {
	if r.Observer == nil {
		return
	}
	c := ProviderCall{Provider: provider, Model: model, Took: r.Clock.Now().Sub(began), Next: next}
	switch {
	case err == nil:
	case gone:
		c.Class = ClassClientClosed
	default:
		c.Class = failureClass(err)
	}
	r.Observer.ProviderCalled(c)
}

// runObservation is what a run's end tells the observer, gathered as the run
// goes (a value in the run's frame: observing allocates nothing); its obs is
// nil without an observer.
type runObservation struct {
	obs Observer
	ev  RunEvent
	row *agentd.LedgerRow // the ledger row the run wrote (or tried to), once it has one
}

// observeRun starts the observation of a run that found model on behalf of p.
func (r *Runner) observeRun(model string, p *agentd.Principal) runObservation {
	if r.Observer == nil {
		return runObservation{}
	}
	return runObservation{obs: r.Observer, ev: RunEvent{Model: model, OrgName: p.OrgName}}
}

// wrote notes the run's ledger row; end reads it once it is complete.
func (o *runObservation) wrote(row *agentd.LedgerRow) { o.row = row }

// charged is what the run's ledger row charged.
func (o *runObservation) charged() (agentd.Usage, agentd.Micros) {
	row := o.row
	return agentd.Usage{InputTokens: row.InputTokens, OutputTokens: row.OutputTokens, CachedInputTokens: row.CachedInputTokens,
		CacheWriteTokens: row.CacheWriteTokens, ReasoningTokens: row.ReasoningTokens}, row.Cost
}

// outcomeOf is the outcome and class of a run that ended with err and
// charged nothing.
func outcomeOf(err error) (outcome, class string) {
	var e *agentd.Error
	switch {
	case errors.As(err, &e) && e.Code == agentd.EInferenceFailed && e.Fields["class"] != nil:
		class, _ = e.Fields["class"].(string)
		return string(agentd.OutcomeFailed), class
	case e == nil && errors.Is(err, context.Canceled):
		return string(agentd.OutcomeCancelled), ClassClientClosed // before anything was charged
	}
	return OutcomeRejected, string(agentd.ErrorCode(err))
}

// end tells the observer how the run ended, by its error and ledger row.
func (o *runObservation) end(err error) {
	if o.obs == nil {
		return
	}
	ev := &o.ev
	if o.row != nil {
		ev.Model = o.row.Model
	}
	switch {
	case err == nil && o.row != nil:
		ev.Outcome = string(o.row.Outcome)
		ev.Usage, ev.Cost = o.charged()
	case errors.Is(err, ErrClientGone) && o.row != nil: // charged for what it received
		ev.Outcome, ev.Class = string(agentd.OutcomeCancelled), ClassClientClosed
		ev.Usage, ev.Cost = o.charged()
	default:
		ev.Outcome, ev.Class = outcomeOf(err)
	}
	o.obs.RunEnded(*ev)
}

// logContents logs what a run was asked and answered, at level debug: only
// with log.contents (Runner.LogContents), a debugging setting.
func (r *Runner) logContents(ctx context.Context, req *Request, runID, reply string) {
	if !r.Log.Enabled(ctx, slog.LevelDebug) {
		return
	}
	msgs := make([]string, 0, len(req.Messages))
	for i := range req.Messages {
		msgs = append(msgs, string(req.Messages[i].Role)+": "+req.Messages[i].Text())
	}
	if req.Messages == nil {
		msgs = append(msgs, "user: "+req.Message)
	}
	r.Log.DebugContext(ctx, "run contents", "run_id", runID, "messages", msgs, "response", reply)
}

// callStarted is when a provider call begins, for the observer; zero without one.
func (r *Runner) callStarted() time.Time {
	if r.Observer == nil {
		return time.Time{}
	}
	return r.Clock.Now()
}
