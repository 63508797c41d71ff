package servicelayer

import (
	"context"
	"sync"
)

// Hold keeps what a store takes for one piece of work (a command, or a
// delivery, with every event the bus delivers right after it) until the bus
// lets go. A store holds a product's in-process lock this way: the next
// command on the product waits until the events of this one are delivered,
// so they go out in order without asking the database whose turn it is.
type Hold struct {
	mu       sync.Mutex
	keys     map[string]bool
	releases []func()
}

type holdKey struct{}

// WithHold starts a hold; release lets go of everything kept in it, last
// taken first.
func WithHold(ctx context.Context) (context.Context, func()) {
	h := &Hold{keys: map[string]bool{}}
	return context.WithValue(ctx, holdKey{}, h), h.release
}

// HoldOf returns the hold ctx carries, or nil.
func HoldOf(ctx context.Context) *Hold {
	h, _ := ctx.Value(holdKey{}).(*Hold)
	return h
}

// Has reports whether key is kept already.
func (h *Hold) Has(key string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.keys[key]
}

// Empty reports whether nothing is kept yet.
func (h *Hold) Empty() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.keys) == 0
}

// Keep records key as taken; release runs when the hold ends.
func (h *Hold) Keep(key string, release func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.keys[key] = true
	h.releases = append(h.releases, release)
}

func (h *Hold) release() {
	h.mu.Lock()
	releases := h.releases
	h.releases, h.keys = nil, map[string]bool{}
	h.mu.Unlock()
	for i := len(releases) - 1; i >= 0; i-- {
		releases[i]()
	}
}
