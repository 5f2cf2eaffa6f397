// Package run executes one agent run end to end, with no HTTP types: resolve the
// agent, serialize on its session, assemble the prompt within the model's context,
// hold the most the run can cost, call the model, then record the ledger row, the
// charge and the session turn in one transaction (or release the hold and record
// the failure).
package run

import (
	"context"
	"encoding/json"
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
	// IdempotencyKey, when set, makes a retry of a finished run return the stored
	// result with no new charge (see idem.go). RequestHash identifies what was asked;
	// "" means a hash of the agent, session and message.
	IdempotencyKey string
	RequestHash    string
}

// Result is a finished run. It is stored as JSON for Idempotency-Key replays.
type Result struct {
	RunID     string       `json:"run_id"`
	AgentID   string       `json:"agent_id"`
	Model     string       `json:"model"`
	Response  string       `json:"response"`
	Usage     agentd.Usage `json:"usage"`
	SessionID string       `json:"session_id,omitempty"`
	// HistoryTurns is how many earlier turns of the session the prompt carried, and
	// TrimmedTurns how many older ones did not fit and were left out.
	HistoryTurns int `json:"history_turns"`
	TrimmedTurns int `json:"trimmed_turns"`
	// Replayed marks a result returned from an Idempotency-Key record.
	Replayed bool `json:"-"`
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
	IdemTTL     time.Duration // how long Idempotency-Key results are kept (default 24 h)
	Now         func() time.Time
	Log         *slog.Logger

	inflight inflight
}

// errInference is what a client sees when the model failed; the cause is logged.
var errInference = &agentd.Error{Code: agentd.EInferenceFailed, Message: "inference failed; nothing was charged"}

// prepared is a run up to the hold: the agent, the prompt and the models that may
// answer it, and what that may cost.
type prepared struct {
	c            *agents.Compiled
	saving       bool
	msgTokens    int
	pr           *prompt.Result
	historyTurns int
	trimmedTurns int
	plan         []attempt
	holdAmount   agentd.Micros
}

// prepare resolves the agent, loads the history that fits (the caller holds the
// session's lease when it will write a turn) and assembles the prompt.
func (r *Runner) prepare(ctx context.Context, req *Request) (*prepared, error) {
	p := req.Principal
	c, err := r.Agents.Resolve(ctx, p.OrgID, req.AgentName)
	if err != nil {
		return nil, err
	}
	a, m := c.Agent, c.Model
	pp := &prepared{c: c, saving: req.SessionID != "" && a.ConversationSaving, msgTokens: m.Count(req.Message)}
	in := prompt.Input{
		Fixed: c.Fixed, Message: req.Message, MessageTokens: pp.msgTokens,
		ContextWindow: m.ContextWindow, MaxTokens: a.Version.MaxTokens,
	}
	if pp.saving {
		if in.History, pp.trimmedTurns, err = r.history(ctx, p, a, req.SessionID, in); err != nil {
			return nil, err
		}
		pp.historyTurns = len(in.History)
	}
	if pp.pr, err = prompt.Build(in); err != nil {
		return nil, err
	}
	pp.trimmedTurns += pp.pr.TrimmedTurns
	pp.historyTurns -= pp.pr.TrimmedTurns
	pp.plan = planFor(m, pp.pr, a.Version.MaxTokens)
	// Hold the most this run can cost on any model that may answer it: every input
	// token and the whole reply budget.
	for _, at := range pp.plan {
		pp.holdAmount = max(pp.holdAmount, at.model.Price.Cost(at.inputTokens, at.maxTokens))
	}
	return pp, nil
}

// Estimate is what a run would hold, without running it.
type Estimate struct {
	AgentID         string
	Model           string
	InputTokens     int
	MaxOutputTokens int
	Hold            agentd.Micros
	Models          []string // the models that may answer, in order
	HistoryTurns    int
	TrimmedTurns    int
	Available       agentd.Micros // what the organization (or the key's budget, if lower) has available
	Affordable      bool
}

