package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"allocation/tests/testenv"
)

// tcpProxy stands between the service and Redis, so that a test can take
// Redis away from the service (connections cut, new ones refused) while its
// own subscriber stays connected to the real server and misses nothing.
type tcpProxy struct {
	t      *testing.T
	addr   string
	target string
	mu     sync.Mutex
	ln     net.Listener
	conns  map[net.Conn]struct{}
}

func startProxy(t *testing.T, target string) *tcpProxy {
	t.Helper()
	p := &tcpProxy{t: t, addr: freeAddr(t), target: target, conns: map[net.Conn]struct{}{}}
	p.up()
	t.Cleanup(p.down)
	return p
}

// up listens again and forwards every connection to the target.
func (p *tcpProxy) up() {
	p.t.Helper()
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		p.t.Fatalf("proxy listen on %s: %v", p.addr, err)
	}
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	go func() {
		for {
			client, err := ln.Accept()
			if err != nil {
				return
			}
			server, err := net.Dial("tcp", p.target)
			if err != nil {
				client.Close()
				continue
			}
			p.track(client, server)
			go p.pipe(client, server)
			go p.pipe(server, client)
		}
	}()
}

// down refuses new connections and cuts the open ones.
func (p *tcpProxy) down() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		c.Close()
		delete(p.conns, c)
	}
}

func (p *tcpProxy) track(conns ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range conns {
		p.conns[c] = struct{}{}
	}
}

func (p *tcpProxy) pipe(dst, src net.Conn) {
	_, _ = io.Copy(dst, src)
	dst.Close()
	src.Close()
}

// collect gathers line_allocated messages, by order id, until the test ends.
type collector struct {
	mu   sync.Mutex
	seen map[string][]string // order id -> batch refs announced, in order
	n    int
	// at, when set, runs as soon as the n-th message arrives.
	at   int
	then func()
}

func collect(t *testing.T, ps *goredis.PubSub) *collector {
	c := &collector{seen: map[string][]string{}}
	go func() {
		for m := range ps.Channel() {
			var body lineAllocated
			if json.Unmarshal([]byte(m.Payload), &body) != nil {
				continue
			}
			c.mu.Lock()
			c.seen[body.OrderID] = append(c.seen[body.OrderID], body.BatchRef)
			c.n++
			if c.n == c.at && c.then != nil {
				c.then()
			}
			c.mu.Unlock()
		}
	}()
	t.Cleanup(func() { _ = ps.Close() })
	return c
}

// when runs fn as soon as n messages have arrived.
func (c *collector) when(n int, fn func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.at, c.then = n, fn
}

func (c *collector) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

func (c *collector) last(orderID string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	refs := c.seen[orderID]
	if len(refs) == 0 {
		return ""
	}
	return refs[len(refs)-1]
}

