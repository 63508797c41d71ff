package integration_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"allocation/adapters/postgres"
	"allocation/adapters/sqlite"
	"allocation/bootstrap"
	"allocation/domain"
	"allocation/entrypoints/httpapi"
	"allocation/servicelayer"
	"allocation/tests/testenv"
)

// reopen returns a new store on db's database, as a restarted service
// would open.
func reopen(t *testing.T, db testDB) testDB {
	t.Helper()
	if db.url == "" {
		db.store = sqlite.NewStore(db.DB, bootstrap.StoreOptions(slog.Default()))
	} else {
		var err error
		if db.store, err = postgres.NewStore(db.DB, db.url, bootstrap.StoreOptions(slog.Default())); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { db.store.Close() })
	return db
}

// historyAPI serves the HTTP API of bus and db's store.
func historyAPI(t *testing.T, bus *servicelayer.Bus, db testDB) string {
	t.Helper()
	srv := httptest.NewServer(httpapi.New(httpapi.Config{Bus: bus, Views: db.store}))
	t.Cleanup(srv.Close)
	return srv.URL
}

type historyEvent struct {
	ID       int64   `json:"id"`
	Type     string  `json:"type"`
	SKU      string  `json:"sku"`
	OrderID  string  `json:"orderid"`
	BatchRef string  `json:"batchref"`
	Qty      *int    `json:"qty"`
	OldQty   *int    `json:"old_qty"`
	ETA      *string `json:"eta"`
}

type eventsPage struct {
	Events []historyEvent `json:"events"`
	Next   *string        `json:"next"`
}

