package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os/exec"
	"slices"
	"syscall"
	"time"

	"github.com/jmoiron/sqlx"
	goredis "github.com/redis/go-redis/v9"
)

// The outbox phases play broker outages against a service of their own, on a
// fresh database and a redis-server that loadgen starts, stops and freezes.
//
//   - throughput with Redis down vs up, on one hot product (16 clients), the
//     second time with a backlog of at least backlogSize pending;
//   - a backlog of backlogSize line_allocated on one product, built while
//     Redis was down: how fast it is published once Redis is back;
//   - a 10 s SIGSTOP of Redis under hot-SKU load: how long after the thaw
//     the backlog is gone;
//   - the stream afterwards: each event once, each product in commit order.
const (
	backlogSize    = 10_000
	outboxClients  = 16
	freezeDuration = 10 * time.Second
)

// redisProcess is a redis-server of loadgen's own.
type redisProcess struct {
	addr string
	cmd  *exec.Cmd
}

func startRedis(ctx context.Context, addr string) (*redisProcess, error) {
	_, port, _ := net.SplitHostPort(addr)
	r := &redisProcess{addr: addr}
	r.cmd = exec.Command("redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--loglevel", "warning")
	if err := r.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start redis-server (make services installs it): %w", err)
	}
	c := goredis.NewClient(&goredis.Options{Addr: addr})
	defer c.Close()
	for deadline := time.Now().Add(10 * time.Second); c.Ping(ctx).Err() != nil; {
		if time.Now().After(deadline) {
			r.stop()
			return nil, fmt.Errorf("redis-server on %s did not answer within 10 s", addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return r, nil
}

func (r *redisProcess) stop() {
	_ = r.cmd.Process.Signal(syscall.SIGCONT)
	_ = r.cmd.Process.Kill()
	_ = r.cmd.Wait()
}

func (r *redisProcess) signal(sig syscall.Signal) { _ = r.cmd.Process.Signal(sig) }

// outboxBench is the service, its database and its Redis.
type outboxBench struct {
	*bench
	redis *redisProcess
	svc   *service
	hot   string
}

// outboxPhases runs the outbox phases and adds their rows to t.
func outboxPhases(ctx context.Context, cfg config, t *table) (err error) {
	dbName := randomName("bench_outbox_")
	dbURL, err := createDatabase(ctx, cfg.adminURL, dbName)
	if err != nil {
		return err
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if derr := dropDatabase(dctx, cfg.adminURL, dbName); derr != nil && err == nil {
			err = derr
		}
	}()
	addr, err := freeAddr()
	if err != nil {
		return err
	}
	o := &outboxBench{bench: &bench{http: newHTTPClient(), run: randomName(""), prefix: "bench."}}
	if o.redis, err = startRedis(ctx, addr); err != nil {
		return err
	}
	defer o.redis.stop()
	o.rdb = goredis.NewClient(&goredis.Options{Addr: addr})
	defer o.rdb.Close()
	if o.svc, err = startService(ctx, cfg.bin, dbURL, "redis://"+addr+"/0", o.prefix, o.rdb); err != nil {
		return err
	}
	defer o.svc.stop()
	o.url = o.svc.url
	if o.db, err = sqlx.ConnectContext(ctx, "postgres", dbURL); err != nil {
		return err
	}
	defer o.db.Close()
	o.hot = o.sku("outbox-hot")
	if err := o.addBatch(ctx, "b-"+o.hot, o.hot, hugeQty, ""); err != nil {
		return err
	}
	if err := o.outage(ctx, cfg, t); err != nil {
		return err
	}
	if err := o.freeze(ctx, cfg, t); err != nil {
		return err
	}
	return o.checkStream(ctx, t)
}

// outage compares throughput with Redis up and down, builds a backlog and
// times its publication once Redis is back (restarted empty).
func (o *outboxBench) outage(ctx context.Context, cfg config, t *table) error {
	progress("outbox: hot SKU with Redis up, then down, %s each", cfg.duration)
	up := o.allocateLoad(ctx, []string{o.hot}, outboxClients, cfg.duration)
	o.redis.stop()
	down := o.allocateLoad(ctx, []string{o.hot}, outboxClients, cfg.duration)
	progress("outbox: building a backlog of %d on one product", backlogSize)
	for n, _ := o.pending(ctx); n < backlogSize && ctx.Err() == nil; n, _ = o.pending(ctx) {
		o.allocateLoad(ctx, []string{o.hot}, outboxClients, time.Second)
	}
	backlog, _ := o.pending(ctx)
	downFull := o.allocateLoad(ctx, []string{o.hot}, outboxClients, cfg.duration)
	for _, r := range []struct {
		name string
		s    summary
	}{{"Redis down", down}, {fmt.Sprintf("Redis down, %s pending", thousands(backlog)), downFull}} {
		ratio := r.s.rate() / max(up.rate(), 1e-9)
		t.add(row{name: fmt.Sprintf("POST /allocate, hot SKU, %d clients, %s", outboxClients, r.name),
			result: fmt.Sprintf("%.0f req/s", r.s.rate()), p50: ms(r.s.p50), p99: ms(r.s.p99), fail: fmt.Sprint(r.s.failures),
			ratio: fmt.Sprintf("%.2f× Redis up (%.0f/s)", ratio, up.rate()), target: "≥ 0.9× Redis up",
			met: mark(ratio >= 0.9 && r.s.failures == 0)}, r.s.firstErr, up.firstErr)
	}
	backlog, _ = o.pending(ctx)
	restarted, err := startRedis(ctx, o.redis.addr)
	if err != nil {
		return err
	}
	o.redis = restarted
	took, err := o.drained(ctx, 0, 60*time.Second)
	if err != nil {
		return err
	}
	rate := float64(backlog) / took.Seconds()
	t.add(row{name: fmt.Sprintf("backlog of %s on one product, published after Redis returns", thousands(backlog)),
		result: fmt.Sprintf("%.2f s, %.0f events/s", took.Seconds(), rate), target: "≥ 3,300 events/s",
		met: mark(rate >= 3300)}, "")
	return nil
}

// freeze stops Redis with SIGSTOP for freezeDuration under hot-SKU load and
// times how long after the thaw the backlog is gone.
func (o *outboxBench) freeze(ctx context.Context, cfg config, t *table) error {
	progress("outbox: Redis frozen %s under hot-SKU load", freezeDuration)
	loadDone := make(chan summary, 1)
	go func() { loadDone <- o.allocateLoad(ctx, []string{o.hot}, outboxClients, freezeDuration+20*time.Second) }()
	time.Sleep(5 * time.Second) // steady load before the freeze
	o.redis.signal(syscall.SIGSTOP)
	time.Sleep(freezeDuration)
	peak, _ := o.pending(ctx)
	o.redis.signal(syscall.SIGCONT)
	// Under load a few deliveries are always in flight: gone means back
	// to that.
	took, err := o.drained(ctx, 100, 30*time.Second)
	if err != nil {
		return err
	}
	s := <-loadDone
	t.add(row{name: fmt.Sprintf("Redis frozen %s under hot-SKU load (%s pending at the thaw)", freezeDuration, thousands(peak)),
		result: fmt.Sprintf("backlog gone %.2f s after the thaw", took.Seconds()), fail: fmt.Sprint(s.failures),
		target: "≤ 10 s", met: mark(took <= 10*time.Second && s.failures == 0)}, s.firstErr)
	return nil
}

// checkStream reads the line_allocated stream: every committed allocation
// of the hot product once, in commit order.
func (o *outboxBench) checkStream(ctx context.Context, t *table) error {
	if _, err := o.drained(ctx, 0, 60*time.Second); err != nil {
		return err
	}
	var committed []string
	if err := o.db.SelectContext(ctx, &committed, `SELECT message_id::text FROM event_log
		WHERE aggregate = $1 AND name = 'allocated' ORDER BY id`, o.hot); err != nil {
		return err
	}
	entries, err := o.rdb.XRange(ctx, o.prefix+"line_allocated", "-", "+").Result()
	if err != nil {
		return err
	}
	var streamed []string
	for _, e := range entries {
		var body struct {
			MessageID string `json:"message_id"`
		}
		if err := json.Unmarshal([]byte(fmt.Sprint(e.Values["data"])), &body); err != nil {
			return fmt.Errorf("stream entry %s: %w", e.ID, err)
		}
		streamed = append(streamed, body.MessageID)
	}
	// Redis was restarted empty once: the stream holds what came after.
	tail := committed[len(committed)-min(len(streamed), len(committed)):]
	ok := slices.Equal(streamed, tail)
	t.add(row{name: "line_allocated stream after the outages", result: fmt.Sprintf("%s entries, commit order and once each: %v", thousands(len(streamed)), ok),
		target: "each once, in commit order", met: mark(ok)}, "")
	return nil
}

// pending counts the deliveries not done.
func (o *outboxBench) pending(ctx context.Context) (int, error) {
	var n int
	err := o.db.GetContext(ctx, &n, `SELECT count(*) FROM event_deliveries WHERE status <> 'done'`)
	return n, err
}

// drained waits until at most left deliveries are not done and says how
// long that took.
func (o *outboxBench) drained(ctx context.Context, left int, limit time.Duration) (time.Duration, error) {
	start := time.Now()
	for {
		n, err := o.pending(ctx)
		if err != nil {
			return 0, err
		}
		if n <= left {
			return time.Since(start), nil
		}
		if time.Since(start) > limit {
			return 0, fmt.Errorf("outbox: %d deliveries still pending %s after Redis returned", n, limit)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
