// Package marking keeps the deliveries this process made whose handler
// changed nothing stored (a publication, a notification) until they are
// marked done in the database. They are marked in batches a moment later,
// off the request path: one write for many deliveries instead of one each.
// Until then this process's turn checks count them as done. Losing them in
// a crash is harmless: the delivery is made again after its grace, and its
// receivers drop the repeat.
package marking

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"
)

// How long after the first unmarked delivery the batch is written, how long
// to wait after a failed write, and how long a write may take.
const (
	markDelay      = 5 * time.Millisecond
	markRetryDelay = time.Second
	markTimeout    = 5 * time.Second
)

// Marks are the deliveries made and not marked done yet, by product; K
// names a delivery.
type Marks[K comparable] struct {
	markDone  func(ctx context.Context, done []K) error
	log       *slog.Logger
	mu        sync.Mutex
	bySKU     map[string][]K
	scheduled bool
	// flushing is closed when the running flush is over; nil when none runs.
	flushing chan struct{}
	closed   bool // after Close: no more flushes
}

// New returns marks that markDone writes to the database.
func New[K comparable](markDone func(ctx context.Context, done []K) error, log *slog.Logger) *Marks[K] {
	return &Marks[K]{markDone: markDone, log: log, bySKU: map[string][]K{}}
}

// Add records a made delivery of sku and makes sure a flush is coming.
func (m *Marks[K]) Add(sku string, k K) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.bySKU[sku] = append(m.bySKU[sku], k)
	m.schedule(markDelay)
}

// Of returns the unmarked deliveries of sku.
func (m *Marks[K]) Of(sku string) []K {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.bySKU[sku])
}

// schedule flushes after d unless a flush is already coming; m.mu is held.
func (m *Marks[K]) schedule(d time.Duration) {
	if m.scheduled || m.closed {
		return
	}
	m.scheduled = true
	time.AfterFunc(d, func() {
		m.mu.Lock()
		m.scheduled = false
		m.mu.Unlock()
		_ = m.Flush(context.Background())
	})
}

// Close makes a last flush and stops further ones. What cannot be marked
// now is delivered again by a dispatcher, and dropped by its receivers.
func (m *Marks[K]) Close(ctx context.Context) error {
	err := m.Flush(ctx)
	m.mu.Lock()
	m.closed = true
	m.mu.Unlock()
	return err
}

// Flush marks every recorded delivery done in one write. The deliveries
// stay recorded until the write succeeded, so that no turn check sees them
// pending meanwhile. One flush runs at a time: a Flush while another runs
// waits for it (or for ctx), then writes what is left, so that its caller
// (a claim about to read a delivery's state) finds every delivery recorded
// before the call marked when it returns nil.
func (m *Marks[K]) Flush(ctx context.Context) error {
	for {
		m.mu.Lock()
		running := m.flushing
		if running == nil {
			break
		}
		m.mu.Unlock()
		select {
		case <-running:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	var batch []K
	for _, keys := range m.bySKU {
		batch = append(batch, keys...)
	}
	if len(batch) == 0 {
		m.mu.Unlock()
		return nil
	}
	done := make(chan struct{})
	m.flushing = done
	m.mu.Unlock()
	return m.write(ctx, batch, done)
}

// write marks batch done in the database and forgets it, or schedules a
// retry; done is closed once it is over.
func (m *Marks[K]) write(ctx context.Context, batch []K, done chan struct{}) error {
	ctx, cancel := context.WithTimeout(ctx, markTimeout)
	defer cancel()
	err := m.markDone(ctx, batch)

	m.mu.Lock()
	defer m.mu.Unlock()
	m.flushing = nil
	close(done)
	if err != nil {
		m.log.Warn("could not mark deliveries done; retrying", "deliveries", len(batch), "error", err)
		m.schedule(markRetryDelay)
		return err
	}
	m.forget(batch)
	if len(m.bySKU) > 0 {
		m.schedule(markDelay) // recorded while this flush ran
	}
	return nil
}

// forget drops the deliveries marked done; m.mu is held.
func (m *Marks[K]) forget(marked []K) {
	done := make(map[K]bool, len(marked))
	for _, k := range marked {
		done[k] = true
	}
	for sku, keys := range m.bySKU {
		keys = slices.DeleteFunc(keys, func(k K) bool { return done[k] })
		if len(keys) == 0 {
			delete(m.bySKU, sku)
		} else {
			m.bySKU[sku] = keys
		}
	}
}
