package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jmoiron/sqlx"
	goredis "github.com/redis/go-redis/v9"
)

// hugeQty is the largest batch the API accepts: nothing runs out of stock.
const hugeQty = 1_000_000_000

// bench drives one service over HTTP and Redis.
type bench struct {
	http   *http.Client
	url    string
	rdb    *goredis.Client
	prefix string
	db     *sqlx.DB // the service's database; nil when unknown (-target without -service-db)
	run    string   // random per run: keeps SKUs, refs and order ids unique
	orders atomic.Int64
}

func newHTTPClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	// Enough idle connections that 32 clients never reconnect between requests.
	t.MaxIdleConns, t.MaxIdleConnsPerHost = 128, 128
	return &http.Client{Transport: t, Timeout: 30 * time.Second}
}

// post sends body as JSON and returns the status and the answer.
func (b *bench) post(ctx context.Context, path string, body any) (int, []byte, error) {
	data, err := json.Marshal(body)
	if err != nil {
		return 0, nil, fmt.Errorf("encode %s body: %w", path, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, b.url+path, bytes.NewReader(data))
	if err != nil {
		return 0, nil, fmt.Errorf("build %s request: %w", path, err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := b.http.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("POST %s: %w", path, err)
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, nil, fmt.Errorf("read %s answer: %w", path, err)
	}
	return resp.StatusCode, answer, nil
}

func (b *bench) sku(name string) string { return b.run + "-" + name }

// addBatch creates a batch (eta "" means in stock) and fails unless 201.
func (b *bench) addBatch(ctx context.Context, ref, sku string, qty int, eta string) error {
	body := map[string]any{"ref": ref, "sku": sku, "qty": qty, "eta": nil}
	if eta != "" {
		body["eta"] = eta
	}
	status, answer, err := b.post(ctx, "/add_batch", body)
	if err != nil {
		return err
	}
	if status != http.StatusCreated {
		return fmt.Errorf("add_batch %s: %d %s", ref, status, strings.TrimSpace(string(answer)))
	}
	return nil
}

// allocate allocates one unit of sku to a new order and returns the batch it
// went to; anything but 202 is an error.
func (b *bench) allocate(ctx context.Context, orderid, sku string) (string, error) {
	status, answer, err := b.post(ctx, "/allocate", map[string]any{"orderid": orderid, "sku": sku, "qty": 1})
	if err != nil {
		return "", err
	}
	if status != http.StatusAccepted {
		return "", fmt.Errorf("allocate answered %d %s", status, strings.TrimSpace(string(answer)))
	}
	var out struct {
		Batchref *string `json:"batchref"`
	}
	if err := json.Unmarshal(answer, &out); err != nil {
		return "", fmt.Errorf("decode allocate answer %q: %w", answer, err)
	}
	if out.Batchref == nil {
		return "", errors.New("allocate answered out of stock")
	}
	return *out.Batchref, nil
}

func (b *bench) newOrder() string { return fmt.Sprintf("%s-o%d", b.run, b.orders.Add(1)) }

// prepare creates n SKUs with one huge batch each, and one hot SKU.
func (b *bench) prepare(ctx context.Context, n int) (spread []string, hot string, err error) {
	for i := range n {
		sku := b.sku(fmt.Sprintf("spread%d", i))
		if err := b.addBatch(ctx, "b-"+sku, sku, hugeQty, ""); err != nil {
			return nil, "", err
		}
		spread = append(spread, sku)
	}
	hot = b.sku("hot")
	return spread, hot, b.addBatch(ctx, "b-"+hot, hot, hugeQty, "")
}

// runLoad runs op from clients goroutines until d has passed and summarises.
func runLoad(ctx context.Context, clients int, d time.Duration, op func(ctx context.Context, rng *rand.Rand) error) summary {
	var rec recorder
	var wg sync.WaitGroup
	start := time.Now()
	stop := start.Add(d)
	for w := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), uint64(start.UnixNano())))
			for time.Now().Before(stop) && ctx.Err() == nil {
				t0 := time.Now()
				err := op(ctx, rng)
				rec.add(time.Since(t0), err)
			}
		}()
	}
	wg.Wait()
	return rec.summary(time.Since(start))
}

