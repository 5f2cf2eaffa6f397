// Package run executes one agent run end to end, with no HTTP types: resolve the
// agent, serialize on its session, assemble the prompt within the model's context,
// hold the most the run can cost, call the model, then record the ledger row, the
// charge and the session turn in one transaction (or release the hold and record
// the failure).
package run

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/internal/agents"
	"github.com/agentd/agentd/internal/billing"
	"github.com/agentd/agentd/internal/catalog"
	"github.com/agentd/agentd/internal/clock"
	"github.com/agentd/agentd/internal/llm"
	"github.com/agentd/agentd/internal/prompt"
	"github.com/agentd/agentd/internal/session"
	"github.com/agentd/agentd/internal/store"
)

// Request is one run.
type Request struct {
	Principal *agentd.Principal
	AgentName string // normalized; "" for raw access to Model
	// Model is the catalog model of a raw call (OpenAI-compatible, no agent).
	Model string
	// Message is a run's message. Messages, when set, replaces it: a chat's own
	// messages, sent after the agent's fixed part and the session's history; its
	// last user message is what a session remembers of the turn.
	Message  string
	Messages []llm.Message
	// Temperature and MaxTokens override the agent's (or the model's defaults),
	// MaxTokens within the agent's (or model's) limit.
	Temperature *float64
	MaxTokens   *int
	// N is how many choices to return (OpenAI's n; 0 or 1: one). Every choice is
	// held for and billed; the session remembers the first.
	N int
	// Tools the model may call, besides the agent's own (a name may not be
	// both), whether it must, and a response format, which replaces the
	// agent's. A tool message among Messages answers a call of the assistant
	// message before it, or, with a session, of the session's last turn.
	Tools             []llm.Tool
	ToolChoice        *llm.ToolChoice
	ParallelToolCalls *bool
	ResponseFormat    *llm.ResponseFormat
	// Params are the client's other parameters (OpenAI-compatible calls), passed
	// to the model as sent; a model of the chain that cannot take one refuses the
	// run before anything is held.
	Params    []llm.Param
	SessionID string // "" for a stateless run
	// Version pins the agent's version that runs: any stored version, a draft
	// included; 0 runs the active version, or the canary's for its share.
	Version int
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
	RunID        string `json:"run_id"`
	AgentID      string `json:"agent_id"`
	Model        string `json:"model"`
	Response     string `json:"response"`
	FinishReason string `json:"finish_reason"`
	// ToolCalls are the model's calls of tools (finish reason "tool_calls").
	ToolCalls []llm.ToolCall `json:"tool_calls,omitempty"`
	Created   int64          `json:"created"` // unix micros
	Usage     agentd.Usage   `json:"usage"`
	// Cost is what the run was charged and LatencyMS how long it took, as its
	// ledger row says (evals check them); a replay was charged nothing.
	Cost      agentd.Micros `json:"-"`
	LatencyMS int64         `json:"-"`
	// More are the choices after the first, when the request asked for several.
	More      []llm.Choice `json:"more,omitempty"`
	SessionID string       `json:"session_id,omitempty"`
	// HistoryTurns is how many earlier turns of the session the prompt carried, and
	// TrimmedTurns how many older ones did not fit and were left out.
	HistoryTurns int `json:"history_turns"`
	TrimmedTurns int `json:"trimmed_turns"`
	// Replayed marks a result returned from an Idempotency-Key record.
	Replayed bool `json:"-"`
}

// Accounts reserves the money runs may spend: billing.Accounts on a single node.
// Every implementation passes billingtest.Run.
type Accounts interface {
	// Hold sets amount aside from the organization's available balance and the
	// key's budget, or fails with EInsufficientQuota.
	Hold(ctx context.Context, orgID, keyID string, amount agentd.Micros) (billing.Hold, error)
	// Available is what a run by keyID could hold now.
	Available(ctx context.Context, orgID, keyID string) (agentd.Micros, error)
}

