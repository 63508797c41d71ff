// Package memory is an in-memory store behind the service layer's ports: the
// fake that unit tests run the real handlers against. A unit of work sees a
// private copy of the data and writes it back only when it commits.
package memory

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"allocation/domain"
	"allocation/servicelayer"
)

type batchRecord struct {
	ref, sku  string
	purchased int
	eta       time.Time
	lines     []domain.OrderLine
}

type productRecord struct {
	sku     string
	version int
	batches []batchRecord
}

type viewRow struct {
	line     domain.OrderLine
	batchRef string
}

// delivery is the state of one event for one handler.
type delivery struct {
	done, dead bool
	attempts   int
	lastError  string
	next       time.Time
}

type logEntry struct {
	env        servicelayer.Envelope
	deliveries map[string]*delivery // by handler
}

// Store holds committed state. Units of work run one at a time.
type Store struct {
	mu       sync.Mutex
	products map[string]productRecord
	view     []viewRow
	log      []*logEntry
	inbox    map[string]bool
	commits  int
	policy   servicelayer.RetryPolicy
	now      func() time.Time
	wake     chan struct{}
	dead     []servicelayer.DeadLetter // dead letters, by id - 1
	routes   servicelayer.Routes
}

func NewStore() *Store {
	return &Store{
		products: map[string]productRecord{},
		inbox:    map[string]bool{},
		policy:   servicelayer.DefaultRetryPolicy(),
		now:      time.Now,
		wake:     make(chan struct{}, 1),
		routes:   servicelayer.EventRoutes(),
	}
}

// SetRetryPolicy changes when failed deliveries are retried or parked.
func (s *Store) SetRetryPolicy(p servicelayer.RetryPolicy) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.policy = p
}

// SetClock replaces the store's clock, so tests can make retries fall due.
func (s *Store) SetClock(now func() time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.now = now
}

// Commits counts the units of work that committed.
func (s *Store) Commits() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.commits
}

// Product returns a copy of the committed product of sku, or nil.
func (s *Store) Product(sku string) *domain.Product {
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, ok := s.products[sku]
	if !ok {
		return nil
	}
	return rec.restore()
}

// Dead lists the deliveries parked as dead.
func (s *Store) Dead() []servicelayer.Delivery {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []servicelayer.Delivery
	for _, e := range s.log {
		for h, d := range e.deliveries {
			if d.dead {
				out = append(out, servicelayer.Delivery{Envelope: e.env, Handler: h})
			}
		}
	}
	return out
}

// Allocations answers the allocations view for one order, oldest first.
func (s *Store) Allocations(_ context.Context, orderID string) ([]servicelayer.Allocation, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []servicelayer.Allocation
	for _, r := range s.view {
		if r.line.OrderID == orderID {
			out = append(out, servicelayer.Allocation{SKU: r.line.SKU, BatchRef: r.batchRef})
		}
	}
	return out, nil
}

// ProductOfBatch says which committed product batch ref belongs to; found is
// false for an unknown batch.
func (s *Store) ProductOfBatch(_ context.Context, ref string) (sku string, found bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for sku, rec := range s.products {
		for _, b := range rec.batches {
			if b.ref == ref {
				return sku, true, nil
			}
		}
	}
	return "", false, nil
}

// work is a piece of work on the memory store. Units of work run one at a
// time already, so it keeps nothing between them.
type work struct{ store *Store }

// Begin implements servicelayer.UnitOfWork.
func (s *Store) Begin() servicelayer.Work { return work{s} }

func (w work) Do(ctx context.Context, inboxID string, fn func(tx servicelayer.Tx) error) ([]servicelayer.Delivery, error) {
	return w.store.do(ctx, inboxID, fn)
}

func (w work) Deliver(ctx context.Context, d servicelayer.Delivery, fn func(tx servicelayer.Tx) error) ([]servicelayer.Delivery, error) {
	return w.store.Deliver(ctx, d, fn)
}

func (w work) DeliverRun(ctx context.Context, run []servicelayer.Delivery, send func(ctx context.Context) error) error {
	return w.store.deliverRun(ctx, run, send)
}

func (work) End() {}

// deliverRun makes a run queued first in line (servicelayer.Work.DeliverRun).
func (s *Store) deliverRun(ctx context.Context, run []servicelayer.Delivery, send func(ctx context.Context) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	first := s.pending(run[0])
	if first == nil {
		return servicelayer.ErrNotDelivered
	}
	if err := send(ctx); err != nil {
		s.fail(first, err)
		return err
	}
	for _, d := range run {
		for _, e := range s.log {
			if state, ok := e.deliveries[d.Handler]; ok && e.env.LogID == d.LogID {
				state.attempts++
				state.done = true
			}
		}
	}
	return nil
}

