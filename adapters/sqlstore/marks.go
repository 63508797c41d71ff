package sqlstore

import (
	"context"
	"slices"
	"sync"
	"time"
)

// Marking publications done: how long after the first unmarked one the
// batch is written, and how long to wait after a failed write.
const (
	markDelay      = 5 * time.Millisecond
	markRetryDelay = time.Second
	markTimeout    = 5 * time.Second
)

// marks are deliveries this process made whose handler changed nothing
// stored (a publication, a notification), not yet marked done in the
// database. They are marked in batches a moment later, off the request path.
// Until then this process's turn checks count them as done. Losing them in a
// crash is harmless: the delivery is made again after its grace, and its
// receivers drop the repeat.
type marks struct {
	store     *Store
	mu        sync.Mutex
	bySKU     map[string][]DeliveryKey
	scheduled bool
	flushing  bool
	closed    bool // after the store closed: no more flushes
}

// add records a made delivery of sku and makes sure a flush is coming.
func (m *marks) add(sku string, k DeliveryKey) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.bySKU == nil {
		m.bySKU = map[string][]DeliveryKey{}
	}
	m.bySKU[sku] = append(m.bySKU[sku], k)
	m.schedule(markDelay)
}

// of returns the unmarked deliveries of sku.
func (m *marks) of(sku string) []DeliveryKey {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.bySKU[sku])
}

// schedule flushes after d unless a flush is already coming; m.mu is held.
func (m *marks) schedule(d time.Duration) {
	if m.scheduled || m.closed {
		return
	}
	m.scheduled = true
	time.AfterFunc(d, func() {
		m.mu.Lock()
		m.scheduled = false
		m.mu.Unlock()
		_ = m.flush(context.Background())
	})
}

// close makes a last flush and stops further ones. What cannot be marked
// now is delivered again by a dispatcher, and dropped by its receivers.
func (m *marks) close(ctx context.Context) error {
	err := m.flush(ctx)
	m.mu.Lock()
	m.closed = true
	m.mu.Unlock()
	return err
}

// flush marks every recorded delivery done in one write. The deliveries
// stay recorded until the write succeeded, so that no turn check sees them
// pending meanwhile; one flush runs at a time.
func (m *marks) flush(ctx context.Context) error {
	m.mu.Lock()
	if m.flushing {
		m.mu.Unlock()
		return nil
	}
	var batch []DeliveryKey
	for _, keys := range m.bySKU {
		batch = append(batch, keys...)
	}
	if len(batch) == 0 {
		m.mu.Unlock()
		return nil
	}
	m.flushing = true
	m.mu.Unlock()

	ctx, cancel := context.WithTimeout(ctx, markTimeout)
	defer cancel()
	err := m.store.dialect.MarkDone(ctx, batch, time.Now().UTC())

	m.mu.Lock()
	defer m.mu.Unlock()
	m.flushing = false
	if err != nil {
		m.store.log.Warn("could not mark deliveries done; retrying", "deliveries", len(batch), "error", err)
		m.schedule(markRetryDelay)
		return err
	}
	done := make(map[DeliveryKey]bool, len(batch))
	for _, k := range batch {
		done[k] = true
	}
	for sku, keys := range m.bySKU {
		keys = slices.DeleteFunc(keys, func(k DeliveryKey) bool { return done[k] })
		if len(keys) == 0 {
			delete(m.bySKU, sku)
		} else {
			m.bySKU[sku] = keys
		}
	}
	if len(m.bySKU) > 0 {
		m.schedule(markDelay) // recorded while this flush ran
	}
	return nil
}
