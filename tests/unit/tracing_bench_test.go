package unit_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"allocation/adapters/tracing"
	"allocation/domain"
	"allocation/entrypoints/httpapi"
	"allocation/servicelayer"
)

// answeringBus answers every command at once, so that a benchmark of the
// API measures the HTTP stack and its middleware, not the store.
type answeringBus struct{}

func (answeringBus) Handle(context.Context, domain.Command) (servicelayer.Result, error) {
	return servicelayer.Result{BatchRef: "b1"}, nil
}

// What tracing costs a request in the API's own stack (`make bench-go`):
// without the tracing middleware, with it and tracing off (no OTLP
// endpoint: the no-op provider, as deployed by default), and with every
// request sampled into a span processor that drops what it is given.
func BenchmarkAllocateRequestTracing(b *testing.B) {
	recording := sdktrace.NewTracerProvider(sdktrace.WithBatcher(tracetest.NewNoopExporter()))
	b.Cleanup(func() { _ = recording.Shutdown(context.Background()) })
	for _, c := range []struct {
		name    string
		tracing func() httpapi.Config
	}{
		{"no middleware", func() httpapi.Config { return httpapi.Config{} }},
		{"tracing off", func() httpapi.Config { return httpapi.Config{Tracing: tracing.HTTP(tracing.Disabled())} }},
		{"tracing on", func() httpapi.Config { return httpapi.Config{Tracing: tracing.HTTP(recording)} }},
	} {
		b.Run(c.name, func(b *testing.B) {
			cfg := c.tracing()
			cfg.Bus, cfg.Log = answeringBus{}, quietLog()
			api := httpapi.New(cfg)
			const body = `{"orderid": "o1", "sku": "LAMP", "qty": 1}`
			b.ReportAllocs()
			for b.Loop() {
				req := httptest.NewRequest(http.MethodPost, "/allocate", strings.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				rec := httptest.NewRecorder()
				api.ServeHTTP(rec, req)
				if rec.Code != http.StatusAccepted {
					b.Fatalf("allocate: %d %s", rec.Code, rec.Body)
				}
			}
		})
	}
}
