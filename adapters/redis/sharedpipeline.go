package redis

import (
	"context"
	"fmt"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"allocation/servicelayer"
)

// Publications of concurrent requests share pipelines. Each request
// publishes its own event right after its commit (Publish); under load
// dozens do so at once, and each paid a round trip to Redis of its own (a
// write and a read system call here and in Redis) for one short script
// call. Now at most maxPipelines pipelines are in flight: a publication
// that comes meanwhile waits, and goes out in the next pipeline with every
// other that came meanwhile. Alone, a publication goes at once.
//
// Sharing changes no product's order: a request publishes while it holds
// its product's turn, so two publications of one product are never waiting
// together. Each publication keeps its own script calls (its own chain) and
// gets its own answer: one that fails does not fail the others.
//
// Rejected: a sender goroutine that every publication hands its event to.
// It adds a hand-off to each publication even when Redis is idle, and a
// goroutine to stop; here the caller sends, and a goroutine exists only
// while publications are waiting.
const (
	maxPipelines = 2
	// maxShared caps the publications of one pipeline, so that one
	// pipeline holds Redis for about as long as one full script call
	// (maxEventsPerCall).
	maxShared = maxEventsPerCall
	// sharedTimeout bounds a pipeline whose publications gave no deadline.
	sharedTimeout = 5 * time.Second
)

// pipelineShare is who sends now and who waits.
type pipelineShare struct {
	mu       sync.Mutex
	inFlight int
	waiting  []*publication
}

// publication is one Publish waiting for its answer.
type publication struct {
	ctx  context.Context
	env  servicelayer.Envelope
	done chan error // buffered: the sender never waits for the caller
}

// publishShared sends env in a pipeline shared with concurrent callers.
func (p *Publisher) publishShared(ctx context.Context, env servicelayer.Envelope) error {
	me := &publication{ctx: ctx, env: env, done: make(chan error, 1)}
	s := &p.share
	s.mu.Lock()
	if s.inFlight == maxPipelines {
		s.waiting = append(s.waiting, me)
		s.mu.Unlock()
	} else {
		s.inFlight++
		s.mu.Unlock()
		p.sendShared([]*publication{me})
		p.sendWaiting()
	}
	select {
	case err := <-me.done:
		return err
	case <-ctx.Done():
		// The publication may still go out; the delivery stays pending
		// and the dispatcher makes it again, dropped as a repeat then.
		return fmt.Errorf("publish %s: %w", env.MessageID, ctx.Err())
	}
}

// sendWaiting hands what waits to a goroutine, or gives the pipeline slot
// back when nothing waits: the caller who sent its own pipeline is answered
// at once.
func (p *Publisher) sendWaiting() {
	if batch := p.takeWaiting(); batch != nil {
		go func() {
			for ; batch != nil; batch = p.takeWaiting() {
				p.sendShared(batch)
			}
		}()
	}
}

// takeWaiting takes up to maxShared waiting publications, or gives the
// pipeline slot back and returns nil when none waits.
func (p *Publisher) takeWaiting() []*publication {
	s := &p.share
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.waiting) == 0 {
		s.inFlight--
		return nil
	}
	batch := s.waiting[:min(len(s.waiting), maxShared)]
	s.waiting = s.waiting[len(batch):]
	return batch
}

// sendShared publishes batch in one pipeline and answers each publication.
// One whose script Redis lost (NOSCRIPT) is published again on its own,
// which loads the script.
func (p *Publisher) sendShared(batch []*publication) {
	ctx, cancel := sharedContext(batch)
	defer cancel()
	pipe := p.client.Pipeline()
	sent := make([]*publication, 0, len(batch))
	cmds := make([][]*goredis.Cmd, 0, len(batch))
	for _, pub := range batch {
		calls, stale, err := p.plan([]servicelayer.Envelope{pub.env})
		if err != nil {
			pub.done <- err
			continue
		}
		for _, key := range stale {
			pipe.Del(ctx, key)
		}
		var own []*goredis.Cmd
		for _, c := range calls {
			own = append(own, publishMany.EvalSha(ctx, pipe, c.keys, c.args...))
		}
		sent, cmds = append(sent, pub), append(cmds, own)
	}
	_, _ = pipe.Exec(ctx) // each command keeps its own error
	for i, pub := range sent {
		pub.done <- p.answer(ctx, pub, cmds[i])
	}
}

// answer is the outcome of pub's script calls.
func (p *Publisher) answer(ctx context.Context, pub *publication, cmds []*goredis.Cmd) error {
	for _, cmd := range cmds {
		err := cmd.Err()
		if err == nil {
			continue
		}
		if goredis.HasErrorPrefix(err, "NOSCRIPT") {
			return p.PublishBatch(ctx, []servicelayer.Envelope{pub.env})
		}
		return fmt.Errorf("publish %s: %w", pub.env.MessageID, err)
	}
	return nil
}

// sharedContext is the context of a shared pipeline: no caller's
// cancellation cuts it short for the others, and it lasts until the latest
// deadline among them.
func sharedContext(batch []*publication) (context.Context, context.CancelFunc) {
	deadline := time.Time{}
	for _, pub := range batch {
		if d, ok := pub.ctx.Deadline(); ok && d.After(deadline) {
			deadline = d
		}
	}
	if deadline.IsZero() {
		deadline = time.Now().Add(sharedTimeout)
	}
	return context.WithDeadline(context.WithoutCancel(batch[0].ctx), deadline)
}
