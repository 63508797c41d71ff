package unit_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// The API pages the history of the memory store as it does the SQL
// stores' (tests/integration/history_test.go): a full page says where the
// next starts, the last says nothing.
func TestHTTPEventsPagesTheHistoryOldestFirst(t *testing.T) {
	t.Parallel()
	app := newTestApp()
	api := newAPI(t, app)
	sku := uniqueName("PAGED")
	api.addBatch("b1", sku, 10, "2031-03-04")
	for _, o := range []string{"o1", "o2", "o3"} {
		if a := api.post("/allocate", map[string]any{"orderid": o, "sku": sku, "qty": 1}); a.status != http.StatusAccepted {
			t.Fatalf("allocate %s: %v", o, a)
		}
	}
	var seen []string
	path := "/events?limit=3&sku=" + url.QueryEscape(sku)
	for pages := 0; path != ""; pages++ {
		a := api.get(path)
		var page struct {
			Events []map[string]any `json:"events"`
			Next   *string          `json:"next"`
		}
		if a.status != http.StatusOK || json.Unmarshal([]byte(a.body), &page) != nil || pages > 2 {
			t.Fatalf("GET %s: %v", path, a)
		}
		for _, e := range page.Events {
			seen = append(seen, e["type"].(string))
		}
		if len(seen) == 1 && page.Events[0]["eta"] != "2031-03-04" {
			t.Fatalf("batch_created: %v, want its eta", page.Events[0])
		}
		path = ""
		if page.Next != nil {
			path = "/events?limit=3&sku=" + url.QueryEscape(sku) + "&after=" + url.QueryEscape(*page.Next)
		}
	}
	if got := strings.Join(seen, ","); got != "batch_created,allocated,allocated,allocated" {
		t.Fatalf("history %s", got)
	}
	if a := api.get("/events?limit=1001"); a.status != http.StatusBadRequest || !strings.HasPrefix(a.message(), "limit ") {
		t.Fatalf("limit 1001: %v, want 400 naming limit", a)
	}
}

// A batch in the warehouse says so: eta is null, not left out, on
// batch_created; other events have no eta at all.
func TestHTTPEventsShowABatchWithoutETAAsNull(t *testing.T) {
	t.Parallel()
	app := newTestApp()
	api := newAPI(t, app)
	sku := uniqueName("NOW")
	api.addBatch("b-now", sku, 10, nil)
	api.post("/allocate", map[string]any{"orderid": "o1", "sku": sku, "qty": 1})
	a := api.get("/events?sku=" + url.QueryEscape(sku))
	var page struct{ Events []map[string]any }
	if err := json.Unmarshal([]byte(a.body), &page); err != nil || len(page.Events) != 2 {
		t.Fatalf("%v", a)
	}
	if eta, ok := page.Events[0]["eta"]; !ok || eta != nil {
		t.Errorf("batch_created: %v, want eta null", page.Events[0])
	}
	if _, ok := page.Events[1]["eta"]; ok {
		t.Errorf("allocated: %v, want no eta", page.Events[1])
	}
}
