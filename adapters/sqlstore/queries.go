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

// openBefore is true for a delivery of the same product and handler as the
// row d, queued before it and not done: pending, or parked as dead. Such a
// delivery goes first; behind a dead one the product waits for an operator
// (events replay or skip), so that its order is never broken. It looks for
// the first such delivery by the index on open deliveries: written as an
// EXISTS, a generic plan scanned the table past every done row instead.
const openBefore = `(SELECT x.event_id FROM event_deliveries x
	WHERE x.aggregate = d.aggregate AND x.handler = d.handler AND x.status <> 'done' AND x.event_id < d.event_id
	ORDER BY x.event_id LIMIT 1) IS NOT NULL`

// dueHeads selects, among the first delivery not done of every product and
// handler (the dialect's heads query: aggregate, handler, event_id), those
// that are pending and due: the only deliveries a dispatcher can make now.
const dueHeads = `
SELECT e.id AS event_id, d.handler, e.message_id, e.name, e.payload, e.occurred_at, e.causation_id, e.correlation_id,
       e.traceparent, e.tracestate
FROM (%s) h
JOIN event_deliveries d ON d.event_id = h.event_id AND d.handler = h.handler
JOIN event_log e ON e.id = d.event_id
WHERE d.status = 'pending' AND d.next_attempt_at <= ?
ORDER BY d.event_id LIMIT ?`

// DueQuery is the statement Due runs on a dialect whose HeadsQuery is
// heads: arguments now and limit. Exported for plans to be checked.
func DueQuery(heads string) string { return fmt.Sprintf(dueHeads, heads) }

// nextHead is when the first pending head falls due.
const nextHead = `
SELECT min(d.next_attempt_at) FROM (%s) h
JOIN event_deliveries d ON d.event_id = h.event_id AND d.handler = h.handler
WHERE d.status = 'pending'`

// queries are the statements of the store in the dialect's placeholders.
type queries struct {
	loadNoLines, loadEveryLine, loadLineAtHand, loadLinesOfBatch string

	skuOfBatch, allocations string

	due, nextDue, dead, replay, skip, backlog, claim, recordFailure string

	runIDs, claimRange, runRows, completeRun, releaseRun, attempts string
}

// rebindQueries writes the store's statements in the dialect's
// placeholders. Each theme has a builder of its own, which sets its
// fields, so that none grows long; the text of every query is unchanged
// (its lines keep their indentation, hence the deeper one in the builders).
func rebindQueries(bind int, heads string) queries {
	r := func(q string) string { return sqlx.Rebind(bind, q) }
	var q queries
	q.rebindLookups(r)
	q.rebindDispatch(r, heads)
	q.rebindOperator(r)
	q.rebindRuns(r)
	return q
}

// rebindLookups sets the statements that read a product, its lines and
// where an order went.
func (q *queries) rebindLookups(r func(string) string) {
	load := func(lines string) string { return r(fmt.Sprintf(loadProduct, lines)) }
	q.loadNoLines = load(noLines)
	q.loadEveryLine = load(everyLine)
	q.loadLineAtHand = load(lineAtHand)
	q.loadLinesOfBatch = load(linesOfBatch)
	q.skuOfBatch = r(`SELECT sku FROM batches WHERE reference = ?`)
	q.allocations = r(`SELECT sku, batchref FROM allocations_view WHERE orderid = ? ORDER BY id`)
}

// rebindDispatch sets the statements a dispatcher finds, takes and
// records single deliveries with.
func (q *queries) rebindDispatch(r func(string) string, heads string) {
	q.due = r(DueQuery(heads))
	q.nextDue = r(fmt.Sprintf(nextHead, heads))
	// A dispatcher holds a delivery it takes until claimed_until, and
	// its next attempt moves there too: nobody else takes it meanwhile,
	// and it falls due again should this dispatcher die. RETURNING
	// names the column bare: SQLite does not know the alias there.
	q.claim = r(`
			UPDATE event_deliveries AS d SET claimed_until = ?, next_attempt_at = ?, updated_at = ?
			WHERE d.event_id = ? AND d.handler = ? AND d.status = 'pending'
			  AND (d.claimed_until IS NULL OR d.claimed_until <= ?)
			  AND NOT ` + openBefore + `
			RETURNING attempts`)
	q.attempts = r(`SELECT attempts FROM event_deliveries WHERE event_id = ? AND handler = ?`)
	q.recordFailure = r(`
			UPDATE event_deliveries SET attempts = ?, status = ?, last_error = ?, updated_at = ?, next_attempt_at = ?, claimed_until = NULL
			WHERE event_id = ? AND handler = ? AND status = 'pending'`)
}

