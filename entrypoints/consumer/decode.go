package consumer

import (
	"fmt"

	"allocation/domain"
	"allocation/entrypoints/wire"
)

// Channels the consumer listens on.
const (
	ChangeBatchQuantity = "change_batch_quantity"
	Allocate            = "allocate"
)

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

// Decode turns a message on channel into the command it asks for. Values are
// checked by the domain when the command is handled; Decode checks shape.
func Decode(channel string, payload []byte) (domain.Command, error) {
	switch channel {
	case ChangeBatchQuantity:
		var b changeBatchQuantityBody
		if err := wire.Decode(payload, &b); err != nil {
			return nil, err
		}
		if err := wire.Required(wire.Has("batchref", b.BatchRef), wire.Has("qty", b.Qty)); err != nil {
			return nil, err
		}
		if *b.BatchRef == "" {
			return nil, &wire.FieldError{Field: "batchref", Reason: "must not be empty"}
		}
		return domain.ChangeBatchQuantity{Ref: *b.BatchRef, Qty: *b.Qty}, nil
	case Allocate:
		var b allocateBody
		if err := wire.Decode(payload, &b); err != nil {
			return nil, err
		}
		if err := wire.Required(wire.Has("orderid", b.OrderID), wire.Has("sku", b.SKU), wire.Has("qty", b.Qty)); err != nil {
			return nil, err
		}
		return domain.Allocate{OrderID: *b.OrderID, SKU: *b.SKU, Qty: *b.Qty}, nil
	}
	return nil, fmt.Errorf("no command is sent on channel %q", channel)
}
