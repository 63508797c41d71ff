package unit_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	goredis "github.com/redis/go-redis/v9"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"allocation/adapters/memory"
	"allocation/adapters/redis"
	"allocation/adapters/tracing"
	"allocation/entrypoints/httpapi"
	"allocation/servicelayer"
)

// tracedApp is the API, the bus and the memory store with the real Redis
// publisher on an in-process Redis, all traced into an in-memory exporter.
type tracedApp struct {
	api      apiClient
	spans    *tracetest.InMemoryExporter
	redis    *miniredis.Miniredis
	prefix   string
	provider *sdktrace.TracerProvider
}

func newTracedApp(t *testing.T) tracedApp {
	t.Helper()
	spans := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	mr := miniredis.RunT(t)
	rc := goredis.NewClient(&goredis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { rc.Close() })
	if err := tracing.Redis(rc, tp); err != nil {
		t.Fatal(err)
	}
	prefix := uniqueName("trace") + "."
	store := memory.NewStore()
	bus := servicelayer.NewBus(servicelayer.Dependencies{
		UoW: store, Publisher: redis.NewPublisher(rc, prefix), Notifier: &fakeNotifier{},
		Log: quietLog(), TracerProvider: tp,
	})
	api := serve(t, httpapi.Config{Bus: bus, Views: store, Tracing: tracing.HTTP(tp)})
	return tracedApp{api: api, spans: spans, redis: mr, prefix: prefix, provider: tp}
}

