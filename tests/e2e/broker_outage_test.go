package e2e_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	_ "github.com/lib/pq"
	goredis "github.com/redis/go-redis/v9"
	_ "modernc.org/sqlite" // the driver the SQLite adapter uses

	"allocation/tests/testenv"
)

// outageLength is how long the broker-outage tests keep Redis away:
// E2E_REDIS_OUTAGE (a Go duration), 100 s by default: longer than the
// retry policy's 30 s cap, so that a delivery would have been parked
// already were transport failures ever parked.
func outageLength(t *testing.T) time.Duration {
	d := 100 * time.Second
	if v := os.Getenv("E2E_REDIS_OUTAGE"); v != "" {
		var err error
		if d, err = time.ParseDuration(v); err != nil {
			t.Fatalf("E2E_REDIS_OUTAGE: %v", err)
		}
	}
	return d
}

// outageRun allocates round-robin over products and remembers, per
// product, the order ids in the order they were committed.
type outageRun struct {
	s         *service
	products  []string
	committed map[string][]string // sku -> order ids, in commit order
	n         int
}

func newOutageRun(s *service, products int) *outageRun {
	r := &outageRun{s: s, committed: map[string][]string{}}
	for range products {
		sku := testenv.RandomName("sku-")
		s.addBatch(testenv.RandomName("batch-"), sku, 100_000, nil)
		r.products = append(r.products, sku)
	}
	return r
}

// allocate makes one allocation on the next product; every one must be
// answered 202 whatever Redis does.
func (r *outageRun) allocate() {
	r.s.t.Helper()
	sku := r.products[r.n%len(r.products)]
	order := fmt.Sprintf("o%05d", r.n)
	r.n++
	if status, body := r.s.post("/allocate", map[string]any{"orderid": order, "sku": sku, "qty": 1}); status != http.StatusAccepted {
		r.s.t.Fatalf("allocate %s: %d %v", order, status, body)
	}
	r.committed[sku] = append(r.committed[sku], order)
}

// published reads the line_allocated stream: per product, the order ids in
// stream order, and how many entries each message id has.
func published(t *testing.T, rc goredis.UniversalClient, stream string) (map[string][]string, map[string]int) {
	t.Helper()
	entries, err := rc.XRange(context.Background(), stream, "-", "+").Result()
	if err != nil && err != goredis.Nil {
		t.Fatalf("read %s: %v", stream, err)
	}
	bySKU, ids := map[string][]string{}, map[string]int{}
	for _, e := range entries {
		var body lineAllocated
		if err := json.Unmarshal([]byte(fmt.Sprint(e.Values["data"])), &body); err != nil {
			t.Fatalf("entry %s: %v", e.ID, err)
		}
		bySKU[body.SKU] = append(bySKU[body.SKU], body.OrderID)
		ids[body.MessageID]++
	}
	return bySKU, ids
}

// awaitPublishedInOrder waits until every committed allocation is on the
// stream exactly once, each product's in commit order, and returns how long
// that took.
func (r *outageRun) awaitPublishedInOrder(rc goredis.UniversalClient, within time.Duration) time.Duration {
	t := r.s.t
	t.Helper()
	start := time.Now()
	testenv.Eventually(t, within, func() error {
		bySKU, ids := published(t, rc, r.s.prefix+"line_allocated")
		n := 0 // the run's own: the stream may hold other products' too
		for _, sku := range r.products {
			n += len(bySKU[sku])
		}
		if n != r.n {
			return fmt.Errorf("%d of %d allocations on the stream", n, r.n)
		}
		for id, n := range ids {
			if n != 1 {
				t.Fatalf("message %s is on the stream %d times", id, n)
			}
		}
		for sku, want := range r.committed {
			if !slices.Equal(bySKU[sku], want) {
				t.Fatalf("product %s published %v, committed %v", sku, bySKU[sku], want)
			}
		}
		return nil
	})
	return time.Since(start)
}

// deliveriesLeft counts the deliveries not done, and those parked as dead.
func (s *service) deliveriesLeft() (open, dead int) {
	s.t.Helper()
	db := s.database()
	defer db.Close()
	err := db.QueryRow(`SELECT count(*) FILTER (WHERE status <> 'done'), count(*) FILTER (WHERE status = 'dead') FROM event_deliveries`).Scan(&open, &dead)
	if err != nil {
		s.t.Fatal(err)
	}
	return open, dead
}

// database opens the service's store: its PostgreSQL database, or its
// SQLite file when it has none.
func (s *service) database() *sql.DB {
	s.t.Helper()
	driver, dsn := "postgres", s.dbURL
	if dsn == "" {
		// A busy timeout, as the service sets one: a test reading the
		// file while it runs waits for its writes instead of failing.
		driver, dsn = "sqlite", filepath.Join(s.dataDir, "allocation.db")+"?_pragma=busy_timeout(5000)"
	}
	db, err := sql.Open(driver, dsn)
	if err != nil {
		s.t.Fatalf("open the store: %v", err)
	}
	return db
}

// startWithOwnRedis starts a service on a redis-server of the test's own,
// which the test may stop, restart empty or freeze.
func startWithOwnRedis(t *testing.T) (*testenv.RedisServer, *service) {
	t.Helper()
	rs := testenv.StartRedisServer(t)
	s := newService(t, rs.URL())
	s.redis = rs.Client()
	s.start()
	return rs, s
}

// Redis is stopped for E2E_REDIS_OUTAGE while 30 products are allocated,
// then comes back empty. Nothing is parked; every allocation is published
// once, each product's in commit order, within seconds of Redis returning.
func TestARedisOutageParksNothingAndKeepsEachProductsOrder(t *testing.T) {
	t.Parallel()
	rs, s := startWithOwnRedis(t)
	run := newOutageRun(s, 30)

	// Restarted empty, Redis keeps only what is published after: the
	// allocations made during the outage.
	rs.Stop()
	outage := outageLength(t)
	for end := time.Now().Add(outage); time.Now().Before(end); {
		run.allocate()
		time.Sleep(50 * time.Millisecond) // a steady trickle of orders through the outage
	}
	if _, dead := s.deliveriesLeft(); dead != 0 {
		t.Fatalf("%d deliveries parked during a %s outage", dead, outage)
	}
	rs.Start()
	took := run.awaitPublishedInOrder(rs.Client(), 60*time.Second)
	t.Logf("%d allocations, %s of outage: all published %s after Redis returned", run.n, outage, took.Round(time.Millisecond))
	if took > 15*time.Second {
		t.Fatalf("publishing the backlog took %s after Redis returned", took)
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		if open, dead := s.deliveriesLeft(); open != 0 || dead != 0 {
			return fmt.Errorf("%d deliveries not done, %d dead", open, dead)
		}
		return nil
	})
}

// Redis freezes (SIGSTOP) under load on one hot product: requests keep
// being answered, and after the thaw nothing is lost, nothing is doubled and
// the order holds.
func TestAFrozenRedisLosesNothingAndKeepsTheOrder(t *testing.T) {
	t.Parallel()
	rs, s := startWithOwnRedis(t)
	run := newOutageRun(s, 1)
	for range 50 {
		run.allocate()
	}
	rs.Freeze()
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); {
		run.allocate()
	}
	rs.Thaw()
	for range 50 {
		run.allocate()
	}
	took := run.awaitPublishedInOrder(rs.Client(), 60*time.Second)
	t.Logf("%d allocations on one product across a 10 s freeze: all published %s after the thaw", run.n, took.Round(time.Millisecond))
}
