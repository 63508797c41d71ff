package unit_test

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"unicode/utf8"

	"allocation/domain"
	"allocation/entrypoints/consumer"
	"allocation/entrypoints/httpapi"
)

// Whatever arrives on a channel, Decode either refuses it with a reason or
// returns a command whose values the domain accepts; it never panics.
func FuzzConsumerDecode(f *testing.F) {
	for _, seed := range []string{
		`{"batchref": "b1", "qty": 5}`,
		`{"batchref": "b1", "qty": 5, "message_id": "m1"}`,
		`{"orderid": "o1", "sku": "LAMP", "qty": 3}`,
		`{"orderid": "o1", "sku": "LAMP", "qty": 1e3}`,
		`{"orderid": "o1", "sku": "LAMP", "qty": 3, "colour": [1, {"a": null}], "correlation_id": "c1", "causation_id": "c0"}`,
		`{"batchref": "b1", "qty": 5, "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "tracestate": "a=b"}`,
		`{"batchref": "b1", "qty": 5, "qty": 6}`,
		`{"orderid": "\u0000", "sku": "", "qty": -1}`,
		`null`, `[]`, `{}`, `{"a":{"b":[1,2,{"c":null}]}}`, ``,
	} {
		f.Add(true, []byte(seed))
		f.Add(false, []byte(seed))
	}
	f.Fuzz(func(t *testing.T, change bool, payload []byte) {
		channel := consumer.Allocate
		if change {
			channel = consumer.ChangeBatchQuantity
		}
		msg, err := consumer.Decode(channel, payload)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("an error without a reason")
			}
			return
		}
		switch cmd := msg.Command.(type) {
		case domain.Allocate:
			if _, err := domain.NewOrderLine(cmd.OrderID, cmd.SKU, cmd.Qty); err != nil {
				t.Fatalf("accepted %q as %+v, which the domain refuses: %v", payload, cmd, err)
			}
		case domain.ChangeBatchQuantity:
			if cmd.Ref == "" || cmd.Qty < 0 || cmd.Qty > domain.MaxQuantity {
				t.Fatalf("accepted %q as %+v", payload, cmd)
			}
		default:
			t.Fatalf("accepted %q as %T", payload, cmd)
		}
	})
}

// Whatever a stream entry holds beside its body, DecodeEntry either refuses
// it with a reason or returns a message whose fields are valid, each taken
// from the body or the entry field (equal when both are given); it never
// panics.
func FuzzConsumerDecodeEntry(f *testing.F) {
	for _, seed := range []struct{ body, field, value string }{
		{`{"orderid": "o1", "sku": "LAMP", "qty": 3}`, "message_id", "m1"},
		{`{"orderid": "o1", "sku": "LAMP", "qty": 3, "message_id": "m1"}`, "message_id", "m2"},
		{`{"batchref": "b1", "qty": 5}`, "traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
		{`{"batchref": "b1", "qty": 5, "tracestate": "a=b"}`, "tracestate", "a=b"},
		{`{"batchref": "b1", "qty": 5}`, "correlation_id", ""},
		{`{"batchref": "b1", "qty": 5}`, "causation_id", "\x00"},
		{`{"batchref": "b1", "qty": 5}`, "producer", "shop"},
	} {
		f.Add(strings.HasPrefix(seed.body, `{"batchref"`), []byte(seed.body), seed.field, seed.value)
	}
	f.Fuzz(func(t *testing.T, change bool, payload []byte, field, value string) {
		stream := consumer.Allocate
		if change {
			stream = consumer.ChangeBatchQuantity
		}
		msg, err := consumer.DecodeEntry(stream, payload, map[string]string{field: value})
		if err != nil {
			if err.Error() == "" {
				t.Fatal("an error without a reason")
			}
			return
		}
		for name, got := range map[string]string{
			consumer.FieldMessageID: msg.ID, consumer.FieldCorrelationID: msg.CorrelationID, consumer.FieldCausationID: msg.CausationID,
			consumer.FieldTraceParent: msg.TraceParent, consumer.FieldTraceState: msg.TraceState,
		} {
			if name == field && got != value {
				t.Fatalf("entry field %s=%q accepted, but the message has %q", field, value, got)
			}
			if got != "" && name != consumer.FieldTraceParent && name != consumer.FieldTraceState && domain.CheckReference(name, got) != nil {
				t.Fatalf("accepted %s %q, which is not a valid reference", name, got)
			}
		}
	})
}

// Whatever body is posted, the API answers below 500, and every error comes
// as {"message": ...}.
func FuzzHTTPRequestBodies(f *testing.F) {
	for _, seed := range []string{
		`{"ref": "b1", "sku": "LAMP", "qty": 10, "eta": "2011-01-01"}`,
		`{"ref": "b1", "sku": "LAMP", "qty": 10, "eta": null}`,
		`{"orderid": "o1", "sku": "LAMP", "qty": 3}`,
		`{"orderid": "o1", "sku": "LAMP", "qty": 3, "qty": 4}`,
		`{"ref": "b1", "sku": "LAMP", "qty": 10, "eta": "2011-02-30"}`,
		`{"orderid": "o1", "sku": "LAMP", "qty": 99999999999999999999}`,
		`null`, `[]`, `{}`, `"x"`, ``, `{"orderid": "o1"} trailing`,
		"{\"orderid\": \"o\xff\", \"sku\": \"LAMP\", \"qty\": 3}",
		`{"OrderID": "o1", "SKU": "LAMP", "Qty": 3}`,
	} {
		f.Add(true, []byte(seed))
		f.Add(false, []byte(seed))
	}
	app := newTestApp()
	api := httpapi.New(httpapi.Config{Bus: app.bus, Views: app.store, Log: quietLog()})
	f.Fuzz(func(t *testing.T, addBatch bool, body []byte) {
		path := "/allocate"
		if addBatch {
			path = "/add_batch"
		}
		req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		api.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("POST %s %q: %d %s", path, body, rec.Code, rec.Body)
		}
		if rec.Code < 300 && !utf8.Valid(body) {
			t.Fatalf("POST %s %q: %d for a body that is not UTF-8", path, body, rec.Code)
		}
		if rec.Code >= 400 {
			var answer struct{ Message string }
			if err := json.Unmarshal(rec.Body.Bytes(), &answer); err != nil || answer.Message == "" {
				t.Fatalf("POST %s %q: %d without a message: %s", path, body, rec.Code, rec.Body)
			}
		}
	})
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