// Runner runs agents.
type Runner struct {
	Agents   *agents.Service
	Catalog  *catalog.Catalog // for raw model calls
	DB       *store.DB
	Accounts Accounts
	Sessions *session.Service
	// InFlight marks Idempotency-Keys whose run is in flight (NewMemoryInFlight on a
	// single node).
	InFlight InFlight
	Timeout  time.Duration // deadline of the provider calls, retries and fallbacks included
	Backoff  Backoff
	IdemTTL  time.Duration // how long Idempotency-Key results are kept (default 24 h)
	Clock    clock.Clock
	Log      *slog.Logger
	// Tracer makes the runs' spans (trace.go); nil: none.
	Tracer trace.Tracer
	// Limits admits runs under their key's and organization's rate limits
	// (limits.go); nil: none.
	Limits Limiter
	// Observer is told how runs and provider calls end, for metrics
	// (observe.go); nil: nobody.
	Observer Observer
	// LogContents logs each run's message and reply at level debug (the
	// log.contents setting); otherwise no log line carries contents.
	LogContents bool
}

// ErrClientGone ends a streamed run whose client went away: what was generated
// has been charged and recorded, and there is nobody to answer.
var ErrClientGone = errors.New("run: the client went away mid-stream")

// DefaultRawMaxTokens caps the reply of a raw model call that names no limit, so
// its hold stays proportionate; a call may ask for up to the model's maximum.
const DefaultRawMaxTokens = 4096

// target is what a request runs on: an agent's compiled version, or a bare model.
type target struct {
	agent       *agentd.Agent // nil for a raw model call
	model       *catalog.Model
	fixed       *prompt.Fixed
	maxTokens   int
	temperature float64
	tools       []llm.Tool          // the agent's
	format      *llm.ResponseFormat // the agent's
}

// resolve finds the agent or model of req and applies its overrides.
func (r *Runner) resolve(ctx context.Context, req *Request) (*target, error) {
	var t *target
	limit, what := 0, ""
	if req.AgentName != "" {
		// A key's allow-list (agentd.Principal.MayUse), decided before the agent
		// is read; a near miss of a normalized name still gets its 404 hint.
		if err := req.Principal.CheckAgent(agentd.NormalizeName(req.AgentName)); err != nil {
			return nil, err
		}
		c, err := r.Agents.ResolveFor(ctx, req.Principal.OrgID, req.AgentName, req.Version, req.SessionID)
		if err != nil {
			return nil, err
		}
		t = &target{agent: c.Agent, model: c.Model, fixed: c.Fixed, maxTokens: c.Agent.Version.MaxTokens, temperature: c.Agent.Version.Temperature,
			tools: c.Tools, format: c.Format}
		limit, what = c.Agent.Version.MaxTokens, "the agent's max_token"
	} else {
		if req.Principal.Restricted() {
			return nil, agentd.Errorf(agentd.EForbidden, "this key is limited to agents (%s): it may call them as model \"agent/<name>\", not catalog models such as %q",
				strings.Join(req.Principal.Agents, ", "), req.Model)
		}
		if req.SessionID != "" {
			return nil, agentd.Errorf(agentd.EBadRequest, "X-Session-ID needs an agent: use model \"agent/<name>\" to have agentd remember the conversation")
		}
		m, err := r.Catalog.Model(req.Model)
		if err != nil {
			return nil, err
		}
		if m.Embedding {
			return nil, agentd.Invalid(fmt.Sprintf("model %s is an embedding model: use POST /v1/embeddings", m.ID), "value_error", "body", "model")
		}
		t = &target{model: m, maxTokens: min(m.MaxOutputTokens, DefaultRawMaxTokens), temperature: 1}
		limit, what = m.MaxOutputTokens, "the model's max_output_tokens"
	}
	if req.MaxTokens != nil {
		if *req.MaxTokens < 1 || *req.MaxTokens > limit {
			return nil, agentd.Invalid(fmt.Sprintf("max_tokens must be between 1 and %d (%s)", limit, what), "less_than_equal", "body", "max_tokens")
		}
		t.maxTokens = *req.MaxTokens
	}
	if req.Temperature != nil {
		if *req.Temperature < 0 || *req.Temperature > 2 {
			return nil, agentd.Invalid("temperature must be between 0 and 2", "less_than_equal", "body", "temperature")
		}
		t.temperature = *req.Temperature
	}
	return t, nil
}

// agentID is the agent's id, or "" for a raw model call.
func (t *target) agentID() string {
	if t.agent == nil {
		return ""
	}
	return t.agent.ID
}

