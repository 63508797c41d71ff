package e2e_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"allocation/tests/testenv"
)

func TestHappyPathReturns202AndBatchIsAllocated(t *testing.T) {
	t.Parallel()
	s := startService(t)
	orderID, sku, otherSKU := testenv.RandomName("order-"), testenv.RandomName("sku-"), testenv.RandomName("other-")
	early, later, other := testenv.RandomName("batch-1-"), testenv.RandomName("batch-2-"), testenv.RandomName("batch-3-")
	s.addBatch(later, sku, 100, "2011-01-02")
	s.addBatch(early, sku, 100, "2011-01-01")
	s.addBatch(other, otherSKU, 100, nil)

	status, body := s.post("/allocate", map[string]any{"orderid": orderID, "sku": sku, "qty": 3})
	if status != http.StatusAccepted || body["batchref"] != early {
		t.Fatalf("allocate: got %d %v, want 202 with batchref %s", status, body, early)
	}

	status, rows := s.allocations(orderID)
	if status != http.StatusOK || len(rows) != 1 || rows[0] != (allocation{SKU: sku, BatchRef: early}) {
		t.Fatalf("allocations: got %d %v, want [{%s %s}]", status, rows, sku, early)
	}
}

func TestUnhappyPathReturns400AndErrorMessage(t *testing.T) {
	t.Parallel()
	s := startService(t)
	unknownSKU, orderID := testenv.RandomName("sku-"), testenv.RandomName("order-")

	status, body := s.post("/allocate", map[string]any{"orderid": orderID, "sku": unknownSKU, "qty": 20})
	if status != http.StatusBadRequest || body["message"] != "Invalid sku "+unknownSKU {
		t.Fatalf("got %d %v, want 400 with message %q", status, body, "Invalid sku "+unknownSKU)
	}
	if status, _ := s.allocations(orderID); status != http.StatusNotFound {
		t.Fatalf("allocations of a failed order: got %d, want 404", status)
	}
}

func TestOutOfStockAnswers202WithNullBatchRef(t *testing.T) {
	t.Parallel()
	s := startService(t)
	sku := testenv.RandomName("sku-")
	s.addBatch(testenv.RandomName("batch-"), sku, 5, nil)

	status, body := s.post("/allocate", map[string]any{"orderid": "o1", "sku": sku, "qty": 6})
	if v, present := body["batchref"]; status != http.StatusAccepted || !present || v != nil {
		t.Fatalf("got %d %v, want 202 with batchref null", status, body)
	}
}

func TestAddBatchIsIdempotentAndRefusesAConflictingRef(t *testing.T) {
	t.Parallel()
	s := startService(t)
	ref, sku := testenv.RandomName("batch-"), testenv.RandomName("sku-")
	s.addBatch(ref, sku, 10, "2030-05-01")
	s.addBatch(ref, sku, 10, "2030-05-01")

	status, body := s.post("/add_batch", map[string]any{"ref": ref, "sku": sku, "qty": 11, "eta": "2030-05-01"})
	if status != http.StatusConflict || body["message"] == "" {
		t.Fatalf("same ref, other qty: got %d %v, want 409 with a message", status, body)
	}
	status, body = s.post("/add_batch", map[string]any{"ref": ref, "sku": sku + "-x", "qty": 10, "eta": nil})
	if status != http.StatusConflict {
		t.Fatalf("same ref, other sku: got %d %v, want 409", status, body)
	}
}

