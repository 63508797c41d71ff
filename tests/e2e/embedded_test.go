package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"allocation/tests/testenv"
)

// With nothing configured the service runs on its own: an SQLite file and
// an embedded Redis that others reach over TCP. The book's scenario works
// against it, and a restart keeps the data (the embedded Redis starts
// empty).
func TestEmbeddedModeRunsTheBooksScenarioAndKeepsTheDataAcrossARestart(t *testing.T) {
	t.Parallel()
	dataDir := filepath.Join(t.TempDir(), "data") // created by the service
	s := newEmbeddedService(t, dataDir)
	s.start()

	// The first log line says what runs where.
	first, _, _ := strings.Cut(s.logs.String(), "\n")
	var startup map[string]any
	if err := json.Unmarshal([]byte(first), &startup); err != nil {
		t.Fatalf("first log line %q: %v", first, err)
	}
	wantFile := filepath.Join(dataDir, "allocation.db")
	if startup["mode"] != "embedded" || startup["data_file"] != wantFile || startup["redis_addr"] != s.redis.(*goredis.Client).Options().Addr {
		t.Fatalf("first log line %s; want mode embedded, data_file %s, redis_addr %s", first, wantFile, s.redis.(*goredis.Client).Options().Addr)
	}
	if _, err := os.Stat(wantFile); err != nil {
		t.Fatalf("the data file: %v", err)
	}

	// The book's scenario.
	s.addBatch("b-early", "RETRO-CLOCK", 10, "2011-01-01")
	s.addBatch("b-later", "RETRO-CLOCK", 10, "2011-01-02")
	if status, body := s.post("/allocate", map[string]any{"orderid": "o1", "sku": "RETRO-CLOCK", "qty": 10}); status != http.StatusAccepted || body["batchref"] != "b-early" {
		t.Fatalf("allocate: %d %v, want 202 to b-early", status, body)
	}
	if _, rows := s.allocations("o1"); len(rows) != 1 || rows[0].BatchRef != "b-early" {
		t.Fatalf("before the change: %v, want b-early", rows)
	}
	messages := s.subscribe("line_allocated")
	s.publish("change_batch_quantity", map[string]any{"batchref": "b-early", "qty": 5})
	got := awaitLineAllocated(t, messages, "o1", "b-later")
	if got.Qty != 10 || got.MessageID == "" {
		t.Fatalf("line_allocated fields: %+v", got)
	}
	testenv.Eventually(t, 5*time.Second, func() error {
		if _, rows := s.allocations("o1"); len(rows) != 1 || rows[0].BatchRef != "b-later" {
			return fmt.Errorf("view after the reallocation: %v, want b-later", rows)
		}
		return nil
	})
	// The stream beside the channel, in the embedded Redis too.
	testenv.Eventually(t, 5*time.Second, func() error {
		if n, err := s.redis.XLen(context.Background(), "line_allocated").Result(); err != nil || n != 2 {
			return fmt.Errorf("line_allocated stream holds %d entries (%v), want the allocation and the reallocation", n, err)
		}
		return nil
	})
	// The operator's commands work on the file while the service runs.
	out, err := s.command("events", "dead").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "EVENT") || strings.Count(string(out), "\n") != 1 {
		t.Fatalf("events dead: %v\n%s\nwant the header and no dead delivery", err, out)
	}

	if err := s.stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	s.start() // the same file, a fresh embedded Redis on the same address

	if status, rows := s.allocations("o1"); status != http.StatusOK || len(rows) != 1 || rows[0].BatchRef != "b-later" {
		t.Fatalf("after the restart: %d %v, want o1 still in b-later", status, rows)
	}
	if n, err := s.redis.XLen(context.Background(), "line_allocated").Result(); err != nil || n != 0 {
		t.Fatalf("the embedded Redis kept %d stream entries (%v) across the restart; it keeps nothing", n, err)
	}
	// b-early has 5 left, b-later none: the stock survived with the lines.
	if status, body := s.post("/allocate", map[string]any{"orderid": "o2", "sku": "RETRO-CLOCK", "qty": 5}); status != http.StatusAccepted || body["batchref"] != "b-early" {
		t.Fatalf("allocate after the restart: %d %v, want 202 to b-early", status, body)
	}
	if status, body := s.post("/allocate", map[string]any{"orderid": "o3", "sku": "RETRO-CLOCK", "qty": 1}); status != http.StatusAccepted || body["batchref"] != nil {
		t.Fatalf("allocate beyond the stock after the restart: %d %v, want 202 out of stock", status, body)
	}
}

// command runs the binary with s's configuration, for the operator's
// subcommands.
func (s *service) command(args ...string) *exec.Cmd {
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), "DATABASE_URL="+s.dbURL, "REDIS_URL="+s.redisURL, "REDIS_PREFIX="+s.prefix)
	if s.dataDir != "" {
		cmd.Env = append(cmd.Env, "DATA_DIR="+s.dataDir)
	}
	cmd.Env = append(cmd.Env, s.env...)
	return cmd
}

// The embedded Redis keeps published ids in the service's memory, so there
// a generation of them also ends after PUBLISHED_ID_LIMIT events: after 40
// allocations with a limit of 5, it holds two generations, not 40 ids, and
// every event reached the stream once.
func TestEmbeddedModeKeepsTwoGenerationsOfPublishedIDsBoundedByCount(t *testing.T) {
	t.Parallel()
	s := newEmbeddedService(t, t.TempDir())
	s.env = append(s.env, "PUBLISHED_ID_LIMIT=5")
	s.start()
	s.addBatch("b-bounded", "BOUNDED-LAMP", 1000, nil)
	const orders = 40
	for i := range orders {
		if status, body := s.post("/allocate", map[string]any{"orderid": fmt.Sprintf("o%d", i), "sku": "BOUNDED-LAMP", "qty": 1}); status != http.StatusAccepted {
			t.Fatalf("allocate o%d: %d %v", i, status, body)
		}
	}
	ctx := context.Background()
	testenv.Eventually(t, 10*time.Second, func() error {
		if n, err := s.redis.XLen(ctx, "line_allocated").Result(); err != nil || n != orders {
			return fmt.Errorf("line_allocated holds %d entries (%v), want %d", n, err, orders)
		}
		return nil
	})
	keys, err := s.redis.Keys(ctx, "{line_allocated}:published:*").Result()
	if err != nil {
		t.Fatal(err)
	}
	var ids int64
	for _, k := range keys {
		ids += s.redis.HLen(ctx, k).Val()
	}
	if len(keys) > 2 || ids >= orders {
		t.Fatalf("the embedded Redis keeps %d ids in %v; want at most two generations of about 5", ids, keys)
	}
}