// Do runs fn as a unit of work answering no inbound message.
func (s *Store) Do(ctx context.Context, fn func(tx servicelayer.Tx) error) ([]servicelayer.Delivery, error) {
	return s.do(ctx, "", fn)
}

func (s *Store) do(ctx context.Context, id string, fn func(tx servicelayer.Tx) error) ([]servicelayer.Delivery, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if id != "" && s.inbox[id] {
		return nil, servicelayer.ErrDuplicateMessage
	}
	t := s.begin()
	if err := fn(t); err != nil {
		return nil, err
	}
	if id != "" {
		s.inbox[id] = true
	}
	return s.commit(ctx, t), nil
}

// Deliver makes one delivery (servicelayer.Work.Deliver).
func (s *Store) Deliver(ctx context.Context, d servicelayer.Delivery, fn func(tx servicelayer.Tx) error) ([]servicelayer.Delivery, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	state := s.pending(d)
	if state == nil {
		return nil, servicelayer.ErrNotDelivered
	}
	t := s.begin()
	if err := fn(t); err != nil {
		s.fail(state, err)
		return nil, err
	}
	state.attempts++
	state.done = true
	return s.commit(ctx, t), nil
}

// fail records a failed attempt: due again after the policy's delay, or
// parked when the failure is permanent and it was the last attempt.
func (s *Store) fail(state *delivery, err error) {
	permanent := errors.Is(err, servicelayer.ErrPermanent)
	state.attempts++
	state.lastError = err.Error()
	state.next = s.now() // a transient failure: the bus pauses the handler
	if permanent {
		state.next = s.now().Add(s.policy.Delay(state.attempts))
	}
	state.dead = s.policy.Parks(state.attempts, permanent)
	s.signal()
}

// pending returns the state of d when it may be delivered now: pending, and
// every earlier event of its product done for this handler (behind a dead
// one it waits for an operator).
func (s *Store) pending(d servicelayer.Delivery) *delivery {
	for _, e := range s.log {
		state, ok := e.deliveries[d.Handler]
		if !ok {
			continue
		}
		if e.env.LogID == d.LogID {
			if state.done || state.dead {
				return nil
			}
			return state
		}
		if e.env.Event.ProductSKU() == d.Event.ProductSKU() && !state.done {
			return nil
		}
	}
	return nil
}

// Due implements servicelayer.EventLog.
func (s *Store) Due(_ context.Context, limit int) ([]servicelayer.Delivery, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	type key struct{ sku, handler string }
	seen := map[key]bool{}
	var out []servicelayer.Delivery
	for _, e := range s.log {
		for h, d := range e.deliveries {
			k := key{e.env.Event.ProductSKU(), h}
			if d.done || seen[k] {
				continue
			}
			seen[k] = true // later events of the product wait for this one
			if !d.dead && !d.next.After(s.now()) && len(out) < limit {
				out = append(out, servicelayer.Delivery{Envelope: e.env, Handler: h})
			}
		}
	}
	return out, nil
}

// NextDue implements servicelayer.EventLog.
func (s *Store) NextDue(context.Context) (time.Time, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var next time.Time
	for _, e := range s.log {
		for _, d := range e.deliveries {
			if !d.done && !d.dead && (next.IsZero() || d.next.Before(next)) {
				next = d.next
			}
		}
	}
	return next, nil
}

// ClaimRun implements servicelayer.EventLog. The memory store has one
// dispatcher, so a claim is only the check that head is first in line.
func (s *Store) ClaimRun(_ context.Context, head servicelayer.Delivery, limit int) ([]servicelayer.Delivery, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pending(head) == nil {
		return nil, servicelayer.ErrNotDelivered
	}
	var run []servicelayer.Delivery
	for _, e := range s.log {
		d, ok := e.deliveries[head.Handler]
		if !ok || e.env.LogID < head.LogID || e.env.Event.ProductSKU() != head.Event.ProductSKU() || d.done {
			continue
		}
		if d.dead || len(run) == limit {
			break
		}
		run = append(run, servicelayer.Delivery{Envelope: e.env, Handler: head.Handler})
	}
	return run, nil
}

// CompleteRun implements servicelayer.EventLog.
func (s *Store) CompleteRun(_ context.Context, run []servicelayer.Delivery) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, d := range run {
		state := s.log[d.LogID-1].deliveries[d.Handler]
		state.attempts++
		state.done = true
	}
	return nil
}

// ReleaseRun implements servicelayer.EventLog.
func (s *Store) ReleaseRun(_ context.Context, run []servicelayer.Delivery, cause error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(run) > 0 && cause != nil {
		s.fail(s.log[run[0].LogID-1].deliveries[run[0].Handler], cause)
	}
	return nil
}

// Wake implements servicelayer.EventLog.
func (s *Store) Wake() <-chan struct{} { return s.wake }

func (s *Store) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *Store) begin() *tx {
	return &tx{store: s, seen: map[string]*domain.Product{}}
}

