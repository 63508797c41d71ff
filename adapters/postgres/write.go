package postgres

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/lib/pq"

	"allocation/adapters/sqlstore"
	"allocation/domain"
)

// Write implements sqlstore.Dialect: the changes of a unit of work are
// written in one statement, one round trip and one commit. The statement has
// only the parts the changes need, so an allocation and a batch correction
// each have their own, prepared once.
//
// The checks come first (guard): the inbound message is new, the delivery to
// complete is still pending, every product is still at the version it was
// read at. When one fails, allocation_refuse aborts the statement and with it
// everything it did; every other part runs only once the guard passed.
func (d *Dialect) Write(ctx context.Context, c *sqlstore.Changes) ([]sqlstore.Queued, error) {
	query, args := buildWrite(c)
	st, err := d.stmts.Get(ctx, query)
	if err != nil {
		return nil, err
	}
	var rows []struct {
		MessageID   sql.NullString `db:"message_id"`
		EventID     sql.NullInt64  `db:"event_id"`
		Handler     sql.NullString `db:"handler"`
		FirstInLine sql.NullBool   `db:"in_turn"`
		Notified    sql.NullBool   `db:"notified"`
	}
	if err := st.SelectContext(ctx, &rows, args...); err != nil {
		return nil, d.Classify(fmt.Errorf("write unit of work: %w", err))
	}
	var queued []sqlstore.Queued
	for _, r := range rows {
		if r.EventID.Valid {
			queued = append(queued, sqlstore.Queued{MessageID: r.MessageID.String, LogID: r.EventID.Int64, Handler: r.Handler.String, FirstInLine: r.FirstInLine.Bool})
		}
	}
	return queued, nil
}

// statement builds one SQL statement: its parts (WITH queries) and the
// arguments they take, numbered in the order they are added.
type statement struct {
	parts  []string
	checks []string // WHEN … THEN allocation_refuse(…) of the guard
	args   []any
	at     time.Time
	now    string // the placeholder of at, once a part uses it
}

// time is the placeholder of the unit of work's time.
func (s *statement) time() string {
	if s.now == "" {
		s.now = s.arg(s.at, "timestamptz")
	}
	return s.now
}

// arg adds an argument and returns its placeholder, cast to typ.
func (s *statement) arg(v any, typ string) string {
	s.args = append(s.args, v)
	return fmt.Sprintf("$%d::%s", len(s.args), typ)
}

func (s *statement) part(name, format string, a ...any) {
	s.parts = append(s.parts, name+" AS (\n"+fmt.Sprintf(format, a...)+")")
}

// guarded is the condition every write after the checks carries.
func (s *statement) guarded() string {
	if len(s.checks) == 0 {
		return "true"
	}
	return "(SELECT ok FROM guard)"
}

func buildWrite(c *sqlstore.Changes) (string, []any) {
	s := &statement{at: c.Now}
	done := s.guard(c)
	ok := s.guarded()
	s.batches(c, ok)
	s.lines(c, ok)
	s.view(c, ok)
	queue := s.events(c, ok)
	return s.result(c, done, queue), s.args
}

