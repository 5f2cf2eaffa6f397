// Package run executes one agent run end to end, with no HTTP types: resolve the
// agent, serialize on its session, assemble the prompt within the model's context,
// hold the most the run can cost, call the model, then record the ledger row, the
// charge and the session turn in one transaction (or release the hold and record
// the failure).
package run

import (
	"context"
	"log/slog"
	"time"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/internal/agents"
	"github.com/agentd/agentd/internal/billing"
	"github.com/agentd/agentd/internal/catalog"
	"github.com/agentd/agentd/internal/llm"
	"github.com/agentd/agentd/internal/prompt"
	"github.com/agentd/agentd/internal/session"
	"github.com/agentd/agentd/internal/store"
)

// Request is one run.
type Request struct {
	Principal *agentd.Principal
	AgentName string // normalized
	Message   string
	SessionID string // "" for a stateless run
	// Emit, when set, makes the run stream: each piece of the reply is passed to it
	// as it arrives. An error from Emit ends the run.
	Emit func(text string) error
}

// Result is a finished run.
type Result struct {
	RunID     string
	AgentID   string
	Model     string
	Response  string
	Usage     agentd.Usage
	SessionID string
}

// Runner runs agents.
type Runner struct {
	Agents      *agents.Service
	DB          *store.DB
	Accounts    *billing.Accounts
	Leases      *session.Leases
	SessionWait time.Duration
	Timeout     time.Duration // deadline of the provider calls, retries and fallbacks included
	Backoff     Backoff
	Now         func() time.Time
	Log         *slog.Logger
}

// errInference is what a client sees when the model failed; the cause is logged.
var errInference = &agentd.Error{Code: agentd.EInferenceFailed, Message: "inference failed; nothing was charged"}

// Run executes req.
func (r *Runner) Run(ctx context.Context, req *Request) (*Result, error) {
	start := r.Now()
	p := req.Principal
	c, err := r.Agents.Resolve(ctx, p.OrgID, req.AgentName)
	if err != nil {
		return nil, err
	}
	a, m := c.Agent, c.Model
	saving := req.SessionID != "" && a.ConversationSaving

	// The lease covers history load to turn write, so turns of one session see each
	// other in order.
	if saving {
		release, err := r.Leases.Acquire(ctx, session.Key(p.OrgID, a.ID, p.Owner, req.SessionID), r.SessionWait)
		if err != nil {
			return nil, err
		}
		defer release()
	}

	msgTokens := m.Count(req.Message)
	in := prompt.Input{
		Fixed: c.Fixed, Message: req.Message, MessageTokens: msgTokens,
		ContextWindow: m.ContextWindow, MaxTokens: a.Version.MaxTokens,
	}
	if saving {
		if in.History, err = r.history(ctx, p, a, req.SessionID, in); err != nil {
			return nil, err
		}
	}
	pr, err := prompt.Build(in)
	if err != nil {
		return nil, err
	}

	plan := planFor(m, pr, a.Version.MaxTokens)

	// Hold the most this run can cost on any model that may answer it: every input
	// token and the whole reply budget.
	var holdAmount agentd.Micros
	for _, at := range plan {
		holdAmount = max(holdAmount, at.model.Price.Cost(at.inputTokens, at.maxTokens))
	}
	hold, err := r.Accounts.Hold(ctx, p.OrgID, holdAmount)
	if err != nil {
		return nil, err
	}
	defer hold.Release()   // no-op after Settle
	write := r.DB.Expect() // our ledger write is coming: let the writer wait for it
	defer write.Cancel()

	callCtx, cancel := context.WithTimeout(ctx, r.Timeout)
	resp, used, callErr := r.call(callCtx, plan, pr.Messages, a.Version.Temperature, req.Emit)
	cancel()
	latency := r.Now().Sub(start).Milliseconds()

	rec := &store.Run{
		ID: agentd.NewID("run"), Created: r.Now().UnixMicro(),
		OrgID: p.OrgID, KeyID: p.KeyID, Owner: p.Owner,
		AgentID: a.ID, AgentName: a.Name, AgentVersion: a.Version.Number, SessionID: req.SessionID,
		ModelRequested: m.ID, Model: used.model.ID, LatencyMS: latency,
	}
	// The record is written even if the client has gone: the work was done.
	wctx := context.WithoutCancel(ctx)
	if callErr != nil {
		rec.Outcome, rec.ErrorCode = store.OutcomeFailed, agentd.EInferenceFailed
		rec.UsageSource = agentd.UsageEstimated
		if err := write.Tx(wctx, func(tx *store.Tx) error { return tx.RecordRun(wctx, rec) }); err != nil {
			r.Log.Error("record failed run", "run_id", rec.ID, "err", err)
		}
		r.Log.Warn("inference failed", "run_id", rec.ID, "agent", a.Name, "model", used.model.ID, "err", callErr)
		return nil, errInference
	}
	m = used.model

	u := resp.Usage
	cost := m.Price.Cost(u.InputTokens, u.OutputTokens)
	if cost > hold.Amount {
		// The provider counted more than our tokenizer did (an estimated tokenizer, or
		// accounting we cannot see). Take the difference from the available balance;
		// what is not available is not charged, since a balance never goes negative.
		if held := hold.Grow(cost - hold.Amount); cost > held {
			r.Log.Warn("usage exceeds hold and available balance; charge capped", "run_id", rec.ID, "cost", cost, "charged", held)
			cost = held
		}
	}
	rec.Outcome = store.OutcomeOK
	rec.InputTokens, rec.OutputTokens, rec.UsageSource, rec.Cost = u.InputTokens, u.OutputTokens, u.Source, cost
	if saving {
		rec.SaveTurn = true
		rec.UserMessage, rec.Reply = req.Message, resp.Text
		rec.UserTokens, rec.AssistantTokens = msgTokens, u.OutputTokens
	}
	if err := write.Tx(wctx, func(tx *store.Tx) error { return tx.RecordRun(wctx, rec) }); err != nil {
		return nil, err // the hold is released by the deferred Release; nothing was charged
	}
	hold.Settle(cost)

	res := &Result{
		RunID: rec.ID, AgentID: a.ID, Model: m.ID, Response: resp.Text,
		Usage:     agentd.Usage{InputTokens: u.InputTokens, OutputTokens: u.OutputTokens, Source: u.Source},
		SessionID: req.SessionID,
	}
	return res, nil
}

