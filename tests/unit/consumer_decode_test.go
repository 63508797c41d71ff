package unit_test

import (
	"strconv"
	"strings"
	"testing"

	"allocation/domain"
	"allocation/entrypoints/consumer"
)

func TestConsumerDecodesGoodMessages(t *testing.T) {
	maxQty := strconv.Itoa(domain.MaxQuantity)
	cases := []struct {
		channel, payload string
		want             domain.Command
	}{
		{"change_batch_quantity", `{"batchref": "b1", "qty": 5}`, domain.ChangeBatchQuantity{Ref: "b1", Qty: 5}},
		{"change_batch_quantity", `{"batchref": "b1", "qty": 0, "message_id": "m1"}`, domain.ChangeBatchQuantity{Ref: "b1", Qty: 0}},
		{"change_batch_quantity", ` {"qty": ` + maxQty + `, "batchref": "b1"} ` + "\n", domain.ChangeBatchQuantity{Ref: "b1", Qty: domain.MaxQuantity}},
		{"allocate", `{"orderid": "o1", "sku": "LAMP", "qty": 3}`, domain.Allocate{OrderID: "o1", SKU: "LAMP", Qty: 3}},
		{"allocate", `{"orderid": "o1", "sku": "LAMP", "qty": 3, "message_id": "m2"}`, domain.Allocate{OrderID: "o1", SKU: "LAMP", Qty: 3}},
		{"allocate", `{"orderid": "o1", "sku": "LAMP", "qty": 1}`, domain.Allocate{OrderID: "o1", SKU: "LAMP", Qty: 1}},
		{"allocate", `{"orderid": "ордер", "sku": "LAMP-ß", "qty": ` + maxQty + `}`, domain.Allocate{OrderID: "ордер", SKU: "LAMP-ß", Qty: domain.MaxQuantity}},
	}
	for _, c := range cases {
		got, err := consumer.Decode(c.channel, []byte(c.payload))
		if err != nil || got.Command != c.want {
			t.Errorf("Decode(%s, %s) = %v, %v; want %v", c.channel, c.payload, got, err, c.want)
		}
	}
}

