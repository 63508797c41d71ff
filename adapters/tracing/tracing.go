// Package tracing sets up OpenTelemetry tracing from the standard OTEL_*
// environment variables, and instruments what the service talks to (HTTP
// through Echo, Redis, SQL) with the official contrib instrumentation. With
// no OTLP endpoint configured nothing is set up: the tracer provider is the
// API's no-op one, and the trace context that comes in still goes out.
package tracing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// DefaultServiceName is service.name when OTEL_SERVICE_NAME (or
// OTEL_RESOURCE_ATTRIBUTES) does not say.
const DefaultServiceName = "allocation"

// Provider is the tracer provider the service uses.
type Provider struct {
	trace.TracerProvider
	// Enabled says that spans are recorded and exported: an OTLP endpoint
	// is configured. Instrumentation that would only cost is left out
	// otherwise.
	Enabled bool
	// Endpoint and Protocol say where spans go, for the start-up log.
	Endpoint, Protocol string
	sdk                *sdktrace.TracerProvider
}

// Disabled is the provider with tracing off: the API's no-op provider.
func Disabled() *Provider { return &Provider{TracerProvider: noop.NewTracerProvider()} }

// FromEnv builds the provider the OTEL_* variables ask for, read through
// getenv (os.Getenv in the service):
//
//   - OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT:
//     where spans are exported; with neither set, tracing is off.
//   - OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none turn it off too;
//     any exporter but otlp is refused.
//   - OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL: http/protobuf (the default) or
//     grpc.
//
// The SDK and the exporter read the rest themselves from the process's
// environment: OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES,
// OTEL_TRACES_SAMPLER(_ARG), OTEL_BSP_*, OTEL_EXPORTER_OTLP_HEADERS,
// _TIMEOUT, _INSECURE, _CERTIFICATE and their _TRACES_ variants.
func FromEnv(ctx context.Context, getenv func(string) string, version string) (*Provider, error) {
	endpoint := first(getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"), getenv("OTEL_EXPORTER_OTLP_ENDPOINT"))
	exporter := strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER"))
	switch {
	case strings.EqualFold(strings.TrimSpace(getenv("OTEL_SDK_DISABLED")), "true"), exporter == "none", endpoint == "":
		return Disabled(), nil
	case exporter != "" && exporter != "otlp":
		return nil, fmt.Errorf("OTEL_TRACES_EXPORTER=%q: the service exports traces with otlp only (or none)", exporter)
	}
	protocol := first(getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"), getenv("OTEL_EXPORTER_OTLP_PROTOCOL"), "http/protobuf")
	var exp sdktrace.SpanExporter
	var err error
	switch protocol {
	case "http/protobuf":
		exp, err = otlptracehttp.New(ctx)
	case "grpc":
		exp, err = otlptracegrpc.New(ctx)
	default:
		return nil, fmt.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL=%q: want http/protobuf or grpc", protocol)
	}
	if err != nil {
		return nil, fmt.Errorf("OTLP trace exporter: %w", err)
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(attribute.String("service.name", DefaultServiceName), attribute.String("service.version", version)),
		resource.WithTelemetrySDK(),
		resource.WithFromEnv(), // last: OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win
	)
	if err != nil && res == nil {
		return nil, fmt.Errorf("trace resource: %w", err)
	}
	sdk := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	return &Provider{TracerProvider: sdk, Enabled: true, Endpoint: redacted(endpoint), Protocol: protocol, sdk: sdk}, nil
}

// LogErrors sends what the SDK reports (an export that failed, a bad
// sampler setting) to log, so that every line on stderr stays JSON. It sets
// the process-wide OpenTelemetry error handler.
func LogErrors(log *slog.Logger) {
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		log.Warn("opentelemetry", "error", err)
	}))
}

// ShutdownTimeout bounds flushing the spans still buffered at exit.
const ShutdownTimeout = 5 * time.Second

// Shutdown exports the spans still buffered and stops the exporter; a no-op
// when tracing is off.
func (p *Provider) Shutdown(ctx context.Context) error {
	if p == nil || p.sdk == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, ShutdownTimeout)
	defer cancel()
	if err := p.sdk.Shutdown(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("flush traces: %w", err)
	}
	return nil
}

// redacted is endpoint with no password, for logs.
func redacted(endpoint string) string {
	if u, err := url.Parse(endpoint); err == nil {
		return u.Redacted()
	}
	return "(unparsable URL)"
}

func first(values ...string) string {
	for _, v := range values {
		if v = strings.TrimSpace(v); v != "" {
			return v
		}
	}
	return ""
}
