package unit_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"allocation/domain"
	"allocation/entrypoints/httpapi"
	"allocation/servicelayer"
)

// apiClient drives one API served by an in-process httptest server.
type apiClient struct {
	t   *testing.T
	url string
}

// apiAnswer is what the API answered.
type apiAnswer struct {
	status int
	body   string
	header http.Header
}

// message is the "message" field of a JSON error answer, "" when there is none.
func (a apiAnswer) message() string {
	var m struct{ Message string }
	_ = json.Unmarshal([]byte(a.body), &m)
	return m.Message
}

func (a apiAnswer) String() string { return fmt.Sprintf("%d %s", a.status, strings.TrimSpace(a.body)) }

// serve starts the API of cfg; a nil cfg.Log discards the logs.
func serve(t *testing.T, cfg httpapi.Config) apiClient {
	t.Helper()
	if cfg.Log == nil {
		cfg.Log = quietLog()
	}
	srv := httptest.NewServer(httpapi.New(cfg))
	t.Cleanup(srv.Close)
	return apiClient{t: t, url: srv.URL}
}

// newAPI serves the API of the real bus and the memory store of app.
func newAPI(t *testing.T, app testApp) apiClient {
	t.Helper()
	return serve(t, httpapi.Config{Bus: app.bus, Views: app.store})
}

func (c apiClient) do(method, path, contentType string, body io.Reader) apiAnswer {
	c.t.Helper()
	req, err := http.NewRequest(method, c.url+path, body)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	// Bounded, so that a hung handler fails the test instead of stalling it.
	client := http.Client{Timeout: 10 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatalf("%s %s: reading the answer: %v", method, path, err)
	}
	return apiAnswer{status: resp.StatusCode, body: string(b), header: resp.Header}
}

func (c apiClient) get(path string) apiAnswer {
	c.t.Helper()
	return c.do(http.MethodGet, path, "", nil)
}

// post sends v as a JSON body; a string is sent as it is.
func (c apiClient) post(path string, v any) apiAnswer {
	c.t.Helper()
	body, ok := v.(string)
	if !ok {
		b, err := json.Marshal(v)
		if err != nil {
			c.t.Fatalf("encoding %v: %v", v, err)
		}
		body = string(b)
	}
	return c.do(http.MethodPost, path, "application/json", strings.NewReader(body))
}

func (c apiClient) addBatch(ref, sku string, qty int, eta any) {
	c.t.Helper()
	if a := c.post("/add_batch", map[string]any{"ref": ref, "sku": sku, "qty": qty, "eta": eta}); a.status != http.StatusCreated {
		c.t.Fatalf("add_batch %s: %v", ref, a)
	}
}

func TestHTTPHappyPathAllocatesToTheEarliestBatch(t *testing.T) {
	t.Parallel()
	app := newTestApp()
	api := newAPI(t, app)
	sku, other := uniqueName("LAMP"), uniqueName("RUG")
	early, later, otherRef := uniqueName("early"), uniqueName("later"), uniqueName("other")
	api.addBatch(later, sku, 100, "2011-01-02")
	api.addBatch(early, sku, 100, "2011-01-01")
	api.addBatch(otherRef, other, 100, nil)
	order := uniqueName("order")

	a := api.post("/allocate", map[string]any{"orderid": order, "sku": sku, "qty": 3})
	if want := fmt.Sprintf(`{"batchref":%q}`, early); a.status != http.StatusAccepted || strings.TrimSpace(a.body) != want {
		t.Fatalf("allocate: got %v, want 202 %s", a, want)
	}
	a = api.get("/allocations/" + order)
	if want := fmt.Sprintf(`[{"sku":%q,"batchref":%q}]`, sku, early); a.status != http.StatusOK || strings.TrimSpace(a.body) != want {
		t.Fatalf("allocations: got %v, want 200 %s", a, want)
	}
}

func TestHTTPUnknownSKUIs400ThenTheOrderIs404(t *testing.T) {
	t.Parallel()
	app := newTestApp()
	api := newAPI(t, app)
	sku, order := uniqueName("GHOST"), uniqueName("order")
	a := api.post("/allocate", map[string]any{"orderid": order, "sku": sku, "qty": 1})
	if a.status != http.StatusBadRequest || a.message() != "Invalid sku "+sku {
		t.Fatalf("allocate: got %v, want 400 with message %q", a, "Invalid sku "+sku)
	}
	if a := api.get("/allocations/" + order); a.status != http.StatusNotFound || a.message() == "" {
		t.Fatalf("allocations: got %v, want 404 with a message", a)
	}
}

