package sqlstore

// Why a write plan: the rules a write obeys (the inbox id is new, the
// delivery to complete still pending, every product still at the version it
// was read at, a line decided on from a cache not allocated already, an
// earlier delivery of a product goes first) are stated here once, as a list
// of steps. The dialects do not repeat them: each maps a step's name to its
// own SQL text (PostgreSQL composes the steps into one statement, SQLite
// runs them one after another in one transaction) and refuses with the
// step's error, so that the engines differ only in SQL text and error
// mapping.

import (
	"database/sql"
	"fmt"
	"slices"
	"time"

	"allocation/domain"
	"allocation/servicelayer"
)

// StepName names one rule or write of a plan.
type StepName int

// The steps, in the order a plan has them. Every step reads the database as
// it was before the write (PostgreSQL runs them in one statement, on one
// snapshot); the order is the one in which statements run one after another
// read the same: the checks before the writes they guard, the followers of
// completed deliveries before the write queues deliveries of its own.
const (
	StepRecordInbox StepName = iota + 1
	StepCompleteDeliveries
	StepInsertProducts
	StepBumpVersions
	StepCheckUnchanged
	StepCheckLinesNotLoaded
	StepInsertBatches
	StepChangeBatches
	StepRemoveLines
	StepAddLines
	StepRemoveViewRows
	StepPutViewRows
	StepWakeFollowers
	StepLogEvents
	StepQueueDeliveries
)

var stepNames = map[StepName]string{
	StepRecordInbox: "record inbox", StepCompleteDeliveries: "complete deliveries", StepInsertProducts: "insert products",
	StepBumpVersions: "bump versions", StepCheckUnchanged: "check unchanged", StepCheckLinesNotLoaded: "check lines not loaded",
	StepInsertBatches: "insert batches", StepChangeBatches: "change batches", StepRemoveLines: "remove lines", StepAddLines: "add lines",
	StepRemoveViewRows: "remove view rows", StepPutViewRows: "put view rows", StepWakeFollowers: "wake followers",
	StepLogEvents: "log events", StepQueueDeliveries: "queue deliveries",
}

func (n StepName) String() string { return stepNames[n] }

// Plan is a write: its steps, in order, and the times they write.
type Plan struct {
	// Now is the time of the write; FirstAttempt when deliveries queued in
	// turn fall due for a dispatcher.
	Now, FirstAttempt time.Time
	Steps             []Step
}

// Step is one rule or write: its rows, as one array per column, and the
// check of what it touched.
type Step struct {
	Name StepName
	// Rows are the rows the step writes or looks for.
	Rows []Column
	// Done is a second set of rows, for the deliveries step: the
	// deliveries counted as done when it decides which are in turn.
	Done []Column
	// Joins names an earlier step whose rows, as that step returned them,
	// this one reads: the events logged, the deliveries completed.
	Joins StepName
	// UsesNow and UsesFirstAttempt say which of the plan's times the step
	// writes.
	UsesNow, UsesFirstAttempt bool
	Check                     Check
}

// CheckKind says what a step must find for the write to go on.
type CheckKind int

const (
	// NoCheck: whatever the step touches, the write goes on.
	NoCheck CheckKind = iota
	// EveryRow: the step must touch (or find) one row for each of its rows.
	EveryRow
	// NoRow: the step must find none of its rows.
	NoRow
)

// Check is what a step must find, and the error that refuses the write
// when it does not.
type Check struct {
	Kind CheckKind
	// Refusal is ErrConflict, servicelayer.ErrDuplicateMessage or
	// servicelayer.ErrNotDelivered; Message says which rule failed, in
	// plain words without quotes (PostgreSQL puts it in its SQL text).
	Refusal error
	Message string
}

// Err is the error that refuses the write.
func (c Check) Err() error { return fmt.Errorf("%s: %w", c.Message, c.Refusal) }

// Passes reports whether a step that touched or found rows out of want
// passes the check.
func (c Check) Passes(rows, want int) bool {
	switch c.Kind {
	case EveryRow:
		return rows == want
	case NoRow:
		return rows == 0
	}
	return true
}

// ColumnType says what a column holds, so that a dialect passes it with
// the right type.
type ColumnType int

const (
	TextColumn     ColumnType = iota // []string
	NullTextColumn                   // []sql.NullString
	IntColumn                        // []int64: a quantity or a version
	IDColumn                         // []int64: a row id
	DateColumn                       // []sql.NullString, 2006-01-02 or NULL
	TimeColumn                       // []time.Time
)

// Column is one column of a step's rows.
type Column struct {
	Type   ColumnType
	Values any
}

// Len is the number of rows.
func (c Column) Len() int {
	switch v := c.Values.(type) {
	case []string:
		return len(v)
	case []int64:
		return len(v)
	case []sql.NullString:
		return len(v)
	case []time.Time:
		return len(v)
	}
	return 0
}