// guard adds the checks: the inbound messages are new, the deliveries to
// complete are still pending (it returns their placeholders), every product
// is still at the version it was read at and lines decided on from a cached
// copy were not allocated before. Counts are compared with the arguments'
// cardinality, so that the statement's text, and its prepared plan, do not
// depend on how many rows a write has.
func (s *statement) guard(c *sqlstore.Changes) (done string) {
	if len(c.InboxIDs) > 0 {
		ids := s.arg(pq.Array(c.InboxIDs), "text[]")
		s.part("inbox_rows", `INSERT INTO inbox (message_id, processed_at) SELECT unnest(%s), %s ON CONFLICT DO NOTHING RETURNING 1`, ids, s.time())
		s.checks = append(s.checks, fmt.Sprintf(`WHEN (SELECT count(*) FROM inbox_rows) <> cardinality(%s) THEN allocation_refuse('AL001', 'an inbound message was processed already')`, ids))
	}
	if len(c.Completed) > 0 {
		ids, handlers := s.keys(c.Completed)
		done = ids + ", " + handlers
		s.part("done", `UPDATE event_deliveries SET status = 'done', attempts = attempts + 1, last_error = NULL, updated_at = %s
	WHERE (event_id, handler) IN (SELECT * FROM unnest(%s)) AND status = 'pending' RETURNING event_id, handler, aggregate`, s.time(), done)
		s.checks = append(s.checks, fmt.Sprintf(`WHEN (SELECT count(*) FROM done) <> cardinality(%s) THEN allocation_refuse('AL002', 'a delivery is not pending')`, ids))
	}
	s.products("new_products", `INSERT INTO products (sku, version_number) SELECT * FROM unnest(%s, %s) ON CONFLICT DO NOTHING RETURNING 1`,
		c.NewProducts, "a product was created concurrently")
	s.bumps(c.Bumped)
	s.products("unchanged", `SELECT 1 FROM products p JOIN unnest(%s, %s) AS u(sku, version) ON p.sku = u.sku AND p.version_number = u.version`,
		c.Unchanged, "a product changed since it was read")
	if len(c.LinesNotLoaded) > 0 {
		s.checks = append(s.checks, fmt.Sprintf(`WHEN EXISTS (SELECT FROM allocations a JOIN unnest(%s) AS u(orderid, sku, qty)
		ON a.orderid = u.orderid AND a.sku = u.sku AND a.qty = u.qty) THEN allocation_refuse('40001', 'a line was allocated already')`, s.orderLines(c.LinesNotLoaded)))
	}
	if len(s.checks) > 0 {
		s.part("guard", "SELECT CASE\n\t%s\n\tELSE true END AS ok", strings.Join(s.checks, "\n\t"))
	}
	return done
}

// bumps adds the part that moves each changed product to its next version,
// and the check that none moved on meanwhile.
func (s *statement) bumps(bumped []sqlstore.VersionBump) {
	if len(bumped) == 0 {
		return
	}
	var skus []string
	var from, to []int64
	for _, p := range bumped {
		skus, from, to = append(skus, p.SKU), append(from, int64(p.From)), append(to, int64(p.To))
	}
	skusArg := s.arg(pq.Array(skus), "text[]")
	s.part("bumped", `UPDATE products p SET version_number = b.next FROM unnest(%s, %s, %s) AS b(sku, prev, next)
	WHERE p.sku = b.sku AND p.version_number = b.prev RETURNING 1`, skusArg, s.arg(pq.Array(from), "int[]"), s.arg(pq.Array(to), "int[]"))
	s.checks = append(s.checks, fmt.Sprintf(`WHEN (SELECT count(*) FROM bumped) <> cardinality(%s) THEN allocation_refuse('40001', 'a product changed since it was read')`, skusArg))
}