func TestHTTPOutOfStockAnswersNullBatchRef(t *testing.T) {
	t.Parallel()
	app := newTestApp()
	api := newAPI(t, app)
	sku := uniqueName("LAMP")
	api.addBatch(uniqueName("b"), sku, 1, nil)
	a := api.post("/allocate", map[string]any{"orderid": uniqueName("order"), "sku": sku, "qty": 2})
	if a.status != http.StatusAccepted || strings.TrimSpace(a.body) != `{"batchref":null}` {
		t.Fatalf("allocate: got %v, want 202 {\"batchref\":null}", a)
	}
}

func TestHTTPAddBatchIsIdempotentAndConflictsAre409(t *testing.T) {
	t.Parallel()
	app := newTestApp()
	api := newAPI(t, app)
	ref, sku := uniqueName("b"), uniqueName("LAMP")
	batch := map[string]any{"ref": ref, "sku": sku, "qty": 1, "eta": "2030-01-01"}
	for range 2 {
		if a := api.post("/add_batch", batch); a.status != http.StatusCreated {
			t.Fatalf("add_batch: got %v, want 201 every time", a)
		}
	}
	for name, conflicting := range map[string]map[string]any{
		"other qty": {"ref": ref, "sku": sku, "qty": 2, "eta": "2030-01-01"},
		"other eta": {"ref": ref, "sku": sku, "qty": 1, "eta": nil},
		"other sku": {"ref": ref, "sku": uniqueName("RUG"), "qty": 1, "eta": "2030-01-01"},
	} {
		if a := api.post("/add_batch", conflicting); a.status != http.StatusConflict || a.message() == "" {
			t.Errorf("%s: got %v, want 409 with a message", name, a)
		}
	}
}

