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
	Timeout     time.Duration // deadline of the provider call
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

	// Hold the most this run can cost: every input token and the whole reply budget.
	holdAmount := m.Price.Cost(pr.InputTokens, a.Version.MaxTokens)
	hold, err := r.Accounts.Hold(ctx, p.OrgID, holdAmount)
	if err != nil {
		return nil, err
	}
	defer hold.Release()   // no-op after Settle
	write := r.DB.Expect() // our ledger write is coming: let the writer wait for it
	defer write.Cancel()

	callCtx, cancel := context.WithTimeout(ctx, r.Timeout)
	resp, callErr := m.Provider.Complete(callCtx, &llm.Request{
		Model: m.UpstreamModel, Messages: pr.Messages,
		Temperature: a.Version.Temperature, MaxTokens: a.Version.MaxTokens,
	})
	cancel()
	latency := r.Now().Sub(start).Milliseconds()

	rec := &store.Run{
		ID: agentd.NewID("run"), Created: r.Now().UnixMicro(),
		OrgID: p.OrgID, KeyID: p.KeyID, Owner: p.Owner,
		AgentID: a.ID, AgentName: a.Name, AgentVersion: a.Version.Number, SessionID: req.SessionID,
		ModelRequested: m.ID, Model: m.ID, LatencyMS: latency,
	}
	// The record is written even if the client has gone: the work was done.
	wctx := context.WithoutCancel(ctx)
	if callErr != nil {
		rec.Outcome, rec.ErrorCode = store.OutcomeFailed, agentd.EInferenceFailed
		rec.UsageSource = agentd.UsageEstimated
		if err := write.Tx(wctx, func(tx *store.Tx) error { return tx.RecordRun(wctx, rec) }); err != nil {
			r.Log.Error("record failed run", "run_id", rec.ID, "err", err)
		}
		r.Log.Warn("inference failed", "run_id", rec.ID, "agent", a.Name, "model", m.ID, "err", callErr)
		return nil, errInference
	}

	u := resp.Usage
	cost := m.Price.Cost(u.InputTokens, u.OutputTokens)
	if cost > holdAmount {
		// A provider counted more than our tokenizer; charging past the hold could
		// overspend, so the charge is capped and the gap logged.
		r.Log.Warn("usage exceeds hold; charge capped", "run_id", rec.ID, "cost", cost, "hold", holdAmount)
		cost = holdAmount
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