// 200 concurrent orders of one unit against a batch of 100: every request is
// answered 202 and exactly 100 lines are allocated, none twice.
func TestConcurrentOrdersNeverOverAllocate(t *testing.T) {
	t.Parallel()
	s := startService(t)
	sku, ref := testenv.RandomName("sku-"), testenv.RandomName("batch-")
	s.addBatch(ref, sku, 100, nil)

	const orders = 200
	statuses := make([]int, orders)
	refs := make([]any, orders)
	var wg sync.WaitGroup
	for i := range orders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body, _ := json.Marshal(map[string]any{"orderid": fmt.Sprintf("order-%d", i), "sku": sku, "qty": 1})
			resp, err := http.Post(s.url+"/allocate", "application/json", bytesReader(body))
			if err != nil {
				t.Errorf("order %d: %v", i, err)
				return
			}
			defer resp.Body.Close()
			statuses[i] = resp.StatusCode
			var out map[string]any
			_ = json.NewDecoder(resp.Body).Decode(&out)
			refs[i] = out["batchref"]
		}()
	}
	wg.Wait()

	allocated := 0
	for i := range orders {
		if statuses[i] != http.StatusAccepted {
			t.Errorf("order %d answered %d, want 202", i, statuses[i])
		}
		if refs[i] == ref {
			allocated++
		}
	}
	if allocated != 100 {
		t.Fatalf("%d orders allocated, want exactly 100", allocated)
	}
	// The read model agrees with the answers.
	viewed := 0
	for i := range orders {
		status, rows := s.allocations(fmt.Sprintf("order-%d", i))
		if status == http.StatusOK && len(rows) == 1 && rows[0].BatchRef == ref {
			viewed++
		}
	}
	if viewed != 100 {
		t.Fatalf("the view shows %d allocated orders, want 100", viewed)
	}
}

func TestHealthAndReadiness(t *testing.T) {
	t.Parallel()
	s := startService(t)
	for _, path := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get(s.url + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s: %d, want 200", path, resp.StatusCode)
		}
	}
}

// Malformed requests get a 4xx with a message, never a 5xx, and the service
// keeps serving.
func TestMalformedRequestsAreRefusedWithAMessage(t *testing.T) {
	t.Parallel()
	s := startService(t)
	sku := testenv.RandomName("sku-")
	s.addBatch(testenv.RandomName("batch-"), sku, 10, nil)
	cases := []struct{ path, body string }{
		{"/allocate", `not json`},
		{"/allocate", ``},
		{"/allocate", `{"orderid": "o", "sku": "` + sku + `", "qty": "3"}`},
		{"/allocate", `{"orderid": "o", "sku": "` + sku + `", "qty": 1.5}`},
		{"/allocate", `{"orderid": "o", "sku": "` + sku + `", "qty": 0}`},
		{"/allocate", `{"orderid": "o", "sku": "` + sku + `", "qty": -4}`},
		{"/allocate", `{"orderid": "o", "sku": "` + sku + `", "qty": 99999999999999999999}`},
		{"/allocate", `{"orderid": "", "sku": "` + sku + `", "qty": 1}`},
		{"/allocate", `{"sku": "` + sku + `", "qty": 1}`},
		{"/allocate", `[1, 2, 3]`},
		{"/add_batch", `{"ref": "b", "sku": "s", "qty": 1, "eta": "2011-13-01"}`},
		{"/add_batch", `{"ref": "b", "sku": "s", "qty": 1, "eta": "01/02/2011"}`},
		{"/add_batch", `{"ref": "b", "sku": "s", "qty": -1, "eta": null}`},
		{"/add_batch", `{"ref": "", "sku": "s", "qty": 1, "eta": null}`},
		{"/add_batch", `{"ref": "b", "sku": "s", "qty": 1, "eta": null, "colour": "red"}`},
		{"/add_batch", `{"ref": "b\u0000", "sku": "s", "qty": 1, "eta": null}`},
		{"/allocate", `{"orderid": "o\u0000", "sku": "` + sku + `", "qty": 1}`},
		{"/allocate", `{"orderid": "o", "sku": "` + sku + `", "qty": 1, "qty": 2}`},
	}
	for _, c := range cases {
		status, body := s.postRaw(c.path, "application/json", []byte(c.body))
		if status < 400 || status >= 500 || body["message"] == nil || body["message"] == "" {
			t.Errorf("POST %s %s: got %d %v, want 4xx with a message", c.path, c.body, status, body)
		}
	}
	for _, path := range []string{"/allocations/o%00", "/allocations/" + strings.Repeat("x", 300)} {
		if status, _ := s.allocations(path[len("/allocations/"):]); status != http.StatusBadRequest {
			t.Errorf("GET %s: %d, want 400", path, status)
		}
	}
	status, body := s.post("/allocate", map[string]any{"orderid": "still-alive", "sku": sku, "qty": 1})
	if status != http.StatusAccepted {
		t.Fatalf("after bad requests: %d %v", status, body)
	}
}