// rebindOperator sets the statements of an operator: the dead deliveries,
// their replay or skip, and the backlog.
func (q *queries) rebindOperator(r func(string) string) {
	q.dead = r(`
			SELECT e.id AS event_id, d.handler, e.message_id, e.name, e.payload, e.occurred_at,
			       e.causation_id, e.correlation_id, e.traceparent, e.tracestate, d.attempts, d.last_error, d.updated_at
			FROM event_deliveries d JOIN event_log e ON e.id = d.event_id
			WHERE d.status = 'dead' ORDER BY e.id, d.handler`)
	q.replay = r(`
			UPDATE event_deliveries SET status = 'pending', attempts = 0, next_attempt_at = ?, updated_at = ?, claimed_until = NULL
			WHERE event_id = ? AND status = 'dead'`)
	// A skipped delivery is done: what waited behind it goes on.
	q.skip = r(`
			UPDATE event_deliveries SET status = 'done', last_error = 'skipped by an operator after: ' || coalesce(last_error, ''),
			       updated_at = ?, claimed_until = NULL
			WHERE event_id = ? AND status = 'dead'`)
	// blocked: pending deliveries waiting behind a dead one.
	q.backlog = r(`
			SELECT count(*) FILTER (WHERE d.status = 'pending') AS pending,
			       count(*) FILTER (WHERE d.status = 'dead') AS dead,
			       count(*) FILTER (WHERE d.status = 'pending' AND EXISTS (SELECT 1 FROM event_deliveries x
			           WHERE x.aggregate = d.aggregate AND x.handler = d.handler AND x.status = 'dead' AND x.event_id < d.event_id)) AS blocked,
			       min(e.occurred_at) FILTER (WHERE d.status = 'pending') AS oldest
			FROM event_deliveries d JOIN event_log e ON e.id = d.event_id
			WHERE d.status <> 'done'`)
}

// rebindRuns sets the statements a dispatcher takes, completes and
// releases a run of one product's deliveries with.
func (q *queries) rebindRuns(r func(string) string) {
	// A run is read first, the first open deliveries of a product and
	// handler (the head must be the first of them), then claimed as a
	// range: two plain index range scans. One statement with both
	// (UPDATE … WHERE event_id IN (SELECT … LIMIT n)) was planned as a
	// scan per row on a freshly grown backlog and took seconds.
	q.runIDs = r(`
			SELECT event_id FROM event_deliveries
			WHERE aggregate = ? AND handler = ? AND status <> 'done'
			ORDER BY event_id LIMIT ?`)
	q.claimRange = r(`
			UPDATE event_deliveries SET claimed_until = ?, next_attempt_at = ?, updated_at = ?
			WHERE aggregate = ? AND handler = ? AND event_id BETWEEN ? AND ? AND status = 'pending'
			  AND (claimed_until IS NULL OR claimed_until <= ?)
			RETURNING event_id`)
	q.runRows = r(`
			SELECT e.id AS event_id, d.handler, e.message_id, e.name, e.payload, e.occurred_at, e.causation_id, e.correlation_id,
			       e.traceparent, e.tracestate
			FROM event_deliveries d JOIN event_log e ON e.id = d.event_id
			WHERE d.aggregate = ? AND d.handler = ? AND d.status <> 'done' AND d.event_id BETWEEN ? AND ?
			ORDER BY d.event_id`)
	// A run is the open deliveries of its range (ClaimRun keeps only
	// those in a row), so it is marked done as a range: a plain scan
	// of the index on open deliveries, where marking 500 keys given as
	// arrays was planned as a scan of the table per key on a table not
	// analyzed yet (0.6 s a run).
	q.completeRun = r(`
			UPDATE event_deliveries SET status = 'done', attempts = attempts + 1, last_error = NULL, updated_at = ?, claimed_until = NULL
			WHERE aggregate = ? AND handler = ? AND event_id BETWEEN ? AND ? AND status = 'pending' AND claimed_until IS NOT NULL`)
	q.releaseRun = r(`
			UPDATE event_deliveries SET claimed_until = NULL, next_attempt_at = ?
			WHERE aggregate = ? AND handler = ? AND status = 'pending' AND event_id BETWEEN ? AND ?`)
}