// allocateLoad measures POST /allocate from clients clients over skus.
func (b *bench) allocateLoad(ctx context.Context, skus []string, clients int, d time.Duration) summary {
	return runLoad(ctx, clients, d, func(ctx context.Context, rng *rand.Rand) error {
		_, err := b.allocate(ctx, b.newOrder(), skus[rng.IntN(len(skus))])
		return err
	})
}

// roundTrip times change_batch_quantity (pub/sub) until line_allocated shows the
// order moved to the later batch, n times one after the other. A missing
// answer after 5 s counts as a failure.
func (b *bench) roundTrip(ctx context.Context, n int) (summary, error) {
	sub := b.rdb.Subscribe(ctx, b.prefix+"line_allocated")
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil {
		return summary{}, fmt.Errorf("subscribe to line_allocated: %w", err)
	}
	msgs := sub.Channel(goredis.WithChannelSize(1000))
	var rec recorder
	start := time.Now()
	for i := range n {
		sku := b.sku(fmt.Sprintf("rt%d", i))
		early, later := "b-early-"+sku, "b-later-"+sku
		if err := b.addBatch(ctx, early, sku, 10, ""); err != nil {
			return summary{}, err
		}
		if err := b.addBatch(ctx, later, sku, 10, "2099-01-01"); err != nil {
			return summary{}, err
		}
		order := b.newOrder()
		if got, err := b.allocate(ctx, order, sku); err != nil {
			return summary{}, err
		} else if got != early {
			return summary{}, fmt.Errorf("order %s went to %s, not the in-stock batch %s", order, got, early)
		}
		body, _ := json.Marshal(map[string]any{"batchref": early, "qty": 0})
		t0 := time.Now()
		if err := b.rdb.Publish(ctx, b.prefix+"change_batch_quantity", body).Err(); err != nil {
			return summary{}, fmt.Errorf("publish change_batch_quantity: %w", err)
		}
		rec.add(waitForAllocation(ctx, msgs, order, later, t0, 5*time.Second), nil)
	}
	s := rec.summary(time.Since(start))
	s.failures = countTimeouts(rec.lats)
	return s, nil
}

// waitForAllocation reads line_allocated until order shows up with batchref,
// and returns how long since t0 that took (or timeout+1 when it never came).
func waitForAllocation(ctx context.Context, msgs <-chan *goredis.Message, order, batchref string, t0 time.Time, timeout time.Duration) time.Duration {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		select {
		case m := <-msgs:
			var ev struct{ Orderid, Batchref string }
			if json.Unmarshal([]byte(m.Payload), &ev) == nil && ev.Orderid == order && ev.Batchref == batchref {
				return time.Since(t0)
			}
		case <-timer.C:
			return timeout + time.Nanosecond
		case <-ctx.Done():
			return timeout + time.Nanosecond
		}
	}
}

func countTimeouts(lats []time.Duration) int {
	n := 0
	for _, l := range lats {
		if l > 5*time.Second {
			n++
		}
	}
	return n
}

