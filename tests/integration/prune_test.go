package integration_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"allocation/adapters/sqlstore"
	"allocation/domain"
	"allocation/servicelayer"
	"allocation/tests/testenv"
)

// count runs a count query with ? placeholders on db.
func countRows(t *testing.T, db testDB, query string, args ...any) int {
	t.Helper()
	var n int
	if err := db.Get(&n, db.Rebind(query), args...); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

// The log before a cutoff is pruned a few rows a statement while units of
// work keep writing: what is old and done goes with its deliveries, an old
// event with a pending or dead delivery stays, and so does everything newer.
func TestPruningDeletesOnlyOldDoneHistoryInBatchesWhileWritesContinue(t *testing.T) {
	onEveryEngine(t, func(t *testing.T, open opener) {
		bus, db := busOn(t, open)
		ctx := context.Background()
		sku := testenv.RandomName("PRUNE-")
		handleAll(t, bus, domain.CreateBatch{Ref: sku, SKU: sku, Qty: 1000})
		for i := range 20 {
			if _, err := bus.HandleMessage(ctx, fmt.Sprintf("%s-old-%d", sku, i), domain.Allocate{OrderID: fmt.Sprintf("old%d", i), SKU: sku, Qty: 1}); err != nil {
				t.Fatal(err)
			}
		}
		// Every publication is marked done a moment after it went out;
		// then one old event is left pending and one dead.
		testenv.Eventually(t, 5*time.Second, func() error {
			if n := countRows(t, db, `SELECT count(*) FROM event_deliveries WHERE status <> 'done'`); n != 0 {
				return fmt.Errorf("%d deliveries not done yet", n)
			}
			return nil
		})
		pending, dead := loggedID(t, db, "old3"), loggedID(t, db, "old7")
		db.MustExec(db.Rebind(`UPDATE event_deliveries SET status = 'pending' WHERE event_id = ?`), pending)
		db.MustExec(db.Rebind(`UPDATE event_deliveries SET status = 'dead' WHERE event_id = ?`), dead)
		var newest sqlstore.Timestamp
		if err := db.Get(&newest, `SELECT occurred_at FROM event_log ORDER BY id DESC LIMIT 1`); err != nil {
			t.Fatal(err)
		}
		cutoff := newest.Add(time.Microsecond) // every event so far is older

		// Writes go on while pruning.
		var stats []sqlstore.TableStats
		var err error
		written := allocateWhile(t, bus, sku, func() {
			stats, err = db.store.Prune(ctx, sqlstore.Retention{Events: time.Hour, Inbox: time.Hour, Batch: 3}, cutoff.Add(time.Hour))
		})
		if err != nil {
			t.Fatal(err)
		}

		// Gone: the batch's creation and 18 allocations, their 18 deliveries,
		// the 20 old inbox rows.
		pruned := map[string]int{}
		for _, s := range stats {
			pruned[s.Table] = s.Pruned
		}
		if want := map[string]int{"event_log": 19, "event_deliveries": 18, "inbox": 20}; fmt.Sprint(pruned) != fmt.Sprint(want) {
			t.Fatalf("pruned %v, want %v", pruned, want)
		}
		if n := countRows(t, db, `SELECT count(*) FROM event_log WHERE id IN (?, ?)`, pending, dead); n != 2 {
			t.Fatalf("%d of the events with a pending or dead delivery kept, want both", n)
		}
		if n := countRows(t, db, `SELECT count(*) FROM event_log WHERE orderid LIKE 'new%'`); n != written {
			t.Fatalf("%d events written while pruning are left, want all %d", n, written)
		}
		if n := countRows(t, db, `SELECT count(*) FROM event_deliveries d WHERE NOT EXISTS (SELECT 1 FROM event_log e WHERE e.id = d.event_id)`); n != 0 {
			t.Fatalf("%d deliveries of pruned events left behind", n)
		}
		if n := countRows(t, db, `SELECT count(*) FROM inbox WHERE message_id LIKE ?`, sku+"-new-%"); n != written {
			t.Fatalf("%d inbox rows of the messages handled while pruning, want %d", n, written)
		}
	})
}

// allocateWhile allocates lines new0, new1, … of sku, each with a message
// id, from the first allocation until fn returns, and returns how many it
// allocated.
func allocateWhile(t *testing.T, bus *servicelayer.Bus, sku string, fn func()) int {
	t.Helper()
	var wg sync.WaitGroup
	stop, started := make(chan struct{}), make(chan struct{})
	written := 0
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ; ; written++ {
			if written == 1 {
				close(started)
			}
			select {
			case <-stop:
				return
			default:
			}
			if _, err := bus.HandleMessage(context.Background(), fmt.Sprintf("%s-new-%d", sku, written), domain.Allocate{OrderID: fmt.Sprintf("new%d", written), SKU: sku, Qty: 1}); err != nil {
				t.Errorf("allocate while pruning: %v", err)
				return
			}
		}
	}()
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Error("no write went through in 10s")
	}
	fn()
	close(stop)
	wg.Wait()
	return written
}

// loggedID is the id of the allocated event of order.
func loggedID(t *testing.T, db testDB, order string) int64 {
	t.Helper()
	var id int64
	if err := db.Get(&id, db.Rebind(`SELECT id FROM event_log WHERE orderid = ? AND name = 'allocated'`), order); err != nil {
		t.Fatalf("event of %s: %v", order, err)
	}
	return id
}

func TestPruningWithZeroRetentionKeepsEverything(t *testing.T) {
	onEveryEngine(t, func(t *testing.T, open opener) {
		bus, db := busOn(t, open)
		sku := testenv.RandomName("KEEP-")
		handleAll(t, bus, domain.CreateBatch{Ref: sku, SKU: sku, Qty: 10}, domain.Allocate{OrderID: "o1", SKU: sku, Qty: 1})
		stats, err := db.store.Prune(context.Background(), sqlstore.Retention{}, time.Now().Add(24*365*time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range stats {
			if s.Pruned != 0 {
				t.Fatalf("pruned %d rows of %s with retention 0", s.Pruned, s.Table)
			}
			if s.Table == "event_log" && (s.Rows != 2 || s.Oldest.IsZero()) {
				t.Fatalf("event_log: %+v, want 2 rows kept and the oldest's time", s)
			}
		}
	})
}

// Replicas prune one at a time: while one holds the lock, another's pass
// does nothing.
func TestPostgresReplicasPruneOneAtATime(t *testing.T) {
	t.Parallel()
	bus, db := postgresBus(t)
	sku := testenv.RandomName("LOCKED-")
	handleAll(t, bus, domain.CreateBatch{Ref: sku, SKU: sku, Qty: 10})
	ctx := context.Background()
	conn, err := db.Connx(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	const pruneLockKey = 0x616c6c6f63707275 // adapters/postgres/prune.go
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock($1)`, int64(pruneLockKey)); err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(time.Hour)
	stats, err := db.store.Prune(ctx, sqlstore.Retention{Events: time.Minute}, later)
	if err != nil || stats != nil || countRows(t, db, `SELECT count(*) FROM event_log`) != 1 {
		t.Fatalf("pruned while another held the lock: %v, %v", stats, err)
	}
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_unlock($1)`, int64(pruneLockKey)); err != nil {
		t.Fatal(err)
	}
	if stats, err := db.store.Prune(ctx, sqlstore.Retention{Events: time.Minute}, later); err != nil || stats[0].Pruned != 1 {
		t.Fatalf("after the lock was released: %v, %v; want the event pruned", stats, err)
	}
}
