package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/lib/pq"

	"allocation/adapters/sqlstore"
	"allocation/servicelayer"
)

// Write implements sqlstore.Dialect: the steps of the write's plan are
// composed into one statement, one round trip and one commit. The statement
// has only the parts the plan needs, so an allocation and a batch correction
// each have their own, prepared once.
//
// The checks come first (guard): its conditions are the checks of the
// plan's steps. When one fails, allocation_refuse aborts the statement and
// with it everything it did; every other part runs only once the guard
// passed.
func (d *Dialect) Write(ctx context.Context, c *sqlstore.Changes) ([]sqlstore.Queued, error) {
	query, args := buildWrite(sqlstore.PlanWrite(c))
	st, err := d.stmts.Get(ctx, query)
	if err != nil {
		return nil, err
	}
	// Scanned by hand: sqlx's mapping by reflection cost 3 % of the
	// service's CPU under load, for five columns.
	rows, err := st.QueryContext(ctx, args...)
	if err != nil {
		return nil, d.Classify(fmt.Errorf("write unit of work: %w", err))
	}
	defer rows.Close()
	var queued []sqlstore.Queued
	for rows.Next() {
		var messageID, handler sql.NullString
		var eventID sql.NullInt64
		var firstInLine, notified sql.NullBool
		if err := rows.Scan(&messageID, &eventID, &handler, &firstInLine, &notified); err != nil {
			return nil, d.Classify(fmt.Errorf("write unit of work: %w", err))
		}
		if eventID.Valid {
			queued = append(queued, sqlstore.Queued{MessageID: messageID.String, LogID: eventID.Int64, Handler: handler.String, FirstInLine: firstInLine.Bool})
		}
	}
	if err := rows.Err(); err != nil {
		return nil, d.Classify(fmt.Errorf("write unit of work: %w", err))
	}
	return queued, nil
}

// MarkDone implements sqlstore.Dialect: the plan's steps composed into one
// statement, as a write's, on the pool that does not wait for the disk.
func (d *Dialect) MarkDone(ctx context.Context, done []sqlstore.DeliveryKey, now time.Time) error {
	query, args := MarkDoneStatement(done, now)
	st, err := d.relaxedS.Get(ctx, query)
	if err != nil {
		return err
	}
	if _, err := st.ExecContext(ctx, args...); err != nil {
		return d.Classify(fmt.Errorf("mark %d deliveries done: %w", len(done), err))
	}
	return nil
}

// MarkDoneStatement is the statement MarkDone runs, and its arguments.
func MarkDoneStatement(done []sqlstore.DeliveryKey, now time.Time) (query string, args []any) {
	return buildWrite(sqlstore.PlanMarkDone(done, now))
}

// Composing a write's text took a twentieth of the service's CPU under
// load, and its text depends only on the plan's shape (its steps, their
// checks and columns), not on its rows: there are a few dozen shapes. So
// each is composed once, remembered with where each of its arguments comes
// from, and a plan of the same shape only fills in its arguments.

// argKind says which of a plan's values an argument passes.
type argKind int

const (
	planNow          argKind = iota // Plan.Now
	planFirstAttempt                // Plan.FirstAttempt
	stepRows                        // a column of a step's Rows
	stepDone                        // a column of a step's Done
)

// argSource is where one argument of a statement comes from.
type argSource struct {
	kind         argKind
	step, column int
}

func (a argSource) value(p sqlstore.Plan) any {
	switch a.kind {
	case planNow:
		return p.Now
	case planFirstAttempt:
		return p.FirstAttempt
	case stepRows:
		return columnArg(p.Steps[a.step].Rows[a.column])
	default:
		return columnArg(p.Steps[a.step].Done[a.column])
	}
}

// builtStatement is a statement composed for one shape of plan.
type builtStatement struct {
	query   string
	sources []argSource
}

func (b builtStatement) argsOf(p sqlstore.Plan) []any {
	args := make([]any, len(b.sources))
	for i, src := range b.sources {
		args[i] = src.value(p)
	}
	return args
}

// maxShapes bounds the statements remembered; the plans of this service
// have a few dozen shapes, so it is never reached.
const maxShapes = 1024

// builtStatements are the statements composed so far, by shape.
type builtStatements struct {
	mu      sync.RWMutex
	byShape map[string]builtStatement
}

var built = builtStatements{byShape: map[string]builtStatement{}}

