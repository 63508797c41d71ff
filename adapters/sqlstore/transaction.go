package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jmoiron/sqlx"

	"allocation/servicelayer"
)

// WriteInTransaction writes c statement by statement in one transaction on
// db, with ? placeholders rebound to bind. It is Dialect.Write for a database where
// a statement costs no round trip (an embedded one); it returns the
// deliveries queued and whether any must wake the dispatchers.
//
// Its statements are kept prepared in stmts (on db): a unit of work runs a
// dozen, and on an embedded database parsing one costs about as much as
// running it (a tenth of the embedded mode's CPU went to it). A statement
// is prepared after the first transaction that ran it, not within: a pool
// of one connection (SQLite's) has none to spare while the transaction
// holds it.
func WriteInTransaction(ctx context.Context, db *sqlx.DB, stmts *Statements, bind int, c *Changes) (queued []Queued, wake bool, err error) {
	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		return nil, false, fmt.Errorf("begin transaction: %w", err)
	}
	w := &writer{tx: tx, stmts: stmts, bind: bind, ctx: ctx}
	defer func() {
		if err != nil {
			_ = tx.Rollback() // the error that matters is the one that made us roll back
		}
		w.prepareMissed()
	}()
	// The checks first: each refuses the whole write.
	for _, check := range []func(*writer, *Changes) error{checkInbox, completeDeliveries, insertProducts, checkUnchanged, checkLinesNotLoaded, bumpVersions} {
		if err := check(w, c); err != nil {
			return nil, false, err
		}
	}
	wake = w.wake
	writeBatchesAndLines(w, c)
	writeView(w, c)
	queued = logEvents(w, c)
	if w.err != nil {
		return nil, false, w.err
	}
	if err = tx.Commit(); err != nil {
		return nil, false, fmt.Errorf("commit: %w", err)
	}
	return queued, wake, nil
}

// checkInbox records the inbound message ids; one seen before refuses the
// write.
func checkInbox(w *writer, c *Changes) error {
	for _, id := range c.InboxIDs {
		if w.exec(`INSERT INTO inbox (message_id, processed_at) VALUES (?, ?) ON CONFLICT DO NOTHING`, id, c.Now) == 0 && w.err == nil {
			return fmt.Errorf("message %s: %w", id, servicelayer.ErrDuplicateMessage)
		}
	}
	return w.err
}

// completeDeliveries marks the deliveries the unit of work completes done;
// one no longer pending refuses the write. Later deliveries waiting for one
// of them wake the dispatchers.
func completeDeliveries(w *writer, c *Changes) error {
	for _, d := range c.Completed {
		if w.exec(`UPDATE event_deliveries SET status = 'done', attempts = attempts + 1, last_error = NULL, updated_at = ?
			WHERE event_id = ? AND handler = ? AND status = 'pending'`, c.Now, d.EventID, d.Handler) == 0 && w.err == nil {
			return servicelayer.ErrNotDelivered
		}
		w.wake = w.followersWait(d) || w.wake
	}
	return w.err
}

// insertProducts inserts new products; one created meanwhile is a
// conflict.
func insertProducts(w *writer, c *Changes) error {
	for _, p := range c.NewProducts {
		if w.exec(`INSERT INTO products (sku, version_number) VALUES (?, ?) ON CONFLICT DO NOTHING`, p.SKU, p.Version) == 0 && w.err == nil {
			return fmt.Errorf("product %s created concurrently: %w", p.SKU, ErrConflict)
		}
	}
	return w.err
}

// checkUnchanged checks that products decided on from a cached copy, and
// not changed, are still at that version.
func checkUnchanged(w *writer, c *Changes) error {
	for _, p := range c.Unchanged {
		if !w.exists(`SELECT 1 FROM products WHERE sku = ? AND version_number = ?`, p.SKU, p.Version) && w.err == nil {
			return fmt.Errorf("version %d of %s changed underneath: %w", p.Version, p.SKU, ErrConflict)
		}
	}
	return w.err
}

// checkLinesNotLoaded checks that lines decided on from a cached product
// were not allocated before.
func checkLinesNotLoaded(w *writer, c *Changes) error {
	for _, l := range c.LinesNotLoaded {
		if w.exists(`SELECT 1 FROM allocations WHERE orderid = ? AND sku = ? AND qty = ?`, l.OrderID, l.SKU, l.Qty) {
			return fmt.Errorf("line %s/%s was allocated already: %w", l.OrderID, l.SKU, ErrConflict)
		}
	}
	return w.err
}

// bumpVersions moves each changed product to its next version; one that
// moved on since it was read is a conflict.
func bumpVersions(w *writer, c *Changes) error {
	for _, p := range c.Bumped {
		if w.exec(`UPDATE products SET version_number = ? WHERE sku = ? AND version_number = ?`, p.To, p.SKU, p.From) == 0 && w.err == nil {
			return fmt.Errorf("version %d of %s changed underneath: %w", p.From, p.SKU, ErrConflict)
		}
	}
	return w.err
}

