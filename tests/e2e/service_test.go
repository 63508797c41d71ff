package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"allocation/adapters/redis"
	"allocation/tests/testenv"
)

// binary is the service built once for the whole package by TestMain.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "allocation-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: temp dir:", err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "allocation")
	build := exec.Command("go", "build", "-race", "-o", binary, "allocation/cmd/allocation")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: building the service:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	testenv.ExitUnlessClean(code)
}

// service is one `allocation serve` process with its own database and
// prefix. It can be killed and started again on the same data.
type service struct {
	t        *testing.T
	url      string
	prefix   string
	redisURL string
	dbURL    string
	dataDir  string // the SQLite file's directory, when dbURL is empty
	bin      string // the binary to run; empty: the one TestMain built
	redis    goredis.UniversalClient
	env      []string // extra environment
	cmd      *exec.Cmd
	exited   chan error
	logs     *syncBuffer
}

// startService runs the built binary on a free port against a fresh database
// and a random Redis prefix, and waits until it is ready and subscribed.
func startService(t *testing.T) *service {
	t.Helper()
	s := newService(t, testenv.RedisURL())
	s.start()
	return s
}

// newService prepares a service against the Redis at redisURL without
// starting it.
func newService(t *testing.T, redisURL string) *service {
	t.Helper()
	s := newServiceOn(t, testenv.Redis(t))
	s.redisURL = redisURL
	return s
}

// newServiceOn prepares a service against the Redis rc reaches, without
// starting it: env names that Redis to the service (REDIS_CLUSTER_ADDRS=…,
// REDIS_SENTINEL_…), and its replicas inherit env.
func newServiceOn(t *testing.T, rc goredis.UniversalClient, env ...string) *service {
	t.Helper()
	s := &service{
		t:      t,
		prefix: testenv.Prefix(),
		dbURL:  testenv.FreshDatabase(t),
		redis:  rc,
		env:    env,
		logs:   &syncBuffer{},
	}
	// Registered before stopAtEnd, so it runs once the process is stopped.
	testenv.DeleteKeysAtEnd(t, s.redis, s.prefix)
	s.stopAtEnd()
	return s
}

// newEmbeddedService prepares a service in the embedded mode, without
// starting it: DATABASE_URL and REDIS_URL unset, its SQLite file in
// dataDir, its own Redis on a free port, which s.redis reaches. Its Redis
// is its own, so it needs no prefix.
func newEmbeddedService(t *testing.T, dataDir string) *service {
	t.Helper()
	redisAddr := freeAddr(t)
	rc := goredis.NewClient(&goredis.Options{Addr: redisAddr})
	t.Cleanup(func() { _ = rc.Close() })
	s := &service{
		t:       t,
		redis:   rc,
		dataDir: dataDir,
		env:     []string{"EMBEDDED_REDIS_ADDR=" + redisAddr},
		logs:    &syncBuffer{},
	}
	s.stopAtEnd()
	return s
}

// stopAtEnd stops the process when the test ends, and shows its log if
// the test failed.
func (s *service) stopAtEnd() {
	s.t.Cleanup(func() {
		if s.cmd != nil {
			s.stop()
		}
		if s.t.Failed() {
			s.t.Logf("service log:\n%s", s.logs.String())
		}
	})
}

// replica prepares another process on the same database, Redis and prefix;
// env is added to the first process's (a setting given in both takes the
// replica's value).
func (s *service) replica(env ...string) *service {
	env = append(slices.Clone(s.env), env...)
	r := &service{t: s.t, prefix: s.prefix, redisURL: s.redisURL, dbURL: s.dbURL, dataDir: s.dataDir, redis: s.redis, env: env, logs: &syncBuffer{}}
	s.t.Cleanup(func() {
		if r.cmd != nil {
			r.stop()
		}
		if s.t.Failed() {
			s.t.Logf("replica log:\n%s", r.logs.String())
		}
	})
	return r
}

// start launches the process and waits until it is ready and subscribed.
func (s *service) start() {
	t := s.t
	t.Helper()
	addr := freeAddr(t)
	s.url = "http://" + addr
	s.exited = make(chan error, 1)
	bin := s.bin
	if bin == "" {
		bin = binary
	}
	s.cmd = exec.Command(bin, "serve")
	s.cmd.Env = append(os.Environ(),
		"DATABASE_URL="+s.dbURL,
		"REDIS_URL="+s.redisURL,
		"HTTP_ADDR="+addr,
		"REDIS_PREFIX="+s.prefix,
		"SMTP_ADDR=",
		"LOG_LEVEL=debug",
	)
	if s.dataDir != "" {
		s.cmd.Env = append(s.cmd.Env, "DATA_DIR="+s.dataDir)
	}
	s.cmd.Env = append(s.cmd.Env, s.env...)
	s.cmd.Stdout, s.cmd.Stderr = s.logs, s.logs
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	go func(cmd *exec.Cmd, exited chan error) { exited <- cmd.Wait() }(s.cmd, s.exited)

	testenv.Eventually(t, 30*time.Second, func() error {
		select {
		case err := <-s.exited:
			s.exited <- err
			t.Fatalf("service exited during start-up (%v):\n%s", err, s.logs.String())
		default:
		}
		resp, err := http.Get(s.url + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/readyz answered %d", resp.StatusCode)
		}
		return nil
	})
	// Pub/sub drops what is published before the consumer subscribes.
	for _, ch := range []string{"change_batch_quantity", "allocate"} {
		s.waitForSubscriber(ch)
	}
}