// session names req's conversation when the run remembers it (a session id, an
// agent that saves conversations); ok is false otherwise.
func (t *target) session(req *Request) (k agentd.SessionKey, ok bool) {
	if req.SessionID == "" || t.agent == nil || !t.agent.ConversationSaving {
		return k, false
	}
	return agentd.SessionKey{OrgID: req.Principal.OrgID, AgentID: t.agent.ID, Owner: req.Principal.Owner, SessionID: req.SessionID}, true
}

// callerTurn is what a session remembers of the caller's side of the turn: the
// message, or of a chat's messages its tool results (in a session they answer
// the session's last turn) and the last user message after its last assistant
// message, with their count
// (UserTokens; prompt.TurnCost adds the messages' overhead).
func callerTurn(req *Request, count func(string) int) agentd.Turn {
	if req.Messages == nil {
		return agentd.Turn{User: req.Message, UserTokens: count(req.Message)}
	}
	tail := req.Messages
	for i := len(tail) - 1; i >= 0; i-- {
		if tail[i].Role == llm.RoleAssistant {
			tail = tail[i+1:]
			break
		}
	}
	var t agentd.Turn
	// Every tool result, also those before the last assistant message: in a
	// session (sessionMessages) they can only answer the session's last turn,
	// and a turn without them would leave its calls unanswered for good.
	for i := range req.Messages {
		if m := &req.Messages[i]; m.Role == llm.RoleTool {
			t.Results = append(t.Results, agentd.ToolResult{CallID: m.ToolCallID, Content: m.Content})
			t.UserTokens += llm.CountMessage(count, m) - llm.TokensPerMessage
		}
	}
	var user *llm.Message
	for i := range tail {
		if m := &tail[i]; m.Role == llm.RoleUser {
			user = m
		}
	}
	if user != nil {
		t.User = user.Text()
		t.UserTokens += llm.CountMessage(count, &llm.Message{Content: t.User})
		for _, p := range user.Parts {
			if p.Type == llm.PartImage {
				t.Images = append(t.Images, agentd.Image{URL: p.ImageURL, Detail: p.Detail})
				t.UserTokens += llm.ImageTokens
			}
		}
		t.UserTokens -= llm.TokensPerMessage
	}
	return t
}

// prepared is a run up to the hold: its target, the prompt and the models that
// may answer it, and what that may cost.
type prepared struct {
	t            *target
	caller       agentd.Turn // the caller's side of the turn a session remembers
	pr           *prompt.Result
	historyTurns int
	trimmedTurns int
	plan         []attempt
	holdAmount   agentd.Micros
}

// historySource is where a run's history comes from: the lease holder's Turn,
// or, for an estimate, a peek that never writes the cached window.
type historySource func(ctx context.Context, budget int, cost func(agentd.Turn) int) (session.Window, error)

// prepare loads the history that fits (from history, when the run has a session)
// and assembles the prompt.
func (r *Runner) prepare(ctx context.Context, req *Request, t *target, base *llm.Request, history historySource, choices int) (*prepared, error) {
	m := t.model
	pp := &prepared{t: t}
	in := prompt.Input{Fixed: t.fixed, ContextWindow: m.ContextWindow, MaxTokens: t.maxTokens,
		Definitions: llm.CountTools(m.Count, base.Tools, base.ResponseFormat)}
	if history != nil {
		if err := sessionMessages(req.Messages); err != nil {
			return nil, err
		}
	}
	if history != nil || req.Messages == nil {
		pp.caller = callerTurn(req, m.Count)
	}
	if req.Messages != nil {
		in.Tail = req.Messages
		in.TailTokens = llm.CountMessages(m.Count, req.Messages) - llm.TokensPerReply
	} else {
		in.Message, in.MessageTokens = req.Message, pp.caller.UserTokens
	}
	if history != nil {
		fixed := 0
		if in.Fixed != nil {
			fixed = in.Fixed.Tokens
		}
		budget := in.ContextWindow - in.MaxTokens - fixed - in.TailCost() - llm.TokensPerReply
		w, err := history(ctx, budget, turnCost)
		if err != nil {
			return nil, err
		}
		in.History, pp.trimmedTurns, pp.historyTurns = w.Turns, w.Trimmed, len(w.Turns)
	}
	var err error
	if pp.pr, err = prompt.Build(in); err != nil {
		return nil, err
	}
	pp.trimmedTurns += pp.pr.TrimmedTurns
	pp.historyTurns -= pp.pr.TrimmedTurns
	if err := checkToolOrder(pp.pr.Messages, len(pp.pr.Messages)-len(req.Messages), req.Messages != nil); err != nil {
		return nil, err
	}
	pp.plan = planFor(m, pp.pr, base, t.maxTokens)
	// Hold the most this run can cost on any model that may answer it: every input
	// token and the whole reply budget.
	for _, at := range pp.plan {
		pp.holdAmount = max(pp.holdAmount, at.model.Price.MaxCost(at.inputTokens, choices*at.maxTokens))
	}
	return pp, nil
}