// At is row i's value: a string, an int64, a time.Time, or nil for NULL.
func (c Column) At(i int) any {
	switch v := c.Values.(type) {
	case []string:
		return v[i]
	case []int64:
		return v[i]
	case []sql.NullString:
		if !v[i].Valid {
			return nil
		}
		return v[i].String
	case []time.Time:
		return v[i]
	}
	return nil
}

// RowCount is the number of rows of columns.
func RowCount(columns []Column) int {
	if len(columns) == 0 {
		return 0
	}
	return columns[0].Len()
}

// The refusals, one message per rule.
var (
	refuseDuplicate  = Check{Kind: EveryRow, Refusal: servicelayer.ErrDuplicateMessage, Message: "an inbound message was processed already"}
	refuseNotPending = Check{Kind: EveryRow, Refusal: servicelayer.ErrNotDelivered, Message: "a delivery is not pending"}
	refuseCreated    = Check{Kind: EveryRow, Refusal: ErrConflict, Message: "a product was created concurrently"}
	refuseMoved      = Check{Kind: EveryRow, Refusal: ErrConflict, Message: "a product changed since it was read"}
	refuseAllocated  = Check{Kind: NoRow, Refusal: ErrConflict, Message: "a line was allocated already"}
)

// PlanWrite is the plan that writes c: only the steps it needs, in order.
func PlanWrite(c *Changes) Plan {
	p := &planner{plan: Plan{Now: c.Now, FirstAttempt: c.FirstAttempt}}
	p.checks(c)
	p.writes(c)
	p.events(c)
	return p.plan
}

// PlanMarkDone is the plan that marks done deliveries whose handler changed
// nothing stored: the deliveries step of a write, without its check (one no
// longer pending was marked by someone else, or parked), and the wake-up
// of the deliveries that wait for them.
func PlanMarkDone(done []DeliveryKey, now time.Time) Plan {
	p := &planner{plan: Plan{Now: now}}
	if len(done) == 0 {
		return p.plan
	}
	p.add(Step{Name: StepCompleteDeliveries, Rows: deliveryColumns(done), UsesNow: true})
	p.add(Step{Name: StepWakeFollowers, Joins: StepCompleteDeliveries})
	return p.plan
}

// planner adds the steps a write needs.
type planner struct{ plan Plan }

// add adds s unless it has no rows to work on.
func (p *planner) add(s Step) {
	if RowCount(s.Rows) == 0 && s.Joins == 0 {
		return
	}
	p.plan.Steps = append(p.plan.Steps, s)
}

// checks adds the steps that refuse the write: the inbound messages are
// new, the deliveries to complete still pending, the products new or at
// the version they were read at, and lines decided on from a cached product
// not allocated before.
func (p *planner) checks(c *Changes) {
	p.add(Step{Name: StepRecordInbox, Rows: []Column{texts(c.InboxIDs)}, UsesNow: true, Check: refuseDuplicate})
	p.add(Step{Name: StepCompleteDeliveries, Rows: deliveryColumns(c.Completed), UsesNow: true, Check: refuseNotPending})
	p.add(Step{Name: StepInsertProducts, Rows: productColumns(c.NewProducts), Check: refuseCreated})
	var skus []string
	var from, to []int64
	for _, b := range c.Bumped {
		skus, from, to = append(skus, b.SKU), append(from, int64(b.From)), append(to, int64(b.To))
	}
	p.add(Step{Name: StepBumpVersions, Rows: []Column{texts(skus), ints(from), ints(to)}, Check: refuseMoved})
	p.add(Step{Name: StepCheckUnchanged, Rows: productColumns(c.Unchanged), Check: refuseMoved})
	p.add(Step{Name: StepCheckLinesNotLoaded, Rows: lineColumns(c.LinesNotLoaded), Check: refuseAllocated})
}