// kill ends the process with SIGKILL: no shutdown, no cleanup.
func (s *service) kill() {
	s.t.Helper()
	_ = s.cmd.Process.Kill()
	<-s.exited
	s.cmd = nil
}

func (s *service) waitForSubscriber(channel string) {
	s.t.Helper()
	name := s.prefix + channel
	testenv.Eventually(s.t, 10*time.Second, func() error {
		n, err := subscribers(s.redis, name)
		if err != nil {
			return err
		}
		if n < 1 {
			return fmt.Errorf("nobody subscribed to %s yet", name)
		}
		return nil
	})
}

// subscribers counts the clients subscribed to channel: on a Cluster, on
// every node (each answers PUBSUB NUMSUB for itself).
func subscribers(rc goredis.UniversalClient, channel string) (int64, error) {
	if cluster, ok := rc.(*goredis.ClusterClient); ok {
		return redis.Subscribers(context.Background(), cluster, channel)
	}
	n, err := rc.PubSubNumSub(context.Background(), channel).Result()
	return n[channel], err
}

// stop sends SIGTERM and waits for a graceful exit; it returns the exit error.
func (s *service) stop() error {
	if s.cmd == nil || s.cmd.ProcessState != nil {
		return nil
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-s.exited:
		s.exited <- err
		return err
	case <-time.After(20 * time.Second):
		_ = s.cmd.Process.Kill()
		err := <-s.exited
		s.exited <- err
		s.t.Errorf("service did not stop within 20s of SIGTERM")
		return err
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().String()
}

// post sends body as JSON and returns the status and the decoded answer.
func (s *service) post(path string, body any) (int, map[string]any) {
	s.t.Helper()
	raw, err := json.Marshal(body)
	if err != nil {
		s.t.Fatalf("marshal: %v", err)
	}
	return s.postRaw(path, "application/json", raw)
}

func (s *service) postRaw(path, contentType string, raw []byte) (int, map[string]any) {
	s.t.Helper()
	resp, err := http.Post(s.url+path, contentType, bytes.NewReader(raw))
	if err != nil {
		s.t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	var out map[string]any
	data, _ := io.ReadAll(resp.Body)
	if len(data) > 0 {
		if err := json.Unmarshal(data, &out); err != nil {
			s.t.Fatalf("POST %s answered %d with non-JSON %q", path, resp.StatusCode, data)
		}
	}
	return resp.StatusCode, out
}

func (s *service) addBatch(ref, sku string, qty int, eta any) {
	s.t.Helper()
	status, body := s.post("/add_batch", map[string]any{"ref": ref, "sku": sku, "qty": qty, "eta": eta})
	if status != http.StatusCreated {
		s.t.Fatalf("add_batch %s: %d %v", ref, status, body)
	}
}

type allocation struct {
	SKU      string `json:"sku"`
	BatchRef string `json:"batchref"`
}

// allocations returns the status of GET /allocations/{orderid} and its rows.
func (s *service) allocations(orderID string) (int, []allocation) {
	s.t.Helper()
	resp, err := http.Get(s.url + "/allocations/" + orderID)
	if err != nil {
		s.t.Fatalf("GET allocations: %v", err)
	}
	defer resp.Body.Close()
	var rows []allocation
	if resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(&rows); err != nil {
			s.t.Fatalf("decode allocations: %v", err)
		}
	}
	return resp.StatusCode, rows
}

// publish sends a JSON body on a prefixed channel.
func (s *service) publish(channel string, body any) {
	s.t.Helper()
	raw, ok := body.([]byte)
	if !ok {
		var err error
		if raw, err = json.Marshal(body); err != nil {
			s.t.Fatalf("marshal: %v", err)
		}
	}
	if err := s.redis.Publish(context.Background(), s.prefix+channel, raw).Err(); err != nil {
		s.t.Fatalf("publish on %s: %v", channel, err)
	}
}

// subscribe listens on a prefixed channel; the subscription is confirmed
// before it returns, so nothing published afterwards is missed.
func (s *service) subscribe(channel string) <-chan *goredis.Message {
	s.t.Helper()
	ps := s.redis.Subscribe(context.Background(), s.prefix+channel)
	if _, err := ps.Receive(context.Background()); err != nil {
		s.t.Fatalf("subscribe to %s: %v", channel, err)
	}
	s.t.Cleanup(func() { _ = ps.Close() })
	return ps.Channel(goredis.WithChannelSize(10_000))
}

// awaitLineAllocated reads line_allocated messages until one announces
// orderID on batchRef, and returns it; the test fails after 10 s.
func awaitLineAllocated(t *testing.T, messages <-chan *goredis.Message, orderID, batchRef string) lineAllocated {
	t.Helper()
	var got lineAllocated
	testenv.Eventually(t, 10*time.Second, func() error {
		select {
		case m := <-messages:
			if err := json.Unmarshal([]byte(m.Payload), &got); err != nil {
				return fmt.Errorf("line_allocated body %q: %w", m.Payload, err)
			}
		default:
		}
		if got.OrderID != orderID || got.BatchRef != batchRef {
			return fmt.Errorf("last line_allocated seen: %+v, want %s on %s", got, orderID, batchRef)
		}
		return nil
	})
	return got
}

func bytesReader(b []byte) *bytes.Reader { return bytes.NewReader(b) }

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
