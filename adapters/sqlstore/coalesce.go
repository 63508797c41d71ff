package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"allocation/servicelayer"
)

// Allocations on one product that wait for its turn are decided together.
//
// In a flash sale every request wants the same product. One at a time, each
// paid a commit, its wait for the disk and its publication while the others
// waited: a hot product went no faster than one commit after another. Now
// the allocations that wait for a busy product form a group, and when the
// turn comes the group takes it as one. Its members decide one after
// another, in the order they came, on one copy of the product in memory,
// each seeing what the ones before it did, as they would have one at a
// time; then the group is written in one write (one statement and one
// commit), each member with its own events and its own answer. The first
// member delivers the events of all, in the same order, while the group
// still holds the turn: a publication of the whole group is one call
// (servicelayer.Work.DeliverRun), not one round trip per member after the
// one before it.
//
// A member whose handler fails without changing anything fails alone. When
// one fails after changing the product, or the write is refused (a
// member's inbound message was processed already, another process moved the
// product on), every other member runs again alone, as a refused group
// commit does: one member's fault never becomes another's.
//
// Only allocations group (GetForLine as the first product of a command's
// unit of work): they need nothing but the product's totals and their own
// line. A batch's change of quantity may need lines no other member loaded,
// and a delivery may complete a delivery; they take the turn alone.
//
// Rejected: the one waiting first runs the others' handlers. A handler is a
// closure of its own caller, running in its caller's goroutine with its
// caller's context and spans; here each member runs its own, and they only
// take turns on the shared session.

// maxGroup caps a group at the commands one write merges (maxMerged): past
// that a group's decisions hold the turn longer than its write takes.
const maxGroup = 64

// errRunAlone sends the members of a group whose write was refused back to
// run alone: it is a conflict, so Work.Do runs them again.
var errRunAlone = fmt.Errorf("the group's write was refused; each runs alone: %w", ErrConflict)

// groups are the groups of allocations waiting for a product's turn.
type groups struct {
	mu sync.Mutex
	// open is, for each product, the group that takes its turn next and
	// still takes members.
	open map[string]*group
	// formed and members count the groups that took a turn and their
	// members, for metrics and tests.
	formed, members atomic.Int64
}

// group is allocations on one product that take its turn together.
type group struct {
	store *Store
	sku   string
	mu    sync.Mutex
	// members in the order they came; next is the one deciding now.
	members []*member
	next    int
	closed  bool // full, or holding the turn: it takes no one more
	// sess is the session every member decides in.
	sess       *session
	release    func() // gives the product's turn back
	endedCount int    // members whose piece of work ended
	// spoiled: a member failed after changing the product, so that the
	// others run again alone.
	spoiled bool
	written chan struct{} // closed once the write is over
}

type memberState int

const (
	waiting  memberState = iota // for the turn, then for its go
	deciding                    // its handler runs
	decided                     // its handler returned
	left                        // gave up waiting: skipped
)

// member is one allocation of a group.
type member struct {
	ctx     context.Context
	inboxID string
	state   memberState
	start   chan struct{} // closed when it is this member's go
	// savepoint is the shared session as this member found it.
	savepoint savepoint
	// What the member decided, and what came of it.
	events []LoggedEvent
	err    error
	queued []servicelayer.Delivery
	ended  bool // its piece of work is over
}

// joinGroup puts w's command into the open group of sku, opening one when
// there is none (or it is full): the group takes the turn when it frees.
// It returns once it is the member's go, or ctx ended.
func (w *Work) joinGroup(ctx context.Context, sku string) error {
	g, m := w.store.groups.join(w.store, sku, ctx, w.inboxID)
	select {
	case <-m.start:
	case <-ctx.Done():
		if g.leave(m) {
			w.group, w.member = g, m // its End still counts
			return ctx.Err()
		}
		<-m.start // its go came meanwhile
	}
	w.group, w.member = g, m
	w.held[sku] = true // the group holds the turn
	return nil
}

func (gs *groups) join(s *Store, sku string, ctx context.Context, inboxID string) (*group, *member) {
	m := &member{ctx: ctx, inboxID: inboxID, start: make(chan struct{})}
	gs.mu.Lock()
	defer gs.mu.Unlock()
	g := gs.open[sku]
	if g == nil || g.isClosed() {
		g = &group{store: s, sku: sku, written: make(chan struct{})}
		gs.open[sku] = g
		go g.takeTurn()
	}
	g.mu.Lock()
	g.members = append(g.members, m)
	if len(g.members) == maxGroup {
		g.closed = true
	}
	g.mu.Unlock()
	return g, m
}

func (g *group) isClosed() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.closed
}

