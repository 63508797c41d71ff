package wire

import (
	"encoding/base64"
	"encoding/json"
	"strconv"
	"time"

	"allocation/domain"
	"allocation/servicelayer"
)

// HistoryEvent is an event of the log as GET /events and `allocation events
// log -json` show it. Type is the event's name in the log (batch_created,
// batch_quantity_changed, allocated, deallocated, out_of_stock); the fields
// an event does not have are left out, except eta, which a batch_created
// always has (null: in the warehouse).
type HistoryEvent struct {
	ID            int64   `json:"id"`
	Type          string  `json:"type"`
	SKU           string  `json:"sku"`
	OrderID       string  `json:"orderid,omitempty"`
	BatchRef      string  `json:"batchref,omitempty"`
	Qty           *int    `json:"qty,omitempty"`
	OldQty        *int    `json:"old_qty,omitempty"`
	ETA           *string `json:"eta,omitempty"`
	MessageID     string  `json:"message_id"`
	OccurredAt    string  `json:"occurred_at"`
	CausationID   string  `json:"causation_id"`
	CorrelationID string  `json:"correlation_id"`
}

// MarshalJSON writes eta as null for a batch without one, rather than
// leaving it out.
func (e HistoryEvent) MarshalJSON() ([]byte, error) {
	type plain HistoryEvent
	if e.Type != (domain.BatchCreated{}).Name() || e.ETA != nil {
		return json.Marshal(plain(e))
	}
	return json.Marshal(struct {
		plain
		ETA *string `json:"eta"`
	}{plain: plain(e)})
}

// NewHistoryEvent describes a logged event.
func NewHistoryEvent(env servicelayer.Envelope) HistoryEvent {
	h := HistoryEvent{
		ID: env.LogID, Type: env.Event.Name(), SKU: env.Event.ProductSKU(), MessageID: env.MessageID,
		OccurredAt: env.OccurredAt.UTC().Format(time.RFC3339Nano), CausationID: env.CausationID, CorrelationID: env.CorrelationID,
	}
	switch e := env.Event.(type) {
	case domain.Allocated:
		h.OrderID, h.BatchRef, h.Qty = e.OrderID, e.BatchRef, &e.Qty
	case domain.Deallocated:
		h.OrderID, h.Qty = e.OrderID, &e.Qty
		if e.BatchRef != "" { // rows written before Deallocated named its batch have none
			h.BatchRef = e.BatchRef
		}
	case domain.BatchCreated:
		h.BatchRef, h.Qty = e.Ref, &e.Qty
		if !e.ETA.IsZero() {
			eta := e.ETA.Format(time.DateOnly)
			h.ETA = &eta
		}
	case domain.BatchQuantityChanged:
		h.BatchRef, h.Qty, h.OldQty = e.Ref, &e.Qty, &e.OldQty
	}
	return h
}

// Cursor is the opaque token of the place in the log after event id: next
// in one page, after in the request for the next. It is the id itself,
// so it stays valid across restarts and replicas.
func Cursor(id int64) string {
	return base64.RawURLEncoding.EncodeToString([]byte("e" + strconv.FormatInt(id, 10)))
}

// ParseCursor reads a token Cursor made.
func ParseCursor(token string) (int64, error) {
	bad := &FieldError{Field: "after", Reason: "is not a cursor this service gave (the next of a page)"}
	raw, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil || len(raw) < 2 || raw[0] != 'e' {
		return 0, bad
	}
	id, err := strconv.ParseInt(string(raw[1:]), 10, 64)
	if err != nil || id < 0 {
		return 0, bad
	}
	return id, nil
}