func (b *builtStatements) get(shape string) (builtStatement, bool) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	st, ok := b.byShape[shape]
	return st, ok
}

func (b *builtStatements) put(shape string, st builtStatement) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.byShape) < maxShapes {
		b.byShape[shape] = st
	}
}

// shapeOf is what a plan's text depends on: each step's name, check and
// joined step, and the types of its columns (and whether it counts
// deliveries as done).
func shapeOf(p sqlstore.Plan) string {
	var b strings.Builder
	for _, st := range p.Steps {
		b.WriteString(strconv.Itoa(int(st.Name)))
		b.WriteByte('/')
		b.WriteString(strconv.Itoa(int(st.Check.Kind)))
		b.WriteString(st.Check.Message)
		b.WriteString(refusalCode(st.Check))
		b.WriteByte('/')
		b.WriteString(strconv.Itoa(int(st.Joins)))
		for _, c := range st.Rows {
			b.WriteByte('r')
			b.WriteString(strconv.Itoa(int(c.Type)))
		}
		if sqlstore.RowCount(st.Done) > 0 {
			for _, c := range st.Done {
				b.WriteByte('d')
				b.WriteString(strconv.Itoa(int(c.Type)))
			}
		}
		b.WriteByte(';')
	}
	return b.String()
}

// statement builds one SQL statement: its parts (WITH queries) and the
// arguments they take, numbered in the order they are added.
type statement struct {
	parts   []string
	checks  []string // WHEN … THEN allocation_refuse(…) of the guard
	args    []any
	sources []argSource // where each argument comes from, for builtStatements
	plan    sqlstore.Plan
	step    int    // the index of the step being added
	now     string // the placeholder of the plan's Now, once a part uses it
	ok      string // the condition of the writes after the checks, once set
	has     map[sqlstore.StepName]bool
	query   string // the text, once composed
}

// time is the placeholder of the write's time.
func (s *statement) time() string {
	if s.now == "" {
		s.now = s.arg(argSource{kind: planNow}, "timestamptz")
	}
	return s.now
}

// arg adds the argument src names and returns its placeholder, cast to typ.
func (s *statement) arg(src argSource, typ string) string {
	s.args = append(s.args, src.value(s.plan))
	s.sources = append(s.sources, src)
	return "$" + strconv.Itoa(len(s.args)) + "::" + typ
}

func (s *statement) part(name, body string) {
	s.parts = append(s.parts, name+" AS (\n"+body+")")
}

// buildWrite composes the steps of p into one statement: the checked steps
// as parts the guard counts (or, for a step that must find nothing, as a
// condition of the guard), then the guard, then the writes it gates.
func buildWrite(p sqlstore.Plan) (string, []any) {
	shape := shapeOf(p)
	if b, ok := built.get(shape); ok {
		return b.query, b.argsOf(p)
	}
	s := compose(p)
	built.put(shape, builtStatement{query: s.query, sources: s.sources})
	return s.query, s.args
}

// compose builds the statement of p.
func compose(p sqlstore.Plan) *statement {
	s := &statement{plan: p, has: map[sqlstore.StepName]bool{}}
	for i, st := range p.Steps {
		if st.Check.Kind == sqlstore.NoCheck {
			s.guard()
		} else if s.ok != "" {
			panic(fmt.Sprintf("postgres: %s is checked after writes the guard gates", st.Name))
		}
		s.step = i
		s.addStep(st)
		s.has[st.Name] = true
	}
	s.guard()
	s.query = s.result()
	return s
}

// addStep adds the part of st, and its check to the guard.
func (s *statement) addStep(st sqlstore.Step) {
	name, cols := partName[st.Name], s.columns(st.Rows, stepRows)
	body := stepText[st.Name](s, st, cols)
	switch st.Check.Kind {
	case sqlstore.EveryRow:
		s.part(name, body)
		s.checks = append(s.checks, fmt.Sprintf("WHEN (SELECT count(*) FROM %s) <> cardinality(%s) THEN %s", name, cols[0], refusal(st.Check)))
	case sqlstore.NoRow:
		s.checks = append(s.checks, fmt.Sprintf("WHEN EXISTS (%s) THEN %s", body, refusal(st.Check)))
	default:
		s.part(name, body)
	}
}

