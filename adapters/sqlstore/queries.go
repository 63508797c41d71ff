package sqlstore

import (
	"fmt"

	"github.com/jmoiron/sqlx"
)

// Lines of a product to load with its batches; every batch comes with its
// allocated total, so a decision needs only the lines it may move.
const (
	noLines      = `1 = 0`
	everyLine    = `1 = 1`
	lineAtHand   = `a.orderid = ? AND a.sku = ? AND a.qty = ?`
	linesOfBatch = `b.reference = ?`
)

// loadProduct reads a product, its batches and the chosen lines in one
// round trip: one row per line, or per batch without one. %s picks the lines.
const loadProduct = `
SELECT p.version_number, b.id, b.reference, b.purchased_quantity, b.allocated_quantity, b.eta, a.orderid, a.qty
FROM products p
LEFT JOIN batches b ON b.sku = p.sku
LEFT JOIN allocations a ON a.batch_id = b.id AND %s
WHERE p.sku = ?
ORDER BY b.id, a.id`

// pendingBefore is true for a pending delivery of the same product and
// handler as the row d that was queued before it; such a delivery goes
// first.
const pendingBefore = `EXISTS (SELECT 1 FROM event_deliveries x
	WHERE x.aggregate = d.aggregate AND x.handler = d.handler AND x.status = 'pending' AND x.event_id < d.event_id)`

// queries are the statements of the store in the dialect's placeholders.
type queries struct {
	loadNoLines, loadEveryLine, loadLineAtHand, loadLinesOfBatch string

	skuOfBatch, allocations string

	due, nextDue, dead, replay, backlog, claim, recordFailure string
}

func rebindQueries(bind int) queries {
	r := func(q string) string { return sqlx.Rebind(bind, q) }
	load := func(lines string) string { return r(fmt.Sprintf(loadProduct, lines)) }
	return queries{
		loadNoLines:      load(noLines),
		loadEveryLine:    load(everyLine),
		loadLineAtHand:   load(lineAtHand),
		loadLinesOfBatch: load(linesOfBatch),

		skuOfBatch:  r(`SELECT sku FROM batches WHERE reference = ?`),
		allocations: r(`SELECT sku, batchref FROM allocations_view WHERE orderid = ? ORDER BY id`),

		due: r(`
			SELECT e.id AS event_id, d.handler, e.message_id, e.name, e.payload, e.occurred_at, e.causation_id, e.correlation_id
			FROM event_deliveries d JOIN event_log e ON e.id = d.event_id
			WHERE d.status = 'pending' AND d.next_attempt_at <= ? AND NOT ` + pendingBefore + `
			ORDER BY d.event_id LIMIT ?`),
		// Only the first pending delivery of each product and handler can
		// fall due: the others wait for it, not for the clock.
		nextDue: r(`SELECT min(d.next_attempt_at) FROM event_deliveries d WHERE d.status = 'pending' AND NOT ` + pendingBefore),
		dead: r(`
			SELECT e.id AS event_id, d.handler, e.message_id, e.name, e.payload, e.occurred_at,
			       e.causation_id, e.correlation_id, d.attempts, d.last_error, d.updated_at
			FROM event_deliveries d JOIN event_log e ON e.id = d.event_id
			WHERE d.status = 'dead' ORDER BY e.id, d.handler`),
		replay: r(`
			UPDATE event_deliveries SET status = 'pending', attempts = 0, next_attempt_at = ?, updated_at = ?, claimed_until = NULL
			WHERE event_id = ? AND status = 'dead'`),
		backlog: r(`
			SELECT count(*) FILTER (WHERE d.status = 'pending') AS pending,
			       count(*) FILTER (WHERE d.status = 'dead') AS dead,
			       min(e.occurred_at) FILTER (WHERE d.status = 'pending') AS oldest
			FROM event_deliveries d JOIN event_log e ON e.id = d.event_id
			WHERE d.status <> 'done'`),
		// A dispatcher holds a delivery it takes until claimed_until, and
		// its next attempt moves there too: nobody else takes it meanwhile,
		// and it falls due again should this dispatcher die. RETURNING
		// names the column bare: SQLite does not know the alias there.
		claim: r(`
			UPDATE event_deliveries AS d SET claimed_until = ?, next_attempt_at = ?, updated_at = ?
			WHERE d.event_id = ? AND d.handler = ? AND d.status = 'pending'
			  AND (d.claimed_until IS NULL OR d.claimed_until <= ?)
			  AND NOT ` + pendingBefore + `
			RETURNING attempts`),
		recordFailure: r(`
			UPDATE event_deliveries SET attempts = ?, status = ?, last_error = ?, updated_at = ?, next_attempt_at = ?, claimed_until = NULL
			WHERE event_id = ? AND handler = ? AND status = 'pending'`),
	}
}
