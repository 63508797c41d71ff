package postgres

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/lib/pq"

	"allocation/adapters/sqlstore"
)

// applyChanges writes the changes of a unit of work in one statement: one
// round trip and one commit. The checks come first (guard): the inbound
// message is new, the delivery to complete is still pending, every product
// is still at the version it was read at. When one fails, allocation_refuse
// aborts the statement, and with it everything else it did; every other
// part runs only once the guard passed.
//
// A line that moved between batches is deleted before it is inserted again:
// reading the count of removed_lines makes PostgreSQL run that part first.
// A delivery is in turn when no delivery of its product and handler was
// pending before; the others, and those waiting for the delivery completed
// here, wake the dispatchers.
const applyChanges = `
WITH
inbox_row AS (
	INSERT INTO inbox (message_id, processed_at) SELECT $3::text, $1::timestamptz WHERE $3::text <> ''
	ON CONFLICT DO NOTHING RETURNING 1),
done AS (
	UPDATE event_deliveries SET status = 'done', attempts = attempts + 1, last_error = NULL, updated_at = $1::timestamptz
	WHERE event_id = $4::bigint AND handler = $5::text AND status = 'pending'
	RETURNING aggregate),
new_products AS (
	INSERT INTO products (sku, version_number) SELECT * FROM unnest($6::text[], $7::int[])
	ON CONFLICT DO NOTHING RETURNING 1),
bumped AS (
	UPDATE products p SET version_number = b.next
	FROM unnest($8::text[], $9::int[], $10::int[]) AS b(sku, prev, next)
	WHERE p.sku = b.sku AND p.version_number = b.prev RETURNING 1),
guard AS (
	SELECT CASE
		WHEN $3::text <> '' AND NOT EXISTS (SELECT FROM inbox_row)
			THEN allocation_refuse('AL001', 'message ' || $3::text || ' already processed')
		WHEN $4::bigint <> 0 AND NOT EXISTS (SELECT FROM done)
			THEN allocation_refuse('AL002', 'delivery ' || $4::bigint || '/' || $5::text || ' is not pending')
		WHEN (SELECT count(*) FROM new_products) <> cardinality($6::text[])
		  OR (SELECT count(*) FROM bumped) <> cardinality($8::text[])
			THEN allocation_refuse('40001', 'a product changed since it was read')
		ELSE true END AS ok),
new_batches AS (
	INSERT INTO batches (reference, sku, purchased_quantity, allocated_quantity, eta)
	SELECT ref, sku, purchased, allocated, eta
	FROM unnest($11::text[], $12::text[], $13::int[], $14::int[], $15::date[]) WITH ORDINALITY AS b(ref, sku, purchased, allocated, eta, n)
	WHERE (SELECT ok FROM guard) ORDER BY n
	RETURNING id, reference),
changed_batches AS (
	UPDATE batches SET purchased_quantity = c.purchased, allocated_quantity = c.allocated
	FROM unnest($16::bigint[], $17::int[], $18::int[]) AS c(id, purchased, allocated)
	WHERE batches.id = c.id AND (SELECT ok FROM guard) RETURNING 1),
removed_lines AS (
	DELETE FROM allocations a USING unnest($19::text[], $20::text[], $21::int[]) AS r(orderid, sku, qty)
	WHERE a.orderid = r.orderid AND a.sku = r.sku AND a.qty = r.qty AND (SELECT ok FROM guard) RETURNING 1),
added_lines AS (
	INSERT INTO allocations (batch_id, orderid, sku, qty)
	SELECT coalesce(nb.id, l.batch_id), l.orderid, l.sku, l.qty
	FROM unnest($22::bigint[], $23::text[], $24::text[], $25::text[], $26::int[]) WITH ORDINALITY AS l(batch_id, batch_ref, orderid, sku, qty, n)
	LEFT JOIN new_batches nb ON l.batch_id = 0 AND nb.reference = l.batch_ref
	WHERE (SELECT count(*) FROM removed_lines) >= 0 AND (SELECT ok FROM guard) ORDER BY l.n
	RETURNING 1),
view_removed AS (
	DELETE FROM allocations_view v USING unnest($27::text[], $28::text[], $29::int[]) AS r(orderid, sku, qty)
	WHERE v.orderid = r.orderid AND v.sku = r.sku AND v.qty = r.qty AND (SELECT ok FROM guard) RETURNING 1),
view_put AS (
	INSERT INTO allocations_view (orderid, sku, qty, batchref)
	SELECT orderid, sku, qty, batchref FROM unnest($30::text[], $31::text[], $32::int[], $33::text[]) WITH ORDINALITY AS v(orderid, sku, qty, batchref, n)
	WHERE (SELECT ok FROM guard) ORDER BY n
	ON CONFLICT (orderid, sku, qty) DO UPDATE SET batchref = EXCLUDED.batchref
	RETURNING 1),
logged AS (
	INSERT INTO event_log (message_id, aggregate, name, payload, occurred_at, causation_id, correlation_id)
	SELECT message_id::uuid, aggregate, name, payload::jsonb, occurred_at::timestamptz, causation_id, correlation_id
	FROM unnest($34::text[], $35::text[], $36::text[], $37::text[], $38::text[], $39::text[], $40::text[])
		WITH ORDINALITY AS e(message_id, aggregate, name, payload, occurred_at, causation_id, correlation_id, n)
	WHERE (SELECT ok FROM guard) ORDER BY n
	RETURNING id, message_id, aggregate),
queue AS (
	SELECT l.id AS event_id, l.message_id, d.handler, l.aggregate,
	       NOT EXISTS (SELECT 1 FROM event_deliveries x
	                   WHERE x.aggregate = l.aggregate AND x.handler = d.handler AND x.status = 'pending'
	                     AND NOT (x.event_id = $4::bigint AND x.handler = $5::text)) AS in_turn
	FROM unnest($41::text[], $42::text[]) AS d(message_id, handler)
	JOIN logged l ON l.message_id = d.message_id::uuid),
queued AS (
	INSERT INTO event_deliveries (event_id, handler, aggregate, next_attempt_at, updated_at)
	SELECT event_id, handler, aggregate, CASE WHEN in_turn THEN $2::timestamptz ELSE $1::timestamptz END, $1::timestamptz
	FROM queue
	RETURNING 1),
followers AS (
	SELECT 1 FROM done JOIN event_deliveries x ON x.aggregate = done.aggregate
	WHERE x.handler = $5::text AND x.status = 'pending' AND x.event_id > $4::bigint
	LIMIT 1)
SELECT q.message_id::text AS message_id, q.event_id, q.handler, q.in_turn,
       CASE WHEN NOT q.in_turn OR EXISTS (SELECT FROM followers) THEN pg_notify('` + notifyChannel + `', '') END IS NOT NULL AS notified
FROM guard g LEFT JOIN queue q ON g.ok
ORDER BY q.event_id, q.handler`

