package unit_test

import (
	"context"
	"errors"
	"sync"

	"allocation/adapters/memory"
	"allocation/servicelayer"
)

// fakePublisher records what was published; fail makes its first calls fail.
type fakePublisher struct {
	mu        sync.Mutex
	published []servicelayer.Envelope
	attempts  int
	fail      int
}

func (p *fakePublisher) Publish(_ context.Context, env servicelayer.Envelope) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.attempts++
	if p.fail > 0 {
		p.fail--
		return errors.New("publisher down")
	}
	p.published = append(p.published, env)
	return nil
}

func (p *fakePublisher) sent() []servicelayer.Envelope {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]servicelayer.Envelope(nil), p.published...)
}

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

type testApp struct {
	bus       *servicelayer.Bus
	store     *memory.Store
	publisher *fakePublisher
	notifier  *fakeNotifier
}

// newTestApp wires the real bus and handlers to in-memory fakes.
func newTestApp() testApp {
	app := testApp{store: memory.NewStore(), publisher: &fakePublisher{}, notifier: &fakeNotifier{}}
	app.bus = servicelayer.NewBus(servicelayer.Dependencies{UoW: app.store, Publisher: app.publisher, Notifier: app.notifier})
	return app
}