// batches adds the parts that insert new batches and change stored ones.
func (s *statement) batches(c *sqlstore.Changes, ok string) {
	if len(c.NewBatches) > 0 {
		var refs, skus []string
		var purchased, allocated []int64
		var etas []sql.NullString
		for _, b := range c.NewBatches {
			refs, skus = append(refs, b.Ref), append(skus, b.SKU)
			purchased, allocated = append(purchased, int64(b.Purchased)), append(allocated, int64(b.Allocated))
			etas = append(etas, sql.NullString{String: b.ETA.Format(time.DateOnly), Valid: !b.ETA.IsZero()})
		}
		s.part("new_batches", `INSERT INTO batches (reference, sku, purchased_quantity, allocated_quantity, eta)
	SELECT ref, sku, purchased, allocated, eta FROM unnest(%s, %s, %s, %s, %s) WITH ORDINALITY AS b(ref, sku, purchased, allocated, eta, n)
	WHERE %s ORDER BY n RETURNING id, reference`,
			s.arg(pq.Array(refs), "text[]"), s.arg(pq.Array(skus), "text[]"), s.arg(pq.Array(purchased), "int[]"),
			s.arg(pq.Array(allocated), "int[]"), s.arg(pq.Array(etas), "date[]"), ok)
	}
	if len(c.ChangedBatches) > 0 {
		var ids, purchased, allocated []int64
		for _, b := range c.ChangedBatches {
			ids, purchased, allocated = append(ids, b.ID), append(purchased, int64(b.Purchased)), append(allocated, int64(b.AllocatedDelta))
		}
		s.part("changed_batches", `UPDATE batches SET purchased_quantity = c.purchased, allocated_quantity = allocated_quantity + c.allocated
	FROM unnest(%s, %s, %s) AS c(id, purchased, allocated) WHERE batches.id = c.id AND %s RETURNING 1`,
			s.arg(pq.Array(ids), "bigint[]"), s.arg(pq.Array(purchased), "int[]"), s.arg(pq.Array(allocated), "int[]"), ok)
	}
}

// lines adds the parts that remove and add allocated lines.
func (s *statement) lines(c *sqlstore.Changes, ok string) {
	afterRemovals := ""
	if len(c.RemovedLines) > 0 {
		lines := s.orderLines(c.RemovedLines)
		s.part("removed_lines", `DELETE FROM allocations a USING unnest(%s) AS r(orderid, sku, qty)
	WHERE a.orderid = r.orderid AND a.sku = r.sku AND a.qty = r.qty AND %s RETURNING 1`, lines, ok)
		// A line that moved is deleted before it is inserted again:
		// reading the removals makes PostgreSQL run them first.
		afterRemovals = "(SELECT count(*) FROM removed_lines) >= 0 AND "
	}
	if len(c.AddedLines) > 0 {
		var ids []int64
		var refs []string
		var placed []domain.OrderLine
		for _, l := range c.AddedLines {
			ids, refs, placed = append(ids, l.BatchID), append(refs, l.BatchRef), append(placed, l.Line)
		}
		batchID, join := "l.batch_id", ""
		if len(c.NewBatches) > 0 {
			batchID, join = "coalesce(nb.id, l.batch_id)", "LEFT JOIN new_batches nb ON l.batch_id = 0 AND nb.reference = l.batch_ref"
		}
		s.part("added_lines", `INSERT INTO allocations (batch_id, orderid, sku, qty)
	SELECT %s, l.orderid, l.sku, l.qty FROM unnest(%s, %s, %s) WITH ORDINALITY AS l(batch_id, batch_ref, orderid, sku, qty, n) %s
	WHERE %s%s ORDER BY l.n RETURNING 1`,
			batchID, s.arg(pq.Array(ids), "bigint[]"), s.arg(pq.Array(refs), "text[]"), s.orderLines(placed), join, afterRemovals, ok)
	}
}

// view adds the parts that write the allocations view.
func (s *statement) view(c *sqlstore.Changes, ok string) {
	if len(c.ViewRemoved) > 0 {
		s.part("view_removed", `DELETE FROM allocations_view v USING unnest(%s) AS r(orderid, sku, qty)
	WHERE v.orderid = r.orderid AND v.sku = r.sku AND v.qty = r.qty AND %s RETURNING 1`, s.orderLines(c.ViewRemoved), ok)
	}
	if len(c.ViewPut) > 0 {
		var refs []string
		var lines []domain.OrderLine
		for _, r := range c.ViewPut {
			refs, lines = append(refs, r.BatchRef), append(lines, r.Line)
		}
		s.part("view_put", `INSERT INTO allocations_view (orderid, sku, qty, batchref)
	SELECT orderid, sku, qty, batchref FROM unnest(%s, %s) WITH ORDINALITY AS v(orderid, sku, qty, batchref, n)
	WHERE %s ORDER BY n
	ON CONFLICT (orderid, sku, qty) DO UPDATE SET batchref = EXCLUDED.batchref RETURNING 1`,
			s.orderLines(lines), s.arg(pq.Array(refs), "text[]"), ok)
	}
}

