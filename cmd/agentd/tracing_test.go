package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/agentd/agentd/client"
)

// otlpReceiver is an OTLP/HTTP trace receiver: it decodes each export request
// (protobuf, gzipped or not) and keeps its spans.
type otlpReceiver struct {
	*httptest.Server
	mu    sync.Mutex
	spans []*tracepb.Span
	res   []*commonpb.KeyValue
}

func newOTLPReceiver(t *testing.T) *otlpReceiver {
	o := &otlpReceiver{}
	o.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/traces" || r.Header.Get("Content-Type") != "application/x-protobuf" {
			http.Error(w, "want a protobuf POST to /v1/traces", http.StatusBadRequest)
			return
		}
		var body io.Reader = r.Body
		if r.Header.Get("Content-Encoding") == "gzip" {
			gz, err := gzip.NewReader(r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			body = gz
		}
		data, _ := io.ReadAll(body)
		var req collectortrace.ExportTraceServiceRequest
		if err := proto.Unmarshal(data, &req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		o.mu.Lock()
		for _, rs := range req.ResourceSpans {
			o.res = rs.GetResource().GetAttributes()
			for _, ss := range rs.ScopeSpans {
				o.spans = append(o.spans, ss.Spans...)
			}
		}
		o.mu.Unlock()
		out, _ := proto.Marshal(&collectortrace.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.Write(out)
	}))
	t.Cleanup(o.Close)
	return o
}

// attrs are span or resource attributes as text (arrays as [a b]).
func attrs(kvs []*commonpb.KeyValue) map[string]string {
	m := map[string]string{}
	var text func(v *commonpb.AnyValue) string
	text = func(v *commonpb.AnyValue) string {
		switch x := v.GetValue().(type) {
		case *commonpb.AnyValue_StringValue:
			return x.StringValue
		case *commonpb.AnyValue_IntValue:
			return strconv.FormatInt(x.IntValue, 10)
		case *commonpb.AnyValue_BoolValue:
			return strconv.FormatBool(x.BoolValue)
		case *commonpb.AnyValue_DoubleValue:
			return strconv.FormatFloat(x.DoubleValue, 'g', -1, 64)
		case *commonpb.AnyValue_ArrayValue:
			var parts []string
			for _, e := range x.ArrayValue.GetValues() {
				parts = append(parts, text(e))
			}
			return fmt.Sprint(parts)
		}
		return fmt.Sprint(v)
	}
	for _, kv := range kvs {
		m[kv.Key] = text(kv.GetValue())
	}
	return m
}

