package servicelayer

import "allocation/domain"

// ViewChange is how an event moves one line in the allocations view (the
// read side): to BatchRef, or out of the view when BatchRef is "".
type ViewChange struct {
	Line     domain.OrderLine
	BatchRef string
}

// AllocationsViewChange says how ev changes the allocations view; ok is
// false for an event that does not. Every store applies it to the events of
// a unit of work in the same commit, so that no handler can forget the view.
func AllocationsViewChange(ev domain.Event) (change ViewChange, ok bool) {
	switch e := ev.(type) {
	case domain.Allocated:
		return ViewChange{Line: domain.OrderLine{OrderID: e.OrderID, SKU: e.SKU, Qty: e.Qty}, BatchRef: e.BatchRef}, true
	case domain.Deallocated:
		return ViewChange{Line: domain.OrderLine{OrderID: e.OrderID, SKU: e.SKU, Qty: e.Qty}}, true
	}
	return ViewChange{}, false
}
