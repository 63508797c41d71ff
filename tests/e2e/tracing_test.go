package e2e_test

import (
	"compress/gzip"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"

	"allocation/tests/testenv"
)

// otlpSink is an OTLP/HTTP trace receiver that keeps every span it is sent.
type otlpSink struct {
	*httptest.Server
	mu    sync.Mutex
	spans []sunkSpan
	// services are the service.name of every resource that sent spans.
	services map[string]bool
}

type sunkSpan struct {
	name, traceID, spanID, parentID string
	attrs                           map[string]string // the string-valued ones
}

func newOTLPSink(t *testing.T) *otlpSink {
	t.Helper()
	s := &otlpSink{services: map[string]bool{}}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body io.Reader = r.Body
		if r.Header.Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			body = zr
		}
		raw, err := io.ReadAll(body)
		var req coltracepb.ExportTraceServiceRequest
		if err == nil {
			err = proto.Unmarshal(raw, &req)
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		s.mu.Lock()
		for _, rs := range req.ResourceSpans {
			for _, kv := range rs.GetResource().GetAttributes() {
				if kv.Key == "service.name" {
					s.services[kv.Value.GetStringValue()] = true
				}
			}
			for _, ss := range rs.ScopeSpans {
				for _, sp := range ss.Spans {
					attrs := map[string]string{}
					for _, kv := range sp.Attributes {
						attrs[kv.Key] = kv.Value.GetStringValue()
					}
					s.spans = append(s.spans, sunkSpan{sp.Name, hex.EncodeToString(sp.TraceId), hex.EncodeToString(sp.SpanId), hex.EncodeToString(sp.ParentSpanId), attrs})
				}
			}
		}
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	t.Cleanup(s.Close)
	return s
}

// ofTrace returns the spans of traceID received so far.
func (s *otlpSink) ofTrace(traceID string) []sunkSpan {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []sunkSpan
	for _, sp := range s.spans {
		if sp.traceID == traceID {
			out = append(out, sp)
		}
	}
	return out
}

// randomHex is n random bytes in lowercase hex: a trace id (16) or a span
// id (8) no other test uses.
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// changeWithTrace appends a change_batch_quantity entry to the inbound
// stream with a traceparent entry field, and returns its trace id.
func (s *service) changeWithTrace(ref string, qty int) (traceID, parentID string) {
	s.t.Helper()
	traceID, parentID = randomHex(16), randomHex(8)
	body, _ := json.Marshal(map[string]any{"batchref": ref, "qty": qty})
	err := s.redis.XAdd(context.Background(), &goredis.XAddArgs{Stream: s.prefix + "change_batch_quantity", Values: map[string]any{
		"data": body, "traceparent": "00-" + traceID + "-" + parentID + "-01", "tracestate": "sender=e2e",
	}}).Err()
	if err != nil {
		s.t.Fatalf("append change_batch_quantity: %v", err)
	}
	return traceID, parentID
}

// reallocatedEntry waits for the line_allocated stream entry of orderID on
// batchRef and returns its fields and its body's traceparent.
func (s *service) reallocatedEntry(orderID, batchRef string) (fields map[string]any, bodyTraceParent string) {
	s.t.Helper()
	testenv.Eventually(s.t, 10*time.Second, func() error {
		entries, err := s.redis.XRange(context.Background(), s.prefix+"line_allocated", "-", "+").Result()
		if err != nil {
			return err
		}
		for _, e := range entries {
			var body struct {
				OrderID     string `json:"orderid"`
				BatchRef    string `json:"batchref"`
				TraceParent string `json:"traceparent"`
			}
			raw, _ := e.Values["data"].(string)
			if json.Unmarshal([]byte(raw), &body) == nil && body.OrderID == orderID && body.BatchRef == batchRef {
				fields, bodyTraceParent = e.Values, body.TraceParent
				return nil
			}
		}
		return fmt.Errorf("no line_allocated entry of %s on %s among %d", orderID, batchRef, len(entries))
	})
	return fields, bodyTraceParent
}

