package sqlstore

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"allocation/domain"
	"allocation/servicelayer"
)

// Changes is everything one unit of work writes, worked out from what it
// loaded and what the domain made of it. A dialect writes it in one atomic
// step.
type Changes struct {
	// Now is the time of the unit of work; FirstAttempt when the deliveries
	// it queues in turn fall due for a dispatcher (Now for the others).
	Now, FirstAttempt time.Time
	// InboxIDs are the inbound message ids to record.
	InboxIDs []string
	// Completed are the deliveries the unit of work completes.
	Completed []DeliveryKey
	// DeliveredUnmarked are deliveries of the products written that this
	// process made but has not marked done yet: turn checks count them as
	// done.
	DeliveredUnmarked []DeliveryKey

	NewProducts []ProductVersion
	// Unchanged are products the unit of work decided on without changing
	// them, from a cached copy: their version must not have moved either.
	Unchanged []ProductVersion
	// LinesNotLoaded are lines decided on from a cached product, which does not
	// know them: they must not have been allocated before.
	LinesNotLoaded []domain.OrderLine
	Bumped         []VersionBump
	NewBatches     []NewBatch
	ChangedBatches []BatchChange
	// RemovedLines are deallocated, AddedLines allocated; a line may be in
	// both when it moved between batches.
	RemovedLines []domain.OrderLine
	AddedLines   []PlacedLine
	ViewRemoved  []domain.OrderLine
	ViewPut      []ViewRow
	Events       []LoggedEvent
}

// ProductVersion is a new product.
type ProductVersion struct {
	SKU     string
	Version int
}

// VersionBump moves a product from the version it was read at to the next:
// it fails when the product moved on meanwhile.
type VersionBump struct {
	SKU      string
	From, To int
}

// NewBatch is a batch to insert.
type NewBatch struct {
	Ref, SKU             string
	Purchased, Allocated int
	ETA                  time.Time // zero: in the warehouse
}

// BatchChange sets the purchased quantity of a stored batch and moves its
// allocated total by AllocatedDelta: a total changed by someone who did not
// move the product's version (a bulk load in SQL) is not overwritten, and
// the database's check refuses a batch allocated beyond what it holds.
type BatchChange struct {
	ID             int64
	Purchased      int
	AllocatedDelta int
}

// PlacedLine is a line allocated to a batch: a stored one (BatchID), or
// one inserted with the same changes (BatchID 0, found by BatchRef).
type PlacedLine struct {
	BatchID  int64
	BatchRef string
	Line     domain.OrderLine
}

// ViewRow says where a line is, in the allocations view.
type ViewRow struct {
	Line     domain.OrderLine
	BatchRef string
}

// LoggedEvent is an event for the event log, with one delivery to queue per
// handler.
type LoggedEvent struct {
	Envelope servicelayer.Envelope
	Payload  string
	// OrderID and BatchRef are what the event is about, "" when it is not
	// about one: the history is queried by them (event_log columns).
	OrderID, BatchRef string
	// Handlers may be empty: an event on record only queues no delivery.
	Handlers []string
}

// DeliveryKey names one delivery.
type DeliveryKey struct {
	EventID int64
	Handler string
}

// Queued is a delivery a unit of work queued.
type Queued struct {
	MessageID   string
	LogID       int64
	Handler     string
	FirstInLine bool
}

// merge joins the changes of units of work on different products into one
// write.
func merge(all []*Changes) *Changes {
	if len(all) == 1 {
		return all[0]
	}
	m := &Changes{}
	for _, c := range all {
		if c.Now.After(m.Now) {
			m.Now, m.FirstAttempt = c.Now, c.FirstAttempt
		}
		m.InboxIDs = append(m.InboxIDs, c.InboxIDs...)
		m.Completed = append(m.Completed, c.Completed...)
		m.DeliveredUnmarked = append(m.DeliveredUnmarked, c.DeliveredUnmarked...)
		m.NewProducts = append(m.NewProducts, c.NewProducts...)
		m.Unchanged = append(m.Unchanged, c.Unchanged...)
		m.LinesNotLoaded = append(m.LinesNotLoaded, c.LinesNotLoaded...)
		m.Bumped = append(m.Bumped, c.Bumped...)
		m.NewBatches = append(m.NewBatches, c.NewBatches...)
		m.ChangedBatches = append(m.ChangedBatches, c.ChangedBatches...)
		m.RemovedLines = append(m.RemovedLines, c.RemovedLines...)
		m.AddedLines = append(m.AddedLines, c.AddedLines...)
		m.ViewRemoved = append(m.ViewRemoved, c.ViewRemoved...)
		m.ViewPut = append(m.ViewPut, c.ViewPut...)
		m.Events = append(m.Events, c.Events...)
	}
	return m
}