// Estimate returns the hold req would take: the prompt counted as a run would
// send it (history included), without calling any model or holding anything.
func (r *Runner) Estimate(ctx context.Context, req *Request) (*Estimate, error) {
	pp, err := r.prepare(ctx, req)
	if err != nil {
		return nil, err
	}
	p := req.Principal
	st, err := r.Accounts.State(ctx, p.OrgID)
	if err != nil {
		return nil, err
	}
	avail := st.Balance - st.Held
	if ks, err := r.Accounts.KeyState(ctx, p.OrgID, p.KeyID); err == nil && ks.Budget.Set {
		avail = min(avail, ks.Available)
	}
	e := &Estimate{
		AgentID: pp.c.Agent.ID, Model: pp.c.Model.ID, InputTokens: pp.pr.InputTokens,
		MaxOutputTokens: pp.c.Agent.Version.MaxTokens, Hold: pp.holdAmount,
		HistoryTurns: pp.historyTurns, TrimmedTurns: pp.trimmedTurns,
		Available: max(avail, 0), Affordable: pp.holdAmount <= avail,
	}
	for _, at := range pp.plan {
		e.Models = append(e.Models, at.model.ID)
	}
	return e, nil
}

// Run executes req.
func (r *Runner) Run(ctx context.Context, req *Request) (*Result, error) {
	start := r.Now()
	p := req.Principal
	var idem *store.Idem
	if req.IdempotencyKey != "" {
		stored, rec, done, err := r.beginIdempotent(ctx, req)
		if err != nil || stored != nil {
			return stored, err
		}
		defer done()
		idem = rec
	}
	// Resolving first makes an unknown agent a 404 before any lease is taken.
	c, err := r.Agents.Resolve(ctx, p.OrgID, req.AgentName)
	if err != nil {
		return nil, err
	}
	// The lease covers history load to turn write, so turns of one session see each
	// other in order.
	if req.SessionID != "" && c.Agent.ConversationSaving {
		release, err := r.Leases.Acquire(ctx, session.Key(p.OrgID, c.Agent.ID, p.Owner, req.SessionID), r.SessionWait)
		if err != nil {
			return nil, err
		}
		defer release()
	}
	pp, err := r.prepare(ctx, req)
	if err != nil {
		return nil, err
	}
	a, m, pr, plan, holdAmount, saving, msgTokens := pp.c.Agent, pp.c.Model, pp.pr, pp.plan, pp.holdAmount, pp.saving, pp.msgTokens

	hold, err := r.Accounts.HoldKey(ctx, p.OrgID, p.KeyID, holdAmount)
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
	rec.KeyBudget, rec.KeyPeriodStart = hold.KeyCharge()
	res := &Result{
		RunID: rec.ID, AgentID: a.ID, Model: m.ID, Response: resp.Text,
		Usage:     agentd.Usage{InputTokens: u.InputTokens, OutputTokens: u.OutputTokens, Source: u.Source},
		SessionID: req.SessionID, HistoryTurns: pp.historyTurns, TrimmedTurns: pp.trimmedTurns,
	}
	if idem != nil {
		if idem.Result, err = json.Marshal(res); err != nil {
			return nil, err
		}
		idem.RunID, idem.Created = rec.ID, rec.Created
		idem.Expires = rec.Created + r.idemTTL().Microseconds()
		rec.Idem = idem
	}
	if err := write.Tx(wctx, func(tx *store.Tx) error { return tx.RecordRun(wctx, rec) }); err != nil {
		return nil, err // the hold is released by the deferred Release; nothing was charged
	}
	hold.Settle(cost)
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
// first, and how many older turns it left out. It stops reading at the first turn
// that cannot fit, so its cost does not grow with the length of the session; only
// then does it count the rest.
func (r *Runner) history(ctx context.Context, p *agentd.Principal, a *agentd.Agent, sessionID string, in prompt.Input) ([]prompt.Turn, int, error) {
	budget := in.ContextWindow - in.MaxTokens - in.Fixed.Tokens - llm.TokensPerMessage - in.MessageTokens - llm.TokensPerReply
	var turns []prompt.Turn
	used, full := 0, false
	key := store.SessionKey{OrgID: p.OrgID, AgentID: a.ID, Owner: p.Owner, SessionID: sessionID}
	err := r.DB.History(ctx, key, func(t store.Turn) bool {
		used += 2*llm.TokensPerMessage + t.UserTokens + t.AssistantTokens
		if used > budget {
			full = true
			return false
		}
		turns = append(turns, prompt.Turn{User: t.User, Assistant: t.Assistant, UserTokens: t.UserTokens, AssistantTokens: t.AssistantTokens})
		return true
	})
	if err != nil {
		return nil, 0, err
	}
	trimmed := 0
	if full {
		total, err := r.DB.CountTurns(ctx, key)
		if err != nil {
			return nil, 0, err
		}
		trimmed = total - len(turns)
	}
	for i, j := 0, len(turns)-1; i < j; i, j = i+1, j-1 {
		turns[i], turns[j] = turns[j], turns[i]
	}
	return turns, trimmed, nil
}