// reallocate allocates an order on the earlier of two batches, then sends a
// change of that batch's quantity carrying a trace, and returns the trace
// id and the line_allocated stream entry of the reallocation.
func reallocateWithTrace(t *testing.T, s *service) (traceID, parentID string, fields map[string]any, bodyTraceParent string) {
	t.Helper()
	orderID, sku := testenv.RandomName("order-"), testenv.RandomName("sku-")
	earlier, later := testenv.RandomName("old-"), testenv.RandomName("newer-")
	s.addBatch(earlier, sku, 10, "2011-01-01")
	s.addBatch(later, sku, 10, "2011-01-02")
	if status, body := s.post("/allocate", map[string]any{"orderid": orderID, "sku": sku, "qty": 10}); status != http.StatusAccepted {
		t.Fatalf("allocate: %d %v", status, body)
	}
	traceID, parentID = s.changeWithTrace(earlier, 5)
	fields, bodyTraceParent = s.reallocatedEntry(orderID, later)
	return traceID, parentID, fields, bodyTraceParent
}

// An inbound message's trace goes on through the reallocation it causes to
// the line_allocated it publishes (body and stream entry field), and every
// span of that work is exported to the OTLP endpoint, in that trace: the
// message's processing a child of the sender's span, the deliveries of the
// deallocation and of the reallocation's line_allocated. Log lines of the
// work carry the trace id.
func TestAnInboundMessagesTraceReachesTheLineAllocatedItCausesAndIsExported(t *testing.T) {
	t.Parallel()
	sink := newOTLPSink(t)
	s := newService(t, testenv.RedisURL())
	s.env = append(s.env, "OTEL_EXPORTER_OTLP_ENDPOINT="+sink.URL, "OTEL_TRACES_SAMPLER=always_on",
		"OTEL_BSP_SCHEDULE_DELAY=100", "OTEL_SERVICE_NAME=allocation-e2e")
	s.start()
	traceID, parentID, fields, bodyTraceParent := reallocateWithTrace(t, s)

	for where, tp := range map[string]any{"entry field": fields["traceparent"], "body": bodyTraceParent} {
		if v, _ := tp.(string); !strings.HasPrefix(v, "00-"+traceID+"-") {
			t.Errorf("line_allocated %s traceparent %v: want trace %s", where, tp, traceID)
		}
	}
	if fields["tracestate"] != "sender=e2e" {
		t.Errorf("line_allocated tracestate entry field %v: want the sender's", fields["tracestate"])
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		spans := sink.ofTrace(traceID)
		found := map[string]bool{}
		for _, sp := range spans {
			found[sp.name] = true
			if sp.name != "process change_batch_quantity" {
				continue
			}
			if sp.parentID != parentID {
				return fmt.Errorf("the message's span has parent %s, not the sender's %s", sp.parentID, parentID)
			}
			// A recorded span carries the messaging attributes; they are only
			// left out of spans nobody records.
			if sp.attrs["messaging.system"] != "redis" || sp.attrs["messaging.destination.name"] != "change_batch_quantity" || sp.attrs["messaging.message.id"] == "" {
				return fmt.Errorf("the message's span has attributes %v, want the messaging ones", sp.attrs)
			}
		}
		for _, want := range []string{"process change_batch_quantity", "bus change_batch_quantity", "unit_of_work",
			"deliver reallocate deallocated", "deliver publish allocated"} {
			if !found[want] {
				return fmt.Errorf("no span %q exported in trace %s; got %v", want, traceID, spans)
			}
		}
		return nil
	})
	sink.mu.Lock()
	if len(sink.services) != 1 || !sink.services["allocation-e2e"] {
		t.Errorf("spans came from services %v; want OTEL_SERVICE_NAME's allocation-e2e only", sink.services)
	}
	sink.mu.Unlock()
	testenv.Eventually(t, 5*time.Second, func() error {
		if !strings.Contains(s.logs.String(), `"trace_id":"`+traceID+`"`) {
			return fmt.Errorf("no log line carries trace_id %s", traceID)
		}
		return nil
	})
}

// With no OTLP endpoint the service exports nothing (it says so at start)
// yet passes an inbound trace context on to the events it causes, so that
// the services around it keep one trace.
func TestWithTracingOffAnInboundTraceIsStillPassedOn(t *testing.T) {
	t.Parallel()
	s := startService(t)
	if !strings.Contains(s.logs.String(), "tracing off") {
		t.Errorf("the start-up log does not say tracing is off")
	}
	traceID, _, fields, bodyTraceParent := reallocateWithTrace(t, s)
	for where, tp := range map[string]any{"entry field": fields["traceparent"], "body": bodyTraceParent} {
		if v, _ := tp.(string); !strings.HasPrefix(v, "00-"+traceID+"-") {
			t.Errorf("line_allocated %s traceparent %v: want trace %s", where, tp, traceID)
		}
	}
}
