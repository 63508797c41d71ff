package e2e_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"allocation/tests/testenv"
)

// removeKeys deletes every Redis key under s's prefix when the test ends.
func (s *service) removeKeys() {
	s.t.Cleanup(func() {
		ctx := context.Background()
		iter := s.redis.Scan(ctx, 0, s.prefix+"*", 1000).Iterator()
		for iter.Next(ctx) {
			s.redis.Del(ctx, iter.Val())
		}
	})
}

type listedDeadLetter struct {
	ID        int64  `json:"id"`
	Channel   string `json:"channel"`
	StreamID  string `json:"stream_id"`
	Reason    string `json:"reason"`
	Payload   string `json:"payload"`
	RetriedAt string `json:"retried_at"`
}

func (s *service) deadLetters() []listedDeadLetter {
	s.t.Helper()
	out, err := s.command("dead-letters", "list", "-json").Output()
	if err != nil {
		s.t.Fatalf("dead-letters list -json: %v", err)
	}
	var letters []listedDeadLetter
	if err := json.Unmarshal(out, &letters); err != nil {
		s.t.Fatalf("dead-letters list -json printed %q: %v", out, err)
	}
	return letters
}

// An allocation that came before its stock is refused, listed by the
// operator's command, and applied once retried.
func TestAnOperatorListsAndRetriesARefusedMessage(t *testing.T) {
	t.Parallel()
	s := startService(t)
	s.removeKeys()
	operatorRetriesARefusedMessage(t, s)

	out, err := s.command("dead-letters", "retry", "999999").CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 || !strings.Contains(string(out), "no such dead letter") {
		t.Fatalf("retrying an unknown id: %v\n%s\nwant exit code 1 and an error naming it", err, out)
	}
	out, err = s.command("dead-letters", "retry", "x").CombinedOutput()
	if !errors.As(err, &exit) || exit.ExitCode() != 2 || !strings.Contains(string(out), `"x" is not a dead letter id`) {
		t.Fatalf("retry x: %v\n%s\nwant exit code 2 and the usage error", err, out)
	}
}

// operatorRetriesARefusedMessage plays the operator on the running service
// s: an allocation that came on the channel before its stock is refused,
// listed by dead-letters list, and applied once dead-letters retry re-drives
// it.
func operatorRetriesARefusedMessage(t *testing.T, s *service) {
	t.Helper()
	sku, order := testenv.RandomName("SKU-"), testenv.RandomName("o-")
	s.publish("allocate", map[string]any{"orderid": order, "sku": sku, "qty": 2})

	var letters []listedDeadLetter
	testenv.Eventually(t, 20*time.Second, func() error {
		if letters = s.deadLetters(); len(letters) != 1 {
			return fmt.Errorf("dead letters %+v, want the allocation", letters)
		}
		return nil
	})
	l := letters[0]
	if l.Channel != "allocate" || l.StreamID != "" || !strings.Contains(l.Payload, order) || !strings.Contains(l.Reason, sku) || l.RetriedAt != "" {
		t.Fatalf("dead letter %+v, want the pub/sub allocation refused for its SKU", l)
	}

	s.addBatch(testenv.RandomName("b-"), sku, 10, nil)
	out, err := s.command("dead-letters", "retry", strconv.FormatInt(l.ID, 10)).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "re-driven on channel allocate") {
		t.Fatalf("dead-letters retry %d: %v\n%s", l.ID, err, out)
	}
	testenv.Eventually(t, 20*time.Second, func() error {
		if status, rows := s.allocations(order); status != http.StatusOK || len(rows) != 1 {
			return fmt.Errorf("GET /allocations/%s: %d %v", order, status, rows)
		}
		return nil
	})
	if letters = s.deadLetters(); len(letters) != 1 || letters[0].RetriedAt == "" {
		t.Fatalf("dead letters after the retry %+v, want the one marked retried", letters)
	}
}

// In the embedded mode the operator's retry reaches the running service's
// own Redis: a refused stream entry goes back on its stream as a new entry.
func TestAnOperatorRetriesARefusedStreamEntryInTheEmbeddedMode(t *testing.T) {
	t.Parallel()
	s := newEmbeddedService(t, filepath.Join(t.TempDir(), "data"))
	s.start()
	sku, order := testenv.RandomName("SKU-"), testenv.RandomName("o-")
	body := fmt.Sprintf(`{"orderid": %q, "sku": %q, "qty": 1}`, order, sku)
	entry, err := s.redis.XAdd(context.Background(), &goredis.XAddArgs{Stream: "allocate", Values: map[string]any{"data": body}}).Result()
	if err != nil {
		t.Fatal(err)
	}
	var letters []listedDeadLetter
	testenv.Eventually(t, 20*time.Second, func() error {
		if letters = s.deadLetters(); len(letters) != 1 || letters[0].StreamID != entry {
			return fmt.Errorf("dead letters %+v, want entry %s", letters, entry)
		}
		return nil
	})
	s.addBatch(testenv.RandomName("b-"), sku, 5, nil)
	out, err := s.command("dead-letters", "retry", strconv.FormatInt(letters[0].ID, 10)).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "re-driven on stream allocate") {
		t.Fatalf("dead-letters retry: %v\n%s", err, out)
	}
	testenv.Eventually(t, 20*time.Second, func() error {
		if status, rows := s.allocations(order); status != http.StatusOK || len(rows) != 1 {
			return fmt.Errorf("GET /allocations/%s: %d %v", order, status, rows)
		}
		return nil
	})
	if n, err := s.redis.XLen(context.Background(), "allocate").Result(); err != nil || n != 2 {
		t.Fatalf("the allocate stream holds %d entries (%v), want the refused one and its retry", n, err)
	}
}