// turnCost is what a history turn costs in a prompt.
func turnCost(t agentd.Turn) int { return prompt.TurnCost(&t) }

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
	t, err := r.resolve(ctx, req)
	if err != nil {
		return nil, err
	}
	var history historySource
	if k, ok := t.session(req); ok {
		history = func(ctx context.Context, budget int, cost func(agentd.Turn) int) (session.Window, error) {
			return r.Sessions.Peek(ctx, k, budget, cost) // no lease: read, never write
		}
	}
	base, err := requestFor(req, t, req.Params)
	if err != nil {
		return nil, err
	}
	pp, err := r.prepare(ctx, req, t, base, history, max(req.N, 1))
	if err != nil {
		return nil, err
	}
	p := req.Principal
	avail, err := r.Accounts.Available(ctx, p.OrgID, p.KeyID)
	if err != nil {
		return nil, err
	}
	e := &Estimate{
		AgentID: t.agentID(), Model: t.model.ID, InputTokens: pp.pr.InputTokens,
		MaxOutputTokens: t.maxTokens, Hold: pp.holdAmount,
		HistoryTurns: pp.historyTurns, TrimmedTurns: pp.trimmedTurns,
		Available: max(avail, 0), Affordable: pp.holdAmount <= avail,
	}
	for _, at := range pp.plan {
		e.Models = append(e.Models, at.model.ID)
	}
	return e, nil
}

// Run executes req, in a span of its own when tracing is on.
func (r *Runner) Run(ctx context.Context, req *Request) (*Result, error) {
	ctx, span := r.startRun(ctx, req)
	res, err := r.run(ctx, req)
	endRun(span, res, err)
	return res, err
}