func TestConsumerRefusesMalformedMessagesNamingTheProblem(t *testing.T) {
	tooBig := strconv.Itoa(domain.MaxQuantity + 1)
	longRef := strings.Repeat("r", domain.MaxReferenceLength+1)
	cases := []struct {
		channel, payload, mentions string
	}{
		// not one JSON object
		{"change_batch_quantity", `not json`, "body"},
		{"change_batch_quantity", ``, "body"},
		{"change_batch_quantity", `   `, "body"},
		{"change_batch_quantity", `{"batchref": "b1", "qty": 5`, "body"},
		{"change_batch_quantity", `{"batchref": "b1", "qty": 5} trailing`, "body"},
		{"change_batch_quantity", `{"batchref": "b1", "qty": 5}{}`, "body"},
		{"change_batch_quantity", `null`, "body must be a JSON object"},
		{"allocate", `"just a string"`, "body"},
		{"allocate", `[1, 2]`, "body"},
		// missing or empty fields
		{"change_batch_quantity", `{"batchref": "b1"}`, "qty is required"},
		{"change_batch_quantity", `{"qty": 1}`, "batchref is required"},
		{"change_batch_quantity", `{"batchref": null, "qty": 1}`, "batchref is required"},
		{"change_batch_quantity", `{"batchref": "", "qty": 1}`, "batchref must be"},
		{"change_batch_quantity", `{"batchref": "` + longRef + `", "qty": 1}`, "batchref must be"},
		{"allocate", `{"orderid": "o1", "sku": "LAMP"}`, "qty is required"},
		{"allocate", `{"sku": "LAMP", "qty": 1}`, "orderid is required"},
		{"allocate", `{"orderid": "o1", "qty": 1}`, "sku is required"},
		{"allocate", `{"orderid": "", "sku": "LAMP", "qty": 1}`, "orderid must be"},
		{"allocate", `{"orderid": "o1", "sku": "", "qty": 1}`, "sku must be"},
		// wrong types
		{"change_batch_quantity", `{"batchref": "b1", "qty": "5"}`, "qty must be an integer"},
		{"change_batch_quantity", `{"batchref": "b1", "qty": 2.5}`, "qty must be an integer"},
		{"change_batch_quantity", `{"batchref": 7, "qty": 5}`, "batchref must be a string"},
		{"allocate", `{"orderid": 7, "sku": "LAMP", "qty": 1}`, "orderid must be a string"},
		{"allocate", `{"orderid": "o1", "sku": ["LAMP"], "qty": 1}`, "sku must be a string"},
		{"allocate", `{"orderid": "o1", "sku": "LAMP", "qty": true}`, "qty must be an integer"},
		{"allocate", `{"orderid": "o1", "sku": "LAMP", "qty": 1, "message_id": 9}`, "message_id must be a string"},
		// out of range
		{"change_batch_quantity", `{"batchref": "b1", "qty": -1}`, "qty must be an integer from 0"},
		{"change_batch_quantity", `{"batchref": "b1", "qty": ` + tooBig + `}`, "qty must be an integer from 0"},
		{"allocate", `{"orderid": "o1", "sku": "LAMP", "qty": 0}`, "qty must be an integer from 1"},
		{"allocate", `{"orderid": "o1", "sku": "LAMP", "qty": -3}`, "qty must be an integer from 1"},
		{"allocate", `{"orderid": "o1", "sku": "LAMP", "qty": ` + tooBig + `}`, "qty must be an integer from 1"},
		// what the message says about itself, when given, must be valid
		{"allocate", `{"orderid": "o1", "sku": "LAMP", "qty": 1, "message_id": ""}`, "message_id must be"},
		{"allocate", `{"orderid": "o1", "sku": "LAMP", "qty": 1, "correlation_id": 5}`, "correlation_id must be a string"},
		{"allocate", `{"orderid": "o1", "sku": "LAMP", "qty": 1, "correlation_id": ""}`, "correlation_id must be"},
		{"change_batch_quantity", `{"batchref": "b1", "qty": 1, "causation_id": {"id": "c"}}`, "causation_id must be a string"},
		{"change_batch_quantity", `{"batchref": "b1", "qty": 1, "causation_id": "` + longRef + `"}`, "causation_id must be"},
		{"allocate", `{"orderid": "o1", "sku": "LAMP", "qty": 1, "traceparent": 1}`, "traceparent must be a string"},
		{"allocate", `{"orderid": "o1", "sku": "LAMP", "qty": 1, "traceparent": "not-a-trace"}`, "traceparent must be a W3C traceparent"},
		{"allocate", `{"orderid": "o1", "sku": "LAMP", "qty": 1, "traceparent": "00-00000000000000000000000000000000-00f067aa0ba902b7-01"}`, "traceparent must be"},
		{"allocate", `{"orderid": "o1", "sku": "LAMP", "qty": 1, "traceparent": "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"}`, "traceparent must be"},
		{"allocate", `{"orderid": "o1", "sku": "LAMP", "qty": 1, "traceparent": "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}`, "traceparent must be"},
		{"allocate", `{"orderid": "o1", "sku": "LAMP", "qty": 1, "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x"}`, "traceparent must be"},
		{"allocate", `{"orderid": "o1", "sku": "LAMP", "qty": 1, "tracestate": ""}`, "tracestate must be"},
		{"allocate", `{"orderid": "o1", "sku": "LAMP", "qty": 1, "tracestate": "vendor=\u00e9"}`, "tracestate must be"},
		{"allocate", `{"orderid": "o1", "sku": "LAMP", "qty": 1, "tracestate": ["a=b"]}`, "tracestate must be a string"},
		// nothing is sent there
		{"elsewhere", `{}`, "channel"},
		{"line_allocated", `{"orderid": "o1", "sku": "LAMP", "qty": 1, "batchref": "b1"}`, "channel"},
	}
	for _, c := range cases {
		cmd, err := consumer.Decode(c.channel, []byte(c.payload))
		if err == nil || !strings.Contains(err.Error(), c.mentions) {
			t.Errorf("Decode(%s, %.60s) = %v, %v; want an error mentioning %q", c.channel, c.payload, cmd, err, c.mentions)
		}
	}
}

func TestDuplicatedFieldsAreRefusedNotOverwritten(t *testing.T) {
	for _, payload := range []string{
		`{"batchref": "b1", "qty": 5, "qty": 500}`,
		`{"batchref": "b1", "qty": 5, "QTY": 500}`,
		`{"batchref": "b1", "qty": 5, "\u0071ty": 500}`,                              // the same key, escaped
		`{"batchref": "b1", "x": {"qty": 1}, "y": [{"a": "}"}], "qty": 5, "qty": 6}`, // after nesting
		`{"batchref": "b\"1,\"qty\":", "qty": 5, "qty": 6}`,                          // quotes and commas inside a value
	} {
		_, err := consumer.Decode("change_batch_quantity", []byte(payload))
		if err == nil || !strings.Contains(err.Error(), "more than once") {
			t.Errorf("Decode(%s): got %v, want a duplicate field error", payload, err)
		}
	}
	// Keys repeated inside nested values, or looking like keys inside a
	// string, are not duplicates of the outer object's.
	for _, payload := range []string{
		`{"batchref": "b1", "qty": 5, "meta": {"qty": 1, "batchref": "x"}}`,
		`{"batchref": "b1,\"qty\": 7", "qty": 5}`,
		`{"batchref": "b1", "list": [{"qty": 1}, {"qty": 2}], "qty": 5}`,
	} {
		if _, err := consumer.Decode("change_batch_quantity", []byte(payload)); err != nil {
			t.Errorf("Decode(%s): %v, want it accepted", payload, err)
		}
	}
}