func TestHTTPRefusesMalformedBodiesWithAMessageNamingTheField(t *testing.T) {
	t.Parallel()
	app := newTestApp()
	api := newAPI(t, app)
	sku := uniqueName("LAMP")
	api.addBatch(uniqueName("b"), sku, 10, nil)
	long := strings.Repeat("x", domain.MaxReferenceLength+1)
	// allocate and addBatch fill in the valid fields around the one under test.
	allocate := func(fields string) string { return `{"orderid": "o", "sku": "` + sku + `", "qty": 1` + fields + `}` }
	line := func(orderID, qty string) string {
		return `{"orderid": ` + orderID + `, "sku": "` + sku + `", "qty": ` + qty + `}`
	}
	batch := func(ref, qty, eta string) string {
		return `{"ref": ` + ref + `, "sku": "` + sku + `", "qty": ` + qty + `, "eta": ` + eta + `}`
	}
	cases := []struct {
		name, path, contentType, body string
		status                        int
		mentions                      string
	}{
		{"not JSON", "/allocate", "application/json", `not json`, 400, "body"},
		{"truncated JSON", "/allocate", "application/json", `{"orderid": "o", `, 400, "body"},
		{"empty body", "/allocate", "application/json", ``, 400, "body"},
		{"array", "/allocate", "application/json", `[1]`, 400, "body"},
		{"null body", "/allocate", "application/json", `null`, 400, "body"},
		{"string body", "/allocate", "application/json", `"o"`, 400, "body"},
		{"trailing object", "/allocate", "application/json", allocate(``) + ` {}`, 400, "body"},
		{"trailing garbage", "/allocate", "application/json", allocate(``) + ` x`, 400, "body"},
		{"unknown field", "/allocate", "application/json", allocate(`, "rush": true`), 400, "rush"},
		{"field twice", "/allocate", "application/json", allocate(`, "qty": 9`), 400, "qty"},
		{"field twice and an unknown one", "/allocate", "application/json", allocate(`, "qty": 9, "rush": true`), 400, "rush is not a known field"},
		{"field twice, escaped", "/allocate", "application/json", allocate(`, "q\u0074y": 9`), 400, "qty is given more than once"},
		{"qty as string", "/allocate", "application/json", line(`"o"`, `"3"`), 400, "qty"},
		{"qty fractional", "/allocate", "application/json", line(`"o"`, `1.5`), 400, "qty"},
		{"qty zero", "/allocate", "application/json", line(`"o"`, `0`), 400, "qty"},
		{"qty negative", "/allocate", "application/json", line(`"o"`, `-1`), 400, "qty"},
		{"qty above max", "/allocate", "application/json", line(`"o"`, `1000000001`), 400, "qty"},
		{"qty beyond int64", "/allocate", "application/json", line(`"o"`, `1e20`), 400, "qty"},
		{"qty null", "/allocate", "application/json", line(`"o"`, `null`), 400, "qty"},
		{"orderid empty", "/allocate", "application/json", line(`""`, `1`), 400, "orderid"},
		{"orderid too long", "/allocate", "application/json", line(`"`+long+`"`, `1`), 400, "orderid"},
		{"orderid null", "/allocate", "application/json", line(`null`, `1`), 400, "orderid"},
		{"orderid number", "/allocate", "application/json", line(`7`, `1`), 400, "orderid"},
		{"orderid NUL", "/allocate", "application/json", line(`"o\u0000"`, `1`), 400, "orderid"},
		{"orderid missing", "/allocate", "application/json", `{"sku": "` + sku + `", "qty": 1}`, 400, "orderid is required"},
		{"sku missing", "/allocate", "application/json", `{"orderid": "o", "qty": 1}`, 400, "sku is required"},
		{"qty missing", "/allocate", "application/json", `{"orderid": "o", "sku": "` + sku + `"}`, 400, "qty is required"},
		{"text content type", "/allocate", "text/plain", allocate(``), 415, "Content-Type"},
		{"form content type", "/allocate", "application/x-www-form-urlencoded", allocate(``), 415, "Content-Type"},
		{"month 13", "/add_batch", "application/json", batch(`"b2"`, `1`, `"2011-13-01"`), 400, "eta"},
		{"day 30 of February", "/add_batch", "application/json", batch(`"b2"`, `1`, `"2011-02-30"`), 400, "eta"},
		{"US date", "/add_batch", "application/json", batch(`"b2"`, `1`, `"01/02/2011"`), 400, "eta"},
		{"timestamp", "/add_batch", "application/json", batch(`"b2"`, `1`, `"2011-01-02T00:00:00Z"`), 400, "eta"},
		{"empty eta", "/add_batch", "application/json", batch(`"b2"`, `1`, `""`), 400, "eta"},
		{"year 0", "/add_batch", "application/json", batch(`"b2"`, `1`, `"0000-01-01"`), 400, "eta"},
		{"year 1", "/add_batch", "application/json", batch(`"b2"`, `1`, `"0001-01-01"`), 400, "eta"},
		{"eta number", "/add_batch", "application/json", batch(`"b2"`, `1`, `20110101`), 400, "eta"},
		{"batch qty negative", "/add_batch", "application/json", batch(`"b2"`, `-1`, `null`), 400, "qty"},
		{"batch qty above max", "/add_batch", "application/json", batch(`"b2"`, `1000000001`, `null`), 400, "qty"},
		{"batch qty as string", "/add_batch", "application/json", batch(`"b2"`, `"1"`, `null`), 400, "qty"},
		{"ref empty", "/add_batch", "application/json", batch(`""`, `1`, `null`), 400, "ref"},
		{"ref too long", "/add_batch", "application/json", batch(`"`+long+`"`, `1`, `null`), 400, "ref"},
		{"sku missing in batch", "/add_batch", "application/json", `{"ref": "b2", "qty": 1, "eta": null}`, 400, "sku is required"},
		{"sku too long", "/add_batch", "application/json", `{"ref": "b2", "sku": "` + long + `", "qty": 1, "eta": null}`, 400, "sku"},
		{"unknown batch field", "/add_batch", "application/json", `{"ref": "b2", "sku": "` + sku + `", "qty": 1, "eta": null, "price": 3}`, 400, "price"},
		// encoding/json would read these bytes as U+FFFD, a valid order id.
		{"orderid not UTF-8", "/allocate", "application/json", line("\"\xff\xfe\"", `1`), 400, "orderid is not valid UTF-8"},
		{"sku not UTF-8", "/allocate", "application/json", "{\"orderid\": \"o\", \"sku\": \"LAMP\xc3\", \"qty\": 1}", 400, "sku is not valid UTF-8"},
		{"ref not UTF-8", "/add_batch", "application/json", batch("\"b\xed\xa0\x80\"", `1`, `null`), 400, "ref is not valid UTF-8"},
		{"eta not UTF-8", "/add_batch", "application/json", batch(`"b2"`, `1`, "\"2011-01-01\xff\""), 400, "eta"},
		{"field name not UTF-8", "/allocate", "application/json", allocate(", \"\xff\": 1"), 400, "body"},
		// encoding/json would match these names without regard to case.
		{"field names in capitals", "/allocate", "application/json", `{"OrderID": "o", "SKU": "` + sku + `", "Qty": 1}`, 400, "OrderID is not a known field"},
		{"one field name in capitals", "/allocate", "application/json", `{"orderid": "o", "sku": "` + sku + `", "QTY": 1}`, 400, "QTY"},
		{"sku with a long s", "/allocate", "application/json", `{"orderid": "o", "\u017fku": "` + sku + `", "qty": 1}`, 400, "\u017fku"},
		{"ETA in capitals", "/add_batch", "application/json", `{"ref": "b2", "sku": "` + sku + `", "qty": 1, "ETA": "2011-01-01"}`, 400, "ETA"},
		{"field and its capitals", "/allocate", "application/json", allocate(`, "Qty": 2`), 400, "Qty"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := api.do(http.MethodPost, c.path, c.contentType, strings.NewReader(c.body))
			if a.status != c.status || !strings.Contains(a.message(), c.mentions) {
				t.Errorf("POST %s %s: got %v, want %d with a message mentioning %q", c.path, c.body, a, c.status, c.mentions)
			}
		})
	}
	// Nothing above may have been allocated.
	if a := api.get("/allocations/o"); a.status != http.StatusNotFound {
		t.Errorf("allocations of o after refused requests: got %v, want 404", a)
	}
}