// split gives each of all, merged into one write, the deliveries of its own
// events among those the write queued.
func split(queued []Queued, all []*Changes) [][]Queued {
	byMessage := map[string][]Queued{}
	for _, q := range queued {
		byMessage[q.MessageID] = append(byMessage[q.MessageID], q)
	}
	out := make([][]Queued, len(all))
	for i, c := range all {
		for _, ev := range c.Events {
			out[i] = append(out[i], byMessage[ev.Envelope.MessageID]...)
		}
	}
	return out
}

// products names the products c writes or decides on.
func (c *Changes) products() []string {
	var skus []string
	for _, p := range c.NewProducts {
		skus = append(skus, p.SKU)
	}
	for _, p := range c.Bumped {
		skus = append(skus, p.SKU)
	}
	for _, p := range c.Unchanged {
		skus = append(skus, p.SKU)
	}
	for _, ev := range c.Events {
		skus = append(skus, ev.Envelope.Event.ProductSKU())
	}
	return skus
}

// changesState reports whether anything but the inbox and the delivery
// is written: products, the view or the event log.
func (c *Changes) changesState() bool {
	return len(c.NewProducts)+len(c.Bumped)+len(c.ViewRemoved)+len(c.ViewPut)+len(c.Events) > 0
}

// changes works out what the session writes: every product it saw, against
// the snapshot it was loaded from; the events raised, sealed with the cause
// ctx carries; and the allocations view as those events move it.
func (s *session) changes(ctx context.Context, now time.Time) (*Changes, error) {
	c := s.stateChanges(now)
	events, err := s.logEvents(ctx, now)
	if err != nil {
		return nil, err
	}
	c.addEvents(s.store, events)
	return c, nil
}

// stateChanges are the changes of the products the session saw, without
// their events.
func (s *session) stateChanges(now time.Time) *Changes {
	c := &Changes{Now: now.UTC(), FirstAttempt: now.UTC().Add(FirstAttemptGrace)}
	for _, p := range s.seen {
		s.productChanges(c, p)
	}
	// A line the unit of work allocates is refused by the allocations key
	// should it be there already, and one a product holds was read; the
	// others are checked.
	for _, l := range s.linesNotLoaded {
		added := slices.ContainsFunc(c.AddedLines, func(a PlacedLine) bool { return a.Line == l })
		if !added && !s.holds(l) && !slices.Contains(c.LinesNotLoaded, l) {
			c.LinesNotLoaded = append(c.LinesNotLoaded, l)
		}
	}
	return c
}

// holds reports whether a product of the session has l allocated.
func (s *session) holds(l domain.OrderLine) bool {
	p := s.find(l.SKU)
	return p != nil && slices.ContainsFunc(p.Batches(), func(b *domain.Batch) bool { return b.Has(l) })
}

// logEvents takes the events the session's products raised since the last
// call, sealed with the cause ctx carries, as the event log keeps them.
func (s *session) logEvents(ctx context.Context, now time.Time) ([]LoggedEvent, error) {
	var logged []LoggedEvent
	for _, p := range s.seen {
		for _, ev := range p.PullEvents() {
			l, err := s.store.logged(ctx, ev, now)
			if err != nil {
				return nil, err
			}
			logged = append(logged, l)
		}
	}
	return logged, nil
}

