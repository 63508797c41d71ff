package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"allocation/adapters/sqlstore/internal/groups"
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
// How the members take turns is internal/groups's; what they decide on
// (one session) and how it is written is here.

// maxGroup caps a group at the commands one write merges (maxMerged): past
// that a group's decisions hold the turn longer than its write takes.
const maxGroup = 64

// errRunAlone sends the members of a group whose write was refused back to
// run alone: it is a conflict, so Work.Do runs them again.
var errRunAlone = fmt.Errorf("the group's write was refused; each runs alone: %w", ErrConflict)

// productGroups are the groups of allocations waiting for a product.
type productGroups = groups.Groups[*groupState, *member]

// groupState is what a group's members decide on: one session, and whether
// a member failed after changing it (spoiled: the others run again alone).
type groupState struct {
	store   *Store
	sess    *session
	mu      sync.Mutex
	spoiled bool
}

// member is one allocation of a group: what it decided, and what came of it.
type member struct {
	ctx       context.Context
	inboxID   string
	savepoint savepoint // the shared session as it found it
	events    []LoggedEvent
	err       error
	queued    []servicelayer.Delivery
}

func newProductGroups(s *Store) *productGroups {
	return groups.New(groups.Config[*groupState, *member]{
		Turns: s.turns,
		Max:   maxGroup,
		Start: func(string) *groupState { return &groupState{store: s, sess: s.begin(nil)} },
		Write: (*groupState).write,
	})
}

// joinGroup puts w's allocation into the group waiting for sku and returns
// once it is its go: the group holds the turn for it.
func (w *Work) joinGroup(ctx context.Context, sku string) error {
	m := &member{ctx: ctx, inboxID: w.inboxID}
	gm, err := w.store.groups.Join(ctx, sku, m)
	if err != nil {
		return err
	}
	m.savepoint = gm.State().sess.savepoint()
	w.group, w.member, w.groupSKU = gm, m, sku
	w.held[sku] = true
	return nil
}

// finish records what member m decided, or undoes it when its handler
// failed, gives the next member its go, and waits for the group's write.
func (w *Work) finish(fnErr error) ([]servicelayer.Delivery, error) {
	gm, m := w.group, w.member
	st := gm.State()
	if fnErr == nil {
		m.events, fnErr = st.sess.logEvents(m.ctx, time.Now())
	}
	if fnErr != nil {
		// Unchanged, the product is as this member found it; changed, it
		// cannot be undone here, and the others run again alone.
		st.mu.Lock()
		st.spoiled = st.spoiled || st.sess.changedSince(m.savepoint)
		st.mu.Unlock()
		st.sess.rollback(m.savepoint)
		m.err = fnErr
	}
	gm.Decided()
	if fnErr != nil {
		return nil, fnErr
	}
	if err := gm.Written(m.ctx); err != nil {
		// The write may still happen; what it queues is left to the
		// dispatcher.
		return nil, errors.Join(servicelayer.ErrUnavailable, err)
	}
	return m.queued, m.err
}

// write writes what the members decided in one unit of work, and gives
// the first the deliveries of all, or sends them back to run alone.
func (st *groupState) write(decided []*member) {
	var live []*member
	for _, m := range decided {
		if m.err == nil {
			live = append(live, m)
		}
	}
	if len(live) == 0 {
		return
	}
	if st.spoiled {
		answer(live, nil, errRunAlone)
		return
	}
	ctx, cancel := sharedContext(live)
	defer cancel()
	c := st.sess.stateChanges(time.Now())
	var events []LoggedEvent
	for _, m := range live {
		events = append(events, m.events...)
		if m.inboxID != "" {
			c.InboxIDs = append(c.InboxIDs, m.inboxID)
		}
	}
	c.addEvents(st.store, events)
	if !c.changesState() && len(c.InboxIDs) == 0 {
		return // every member found its line allocated already
	}
	queued, err := st.store.commit(ctx, st.sess, c)
	switch {
	case err == nil || len(live) == 1 || errors.Is(err, servicelayer.ErrUnavailable):
		answer(live, queued, err)
	default:
		answer(live, nil, errRunAlone)
	}
}

// answer gives each member its outcome, and the first the deliveries of
// all, in the members' order, to make at once. The members read it after
// the write (Written).
func answer(live []*member, queued []servicelayer.Delivery, err error) {
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

// Coalesced says how many groups of allocations took a product's turn
// together, and how many allocations they held in all.
func (s *Store) Coalesced() (groups, members int64) { return s.groups.Formed() }

// WaitingInGroup is how many allocations wait in the open group of sku.
func (s *Store) WaitingInGroup(sku string) int { return s.groups.Waiting(sku) }
