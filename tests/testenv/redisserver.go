package testenv

import (
	"context"
	"net"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisServer is a redis-server of a test's own on a free loopback port,
// which the test can stop, start again empty, or freeze (SIGSTOP) to play an
// outage. It keeps nothing on disk.
type RedisServer struct {
	tb   testing.TB
	Addr string
	cmd  *exec.Cmd
}

// StartRedisServer starts a private redis-server and stops it when the test
// ends.
func StartRedisServer(tb testing.TB) *RedisServer {
	tb.Helper()
	s := &RedisServer{tb: tb, Addr: freeLoopbackAddr(tb)}
	s.Start()
	tb.Cleanup(s.Stop)
	return s
}

// URL is the redis:// URL of the server.
func (s *RedisServer) URL() string { return "redis://" + s.Addr + "/0" }

// Start starts the server (again, empty) and waits until it answers.
func (s *RedisServer) Start() {
	s.tb.Helper()
	s.cmd = runRedis(s.tb, s.Addr, "")
}

// freeLoopbackAddr is a 127.0.0.1 port that was free a moment ago.
func freeLoopbackAddr(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// runRedis starts redis-server on addr, reading the configuration file conf
// first when it is not empty, with args after the common ones (no
// persistence, warnings only, output dropped), and waits until it answers
// PING (or asks for a password). It fails the test when redis-server is not installed: nothing is
// skipped. The caller stops the process.
func runRedis(tb testing.TB, addr, conf string, args ...string) *exec.Cmd {
	tb.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		tb.Fatalf("redis-server is not installed (make services installs it): %v", err)
	}
	_, port, _ := net.SplitHostPort(addr)
	common := []string{"--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--loglevel", "warning"}
	var argv []string
	if conf != "" {
		argv = append(argv, conf) // redis-server wants the file first
	}
	cmd := exec.Command("redis-server", append(append(argv, common...), args...)...)
	// Its warnings (memory overcommit) would bury the test's own output.
	cmd.Stdout, cmd.Stderr = nil, nil
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start redis-server: %v", err)
	}
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	// NOAUTH is an answer too: the server runs, and wants a password.
	for err := c.Ping(context.Background()).Err(); err != nil && !strings.HasPrefix(err.Error(), "NOAUTH"); err = c.Ping(context.Background()).Err() {
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			tb.Fatalf("redis-server on %s did not answer within 10s", addr)
		}
		time.Sleep(20 * time.Millisecond) // polling a process start, bounded above
	}
	return cmd
}

// Stop kills the server; what it held is gone.
func (s *RedisServer) Stop() {
	kill(s.cmd)
	s.cmd = nil
}

// Freeze stops the server's process (SIGSTOP): connections stay open and
// nothing answers, as with a Redis stuck on a slow disk.
func (s *RedisServer) Freeze() { s.signal(syscall.SIGSTOP) }

// Thaw lets a frozen server go on.
func (s *RedisServer) Thaw() { s.signal(syscall.SIGCONT) }

func (s *RedisServer) signal(sig syscall.Signal) {
	s.tb.Helper()
	if s.cmd == nil {
		s.tb.Fatal("redis-server is not running")
	}
	if err := s.cmd.Process.Signal(sig); err != nil {
		s.tb.Fatalf("signal %v to redis-server: %v", sig, err)
	}
}

// Client is a client of the server, closed when the test ends.
func (s *RedisServer) Client() *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: s.Addr})
	s.tb.Cleanup(func() { _ = c.Close() })
	return c
}