// commit writes t back, logs the events of the products it saw and returns
// their deliveries.
func (s *Store) commit(ctx context.Context, t *tx) []servicelayer.Delivery {
	var out []servicelayer.Delivery
	// Turns are taken against what was logged before this commit: its own
	// deliveries go out in order behind each other.
	before := s.log
	for _, p := range t.order {
		s.products[p.SKU()] = record(p)
		for _, ev := range p.PullEvents() {
			env := servicelayer.NewEnvelope(ctx, ev, s.now())
			env.LogID = int64(len(s.log) + 1)
			entry := &logEntry{env: env, deliveries: map[string]*delivery{}}
			if change, ok := servicelayer.AllocationsViewChange(ev); ok {
				s.project(change)
			}
			for _, h := range s.routes[ev.Name()] {
				inTurn := !waiting(before, ev.ProductSKU(), h)
				entry.deliveries[h] = &delivery{next: env.OccurredAt}
				out = append(out, servicelayer.Delivery{Envelope: env, Handler: h, FirstInLine: inTurn})
			}
			s.log = append(s.log, entry)
		}
	}
	s.commits++
	return out
}

// waiting reports whether an event of sku is pending for handler in log.
func waiting(log []*logEntry, sku, handler string) bool {
	for _, e := range log {
		if d, ok := e.deliveries[handler]; ok && e.env.Event.ProductSKU() == sku && !d.done {
			return true
		}
	}
	return false
}

type tx struct {
	store *Store
	seen  map[string]*domain.Product
	order []*domain.Product
}

func (t *tx) Products() servicelayer.Products { return (*repository)(t) }

// repository is the Products port of one unit of work.
type repository tx

func (r *repository) remember(p *domain.Product) *domain.Product {
	r.seen[p.SKU()] = p
	r.order = append(r.order, p)
	return p
}

func (r *repository) Get(_ context.Context, sku string) (*domain.Product, error) {
	if p, ok := r.seen[sku]; ok {
		return p, nil
	}
	rec, ok := r.store.products[sku]
	if !ok {
		return nil, nil
	}
	return r.remember(rec.restore()), nil
}

// GetBatches loads the whole product: memory costs nothing.
func (r *repository) GetBatches(ctx context.Context, sku string) (*domain.Product, error) {
	return r.Get(ctx, sku)
}

// GetForLine loads the whole product: memory costs nothing.
func (r *repository) GetForLine(ctx context.Context, line domain.OrderLine) (*domain.Product, error) {
	return r.Get(ctx, line.SKU)
}

func (r *repository) GetByBatchRef(ctx context.Context, ref string) (*domain.Product, error) {
	for _, p := range r.seen {
		if p.Batch(ref) != nil {
			return p, nil
		}
	}
	for sku, rec := range r.store.products {
		for _, b := range rec.batches {
			if b.ref == ref {
				return r.Get(ctx, sku)
			}
		}
	}
	return nil, nil
}

// GetForQuantityChange loads the whole product: memory costs nothing.
func (r *repository) GetForQuantityChange(ctx context.Context, ref string, _ int) (*domain.Product, error) {
	return r.GetByBatchRef(ctx, ref)
}

func (r *repository) Add(_ context.Context, p *domain.Product) error {
	r.remember(p)
	return nil
}

func (r *repository) Seen() []*domain.Product { return slices.Clone(r.order) }

// project moves a line in the allocations view: a line already there keeps
// its place.
func (s *Store) project(change servicelayer.ViewChange) {
	if change.BatchRef == "" {
		s.view = slices.DeleteFunc(s.view, func(r viewRow) bool { return r.line == change.Line })
		return
	}
	for i := range s.view {
		if s.view[i].line == change.Line {
			s.view[i].batchRef = change.BatchRef
			return
		}
	}
	s.view = append(s.view, viewRow{line: change.Line, batchRef: change.BatchRef})
}

func record(p *domain.Product) productRecord {
	rec := productRecord{sku: p.SKU(), version: p.Version()}
	for _, b := range p.Batches() {
		rec.batches = append(rec.batches, batchRecord{ref: b.Ref(), sku: b.SKU(), purchased: b.PurchasedQty(), eta: b.ETA(), lines: b.Lines()})
	}
	return rec
}

func (rec productRecord) restore() *domain.Product {
	batches := make([]*domain.Batch, len(rec.batches))
	for i, b := range rec.batches {
		batches[i] = domain.RestoreBatch(b.ref, b.sku, b.purchased, allocatedQty(b.lines), b.eta, slices.Clone(b.lines))
	}
	return domain.RestoreProduct(rec.sku, rec.version, batches)
}

// allocatedQty is the quantity of lines: the memory store keeps every line.
func allocatedQty(lines []domain.OrderLine) int {
	n := 0
	for _, l := range lines {
		n += l.Qty
	}
	return n
}
