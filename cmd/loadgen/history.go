package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"syscall"
	"time"

	"github.com/jmoiron/sqlx"
	goredis "github.com/redis/go-redis/v9"

	"allocation/entrypoints/wire"
)

// The history phases run two more services, each on a fresh database that
// already holds historySize events older than an hour, all delivered:
//
//   - "keep" (EVENT_RETENTION=0): GET /events, the first page and a page
//     deep in the log, historySamples times each (target p50 < 5 ms);
//   - both under the same allocate load, in turn, "prune" (EVENT_RETENTION=1h,
//     PRUNE_INTERVAL=1s) deleting its old history meanwhile: allocate p99
//     with pruning against without (target ≤ 1.2×), and how many events a
//     second the pruner deleted.
const (
	historySize    = 1_000_000
	historySamples = 200
	historyClients = 16
	// pruneRounds: a p99 over 8 s moves by a third from run to run on
	// this machine; three rounds a side average most of that out.
	pruneRounds = 3
)

// fillOldHistory writes n events, one a second ending an hour ago, in one
// statement: a thousand products, an order per allocation.
const fillOldHistory = `
INSERT INTO event_log (message_id, aggregate, name, payload, occurred_at, orderid, batchref)
SELECT gen_random_uuid(), 'OLD-' || (g % 1000), 'allocated',
       jsonb_build_object('sku', 'OLD-' || (g % 1000), 'qty', 1, 'batchref', 'b' || (g % 5000), 'orderid', 'o' || g),
       now() - interval '1 hour' - (($1 - g) * interval '1 second'), 'o' || g, 'b' || (g % 5000)
FROM generate_series(1, $1::int) g`

// historyService is one of the two services and its database.
type historyService struct {
	*bench
	svc     *service
	dbName  string
	cleanup func()
}

func historyPhases(ctx context.Context, cfg config, rdb *goredis.Client, t *table) error {
	keep, err := startHistoryService(ctx, cfg, rdb, "EVENT_RETENTION=0")
	if err != nil {
		return err
	}
	defer keep.cleanup()
	if err := keep.pages(ctx, t); err != nil {
		return err
	}
	prune, err := startHistoryService(ctx, cfg, rdb, "EVENT_RETENTION=1h", "PRUNE_INTERVAL=1s")
	if err != nil {
		return err
	}
	defer prune.cleanup()
	return compareUnderPruning(ctx, cfg, keep, prune, t)
}

// startHistoryService starts a service with env on a fresh database filled
// with the old history.
func startHistoryService(ctx context.Context, cfg config, rdb *goredis.Client, env ...string) (*historyService, error) {
	h := &historyService{bench: &bench{http: newHTTPClient(), rdb: rdb, run: randomName(""), prefix: randomName("benchhist") + "."},
		dbName: randomName("bench_history_")}
	dbURL, err := createDatabase(ctx, cfg.adminURL, h.dbName)
	if err != nil {
		return nil, err
	}
	var cleanups []func()
	h.cleanup = func() {
		for i := len(cleanups) - 1; i >= 0; i-- {
			cleanups[i]()
		}
	}
	cleanups = append(cleanups, func() {
		dctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = dropDatabase(dctx, cfg.adminURL, h.dbName)
	})
	progress("history: a service with %v on a database of %s old events", env, thousands(historySize))
	h.svc, err = startProcess(ctx, cfg.bin, h.prefix, rdb, append([]string{"DATABASE_URL=" + dbURL, "REDIS_URL=" + cfg.redisURL}, env...)...)
	if err != nil {
		h.cleanup()
		return nil, err
	}
	cleanups = append(cleanups, func() { deleteKeys(rdb, h.prefix) }, h.svc.stop)
	h.url = h.svc.url
	if h.db, err = sqlx.ConnectContext(ctx, "postgres", dbURL); err != nil {
		h.cleanup()
		return nil, err
	}
	cleanups = append(cleanups, func() { h.db.Close() })
	if _, err := h.db.ExecContext(ctx, fillOldHistory, historySize); err != nil {
		h.cleanup()
		return nil, fmt.Errorf("fill the history: %w", err)
	}
	if _, err := h.db.ExecContext(ctx, `ANALYZE event_log`); err != nil {
		h.cleanup()
		return nil, err
	}
	return h, nil
}