// TestTracing: with an OTLP endpoint in the environment, a run continues the
// caller's trace (its traceparent) with a span that follows the GenAI semantic
// conventions, and the upstream call and the ledger write are its children;
// a run without a traceparent starts a trace of its own. Spans go out over
// OTLP/HTTP to an in-test receiver; stopping the server flushes them.
func TestTracing(t *testing.T) {
	rcv := newOTLPReceiver(t)
	u := newUpstream(t, nil)
	cfg := fmt.Sprintf(`
providers:
  - {name: compat, kind: openai, base_url: %s/v1, api_key_env: UPSTREAM_KEY}
models:
  - {id: gpt-test, provider: compat, upstream_model: gpt-4o-mini, context_window: 8192, max_output_tokens: 512, price: {input: 1, output: 1}}
`, u.URL)
	env := map[string]string{"UPSTREAM_KEY": "sk-upstream-secret", "OTEL_EXPORTER_OTLP_ENDPOINT": rcv.URL, "OTEL_SERVICE_NAME": "agentd-test"}
	s := startServer(t, cfg, env)
	ctx := context.Background()
	op := s.client(s.Key)
	if _, err := op.GrantCredits(ctx, "default", 10); err != nil {
		t.Fatal(err)
	}
	if _, err := op.CreateAgent(ctx, client.AgentSpec{Name: client.Ptr("traced"), Description: client.Ptr("t"),
		Model: client.Ptr("gpt-test"), MaxToken: client.Ptr(64)}); err != nil {
		t.Fatal(err)
	}
	const traceID, parentID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	h := http.Header{"Traceparent": {"00-" + traceID + "-" + parentID + "-01"}, "X-Session-Id": {"trace-1"}}
	var res struct {
		RunID string `json:"run_id"`
	}
	if err := op.Do(ctx, "POST", "/api/v3/agents/run-agents/traced/run", h, map[string]any{"message": "hi"}, &res); err != nil {
		t.Fatal(err)
	}
	if _, err := op.Run(ctx, "traced", "again", ""); err != nil { // no traceparent: a trace of its own
		t.Fatal(err)
	}
	if err := s.stop(); err != nil { // flushes the batch of spans
		t.Fatal(err)
	}

	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	if got := attrs(rcv.res)["service.name"]; got != "agentd-test" {
		t.Errorf("service.name = %q", got)
	}
	var runs []*tracepb.Span
	byParent := map[string][]*tracepb.Span{}
	for _, sp := range rcv.spans {
		if sp.Name == "invoke_agent traced" {
			runs = append(runs, sp)
		}
		byParent[hex.EncodeToString(sp.ParentSpanId)] = append(byParent[hex.EncodeToString(sp.ParentSpanId)], sp)
	}
	if len(runs) != 2 {
		t.Fatalf("%d run spans, want 2 (spans: %d)", len(runs), len(rcv.spans))
	}
	var run, other *tracepb.Span
	for _, sp := range runs {
		if hex.EncodeToString(sp.TraceId) == traceID {
			run = sp
		} else {
			other = sp
		}
	}
	if run == nil || other == nil {
		t.Fatalf("the caller's trace was not continued by exactly one run: %v", runs)
	}
	if got := hex.EncodeToString(run.ParentSpanId); got != parentID {
		t.Errorf("run span's parent = %s, want the caller's span %s", got, parentID)
	}
	if len(other.ParentSpanId) != 0 {
		t.Errorf("a run without traceparent has parent %x, want a root span", other.ParentSpanId)
	}
	a := attrs(run.Attributes)
	for k, want := range map[string]string{
		"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "traced", "gen_ai.request.model": "gpt-test",
		"gen_ai.response.model": "gpt-test", "gen_ai.usage.input_tokens": "42", "gen_ai.usage.output_tokens": "8",
		"gen_ai.response.finish_reasons": "[stop]", "gen_ai.conversation.id": "trace-1", "agentd.run.id": res.RunID,
		"agentd.key.id": "", "agentd.agent.version": "1",
	} {
		if k == "agentd.key.id" {
			if a[k] == "" {
				t.Errorf("run span has no %s", k)
			}
			continue
		}
		if a[k] != want {
			t.Errorf("run span %s = %q, want %q", k, a[k], want)
		}
	}
	children := byParent[hex.EncodeToString(run.SpanId)]
	names := map[string]*tracepb.Span{}
	for _, c := range children {
		names[c.Name] = c
	}
	call, record := names["chat gpt-4o-mini"], names["agentd.record_run"]
	if call == nil || record == nil {
		t.Fatalf("run span's children = %v, want the upstream call and the ledger write", children)
	}
	if call.Kind != tracepb.Span_SPAN_KIND_CLIENT {
		t.Errorf("upstream span kind = %v, want client", call.Kind)
	}
	ca := attrs(call.Attributes)
	if ca["gen_ai.provider.name"] != "openai" || ca["gen_ai.request.model"] != "gpt-4o-mini" || ca["agentd.provider"] != "compat" {
		t.Errorf("upstream span attributes = %v", ca)
	}
	for _, sp := range rcv.spans { // no message text, no key, anywhere
		for _, kv := range sp.Attributes {
			if v := kv.GetValue().GetStringValue(); v == "hi" || v == "again" || bytes.Contains([]byte(v), []byte("agd_")) {
				t.Errorf("span %s carries %s = %q", sp.Name, kv.Key, v)
			}
		}
	}
}