func TestHTTPAcceptsTheEdgesOfTheValidRanges(t *testing.T) {
	t.Parallel()
	app := newTestApp()
	api := newAPI(t, app)
	sku := uniqueName("LAMP")
	for name, batch := range map[string]map[string]any{
		"qty zero (size not yet known)": {"ref": uniqueName("zero"), "sku": sku, "qty": 0, "eta": nil},
		"the longest ref":               {"ref": strings.Repeat("r", domain.MaxReferenceLength-9) + uniqueName(""), "sku": sku, "qty": 1, "eta": nil},
		"the largest qty":               {"ref": uniqueName("big"), "sku": sku, "qty": domain.MaxQuantity, "eta": "9999-12-31"},
		"the earliest eta":              {"ref": uniqueName("old"), "sku": sku, "qty": 1, "eta": "1900-01-01"},
		"a leap day":                    {"ref": uniqueName("leap"), "sku": sku, "qty": 1, "eta": "2024-02-29"},
	} {
		if a := api.post("/add_batch", batch); a.status != http.StatusCreated {
			t.Errorf("%s: got %v, want 201", name, a)
		}
	}
	body := `{"orderid": "` + uniqueName("o") + `", "sku": "` + sku + `", "qty": 1000000000}`
	if a := api.do(http.MethodPost, "/allocate", "application/json; charset=utf-8", strings.NewReader(body)); a.status != http.StatusAccepted {
		t.Errorf("allocate the largest qty with a charset parameter: got %v, want 202", a)
	}
}

func TestHTTPOversizedBodiesAre413(t *testing.T) {
	t.Parallel()
	app := newTestApp()
	api := newAPI(t, app)
	huge := `{"orderid": "` + strings.Repeat("x", 100_000) + `", "sku": "LAMP", "qty": 1}`
	for name, body := range map[string]io.Reader{
		"with Content-Length": strings.NewReader(huge),
		// A reader of unknown length is sent chunked: the limit must hold
		// while reading, not only by the header.
		"chunked": io.MultiReader(strings.NewReader(huge)),
	} {
		if a := api.do(http.MethodPost, "/allocate", "application/json", body); a.status != http.StatusRequestEntityTooLarge || a.message() == "" {
			t.Errorf("%s: got %.100v, want 413 with a message", name, a)
		}
	}
}

