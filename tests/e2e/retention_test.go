package e2e_test

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"allocation/tests/testenv"
)

// historyPage is the answer of GET /events.
type historyPage struct {
	Events []historyEvent `json:"events"`
	Next   *string        `json:"next"`
}

// historyEvent is an event of GET /events and GET
// /allocations/{orderid}/history.
type historyEvent struct {
	ID            int64     `json:"id"`
	Type          string    `json:"type"`
	OrderID       string    `json:"orderid"`
	BatchRef      string    `json:"batchref"`
	Qty           *int      `json:"qty"`
	MessageID     string    `json:"message_id"`
	OccurredAt    time.Time `json:"occurred_at"`
	CausationID   string    `json:"causation_id"`
	CorrelationID string    `json:"correlation_id"`
}

func (s *service) events(query string) historyPage {
	s.t.Helper()
	resp, err := http.Get(s.url + "/events?" + query)
	if err != nil {
		s.t.Fatalf("GET /events: %v", err)
	}
	defer resp.Body.Close()
	var page historyPage
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		s.t.Fatalf("GET /events?%s: %d %s", query, resp.StatusCode, body)
	}
	if err := json.NewDecoder(resp.Body).Decode(&page); err != nil {
		s.t.Fatalf("GET /events: %v", err)
	}
	return page
}

// rows counts the rows of table in s's database.
func (s *service) rows(table string) int {
	s.t.Helper()
	db, err := sql.Open("postgres", s.dbURL)
	if err != nil {
		s.t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM ` + table).Scan(&n); err != nil {
		s.t.Fatalf("count %s: %v", table, err)
	}
	return n
}

func (s *service) metric(line string) error {
	resp, err := http.Get(s.url + "/metrics")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(body), line) {
		return fmt.Errorf("/metrics lacks %s", line)
	}
	return nil
}

// soak allocates one unit after another for d and returns how many it
// allocated; every fifth goes through Redis with a message id, so that the
// inbox fills too.
func (s *service) soak(sku string, d time.Duration) int {
	s.t.Helper()
	n := 0
	for end := time.Now().Add(d); time.Now().Before(end); n++ {
		order := fmt.Sprintf("soak-%d", n)
		if n%5 == 0 {
			s.publish("allocate", map[string]any{"orderid": order, "sku": sku, "qty": 1, "message_id": testenv.RandomName("m-")})
			continue
		}
		if status, body := s.post("/allocate", map[string]any{"orderid": order, "sku": sku, "qty": 1}); status != http.StatusAccepted {
			s.t.Fatalf("allocate %s: %d %v", order, status, body)
		}
	}
	return n
}

// With a retention of seconds, a soak of allocations leaves the log and the
// inbox no larger than the window holds, and GET /events shows nothing
// older than the window.
func TestRetentionKeepsTheHistoryBoundedUnderLoad(t *testing.T) {
	t.Parallel()
	const retention = 3 * time.Second
	s := newService(t, testenv.RedisURL())
	// The stream consumer's redeliveries end within 5 × 2 × 300ms = 3s,
	// which is what lets the inbox forget after 3s.
	s.env = []string{"EVENT_RETENTION=3s", "INBOX_RETENTION=3s", "PRUNE_INTERVAL=1s", "STREAM_CLAIM_IDLE=300ms", "STREAM_MAX_DELIVERIES=5"}
	s.start()
	sku := testenv.RandomName("soak-")
	s.addBatch(testenv.RandomName("b-"), sku, 1_000_000, nil)

	start := time.Now()
	written := s.soak(sku, 3*retention)
	t.Logf("%d allocations in %s", written, time.Since(start).Round(time.Millisecond))

	// Within a pass or two of the end, the oldest event left is younger
	// than the window and two passes.
	testenv.Eventually(t, 10*time.Second, func() error {
		page := s.events("limit=1")
		if len(page.Events) == 0 {
			return nil
		}
		if age := time.Since(page.Events[0].OccurredAt); age > retention+2*time.Second {
			return fmt.Errorf("the oldest event shown is %s old (%s)", age.Round(time.Millisecond), page.Events[0].Type)
		}
		return nil
	})
	if left := s.rows("event_log"); left >= written {
		t.Fatalf("%d events left of the %d+ written: nothing was pruned", left, written)
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		if n := s.rows("inbox"); n != 0 {
			return fmt.Errorf("%d inbox rows left 3s after the last message", n)
		}
		if n := s.rows("event_log"); n != 0 {
			return fmt.Errorf("%d events left 3s after the last", n)
		}
		return s.metric(`allocation_history_rows{table="event_log"} 0`)
	})
	if err := s.metric(`allocation_history_pruned_rows_total{table="event_log"}`); err != nil {
		t.Fatal(err)
	}
}

// EVENT_RETENTION=0 keeps every event, however many passes the pruner makes.
func TestZeroRetentionKeepsEveryEvent(t *testing.T) {
	t.Parallel()
	s := newService(t, testenv.RedisURL())
	s.env = []string{"EVENT_RETENTION=0", "INBOX_RETENTION=0", "PRUNE_INTERVAL=100ms"}
	s.start()
	sku := testenv.RandomName("keep-")
	s.addBatch(testenv.RandomName("b-"), sku, 100, nil)
	for i := range 10 {
		if status, _ := s.post("/allocate", map[string]any{"orderid": fmt.Sprintf("k%d", i), "sku": sku, "qty": 1}); status != http.StatusAccepted {
			t.Fatalf("allocate: %d", status)
		}
	}
	// A pass that counted all eleven ran after the writes, with a
	// retention of nothing if 0 were read as a duration.
	testenv.Eventually(t, 10*time.Second, func() error {
		return s.metric(`allocation_history_rows{table="event_log"} 11`)
	})
	if n := s.rows("event_log"); n != 11 {
		t.Fatalf("%d events in the log, want all 11", n)
	}
	if page := s.events("sku=" + sku); len(page.Events) != 11 {
		t.Fatalf("GET /events shows %d, want 11", len(page.Events))
	}
}

// The embedded mode prunes its SQLite file the same way: after a soak, the
// log and the inbox empty themselves once the window has passed.
func TestRetentionKeepsTheEmbeddedHistoryBounded(t *testing.T) {
	t.Parallel()
	s := newEmbeddedService(t, t.TempDir())
	s.env = append(s.env, "EVENT_RETENTION=2s", "INBOX_RETENTION=2s", "PRUNE_INTERVAL=500ms", "STREAM_CLAIM_IDLE=200ms", "STREAM_MAX_DELIVERIES=5")
	s.start()
	sku := testenv.RandomName("embedded-soak-")
	s.addBatch(testenv.RandomName("b-"), sku, 1_000_000, nil)
	written := s.soak(sku, 4*time.Second)
	t.Logf("%d allocations", written)
	testenv.Eventually(t, 10*time.Second, func() error {
		for _, table := range []string{"event_log", "event_deliveries", "inbox"} {
			if err := s.metric(fmt.Sprintf(`allocation_history_rows{table=%q} 0`, table)); err != nil {
				return err
			}
		}
		if page := s.events("limit=1"); len(page.Events) != 0 {
			return fmt.Errorf("GET /events still shows %s of %s", page.Events[0].Type, page.Events[0].OccurredAt)
		}
		return nil
	})
	for _, table := range []string{"event_log", "inbox"} {
		line := fmt.Sprintf(`allocation_history_pruned_rows_total{table=%q} 0`, table)
		if s.metric(line+"\n") == nil {
			t.Errorf("/metrics says %s: nothing pruned", line)
		}
	}
}