// inbound appends n change_batch_quantity entries onto the stream (raising
// the quantity of 100 batches, so nothing is reallocated) and times until the
// consumer group has read and acknowledged them all, or until limit.
func (b *bench) inbound(ctx context.Context, n int, limit time.Duration) (summary, error) {
	const batches = 100
	refs := make([]string, batches)
	for i := range refs {
		sku := b.sku(fmt.Sprintf("in%d", i))
		refs[i] = "b-" + sku
		if err := b.addBatch(ctx, refs[i], sku, 1_000_000, ""); err != nil {
			return summary{}, err
		}
	}
	stream := b.prefix + "change_batch_quantity"
	before, err := groupProgress(ctx, b.rdb, stream)
	if err != nil {
		return summary{}, err
	}
	start := time.Now()
	for from := 0; from < n; from += 500 {
		pipe := b.rdb.Pipeline()
		for k := from; k < min(from+500, n); k++ {
			body, _ := json.Marshal(map[string]any{"batchref": refs[k%batches], "qty": 1_000_000 + k/batches + 1})
			pipe.XAdd(ctx, &goredis.XAddArgs{Stream: stream, Values: map[string]any{"data": string(body)}})
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return summary{}, fmt.Errorf("XADD to %s: %w", stream, err)
		}
	}
	for {
		done, err := groupProgress(ctx, b.rdb, stream)
		if err != nil {
			return summary{}, err
		}
		processed := int(done - before)
		if processed >= n || time.Since(start) > limit {
			s := summary{ops: processed, elapsed: time.Since(start)}
			if processed < n {
				s.failures = n - processed
				s.firstErr = fmt.Sprintf("%d of %d stream entries still unprocessed after %s", n-processed, n, limit)
				s.ops = n
				s.elapsed = limit
			}
			return s, nil
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// groupProgress is how many entries the group "allocation" has read and
// acknowledged on stream: entries-read minus pending.
func groupProgress(ctx context.Context, rdb *goredis.Client, stream string) (int64, error) {
	groups, err := rdb.XInfoGroups(ctx, stream).Result()
	if err != nil {
		return 0, fmt.Errorf("XINFO GROUPS %s: %w", stream, err)
	}
	for _, g := range groups {
		if g.Name == "allocation" {
			return g.EntriesRead - g.Pending, nil
		}
	}
	return 0, fmt.Errorf("no consumer group allocation on %s", stream)
}

// history gives a new SKU `earlier` allocations straight in SQL (as if they had
// come through the API) and times `samples` sequential allocations on it.
func (b *bench) history(ctx context.Context, earlier, samples int) (summary, error) {
	sku := b.sku(fmt.Sprintf("hist%d", earlier))
	ref := "b-" + sku
	if err := b.addBatch(ctx, ref, sku, hugeQty, ""); err != nil {
		return summary{}, err
	}
	if earlier > 0 {
		tx, err := b.db.BeginTxx(ctx, nil)
		if err != nil {
			return summary{}, fmt.Errorf("begin history of %s: %w", sku, err)
		}
		defer func() { _ = tx.Rollback() }()
		if _, err := tx.ExecContext(ctx, `INSERT INTO allocations (batch_id, orderid, sku, qty)
			SELECT b.id, $2 || g, b.sku, 1 FROM batches b, generate_series(1, $3::int) g WHERE b.reference = $1`,
			ref, sku+"-hist", earlier); err != nil {
			return summary{}, fmt.Errorf("insert history of %s: %w", sku, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO allocations_view (orderid, sku, qty, batchref)
			SELECT $2 || g, $3, 1, $1 FROM generate_series(1, $4::int) g`, ref, sku+"-hist", sku, earlier); err != nil {
			return summary{}, fmt.Errorf("insert history view of %s: %w", sku, err)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE batches SET allocated_quantity = allocated_quantity + $2 WHERE reference = $1`, ref, earlier); err != nil {
			return summary{}, fmt.Errorf("update allocated quantity of %s: %w", ref, err)
		}
		if err := tx.Commit(); err != nil {
			return summary{}, fmt.Errorf("commit history of %s: %w", sku, err)
		}
		if _, err := b.db.ExecContext(ctx, `ANALYZE allocations, allocations_view, batches`); err != nil {
			return summary{}, fmt.Errorf("analyze: %w", err)
		}
	}
	for range 10 { // warm up connections and plans
		if _, err := b.allocate(ctx, b.newOrder(), sku); err != nil {
			return summary{}, err
		}
	}
	var rec recorder
	start := time.Now()
	for range samples {
		t0 := time.Now()
		_, err := b.allocate(ctx, b.newOrder(), sku)
		rec.add(time.Since(t0), err)
	}
	return rec.summary(time.Since(start)), nil
}