func TestHTTPOrderIDInThePath(t *testing.T) {
	t.Parallel()
	app := newTestApp()
	api := newAPI(t, app)
	sku := uniqueName("LAMP")
	api.addBatch(uniqueName("b"), sku, 10, nil)
	// Any text is an order id; a client escapes it into the path.
	order := uniqueName("a/b c%")
	if a := api.post("/allocate", map[string]any{"orderid": order, "sku": sku, "qty": 1}); a.status != http.StatusAccepted {
		t.Fatalf("allocate: got %v", a)
	}
	if a := api.get("/allocations/" + url.PathEscape(order)); a.status != http.StatusOK || !strings.Contains(a.body, sku) {
		t.Errorf("allocations of %q: got %v, want 200 naming %s", order, a, sku)
	}
	for name, path := range map[string]string{
		"empty":         "/allocations/",
		"too long":      "/allocations/" + strings.Repeat("x", domain.MaxReferenceLength+1),
		"invalid UTF-8": "/allocations/%FF",
		"NUL":           "/allocations/o%00",
		"escaped slash": "/allocations/%2F%FF",
	} {
		if a := api.get(path); a.status != http.StatusBadRequest || !strings.Contains(a.message(), "orderid") {
			t.Errorf("%s: got %v, want 400 naming orderid", name, a)
		}
	}
}

func TestHTTPUnknownRoutesAndMethodsAnswerWithAMessage(t *testing.T) {
	t.Parallel()
	app := newTestApp()
	api := newAPI(t, app)
	if a := api.get("/nowhere"); a.status != http.StatusNotFound || a.message() == "" {
		t.Errorf("unknown route: got %v, want 404 with a message", a)
	}
	if a := api.get("/allocate"); a.status != http.StatusMethodNotAllowed || a.message() == "" {
		t.Errorf("wrong method: got %v, want 405 with a message", a)
	}
}

func TestHTTPHealthzAnswersWithoutCheckingDependencies(t *testing.T) {
	t.Parallel()
	down := httpapi.Check{Name: "postgres", Ping: func(context.Context) error { return errors.New("down") }}
	api := serve(t, httpapi.Config{Checks: []httpapi.Check{down}})
	if a := api.get("/healthz"); a.status != http.StatusOK || strings.TrimSpace(a.body) != `{"status":"ok"}` {
		t.Fatalf("healthz: got %v, want 200 {\"status\":\"ok\"}", a)
	}
}

// Probes that ask with HEAD get GET's status and headers, without a body.
func TestHTTPHeadOnHealthzAndReadyzAnswersLikeGetWithoutABody(t *testing.T) {
	t.Parallel()
	up := httpapi.Check{Name: "postgres", Ping: func(context.Context) error { return nil }}
	down := httpapi.Check{Name: "redis", Ping: func(context.Context) error { return errors.New("down") }}
	healthy := serve(t, httpapi.Config{Checks: []httpapi.Check{up}})
	unhealthy := serve(t, httpapi.Config{Checks: []httpapi.Check{up, down}})
	for _, c := range []struct {
		name   string
		api    apiClient
		path   string
		status int
	}{
		{"healthz", healthy, "/healthz", http.StatusOK},
		{"healthz with a dependency down", unhealthy, "/healthz", http.StatusOK},
		{"readyz", healthy, "/readyz", http.StatusOK},
		{"readyz with a dependency down", unhealthy, "/readyz", http.StatusServiceUnavailable},
	} {
		t.Run(c.name, func(t *testing.T) {
			get := c.api.get(c.path)
			head := c.api.do(http.MethodHead, c.path, "", nil)
			if get.status != c.status || head.status != c.status {
				t.Fatalf("GET %s: %v, HEAD: %v, want both %d", c.path, get, head, c.status)
			}
			if head.body != "" {
				t.Errorf("HEAD %s has a body: %q", c.path, head.body)
			}
			if g, h := get.header.Get("Content-Type"), head.header.Get("Content-Type"); g != h {
				t.Errorf("HEAD %s: Content-Type %q, GET's is %q", c.path, h, g)
			}
		})
	}
}

