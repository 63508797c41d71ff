package postgres

import (
	"fmt"
	"strings"

	"allocation/adapters/sqlstore"
)

// partName is the name of each step's part (WITH query) in the statement.
// A step that must find nothing is a condition of the guard instead.
var partName = map[sqlstore.StepName]string{
	sqlstore.StepRecordInbox: "inbox_rows", sqlstore.StepCompleteDeliveries: "done", sqlstore.StepInsertProducts: "new_products",
	sqlstore.StepBumpVersions: "bumped", sqlstore.StepCheckUnchanged: "unchanged", sqlstore.StepInsertBatches: "new_batches",
	sqlstore.StepChangeBatches: "changed_batches", sqlstore.StepRemoveLines: "removed_lines", sqlstore.StepAddLines: "added_lines",
	sqlstore.StepRemoveViewRows: "view_removed", sqlstore.StepPutViewRows: "view_put", sqlstore.StepWakeFollowers: "followers",
	sqlstore.StepLogEvents: "logged", sqlstore.StepQueueDeliveries: "queued",
}

// stepText maps each step of a plan to its SQL, given the placeholders of
// the step's columns (arrays, read with unnest). Every part reads the
// snapshot from before the statement; the writes after the checks carry
// s.ok, the guard's verdict, so that none runs when a check fails.
var stepText = map[sqlstore.StepName]func(s *statement, st sqlstore.Step, cols []string) string{
	sqlstore.StepRecordInbox: func(s *statement, _ sqlstore.Step, c []string) string {
		return fmt.Sprintf(`INSERT INTO inbox (message_id, processed_at) SELECT unnest(%s), %s ON CONFLICT DO NOTHING RETURNING 1`, c[0], s.time())
	},
	sqlstore.StepCompleteDeliveries: func(s *statement, _ sqlstore.Step, c []string) string {
		return fmt.Sprintf(`UPDATE event_deliveries SET status = 'done', attempts = attempts + 1, last_error = NULL, updated_at = %s
	WHERE (event_id, handler) IN (SELECT * FROM unnest(%s)) AND status = 'pending' RETURNING event_id, handler, aggregate`, s.time(), strings.Join(c, ", "))
	},
	sqlstore.StepInsertProducts: func(_ *statement, _ sqlstore.Step, c []string) string {
		return fmt.Sprintf(`INSERT INTO products (sku, version_number) SELECT * FROM unnest(%s) ON CONFLICT DO NOTHING RETURNING 1`, strings.Join(c, ", "))
	},
	sqlstore.StepBumpVersions: func(_ *statement, _ sqlstore.Step, c []string) string {
		return fmt.Sprintf(`UPDATE products p SET version_number = b.next FROM unnest(%s) AS b(sku, prev, next)
	WHERE p.sku = b.sku AND p.version_number = b.prev RETURNING 1`, strings.Join(c, ", "))
	},
	sqlstore.StepCheckUnchanged: func(_ *statement, _ sqlstore.Step, c []string) string {
		return fmt.Sprintf(`SELECT 1 FROM products p JOIN unnest(%s) AS u(sku, version) ON p.sku = u.sku AND p.version_number = u.version`, strings.Join(c, ", "))
	},
	sqlstore.StepCheckLinesNotLoaded: func(_ *statement, _ sqlstore.Step, c []string) string {
		return fmt.Sprintf(`SELECT FROM allocations a JOIN unnest(%s) AS u(orderid, sku, qty)
		ON a.orderid = u.orderid AND a.sku = u.sku AND a.qty = u.qty`, strings.Join(c, ", "))
	},
	sqlstore.StepInsertBatches: func(s *statement, _ sqlstore.Step, c []string) string {
		return fmt.Sprintf(`INSERT INTO batches (reference, sku, purchased_quantity, allocated_quantity, eta)
	SELECT ref, sku, purchased, allocated, eta FROM unnest(%s) WITH ORDINALITY AS b(ref, sku, purchased, allocated, eta, n)
	WHERE %s ORDER BY n RETURNING id, reference`, strings.Join(c, ", "), s.ok)
	},
	sqlstore.StepChangeBatches: func(s *statement, _ sqlstore.Step, c []string) string {
		return fmt.Sprintf(`UPDATE batches SET purchased_quantity = c.purchased, allocated_quantity = allocated_quantity + c.allocated
	FROM unnest(%s) AS c(id, purchased, allocated) WHERE batches.id = c.id AND %s RETURNING 1`, strings.Join(c, ", "), s.ok)
	},
	sqlstore.StepRemoveLines: func(s *statement, _ sqlstore.Step, c []string) string {
		return fmt.Sprintf(`DELETE FROM allocations a USING unnest(%s) AS r(orderid, sku, qty)
	WHERE a.orderid = r.orderid AND a.sku = r.sku AND a.qty = r.qty AND %s RETURNING 1`, strings.Join(c, ", "), s.ok)
	},
	sqlstore.StepAddLines: addedLines,
	sqlstore.StepRemoveViewRows: func(s *statement, _ sqlstore.Step, c []string) string {
		return fmt.Sprintf(`DELETE FROM allocations_view v USING unnest(%s) AS r(orderid, sku, qty)
	WHERE v.orderid = r.orderid AND v.sku = r.sku AND v.qty = r.qty AND %s RETURNING 1`, strings.Join(c, ", "), s.ok)
	},
	sqlstore.StepPutViewRows: func(s *statement, _ sqlstore.Step, c []string) string {
		return fmt.Sprintf(`INSERT INTO allocations_view (orderid, sku, qty, batchref)
	SELECT orderid, sku, qty, batchref FROM unnest(%s) WITH ORDINALITY AS v(orderid, sku, qty, batchref, n)
	WHERE %s ORDER BY n
	ON CONFLICT (orderid, sku, qty) DO UPDATE SET batchref = EXCLUDED.batchref RETURNING 1`, strings.Join(c, ", "), s.ok)
	},
	// A pending delivery after the last one completed of each product and
	// handler: one probe of the index on open deliveries each, however long
	// the backlog (looking after every one completed, excluding the ones
	// completed, made marking a run of 500 out of a backlog of 10,000 cost
	// seconds).
	sqlstore.StepWakeFollowers: func(_ *statement, st sqlstore.Step, _ []string) string {
		return fmt.Sprintf(`SELECT 1 FROM (SELECT aggregate, handler, max(event_id) AS event_id FROM %s GROUP BY aggregate, handler) last
	JOIN event_deliveries x ON x.aggregate = last.aggregate AND x.handler = last.handler AND x.event_id > last.event_id AND x.status <> 'done'
	WHERE x.status = 'pending' LIMIT 1`, partName[st.Joins])
	},
	sqlstore.StepLogEvents: func(s *statement, _ sqlstore.Step, c []string) string {
		return fmt.Sprintf(`INSERT INTO event_log (message_id, aggregate, name, payload, occurred_at, causation_id, correlation_id, orderid, batchref,
		traceparent, tracestate)
	SELECT message_id::uuid, aggregate, name, payload::jsonb, occurred_at::timestamptz, causation_id, correlation_id, orderid, batchref,
		traceparent, tracestate
	FROM unnest(%s) WITH ORDINALITY
		AS e(message_id, aggregate, name, payload, occurred_at, causation_id, correlation_id, orderid, batchref, traceparent, tracestate, n)
	WHERE %s ORDER BY n RETURNING id, message_id, aggregate`, strings.Join(c, ", "), s.ok)
	},
	sqlstore.StepQueueDeliveries: queuedDeliveries,
}