// writeBatchesAndLines writes the batches and their allocated lines.
func writeBatchesAndLines(w *writer, c *Changes) {
	batchIDs := map[string]int64{}
	for _, b := range c.NewBatches {
		var eta any
		if !b.ETA.IsZero() {
			eta = b.ETA.Format("2006-01-02")
		}
		batchIDs[b.Ref] = w.id(`INSERT INTO batches (reference, sku, purchased_quantity, allocated_quantity, eta) VALUES (?, ?, ?, ?, ?) RETURNING id`,
			b.Ref, b.SKU, b.Purchased, b.Allocated, eta)
	}
	for _, b := range c.ChangedBatches {
		w.exec(`UPDATE batches SET purchased_quantity = ?, allocated_quantity = allocated_quantity + ? WHERE id = ?`, b.Purchased, b.AllocatedDelta, b.ID)
	}
	for _, l := range c.RemovedLines {
		w.exec(`DELETE FROM allocations WHERE orderid = ? AND sku = ? AND qty = ?`, l.OrderID, l.SKU, l.Qty)
	}
	for _, l := range c.AddedLines {
		id := l.BatchID
		if id == 0 {
			id = batchIDs[l.BatchRef]
		}
		w.exec(`INSERT INTO allocations (batch_id, orderid, sku, qty) VALUES (?, ?, ?, ?)`, id, l.Line.OrderID, l.Line.SKU, l.Line.Qty)
	}
}

// writeView writes the allocations view as the events moved it.
func writeView(w *writer, c *Changes) {
	for _, l := range c.ViewRemoved {
		w.exec(`DELETE FROM allocations_view WHERE orderid = ? AND sku = ? AND qty = ?`, l.OrderID, l.SKU, l.Qty)
	}
	for _, r := range c.ViewPut {
		w.exec(`INSERT INTO allocations_view (orderid, sku, qty, batchref) VALUES (?, ?, ?, ?)
			ON CONFLICT (orderid, sku, qty) DO UPDATE SET batchref = excluded.batchref`, r.Line.OrderID, r.Line.SKU, r.Line.Qty, r.BatchRef)
	}
}

// turn is the queue of one product's events for one handler.
type turn struct{ sku, handler string }

// logEvents writes the events and queues their deliveries. A delivery is in
// turn when nothing of its product was pending for its handler before.
func logEvents(w *writer, c *Changes) []Queued {
	waiting := waitingTurns(w, c)
	var queued []Queued
	for _, ev := range c.Events {
		env := ev.Envelope
		logID := w.id(`INSERT INTO event_log (message_id, aggregate, name, payload, occurred_at, causation_id, correlation_id, orderid, batchref,
				traceparent, tracestate)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id`,
			env.MessageID, env.Event.ProductSKU(), env.Event.Name(), ev.Payload, env.OccurredAt, env.CausationID, env.CorrelationID,
			nullIfEmpty(ev.OrderID), nullIfEmpty(ev.BatchRef), env.TraceParent, env.TraceState)
		for _, h := range ev.Handlers {
			inTurn := !waiting[turn{env.Event.ProductSKU(), h}]
			next := c.FirstAttempt
			if !inTurn {
				// Due once the one before it is done; whoever completes
				// that one wakes the dispatcher.
				next = c.Now
			}
			w.exec(`INSERT INTO event_deliveries (event_id, handler, aggregate, next_attempt_at, updated_at) VALUES (?, ?, ?, ?, ?)`,
				logID, h, env.Event.ProductSKU(), next, c.Now)
			queued = append(queued, Queued{MessageID: env.MessageID, LogID: logID, Handler: h, FirstInLine: inTurn})
		}
	}
	return queued
}

// waitingTurns are the turns of c's events that have a delivery pending
// already, so that the new ones go out behind it. What this unit of work
// completes, and what this process delivered but did not mark yet, counts as
// done.
func waitingTurns(w *writer, c *Changes) map[turn]bool {
	made := map[DeliveryKey]bool{}
	for _, k := range append(slices.Clone(c.Completed), c.DeliveredUnmarked...) {
		made[k] = true
	}
	waiting := map[turn]bool{}
	for _, ev := range c.Events {
		for _, h := range ev.Handlers {
			t := turn{ev.Envelope.Event.ProductSKU(), h}
			if _, ok := waiting[t]; ok {
				continue
			}
			waiting[t] = false
			// More open deliveries than made ones means one is not made:
			// reading one more than that is enough, however long the
			// backlog of an outage.
			for _, id := range w.ids(`SELECT event_id FROM event_deliveries WHERE aggregate = ? AND handler = ? AND status <> 'done'
				ORDER BY event_id LIMIT ?`, t.sku, t.handler, len(made)+1) {
				if !made[DeliveryKey{EventID: id, Handler: h}] {
					waiting[t] = true
				}
			}
		}
	}
	return waiting
}

