package consumer

import (
	"bytes"
	"fmt"

	"allocation/domain"
	"allocation/entrypoints/wire"
)

// Channels the consumer listens on.
const (
	ChangeBatchQuantity = "change_batch_quantity"
	Allocate            = "allocate"
)

// Bodies of the inbound messages. Pointers tell a missing field from a zero
// one. message_id is accepted so that senders may stamp their messages.
type changeBatchQuantityBody struct {
	BatchRef  *string `json:"batchref"`
	Qty       *int    `json:"qty"`
	MessageID *string `json:"message_id"`
}

type allocateBody struct {
	OrderID   *string `json:"orderid"`
	SKU       *string `json:"sku"`
	Qty       *int    `json:"qty"`
	MessageID *string `json:"message_id"`
}

// Decode turns a message on channel into the command it asks for. It is
// strict: one JSON object with exactly the known fields, of the right types,
// none missing, no empty references and no quantity out of range. Its error
// names the field at fault. Whether the batch or SKU exists is for the
// handler to say.
func Decode(channel string, payload []byte) (Message, error) {
	switch channel {
	case ChangeBatchQuantity:
		return decodeChangeBatchQuantity(payload)
	case Allocate:
		return decodeAllocate(payload)
	}
	return Message{}, fmt.Errorf("channel %q carries no command", channel)
}

// Message is a decoded inbound message: the command, and the sender's id for
// it when it gave one (a repeated id is processed once).
type Message struct {
	Command domain.Command
	ID      string
}

func messageID(id *string) (string, error) {
	if id == nil {
		return "", nil
	}
	if err := reference("message_id", *id); err != nil {
		return "", err
	}
	return *id, nil
}

// decodeObject is wire.Decode refusing a JSON null too, which would
// otherwise leave every field missing.
func decodeObject(payload []byte, v any) error {
	if string(bytes.TrimSpace(payload)) == "null" {
		return &wire.FieldError{Field: "body", Reason: "must be a JSON object"}
	}
	return wire.Decode(payload, v)
}

func decodeChangeBatchQuantity(payload []byte) (Message, error) {
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
	id, err := messageID(b.MessageID)
	return Message{Command: domain.ChangeBatchQuantity{Ref: *b.BatchRef, Qty: *b.Qty}, ID: id}, err
}

func decodeAllocate(payload []byte) (Message, error) {
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
	id, err := messageID(b.MessageID)
	return Message{Command: domain.Allocate{OrderID: *b.OrderID, SKU: *b.SKU, Qty: *b.Qty}, ID: id}, err
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