// Redis is down while 30 allocations are made: every request still answers
// 202, and once Redis is back every line_allocated event is published.
func TestAllocationsDuringARedisOutageArePublishedWhenItReturns(t *testing.T) {
	t.Parallel()
	redisAddr := strings.TrimSuffix(strings.TrimPrefix(testenv.RedisURL(), "redis://"), "/0")
	proxy := startProxy(t, redisAddr)
	s := newService(t, "redis://"+proxy.addr+"/0")
	s.start()
	sku, ref := testenv.RandomName("sku-"), testenv.RandomName("batch-")
	s.addBatch(ref, sku, 100, nil)
	ps := s.redis.Subscribe(context.Background(), s.prefix+"line_allocated")
	if _, err := ps.Receive(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := collect(t, ps)

	proxy.down()
	for i := range 30 {
		status, body := s.post("/allocate", map[string]any{"orderid": fmt.Sprintf("outage-%d", i), "sku": sku, "qty": 1})
		if status != http.StatusAccepted || body["batchref"] != ref {
			t.Fatalf("allocation %d during the outage: %d %v", i, status, body)
		}
	}
	if n := got.count(); n != 0 {
		t.Fatalf("%d messages got through a Redis that was down", n)
	}
	proxy.up()
	testenv.Eventually(t, 60*time.Second, func() error {
		for i := range 30 {
			if got.last(fmt.Sprintf("outage-%d", i)) != ref {
				return fmt.Errorf("outage-%d not announced yet (%d messages so far)", i, got.count())
			}
		}
		return nil
	})
}

// The service is killed with SIGKILL while it reallocates the 40 lines a
// change_batch_quantity took away. After a restart every line is allocated
// again, the view agrees, and every move is announced.
func TestReallocationSurvivesSIGKILL(t *testing.T) {
	t.Parallel()
	for _, killAfter := range []int{1, 12, 30} {
		t.Run(fmt.Sprintf("killed after %d announcements", killAfter), func(t *testing.T) {
			t.Parallel()
			s := startService(t)
			sku, early, late := testenv.RandomName("sku-"), testenv.RandomName("early-"), testenv.RandomName("late-")
			s.addBatch(early, sku, 80, nil)
			s.addBatch(late, sku, 200, "2031-01-01")
			for i := range 40 {
				if status, body := s.post("/allocate", map[string]any{"orderid": fmt.Sprintf("o%d", i), "sku": sku, "qty": 2}); status != http.StatusAccepted || body["batchref"] != early {
					t.Fatalf("allocate o%d: %d %v", i, status, body)
				}
			}
			ps := s.redis.Subscribe(context.Background(), s.prefix+"line_allocated")
			if _, err := ps.Receive(context.Background()); err != nil {
				t.Fatal(err)
			}
			got := collect(t, ps)
			killed := make(chan int, 1)
			got.when(killAfter, func() {
				_ = s.cmd.Process.Kill() // SIGKILL, the moment the n-th move is announced
				killed <- killAfter
			})

			s.publish("change_batch_quantity", map[string]any{"batchref": early, "qty": 0})
			select {
			case <-killed:
			case <-time.After(20 * time.Second):
				t.Fatalf("only %d moves announced within 20s", got.count())
			}
			s.kill()
			t.Logf("killed after %d of 40 moves were announced", got.count())
			s.start()

			testenv.Eventually(t, 30*time.Second, func() error {
				for i := range 40 {
					order := fmt.Sprintf("o%d", i)
					if got.last(order) != late {
						return fmt.Errorf("the move of %s is not announced (last %q)", order, got.last(order))
					}
					status, rows := s.allocations(order)
					if status != http.StatusOK || len(rows) != 1 || rows[0].BatchRef != late {
						return fmt.Errorf("view of %s: %d %v", order, status, rows)
					}
				}
				return nil
			})
			// Nothing was allocated twice: late holds exactly the 40 lines.
			status, body := s.post("/allocate", map[string]any{"orderid": "probe", "sku": sku, "qty": 120})
			if status != http.StatusAccepted || body["batchref"] != late {
				t.Fatalf("late batch should have exactly 120 left: %d %v", status, body)
			}
		})
	}
}

// A message id seen before is skipped even when it comes back after a newer
// message: the newer state stands.
func TestARepeatedMessageIDAfterANewerMessageChangesNothing(t *testing.T) {
	t.Parallel()
	s := startService(t)
	sku, ref := testenv.RandomName("sku-"), testenv.RandomName("batch-")
	s.addBatch(ref, sku, 10, nil)
	first, second := testenv.RandomName("m-"), testenv.RandomName("m-")
	s.publish("change_batch_quantity", map[string]any{"batchref": ref, "qty": 5, "message_id": first})
	s.publish("change_batch_quantity", map[string]any{"batchref": ref, "qty": 8, "message_id": second})
	s.publish("change_batch_quantity", map[string]any{"batchref": ref, "qty": 5, "message_id": first})
	// Messages about one product are handled in order: once this one about
	// the same product shows, the others are done.
	s.publish("allocate", map[string]any{"orderid": "sentinel", "sku": sku, "qty": 1})
	testenv.Eventually(t, 10*time.Second, func() error {
		if status, _ := s.allocations("sentinel"); status != http.StatusOK {
			return fmt.Errorf("sentinel not handled yet")
		}
		return nil
	})
	// 8 purchased, 1 to the sentinel: 7 left (with the repeated 5, only 4).
	status, body := s.post("/allocate", map[string]any{"orderid": "probe", "sku": sku, "qty": 7})
	if status != http.StatusAccepted || body["batchref"] != ref {
		t.Fatalf("the batch should hold the newer 8: %d %v", status, body)
	}
	letters, _ := s.redis.LLen(context.Background(), s.prefix+"dead_letter").Result()
	if letters != 0 {
		t.Fatalf("a duplicate was dead-lettered instead of acknowledged")
	}
}