// writes adds the steps that write batches, their lines and the
// allocations view, and the wake-up of deliveries waiting for one this
// write completes.
func (p *planner) writes(c *Changes) {
	var refs, skus []string
	var purchased, allocated []int64
	var etas []sql.NullString
	for _, b := range c.NewBatches {
		refs, skus = append(refs, b.Ref), append(skus, b.SKU)
		purchased, allocated = append(purchased, int64(b.Purchased)), append(allocated, int64(b.Allocated))
		etas = append(etas, sql.NullString{String: b.ETA.Format(time.DateOnly), Valid: !b.ETA.IsZero()})
	}
	p.add(Step{Name: StepInsertBatches, Rows: []Column{texts(refs), texts(skus), ints(purchased), ints(allocated), {Type: DateColumn, Values: etas}}})
	var ids, changedPurchased, deltas []int64
	for _, b := range c.ChangedBatches {
		ids, changedPurchased, deltas = append(ids, b.ID), append(changedPurchased, int64(b.Purchased)), append(deltas, int64(b.AllocatedDelta))
	}
	p.add(Step{Name: StepChangeBatches, Rows: []Column{idColumn(ids), ints(changedPurchased), ints(deltas)}})
	p.add(Step{Name: StepRemoveLines, Rows: lineColumns(c.RemovedLines)})
	var batchIDs []int64
	var batchRefs []string
	var placed []domain.OrderLine
	for _, l := range c.AddedLines {
		batchIDs, batchRefs, placed = append(batchIDs, l.BatchID), append(batchRefs, l.BatchRef), append(placed, l.Line)
	}
	p.add(Step{Name: StepAddLines, Rows: append([]Column{idColumn(batchIDs), texts(batchRefs)}, lineColumns(placed)...)})
	p.add(Step{Name: StepRemoveViewRows, Rows: lineColumns(c.ViewRemoved)})
	var viewLines []domain.OrderLine
	var viewRefs []string
	for _, r := range c.ViewPut {
		viewLines, viewRefs = append(viewLines, r.Line), append(viewRefs, r.BatchRef)
	}
	p.add(Step{Name: StepPutViewRows, Rows: append(lineColumns(viewLines), texts(viewRefs))})
	if len(c.Completed) > 0 {
		p.add(Step{Name: StepWakeFollowers, Joins: StepCompleteDeliveries})
	}
}

// events adds the steps that log the events and queue their deliveries. A
// delivery is in turn when no delivery of its product and handler was
// pending before, counting as done those this write completes and those
// this process made but did not mark yet.
func (p *planner) events(c *Changes) {
	if len(c.Events) == 0 {
		return
	}
	var cols [8][]string
	var orderIDs, batchRefs []sql.NullString
	var occurred []time.Time
	var deliveryIDs, handlers []string
	for _, ev := range c.Events {
		env := ev.Envelope
		for i, v := range []string{env.MessageID, env.Event.ProductSKU(), env.Event.Name(), ev.Payload, env.CausationID, env.CorrelationID, env.TraceParent, env.TraceState} {
			cols[i] = append(cols[i], v)
		}
		occurred = append(occurred, env.OccurredAt)
		orderIDs = append(orderIDs, sql.NullString{String: ev.OrderID, Valid: ev.OrderID != ""})
		batchRefs = append(batchRefs, sql.NullString{String: ev.BatchRef, Valid: ev.BatchRef != ""})
		for _, h := range ev.Handlers {
			deliveryIDs, handlers = append(deliveryIDs, env.MessageID), append(handlers, h)
		}
	}
	p.add(Step{Name: StepLogEvents, Rows: []Column{
		texts(cols[0]), texts(cols[1]), texts(cols[2]), texts(cols[3]), {Type: TimeColumn, Values: occurred},
		texts(cols[4]), texts(cols[5]), {Type: NullTextColumn, Values: orderIDs}, {Type: NullTextColumn, Values: batchRefs},
		texts(cols[6]), texts(cols[7]),
	}})
	p.add(Step{Name: StepQueueDeliveries, Rows: []Column{texts(deliveryIDs), texts(handlers)},
		Done:  deliveryColumns(append(slices.Clone(c.Completed), c.DeliveredUnmarked...)),
		Joins: StepLogEvents, UsesNow: true, UsesFirstAttempt: true})
}

func texts(v []string) Column { return Column{Type: TextColumn, Values: v} }
func ints(v []int64) Column   { return Column{Type: IntColumn, Values: v} }
func idColumn(v []int64) Column {
	return Column{Type: IDColumn, Values: v}
}

// deliveryColumns are deliveries as rows (event id, handler).
func deliveryColumns(keys []DeliveryKey) []Column {
	ids, handlers := make([]int64, len(keys)), make([]string, len(keys))
	for i, k := range keys {
		ids[i], handlers[i] = k.EventID, k.Handler
	}
	return []Column{idColumn(ids), texts(handlers)}
}

// productColumns are products as rows (sku, version).
func productColumns(products []ProductVersion) []Column {
	var skus []string
	var versions []int64
	for _, p := range products {
		skus, versions = append(skus, p.SKU), append(versions, int64(p.Version))
	}
	return []Column{texts(skus), ints(versions)}
}

// lineColumns are order lines as rows (orderid, sku, qty).
func lineColumns(lines []domain.OrderLine) []Column {
	var orderIDs, skus []string
	var qtys []int64
	for _, l := range lines {
		orderIDs, skus, qtys = append(orderIDs, l.OrderID), append(skus, l.SKU), append(qtys, int64(l.Qty))
	}
	return []Column{texts(orderIDs), texts(skus), ints(qtys)}
}
