package postgres

import (
	"fmt"
	"reflect"
	"testing"
	"time"

	"allocation/adapters/sqlstore"
	"allocation/domain"
	"allocation/servicelayer"
)

// allocation is the changes of n allocations on as many products, each
// logging one event; unmarked counts a delivery made and not marked yet.
func allocation(n int, unmarked bool, at time.Time) *sqlstore.Changes {
	c := &sqlstore.Changes{Now: at, FirstAttempt: at.Add(2 * time.Second)}
	for i := range n {
		sku, order := fmt.Sprintf("SKU-%d-%d", n, i), fmt.Sprintf("o-%d-%d", n, i)
		line := domain.OrderLine{OrderID: order, SKU: sku, Qty: i + 1}
		c.Bumped = append(c.Bumped, sqlstore.VersionBump{SKU: sku, From: i, To: i + 1})
		c.ChangedBatches = append(c.ChangedBatches, sqlstore.BatchChange{ID: int64(100 + i), Purchased: 10, AllocatedDelta: i + 1})
		c.AddedLines = append(c.AddedLines, sqlstore.PlacedLine{BatchID: int64(100 + i), BatchRef: "b-" + sku, Line: line})
		c.ViewPut = append(c.ViewPut, sqlstore.ViewRow{Line: line, BatchRef: "b-" + sku})
		c.Events = append(c.Events, sqlstore.LoggedEvent{
			Envelope: servicelayer.Envelope{MessageID: fmt.Sprintf("m-%d-%d", n, i), OccurredAt: at, Event: domain.Allocated{OrderID: order, SKU: sku, Qty: i + 1, BatchRef: "b-" + sku}},
			Payload:  "{}", OrderID: order, BatchRef: "b-" + sku, Handlers: []string{"publish"},
		})
	}
	if unmarked {
		c.DeliveredUnmarked = []sqlstore.DeliveryKey{{EventID: int64(n), Handler: "publish"}}
	}
	return c
}

// A statement composed once for a shape of plan is the one composed afresh
// for another plan of that shape, with that plan's arguments: the cache
// of built statements never hands a plan another's text or rows.
func TestABuiltStatementIsTheOneComposedForThePlan(t *testing.T) {
	at := time.Date(2026, 12, 2, 18, 0, 0, 0, time.UTC)
	plans := map[string][2]sqlstore.Plan{
		"one allocation":                 {sqlstore.PlanWrite(allocation(1, false, at)), sqlstore.PlanWrite(allocation(1, false, at.Add(time.Minute)))},
		"a group of allocations":         {sqlstore.PlanWrite(allocation(3, false, at)), sqlstore.PlanWrite(allocation(5, false, at.Add(time.Hour)))},
		"with a delivery not marked yet": {sqlstore.PlanWrite(allocation(2, true, at)), sqlstore.PlanWrite(allocation(4, true, at.Add(time.Second)))},
		"marking done": {
			sqlstore.PlanMarkDone([]sqlstore.DeliveryKey{{EventID: 1, Handler: "publish"}}, at),
			sqlstore.PlanMarkDone([]sqlstore.DeliveryKey{{EventID: 7, Handler: "publish"}, {EventID: 9, Handler: "reallocate"}}, at.Add(time.Minute)),
		},
	}
	queries := map[string]string{}
	for name, pair := range plans {
		first, second := pair[0], pair[1]
		if shapeOf(first) != shapeOf(second) {
			t.Fatalf("%s: the two plans differ in shape: %q, %q", name, shapeOf(first), shapeOf(second))
		}
		buildWrite(first) // composes and remembers the shape
		query, args := buildWrite(second)
		fresh := compose(second)
		if query != fresh.query {
			t.Errorf("%s: the remembered text differs from the one composed afresh:\n%s\n---\n%s", name, query, fresh.query)
		}
		if !reflect.DeepEqual(args, fresh.args) {
			t.Errorf("%s: arguments %v, want %v", name, args, fresh.args)
		}
		queries[name] = query
	}
	// Plans of different shapes have different statements.
	if queries["one allocation"] == queries["with a delivery not marked yet"] || queries["one allocation"] == queries["marking done"] {
		t.Error("plans of different shapes were given the same statement")
	}
}