func TestHTTPReadyzNamesTheFailingDependencies(t *testing.T) {
	t.Parallel()
	up := func(context.Context) error { return nil }
	refused := func(context.Context) error { return errors.New("connection refused") }
	// hangs ignores its context, as a careless client library might.
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	hangs := func(context.Context) error { <-release; return nil }

	cases := []struct {
		name    string
		checks  []httpapi.Check
		status  int
		failing map[string]string
	}{
		{"no dependencies", nil, 200, nil},
		{"all up", []httpapi.Check{{Name: "postgres", Ping: up}, {Name: "redis", Ping: up}}, 200, nil},
		{"one refuses", []httpapi.Check{{Name: "postgres", Ping: up}, {Name: "redis", Ping: refused}}, 503, map[string]string{"redis": "connection refused"}},
		{"both refuse", []httpapi.Check{{Name: "postgres", Ping: refused}, {Name: "redis", Ping: refused}}, 503, map[string]string{"postgres": "connection refused", "redis": "connection refused"}},
		{"one hangs", []httpapi.Check{{Name: "postgres", Ping: hangs}, {Name: "redis", Ping: up}}, 503, map[string]string{"postgres": "did not answer in time"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			api := serve(t, httpapi.Config{Checks: c.checks, ReadyTimeout: 100 * time.Millisecond})
			a := api.get("/readyz")
			var got struct {
				Status string
				Checks map[string]string
			}
			if err := json.Unmarshal([]byte(a.body), &got); err != nil {
				t.Fatalf("readyz: %v: %v", a, err)
			}
			wantStatus := map[int]string{200: "ok", 503: "unavailable"}[c.status]
			if a.status != c.status || got.Status != wantStatus || fmt.Sprint(got.Checks) != fmt.Sprint(c.failing) {
				t.Errorf("readyz: got %v, want %d %q naming %v", a, c.status, wantStatus, c.failing)
			}
		})
	}
}

// stubBus answers every command with err.
type stubBus struct{ err error }

func (b stubBus) Handle(context.Context, domain.Command) (servicelayer.Result, error) {
	return servicelayer.Result{}, b.err
}

func TestHTTPErrorsBecomeAnswersWithoutLeakingInternals(t *testing.T) {
	t.Parallel()
	secret := errors.New(`pq: password authentication failed for user "allocation"`)
	cases := []struct {
		name    string
		err     error
		status  int
		message string
	}{
		{"invalid sku", fmt.Errorf("allocate: %w", &domain.InvalidSKUError{SKU: "GHOST"}), 400, "Invalid sku GHOST"},
		{"validation", fmt.Errorf("line: %w", &domain.ValidationError{Field: "qty", Reason: "must be positive"}), 400, "qty must be positive"},
		{"unknown batch", fmt.Errorf("batch b: %w", domain.ErrUnknownBatch), 400, "batch b: unknown batch"},
		{"batch exists", fmt.Errorf("batch b: %w", domain.ErrBatchExists), 409, "batch b: batch already exists with other values"},
		{"dependency down", fmt.Errorf("begin: %w: %w", servicelayer.ErrUnavailable, secret), 503, "a dependency is unavailable, try again later"},
		{"deadline", fmt.Errorf("query: %w", context.DeadlineExceeded), 503, "a dependency is unavailable, try again later"},
		{"anything else", fmt.Errorf("save product: %w", secret), 500, "internal error"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			logs := &logRecorder{}
			api := serve(t, httpapi.Config{Bus: stubBus{c.err}, Log: slogTo(logs)})
			a := api.post("/allocate", map[string]any{"orderid": "o", "sku": "s", "qty": 1})
			if a.status != c.status || strings.TrimSpace(a.body) != fmt.Sprintf(`{"message":%q}`, c.message) {
				t.Errorf("got %v, want %d %q", a, c.status, c.message)
			}
			if c.status >= 500 {
				id := a.header.Get("X-Request-Id")
				if errs := logs.attrOf("request failed", "request_id"); len(errs) != 1 || id == "" || errs[0] != id {
					t.Errorf("the failure was logged with request ids %v, want [%s]", errs, id)
				}
			}
		})
	}
}

// slowBus waits for the request's context to end.
type slowBus struct{}

func (slowBus) Handle(ctx context.Context, _ domain.Command) (servicelayer.Result, error) {
	<-ctx.Done()
	return servicelayer.Result{}, fmt.Errorf("waiting for the database: %w", ctx.Err())
}