// takeTurn waits for the product's turn on behalf of the members, then
// gives the first its go. It waits whatever the members' contexts: one that
// gives up leaves the group, and a group every member left passes the turn
// on at once.
func (g *group) takeTurn() {
	release, _ := g.store.turns.Take(context.Background(), g.sku)
	gs := &g.store.groups
	gs.mu.Lock()
	if gs.open[g.sku] == g {
		delete(gs.open, g.sku)
	}
	gs.mu.Unlock()
	g.mu.Lock()
	g.closed, g.release = true, release
	g.sess = g.store.begin(nil)
	gs.formed.Add(1)
	gs.members.Add(int64(len(g.members)))
	if g.endedCount == len(g.members) {
		release()
	}
	g.mu.Unlock()
	g.advance()
}

// leave takes m out of the group when its go has not come yet, and reports
// whether it did.
func (g *group) leave(m *member) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if m.state != waiting {
		return false
	}
	m.state = left
	return true
}

// advance gives the next member still there its go, or writes the group
// when every member decided.
func (g *group) advance() {
	g.mu.Lock()
	for g.next < len(g.members) && g.members[g.next].state == left {
		g.next++
	}
	if g.next < len(g.members) {
		m := g.members[g.next]
		m.state = deciding
		m.savepoint = g.sess.savepoint()
		close(m.start)
		g.mu.Unlock()
		return
	}
	g.mu.Unlock()
	g.write()
}

// finish records what member m decided, or undoes it when its handler
// failed, gives the next member its go, and waits for the group's write.
func (g *group) finish(m *member, fnErr error) ([]servicelayer.Delivery, error) {
	if fnErr == nil {
		m.events, fnErr = g.sess.logEvents(m.ctx, time.Now())
	}
	g.mu.Lock()
	if fnErr != nil {
		// Unchanged, the product is as this member found it; changed, it
		// cannot be undone here, and the others run again alone.
		g.spoiled = g.spoiled || g.sess.changedSince(m.savepoint)
		g.sess.rollback(m.savepoint)
		m.err = fnErr
	}
	m.state = decided
	g.next++
	g.mu.Unlock()
	g.advance()
	if fnErr != nil {
		return nil, fnErr
	}
	select {
	case <-g.written:
		return m.queued, m.err
	case <-m.ctx.Done():
		// The write may still happen; what it queues is left to the
		// dispatcher.
		return nil, errors.Join(servicelayer.ErrUnavailable, m.ctx.Err())
	}
}

// write writes what the members decided in one unit of work and gives each
// its own deliveries, or sends them back to run alone.
func (g *group) write() {
	defer close(g.written)
	var live []*member
	for _, m := range g.members {
		if m.state == decided && m.err == nil {
			live = append(live, m)
		}
	}
	if len(live) == 0 {
		return
	}
	if g.spoiled {
		g.answer(live, nil, errRunAlone)
		return
	}
	ctx, cancel := sharedContext(live)
	defer cancel()
	c := g.sess.stateChanges(time.Now())
	var events []LoggedEvent
	for _, m := range live {
		events = append(events, m.events...)
		if m.inboxID != "" {
			c.InboxIDs = append(c.InboxIDs, m.inboxID)
		}
	}
	c.addEvents(g.store, events)
	if !c.changesState() && len(c.InboxIDs) == 0 {
		return // every member found its line allocated already
	}
	queued, err := g.store.commit(ctx, g.sess, c)
	switch {
	case err == nil || len(live) == 1 || errors.Is(err, servicelayer.ErrUnavailable):
		g.answer(live, queued, err)
	default:
		g.answer(live, nil, errRunAlone)
	}
}

// answer gives each member its outcome, and the first the deliveries of
// all, in the members' order, to make at once.
func (g *group) answer(live []*member, queued []servicelayer.Delivery, err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, m := range live {
		m.err = err
	}
	live[0].queued = queued
}

// sharedContext is the context of the group's write: no member's
// cancellation cuts it short for the others, and it lasts until the latest
// of their deadlines.
func sharedContext(live []*member) (context.Context, context.CancelFunc) {
	var deadline time.Time
	for _, m := range live {
		if d, ok := m.ctx.Deadline(); ok && d.After(deadline) {
			deadline = d
		}
	}
	if deadline.IsZero() {
		return context.WithCancel(context.WithoutCancel(live[0].ctx))
	}
	return context.WithDeadline(context.WithoutCancel(live[0].ctx), deadline)
}

// ended counts m's piece of work over; the turn passes on once every
// member's is.
func (g *group) ended(m *member) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if m.ended {
		return
	}
	m.ended = true
	g.endedCount++
	if g.endedCount == len(g.members) && g.release != nil {
		g.release()
	}
}

// Coalesced says how many groups of allocations took a product's turn
// together, and how many allocations they held in all.
func (s *Store) Coalesced() (groups, members int64) {
	return s.groups.formed.Load(), s.groups.members.Load()
}

// WaitingInGroup is how many allocations wait in the open group of sku.
func (s *Store) WaitingInGroup(sku string) int {
	s.groups.mu.Lock()
	g := s.groups.open[sku]
	s.groups.mu.Unlock()
	if g == nil {
		return 0
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.members)
}
