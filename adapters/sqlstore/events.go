package sqlstore

import (
	"encoding/json"
	"fmt"

	"allocation/domain"
)

// eventPayload is how events are kept in event_log.payload.
type eventPayload struct {
	OrderID  string `json:"orderid,omitempty"`
	SKU      string `json:"sku"`
	Qty      int    `json:"qty,omitempty"`
	BatchRef string `json:"batchref,omitempty"`
}

func encodeEvent(ev domain.Event) ([]byte, error) {
	var p eventPayload
	switch e := ev.(type) {
	case domain.Allocated:
		p = eventPayload{OrderID: e.OrderID, SKU: e.SKU, Qty: e.Qty, BatchRef: e.BatchRef}
	case domain.Deallocated:
		p = eventPayload{OrderID: e.OrderID, SKU: e.SKU, Qty: e.Qty, BatchRef: e.BatchRef}
	case domain.OutOfStock:
		p = eventPayload{SKU: e.SKU}
	default:
		return nil, fmt.Errorf("no storage format for event %s", ev.Name())
	}
	return json.Marshal(p)
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
	}
	return nil, fmt.Errorf("unknown event %q in the event log", name)
}
