// Package groupcommit writes the changes of concurrent units of work
// together: while the writers are busy, the units of work that come
// meanwhile are merged into the next write. Under load many share one round
// trip and one commit; alone, a unit of work is written at once. Units of
// work on one product are never merged: the in-process turns keep them apart
// anyway, and the later one is written after, alone.
//
// It knows nothing of what is written: a Port says how to write, merge and
// split changes of type C and answers of type R.
package groupcommit

import (
	"context"
	"errors"
	"sync"
	"time"

	"allocation/servicelayer"
)

// How many writers run at once, how many units of work one write may carry,
// and how long a write may take when no caller waits for it any longer.
const (
	writers             = 4
	maxMerged           = 64
	abandonedWriteLimit = 10 * time.Second
)

// ErrClosed: the store was closed while a unit of work waited to be written.
var ErrClosed = errors.New("store closed")

// Port is what the committer needs to know of the changes it writes.
type Port[C, R any] struct {
	// Write writes c, one unit of work's changes or merged ones, in one
	// atomic step. An error marked servicelayer.ErrUnavailable means the
	// database could not be reached: writing each alone would not help.
	Write func(ctx context.Context, c C) (R, error)
	// Merge joins the changes of units of work on different products.
	Merge func(all []C) C
	// Split gives each of all its share of r, what writing Merge(all)
	// answered, in the order of all.
	Split func(r R, all []C) []R
	// Products names the products c writes or decides on.
	Products func(c C) []string
}

// Committer runs the writers.
type Committer[C, R any] struct {
	port     Port[C, R]
	queue    chan *unit[C, R]
	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
}

// unit is one unit of work waiting to be written.
type unit[C, R any] struct {
	ctx     context.Context
	changes C
	done    chan result[R] // buffered: the writer never waits for the caller
}

type result[R any] struct {
	answer R
	err    error
}

// New starts the writers.
func New[C, R any](port Port[C, R]) *Committer[C, R] {
	return start(port, writers)
}

func start[C, R any](port Port[C, R], n int) *Committer[C, R] {
	c := &Committer[C, R]{port: port, queue: make(chan *unit[C, R]), stop: make(chan struct{})}
	for range n {
		c.wg.Add(1)
		go c.run()
	}
	return c
}

// Close stops the writers once they finished what they hold.
func (c *Committer[C, R]) Close() {
	c.stopOnce.Do(func() { close(c.stop) })
	c.wg.Wait()
}

// Write has ch written, alone or with others, and returns its answer. When
// ctx ends first the caller is told so; the write may still happen (as with
// any commit whose answer is lost), and the event log's dispatcher delivers
// what it queued.
func (c *Committer[C, R]) Write(ctx context.Context, ch C) (R, error) {
	var none R
	req := &unit[C, R]{ctx: ctx, changes: ch, done: make(chan result[R], 1)}
	select {
	case c.queue <- req:
	case <-ctx.Done():
		return none, errors.Join(servicelayer.ErrUnavailable, ctx.Err())
	case <-c.stop:
		return none, ErrClosed
	}
	select {
	case r := <-req.done:
		return r.answer, r.err
	case <-ctx.Done():
		return none, errors.Join(servicelayer.ErrUnavailable, ctx.Err())
	}
}

func (c *Committer[C, R]) run() {
	defer c.wg.Done()
	for {
		var first *unit[C, R]
		select {
		case first = <-c.queue:
		case <-c.stop:
			return
		}
		batch, later := c.gather(first)
		c.writeGroup(batch)
		for _, req := range later {
			c.writeGroup([]*unit[C, R]{req})
		}
	}
}

// gather takes the units of work already waiting, up to maxMerged, apart
// from those on a product the batch holds already: they come later.
func (c *Committer[C, R]) gather(first *unit[C, R]) (batch, later []*unit[C, R]) {
	batch = []*unit[C, R]{first}
	products := map[string]bool{}
	for _, sku := range c.port.Products(first.changes) {
		products[sku] = true
	}
	for len(batch) < maxMerged {
		var next *unit[C, R]
		select {
		case next = <-c.queue:
		default:
			return batch, later
		}
		skus := c.port.Products(next.changes)
		clash := false
		for _, sku := range skus {
			clash = clash || products[sku]
		}
		if clash {
			later = append(later, next)
			continue
		}
		for _, sku := range skus {
			products[sku] = true
		}
		batch = append(batch, next)
	}
	return batch, later
}

// writeGroup writes a batch in one step. Callers that left already are
// told so and left out. When the merged write is refused (one unit of work
// conflicts, repeats a message, completes a delivery done already), each is
// written alone and gets its own answer.
func (c *Committer[C, R]) writeGroup(batch []*unit[C, R]) {
	live, deadline := c.stillWaiting(batch)
	if len(live) == 0 {
		return
	}
	// Nobody's cancellation cuts short the others' write.
	ctx, cancel := context.WithDeadline(context.WithoutCancel(live[0].ctx), deadline)
	defer cancel()
	if len(live) == 1 {
		answer, err := c.port.Write(ctx, live[0].changes)
		live[0].done <- result[R]{answer: answer, err: err}
		return
	}
	all := make([]C, len(live))
	for i, req := range live {
		all[i] = req.changes
	}
	answer, err := c.port.Write(ctx, c.port.Merge(all))
	switch {
	case err == nil:
		for i, own := range c.port.Split(answer, all) {
			live[i].done <- result[R]{answer: own}
		}
	case errors.Is(err, servicelayer.ErrUnavailable):
		for _, req := range live {
			req.done <- result[R]{err: err}
		}
	default:
		for _, req := range live {
			answer, err := c.port.Write(ctx, req.changes)
			req.done <- result[R]{answer: answer, err: err}
		}
	}
}

// stillWaiting answers the callers of batch whose ctx ended, and returns
// the others with the deadline of their write: the latest of theirs, and
// at least abandonedWriteLimit from now.
func (c *Committer[C, R]) stillWaiting(batch []*unit[C, R]) (live []*unit[C, R], deadline time.Time) {
	live = batch[:0]
	deadline = time.Now().Add(abandonedWriteLimit)
	for _, req := range batch {
		if err := req.ctx.Err(); err != nil {
			req.done <- result[R]{err: errors.Join(servicelayer.ErrUnavailable, err)}
			continue
		}
		if d, ok := req.ctx.Deadline(); ok && d.After(deadline) {
			deadline = d
		}
		live = append(live, req)
	}
	return live, deadline
}