func TestHTTPARequestThatRunsOutOfTimeIs503(t *testing.T) {
	t.Parallel()
	api := serve(t, httpapi.Config{Bus: slowBus{}, RequestTimeout: 50 * time.Millisecond})
	a := api.post("/allocate", map[string]any{"orderid": "o", "sku": "s", "qty": 1})
	if a.status != http.StatusServiceUnavailable || a.message() == "" {
		t.Fatalf("got %v, want 503 with a message", a)
	}
}

type panickingBus struct{}

func (panickingBus) Handle(context.Context, domain.Command) (servicelayer.Result, error) {
	panic("boom")
}

func TestHTTPAPanicIsA500AndTheServerGoesOn(t *testing.T) {
	t.Parallel()
	logs := &logRecorder{}
	api := serve(t, httpapi.Config{Bus: panickingBus{}, Log: slogTo(logs)})
	var ids []string
	for range 2 {
		a := api.post("/allocate", map[string]any{"orderid": "o", "sku": "s", "qty": 1})
		if a.status != http.StatusInternalServerError || strings.TrimSpace(a.body) != `{"message":"internal error"}` {
			t.Fatalf("got %v, want 500 {\"message\":\"internal error\"}", a)
		}
		ids = append(ids, a.header.Get("X-Request-Id"))
	}
	if a := api.get("/healthz"); a.status != http.StatusOK {
		t.Fatalf("healthz after panics: got %v", a)
	}
	if got := logs.attrOf("panic while handling request", "request_id"); fmt.Sprint(got) != fmt.Sprint(ids) {
		t.Errorf("panics logged with request ids %v, want %v", got, ids)
	}
	if stacks := logs.attrOf("panic while handling request", "stack"); len(stacks) == 0 || !strings.Contains(stacks[0], "panickingBus") {
		t.Errorf("the panic's stack was not logged: %v", stacks)
	}
}

func TestHTTPLogsOneLinePerRequest(t *testing.T) {
	t.Parallel()
	logs := &logRecorder{}
	app := newTestApp()
	api := serve(t, httpapi.Config{Bus: app.bus, Views: app.store, Log: slogTo(logs)})
	a := api.get("/allocations/" + uniqueName("o"))
	lines := logs.find("http request")
	if len(lines) != 1 {
		t.Fatalf("got %d request log lines, want 1: %v", len(lines), lines)
	}
	want := map[string]string{"method": "GET", "status": "404", "request_id": a.header.Get("X-Request-Id")}
	for k, v := range want {
		if lines[0][k] != v || v == "" {
			t.Errorf("log attribute %s = %q, want %q", k, lines[0][k], v)
		}
	}
	if !strings.HasPrefix(lines[0]["path"], "/allocations/") {
		t.Errorf("log attribute path = %q", lines[0]["path"])
	}
}

// find returns the attributes of every record with message msg.
func (r *logRecorder) find(msg string) []map[string]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []map[string]string
	for _, rec := range r.records {
		if rec.Message != msg {
			continue
		}
		attrs := map[string]string{}
		rec.Attrs(func(a slog.Attr) bool {
			attrs[a.Key] = a.Value.String()
			return true
		})
		out = append(out, attrs)
	}
	return out
}

// attrOf returns attribute key of every record with message msg.
func (r *logRecorder) attrOf(msg, key string) []string {
	var out []string
	for _, attrs := range r.find(msg) {
		out = append(out, attrs[key])
	}
	return out
}

func slogTo(r *logRecorder) *slog.Logger { return slog.New(r) }

// Lenient where leniency cannot hurt: a left-out eta means in stock, like
// null, and a body without a Content-Type is read as the JSON it must be.
func TestHTTPTakesAMissingETAAsNullAndAMissingContentTypeAsJSON(t *testing.T) {
	t.Parallel()
	app := newTestApp()
	api := newAPI(t, app)
	sku := uniqueName("LAMP")
	if a := api.post("/add_batch", `{"ref": "`+uniqueName("b")+`", "sku": "`+sku+`", "qty": 5}`); a.status != http.StatusCreated {
		t.Fatalf("add_batch without eta: %v", a)
	}
	a := api.do(http.MethodPost, "/allocate", "", strings.NewReader(`{"orderid": "o1", "sku": "`+sku+`", "qty": 1}`))
	if a.status != http.StatusAccepted {
		t.Fatalf("allocate without Content-Type: %v", a)
	}
}
