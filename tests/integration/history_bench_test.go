package integration_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"allocation/adapters/sqlstore"
	"allocation/servicelayer"
)

// historyEvents is the size of the log the history benchmarks read.
const historyEvents = 1_000_000

// fillHistory writes historyEvents events in one statement: a thousand
// products, five thousand batches, an order per allocation, one event in
// ten a batch_created, one a second up to now.
func fillHistory(b *testing.B, db testDB) {
	b.Helper()
	start := time.Now()
	db.MustExec(`INSERT INTO event_log (message_id, aggregate, name, payload, occurred_at, orderid, batchref)
		SELECT gen_random_uuid(), 'SKU-' || (g % 1000), kind,
		       jsonb_build_object('sku', 'SKU-' || (g % 1000), 'qty', 1, 'batchref', 'b' || (g % 5000))
		         || CASE WHEN kind = 'allocated' THEN jsonb_build_object('orderid', 'o' || g) ELSE '{}' END,
		       now() - (($1 - g) * interval '1 second'),
		       CASE WHEN kind = 'allocated' THEN 'o' || g END, 'b' || (g % 5000)
		FROM generate_series(1, $1) g, LATERAL (SELECT CASE WHEN g % 10 = 0 THEN 'batch_created' ELSE 'allocated' END AS kind) k`, historyEvents)
	db.MustExec(`ANALYZE event_log`)
	b.Logf("%d events written in %s", historyEvents, time.Since(start).Round(time.Millisecond))
}

// BenchmarkEventsPage reads pages of a log of a million events, at its
// start and deep in it, with and without filters: the cost of a page must
// not grow with the log. Each reports its median (p50-ms).
//
//	go test ./tests/integration -run '^$' -bench BenchmarkEventsPage -benchtime 500x
func BenchmarkEventsPage(b *testing.B) {
	db := freshPG(b)
	fillHistory(b, db)
	deep := int64(historyEvents * 9 / 10)
	for _, c := range []struct {
		name string
		q    servicelayer.EventQuery
	}{
		{"first-page", servicelayer.EventQuery{Limit: 100}},
		{"deep-page", servicelayer.EventQuery{After: deep, Limit: 100}},
		{"deep-page-max-limit", servicelayer.EventQuery{After: deep, Limit: servicelayer.MaxEventsPage + 1}},
		{"sku-first-page", servicelayer.EventQuery{SKU: "SKU-7", Limit: 100}},
		{"sku-deep-page", servicelayer.EventQuery{SKU: "SKU-7", After: deep, Limit: 100}},
		{"batch-deep-page", servicelayer.EventQuery{BatchRef: "b42", After: deep, Limit: 100}},
		{"order", servicelayer.EventQuery{OrderID: "o876543", Limit: 1000}},
		{"type-deep-page", servicelayer.EventQuery{Type: "batch_created", After: deep, Limit: 100}},
		{"sku-and-type-deep-page", servicelayer.EventQuery{SKU: "SKU-10", Type: "batch_created", After: deep, Limit: 100}},
	} {
		b.Run(c.name, func(b *testing.B) {
			ctx := context.Background()
			var took []time.Duration
			for b.Loop() {
				start := time.Now()
				found, err := db.store.Events(ctx, c.q)
				took = append(took, time.Since(start))
				if err != nil || len(found) == 0 {
					b.Fatalf("%d events, %v", len(found), err)
				}
			}
			b.ReportMetric(p50(took), "p50-ms")
		})
	}
}

// BenchmarkPruneBatch deletes the oldest events of a million, a thousand a
// statement: how long retention holds a batch's rows.
//
//	go test ./tests/integration -run '^$' -bench BenchmarkPruneBatch -benchtime 50x
func BenchmarkPruneBatch(b *testing.B) {
	db := freshPG(b)
	fillHistory(b, db)
	ctx := context.Background()
	var took []time.Duration
	// Each pass finds the next thousand: events older than a cutoff that
	// moves by a thousand seconds (one event a second).
	cutoff := time.Now().Add(-historyEvents * time.Second)
	for b.Loop() {
		cutoff = cutoff.Add(sqlstore.PruneBatch * time.Second)
		start := time.Now()
		stats, err := db.store.Prune(ctx, sqlstore.Retention{Events: time.Hour}, cutoff.Add(time.Hour))
		took = append(took, time.Since(start))
		if err != nil || stats[0].Pruned == 0 {
			b.Fatalf("%v, %v", stats, err)
		}
	}
	b.ReportMetric(p50(took), "p50-ms")
}

// p50 is the median of took, in milliseconds.
func p50(took []time.Duration) float64 {
	slices.Sort(took)
	return float64(took[len(took)/2].Microseconds()) / 1000
}
