package integration_test

import (
	"context"
	"database/sql"
	"errors"
	"log/slog"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"allocation/adapters/sqlite"
	"allocation/adapters/sqlstore"
	"allocation/bootstrap"
	"allocation/domain"
	"allocation/servicelayer"
	"allocation/tests/testenv"
)

// The embedded mode's promise: stop the service, start it again on the same
// file, and everything is there. Migrating an up-to-date file changes nothing.
func TestSQLiteKeepsTheDataAcrossARestart(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(testenv.SQLiteDir(t), "data", "allocation.db") // the directory is created
	run := func(cmds ...domain.Command) *sqlstore.Store {
		db, err := sqlite.Open(ctx, path)
		if err != nil {
			t.Fatalf("open: %v", err)
		}
		t.Cleanup(func() { db.Close() })
		if err := sqlite.Migrate(ctx, db); err != nil {
			t.Fatalf("migrate: %v", err)
		}
		store := sqlite.NewStore(db, bootstrap.StoreOptions(slog.Default()))
		t.Cleanup(func() { store.Close() })
		handleAll(t, servicelayer.NewBus(servicelayer.Dependencies{UoW: store, Publisher: &recordingPublisher{}, Notifier: nopNotifier{}}), cmds...)
		return store
	}
	first := run(
		domain.CreateBatch{Ref: "early", SKU: "CLOCK", Qty: 10, ETA: time.Date(2011, 1, 1, 0, 0, 0, 0, time.UTC)},
		domain.CreateBatch{Ref: "later", SKU: "CLOCK", Qty: 10, ETA: time.Date(2011, 1, 2, 0, 0, 0, 0, time.UTC)},
		domain.Allocate{OrderID: "o1", SKU: "CLOCK", Qty: 10},
		domain.ChangeBatchQuantity{Ref: "early", Qty: 5})
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}

	again := run() // a new process on the same file
	got, err := again.Allocations(ctx, "o1")
	if want := []servicelayer.Allocation{{SKU: "CLOCK", BatchRef: "later"}}; err != nil || !slices.Equal(got, want) {
		t.Fatalf("after the restart the view says %v (%v), want %v", got, err, want)
	}
	_, err = again.Do(ctx, func(tx servicelayer.Tx) error {
		p, err := tx.Products().Get(ctx, "CLOCK")
		if err != nil || p == nil {
			return errors.Join(errors.New("product CLOCK is gone"), err)
		}
		if early, later := p.Batch("early"), p.Batch("later"); early.PurchasedQty() != 5 || later.AvailableQty() != 0 ||
			!later.ETA().Equal(time.Date(2011, 1, 2, 0, 0, 0, 0, time.UTC)) {
			t.Errorf("after the restart: early %d purchased, later %d available, eta %v", early.PurchasedQty(), later.AvailableQty(), later.ETA())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// Times are stored as text. The dispatcher asks which deliveries are due
// (next_attempt_at <= now) and when the next one falls due (min): as text,
// the times must sort as the times do, whatever their fractions of a second.
func TestSQLiteStoredTimesCompareAsTheTimesDo(t *testing.T) {
	t.Parallel()
	db := freshSQLite(t)
	ctx := context.Background()
	base := time.Now().UTC().Truncate(time.Second).Add(-time.Hour)
	times := map[string]time.Time{
		"a-later-fraction":  base.Add(500 * time.Millisecond),
		"b-longer-fraction": base.Add(450 * time.Millisecond),
		"c-whole-second":    base,
		"d-local-zone":      base.Add(100 * time.Millisecond).In(time.FixedZone("east", 5*3600)),
		"e-future":          time.Now().Add(time.Hour),
	}
	for aggregate, at := range times {
		if _, err := db.ExecContext(ctx, `INSERT INTO event_log (message_id, aggregate, name, payload, occurred_at) VALUES (?, ?, 'allocated', ?, ?)`,
			aggregate, aggregate, `{"orderid":"o","sku":"`+aggregate+`","qty":1,"batchref":"b"}`, at); err != nil {
			t.Fatal(err)
		}
		if _, err := db.ExecContext(ctx, `INSERT INTO event_deliveries (event_id, handler, aggregate, next_attempt_at, updated_at)
			SELECT id, 'publish_line_allocated', aggregate, ?, ? FROM event_log WHERE message_id = ?`, at, at, aggregate); err != nil {
			t.Fatal(err)
		}
	}
	next, err := db.store.NextDue(ctx)
	if err != nil || !next.Equal(base) {
		t.Fatalf("next due %v (%v), want the earliest, %v", next, err, base)
	}
	due, err := db.store.Due(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	var dueSKUs []string
	for _, d := range due {
		dueSKUs = append(dueSKUs, d.Event.ProductSKU())
	}
	slices.Sort(dueSKUs)
	if want := []string{"a-later-fraction", "b-longer-fraction", "c-whole-second", "d-local-zone"}; !slices.Equal(dueSKUs, want) {
		t.Fatalf("due %v, want %v", dueSKUs, want)
	}
	var stored string
	if err := db.GetContext(ctx, &stored, `SELECT next_attempt_at FROM event_deliveries WHERE aggregate = 'd-local-zone'`); err != nil {
		t.Fatal(err)
	}
	if want := base.Add(100 * time.Millisecond).Format("2006-01-02 15:04:05.999999999-07:00"); stored != want {
		t.Fatalf("stored %q, want UTC %q", stored, want)
	}
}

// What SQLite refuses becomes what the store acts on: a concurrent insert of
// a key, a decision on stale totals, and a file locked by another process
// are conflicts (the unit of work runs again); anything else is an error.
func TestSQLiteClassifiesWhatItRefuses(t *testing.T) {
	t.Parallel()
	path := filepath.Join(testenv.SQLiteDir(t), "allocation.db")
	db := openSQLite(t, path)
	ctx := context.Background()
	if err := sqlite.Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	db.MustExec(`INSERT INTO products (sku) VALUES ('S')`)
	db.MustExec(`INSERT INTO batches (reference, sku, purchased_quantity, allocated_quantity) VALUES ('b', 'S', 10, 2)`)
	db.MustExec(`INSERT INTO allocations (batch_id, orderid, sku, qty) SELECT id, 'o', 'S', 2 FROM batches`)

	exec := func(query string) error {
		_, err := db.ExecContext(ctx, query)
		if err == nil {
			t.Fatalf("%s was accepted", query)
		}
		return sqlite.Classify(err)
	}
	for _, conflict := range []string{
		`INSERT INTO allocations (batch_id, orderid, sku, qty) SELECT id, 'o', 'S', 2 FROM batches`,
		`INSERT INTO batches (reference, sku, purchased_quantity) VALUES ('b', 'S', 1)`,
		`UPDATE batches SET allocated_quantity = 11`,
	} {
		if err := exec(conflict); !errors.Is(err, sqlstore.ErrConflict) {
			t.Errorf("%s: %v, want a conflict", conflict, err)
		}
	}
	for _, refused := range []string{
		`INSERT INTO batches (reference, sku, purchased_quantity) VALUES ('c', 'S', -1)`,   // another check
		`INSERT INTO batches (reference, sku, purchased_quantity) VALUES ('c', 'NONE', 1)`, // foreign key
		`INSERT INTO products (sku) VALUES (NULL)`,
	} {
		if err := exec(refused); errors.Is(err, sqlstore.ErrConflict) || errors.Is(err, servicelayer.ErrUnavailable) {
			t.Errorf("%s: %v, want a plain error", refused, err)
		}
	}

	// Another process holds the write lock; this one does not wait for it.
	other, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(0)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Close() })
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, `BEGIN IMMEDIATE`); err != nil {
		t.Fatal(err)
	}
	defer func() { _, _ = conn.ExecContext(ctx, `ROLLBACK`) }()
	_, err = other.ExecContext(ctx, `INSERT INTO products (sku) VALUES ('T')`)
	if err = sqlite.Classify(err); !errors.Is(err, sqlstore.ErrConflict) || !errors.Is(err, servicelayer.ErrUnavailable) {
		t.Fatalf("a locked file: %v, want a conflict that says the database is unavailable", err)
	}
}