// addedLines inserts the lines allocated: to a stored batch, or to one
// inserted by the same statement, found by its reference.
func addedLines(s *statement, _ sqlstore.Step, c []string) string {
	batchID, join := "l.batch_id", ""
	if s.has[sqlstore.StepInsertBatches] {
		batchID, join = "coalesce(nb.id, l.batch_id)", "LEFT JOIN new_batches nb ON l.batch_id = 0 AND nb.reference = l.batch_ref"
	}
	afterRemovals := ""
	if s.has[sqlstore.StepRemoveLines] {
		// A line that moved is deleted before it is inserted again:
		// reading the removals makes PostgreSQL run them first.
		afterRemovals = "(SELECT count(*) FROM removed_lines) >= 0 AND "
	}
	return fmt.Sprintf(`INSERT INTO allocations (batch_id, orderid, sku, qty)
	SELECT %s, l.orderid, l.sku, l.qty FROM unnest(%s) WITH ORDINALITY AS l(batch_id, batch_ref, orderid, sku, qty, n) %s
	WHERE %s%s ORDER BY l.n RETURNING 1`, batchID, strings.Join(c, ", "), join, afterRemovals, s.ok)
}

// queuedDeliveries adds the part that decides which deliveries are in turn
// (queue, which the statement returns) and returns the one that inserts
// them. A delivery is in turn when no delivery of its product and handler
// was open before, counting as done the plan's Done deliveries.
func queuedDeliveries(s *statement, st sqlstore.Step, c []string) string {
	made := ""
	if sqlstore.RowCount(st.Done) > 0 {
		made = fmt.Sprintf(`
		AND (x.event_id, x.handler) NOT IN (SELECT * FROM unnest(%s))`, strings.Join(s.columns(st.Done), ", "))
	}
	s.part("queue", fmt.Sprintf(`SELECT l.id AS event_id, l.message_id, d.handler, l.aggregate,
	-- The first open delivery of the product, by the index: written as
	-- NOT EXISTS, a generic plan scanned the table past every done row.
	(SELECT x.event_id FROM event_deliveries x
		WHERE x.aggregate = l.aggregate AND x.handler = d.handler AND x.status <> 'done'%s
		ORDER BY x.event_id LIMIT 1) IS NULL AS in_turn
	FROM unnest(%s) AS d(message_id, handler) JOIN %s l ON l.message_id = d.message_id::uuid`,
		made, strings.Join(c, ", "), partName[st.Joins]))
	return fmt.Sprintf(`INSERT INTO event_deliveries (event_id, handler, aggregate, next_attempt_at, updated_at)
	SELECT event_id, handler, aggregate, CASE WHEN in_turn THEN %s ELSE %s END, %s FROM queue RETURNING 1`,
		s.arg(s.plan.FirstAttempt, "timestamptz"), s.time(), s.time())
}
