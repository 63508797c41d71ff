package consumer

import (
	"bytes"
	"fmt"
	"strings"

	"allocation/domain"
	"allocation/entrypoints/wire"
)

// Channels the consumer listens on.
const (
	ChangeBatchQuantity = "change_batch_quantity"
	Allocate            = "allocate"
)

// Fields an inbound message may carry about itself, beside its command's
// fields: in its JSON body, or (on a stream) as fields of its entry.
const (
	FieldMessageID     = "message_id"
	FieldTraceParent   = "traceparent"
	FieldTraceState    = "tracestate"
	FieldCorrelationID = "correlation_id"
	FieldCausationID   = "causation_id"
)

// metaFields lists them in the order their errors are reported.
var metaFields = []string{FieldMessageID, FieldTraceParent, FieldTraceState, FieldCorrelationID, FieldCausationID}

// metaBody holds the fields a message carries about itself. Pointers tell a
// missing field from an empty one.
type metaBody struct {
	MessageID     *string `json:"message_id"`
	TraceParent   *string `json:"traceparent"`
	TraceState    *string `json:"tracestate"`
	CorrelationID *string `json:"correlation_id"`
	CausationID   *string `json:"causation_id"`
}

func (m *metaBody) get(field string) *string {
	switch field {
	case FieldMessageID:
		return m.MessageID
	case FieldTraceParent:
		return m.TraceParent
	case FieldTraceState:
		return m.TraceState
	case FieldCorrelationID:
		return m.CorrelationID
	case FieldCausationID:
		return m.CausationID
	}
	return nil
}

// Bodies of the inbound messages. Pointers tell a missing field from a zero
// one.
type changeBatchQuantityBody struct {
	BatchRef *string `json:"batchref"`
	Qty      *int    `json:"qty"`
	metaBody
}

type allocateBody struct {
	OrderID *string `json:"orderid"`
	SKU     *string `json:"sku"`
	Qty     *int    `json:"qty"`
	metaBody
}

// Message is a decoded inbound message: the command, and what the sender
// said about the message, each empty when it did not say.
type Message struct {
	Command domain.Command
	// ID is the sender's id for the message: a repeated id is processed once.
	ID string
	// CorrelationID is the request or message that started the chain this
	// message belongs to; CausationID what directly caused it to be sent.
	CorrelationID string
	CausationID   string
	// TraceParent and TraceState are the W3C Trace Context the sender
	// propagated, as it sent them (traceparent checked for its format).
	TraceParent string
	TraceState  string
}

// Decode turns a pub/sub message on channel into the command it asks for.
// It is a tolerant reader: fields it does not know are ignored, so that
// senders may add fields. The fields it knows must be of the right types,
// none missing, no field given twice, no empty references, no quantity out
// of range, and message_id, traceparent, tracestate, correlation_id and
// causation_id valid when given. Its error names the field at fault.
// Whether the batch or SKU exists is for the handler to say.
func Decode(channel string, payload []byte) (Message, error) {
	return DecodeEntry(channel, payload, nil)
}

// DecodeEntry decodes a stream entry: payload is its "data" field, the JSON
// body, and fields its other fields. message_id, traceparent, tracestate,
// correlation_id and causation_id are read from the body or from entry
// fields of those names (other entry fields are ignored); given in both
// places they must agree, or the entry is refused as ambiguous.
func DecodeEntry(stream string, payload []byte, fields map[string]string) (Message, error) {
	switch stream {
	case ChangeBatchQuantity:
		return decodeChangeBatchQuantity(payload, fields)
	case Allocate:
		return decodeAllocate(payload, fields)
	}
	return Message{}, fmt.Errorf("channel %q carries no command", stream)
}

// decodeObject is wire.DecodeTolerant refusing a JSON null too, which would
// otherwise leave every field missing.
func decodeObject(payload []byte, v any) error {
	if string(bytes.TrimSpace(payload)) == "null" {
		return &wire.FieldError{Field: "body", Reason: "must be a JSON object"}
	}
	return wire.DecodeTolerant(payload, v)
}

