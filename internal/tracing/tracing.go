// Package tracing configures OpenTelemetry tracing from the standard OTEL_*
// environment: an OTLP exporter over HTTP (protobuf) or gRPC, batched, with the
// sampler the environment names. It is off — a no-op provider, nothing
// exported, nearly nothing spent — unless an OTLP endpoint is configured or
// OTEL_TRACES_EXPORTER is "otlp".
package tracing

import (
	"context"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Tracing is a configured tracer provider and what the HTTP side needs.
type Tracing struct {
	Provider trace.TracerProvider
	// Propagator reads a caller's traceparent (W3C Trace Context) and baggage;
	// nil when tracing is off, so requests pay nothing for it.
	Propagator propagation.TextMapPropagator
	// Enabled says whether spans are exported.
	Enabled bool
	// Describe says where spans go, for the start-up log line.
	Describe string
	shutdown func(context.Context) error
}

// Shutdown exports the spans still buffered and stops the exporter.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if t.shutdown == nil {
		return nil
	}
	return t.shutdown(ctx)
}

// Off is tracing turned off.
func Off() *Tracing { return &Tracing{Provider: noop.NewTracerProvider()} }

// Setup reads the OTEL_* variables through getenv:
//
//   - OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none: off.
//   - OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (the whole URL) or
//     OTEL_EXPORTER_OTLP_ENDPOINT (the base; HTTP adds /v1/traces): where to
//     export; with neither, off unless OTEL_TRACES_EXPORTER=otlp (then the
//     exporter's default, localhost:4318 or :4317).
//   - OTEL_EXPORTER_OTLP_TRACES_PROTOCOL or OTEL_EXPORTER_OTLP_PROTOCOL:
//     http/protobuf (the default) or grpc.
//   - OTEL_SERVICE_NAME (default agentd), OTEL_RESOURCE_ATTRIBUTES (k=v,…).
//   - OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG (default
//     parentbased_always_on).
//
// The exporters read their other settings (OTEL_EXPORTER_OTLP_HEADERS, _TIMEOUT,
// _CERTIFICATE, _INSECURE, …) and the batch processor its OTEL_BSP_* from the
// process environment themselves.
func Setup(ctx context.Context, getenv func(string) string, version string) (*Tracing, error) {
	exporter := strings.ToLower(strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER")))
	tracesURL, baseURL := getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"), getenv("OTEL_EXPORTER_OTLP_ENDPOINT")
	switch {
	case strings.EqualFold(getenv("OTEL_SDK_DISABLED"), "true"), exporter == "none":
		return Off(), nil
	case exporter != "" && exporter != "otlp":
		return nil, fmt.Errorf("OTEL_TRACES_EXPORTER=%q: agentd exports traces over OTLP (otlp) or not at all (none)", exporter)
	case exporter == "" && tracesURL == "" && baseURL == "":
		return Off(), nil
	}
	protocol := firstOf(getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"), getenv("OTEL_EXPORTER_OTLP_PROTOCOL"), "http/protobuf")
	sampler, err := samplerFrom(getenv("OTEL_TRACES_SAMPLER"), getenv("OTEL_TRACES_SAMPLER_ARG"))
	if err != nil {
		return nil, err
	}
	var exp sdktrace.SpanExporter
	where := protocol + " "
	switch protocol {
	case "http/protobuf":
		var opts []otlptracehttp.Option
		switch {
		case tracesURL != "":
			opts, where = append(opts, otlptracehttp.WithEndpointURL(tracesURL)), where+tracesURL
		case baseURL != "":
			u := strings.TrimRight(baseURL, "/") + "/v1/traces"
			opts, where = append(opts, otlptracehttp.WithEndpointURL(u)), where+u
		default:
			where += "the exporter's default endpoint"
		}
		exp, err = otlptracehttp.New(ctx, opts...)
	case "grpc":
		var opts []otlptracegrpc.Option
		if u := firstOf(tracesURL, baseURL); u != "" {
			opts, where = append(opts, otlptracegrpc.WithEndpointURL(u)), where+u
		} else {
			where += "the exporter's default endpoint"
		}
		exp, err = otlptracegrpc.New(ctx, opts...)
	default:
		return nil, fmt.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL=%q: agentd exports traces over http/protobuf or grpc", protocol)
	}
	if err != nil {
		return nil, fmt.Errorf("tracing: OTLP exporter: %w", err)
	}
	attrs := []attribute.KeyValue{
		attribute.String("service.name", firstOf(getenv("OTEL_SERVICE_NAME"), "agentd")),
		attribute.String("service.version", version),
	}
	for _, kv := range strings.Split(getenv("OTEL_RESOURCE_ATTRIBUTES"), ",") {
		if k, v, ok := strings.Cut(kv, "="); ok && strings.TrimSpace(k) != "" {
			attrs = append(attrs, attribute.String(strings.TrimSpace(k), strings.TrimSpace(v)))
		}
	}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithSampler(sampler),
		sdktrace.WithResource(resource.NewSchemaless(attrs...)),
	)
	return &Tracing{
		Provider:   tp,
		Propagator: propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}),
		Enabled:    true, Describe: redact(where), shutdown: tp.Shutdown,
	}, nil
}

// samplerFrom is the sampler OTEL_TRACES_SAMPLER names.
func samplerFrom(name, arg string) (sdktrace.Sampler, error) {
	ratio := func() (float64, error) {
		if arg == "" {
			return 1, nil
		}
		r, err := strconv.ParseFloat(arg, 64)
		if err != nil || r < 0 || r > 1 {
			return 0, fmt.Errorf("OTEL_TRACES_SAMPLER_ARG=%q: want a ratio from 0 to 1", arg)
		}
		return r, nil
	}
	switch strings.ToLower(strings.TrimSpace(name)) {
	case "", "parentbased_always_on":
		return sdktrace.ParentBased(sdktrace.AlwaysSample()), nil
	case "always_on":
		return sdktrace.AlwaysSample(), nil
	case "always_off":
		return sdktrace.NeverSample(), nil
	case "parentbased_always_off":
		return sdktrace.ParentBased(sdktrace.NeverSample()), nil
	case "traceidratio":
		r, err := ratio()
		return sdktrace.TraceIDRatioBased(r), err
	case "parentbased_traceidratio":
		r, err := ratio()
		return sdktrace.ParentBased(sdktrace.TraceIDRatioBased(r)), err
	}
	return nil, fmt.Errorf("OTEL_TRACES_SAMPLER=%q: agentd knows always_on, always_off, traceidratio and their parentbased_ forms", name)
}

// redact hides the password of URLs in s (a collector's credentials belong in
// OTEL_EXPORTER_OTLP_HEADERS, but a URL may carry them too), for the log.
func redact(s string) string {
	fields := strings.Fields(s)
	for i, f := range fields {
		if u, err := url.Parse(f); err == nil && u.User != nil {
			u.User = url.User(u.User.Username())
			fields[i] = u.String()
		}
	}
	return strings.Join(fields, " ")
}

func firstOf(vals ...string) string {
	for _, v := range vals {
		if v = strings.TrimSpace(v); v != "" {
			return v
		}
	}
	return ""
}
