package sqlstore

import (
	"context"
	"errors"
	"sync"
	"time"

	"allocation/servicelayer"
)

// Group commit: how many writers run at once, how many units of work one
// write may carry, and how long a write may take when no caller waits for
// it any longer.
const (
	writers             = 4
	maxMerged           = 64
	abandonedWriteLimit = 10 * time.Second
)

// errClosed: the store was closed while a unit of work waited to be written.
var errClosed = errors.New("store closed")

// committer writes the changes of concurrent units of work together: while
// the writers are busy, the units of work that come meanwhile are merged
// into the next write. Under load many share one round trip and one commit;
// alone, a unit of work is written at once. Units of work on one product
// are never merged: the in-process lock keeps them apart anyway.
type committer struct {
	dialect  Dialect
	queue    chan *commit
	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
}

// commit is one unit of work waiting to be written.
type commit struct {
	ctx     context.Context
	changes *Changes
	done    chan commitResult // buffered: the writer never waits for the caller
}

type commitResult struct {
	queued []Queued
	err    error
}

func startCommitter(d Dialect) *committer {
	c := &committer{dialect: d, queue: make(chan *commit), stop: make(chan struct{})}
	for range writers {
		c.wg.Add(1)
		go c.run()
	}
	return c
}

// close stops the writers once they finished what they hold.
func (c *committer) close() {
	c.stopOnce.Do(func() { close(c.stop) })
	c.wg.Wait()
}

// write has ch written, alone or with others, and returns what the dialect
// queued for it. When ctx ends first the caller is told so; the write may
// still happen (as with any commit whose answer is lost), and the event
// log's dispatcher delivers what it queued.
func (c *committer) write(ctx context.Context, ch *Changes) ([]Queued, error) {
	req := &commit{ctx: ctx, changes: ch, done: make(chan commitResult, 1)}
	select {
	case c.queue <- req:
	case <-ctx.Done():
		return nil, errors.Join(servicelayer.ErrUnavailable, ctx.Err())
	case <-c.stop:
		return nil, errClosed
	}
	select {
	case r := <-req.done:
		return r.queued, r.err
	case <-ctx.Done():
		return nil, errors.Join(servicelayer.ErrUnavailable, ctx.Err())
	}
}

func (c *committer) run() {
	defer c.wg.Done()
	for {
		var first *commit
		select {
		case first = <-c.queue:
		case <-c.stop:
			return
		}
		batch, later := c.gather(first)
		c.writeGroup(batch)
		for _, req := range later {
			c.writeGroup([]*commit{req})
		}
	}
}

// gather takes the units of work already waiting, up to maxMerged, apart
// from those on a product the batch holds already: they come later.
func (c *committer) gather(first *commit) (batch, later []*commit) {
	batch = []*commit{first}
	products := map[string]bool{}
	for _, sku := range first.changes.products() {
		products[sku] = true
	}
	for len(batch) < maxMerged {
		var next *commit
		select {
		case next = <-c.queue:
		default:
			return batch, later
		}
		skus := next.changes.products()
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

// writeGroup writes a batch in one step. When the merged write is refused (one
// unit of work conflicts, repeats a message, completes a delivery done
// already), each is written alone and gets its own answer.
func (c *committer) writeGroup(batch []*commit) {
	live := batch[:0]
	deadline := time.Now().Add(abandonedWriteLimit)
	for _, req := range batch {
		if err := req.ctx.Err(); err != nil {
			req.done <- commitResult{err: errors.Join(servicelayer.ErrUnavailable, err)}
			continue
		}
		if d, ok := req.ctx.Deadline(); ok && d.After(deadline) {
			deadline = d
		}
		live = append(live, req)
	}
	if len(live) == 0 {
		return
	}
	// Nobody's cancellation cuts short the others' write.
	ctx, cancel := context.WithDeadline(context.WithoutCancel(live[0].ctx), deadline)
	defer cancel()
	if len(live) == 1 {
		queued, err := c.dialect.Write(ctx, live[0].changes)
		live[0].done <- commitResult{queued: queued, err: err}
		return
	}
	all := make([]*Changes, len(live))
	for i, req := range live {
		all[i] = req.changes
	}
	queued, err := c.dialect.Write(ctx, merge(all))
	switch {
	case err == nil:
		byMessage := map[string][]Queued{}
		for _, q := range queued {
			byMessage[q.MessageID] = append(byMessage[q.MessageID], q)
		}
		for _, req := range live {
			var own []Queued
			for _, ev := range req.changes.Events {
				own = append(own, byMessage[ev.Envelope.MessageID]...)
			}
			req.done <- commitResult{queued: own}
		}
	case errors.Is(err, servicelayer.ErrUnavailable):
		for _, req := range live {
			req.done <- commitResult{err: err}
		}
	default:
		for _, req := range live {
			queued, err := c.dialect.Write(ctx, req.changes)
			req.done <- commitResult{queued: queued, err: err}
		}
	}
}
