package sqlite

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"allocation/adapters/sqlstore"
	"allocation/tests/testenv"
)

// Marking a delivery done wakes the dispatchers when a delivery of its
// product was queued behind it (due at once, waiting its turn), and not
// when the one after it is in turn, left to the process that committed it.
// The PostgreSQL statement is pinned by the same rule in
// tests/integration (TestMarkingDoneWakesTheDispatchersOnlyForADeliveryQueuedBehindIt).
func TestMarkingDoneWakesTheDispatchersOnlyForADeliveryQueuedBehindIt(t *testing.T) {
	ctx := context.Background()
	db, err := Open(ctx, filepath.Join(testenv.SQLiteDir(t), "allocation.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	stmts := sqlstore.NewStatements(db, Classify)
	defer stmts.Close()
	now := time.Now().UTC()
	queue := func(sku string, due time.Time) int64 {
		t.Helper()
		res, err := db.ExecContext(ctx, `INSERT INTO event_log (message_id, aggregate, name, payload, occurred_at) VALUES (?, ?, 'allocated', '{}', ?)`,
			testenv.RandomName("m-"), sku, now)
		if err != nil {
			t.Fatal(err)
		}
		id, _ := res.LastInsertId()
		if _, err := db.ExecContext(ctx, `INSERT INTO event_deliveries (event_id, handler, aggregate, next_attempt_at, updated_at) VALUES (?, 'publish', ?, ?, ?)`,
			id, sku, due, now); err != nil {
			t.Fatal(err)
		}
		return id
	}
	markDone := func(id int64) (wake bool) {
		t.Helper()
		_, wake, err := sqlstore.RunPlan(ctx, db, stmts, steps, sqlstore.PlanMarkDone([]sqlstore.DeliveryKey{{EventID: id, Handler: "publish"}}, now))
		if err != nil {
			t.Fatalf("mark %d done: %v", id, err)
		}
		return wake
	}

	first := queue("IN-TURN", now)
	queue("IN-TURN", now.Add(2*time.Second)) // in turn: its process delivers it
	if markDone(first) {
		t.Error("marking done woke the dispatchers for a delivery its own process is delivering")
	}
	first = queue("BEHIND", now)
	queue("BEHIND", now) // queued behind the first: due at once, waiting
	if !markDone(first) {
		t.Error("marking done did not wake the dispatchers for the delivery waiting behind it")
	}
}
