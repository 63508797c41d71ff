package sqlstore

import (
	"encoding/json"
	"fmt"
	"time"

	"allocation/domain"
)

// eventPayload is how events are kept in event_log.payload. Zero values are
// left out; reading them back gives the same zero.
type eventPayload struct {
	OrderID  string `json:"orderid,omitempty"`
	SKU      string `json:"sku"`
	Qty      int    `json:"qty,omitempty"`
	OldQty   int    `json:"old_qty,omitempty"`
	BatchRef string `json:"batchref,omitempty"`
	ETA      string `json:"eta,omitempty"` // YYYY-MM-DD; none: in the warehouse
}

func payloadOf(ev domain.Event) (eventPayload, error) {
	switch e := ev.(type) {
	case domain.Allocated:
		return eventPayload{OrderID: e.OrderID, SKU: e.SKU, Qty: e.Qty, BatchRef: e.BatchRef}, nil
	case domain.Deallocated:
		return eventPayload{OrderID: e.OrderID, SKU: e.SKU, Qty: e.Qty, BatchRef: e.BatchRef}, nil
	case domain.OutOfStock:
		return eventPayload{SKU: e.SKU}, nil
	case domain.BatchCreated:
		p := eventPayload{SKU: e.SKU, Qty: e.Qty, BatchRef: e.Ref}
		if !e.ETA.IsZero() {
			p.ETA = e.ETA.Format(time.DateOnly)
		}
		return p, nil
	case domain.BatchQuantityChanged:
		return eventPayload{SKU: e.SKU, Qty: e.Qty, OldQty: e.OldQty, BatchRef: e.Ref}, nil
	}
	return eventPayload{}, fmt.Errorf("no storage format for event %s", ev.Name())
}

// encodeEvent returns the payload to log for ev, and the order id and batch
// ref it is about ("" when none), which go into columns of their own so
// that the history can be queried by them.
func encodeEvent(ev domain.Event) (payload []byte, orderID, batchRef string, err error) {
	p, err := payloadOf(ev)
	if err != nil {
		return nil, "", "", err
	}
	payload, err = json.Marshal(p)
	return payload, p.OrderID, p.BatchRef, err
}

func decodeEvent(name string, payload []byte) (domain.Event, error) {
	var p eventPayload
	if err := json.Unmarshal(payload, &p); err != nil {
		return nil, fmt.Errorf("decode %s event: %w", name, err)
	}
	switch name {
	case domain.Allocated{}.Name():
		return domain.Allocated{OrderID: p.OrderID, SKU: p.SKU, Qty: p.Qty, BatchRef: p.BatchRef}, nil
	case domain.Deallocated{}.Name():
		// Rows written before Deallocated named its batch decode with "".
		return domain.Deallocated{OrderID: p.OrderID, SKU: p.SKU, Qty: p.Qty, BatchRef: p.BatchRef}, nil
	case domain.OutOfStock{}.Name():
		return domain.OutOfStock{SKU: p.SKU}, nil
	case domain.BatchCreated{}.Name():
		var eta time.Time
		if p.ETA != "" {
			t, err := time.Parse(time.DateOnly, p.ETA)
			if err != nil {
				return nil, fmt.Errorf("decode %s event: eta: %w", name, err)
			}
			eta = t
		}
		return domain.BatchCreated{Ref: p.BatchRef, SKU: p.SKU, Qty: p.Qty, ETA: eta}, nil
	case domain.BatchQuantityChanged{}.Name():
		return domain.BatchQuantityChanged{Ref: p.BatchRef, SKU: p.SKU, OldQty: p.OldQty, Qty: p.Qty}, nil
	}
	return nil, fmt.Errorf("unknown event %q in the event log", name)
}
