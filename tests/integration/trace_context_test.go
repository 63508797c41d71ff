package integration_test

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"allocation/domain"
	"allocation/servicelayer"
	"allocation/tests/testenv"
)

// The trace context of a unit of work is written with its events, in the
// same write: a delivery made later by the dispatcher (here after a
// "crash" between commit and delivery) is a span of that trace, the child
// of the span that committed the event, and publishes the event with it.
func TestADeliveryAfterACrashJoinsTheTraceThatCommittedItsEvent(t *testing.T) {
	onEveryEngine(t, func(t *testing.T, open opener) {
		db := open(t)
		spans := tracetest.NewInMemoryExporter()
		tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))
		t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
		publisher := &recordingPublisher{}
		bus := servicelayer.NewBus(servicelayer.Dependencies{UoW: db.store, Publisher: publisher, Notifier: nopNotifier{}, TracerProvider: tp})
		ctx := context.Background()
		if _, err := bus.Handle(ctx, domain.CreateBatch{Ref: "b1", SKU: "TRACED", Qty: 10}); err != nil {
			t.Fatal(err)
		}

		// Committed under the sender's trace; the process "dies" before
		// delivering.
		const sender = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
		traced := servicelayer.WithTraceContext(ctx, sender, "vendor=v1")
		_, err := db.store.Do(traced, func(tx servicelayer.Tx) error {
			p, err := tx.Products().Get(traced, "TRACED")
			if err != nil {
				return err
			}
			_, err = p.Allocate(domain.OrderLine{OrderID: "o1", SKU: "TRACED", Qty: 2})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}

		runCtx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); _ = servicelayer.NewDispatcher(bus, db.store, slog.Default()).Run(runCtx) }()
		t.Cleanup(func() { cancel(); <-done })
		testenv.Eventually(t, 10*time.Second, func() error {
			publisher.mu.Lock()
			defer publisher.mu.Unlock()
			if len(publisher.sent) != 1 {
				return fmt.Errorf("%d published, want the allocation", len(publisher.sent))
			}
			if env := publisher.sent[0]; env.TraceParent != sender || env.TraceState != "vendor=v1" {
				return fmt.Errorf("published with traceparent %q, tracestate %q; want the committing trace's", env.TraceParent, env.TraceState)
			}
			return nil
		})
		for _, s := range spans.GetSpans() {
			if s.Name != "deliver publish run" && s.Name != "deliver publish allocated" {
				continue
			}
			if s.SpanContext.TraceID().String() != "0af7651916cd43dd8448eb211c80319c" || s.Parent.SpanID().String() != "b7ad6b7169203331" {
				t.Fatalf("delivery span %q in trace %s with parent %s; want the committing span's", s.Name, s.SpanContext.TraceID(), s.Parent.SpanID())
			}
			return
		}
		t.Fatalf("no delivery span among %d spans", len(spans.GetSpans()))
	})
}