// result finishes the statement with what comes back: the deliveries
// queued, and whether the dispatchers were woken for deliveries waiting for
// one done here. A delivery not in turn wakes nobody: it waits for an
// earlier one, and whoever completes that one wakes the dispatchers
// (markDone). Waking them on every such write would have them scan the
// event log once per request while Redis is down.
func (s *statement) result(c *sqlstore.Changes, done, queue string) string {
	wake := "false"
	if len(c.Completed) > 0 {
		s.part("followers", `SELECT 1 FROM done JOIN event_deliveries x
	ON x.aggregate = done.aggregate AND x.handler = done.handler AND x.event_id > done.event_id
	WHERE x.status = 'pending' AND (x.event_id, x.handler) NOT IN (SELECT * FROM unnest(%s)) LIMIT 1`, done)
		wake += " OR EXISTS (SELECT FROM followers)"
	}
	from := "(SELECT true AS ok) g"
	if len(s.checks) > 0 {
		from = "guard g"
	}
	if queue == "" {
		queue = "(SELECT NULL::uuid AS message_id, NULL::bigint AS event_id, NULL::text AS handler, NULL::boolean AS in_turn WHERE false)"
	}
	query := "WITH\n" + strings.Join(s.parts, ",\n") + fmt.Sprintf(`
SELECT q.message_id::text AS message_id, q.event_id, q.handler, q.in_turn,
       CASE WHEN %s THEN pg_notify('%s', '') END IS NOT NULL AS notified
FROM %s LEFT JOIN %s q ON g.ok
ORDER BY q.event_id, q.handler`, wake, notifyChannel, from, queue)
	if len(s.parts) == 0 {
		query = strings.TrimPrefix(query, "WITH\n")
	}
	return query
}

// products adds a part that writes or finds the products listed, and the
// check that it found every one.
func (s *statement) products(name, query string, products []sqlstore.ProductVersion, refusal string) {
	if len(products) == 0 {
		return
	}
	var skus []string
	var versions []int64
	for _, p := range products {
		skus, versions = append(skus, p.SKU), append(versions, int64(p.Version))
	}
	skusArg := s.arg(pq.Array(skus), "text[]")
	s.part(name, query, skusArg, s.arg(pq.Array(versions), "int[]"))
	s.checks = append(s.checks, fmt.Sprintf(`WHEN (SELECT count(*) FROM %s) <> cardinality(%s) THEN allocation_refuse('40001', '%s')`, name, skusArg, refusal))
}

// keys adds deliveries as two array arguments and returns their
// placeholders: event ids, handlers.
func (s *statement) keys(keys []sqlstore.DeliveryKey) (string, string) {
	ids, handlers := make([]int64, len(keys)), make([]string, len(keys))
	for i, k := range keys {
		ids[i], handlers[i] = k.EventID, k.Handler
	}
	return s.arg(pq.Array(ids), "bigint[]"), s.arg(pq.Array(handlers), "text[]")
}

