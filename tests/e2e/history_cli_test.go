package e2e_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"allocation/tests/testenv"
)

// `allocation events log` prints what GET /events shows: a table, JSON
// lines, and pages that continue from the cursor it prints.
func TestEventsLogPrintsTheHistoryAsATableOrJSONLines(t *testing.T) {
	t.Parallel()
	s := startService(t)
	sku := testenv.RandomName("cli-")
	s.addBatch(testenv.RandomName("b-"), sku, 10, "2031-02-03")
	if status, _ := s.post("/allocate", map[string]any{"orderid": "c1", "sku": sku, "qty": 2}); status != http.StatusAccepted {
		t.Fatalf("allocate: %d", status)
	}
	run := func(args ...string) (string, string) {
		t.Helper()
		var stdout, stderr bytes.Buffer
		cmd := s.command(append([]string{"events", "log", "-sku", sku}, args...)...)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("events log %v: %v\n%s", args, err, stderr.String())
		}
		return stdout.String(), stderr.String()
	}

	out, _ := run("-json")
	var types []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var e struct{ Type, ETA string }
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("not a JSON line: %q", line)
		}
		types = append(types, e.Type)
	}
	if strings.Join(types, ",") != "batch_created,allocated" {
		t.Fatalf("JSON lines of %s: %v, want batch_created, allocated", sku, types)
	}
	if table, _ := run(); !strings.HasPrefix(table, "ID") || !strings.Contains(table, "2031-02-03") || !strings.Contains(table, "c1") {
		t.Fatalf("table:\n%s", table)
	}
	first, more := run("-limit", "1")
	after := strings.TrimSpace(strings.TrimPrefix(more, "more: -after "))
	if !strings.Contains(first, "batch_created") || after == "" {
		t.Fatalf("first page %q, then %q", first, more)
	}
	if rest, _ := run("-after", after, "-json"); strings.Count(rest, "\n") != 1 || !strings.Contains(rest, `"allocated"`) {
		t.Fatalf("after %s: %q, want the allocation alone", after, rest)
	}
}