// refusal is the call that aborts the statement when check fails, with
// the code Classify maps back to the check's error.
func refusal(check sqlstore.Check) string {
	return fmt.Sprintf("allocation_refuse('%s', '%s')", refusalCode(check), check.Message)
}

// refusalCode is the SQLSTATE a failed check raises.
func refusalCode(check sqlstore.Check) string {
	switch {
	case check.Kind == sqlstore.NoCheck:
		return ""
	case errors.Is(check.Refusal, servicelayer.ErrDuplicateMessage):
		return "AL001"
	case errors.Is(check.Refusal, servicelayer.ErrNotDelivered):
		return "AL002"
	}
	return "40001" // serialization_failure: ErrConflict
}

// guard adds the part that runs the checks, once, before the first write;
// the writes carry s.ok.
func (s *statement) guard() {
	if s.ok != "" {
		return
	}
	s.ok = "true"
	if len(s.checks) > 0 {
		s.part("guard", "SELECT CASE\n\t"+strings.Join(s.checks, "\n\t")+"\n\tELSE true END AS ok")
		s.ok = "(SELECT ok FROM guard)"
	}
}

// columns adds each column of the current step's rows (or done rows) as
// an array argument and returns their placeholders.
func (s *statement) columns(cols []sqlstore.Column, kind argKind) []string {
	out := make([]string, len(cols))
	for i, c := range cols {
		out[i] = s.arg(argSource{kind: kind, step: s.step, column: i}, arrayType[c.Type])
	}
	return out
}

// arrayType is the SQL type of each kind of column, passed as an array;
// times go as text, in RFC 3339 (see columnArg).
var arrayType = map[sqlstore.ColumnType]string{
	sqlstore.TextColumn: "text[]", sqlstore.NullTextColumn: "text[]", sqlstore.IntColumn: "int[]",
	sqlstore.IDColumn: "bigint[]", sqlstore.DateColumn: "date[]", sqlstore.TimeColumn: "text[]",
}

// columnArg is the argument that passes c.
func columnArg(c sqlstore.Column) any {
	if c.Type == sqlstore.TimeColumn {
		times := c.Values.([]time.Time)
		text := make([]string, len(times))
		for j, t := range times {
			text[j] = t.UTC().Format(time.RFC3339Nano)
		}
		return pq.Array(text)
	}
	return pq.Array(c.Values)
}

// result finishes the statement with what comes back: the deliveries
// queued, and whether the dispatchers were woken for deliveries waiting for
// one done here. A delivery not in turn wakes nobody: it waits for an
// earlier one, and whoever completes that one wakes the dispatchers
// (MarkDone, or the write that completes it). Waking them on every such
// write would have them scan the event log once per request while Redis is
// down.
func (s *statement) result() string {
	wake := "false"
	if s.has[sqlstore.StepWakeFollowers] {
		wake += " OR EXISTS (SELECT FROM followers)"
	}
	from := "(SELECT true AS ok) g"
	if len(s.checks) > 0 {
		from = "guard g"
	}
	queue := "(SELECT NULL::uuid AS message_id, NULL::bigint AS event_id, NULL::text AS handler, NULL::boolean AS in_turn WHERE false)"
	if s.has[sqlstore.StepQueueDeliveries] {
		queue = "queue"
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

// The SQL of each step. Write above composes them into one statement; they
// sit here, after it, so that a step's text is read next to how it is
// joined to the others.

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
	// seconds). Only one queued behind (due when it was queued) waits for
	// this one; one in turn is its own process's to deliver, and waking the
	// dispatchers for it had them read the log about a hundred times a
	// second under load, for nothing.
	sqlstore.StepWakeFollowers: func(_ *statement, st sqlstore.Step, _ []string) string {
		return fmt.Sprintf(`SELECT 1 FROM (SELECT aggregate, handler, max(event_id) AS event_id FROM %s GROUP BY aggregate, handler) last
	JOIN event_deliveries x ON x.aggregate = last.aggregate AND x.handler = last.handler AND x.event_id > last.event_id AND x.status <> 'done'
	WHERE x.status = 'pending' AND x.next_attempt_at <= x.updated_at LIMIT 1`, partName[st.Joins])
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
		AND (x.event_id, x.handler) NOT IN (SELECT * FROM unnest(%s))`, strings.Join(s.columns(st.Done, stepDone), ", "))
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
		s.arg(argSource{kind: planFirstAttempt}, "timestamptz"), s.time(), s.time())
}