// waitForSpan waits for the span named name to end: the server ends the
// request's span just after the answer goes out.
func (a tracedApp) waitForSpan(t *testing.T, name string) tracetest.SpanStubs {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		spans := a.spans.GetSpans()
		for _, s := range spans {
			if s.Name == name {
				return spans
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no span %q among %v", name, spanNames(spans))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func spanNames(spans tracetest.SpanStubs) []string {
	var names []string
	for _, s := range spans {
		names = append(names, s.Name)
	}
	return names
}

// chain finds, from the span named root, a child named each of names in
// turn (a name ending in "*" matches as a prefix), and fails naming the
// first link missing.
func chain(t *testing.T, spans tracetest.SpanStubs, root string, names ...string) trace.TraceID {
	t.Helper()
	children := map[trace.SpanID][]tracetest.SpanStub{}
	var parent *tracetest.SpanStub
	for i, s := range spans {
		children[s.Parent.SpanID()] = append(children[s.Parent.SpanID()], s)
		if s.Name == root {
			parent = &spans[i]
		}
	}
	if parent == nil {
		t.Fatalf("no span %q among %v", root, spanNames(spans))
	}
	for _, name := range names {
		var next *tracetest.SpanStub
		for i, c := range children[parent.SpanContext.SpanID()] {
			if c.Name == name || strings.HasSuffix(name, "*") && strings.HasPrefix(c.Name, strings.TrimSuffix(name, "*")) {
				next = &children[parent.SpanContext.SpanID()][i]
			}
		}
		if next == nil {
			t.Fatalf("span %q has no child %q; its children: %v", parent.Name, name, spanNames(children[parent.SpanContext.SpanID()]))
		}
		if next.SpanContext.TraceID() != parent.SpanContext.TraceID() {
			t.Fatalf("span %q is in trace %s, its parent %q in %s", next.Name, next.SpanContext.TraceID(), parent.Name, parent.SpanContext.TraceID())
		}
		parent = next
	}
	return parent.SpanContext.TraceID()
}

// POST /allocate is one trace: the request's span, the bus, the command's
// handler, the unit of work, the delivery of the line_allocated event and
// the Redis round trip that publishes it, each the child of the one
// before; and the published message carries that trace.
func TestAnAllocateOverHTTPIsOneTraceFromTheRequestToThePublication(t *testing.T) {
	t.Parallel()
	app := newTracedApp(t)
	sku := uniqueName("LAMP")
	app.api.addBatch(uniqueName("b"), sku, 10, nil)
	app.waitForSpan(t, "POST /add_batch")
	app.spans.Reset()

	if got := app.api.post("/allocate", map[string]any{"orderid": "o1", "sku": sku, "qty": 3}); got.status != http.StatusAccepted {
		t.Fatalf("allocate: %s", got)
	}
	spans := app.waitForSpan(t, "POST /allocate")
	traceID := chain(t, spans, "POST /allocate",
		"bus allocate", "handle allocate", "unit_of_work", "deliver publish allocated", "redis.pipeline*")
	for _, s := range spans {
		if s.SpanContext.TraceID() != traceID {
			t.Errorf("span %q is in trace %s, not the request's %s", s.Name, s.SpanContext.TraceID(), traceID)
		}
	}

	entries, err := app.redis.Stream(app.prefix + redis.LineAllocated)
	if err != nil || len(entries) != 1 {
		t.Fatalf("line_allocated stream: %v entries, %v", entries, err)
	}
	fields := map[string]string{}
	for i := 0; i+1 < len(entries[0].Values); i += 2 {
		fields[entries[0].Values[i]] = entries[0].Values[i+1]
	}
	var body struct {
		TraceParent string `json:"traceparent"`
	}
	if err := json.Unmarshal([]byte(fields["data"]), &body); err != nil {
		t.Fatal(err)
	}
	for where, tp := range map[string]string{"entry field": fields["traceparent"], "body": body.TraceParent} {
		if !strings.HasPrefix(tp, "00-"+traceID.String()+"-") {
			t.Errorf("line_allocated %s traceparent = %q, want one of trace %s", where, tp, traceID)
		}
	}
}

// A request that sends a traceparent continues its caller's trace.
func TestARequestWithATraceparentContinuesTheCallersTrace(t *testing.T) {
	t.Parallel()
	app := newTracedApp(t)
	sku := uniqueName("LAMP")
	app.api.addBatch(uniqueName("b"), sku, 10, nil)
	app.waitForSpan(t, "POST /add_batch")
	app.spans.Reset()

	const caller = "00-11112222333344445555666677778888-1234567812345678-01"
	req, _ := http.NewRequest(http.MethodPost, app.api.url+"/allocate", strings.NewReader(`{"orderid": "o1", "sku": "`+sku+`", "qty": 1}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("traceparent", caller)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	spans := app.waitForSpan(t, "POST /allocate")
	for _, s := range spans {
		if s.Name == "POST /allocate" && (s.SpanContext.TraceID().String() != "11112222333344445555666677778888" || s.Parent.SpanID().String() != "1234567812345678") {
			t.Errorf("request span: trace %s, parent %s; want the caller's", s.SpanContext.TraceID(), s.Parent.SpanID())
		}
	}
}

// With no OTLP endpoint configured, tracing is off: the provider is the
// no-op one, whose spans record nothing and so export nothing.
func TestWithNoOTLPEndpointNothingIsTracedOrExported(t *testing.T) {
	t.Parallel()
	for name, env := range map[string]map[string]string{
		"nothing set":           {},
		"sampler but no target": {"OTEL_TRACES_SAMPLER": "always_on", "OTEL_SERVICE_NAME": "x"},
		"sdk disabled":          {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_SDK_DISABLED": "true"},
		"exporter none":         {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_TRACES_EXPORTER": "none"},
	} {
		tp, err := tracing.FromEnv(t.Context(), func(k string) string { return env[k] }, "test")
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		_, span := tp.Tracer("t").Start(t.Context(), "s")
		if tp.Enabled || span.IsRecording() {
			t.Errorf("%s: tracing on (enabled %v, recording %v)", name, tp.Enabled, span.IsRecording())
		}
		span.End()
	}
	on := map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"}
	tp, err := tracing.FromEnv(t.Context(), func(k string) string { return on[k] }, "test")
	if err != nil || !tp.Enabled {
		t.Fatalf("with an endpoint: enabled %v, %v", tp != nil && tp.Enabled, err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Millisecond)
	defer cancel()
	_ = tp.Shutdown(ctx) // nothing listens there
	if _, err := tracing.FromEnv(t.Context(), func(k string) string {
		return map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x", "OTEL_TRACES_EXPORTER": "zipkin"}[k]
	}, "test"); err == nil {
		t.Error("OTEL_TRACES_EXPORTER=zipkin accepted; the service exports with otlp only")
	}
}

// Log lines written inside a span carry its trace and span ids; others
// carry none.
func TestLogLinesCarryTheTraceAndSpanIDs(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	log := slog.New(tracing.LogHandler{Handler: servicelayer.CauseHandler{Handler: slog.NewJSONHandler(&out, nil)}})
	tp := sdktrace.NewTracerProvider()
	ctx, span := tp.Tracer("t").Start(t.Context(), "s")
	log.InfoContext(ctx, "inside")
	span.End()
	log.InfoContext(t.Context(), "outside")
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	var inside, outside map[string]any
	_ = json.Unmarshal([]byte(lines[0]), &inside)
	_ = json.Unmarshal([]byte(lines[1]), &outside)
	sc := span.SpanContext()
	if inside["trace_id"] != sc.TraceID().String() || inside["span_id"] != sc.SpanID().String() {
		t.Errorf("line inside the span: %s; want trace_id %s and span_id %s", lines[0], sc.TraceID(), sc.SpanID())
	}
	if _, ok := outside["trace_id"]; ok {
		t.Errorf("line outside any span has a trace_id: %s", lines[1])
	}
}

// With tracing off a caller's traceparent still reaches the event the
// request commits, and so the message published for it.
func TestWithTracingOffARequestsTraceparentIsPassedOnToItsEvents(t *testing.T) {
	t.Parallel()
	app := newTestApp()
	api := serve(t, httpapi.Config{Bus: app.bus, Views: app.store, Tracing: tracing.HTTP(tracing.Disabled())})
	sku := uniqueName("LAMP")
	api.addBatch(uniqueName("b"), sku, 10, nil)

	const caller = "00-11112222333344445555666677778888-1234567812345678-01"
	req, _ := http.NewRequest(http.MethodPost, api.url+"/allocate", strings.NewReader(`{"orderid": "o1", "sku": "`+sku+`", "qty": 1}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("traceparent", caller)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	app.publisher.mu.Lock()
	defer app.publisher.mu.Unlock()
	if len(app.publisher.published) != 1 || app.publisher.published[0].TraceParent != caller {
		t.Fatalf("published %+v; want one event with the caller's traceparent %s", app.publisher.published, caller)
	}
}

// The OTLP protocol is http/protobuf or grpc; the endpoint the start-up
// log shows has no password.
func TestTracingProtocolsAndTheEndpointShownWithoutItsPassword(t *testing.T) {
	t.Parallel()
	for protocol, ok := range map[string]bool{"": true, "http/protobuf": true, "grpc": true, "http/json": false} {
		env := map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://user:secret@127.0.0.1:1", "OTEL_EXPORTER_OTLP_PROTOCOL": protocol}
		tp, err := tracing.FromEnv(t.Context(), func(k string) string { return env[k] }, "test")
		if (err == nil) != ok {
			t.Errorf("protocol %q: error %v, want accepted %v", protocol, err, ok)
			continue
		}
		if err != nil {
			continue
		}
		if !tp.Enabled || strings.Contains(tp.Endpoint, "secret") {
			t.Errorf("protocol %q: enabled %v, endpoint shown as %q", protocol, tp.Enabled, tp.Endpoint)
		}
		ctx, cancel := context.WithTimeout(t.Context(), time.Millisecond)
		_ = tp.Shutdown(ctx)
		cancel()
	}
}