// pages times GET /events: the first page, and a page 900,000 events in.
func (h *historyService) pages(ctx context.Context, t *table) error {
	var first int64
	if err := h.db.GetContext(ctx, &first, `SELECT min(id) FROM event_log`); err != nil {
		return err
	}
	for _, p := range []struct{ name, query string }{
		{"first page", "/events?limit=100"},
		{"a page 900,000 events in", "/events?limit=100&after=" + wire.Cursor(first+historySize*9/10)},
	} {
		var rec recorder
		for range historySamples {
			var t0 time.Time
			err := h.get(ctx, p.query, &t0)
			rec.add(time.Since(t0), err)
		}
		s := rec.summary(0)
		t.add(row{name: fmt.Sprintf("GET /events, %s of %s", p.name, thousands(historySize)), p50: ms(s.p50), p99: ms(s.p99),
			fail: fmt.Sprint(s.failures), target: "p50 < 5 ms", met: mark(s.failures == 0 && s.p50 < 5*time.Millisecond)}, s.firstErr)
	}
	return nil
}

// get asks for path and sets *start to when the request went out, so that
// the caller times the request alone.
func (h *historyService) get(ctx context.Context, path string, start *time.Time) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.url+path, nil)
	if err != nil {
		return err
	}
	*start = time.Now()
	resp, err := h.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s answered %d", path, resp.StatusCode)
	}
	return nil
}

// compareUnderPruning runs the same allocate load on both services in turn,
// pruneRounds times, each for the phase's time: "keep" while the pruning service
// is stopped (SIGSTOP), so that nothing prunes anywhere, then "prune" while
// it deletes its old history. Alternating weighs a drifting machine on both
// sides; the p99s of each side's runs are averaged.
func compareUnderPruning(ctx context.Context, cfg config, keep, prune *historyService, t *table) error {
	spreads := map[*historyService][]string{}
	for _, h := range []*historyService{keep, prune} {
		spread, _, err := h.prepare(ctx, 100)
		if err != nil {
			return err
		}
		spreads[h] = spread
	}
	before, err := prune.oldEvents(ctx)
	if err != nil {
		return err
	}
	var kept, pruned []summary
	for range pruneRounds {
		prune.svc.signal(syscall.SIGSTOP)
		progress("history: POST /allocate, %d clients over 100 SKUs, %s, nothing pruning", historyClients, cfg.duration)
		kept = append(kept, keep.allocateLoad(ctx, spreads[keep], historyClients, cfg.duration))
		prune.svc.signal(syscall.SIGCONT)
		progress("history: POST /allocate, %d clients over 100 SKUs, %s, while pruning", historyClients, cfg.duration)
		pruned = append(pruned, prune.allocateLoad(ctx, spreads[prune], historyClients, cfg.duration))
	}
	after, err := prune.oldEvents(ctx)
	if err != nil {
		return err
	}
	deleted := before - after
	base, load := meanP99(kept), meanP99(pruned)
	ratio := float64(load) / float64(max(base, 1))
	last := pruned[len(pruned)-1]
	failures := 0
	for _, r := range pruned {
		failures += r.failures
	}
	t.add(row{name: fmt.Sprintf("POST /allocate, %d clients, 100 SKUs, while pruning (%s old events deleted, %.0f/s)",
		historyClients, thousands(deleted), float64(deleted)/(pruneRounds*cfg.duration.Seconds())),
		result: fmt.Sprintf("%.0f req/s", last.rate()), p50: ms(last.p50), p99: ms(load), fail: fmt.Sprint(failures),
		ratio: fmt.Sprintf("p99 %.2f× without pruning (%s)", ratio, ms(base)), target: "p99 ≤ 1.2× without pruning",
		met: mark(ratio <= 1.2 && failures == 0 && deleted > 0)}, last.firstErr, kept[0].firstErr)
	return nil
}

// meanP99 is the mean of the runs' p99s.
func meanP99(runs []summary) time.Duration {
	var sum time.Duration
	for _, r := range runs {
		sum += r.p99
	}
	return sum / time.Duration(max(len(runs), 1))
}

// oldEvents counts the events older than an hour.
func (h *historyService) oldEvents(ctx context.Context) (int, error) {
	var n int
	err := h.db.GetContext(ctx, &n, `SELECT count(*) FROM event_log WHERE occurred_at < now() - interval '1 hour'`)
	return n, err
}