// addEvents adds the events of the write, with the allocations view as they
// move it. What this process delivered of their products and not marked
// yet counts as done for their turns.
func (c *Changes) addEvents(s *Store, events []LoggedEvent) {
	var view viewChanges
	for _, ev := range events {
		sku := ev.Envelope.Event.ProductSKU()
		if !slices.ContainsFunc(c.Events, func(e LoggedEvent) bool { return e.Envelope.Event.ProductSKU() == sku }) {
			c.DeliveredUnmarked = append(c.DeliveredUnmarked, s.marks.Of(sku)...)
		}
		c.Events = append(c.Events, ev)
		if change, ok := servicelayer.AllocationsViewChange(ev.Envelope.Event); ok {
			view.set(change.Line, change.BatchRef)
		}
	}
	c.ViewPut, c.ViewRemoved = view.rows()
}

// productChanges adds what p changed since it was loaded.
func (s *session) productChanges(c *Changes, p *domain.Product) {
	snap, stored := s.snapshots[p.SKU()]
	switch {
	case !stored:
		c.NewProducts = append(c.NewProducts, ProductVersion{SKU: p.SKU(), Version: p.Version()})
	case p.Version() != snap.version:
		c.Bumped = append(c.Bumped, VersionBump{SKU: p.SKU(), From: snap.version, To: p.Version()})
	default:
		if s.cached[p.SKU()] {
			c.Unchanged = append(c.Unchanged, ProductVersion{SKU: p.SKU(), Version: snap.version})
		}
		return // the domain moves the version with every change
	}
	for _, b := range p.Batches() {
		old, ok := snap.batches[b.Ref()]
		switch {
		case !ok:
			c.NewBatches = append(c.NewBatches, NewBatch{Ref: b.Ref(), SKU: b.SKU(), Purchased: b.PurchasedQty(), Allocated: b.AllocatedQty(), ETA: b.ETA()})
		case old.purchased != b.PurchasedQty() || old.allocated != b.AllocatedQty():
			c.ChangedBatches = append(c.ChangedBatches, BatchChange{ID: old.id, Purchased: b.PurchasedQty(), AllocatedDelta: b.AllocatedQty() - old.allocated})
		}
		for _, l := range old.lines {
			if !b.Has(l) {
				c.RemovedLines = append(c.RemovedLines, l)
			}
		}
		for _, l := range b.Lines() {
			if !slices.Contains(old.lines, l) {
				c.AddedLines = append(c.AddedLines, PlacedLine{BatchID: old.id, BatchRef: b.Ref(), Line: l})
			}
		}
	}
}

// logged is ev as the event log keeps it, with a delivery for each of its
// handlers.
func (s *Store) logged(ctx context.Context, ev domain.Event, now time.Time) (LoggedEvent, error) {
	payload, orderID, batchRef, err := encodeEvent(ev)
	if err != nil {
		return LoggedEvent{}, err
	}
	return LoggedEvent{
		Envelope: servicelayer.NewEnvelope(ctx, ev, now),
		Payload:  string(payload),
		OrderID:  orderID,
		BatchRef: batchRef,
		Handlers: s.routes[ev.Name()],
	}, nil
}

// viewChanges keeps the last change asked for each line, in the order the
// lines were first touched: one write per line, whatever happened to it.
type viewChanges struct {
	order []domain.OrderLine
	last  map[domain.OrderLine]viewChange
}

type viewChange struct {
	batchRef string
	present  bool
}

// set records that line is in batchRef now, or out of the view when
// batchRef is "".
func (v *viewChanges) set(line domain.OrderLine, batchRef string) {
	if v.last == nil {
		v.last = map[domain.OrderLine]viewChange{}
	}
	if _, ok := v.last[line]; !ok {
		v.order = append(v.order, line)
	}
	v.last[line] = viewChange{batchRef: batchRef, present: batchRef != ""}
}

// rows are the rows to write and the lines to remove.
func (v *viewChanges) rows() (put []ViewRow, removed []domain.OrderLine) {
	for _, line := range v.order {
		if ch := v.last[line]; ch.present {
			put = append(put, ViewRow{Line: line, BatchRef: ch.batchRef})
		} else {
			removed = append(removed, line)
		}
	}
	return put, removed
}

// The event log's payloads. A write encodes each event it logs (logged,
// above); decodeEvent reads them back for the event log. Both sides of the
// format sit together so that they change together.

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
