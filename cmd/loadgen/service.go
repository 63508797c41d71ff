package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jmoiron/sqlx"
	_ "github.com/lib/pq"
	goredis "github.com/redis/go-redis/v9"
)

// service is the allocation process under test, started by loadgen.
type service struct {
	url    string
	cmd    *exec.Cmd
	exited chan error
	logs   *os.File
	// cleanup, when set, removes what the service kept after it stopped.
	cleanup func()
}

// randomName gives a lower-case name that is safe in SQL identifiers and Redis keys.
func randomName(prefix string) string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// createDatabase creates a fresh database next to adminURL and returns its URL.
func createDatabase(ctx context.Context, adminURL, name string) (string, error) {
	db, err := sqlx.ConnectContext(ctx, "postgres", adminURL)
	if err != nil {
		return "", fmt.Errorf("connect to %s: %w", adminURL, err)
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		return "", fmt.Errorf("create database %s: %w", name, err)
	}
	u, err := url.Parse(adminURL)
	if err != nil {
		return "", fmt.Errorf("parse %s: %w", adminURL, err)
	}
	u.Path = "/" + name
	return u.String(), nil
}

func dropDatabase(ctx context.Context, adminURL, name string) error {
	db, err := sqlx.ConnectContext(ctx, "postgres", adminURL)
	if err != nil {
		return fmt.Errorf("connect to %s: %w", adminURL, err)
	}
	defer db.Close()
	// FORCE: the service may still hold a connection if it did not stop cleanly.
	if _, err := db.ExecContext(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("drop database %s: %w", name, err)
	}
	return nil
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// startService runs `bin serve` on PostgreSQL and Redis and waits until
// /readyz answers 200 and the pub/sub consumer listens (what is published
// before that is lost).
func startService(ctx context.Context, bin, dbURL, redisURL, prefix string, rdb *goredis.Client) (*service, error) {
	return startProcess(ctx, bin, prefix, rdb, "DATABASE_URL="+dbURL, "REDIS_URL="+redisURL)
}

// startEmbedded runs `bin serve` in the embedded mode (SQLite in a new
// directory under the system's temporary one, its own Redis on a free port)
// and returns it with a client of its Redis, closed by stop; env is added
// to the service's environment.
func startEmbedded(ctx context.Context, bin, prefix string, env ...string) (*service, *goredis.Client, error) {
	dir, err := os.MkdirTemp("", "loadgen-embedded-*")
	if err != nil {
		return nil, nil, fmt.Errorf("create the data directory: %w", err)
	}
	redisAddr, err := freeAddr()
	if err != nil {
		return nil, nil, err
	}
	rdb := goredis.NewClient(&goredis.Options{Addr: redisAddr})
	env = append([]string{"DATABASE_URL=", "REDIS_URL=", "DATA_DIR=" + dir, "EMBEDDED_REDIS_ADDR=" + redisAddr}, env...)
	s, err := startProcess(ctx, bin, prefix, rdb, env...)
	if err != nil {
		rdb.Close()
		os.RemoveAll(dir)
		return nil, nil, err
	}
	s.cleanup = func() {
		rdb.Close()
		os.RemoveAll(dir)
	}
	return s, rdb, nil
}

// startProcess runs `bin serve` with env added to loadgen's environment and
// waits until it is ready.
func startProcess(ctx context.Context, bin, prefix string, rdb *goredis.Client, env ...string) (*service, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	logs, err := os.CreateTemp("", "loadgen-service-*.log")
	if err != nil {
		return nil, fmt.Errorf("create the service log: %w", err)
	}
	s := &service{url: "http://" + addr, exited: make(chan error, 1), logs: logs}
	s.cmd = exec.Command(bin, "serve")
	s.cmd.Env = append(append(os.Environ(),
		"HTTP_ADDR="+addr, "REDIS_PREFIX="+prefix, "LOG_LEVEL=warn", "SMTP_ADDR=",
	), env...)
	s.cmd.Stdout, s.cmd.Stderr = logs, logs
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	go func() { s.exited <- s.cmd.Wait() }()

	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case err := <-s.exited:
			s.exited <- err
			return nil, fmt.Errorf("service exited during start-up (%v); its log: %s", err, logs.Name())
		default:
		}
		if err := s.ready(ctx, rdb, prefix); err == nil {
			return s, nil
		} else if time.Now().After(deadline) {
			s.stop()
			return nil, fmt.Errorf("service not ready after 60 s: %w (log: %s)", err, logs.Name())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *service) ready(ctx context.Context, rdb *goredis.Client, prefix string) error {
	resp, err := http.Get(s.url + "/readyz")
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("/readyz answered %d", resp.StatusCode)
	}
	n, err := rdb.PubSubNumSub(ctx, prefix+"change_batch_quantity").Result()
	if err != nil {
		return fmt.Errorf("count subscribers: %w", err)
	}
	if n[prefix+"change_batch_quantity"] == 0 {
		return errors.New("the consumer has not subscribed yet")
	}
	return nil
}

func (s *service) pid() int { return s.cmd.Process.Pid }

// stop asks the service to shut down and kills it if it takes longer than 10 s.
func (s *service) stop() {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	// A service a phase paused (SIGSTOP) handles the SIGTERM once resumed.
	_ = s.cmd.Process.Signal(syscall.SIGCONT)
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
	s.logs.Close()
	if s.logLines() == 0 {
		_ = os.Remove(s.logs.Name())
	}
	if s.cleanup != nil {
		s.cleanup()
	}
}

// logLines is how many lines the service logged (at warn and above).
func (s *service) logLines() int {
	b, err := os.ReadFile(s.logs.Name())
	if err != nil || len(b) == 0 {
		return 0
	}
	return strings.Count(string(b), "\n")
}

// peakRSS reads the high-water mark of the resident set of pid, in bytes.
func peakRSS(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("read the status of process %d: %w", pid, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("parse VmHWM %q: %w", rest, err)
			}
			return kb * 1024, nil
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/%d/status", pid)
}

// signal sends sig to the service: SIGSTOP and SIGCONT pause and resume it.
func (s *service) signal(sig syscall.Signal) { _ = s.cmd.Process.Signal(sig) }
