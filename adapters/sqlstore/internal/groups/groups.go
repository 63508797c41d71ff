// Package groups gathers the callers that wait for one key's turn into
// groups that take the turn as one. The store uses it for allocations on
// one product: in a flash sale every request wants the same product, and
// one at a time each paid a commit while the others waited.
//
// A caller that finds the key's turn busy joins the key's open group (Join).
// When the turn comes, the group takes it; its members get their go one
// after another, in the order they came (Join returns), each does its part
// on the group's shared state (State) and says so (Decided); once every
// member decided or left, the last one runs the group's Write with every
// member's data, in order, and the others wait for it (Written). The turn
// passes on once every member ended (End).
//
// Rejected: the first caller runs the others' work. Each caller's work is a
// closure of its own, with its own context and spans, in its own
// goroutine; here each runs its own, and they only take turns.
package groups

import (
	"context"
	"sync"
	"sync/atomic"
)

// Turns are the per-key turns a group takes (the store's product turns).
type Turns interface {
	Take(ctx context.Context, key string) (release func(), err error)
}

// Config says how groups take their turn and what they do with it.
type Config[S, M any] struct {
	Turns Turns
	// Max is the most members a group takes; later callers open the next.
	Max int
	// Start makes a group's shared state when it gets its turn, before
	// its first member's go.
	Start func(key string) S
	// Write runs once every member decided or left, with the shared state
	// and the data of the members that decided, in the order they came.
	Write func(state S, decided []M)
}

// Groups are the groups waiting for, or holding, each key's turn.
type Groups[S, M any] struct {
	cfg  Config[S, M]
	mu   sync.Mutex
	open map[string]*group[S, M] // by key: the next group, still taking members
	// formed and members count the groups that took a turn and their
	// members.
	formed, members atomic.Int64
}

// New returns groups configured by cfg.
func New[S, M any](cfg Config[S, M]) *Groups[S, M] {
	return &Groups[S, M]{cfg: cfg, open: map[string]*group[S, M]{}}
}

type state int

const (
	waiting  state = iota // for the turn, then for its go
	deciding              // its go came
	decided               // it said Decided
	left                  // it gave up waiting
)

type group[S, M any] struct {
	gs      *Groups[S, M]
	key     string
	mu      sync.Mutex
	members []*Member[S, M]
	next    int  // the member whose go it is
	closed  bool // full, or holding the turn: it takes no one more
	state   S
	release func()
	ended   int
	written chan struct{} // closed once Write returned
}

// Member is one caller in a group.
type Member[S, M any] struct {
	g     *group[S, M]
	data  M
	state state
	start chan struct{} // closed at its go
	ended bool
}

// Join puts a caller with data into the open group of key (opening one
// when there is none, or it is full) and returns once it is the caller's
// go. When ctx ends first the caller leaves the group and gets ctx's
// error; nothing more is asked of it.
func (gs *Groups[S, M]) Join(ctx context.Context, key string, data M) (*Member[S, M], error) {
	m := gs.join(key, data)
	select {
	case <-m.start:
		return m, nil
	case <-ctx.Done():
		if m.g.leave(m) {
			return nil, ctx.Err()
		}
		<-m.start // its go came meanwhile
		return m, nil
	}
}

func (gs *Groups[S, M]) join(key string, data M) *Member[S, M] {
	gs.mu.Lock()
	defer gs.mu.Unlock()
	g := gs.open[key]
	if g == nil || g.isClosed() {
		g = &group[S, M]{gs: gs, key: key, written: make(chan struct{})}
		gs.open[key] = g
		go g.takeTurn()
	}
	m := &Member[S, M]{g: g, data: data, start: make(chan struct{})}
	g.mu.Lock()
	g.members = append(g.members, m)
	g.closed = len(g.members) == gs.cfg.Max
	g.mu.Unlock()
	return m
}

// Waiting is how many callers are in the open group of key.
func (gs *Groups[S, M]) Waiting(key string) int {
	gs.mu.Lock()
	g := gs.open[key]
	gs.mu.Unlock()
	if g == nil {
		return 0
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.members)
}

// Formed says how many groups took a turn, and how many members they had.
func (gs *Groups[S, M]) Formed() (groups, members int64) {
	return gs.formed.Load(), gs.members.Load()
}

func (g *group[S, M]) isClosed() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.closed
}

// takeTurn waits for the key's turn on behalf of the members, whatever
// their contexts (one that gives up leaves), then gives the first its go.
func (g *group[S, M]) takeTurn() {
	release, _ := g.gs.cfg.Turns.Take(context.Background(), g.key)
	g.gs.mu.Lock()
	if g.gs.open[g.key] == g {
		delete(g.gs.open, g.key)
	}
	g.gs.mu.Unlock()
	st := g.gs.cfg.Start(g.key)
	g.mu.Lock()
	g.closed, g.release, g.state = true, release, st
	g.gs.formed.Add(1)
	g.gs.members.Add(int64(len(g.members)))
	if g.ended == len(g.members) {
		release() // every member left while it waited
	}
	g.mu.Unlock()
	g.advance()
}

// leave takes m out when its go has not come yet, and reports whether it
// did; a member that left counts as ended.
func (g *group[S, M]) leave(m *Member[S, M]) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if m.state != waiting {
		return false
	}
	m.state = left
	g.endLocked(m)
	return true
}

// advance gives the next member still there its go, or runs Write when
// every member decided or left.
func (g *group[S, M]) advance() {
	g.mu.Lock()
	for g.next < len(g.members) && g.members[g.next].state == left {
		g.next++
	}
	if g.next < len(g.members) {
		m := g.members[g.next]
		m.state = deciding
		close(m.start)
		g.mu.Unlock()
		return
	}
	var decidedData []M
	for _, m := range g.members {
		if m.state == decided {
			decidedData = append(decidedData, m.data)
		}
	}
	g.mu.Unlock()
	defer close(g.written)
	if len(decidedData) > 0 {
		g.gs.cfg.Write(g.state, decidedData)
	}
}

// State is the group's shared state; a member uses it between its go and
// Decided, when no other member does.
func (m *Member[S, M]) State() S { return m.g.state }

// Decided says m is done with the shared state and gives the next member
// its go; the last runs the group's Write.
func (m *Member[S, M]) Decided() {
	g := m.g
	g.mu.Lock()
	m.state = decided
	g.next++
	g.mu.Unlock()
	g.advance()
}

// Written waits until the group's Write returned, or ctx ended.
func (m *Member[S, M]) Written(ctx context.Context) error {
	select {
	case <-m.g.written:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// End says m is over; the group's turn passes on once every member is.
// Ending twice does nothing more.
func (m *Member[S, M]) End() {
	m.g.mu.Lock()
	defer m.g.mu.Unlock()
	m.g.endLocked(m)
}

func (g *group[S, M]) endLocked(m *Member[S, M]) {
	if m.ended {
		return
	}
	m.ended = true
	g.ended++
	if g.ended == len(g.members) && g.release != nil {
		g.release()
	}
}