// getJSON GETs path and decodes a 200 answer into v; it returns the status
// and the error message of any other.
func getJSON(t *testing.T, base, path string, v any) (int, string) {
	t.Helper()
	resp, err := http.Get(base + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var m struct{ Message string }
		_ = json.NewDecoder(resp.Body).Decode(&m)
		return resp.StatusCode, m.Message
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return resp.StatusCode, ""
}

// allPages follows next from the first page of query, limit events a page,
// and returns every event and how many pages it took.
func allPages(t *testing.T, base, query string, limit int) ([]historyEvent, int) {
	t.Helper()
	var all []historyEvent
	after := ""
	for pages := 1; ; pages++ {
		var page eventsPage
		path := fmt.Sprintf("/events?%s&limit=%d%s", query, limit, after)
		if status, msg := getJSON(t, base, path, &page); status != http.StatusOK {
			t.Fatalf("GET %s: %d %s", path, status, msg)
		}
		all = append(all, page.Events...)
		if page.Next == nil {
			return all, pages
		}
		if len(page.Events) != limit {
			t.Fatalf("GET %s: a page of %d before the last, want %d", path, len(page.Events), limit)
		}
		after = "&after=" + url.QueryEscape(*page.Next)
	}
}

func types(events []historyEvent) []string {
	out := make([]string, len(events))
	for i, e := range events {
		out[i] = e.Type
	}
	return out
}

func TestEveryCommandLogsItsEventsAndOnlyEventsWithHandlersQueueDeliveries(t *testing.T) {
	onEveryEngine(t, func(t *testing.T, open opener) {
		bus, db := busOn(t, open)
		sku := testenv.RandomName("HIST-")
		handleAll(t, bus,
			domain.CreateBatch{Ref: sku + "-now", SKU: sku, Qty: 10},
			domain.CreateBatch{Ref: sku + "-later", SKU: sku, Qty: 10, ETA: time.Date(2031, 5, 6, 0, 0, 0, 0, time.UTC)},
			domain.Allocate{OrderID: "o1", SKU: sku, Qty: 8},
			domain.ChangeBatchQuantity{Ref: sku + "-now", Qty: 5}, // o1 moves to -later
			domain.Allocate{OrderID: "o2", SKU: sku, Qty: 100},    // out of stock
		)
		events, err := db.store.Events(context.Background(), servicelayer.EventQuery{SKU: sku})
		if err != nil {
			t.Fatal(err)
		}
		want := []domain.Event{
			domain.BatchCreated{Ref: sku + "-now", SKU: sku, Qty: 10},
			domain.BatchCreated{Ref: sku + "-later", SKU: sku, Qty: 10, ETA: time.Date(2031, 5, 6, 0, 0, 0, 0, time.UTC)},
			domain.Allocated{OrderID: "o1", SKU: sku, Qty: 8, BatchRef: sku + "-now"},
			domain.BatchQuantityChanged{Ref: sku + "-now", SKU: sku, OldQty: 10, Qty: 5},
			domain.Deallocated{OrderID: "o1", SKU: sku, Qty: 8, BatchRef: sku + "-now"},
			domain.Allocated{OrderID: "o1", SKU: sku, Qty: 8, BatchRef: sku + "-later"},
			domain.OutOfStock{SKU: sku},
		}
		var got []domain.Event
		for _, env := range events {
			got = append(got, env.Event)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("logged\n%v\nwant\n%v", got, want)
		}
		var queued int
		if err := db.Get(&queued, `SELECT count(*) FROM event_deliveries d JOIN event_log e ON e.id = d.event_id
			WHERE e.name IN ('batch_created', 'batch_quantity_changed')`); err != nil {
			t.Fatal(err)
		}
		if queued != 0 {
			t.Fatalf("%d deliveries queued for events on record only, want none", queued)
		}
	})
}

func TestEventsQueriesFilterAndPageWithAStableCursor(t *testing.T) {
	onEveryEngine(t, func(t *testing.T, open opener) {
		bus, db := busOn(t, open)
		base := historyAPI(t, bus, db)
		a, b := testenv.RandomName("HA-"), testenv.RandomName("HB-")
		handleAll(t, bus, domain.CreateBatch{Ref: a + "-1", SKU: a, Qty: 100}, domain.CreateBatch{Ref: b + "-1", SKU: b, Qty: 100})
		for i := range 6 { // interleaved, so that a filter has gaps to skip
			handleAll(t, bus, domain.Allocate{OrderID: fmt.Sprintf("o%d", i), SKU: a, Qty: 1}, domain.Allocate{OrderID: fmt.Sprintf("o%d", i), SKU: b, Qty: 1})
		}

		ofA, pages := allPages(t, base, "sku="+a, 2)
		if len(ofA) != 7 || pages != 4 || ofA[0].Type != "batch_created" || ofA[0].Qty == nil || *ofA[0].Qty != 100 {
			t.Fatalf("sku %s: %d events in %d pages (%v), want 7 in 4, batch_created first", a, len(ofA), pages, types(ofA))
		}
		for i := 1; i < len(ofA); i++ {
			if ofA[i].ID <= ofA[i-1].ID || ofA[i].SKU != a {
				t.Fatalf("event %d: %+v after %+v: want %s only, oldest first", i, ofA[i], ofA[i-1], a)
			}
		}
		var one eventsPage
		getJSON(t, base, "/events?orderid=o3&batchref="+b+"-1&type=allocated", &one)
		if len(one.Events) != 1 || one.Events[0].SKU != b || one.Events[0].OrderID != "o3" || one.Next != nil {
			t.Fatalf("combined filters: %+v, want the allocation of o3 to %s alone", one, b)
		}

		// The cursor is the event's place in the log: another store on the
		// same database (a restarted service) continues from it.
		var first eventsPage
		getJSON(t, base, "/events?sku="+a+"&limit=3", &first)
		restarted := reopen(t, db)
		var rest eventsPage
		getJSON(t, historyAPI(t, bus, restarted), "/events?sku="+a+"&limit=100&after="+url.QueryEscape(*first.Next), &rest)
		if got := append(first.Events, rest.Events...); !reflect.DeepEqual(got, ofA) {
			t.Fatalf("paging across a restart: %v, want %v", types(got), types(ofA))
		}
	})
}

func TestEventsQueriesRefuseBadParametersNamingThem(t *testing.T) {
	onEveryEngine(t, func(t *testing.T, open opener) {
		bus, db := busOn(t, open)
		base := historyAPI(t, bus, db)
		for query, param := range map[string]string{
			"colour=red":                           "colour",
			"sku=a&sku=b":                          "sku",
			"sku=":                                 "sku",
			"orderid=":                             "orderid",
			"batchref=" + strings.Repeat("x", 256): "batchref",
			"type=shipped":                         "type",
			"limit=0":                              "limit",
			"limit=1001":                           "limit",
			"limit=ten":                            "limit",
			"after=not-a-cursor":                   "after",
			"after=":                               "after",
		} {
			var page eventsPage
			status, msg := getJSON(t, base, "/events?"+query, &page)
			if status != http.StatusBadRequest || !strings.HasPrefix(msg, param+" ") {
				t.Errorf("GET /events?%s: %d %q, want 400 naming %s", query, status, msg, param)
			}
		}
		var page eventsPage
		if status, msg := getJSON(t, base, "/events?limit=1000", &page); status != http.StatusOK || page.Events == nil {
			t.Errorf("GET /events?limit=1000 on an empty log: %d %s %+v, want 200 and an empty list", status, msg, page)
		}
	})
}

func TestOrderHistoryListsTheOrdersEventsOr404(t *testing.T) {
	onEveryEngine(t, func(t *testing.T, open opener) {
		bus, db := busOn(t, open)
		base := historyAPI(t, bus, db)
		sku := testenv.RandomName("OH-")
		handleAll(t, bus,
			domain.CreateBatch{Ref: sku + "-a", SKU: sku, Qty: 10},
			domain.CreateBatch{Ref: sku + "-b", SKU: sku, Qty: 10, ETA: time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC)},
			domain.Allocate{OrderID: "order/1", SKU: sku, Qty: 6},
			domain.Allocate{OrderID: "other", SKU: sku, Qty: 1},
			domain.ChangeBatchQuantity{Ref: sku + "-a", Qty: 2},
		)
		var history struct{ Events []historyEvent }
		if status, msg := getJSON(t, base, "/allocations/order%2F1/history", &history); status != http.StatusOK {
			t.Fatalf("history: %d %s", status, msg)
		}
		want := []string{"allocated", "deallocated", "allocated"}
		if got := types(history.Events); !reflect.DeepEqual(got, want) || history.Events[2].BatchRef != sku+"-b" {
			t.Fatalf("history of order/1: %+v, want %v ending on %s-b", history.Events, want, sku)
		}
		if status, _ := getJSON(t, base, "/allocations/never-seen/history", &history); status != http.StatusNotFound {
			t.Fatalf("an order never seen: %d, want 404", status)
		}
	})
}