func (r *Runner) run(ctx context.Context, req *Request) (_ *Result, err error) {
	start := r.Clock.Now()
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
	t, err := r.resolve(ctx, req)
	if err != nil {
		return nil, err
	}
	ob := r.observeRun(t.model.ID, p)
	defer func() { ob.end(err) }()
	params := req.Params
	if req.N > 1 {
		// Passed on as the client's own parameter: providers that cannot give
		// several choices refuse it by name (checkParams).
		params = append(slices.Clip(params), llm.Param{Name: "n", Value: strconv.AppendInt(nil, int64(req.N), 10)})
	}
	base, err := requestFor(req, t, params)
	if err != nil {
		return nil, err
	}
	if err := checkParams(t.model, base); err != nil {
		return nil, err
	}
	// The lease covers history load to turn write, so turns of one session see each
	// other in order.
	var turn *session.Turn
	var history historySource
	if k, ok := t.session(req); ok {
		if turn, err = r.Sessions.Begin(ctx, k); err != nil {
			return nil, err
		}
		defer turn.End()
		r.reserved(ReservationLease, 1)
		defer r.reserved(ReservationLease, -1)
		history = turn.History
	}
	pp, err := r.prepare(ctx, req, t, base, history, max(req.N, 1))
	if err != nil {
		return nil, err
	}
	base.Messages = pp.pr.Messages
	annotateTarget(ctx, t, pp.holdAmount)
	// Rate limits (limits.go): a slot among the runs in flight and the most the
	// run may use in the tokens of the minute, before any money is held.
	permit, err := r.admit(ctx, p, pp.maxTokens(max(req.N, 1)))
	if err != nil {
		return nil, err
	}
	var used int64 // what the run used, settled into the window when it ends
	defer func() { permit.Done(used) }()
	hold, err := r.Accounts.Hold(ctx, p.OrgID, p.KeyID, pp.holdAmount)
	if err != nil {
		return nil, err
	}
	defer hold.Release()   // no-op once settled
	write := r.DB.Expect() // our ledger write is coming: let the writer wait for it
	defer write.Cancel()
	r.reserved(ReservationHold, 1)
	defer r.reserved(ReservationHold, -1)

	callCtx, cancel := context.WithTimeout(ctx, r.Timeout)
	out := r.call(callCtx, pp.plan, base, req.Emit)
	cancel()
	m := out.used.model

	now := r.Clock.Now()
	rec := &store.Run{LedgerRow: agentd.LedgerRow{
		RunID: agentd.NewID("run"), CreatedAt: now.UTC().Truncate(time.Microsecond),
		OrgID: p.OrgID, KeyID: p.KeyID, Owner: p.Owner, SessionID: req.SessionID,
		ModelRequested: t.model.ID, Model: m.ID, LatencyMS: now.Sub(start).Milliseconds(),
	}}
	row := &rec.LedgerRow
	ob.wrote(row)
	if t.agent != nil {
		row.AgentID, row.AgentName, row.AgentVersion = t.agent.ID, t.agent.Name, t.agent.Version.Number
	}
	// The record is written even if the client has gone: the work was done. The
	// charge and the hold's end commit together; a turn joins the session's cached
	// window in the same commit.
	wctx := context.WithoutCancel(ctx)
	record := func() error {
		ctx, span := r.tracer().Start(wctx, "agentd.record_run")
		defer span.End()
		err := recordRun(ctx, write, rec, hold, turn)
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, "record")
		}
		return err
	}

	if out.err == nil {
		if err := validUsage(out.resp.Usage, m, max(req.N, 1)); err != nil {
			// Counts the model cannot have produced are no basis for a bill: the run
			// fails and nothing is charged.
			r.Log.ErrorContext(ctx, "provider reported impossible usage; the run fails and nothing is charged",
				"run_id", row.RunID, "model", m.ID, "provider", m.ProviderName,
				"input_tokens", out.resp.Usage.InputTokens, "output_tokens", out.resp.Usage.OutputTokens, "err", err)
			out.err = err
		}
	}
	if out.err != nil && out.committed && (out.emitFailed || ctx.Err() != nil) {
		// The client went away mid-stream: the tokens generated so far were made for
		// it and are charged; no turn is stored, since half a reply is no memory.
		u := partialUsage(out, m)
		used = usedTokens(u)
		row.Outcome, row.ErrorCode = agentd.OutcomeCancelled, "client_closed"
		setUsage(row, u)
		row.Cost = r.charge(hold, m.Price.Charge(tokensOf(u)), row.RunID)
		if err := record(); err != nil {
			r.Log.ErrorContext(ctx, "record cancelled run", "run_id", row.RunID, "err", err)
			return nil, err
		}
		return nil, ErrClientGone
	}
	if out.err != nil {
		row.Outcome, row.ErrorCode = agentd.OutcomeFailed, string(agentd.EInferenceFailed)
		row.UsageSource = agentd.UsageEstimated
		if err := record(); err != nil {
			r.Log.ErrorContext(ctx, "record failed run", "run_id", row.RunID, "err", err)
		}
		r.Log.WarnContext(ctx, "inference failed", "run_id", row.RunID, "agent", row.AgentName, "model", m.ID, "err", out.err)
		return nil, inferenceError(out.err, m, row.RunID)
	}

	resp := out.resp
	nameCalls(resp, row.RunID)
	u := usageOf(resp.Usage)
	used = usedTokens(u)
	row.Outcome = agentd.OutcomeOK
	setUsage(row, u)
	row.Cost = r.charge(hold, m.Price.Charge(tokensOf(u)), row.RunID)
	if turn != nil {
		tu := pp.caller
		tu.Assistant, tu.AssistantTokens = resp.Text, u.OutputTokens
		// A reply cut short by its limit may end in a call cut short: its
		// arguments are not JSON, which a provider (Anthropic) refuses in every
		// later prompt, and the model never finished asking. Its calls are
		// returned, not remembered as the session's open calls.
		if resp.FinishReason != llm.FinishLength {
			for _, c := range resp.ToolCalls {
				tu.Calls = append(tu.Calls, agentd.ToolCall{ID: c.ID, Name: c.Name, Arguments: c.Arguments})
			}
		}
		rec.Turn = &tu
	}
	res := &Result{
		RunID: row.RunID, AgentID: row.AgentID, Model: m.ID, Response: resp.Text, FinishReason: resp.FinishReason,
		ToolCalls: resp.ToolCalls,
		Created:   row.CreatedAt.UnixMicro(),
		Usage:     u,
		Cost:      row.Cost, LatencyMS: row.LatencyMS,
		More:      resp.More,
		SessionID: req.SessionID, HistoryTurns: pp.historyTurns, TrimmedTurns: pp.trimmedTurns,
	}
	if idem != nil {
		if idem.Result, err = json.Marshal(res); err != nil {
			return nil, err
		}
		idem.RunID, idem.Created = row.RunID, res.Created
		idem.Expires = res.Created + r.idemTTL().Microseconds()
		rec.Idem = idem
	}
	if err := record(); err != nil {
		return nil, err // the hold is released by the deferred Release; nothing was charged
	}
	if r.LogContents {
		r.logContents(ctx, req, row.RunID, resp.Text)
	}
	return res, nil
}