// planFor lists the models that may answer a prompt for m: m itself, then each
// fallback the prompt fits, with the prompt counted by that model's tokenizer and
// the reply limited to what that model can produce.
func planFor(m *catalog.Model, pr *prompt.Result, maxTokens int) []attempt {
	plan := []attempt{{model: m, inputTokens: pr.InputTokens, maxTokens: maxTokens}}
	for _, f := range m.Chain()[1:] {
		in := pr.InputTokens
		if f.Tokenizer != m.Tokenizer || f.Tokenizer == "" {
			in = llm.CountMessages(f.Count, pr.Messages)
		}
		mt := min(maxTokens, f.MaxOutputTokens)
		if in+mt > f.ContextWindow {
			continue // the fallback's window is too small for this prompt
		}
		plan = append(plan, attempt{model: f, inputTokens: in, maxTokens: mt})
	}
	return plan
}

// history loads the newest turns of the session that can fit in the prompt, oldest
// first. It stops reading at the first turn that cannot fit, so its cost does not
// grow with the length of the session.
func (r *Runner) history(ctx context.Context, p *agentd.Principal, a *agentd.Agent, sessionID string, in prompt.Input) ([]prompt.Turn, error) {
	budget := in.ContextWindow - in.MaxTokens - in.Fixed.Tokens - llm.TokensPerMessage - in.MessageTokens - llm.TokensPerReply
	var turns []prompt.Turn
	used := 0
	err := r.DB.History(ctx, store.SessionKey{OrgID: p.OrgID, AgentID: a.ID, Owner: p.Owner, SessionID: sessionID}, func(t store.Turn) bool {
		used += 2*llm.TokensPerMessage + t.UserTokens + t.AssistantTokens
		if used > budget {
			return false
		}
		turns = append(turns, prompt.Turn{User: t.User, Assistant: t.Assistant, UserTokens: t.UserTokens, AssistantTokens: t.AssistantTokens})
		return true
	})
	for i, j := 0, len(turns)-1; i < j; i, j = i+1, j-1 {
		turns[i], turns[j] = turns[j], turns[i]
	}
	return turns, err
}
