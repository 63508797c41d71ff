package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cenkalti/backoff/v4"

	"allocation/adapters/sqlstore/internal/groups"
	"allocation/servicelayer"
)

// Work is one piece of work (servicelayer.Work): the units of work of a
// command or a delivery and of the deliveries made right after it. It keeps
// the in-process lock of every product it touched until End, so that the
// next command on a product waits until this work's events went out.
type Work struct {
	store *Store
	// held are the products whose locks the work keeps; releases lets go
	// of them, last taken first.
	held     map[string]bool
	releases []func()
	// While a command decides (Do), inboxID is its inbound message, and an
	// allocation that finds its product busy joins the group waiting for
	// it (coalesce.go) unless it must run alone (after its group's write
	// was refused). group and member are that group and its place there.
	deciding bool
	inboxID  string
	alone    bool
	group    *groups.Member[*groupState, *member]
	member   *member
	groupSKU string
}

// Begin implements servicelayer.UnitOfWork.
func (s *Store) Begin() servicelayer.Work {
	return &Work{store: s, held: map[string]bool{}}
}

// End implements servicelayer.Work: it releases the product locks, and
// its share of its group's.
func (w *Work) End() {
	for i := len(w.releases) - 1; i >= 0; i-- {
		w.releases[i]()
	}
	w.releases, w.held = nil, map[string]bool{}
	w.leaveGroup()
}

// leaveGroup counts the work's part in its group over.
func (w *Work) leaveGroup() {
	if w.group != nil {
		w.group.End()
		delete(w.held, w.groupSKU)
		w.group, w.member = nil, nil
	}
}

// lockProduct takes the product's turn for the rest of the piece of work.
// Only the first turn of a piece of work is waited for; while holding one,
// another is only taken when free, so two pieces of work can never wait for
// each other. An allocation (joinGroup) that finds its product busy joins the
// group waiting for it instead, and reports so.
func (w *Work) lockProduct(ctx context.Context, sku string, joinGroup bool) (joined bool, err error) {
	if w.held[sku] {
		return false, nil
	}
	release, free := w.store.turns.TryTake(sku)
	switch {
	case free:
	case len(w.held) > 0:
		// Busy: the version check keeps us apart. A ctx that ended
		// meanwhile still ends the work.
		return false, ctx.Err()
	case joinGroup && w.deciding && !w.alone:
		return true, w.joinGroup(ctx, sku)
	default:
		if release, err = w.store.turns.Take(ctx, sku); err != nil {
			return false, err
		}
	}
	w.held[sku] = true
	w.releases = append(w.releases, release)
	return false, nil
}

// Do runs fn as a piece of work of its own, with no inbound message: for
// tools and tests.
func (s *Store) Do(ctx context.Context, fn func(tx servicelayer.Tx) error) ([]servicelayer.Delivery, error) {
	w := s.Begin()
	defer w.End()
	return w.Do(ctx, "", fn)
}

// Deliver makes one delivery as a piece of work of its own: for tools and
// tests.
func (s *Store) Deliver(ctx context.Context, d servicelayer.Delivery, fn func(tx servicelayer.Tx) error) ([]servicelayer.Delivery, error) {
	w := s.Begin()
	defer w.End()
	return w.Deliver(ctx, d, fn)
}

// Do implements servicelayer.Work. When the write finds that a product moved
// on since it was read (a writer in another process), fn runs again from
// scratch with backoff, until ctx ends.
func (w *Work) Do(ctx context.Context, inboxID string, fn func(tx servicelayer.Tx) error) ([]servicelayer.Delivery, error) {
	s := w.store
	return s.retrying(ctx, func() ([]servicelayer.Delivery, error) {
		w.deciding, w.inboxID = true, inboxID
		sess := s.begin(w)
		err := fn(sess)
		w.deciding = false
		if sess.shared != nil {
			return w.finishInGroup(err)
		}
		if err != nil {
			return nil, err
		}
		c, err := sess.changes(ctx, time.Now())
		if err != nil {
			return nil, err
		}
		if inboxID != "" {
			c.InboxIDs = []string{inboxID}
		}
		if !c.changesState() && inboxID == "" {
			return nil, nil
		}
		return s.commit(ctx, sess, c)
	})
}

// finishInGroup hands what the allocation decided in its group to the
// group's write and returns its own part of the outcome. One that failed
// or was sent back leaves the group at once, so that the group's turn is
// not held by an attempt that runs again alone.
func (w *Work) finishInGroup(fnErr error) ([]servicelayer.Delivery, error) {
	queued, err := w.finish(fnErr)
	if err != nil {
		w.alone = w.alone || errors.Is(err, errRunAlone)
		w.leaveGroup()
	}
	return queued, err
}

// Deliver implements servicelayer.Work. A delivery in turn was just queued
// by this process, which holds the product's lock: it is made at once. Any
// other is first claimed in the database, which refuses it unless it is due
// and first in line for its product and handler.
func (w *Work) Deliver(ctx context.Context, d servicelayer.Delivery, fn func(tx servicelayer.Tx) error) ([]servicelayer.Delivery, error) {
	s := w.store
	attempts := 0
	if !d.FirstInLine {
		var err error
		if attempts, err = s.claim(ctx, d); err != nil {
			return nil, err
		}
	}
	key := DeliveryKey{EventID: d.LogID, Handler: d.Handler}
	queued, err := s.retrying(ctx, func() ([]servicelayer.Delivery, error) {
		sess := s.begin(w)
		if err := fn(sess); err != nil {
			return nil, &handlerError{err}
		}
		c, err := sess.changes(ctx, time.Now())
		if err != nil {
			return nil, err
		}
		if !c.changesState() {
			// Nothing stored changed: the mark can come a moment later.
			s.marks.Add(d.Event.ProductSKU(), key)
			return nil, nil
		}
		c.Completed = []DeliveryKey{key}
		return s.commit(ctx, sess, c)
	})
	var failed *handlerError
	if errors.As(err, &failed) {
		if recErr := s.recordFailure(ctx, d, attempts+1, failed.err); recErr != nil {
			return nil, errors.Join(failed.err, recErr)
		}
		return nil, failed.err
	}
	return queued, err
}