// recordRun writes rec — its ledger row, the charge that ends hold and, with
// turn, the session turn — in one write announced by write. Nothing reads back
// what it wrote: on PostgreSQL it joins the batch's other records in one
// statement (TxRecords).
func recordRun(ctx context.Context, write *store.Expectation, rec *store.Run, hold billing.Hold, turn *session.Turn) error {
	return write.TxRecords(ctx, func(tx *store.Tx) error {
		stored, err := tx.RecordRun(ctx, rec)
		if err != nil {
			return err
		}
		if stored && turn != nil {
			turn.Record(tx, *rec.Turn)
		}
		hold.Settle(tx, rec.Cost, rec.CreatedAt)
		return nil
	})
}

// validUsage refuses token counts a model cannot have produced: negative ones, or
// more than its context window and its output limit together.
// errImpossibleUsage marks usage that the model cannot have produced.
var errImpossibleUsage = errors.New("run: impossible provider usage")

func validUsage(u llm.Usage, m *catalog.Model, choices int) error {
	limit := m.ContextWindow + choices*m.MaxOutputTokens
	if u.InputTokens < 0 || u.OutputTokens < 0 || u.InputTokens > limit || u.OutputTokens > limit || u.InputTokens+u.OutputTokens > limit {
		return fmt.Errorf("%w: %d input and %d output tokens for model %s (context window %d, output limit %d)",
			errImpossibleUsage, u.InputTokens, u.OutputTokens, m.ID, m.ContextWindow, m.MaxOutputTokens)
	}
	// The priced parts are parts: more of them than the whole is no basis for a bill.
	if u.CachedInputTokens < 0 || u.CacheWriteTokens < 0 || u.ReasoningTokens < 0 ||
		u.CachedInputTokens > u.InputTokens || u.CacheWriteTokens > u.InputTokens-u.CachedInputTokens || u.ReasoningTokens > u.OutputTokens {
		return fmt.Errorf("%w: %d cached and %d cache-write of %d input tokens, %d reasoning of %d output tokens for model %s",
			errImpossibleUsage, u.CachedInputTokens, u.CacheWriteTokens, u.InputTokens, u.ReasoningTokens, u.OutputTokens, m.ID)
	}
	return nil
}

// usageOf is a provider's usage as the run reports and records it.
func usageOf(u llm.Usage) agentd.Usage {
	return agentd.Usage{InputTokens: u.InputTokens, OutputTokens: u.OutputTokens, CachedInputTokens: u.CachedInputTokens,
		CacheWriteTokens: u.CacheWriteTokens, ReasoningTokens: u.ReasoningTokens, Source: u.Source}
}