// events adds the parts that log the events and queue their deliveries, and
// returns the name of the part that lists them, or "" when there are none.
// A delivery is in turn when no delivery of its product and handler was
// pending before, counting as done those this statement completes and those
// this process made but did not mark yet.
func (s *statement) events(c *sqlstore.Changes, ok string) string {
	if len(c.Events) == 0 {
		return ""
	}
	var ids, aggregates, names, payloads, occurred, causations, correlations, parents, states, deliveryIDs, handlers []string
	var orderIDs, batchRefs []sql.NullString
	for _, ev := range c.Events {
		env := ev.Envelope
		orderIDs = append(orderIDs, sql.NullString{String: ev.OrderID, Valid: ev.OrderID != ""})
		batchRefs = append(batchRefs, sql.NullString{String: ev.BatchRef, Valid: ev.BatchRef != ""})
		ids, aggregates, names = append(ids, env.MessageID), append(aggregates, env.Event.ProductSKU()), append(names, env.Event.Name())
		payloads, occurred = append(payloads, ev.Payload), append(occurred, env.OccurredAt.UTC().Format(time.RFC3339Nano))
		causations, correlations = append(causations, env.CausationID), append(correlations, env.CorrelationID)
		parents, states = append(parents, env.TraceParent), append(states, env.TraceState)
		for _, h := range ev.Handlers {
			deliveryIDs, handlers = append(deliveryIDs, env.MessageID), append(handlers, h)
		}
	}
	s.part("logged", `INSERT INTO event_log (message_id, aggregate, name, payload, occurred_at, causation_id, correlation_id, orderid, batchref,
		traceparent, tracestate)
	SELECT message_id::uuid, aggregate, name, payload::jsonb, occurred_at::timestamptz, causation_id, correlation_id, orderid, batchref,
		traceparent, tracestate
	FROM unnest(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) WITH ORDINALITY
		AS e(message_id, aggregate, name, payload, occurred_at, causation_id, correlation_id, orderid, batchref, traceparent, tracestate, n)
	WHERE %s ORDER BY n RETURNING id, message_id, aggregate`,
		s.arg(pq.Array(ids), "text[]"), s.arg(pq.Array(aggregates), "text[]"), s.arg(pq.Array(names), "text[]"), s.arg(pq.Array(payloads), "text[]"),
		s.arg(pq.Array(occurred), "text[]"), s.arg(pq.Array(causations), "text[]"), s.arg(pq.Array(correlations), "text[]"),
		s.arg(pq.Array(orderIDs), "text[]"), s.arg(pq.Array(batchRefs), "text[]"),
		s.arg(pq.Array(parents), "text[]"), s.arg(pq.Array(states), "text[]"), ok)
	made := ""
	if all := append(slices.Clone(c.Completed), c.DeliveredUnmarked...); len(all) > 0 {
		ids, handlers := s.keys(all)
		made = fmt.Sprintf(`
		AND (x.event_id, x.handler) NOT IN (SELECT * FROM unnest(%s, %s))`, ids, handlers)
	}
	s.part("queue", `SELECT l.id AS event_id, l.message_id, d.handler, l.aggregate,
	-- The first open delivery of the product, by the index: written as
	-- NOT EXISTS, a generic plan scanned the table past every done row.
	(SELECT x.event_id FROM event_deliveries x
		WHERE x.aggregate = l.aggregate AND x.handler = d.handler AND x.status <> 'done'%s
		ORDER BY x.event_id LIMIT 1) IS NULL AS in_turn
	FROM unnest(%s, %s) AS d(message_id, handler) JOIN logged l ON l.message_id = d.message_id::uuid`,
		made, s.arg(pq.Array(deliveryIDs), "text[]"), s.arg(pq.Array(handlers), "text[]"))
	s.part("queued", `INSERT INTO event_deliveries (event_id, handler, aggregate, next_attempt_at, updated_at)
	SELECT event_id, handler, aggregate, CASE WHEN in_turn THEN %s ELSE %s END, %s FROM queue RETURNING 1`,
		s.arg(c.FirstAttempt, "timestamptz"), s.time(), s.time())
	return "queue"
}

// orderLines adds order lines as three array arguments (orderid, sku, qty)
// and returns them separated by commas, for unnest.
func (s *statement) orderLines(lines []domain.OrderLine) string {
	var orderIDs, skus []string
	var qtys []int64
	for _, l := range lines {
		orderIDs, skus, qtys = append(orderIDs, l.OrderID), append(skus, l.SKU), append(qtys, int64(l.Qty))
	}
	return s.arg(pq.Array(orderIDs), "text[]") + ", " + s.arg(pq.Array(skus), "text[]") + ", " + s.arg(pq.Array(qtys), "int[]")
}