// DeliverRun implements servicelayer.Work: the run was queued first in line
// by this process, which holds its product's turn, so it is made at once.
func (w *Work) DeliverRun(ctx context.Context, run []servicelayer.Delivery, send func(ctx context.Context) error) error {
	if err := send(ctx); err != nil {
		if recErr := w.store.recordFailure(ctx, run[0], 1, err); recErr != nil {
			return errors.Join(err, recErr)
		}
		return err
	}
	for _, d := range run {
		w.store.marks.Add(d.Event.ProductSKU(), DeliveryKey{EventID: d.LogID, Handler: d.Handler})
	}
	return nil
}

// commit writes c, keeps the cache in step, and turns what the dialect
// queued into deliveries.
func (s *Store) commit(ctx context.Context, sess *session, c *Changes) ([]servicelayer.Delivery, error) {
	queued, err := s.writes.Write(ctx, c)
	if err != nil {
		sess.forget()
		return nil, err
	}
	sess.remember()
	byID := make(map[string]servicelayer.Envelope, len(c.Events))
	for _, ev := range c.Events {
		byID[ev.Envelope.MessageID] = ev.Envelope
	}
	out := make([]servicelayer.Delivery, 0, len(queued))
	for _, q := range queued {
		env := byID[q.MessageID]
		env.LogID = q.LogID
		out = append(out, servicelayer.Delivery{Envelope: env, Handler: q.Handler, FirstInLine: q.FirstInLine})
	}
	return out, nil
}

// handlerError is a handler's own failure, as opposed to the bookkeeping's.
type handlerError struct{ err error }

func (e *handlerError) Error() string { return e.err.Error() }
func (e *handlerError) Unwrap() error { return e.err }

func (s *Store) retrying(ctx context.Context, attempt func() ([]servicelayer.Delivery, error)) ([]servicelayer.Delivery, error) {
	var out []servicelayer.Delivery
	tries := 0
	err := backoff.Retry(func() error {
		tries++
		var err error
		out, err = attempt()
		if err != nil && !errors.Is(err, ErrConflict) {
			return backoff.Permanent(err)
		}
		if err != nil {
			s.log.DebugContext(ctx, "retrying unit of work after a conflict", "attempt", tries, "error", err)
		}
		return err
	}, backoff.WithContext(s.retry(), ctx))
	return out, err
}

// claim takes d for this process for claimLease and returns how often it was
// tried before, or ErrNotDelivered when it is done, dead, not due, taken by
// another dispatcher or waiting for an earlier event of its product.
func (s *Store) claim(ctx context.Context, d servicelayer.Delivery) (int, error) {
	if len(s.marks.Of(d.Event.ProductSKU())) > 0 {
		// What this process delivered of the product must be marked done
		// first, or the claim finds it still first in line.
		if err := s.marks.Flush(ctx); err != nil {
			return 0, err
		}
	}
	st, err := s.stmts.Get(ctx, s.queries.claim)
	if err != nil {
		return 0, err
	}
	now := time.Now().UTC()
	until := now.Add(s.claimLease)
	rows, err := st.QueryContext(ctx, until, until, now, d.LogID, d.Handler, now)
	if err != nil {
		return 0, s.dialect.Classify(fmt.Errorf("claim delivery %d/%s: %w", d.LogID, d.Handler, err))
	}
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return 0, s.dialect.Classify(fmt.Errorf("claim delivery %d/%s: %w", d.LogID, d.Handler, err))
		}
		return 0, servicelayer.ErrNotDelivered
	}
	var attempts int
	if err := rows.Scan(&attempts); err != nil {
		return 0, fmt.Errorf("claim delivery %d/%s: %w", d.LogID, d.Handler, err)
	}
	return attempts, rows.Close()
}

// recordFailure notes a failed attempt and when to try again, or parks the
// delivery as dead after its last attempt when the failure is permanent, and
// wakes the dispatchers.
func (s *Store) recordFailure(ctx context.Context, d servicelayer.Delivery, attempts int, cause error) error {
	permanent := errors.Is(cause, servicelayer.ErrPermanent)
	status := "pending"
	if s.policy.Parks(attempts, permanent) {
		status = "dead"
	}
	now := time.Now().UTC()
	// A transient failure is the connection's, not the delivery's: each
	// process backs off on its own (the bus pauses the handler) and tries
	// again the moment its dependency is back, so the delivery stays due.
	next := now
	if permanent {
		next = now.Add(s.policy.Delay(attempts))
	}
	// The failure is recorded even when the request that hit it is gone.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if _, err := s.db.ExecContext(ctx, s.queries.recordFailure,
		attempts, status, cause.Error(), now, next, d.LogID, d.Handler); err != nil {
		return s.dialect.Classify(fmt.Errorf("record failure of delivery %d/%s: %w", d.LogID, d.Handler, err))
	}
	if status == "dead" {
		s.log.ErrorContext(ctx, "event parked as dead", "event_id", d.LogID, "handler", d.Handler,
			"message_id", d.MessageID, "attempts", attempts, "error", cause)
	}
	return s.dialect.Notify(ctx)
}