// A tolerant reader: senders may add fields, which are ignored; the known
// ones are read as ever.
func TestConsumerIgnoresFieldsItDoesNotKnow(t *testing.T) {
	cases := []struct {
		channel, payload string
		want             domain.Command
	}{
		{"change_batch_quantity", `{"batchref": "b1", "qty": 5, "colour": "red"}`, domain.ChangeBatchQuantity{Ref: "b1", Qty: 5}},
		{"change_batch_quantity", `{"reason": {"code": 7, "notes": [1, null]}, "batchref": "b1", "qty": 5}`, domain.ChangeBatchQuantity{Ref: "b1", Qty: 5}},
		{"allocate", `{"orderid": "o1", "sku": "LAMP", "qty": 1, "batchref": "b1", "priority": null}`, domain.Allocate{OrderID: "o1", SKU: "LAMP", Qty: 1}},
	}
	for _, c := range cases {
		got, err := consumer.Decode(c.channel, []byte(c.payload))
		if err != nil || got.Command != c.want {
			t.Errorf("Decode(%s, %s) = %v, %v; want %v", c.channel, c.payload, got, err, c.want)
		}
	}
}

const (
	traceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	traceState  = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"
)

// message_id, traceparent, tracestate, correlation_id and causation_id come
// in the body, or beside it as fields of a stream entry, or both when they
// agree.
func TestConsumerReadsWhatAMessageSaysAboutItselfFromTheBodyOrTheStreamEntry(t *testing.T) {
	allocate := domain.Allocate{OrderID: "o1", SKU: "LAMP", Qty: 1}
	full := consumer.Message{Command: allocate, ID: "m1", TraceParent: traceParent, TraceState: traceState, CorrelationID: "corr-1", CausationID: "cause-1"}
	cases := []struct {
		name    string
		payload string
		fields  map[string]string
		want    consumer.Message
	}{
		{"in the body",
			`{"orderid": "o1", "sku": "LAMP", "qty": 1, "message_id": "m1", "traceparent": "` + traceParent + `", "tracestate": "` + traceState + `", "correlation_id": "corr-1", "causation_id": "cause-1"}`,
			nil, full},
		{"as entry fields",
			`{"orderid": "o1", "sku": "LAMP", "qty": 1}`,
			map[string]string{"message_id": "m1", "traceparent": traceParent, "tracestate": traceState, "correlation_id": "corr-1", "causation_id": "cause-1", "content_type": "application/json"},
			full},
		{"in both, the same",
			`{"orderid": "o1", "sku": "LAMP", "qty": 1, "message_id": "m1", "correlation_id": "corr-1"}`,
			map[string]string{"message_id": "m1", "traceparent": traceParent, "tracestate": traceState, "correlation_id": "corr-1", "causation_id": "cause-1"},
			full},
		{"none", `{"orderid": "o1", "sku": "LAMP", "qty": 1}`, map[string]string{"producer": "shop"}, consumer.Message{Command: allocate}},
	}
	for _, c := range cases {
		got, err := consumer.DecodeEntry(consumer.Allocate, []byte(c.payload), c.fields)
		if err != nil || got != c.want {
			t.Errorf("%s: DecodeEntry = %+v, %v; want %+v", c.name, got, err, c.want)
		}
	}
}

// A field given in the body and as a stream entry field with different
// values is ambiguous: the entry is refused, naming the field.
func TestConsumerRefusesAStreamEntryWhoseBodyAndFieldsDisagree(t *testing.T) {
	body := `{"batchref": "b1", "qty": 5, "message_id": "m1", "traceparent": "` + traceParent + `", "tracestate": "a=b", "correlation_id": "corr-1", "causation_id": "cause-1"}`
	for field, other := range map[string]string{
		"message_id":     "m2",
		"traceparent":    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b8-01",
		"tracestate":     "a=c",
		"correlation_id": "corr-2",
		"causation_id":   "cause-2",
	} {
		_, err := consumer.DecodeEntry(consumer.ChangeBatchQuantity, []byte(body), map[string]string{field: other})
		if err == nil || !strings.Contains(err.Error(), field+" is given in the body") {
			t.Errorf("%s differing: got %v, want an error saying it is given twice with different values", field, err)
		}
	}
}

// Entry fields are checked like the body's.
func TestConsumerRefusesInvalidStreamEntryFields(t *testing.T) {
	body := `{"orderid": "o1", "sku": "LAMP", "qty": 1}`
	for field, value := range map[string]string{
		"message_id":     "",
		"traceparent":    "00-abc",
		"tracestate":     "",
		"correlation_id": strings.Repeat("c", domain.MaxReferenceLength+1),
		"causation_id":   "nul\x00",
	} {
		_, err := consumer.DecodeEntry(consumer.Allocate, []byte(body), map[string]string{field: value})
		if err == nil || !strings.HasPrefix(err.Error(), field+" must be") {
			t.Errorf("entry field %s=%q: got %v, want an error naming it", field, value, err)
		}
	}
}
