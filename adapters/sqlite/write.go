package sqlite

import "allocation/adapters/sqlstore"

// timeLayout is how the driver writes a time.Time (_time_format=sqlite in
// Open, in UTC): times inside a step's JSON rows are written the same way,
// so that they sort and compare with the ones bound as arguments.
const timeLayout = "2006-01-02 15:04:05.999999999-07:00"

// steps are the SQL texts of a write plan's steps (sqlstore.StepTexts says
// how their arguments are numbered). A step's rows come as one JSON array
// of rows, read with jsonb_each, SQLite's unnest (jsonb_: each row comes as
// a binary JSON value, so that reading its columns does not parse it again):
// r.value ->> 0 is the first column of row r. jsonb_each reads the array in
// order, so rows are inserted in the order given, as PostgreSQL's WITH
// ORDINALITY … ORDER BY n does. Each statement reads the database as the
// steps before it left it; the plan orders them so that what they read is
// what PostgreSQL's one statement reads from its snapshot.
var steps = sqlstore.StepTexts{TimeLayout: timeLayout, SQL: map[sqlstore.StepName]string{
	// ?1 message ids, ?2 now. WHERE true: without it, SQLite would read ON
	// CONFLICT as a join's ON.
	sqlstore.StepRecordInbox: `INSERT INTO inbox (message_id, processed_at) SELECT value ->> 0, ?2 FROM jsonb_each(?1) WHERE true
		ON CONFLICT DO NOTHING`,
	// ?1 (event id, handler), ?2 now. The rows completed are returned for
	// the wake-up of the deliveries waiting for them.
	sqlstore.StepCompleteDeliveries: `UPDATE event_deliveries SET status = 'done', attempts = attempts + 1, last_error = NULL, updated_at = ?2
		WHERE (event_id, handler) IN (SELECT value ->> 0, value ->> 1 FROM jsonb_each(?1)) AND status = 'pending'
		RETURNING event_id, handler, aggregate`,
	// ?1 (sku, version).
	sqlstore.StepInsertProducts: `INSERT INTO products (sku, version_number) SELECT value ->> 0, value ->> 1 FROM jsonb_each(?1) WHERE true
		ON CONFLICT DO NOTHING`,
	// ?1 (sku, from, to).
	sqlstore.StepBumpVersions: `UPDATE products SET version_number = b.value ->> 2 FROM jsonb_each(?1) b
		WHERE products.sku = b.value ->> 0 AND products.version_number = b.value ->> 1`,
	// ?1 (sku, version).
	sqlstore.StepCheckUnchanged: `SELECT 1 FROM jsonb_each(?1) u JOIN products p ON p.sku = u.value ->> 0 AND p.version_number = u.value ->> 1`,
	// ?1 (orderid, sku, qty).
	sqlstore.StepCheckLinesNotLoaded: `SELECT 1 FROM jsonb_each(?1) u JOIN allocations a
		ON a.orderid = u.value ->> 0 AND a.sku = u.value ->> 1 AND a.qty = u.value ->> 2 LIMIT 1`,
	// ?1 (reference, sku, purchased, allocated, eta).
	sqlstore.StepInsertBatches: `INSERT INTO batches (reference, sku, purchased_quantity, allocated_quantity, eta)
		SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4 FROM jsonb_each(?1)`,
	// ?1 (id, purchased, allocated delta).
	sqlstore.StepChangeBatches: `UPDATE batches SET purchased_quantity = c.value ->> 1, allocated_quantity = allocated_quantity + (c.value ->> 2)
		FROM jsonb_each(?1) c WHERE batches.id = c.value ->> 0`,
	// ?1 (orderid, sku, qty).
	sqlstore.StepRemoveLines: `DELETE FROM allocations WHERE (orderid, sku, qty) IN (SELECT value ->> 0, value ->> 1, value ->> 2 FROM jsonb_each(?1))`,
	// ?1 (batch id, batch reference, orderid, sku, qty): a batch id of 0
	// is a batch this write inserted, found by its reference.
	sqlstore.StepAddLines: `INSERT INTO allocations (batch_id, orderid, sku, qty)
		SELECT coalesce(nullif(value ->> 0, 0), (SELECT id FROM batches WHERE reference = value ->> 1), 0), value ->> 2, value ->> 3, value ->> 4
		FROM jsonb_each(?1)`,
	// ?1 (orderid, sku, qty).
	sqlstore.StepRemoveViewRows: `DELETE FROM allocations_view WHERE (orderid, sku, qty) IN (SELECT value ->> 0, value ->> 1, value ->> 2 FROM jsonb_each(?1))`,
	// ?1 (orderid, sku, qty, batchref).
	sqlstore.StepPutViewRows: `INSERT INTO allocations_view (orderid, sku, qty, batchref)
		SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3 FROM jsonb_each(?1) WHERE true
		ON CONFLICT (orderid, sku, qty) DO UPDATE SET batchref = excluded.batchref`,
	// ?1 the deliveries completed (event id, handler, aggregate): a
	// delivery pending after the last one completed of its product and
	// handler, queued behind it (due when queued), waits for it; one in
	// turn is its own process's to deliver.
	sqlstore.StepWakeFollowers: `SELECT 1 FROM (SELECT value ->> 2 AS aggregate, value ->> 1 AS handler, max(value ->> 0) AS event_id
		FROM jsonb_each(?1) GROUP BY 1, 2) last
		JOIN event_deliveries x ON x.aggregate = last.aggregate AND x.handler = last.handler AND x.event_id > last.event_id AND x.status <> 'done'
		WHERE x.status = 'pending' AND x.next_attempt_at <= x.updated_at LIMIT 1`,
	// ?1 (message id, aggregate, name, payload, occurred at, causation id,
	// correlation id, orderid, batchref, traceparent, tracestate).
	sqlstore.StepLogEvents: `INSERT INTO event_log (message_id, aggregate, name, payload, occurred_at, causation_id, correlation_id, orderid, batchref,
			traceparent, tracestate)
		SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5, value ->> 6, value ->> 7, value ->> 8,
			value ->> 9, value ->> 10
		FROM jsonb_each(?1) RETURNING id, message_id, aggregate`,
	// ?1 (message id, handler), ?2 the deliveries counted as done (event
	// id, handler), ?3 the events logged (id, message id, aggregate), ?4
	// now, ?5 the first attempt. A delivery is in turn when no other of its
	// product and handler is open; SQLite reads the whole SELECT before it
	// inserts a row (it reads the table it inserts into), so that the
	// deliveries this statement queues do not count, as in PostgreSQL. With
	// nothing counted as done (?2 = '[]'), SQLite skips building the list.
	sqlstore.StepQueueDeliveries: `INSERT INTO event_deliveries (event_id, handler, aggregate, next_attempt_at, updated_at)
		SELECT l.value ->> 0, d.value ->> 1, l.value ->> 2,
			CASE WHEN (SELECT x.event_id FROM event_deliveries x
				WHERE x.aggregate = l.value ->> 2 AND x.handler = d.value ->> 1 AND x.status <> 'done'
					AND (?2 = '[]' OR (x.event_id, x.handler) NOT IN (SELECT value ->> 0, value ->> 1 FROM jsonb_each(?2)))
				ORDER BY x.event_id LIMIT 1) IS NULL THEN ?5 ELSE ?4 END, ?4
		FROM jsonb_each(?1) d JOIN jsonb_each(?3) l ON l.value ->> 1 = d.value ->> 0
		RETURNING (SELECT message_id FROM event_log WHERE id = event_id), event_id, handler, next_attempt_at = ?5`,
}}