// The log says when the service is ready, with where to reach it, and
// when a signal shuts it down.
func TestStopsGracefullyOnSIGTERMAndLogsWhenReadyAndWhenShuttingDown(t *testing.T) {
	t.Parallel()
	s := startService(t)
	testenv.Eventually(t, 10*time.Second, func() error {
		for _, line := range strings.Split(s.logs.String(), "\n") {
			if strings.Contains(line, `"msg":"allocation ready"`) && strings.Contains(line, `"url":"`+s.url+`"`) {
				return nil
			}
		}
		return fmt.Errorf("no \"allocation ready\" line with url %s in the log yet", s.url)
	})
	start := time.Now()
	if err := s.stop(); err != nil {
		t.Fatalf("exit after SIGTERM: %v", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("took %s to stop", d)
	}
	logs := s.logs.String()
	shutdown := strings.Index(logs, `"msg":"shutting down`)
	if shutdown < 0 || !strings.Contains(logs[shutdown:], "terminated") {
		t.Fatalf("no \"shutting down\" line naming SIGTERM in the log:\n%s", logs)
	}
	if !strings.Contains(logs[shutdown:], `"msg":"allocation stopped"`) {
		t.Fatalf("no \"allocation stopped\" after \"shutting down\":\n%s", logs)
	}
}

// /metrics counters move with traffic: requests, commands, deliveries,
// inbound messages, the event log backlog and the database pool.
func TestMetricsMoveWithTraffic(t *testing.T) {
	t.Parallel()
	s := startService(t)
	sku, ref := testenv.RandomName("sku-"), testenv.RandomName("batch-")
	s.addBatch(ref, sku, 10, nil)
	s.post("/allocate", map[string]any{"orderid": "m1", "sku": sku, "qty": 1})
	s.post("/allocate", map[string]any{"orderid": "m2", "sku": "nope", "qty": 1})
	s.publish("allocate", map[string]any{"orderid": "m3", "sku": sku, "qty": 1})
	testenv.Eventually(t, 10*time.Second, func() error {
		resp, err := http.Get(s.url + "/metrics")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		for _, want := range []string{
			`allocation_http_requests_total{method="POST",route="/allocate",status="202"} 1`,
			`allocation_http_requests_total{method="POST",route="/allocate",status="400"} 1`,
			`allocation_http_request_duration_seconds_count{method="POST",route="/allocate"} 2`,
			`allocation_commands_total{command="allocate",outcome="failed"} 1`,
			`allocation_commands_total{command="create_batch",outcome="ok"} 1`,
			`allocation_event_deliveries_total{handler="publish",outcome="delivered"} 2`,
			`allocation_inbound_messages_total{channel="allocate",outcome="handled"} 1`,
			`allocation_event_deliveries_pending 0`,
			`allocation_event_deliveries_dead 0`,
			`allocation_event_deliveries_blocked 0`,
			// One request at a time: no allocation waited for another.
			`allocation_coalesced_allocations_total 0`,
			`go_sql_max_open_connections{db_name="allocation"} 20`,
		} {
			if !strings.Contains(string(body), want) {
				return fmt.Errorf("/metrics lacks %s", want)
			}
		}
		// With GOGC unset the PostgreSQL mode tunes the collector from its
		// live heap: above Go's default of 100 on a small one, at most 400.
		m := regexp.MustCompile(`(?m)^go_gc_gogc_percent (\d+)$`).FindStringSubmatch(string(body))
		if m == nil {
			return fmt.Errorf("/metrics lacks go_gc_gogc_percent")
		}
		if gogc, _ := strconv.Atoi(m[1]); gogc <= 100 || gogc > 400 {
			return fmt.Errorf("go_gc_gogc_percent %d, want the tuned target, over 100 and at most 400", gogc)
		}
		return nil
	})
}
