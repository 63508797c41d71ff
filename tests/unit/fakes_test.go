package unit_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"allocation/adapters/memory"
	"allocation/servicelayer"
)

// uniqueName returns name with a random suffix, so that no two tests share a
// SKU or a reference even when they run in parallel against one store.
func uniqueName(name string) string {
	return name + "-" + rand.Text()[:8]
}

// errPublisherDown is what a failing fakePublisher answers.
var errPublisherDown = errors.New("publisher down")

// errUnpublishable is a publication refused every time.
var errUnpublishable = fmt.Errorf("cannot encode: %w", servicelayer.ErrPermanent)

// fakePublisher records every envelope it was asked to publish. It fails the
// first failures calls (all of them when failures < 0). Safe for concurrent use.
type fakePublisher struct {
	mu        sync.Mutex
	failWith  error // errPublisherDown unless set
	failures  int
	attempted []servicelayer.Envelope
	published []servicelayer.Envelope
}

func (p *fakePublisher) Publish(_ context.Context, env servicelayer.Envelope) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.attempted = append(p.attempted, env)
	if p.failures != 0 {
		if p.failures > 0 {
			p.failures--
		}
		return p.failure()
	}
	p.published = append(p.published, env)
	return nil
}

// PublishBatch fails as a whole, as one round trip to Redis does: a failure
// counts once, and nothing of the batch is published.
func (p *fakePublisher) PublishBatch(_ context.Context, envs []servicelayer.Envelope) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.attempted = append(p.attempted, envs...)
	if p.failures != 0 {
		if p.failures > 0 {
			p.failures--
		}
		return p.failure()
	}
	p.published = append(p.published, envs...)
	return nil
}

func (p *fakePublisher) failure() error {
	if p.failWith != nil {
		return p.failWith
	}
	return errPublisherDown
}

// refuseNext makes the next n calls (all, when n < 0) fail permanently.
func (p *fakePublisher) refuseNext(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.failures, p.failWith = n, errUnpublishable
}

// failNext makes the next n calls fail; n < 0 makes every call fail.
func (p *fakePublisher) failNext(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.failures = n
}

// calls returns every envelope Publish was called with, failed calls included.
func (p *fakePublisher) calls() []servicelayer.Envelope {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.attempted)
}

// sent returns what was published successfully, in order.
func (p *fakePublisher) sent() []servicelayer.Envelope {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.published)
}

// fakeNotifier records messages by destination. Safe for concurrent use.
type fakeNotifier struct {
	mu   sync.Mutex
	sent map[string][]string
}

func (n *fakeNotifier) Send(_ context.Context, destination, message string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.sent == nil {
		n.sent = map[string][]string{}
	}
	n.sent[destination] = append(n.sent[destination], message)
	return nil
}

// sentTo returns the messages sent to destination, in order.
func (n *fakeNotifier) sentTo(destination string) []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.sent[destination])
}

// destinations counts the destinations that received anything.
func (n *fakeNotifier) destinations() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.sent)
}

// logRecorder is a slog.Handler that keeps what was logged, so that tests can
// check that a failure is reported, and keeps test output quiet.
type logRecorder struct {
	mu      sync.Mutex
	records []slog.Record
}

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }

func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.records = append(r.records, rec.Clone())
	return nil
}

// WithAttrs and WithGroup keep the same recorder: the bus logs its attributes
// on each call, which is all these tests look at.
func (r *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *logRecorder) WithGroup(string) slog.Handler      { return r }

// warnings returns the value of attribute key of every record at level Warn or
// above.
func (r *logRecorder) warnings(key string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, rec := range r.records {
		if rec.Level < slog.LevelWarn {
			continue
		}
		rec.Attrs(func(a slog.Attr) bool {
			if a.Key == key {
				out = append(out, a.Value.String())
			}
			return true
		})
	}
	return out
}

type testApp struct {
	bus       *servicelayer.Bus
	store     *memory.Store
	publisher *fakePublisher
	notifier  *fakeNotifier
	logs      *logRecorder
}

// newTestApp wires the real bus and handlers to the in-memory store and to
// fakes that record what they were given.
func newTestApp() testApp {
	app := testApp{store: memory.NewStore(), publisher: &fakePublisher{}, notifier: &fakeNotifier{}, logs: &logRecorder{}}
	app.bus = servicelayer.NewBus(servicelayer.Dependencies{
		UoW:       app.store,
		Publisher: app.publisher,
		Notifier:  app.notifier,
		Log:       slog.New(app.logs),
		// The tests move the store's clock, not the bus's: a handler that
		// failed is not kept paused in real time.
		Retry: servicelayer.RetryPolicy{Initial: time.Nanosecond, Max: time.Nanosecond},
	})
	return app
}

// failingCommit is a unit of work whose commit fails after the handler has
// run: the memory store rolls back, so nothing the handler did may survive.
type failingCommit struct {
	*memory.Store
	err error
}

func (u failingCommit) Begin() servicelayer.Work {
	return failingWork{Work: u.Store.Begin(), err: u.err}
}

type failingWork struct {
	servicelayer.Work
	err error
}

func (w failingWork) Do(ctx context.Context, inboxID string, fn func(servicelayer.Tx) error) ([]servicelayer.Delivery, error) {
	return w.Work.Do(ctx, inboxID, func(tx servicelayer.Tx) error {
		if err := fn(tx); err != nil {
			return err
		}
		return w.err
	})
}

func (u failingCommit) Do(ctx context.Context, fn func(servicelayer.Tx) error) ([]servicelayer.Delivery, error) {
	return u.Store.Do(ctx, func(tx servicelayer.Tx) error {
		if err := fn(tx); err != nil {
			return err
		}
		return u.err
	})
}