// Apply implements sqlstore.Dialect.
func (d *Dialect) Apply(ctx context.Context, c *sqlstore.Changes) ([]sqlstore.Queued, error) {
	st, err := d.stmts.Get(ctx, applyChanges)
	if err != nil {
		return nil, err
	}
	var rows []struct {
		MessageID sql.NullString `db:"message_id"`
		EventID   sql.NullInt64  `db:"event_id"`
		Handler   sql.NullString `db:"handler"`
		InTurn    sql.NullBool   `db:"in_turn"`
		Notified  bool           `db:"notified"`
	}
	if err := st.SelectContext(ctx, &rows, applyArgs(c)...); err != nil {
		return nil, d.Classify(fmt.Errorf("write unit of work: %w", err))
	}
	var queued []sqlstore.Queued
	for _, r := range rows {
		if r.EventID.Valid {
			queued = append(queued, sqlstore.Queued{MessageID: r.MessageID.String, LogID: r.EventID.Int64, Handler: r.Handler.String, InTurn: r.InTurn.Bool})
		}
	}
	return queued, nil
}

// applyArgs lays c out as the columns applyChanges unnests.
func applyArgs(c *sqlstore.Changes) []any {
	var done struct {
		id      int64
		handler string
	}
	if c.Done != nil {
		done.id, done.handler = c.Done.EventID, c.Done.Handler
	}
	var (
		newSKUs, bumpSKUs                               = []string{}, []string{}
		newVersions, bumpFrom, bumpTo                   = []int64{}, []int64{}, []int64{}
		batchRefs, batchSKUs                            = []string{}, []string{}
		batchPurchased, batchAllocated                  = []int64{}, []int64{}
		batchETAs                                       = []sql.NullString{}
		changedIDs, changedPurchased, changedAllocated  = []int64{}, []int64{}, []int64{}
		removed, viewRemoved                            lineColumns
		added, viewPut                                  lineColumns
		addedBatchIDs                                   = []int64{}
		addedBatchRefs, viewBatchRefs                   = []string{}, []string{}
		evIDs, evAggregates, evNames, evPayloads        = []string{}, []string{}, []string{}, []string{}
		evOccurred, evCausations, evCorrelations        = []string{}, []string{}, []string{}
		deliveryIDs, deliveryHandlers                   = []string{}, []string{}
	)
	for _, p := range c.NewProducts {
		newSKUs, newVersions = append(newSKUs, p.SKU), append(newVersions, int64(p.Version))
	}
	for _, p := range c.Bumped {
		bumpSKUs, bumpFrom, bumpTo = append(bumpSKUs, p.SKU), append(bumpFrom, int64(p.From)), append(bumpTo, int64(p.To))
	}
	for _, b := range c.NewBatches {
		batchRefs, batchSKUs = append(batchRefs, b.Ref), append(batchSKUs, b.SKU)
		batchPurchased, batchAllocated = append(batchPurchased, int64(b.Purchased)), append(batchAllocated, int64(b.Allocated))
		eta := sql.NullString{String: b.ETA.Format(time.DateOnly), Valid: !b.ETA.IsZero()}
		batchETAs = append(batchETAs, eta)
	}
	for _, b := range c.ChangedBatches {
		changedIDs = append(changedIDs, b.ID)
		changedPurchased, changedAllocated = append(changedPurchased, int64(b.Purchased)), append(changedAllocated, int64(b.Allocated))
	}
	for _, l := range c.RemovedLines {
		removed.add(l.OrderID, l.SKU, l.Qty)
	}
	for _, l := range c.AddedLines {
		added.add(l.Line.OrderID, l.Line.SKU, l.Line.Qty)
		addedBatchIDs, addedBatchRefs = append(addedBatchIDs, l.BatchID), append(addedBatchRefs, l.BatchRef)
	}
	for _, l := range c.ViewRemoved {
		viewRemoved.add(l.OrderID, l.SKU, l.Qty)
	}
	for _, r := range c.ViewPut {
		viewPut.add(r.Line.OrderID, r.Line.SKU, r.Line.Qty)
		viewBatchRefs = append(viewBatchRefs, r.BatchRef)
	}
	for _, ev := range c.Events {
		env := ev.Envelope
		evIDs, evAggregates, evNames = append(evIDs, env.MessageID), append(evAggregates, env.Event.ProductSKU()), append(evNames, env.Event.Name())
		evPayloads, evOccurred = append(evPayloads, ev.Payload), append(evOccurred, env.OccurredAt.UTC().Format(time.RFC3339Nano))
		evCausations, evCorrelations = append(evCausations, env.CausationID), append(evCorrelations, env.CorrelationID)
		for _, h := range ev.Handlers {
			deliveryIDs, deliveryHandlers = append(deliveryIDs, env.MessageID), append(deliveryHandlers, h)
		}
	}
	return []any{
		c.Now, c.FirstAttempt, c.InboxID, done.id, done.handler,
		pq.Array(newSKUs), pq.Array(newVersions),
		pq.Array(bumpSKUs), pq.Array(bumpFrom), pq.Array(bumpTo),
		pq.Array(batchRefs), pq.Array(batchSKUs), pq.Array(batchPurchased), pq.Array(batchAllocated), pq.Array(batchETAs),
		pq.Array(changedIDs), pq.Array(changedPurchased), pq.Array(changedAllocated),
		pq.Array(removed.orderIDs), pq.Array(removed.skus), pq.Array(removed.qtys),
		pq.Array(addedBatchIDs), pq.Array(addedBatchRefs), pq.Array(added.orderIDs), pq.Array(added.skus), pq.Array(added.qtys),
		pq.Array(viewRemoved.orderIDs), pq.Array(viewRemoved.skus), pq.Array(viewRemoved.qtys),
		pq.Array(viewPut.orderIDs), pq.Array(viewPut.skus), pq.Array(viewPut.qtys), pq.Array(viewBatchRefs),
		pq.Array(evIDs), pq.Array(evAggregates), pq.Array(evNames), pq.Array(evPayloads), pq.Array(evOccurred), pq.Array(evCausations), pq.Array(evCorrelations),
		pq.Array(deliveryIDs), pq.Array(deliveryHandlers),
	}
}

// lineColumns are order lines laid out as columns.
type lineColumns struct {
	orderIDs, skus []string
	qtys           []int64
}

func (c *lineColumns) add(orderID, sku string, qty int) {
	if c.orderIDs == nil {
		c.orderIDs, c.skus, c.qtys = []string{}, []string{}, []int64{}
	}
	c.orderIDs, c.skus, c.qtys = append(c.orderIDs, orderID), append(c.skus, sku), append(c.qtys, int64(qty))
}
