package integration_test

import (
	"context"
	"database/sql/driver"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"allocation/adapters/postgres"
	"allocation/adapters/sqlite"
	"allocation/adapters/sqlstore"
)

// duePlan runs EXPLAIN (ANALYZE, BUFFERS) of the dispatcher's due query and
// returns the plan's text and how many buffers it touched.
func duePlan(t *testing.T, db testDB) (string, int) {
	t.Helper()
	var raw []byte
	query := sqlx.Rebind(sqlx.DOLLAR, "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) "+sqlstore.DueQuery((&postgres.Dialect{}).HeadsQuery()))
	if err := db.Get(&raw, query, time.Now().UTC(), 100); err != nil {
		t.Fatalf("explain the due query: %v", err)
	}
	var plans []struct {
		Plan struct {
			SharedHit  int `json:"Shared Hit Blocks"`
			SharedRead int `json:"Shared Read Blocks"`
		} `json:"Plan"`
	}
	if err := json.Unmarshal(raw, &plans); err != nil || len(plans) != 1 {
		t.Fatalf("plan %s: %v", raw, err)
	}
	return string(raw), plans[0].Plan.SharedHit + plans[0].Plan.SharedRead
}

// pendOn queues n pending publications on product sku, with their events.
func pendOn(t *testing.T, db testDB, sku string, n int) {
	t.Helper()
	if _, err := db.Exec(`
		WITH e AS (
			INSERT INTO event_log (message_id, aggregate, name, payload, occurred_at)
			SELECT gen_random_uuid(), $1::text, 'allocated', jsonb_build_object('orderid', 'o' || i, 'sku', $1::text, 'qty', 1, 'batchref', 'b'), now()
			FROM generate_series(1, $2::int) i RETURNING id)
		INSERT INTO event_deliveries (event_id, handler, aggregate, next_attempt_at)
		SELECT id, 'publish', $1::text, now() FROM e`, sku, n); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`ANALYZE event_deliveries`); err != nil {
		t.Fatal(err)
	}
}

// The dispatcher asks "what is due" every round, and most often during an
// outage's backlog: the query walks the index of open deliveries from one
// product to the next, so that 100,000 pending on one product cost what 10
// do, not a scan of them all.
func TestTheDueQueryCostsTheSameAt10Or100000PendingOnAProduct(t *testing.T) {
	t.Parallel()
	db := freshPG(t)
	pendOn(t, db, "SMALL", 10)
	pendOn(t, db, "OTHER", 3)
	_, small := duePlan(t, db)
	pendOn(t, db, "BIG", 100_000)
	plan, big := duePlan(t, db)
	var indexPages int
	if err := db.Get(&indexPages, `SELECT pg_relation_size('event_deliveries_open_idx') / current_setting('block_size')::int`); err != nil {
		t.Fatal(err)
	}
	t.Logf("buffers touched: %d with 13 pending, %d with 100,013; the open deliveries' index has %d pages", small, big, indexPages)
	// A lookup descends the index (a few pages more as it deepens); a
	// scan would read it all.
	if big*10 > indexPages || !strings.Contains(plan, "event_deliveries_open_idx") {
		t.Fatalf("the due query touched %d buffers with 100,000 pending (%d with 10; the index has %d pages): it scans the backlog\n%s", big, small, indexPages, plan)
	}
}