// tokensOf is what u is charged for.
func tokensOf(u agentd.Usage) agentd.Tokens {
	return agentd.Tokens{Input: u.InputTokens, Output: u.OutputTokens, CachedInput: u.CachedInputTokens, CacheWrite: u.CacheWriteTokens}
}

// setUsage writes u into the ledger row.
func setUsage(row *agentd.LedgerRow, u agentd.Usage) {
	row.InputTokens, row.OutputTokens, row.UsageSource = u.InputTokens, u.OutputTokens, u.Source
	row.CachedInputTokens, row.CacheWriteTokens, row.ReasoningTokens = u.CachedInputTokens, u.CacheWriteTokens, u.ReasoningTokens
}

// charge is what a run costing cost is charged against hold. When the provider
// counted more than was held (an estimated tokenizer, or accounting we cannot
// see), the difference is taken from the available balance; what is not available
// is not charged, since a balance never goes negative.
func (r *Runner) charge(hold billing.Hold, cost agentd.Micros, runID string) agentd.Micros {
	if amount := hold.Amount(); cost > amount {
		if held := hold.Grow(cost - amount); cost > held {
			r.Log.Warn("usage exceeds hold and available balance; charge capped", "run_id", runID, "cost", cost, "charged", held)
			return held
		}
	}
	return cost
}

// partialUsage is what a stream cut short by its client used: the provider's
// counts if it sent plausible ones, else the prompt as counted for the model and
// the text and tool calls generated, counted with the model's tokenizer.
func partialUsage(out *callResult, m *catalog.Model) agentd.Usage {
	if out.resp != nil && out.resp.Usage.Source == llm.SourceProvider && out.resp.Usage.OutputTokens > 0 && validUsage(out.resp.Usage, m, 1) == nil {
		return usageOf(out.resp.Usage)
	}
	n := 0
	if out.resp != nil {
		n = m.Count(out.resp.Text)
		for _, c := range out.resp.ToolCalls { // begun, perhaps cut short: generated all the same
			n += llm.TokensPerToolCall + m.Count(c.Name) + m.Count(c.Arguments)
		}
	}
	return agentd.Usage{InputTokens: out.used.inputTokens, OutputTokens: n, Source: agentd.UsageEstimated}
}

// checkParams refuses what a model of m's chain cannot take of creq (its
// params, tools, images, response format): the run would fail there, or a
// fallback would answer without them.
func checkParams(m *catalog.Model, creq *llm.Request) error {
	if len(creq.Params) == 0 && len(creq.Tools) == 0 && creq.ResponseFormat == nil && creq.ToolChoice == nil && !richMessages(creq.Messages) {
		return nil
	}
	for _, f := range m.Chain() {
		c, ok := f.Provider.(llm.ParamChecker)
		if !ok {
			continue
		}
		var pe *llm.ParamError
		if err := c.CheckRequest(creq); errors.As(err, &pe) {
			msg := fmt.Sprintf("%s (model %s, provider %s)", pe.Error(), f.ID, f.ProviderName)
			if f != m {
				msg = fmt.Sprintf("%s (model %s, provider %s, a fallback of %s)", pe.Error(), f.ID, f.ProviderName, m.ID)
			}
			return agentd.Invalid(msg, "unsupported_parameter", "body", pe.Param)
		} else if err != nil {
			return err
		}
	}
	return nil
}

// planFor lists the models that may answer a prompt for m: m itself, then each
// fallback the prompt fits, with the prompt counted by that model's tokenizer and
// the reply limited to what that model can produce.
func planFor(m *catalog.Model, pr *prompt.Result, base *llm.Request, maxTokens int) []attempt {
	plan := []attempt{{model: m, inputTokens: pr.InputTokens, maxTokens: maxTokens}}
	for _, f := range m.Chain()[1:] {
		in := pr.InputTokens
		if f.Tokenizer != m.Tokenizer || f.Tokenizer == "" {
			in = llm.CountMessages(f.Count, pr.Messages) + llm.CountTools(f.Count, base.Tools, base.ResponseFormat)
		}
		mt := min(maxTokens, f.MaxOutputTokens)
		if in+mt > f.ContextWindow {
			continue // the fallback's window is too small for this prompt
		}
		plan = append(plan, attempt{model: f, inputTokens: in, maxTokens: mt})
	}
	return plan
}
