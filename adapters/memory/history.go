package memory

import (
	"context"

	"allocation/domain"
	"allocation/servicelayer"
)

// Events implements servicelayer.History by reading the whole log: the fake
// keeps little.
func (s *Store) Events(_ context.Context, q servicelayer.EventQuery) ([]servicelayer.Envelope, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	limit := q.Limit
	switch {
	case limit <= 0:
		limit = servicelayer.DefaultEventsPage
	case limit > servicelayer.MaxEventsPage+1:
		limit = servicelayer.MaxEventsPage + 1
	}
	var out []servicelayer.Envelope
	for _, e := range s.log {
		if len(out) == limit {
			break
		}
		if e.env.LogID > q.After && matches(e.env.Event, q) {
			out = append(out, e.env)
		}
	}
	return out, nil
}

func matches(ev domain.Event, q servicelayer.EventQuery) bool {
	orderID, batchRef := about(ev)
	return (q.SKU == "" || q.SKU == ev.ProductSKU()) &&
		(q.OrderID == "" || q.OrderID == orderID) &&
		(q.BatchRef == "" || q.BatchRef == batchRef) &&
		(q.Type == "" || q.Type == ev.Name())
}

// about names the order and the batch an event is about, "" when none, as
// the SQL store's event_log columns do.
func about(ev domain.Event) (orderID, batchRef string) {
	switch e := ev.(type) {
	case domain.Allocated:
		return e.OrderID, e.BatchRef
	case domain.Deallocated:
		return e.OrderID, e.BatchRef
	case domain.BatchCreated:
		return "", e.Ref
	case domain.BatchQuantityChanged:
		return "", e.Ref
	}
	return "", ""
}