// Marking deliveries done looks them up by key in event_deliveries, a table
// that starts empty and grows with every event. The bookkeeping pool plans
// the statement at every execution: a plan made on the empty table and kept
// would scan every row of the grown one, since a server with autovacuum off
// never re-analyzes it (a mark then cost 3 ms by the end of a one-minute
// bench, against 0.3 ms).
func TestMarkingDoneLooksDeliveriesUpByKeyOnceTheTableHasGrown(t *testing.T) {
	t.Parallel()
	db := freshPG(t)
	ctx := context.Background()
	pool, err := postgres.OpenBookkeeping(db.url)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	conn, err := pool.Connx(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	query, args := postgres.MarkDoneStatement([]sqlstore.DeliveryKey{{EventID: 7, Handler: "publish"}}, time.Now())
	if _, err := conn.ExecContext(ctx, "PREPARE mark AS "+query); err != nil {
		t.Fatalf("prepare the mark: %v", err)
	}
	// EXECUTE takes its arguments as literals.
	literals := make([]string, len(args))
	for i, a := range args {
		if v, ok := a.(driver.Valuer); ok {
			if a, err = v.Value(); err != nil {
				t.Fatal(err)
			}
		}
		switch a := a.(type) {
		case []byte:
			literals[i] = pq.QuoteLiteral(string(a))
		case time.Time:
			literals[i] = pq.QuoteLiteral(a.Format(time.RFC3339Nano))
		default:
			literals[i] = pq.QuoteLiteral(fmt.Sprint(a))
		}
	}
	explain := func() string {
		var lines []string
		if err := conn.SelectContext(ctx, &lines, "EXPLAIN EXECUTE mark("+strings.Join(literals, ", ")+")"); err != nil {
			t.Fatalf("explain the mark: %v", err)
		}
		return strings.Join(lines, "\n")
	}
	explain() // the first execution, on the empty table
	if _, err := db.Exec(`
		WITH e AS (
			INSERT INTO event_log (message_id, aggregate, name, payload, occurred_at)
			SELECT gen_random_uuid(), 'SKU-' || (i % 100), 'allocated', '{}'::jsonb, now() FROM generate_series(1, 100000) i RETURNING id, aggregate)
		INSERT INTO event_deliveries (event_id, handler, aggregate, next_attempt_at, status)
		SELECT id, 'publish', aggregate, now(), 'done' FROM e`); err != nil {
		t.Fatal(err)
	}
	if plan := explain(); strings.Contains(plan, "Seq Scan on event_deliveries") {
		t.Fatalf("with 100,000 deliveries, marking one done scans them all:\n%s", plan)
	}
}

// Marking a delivery done wakes the dispatchers when a delivery of its
// product was queued behind it (due at once, waiting its turn), and not
// when the one after it is in turn, left to the process that committed it:
// at 32 clients over 100 SKUs that woke them about a hundred times a
// second for nothing, two queries each. The rule is SQL text that differs
// per engine, so each engine's mark is run here.
func TestMarkingDoneWakesTheDispatchersOnlyForADeliveryQueuedBehindIt(t *testing.T) {
	onEveryEngine(t, func(t *testing.T, open opener) {
		db := open(t)
		now := time.Now().UTC()
		// queue logs an event of sku and queues its publication, due at due.
		queue := func(sku string, due time.Time) int64 {
			t.Helper()
			var id int64
			if err := db.Get(&id, db.Rebind(`INSERT INTO event_log (message_id, aggregate, name, payload, occurred_at)
				VALUES (?, ?, 'allocated', '{}', ?) RETURNING id`), uuid.NewString(), sku, now); err != nil {
				t.Fatal(err)
			}
			if _, err := db.Exec(db.Rebind(`INSERT INTO event_deliveries (event_id, handler, aggregate, next_attempt_at, updated_at)
				VALUES (?, 'publish', ?, ?, ?)`), id, sku, due, now); err != nil {
				t.Fatal(err)
			}
			return id
		}
		markDone := markDoneOn(t, db)

		first := queue("IN-TURN", now)
		queue("IN-TURN", now.Add(2*time.Second)) // in turn: its process delivers it
		if markDone(first, now) {
			t.Error("marking done woke the dispatchers for a delivery its own process is delivering")
		}
		first = queue("BEHIND", now)
		queue("BEHIND", now) // queued behind the first: due at once, waiting
		if !markDone(first, now) {
			t.Error("marking done did not wake the dispatchers for the delivery waiting behind it")
		}
	})
}

// markDoneOn returns what marks a publication done on db's engine, with the
// statements the store runs, and says whether it woke the dispatchers.
func markDoneOn(t *testing.T, db testDB) func(id int64, now time.Time) (woke bool) {
	done := func(id int64) []sqlstore.DeliveryKey {
		return []sqlstore.DeliveryKey{{EventID: id, Handler: "publish"}}
	}
	if db.url == "" { // SQLite
		stmts := sqlstore.NewStatements(db.DB, sqlite.Classify)
		t.Cleanup(func() { stmts.Close() })
		return func(id int64, now time.Time) bool {
			t.Helper()
			woke, err := sqlite.RunMarkDone(context.Background(), db.DB, stmts, done(id), now)
			if err != nil {
				t.Fatalf("mark %d done: %v", id, err)
			}
			return woke
		}
	}
	return func(id int64, now time.Time) bool {
		t.Helper()
		query, args := postgres.MarkDoneStatement(done(id), now)
		var rows []struct {
			MessageID   *string `db:"message_id"`
			EventID     *int64  `db:"event_id"`
			Handler     *string `db:"handler"`
			FirstInLine *bool   `db:"in_turn"`
			Notified    bool    `db:"notified"`
		}
		if err := db.Select(&rows, query, args...); err != nil || len(rows) != 1 {
			t.Fatalf("mark %d done: %v, %v", id, rows, err)
		}
		return rows[0].Notified
	}
}