// MarkDoneInTransaction marks deliveries done in one transaction on db, and
// says whether later deliveries of their products wait for them. Its
// statements are kept in stmts, as WriteInTransaction's.
func MarkDoneInTransaction(ctx context.Context, db *sqlx.DB, stmts *Statements, bind int, done []DeliveryKey, now time.Time) (wake bool, err error) {
	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		return false, fmt.Errorf("begin transaction: %w", err)
	}
	w := &writer{tx: tx, stmts: stmts, bind: bind, ctx: ctx}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
		w.prepareMissed()
	}()
	for _, k := range done {
		w.exec(`UPDATE event_deliveries SET status = 'done', attempts = attempts + 1, last_error = NULL, updated_at = ?
			WHERE event_id = ? AND handler = ? AND status = 'pending'`, now, k.EventID, k.Handler)
		wake = w.followersWait(k) || wake
	}
	if w.err != nil {
		return false, w.err
	}
	if err = tx.Commit(); err != nil {
		return false, fmt.Errorf("commit: %w", err)
	}
	return wake, nil
}

// writer runs statements until the first error, which it keeps.
type writer struct {
	ctx    context.Context
	tx     *sqlx.Tx
	stmts  *Statements
	bind   int
	missed []string // queries run unprepared, to prepare once tx is over
	err    error
	// wake says that deliveries wait for one this write completed.
	wake bool
}

// followersWait reports whether later deliveries of d's product and handler
// are pending: completing d must wake the dispatchers for them.
func (w *writer) followersWait(d DeliveryKey) bool {
	return w.exists(`SELECT 1 FROM event_deliveries WHERE event_id > ? AND handler = ? AND status = 'pending'
		AND aggregate = (SELECT aggregate FROM event_deliveries WHERE event_id = ? AND handler = ?)`,
		d.EventID, d.Handler, d.EventID, d.Handler)
}

// stmt is query prepared within tx, or nil when it is not prepared yet.
func (w *writer) stmt(query string) *sqlx.Stmt {
	if st, ok := w.stmts.prepared(w.text(query)); ok {
		return w.tx.StmtxContext(w.ctx, st)
	}
	w.missed = append(w.missed, w.text(query))
	return nil
}

// prepareMissed prepares what the transaction ran unprepared; call it once
// the transaction is over. A statement that cannot be prepared stays
// unprepared: it is run as text, and fails there if it must.
func (w *writer) prepareMissed() {
	for _, q := range w.missed {
		w.stmts.prepareUnlocked(context.WithoutCancel(w.ctx), q)
	}
}

// text is query with the database's placeholders.
func (w *writer) text(query string) string { return sqlx.Rebind(w.bind, query) }

// exec runs query and returns how many rows it changed.
func (w *writer) exec(query string, args ...any) int64 {
	if w.err != nil {
		return 0
	}
	var res sql.Result
	var err error
	if st := w.stmt(query); st != nil {
		res, err = st.ExecContext(w.ctx, args...)
	} else {
		res, err = w.tx.ExecContext(w.ctx, w.text(query), args...)
	}
	if err != nil {
		w.err = fmt.Errorf("%s: %w", firstWords(query), err)
		return 0
	}
	n, err := res.RowsAffected()
	if err != nil {
		w.err = err
	}
	return n
}

// id runs an INSERT … RETURNING id.
func (w *writer) id(query string, args ...any) int64 {
	var id int64
	if w.err == nil {
		if err := w.get(&id, query, args...); err != nil {
			w.err = fmt.Errorf("%s: %w", firstWords(query), err)
		}
	}
	return id
}

// ids runs a query of one integer column.
func (w *writer) ids(query string, args ...any) []int64 {
	var ids []int64
	if w.err == nil {
		var err error
		if st := w.stmt(query); st != nil {
			err = st.SelectContext(w.ctx, &ids, args...)
		} else {
			err = w.tx.SelectContext(w.ctx, &ids, w.text(query), args...)
		}
		if err != nil {
			w.err = fmt.Errorf("%s: %w", firstWords(query), err)
		}
	}
	return ids
}

// exists reports whether query returns a row.
func (w *writer) exists(query string, args ...any) bool {
	var one int
	if w.err != nil {
		return false
	}
	err := w.get(&one, query, args...)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		w.err = fmt.Errorf("%s: %w", firstWords(query), err)
	}
	return err == nil
}

// get scans the one row of query into dest.
func (w *writer) get(dest any, query string, args ...any) error {
	if st := w.stmt(query); st != nil {
		return st.GetContext(w.ctx, dest, args...)
	}
	return w.tx.GetContext(w.ctx, dest, w.text(query), args...)
}

// firstWords names a statement in an error: its first three words.
func firstWords(query string) string {
	n, words := 0, 0
	for i, r := range query {
		if r == ' ' {
			if words++; words == 3 {
				return query[:i]
			}
		}
		n = i
	}
	return query[:n+1]
}

// nullIfEmpty is NULL for "": a column that only some rows fill stays out
// of its partial index in the others.
func nullIfEmpty(s string) sql.NullString {
	return sql.NullString{String: s, Valid: s != ""}
}
