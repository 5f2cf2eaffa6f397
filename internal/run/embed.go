package run

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/internal/catalog"
	"github.com/agentd/agentd/internal/llm"
	"github.com/agentd/agentd/internal/store"
)

// EmbedRequest is one embeddings call on a catalog model of type embedding.
type EmbedRequest struct {
	Principal *agentd.Principal
	Model     string
	Input     []string
	Params    []llm.Param // the client's other fields, passed on as sent
}

// EmbedResult is an embeddings call's answer: a vector per input, in order.
type EmbedResult struct {
	RunID   string
	Model   string
	Vectors [][]float32
	Usage   agentd.Usage
}

// Embed computes the embeddings of req as a run is metered: a hold of the most
// the inputs can cost, the provider's call with the model's retries, and one
// ledger row with the charge (input tokens only) in one write; a failure
// charges nothing and is told by its class, as a run's.
func (r *Runner) Embed(ctx context.Context, req *EmbedRequest) (*EmbedResult, error) {
	ctx, span := r.tracer().Start(ctx, "embeddings "+req.Model)
	res, err := r.embedRun(ctx, req)
	if span.IsRecording() {
		span.SetAttributes(attribute.String("gen_ai.operation.name", "embeddings"), attribute.String("gen_ai.request.model", req.Model))
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, string(agentd.ErrorCode(err)))
		} else {
			span.SetAttributes(attribute.String("agentd.run.id", res.RunID), attribute.Int("gen_ai.usage.input_tokens", res.Usage.InputTokens))
		}
	}
	span.End()
	return res, err
}

func (r *Runner) embedRun(ctx context.Context, req *EmbedRequest) (_ *EmbedResult, err error) {
	start := r.Clock.Now()
	p := req.Principal
	if p.Restricted() {
		return nil, agentd.Errorf(agentd.EForbidden, "this key is limited to agents: it may not call catalog models such as %q", req.Model)
	}
	m, err := r.Catalog.Model(req.Model)
	if err != nil {
		return nil, err
	}
	e, ok := m.Provider.(llm.Embedder)
	if !m.Embedding || !ok {
		return nil, agentd.Invalid(fmt.Sprintf("model %s is not an embedding model (GET /v1/models lists them with type embedding in the catalog)", m.ID), "value_error", "body", "model")
	}
	ob := r.observeRun(m.ID, p)
	defer func() { ob.end(err) }()
	if err := checkParams(m, &llm.Request{Params: req.Params}); err != nil {
		return nil, err
	}
	tokens := 0
	for i, in := range req.Input {
		n := m.Count(in)
		if n > m.ContextWindow {
			return nil, agentd.Invalid(fmt.Sprintf("input %d has %d tokens; model %s takes at most %d", i, n, m.ID, m.ContextWindow), "string_too_long", "body", "input", i)
		}
		tokens += n
	}
	permit, err := r.admit(ctx, p, int64(tokens)) // rate limits, as a run's (limits.go)
	if err != nil {
		return nil, err
	}
	var used int64
	defer func() { permit.Done(used) }()
	hold, err := r.Accounts.Hold(ctx, p.OrgID, p.KeyID, m.Price.MaxCost(tokens, 0))
	if err != nil {
		return nil, err
	}
	defer hold.Release()
	r.reserved(ReservationHold, 1)
	defer r.reserved(ReservationHold, -1)
	write := r.DB.Expect()
	defer write.Cancel()

	callCtx, cancel := context.WithTimeout(ctx, r.Timeout)
	resp, err := r.embed(callCtx, e, m, &llm.EmbedRequest{Model: m.UpstreamModel, Input: req.Input, Params: req.Params})
	cancel()
	if err == nil && (resp.InputTokens < 0 || resp.InputTokens > len(req.Input)*m.ContextWindow) {
		err = fmt.Errorf("%w: %d input tokens for %d inputs of model %s", errImpossibleUsage, resp.InputTokens, len(req.Input), m.ID)
	}

	now := r.Clock.Now()
	rec := &store.Run{LedgerRow: agentd.LedgerRow{
		RunID: agentd.NewID("run"), CreatedAt: now.UTC().Truncate(time.Microsecond),
		OrgID: p.OrgID, KeyID: p.KeyID, Owner: p.Owner, ModelRequested: m.ID, Model: m.ID, LatencyMS: now.Sub(start).Milliseconds(),
	}}
	row := &rec.LedgerRow
	ob.wrote(row)
	wctx := context.WithoutCancel(ctx)
	record := func() error { return recordRun(wctx, write, rec, hold, nil) }
	if err != nil {
		row.Outcome, row.ErrorCode, row.UsageSource = agentd.OutcomeFailed, string(agentd.EInferenceFailed), agentd.UsageEstimated
		if err := record(); err != nil {
			r.Log.ErrorContext(ctx, "record failed embeddings", "run_id", row.RunID, "err", err)
		}
		r.Log.WarnContext(ctx, "embeddings failed", "run_id", row.RunID, "model", m.ID, "err", err)
		return nil, inferenceError(err, m, row.RunID)
	}
	u := agentd.Usage{InputTokens: resp.InputTokens, Source: agentd.UsageProvider}
	if resp.Source == "" {
		u = agentd.Usage{InputTokens: tokens, Source: agentd.UsageEstimated}
	}
	row.Outcome = agentd.OutcomeOK
	setUsage(row, u)
	used = usedTokens(u)
	row.Cost = r.charge(hold, m.Price.Cost(u.InputTokens, 0), row.RunID)
	if err := record(); err != nil {
		return nil, err
	}
	return &EmbedResult{RunID: row.RunID, Model: m.ID, Vectors: resp.Vectors, Usage: u}, nil
}

// embed calls e, retrying a retryable failure up to the model's retries within
// ctx, as call does for chat (embedding models have no fallbacks).
func (r *Runner) embed(ctx context.Context, e llm.Embedder, m *catalog.Model, req *llm.EmbedRequest) (*llm.EmbedResponse, error) {
	for try := 0; ; try++ {
		actx, cancel := ctx, context.CancelFunc(func() {})
		if m.Timeout > 0 {
			actx, cancel = context.WithTimeout(ctx, m.Timeout)
		}
		began := r.callStarted()
		resp, err := e.Embed(actx, req)
		cancel()
		if err == nil || !llm.Retryable(err) || try >= m.MaxRetries || ctx.Err() != nil {
			r.providerCalled(m.ProviderName, m.ID, began, err, errors.Is(ctx.Err(), context.Canceled), "")
			return resp, err
		}
		wait := max(r.Backoff.delay(try), llm.RetryAfter(err))
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= wait {
			r.providerCalled(m.ProviderName, m.ID, began, err, false, "")
			return nil, err
		}
		r.providerCalled(m.ProviderName, m.ID, began, err, false, NextRetry)
		if !r.sleep(ctx, wait) {
			return nil, err
		}
	}
}