func decodeChangeBatchQuantity(payload []byte, fields map[string]string) (Message, error) {
	var b changeBatchQuantityBody
	if err := decodeObject(payload, &b); err != nil {
		return Message{}, err
	}
	if err := wire.Required(wire.Has("batchref", b.BatchRef), wire.Has("qty", b.Qty)); err != nil {
		return Message{}, err
	}
	if err := firstError(reference("batchref", *b.BatchRef), quantity("qty", *b.Qty, 0)); err != nil {
		return Message{}, err
	}
	return withMeta(domain.ChangeBatchQuantity{Ref: *b.BatchRef, Qty: *b.Qty}, &b.metaBody, fields)
}

func decodeAllocate(payload []byte, fields map[string]string) (Message, error) {
	var b allocateBody
	if err := decodeObject(payload, &b); err != nil {
		return Message{}, err
	}
	if err := wire.Required(wire.Has("orderid", b.OrderID), wire.Has("sku", b.SKU), wire.Has("qty", b.Qty)); err != nil {
		return Message{}, err
	}
	err := firstError(reference("orderid", *b.OrderID), reference("sku", *b.SKU), quantity("qty", *b.Qty, 1))
	if err != nil {
		return Message{}, err
	}
	return withMeta(domain.Allocate{OrderID: *b.OrderID, SKU: *b.SKU, Qty: *b.Qty}, &b.metaBody, fields)
}

// withMeta completes the message of cmd with what the body and the entry
// fields say about it.
func withMeta(cmd domain.Command, body *metaBody, fields map[string]string) (Message, error) {
	values := make(map[string]string, len(metaFields))
	for _, name := range metaFields {
		v, err := metaValue(name, body.get(name), fields)
		if err != nil {
			return Message{}, err
		}
		values[name] = v
	}
	return Message{
		Command:       cmd,
		ID:            values[FieldMessageID],
		CorrelationID: values[FieldCorrelationID],
		CausationID:   values[FieldCausationID],
		TraceParent:   values[FieldTraceParent],
		TraceState:    values[FieldTraceState],
	}, nil
}

// metaValue is the value of one field about the message, checked: from the
// body, or from the entry's field of that name, which must agree when both
// are given.
func metaValue(name string, inBody *string, fields map[string]string) (string, error) {
	inEntry, entryHas := fields[name]
	switch {
	case inBody == nil && !entryHas:
		return "", nil
	case inBody != nil && entryHas && *inBody != inEntry:
		return "", &wire.FieldError{Field: name, Reason: fmt.Sprintf("is given in the body (%.80q) and as a stream entry field (%.80q) with different values", *inBody, inEntry)}
	}
	v := inEntry
	if inBody != nil {
		v = *inBody
	}
	return v, checkMeta(name, v)
}

func checkMeta(name, v string) error {
	switch name {
	case FieldTraceParent:
		if !validTraceParent(v) {
			return &wire.FieldError{Field: name, Reason: "must be a W3C traceparent: version-traceid-parentid-flags in lowercase hex, e.g. 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
		}
	case FieldTraceState:
		if !validTraceState(v) {
			return &wire.FieldError{Field: name, Reason: "must be a W3C tracestate: 1 to 512 printable ASCII characters"}
		}
	default:
		return reference(name, v)
	}
	return nil
}

// validTraceParent checks the W3C Trace Context format: a version other
// than ff, a trace id and a parent id not all zeros, flags; a later version
// may append fields after a dash.
func validTraceParent(s string) bool {
	if len(s) < 55 || s[2] != '-' || s[35] != '-' || s[52] != '-' {
		return false
	}
	version, traceID, parentID, flags := s[0:2], s[3:35], s[36:52], s[53:55]
	for _, part := range []string{version, traceID, parentID, flags} {
		if strings.Trim(part, "0123456789abcdef") != "" {
			return false
		}
	}
	switch {
	case version == "ff", strings.Trim(traceID, "0") == "", strings.Trim(parentID, "0") == "":
		return false
	case version == "00":
		return len(s) == 55
	}
	return len(s) == 55 || s[55] == '-'
}

func validTraceState(s string) bool {
	if s == "" || len(s) > 512 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

func reference(field, v string) error { return domain.CheckReference(field, v) }

func quantity(field string, v, minimum int) error {
	if v < minimum || v > domain.MaxQuantity {
		return &wire.FieldError{Field: field, Reason: fmt.Sprintf("must be an integer from %d to %d", minimum, domain.MaxQuantity)}
	}
	return nil
}

func firstError(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
