package run

import (
	"context"
	"errors"
	"strconv"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/internal/catalog"
	"github.com/agentd/agentd/internal/llm"
)

// Spans follow OpenTelemetry's GenAI semantic conventions (gen_ai.*): one per
// run (invoke_agent for an agent, chat for a raw model call, embeddings), a
// client span per provider attempt, and one for the ledger write. agentd's own
// attributes are under agentd.*. Message contents are never recorded.

var noTracer = noop.NewTracerProvider().Tracer("")

func (r *Runner) tracer() trace.Tracer {
	if r.Tracer == nil {
		return noTracer
	}
	return r.Tracer
}

// startRun starts req's span.
func (r *Runner) startRun(ctx context.Context, req *Request) (context.Context, trace.Span) {
	op, name := "chat", "chat "+req.Model
	if req.AgentName != "" {
		op, name = "invoke_agent", "invoke_agent "+req.AgentName
	}
	ctx, span := r.tracer().Start(ctx, name, trace.WithSpanKind(trace.SpanKindInternal))
	if !span.IsRecording() {
		return ctx, span
	}
	span.SetAttributes(attribute.String("gen_ai.operation.name", op))
	if req.AgentName != "" {
		span.SetAttributes(attribute.String("gen_ai.agent.name", req.AgentName))
	} else {
		span.SetAttributes(attribute.String("gen_ai.request.model", req.Model))
	}
	if req.SessionID != "" {
		span.SetAttributes(attribute.String("gen_ai.conversation.id", req.SessionID))
	}
	if p := req.Principal; p != nil {
		span.SetAttributes(attribute.String("agentd.org.id", p.OrgID), attribute.String("agentd.key.id", p.KeyID))
	}
	if req.Emit != nil {
		span.SetAttributes(attribute.Bool("agentd.stream", true))
	}
	return ctx, span
}

// endRun ends a run's span with its result or error.
func endRun(span trace.Span, res *Result, err error) {
	defer span.End()
	if !span.IsRecording() {
		return
	}
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, string(agentd.ErrorCode(err)))
		kind := string(agentd.ErrorCode(err))
		var e *agentd.Error
		if errors.As(err, &e) {
			if c, ok := e.Fields["class"].(string); ok {
				kind = c
			}
			if id, ok := e.Fields["run_id"].(string); ok {
				span.SetAttributes(attribute.String("agentd.run.id", id))
			}
		}
		span.SetAttributes(attribute.String("error.type", kind))
		return
	}
	u := res.Usage
	span.SetAttributes(
		attribute.String("agentd.run.id", res.RunID),
		attribute.String("gen_ai.response.model", res.Model),
		attribute.Int("gen_ai.usage.input_tokens", u.InputTokens),
		attribute.Int("gen_ai.usage.output_tokens", u.OutputTokens),
		attribute.StringSlice("gen_ai.response.finish_reasons", []string{res.FinishReason}),
		attribute.String("agentd.usage.source", u.Source),
		attribute.Bool("agentd.replayed", res.Replayed),
	)
	if res.AgentID != "" {
		span.SetAttributes(attribute.String("gen_ai.agent.id", res.AgentID))
	}
	if u.CachedInputTokens > 0 {
		span.SetAttributes(attribute.Int("gen_ai.usage.cache_read.input_tokens", u.CachedInputTokens))
	}
	if u.CacheWriteTokens > 0 {
		span.SetAttributes(attribute.Int("gen_ai.usage.cache_creation.input_tokens", u.CacheWriteTokens))
	}
}

// annotateTarget adds what resolving the run found out.
func annotateTarget(ctx context.Context, t *target, holdAmount agentd.Micros) {
	span := trace.SpanFromContext(ctx)
	if !span.IsRecording() {
		return
	}
	span.SetAttributes(attribute.String("gen_ai.request.model", t.model.ID), attribute.Int("gen_ai.request.max_tokens", t.maxTokens),
		attribute.Float64("gen_ai.request.temperature", t.temperature), attribute.String("agentd.hold", holdAmount.String()))
	if t.agent != nil {
		span.SetAttributes(attribute.String("gen_ai.agent.id", t.agent.ID), attribute.Int("agentd.agent.version", t.agent.Version.Number))
	}
}

// providerName is gen_ai.provider.name for a provider kind.
func providerName(kind string) string {
	switch kind {
	case "openai", "anthropic":
		return kind
	case "":
		return "unknown"
	}
	return "agentd." + kind
}

// startAttempt starts the client span of one provider call.
func (r *Runner) startAttempt(ctx context.Context, m *catalog.Model, req *llm.Request, try int) (context.Context, trace.Span) {
	op := "chat"
	ctx, span := r.tracer().Start(ctx, op+" "+m.UpstreamModel, trace.WithSpanKind(trace.SpanKindClient))
	if span.IsRecording() {
		span.SetAttributes(
			attribute.String("gen_ai.operation.name", op),
			attribute.String("gen_ai.provider.name", providerName(m.ProviderKind)),
			attribute.String("gen_ai.request.model", m.UpstreamModel),
			attribute.Int("gen_ai.request.max_tokens", req.MaxTokens),
			attribute.Float64("gen_ai.request.temperature", req.Temperature),
			attribute.String("agentd.model", m.ID), attribute.String("agentd.provider", m.ProviderName),
			attribute.Int("agentd.attempt", try+1),
		)
	}
	return ctx, span
}

// endAttempt ends an attempt's span.
func endAttempt(span trace.Span, resp *llm.Response, err error) {
	defer span.End()
	if !span.IsRecording() {
		return
	}
	if err != nil {
		span.RecordError(err)
		kind := llm.KindOf(err).String()
		var le *llm.Error
		if errors.As(err, &le) && le.StatusCode != 0 {
			kind = strconv.Itoa(le.StatusCode)
		}
		span.SetStatus(codes.Error, kind)
		span.SetAttributes(attribute.String("error.type", kind))
		return
	}
	span.SetAttributes(
		attribute.String("gen_ai.response.model", resp.Model),
		attribute.StringSlice("gen_ai.response.finish_reasons", []string{resp.FinishReason}),
	)
	if resp.Usage.Source == llm.SourceProvider {
		span.SetAttributes(attribute.Int("gen_ai.usage.input_tokens", resp.Usage.InputTokens), attribute.Int("gen_ai.usage.output_tokens", resp.Usage.OutputTokens))
	}
}
