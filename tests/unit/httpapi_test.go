package unit_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"allocation/domain"
	"allocation/entrypoints/httpapi"
	"allocation/servicelayer"
)

type apiClient struct {
	t   *testing.T
	url string
}

func newAPI(t *testing.T, bus httpapi.Bus, app testApp, checks ...httpapi.Check) apiClient {
	t.Helper()
	srv := httptest.NewServer(httpapi.New(httpapi.Config{Bus: bus, Views: app.store, Checks: checks, Log: quietLog()}))
	t.Cleanup(srv.Close)
	return apiClient{t: t, url: srv.URL}
}

func (c apiClient) do(method, path, contentType, body string) (int, string) {
	c.t.Helper()
	req, _ := http.NewRequest(method, c.url+path, strings.NewReader(body))
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (c apiClient) post(path, body string) (int, string) {
	return c.do(http.MethodPost, path, "application/json", body)
}

func TestHTTPHappyPathAllocatesToTheEarliestBatch(t *testing.T) {
	app := newTestApp()
	api := newAPI(t, app.bus, app)
	for _, b := range []string{
		`{"ref": "later", "sku": "LAMP", "qty": 100, "eta": "2011-01-02"}`,
		`{"ref": "early", "sku": "LAMP", "qty": 100, "eta": "2011-01-01"}`,
		`{"ref": "other", "sku": "RUG", "qty": 100, "eta": null}`,
	} {
		if status, body := api.post("/add_batch", b); status != http.StatusCreated {
			t.Fatalf("add_batch: %d %s", status, body)
		}
	}
	if status, body := api.post("/allocate", `{"orderid": "o1", "sku": "LAMP", "qty": 3}`); status != http.StatusAccepted || body != `{"batchref":"early"}`+"\n" {
		t.Fatalf("allocate: %d %s", status, body)
	}
	if status, body := api.do(http.MethodGet, "/allocations/o1", "", ""); status != http.StatusOK || body != `[{"sku":"LAMP","batchref":"early"}]`+"\n" {
		t.Fatalf("allocations: %d %s", status, body)
	}
}

func TestHTTPUnknownSKUIs400ThenTheOrderIs404(t *testing.T) {
	app := newTestApp()
	api := newAPI(t, app.bus, app)
	if status, body := api.post("/allocate", `{"orderid": "o1", "sku": "GHOST", "qty": 1}`); status != http.StatusBadRequest || body != `{"message":"Invalid sku GHOST"}`+"\n" {
		t.Fatalf("allocate: %d %s", status, body)
	}
	if status, _ := api.do(http.MethodGet, "/allocations/o1", "", ""); status != http.StatusNotFound {
		t.Fatalf("allocations: %d, want 404", status)
	}
}

func TestHTTPOutOfStockAnswersNullBatchRef(t *testing.T) {
	app := newTestApp()
	api := newAPI(t, app.bus, app)
	api.post("/add_batch", `{"ref": "b", "sku": "LAMP", "qty": 1, "eta": null}`)
	if status, body := api.post("/allocate", `{"orderid": "o1", "sku": "LAMP", "qty": 2}`); status != http.StatusAccepted || body != `{"batchref":null}`+"\n" {
		t.Fatalf("allocate: %d %s", status, body)
	}
}

func TestHTTPAddBatchIsIdempotentAndConflictsAre409(t *testing.T) {
	app := newTestApp()
	api := newAPI(t, app.bus, app)
	body := `{"ref": "b", "sku": "LAMP", "qty": 1, "eta": "2030-01-01"}`
	for range 2 {
		if status, out := api.post("/add_batch", body); status != http.StatusCreated {
			t.Fatalf("add_batch: %d %s", status, out)
		}
	}
	if status, out := api.post("/add_batch", `{"ref": "b", "sku": "LAMP", "qty": 2, "eta": "2030-01-01"}`); status != http.StatusConflict {
		t.Fatalf("conflict: %d %s", status, out)
	}
}

func TestHTTPRefusesMalformedRequestsWithAMessageNamingTheField(t *testing.T) {
	app := newTestApp()
	api := newAPI(t, app.bus, app)
	api.post("/add_batch", `{"ref": "b", "sku": "LAMP", "qty": 10, "eta": null}`)
	long := strings.Repeat("x", domain.MaxReferenceLength+1)
	cases := []struct {
		path, contentType, body string
		status                  int
		mentions                string
	}{
		{"/allocate", "application/json", `not json`, 400, "body"},
		{"/allocate", "application/json", ``, 400, "body"},
		{"/allocate", "application/json", `{"orderid": "o", "sku": "LAMP", "qty": "3"}`, 400, "qty"},
		{"/allocate", "application/json", `{"orderid": "o", "sku": "LAMP", "qty": 1.5}`, 400, "qty"},
		{"/allocate", "application/json", `{"orderid": "o", "sku": "LAMP", "qty": 0}`, 400, "qty"},
		{"/allocate", "application/json", `{"orderid": "o", "sku": "LAMP", "qty": 1e20}`, 400, "qty"},
		{"/allocate", "application/json", `{"orderid": "o", "sku": "LAMP", "qty": 1000000001}`, 400, "qty"},
		{"/allocate", "application/json", `{"orderid": "", "sku": "LAMP", "qty": 1}`, 400, "orderid"},
		{"/allocate", "application/json", `{"orderid": "` + long + `", "sku": "LAMP", "qty": 1}`, 400, "orderid"},
		{"/allocate", "application/json", `{"orderid": null, "sku": "LAMP", "qty": 1}`, 400, "orderid"},
		{"/allocate", "application/json", `{"sku": "LAMP", "qty": 1}`, 400, "orderid"},
		{"/allocate", "application/json", `{"orderid": "o", "sku": "LAMP", "qty": 1, "rush": true}`, 400, "rush"},
		{"/allocate", "application/json", `{"orderid": "o", "sku": "LAMP", "qty": 1} {}`, 400, "body"},
		{"/allocate", "application/json", `[1]`, 400, "body"},
		{"/allocate", "application/json", `null`, 400, "body"},
		{"/allocate", "application/json", `{"orderid": "o", "sku": "LAMP", "qty": 1, "qty": 9}`, 400, "qty"},
		{"/allocate", "text/plain", `{"orderid": "o", "sku": "LAMP", "qty": 1}`, 415, "Content-Type"},
		{"/add_batch", "application/json", `{"ref": "b2", "sku": "LAMP", "qty": 1, "eta": "2011-13-01"}`, 400, "eta"},
		{"/add_batch", "application/json", `{"ref": "b2", "sku": "LAMP", "qty": 1, "eta": "01/02/2011"}`, 400, "eta"},
		{"/add_batch", "application/json", `{"ref": "b2", "sku": "LAMP", "qty": 1, "eta": "0000-01-01"}`, 400, "eta"},
		{"/add_batch", "application/json", `{"ref": "b2", "sku": "LAMP", "qty": 1, "eta": "0001-01-01"}`, 400, "eta"},
		{"/add_batch", "application/json", `{"ref": "b2", "sku": "LAMP", "qty": -1, "eta": null}`, 400, "qty"},
		{"/add_batch", "application/json", `{"ref": "", "sku": "LAMP", "qty": 1, "eta": null}`, 400, "ref"},
		{"/add_batch", "application/json", `{"ref": "b2", "qty": 1, "eta": null}`, 400, "sku"},
		{"/add_batch", "application/json", `{"ref": "b2", "sku": "LAMP", "qty": 1, "eta": 20110101}`, 400, "eta"},
	}
	for _, c := range cases {
		status, body := api.do(http.MethodPost, c.path, c.contentType, c.body)
		var msg struct{ Message string }
		_ = json.Unmarshal([]byte(body), &msg)
		if status != c.status || !strings.Contains(msg.Message, c.mentions) {
			t.Errorf("POST %s %s: got %d %s, want %d mentioning %q", c.path, c.body, status, body, c.status, c.mentions)
		}
	}
}

func TestHTTPOversizedBodiesAre413(t *testing.T) {
	app := newTestApp()
	api := newAPI(t, app.bus, app)
	status, body := api.post("/allocate", `{"orderid": "`+strings.Repeat("x", 100_000)+`", "sku": "LAMP", "qty": 1}`)
	if status != http.StatusRequestEntityTooLarge || !strings.Contains(body, "message") {
		t.Fatalf("got %d %s, want 413 with a message", status, body)
	}
}

func TestHTTPUnknownRoutesAndMethodsAnswerWithAMessage(t *testing.T) {
	app := newTestApp()
	api := newAPI(t, app.bus, app)
	if status, body := api.do(http.MethodGet, "/nowhere", "", ""); status != http.StatusNotFound || !strings.Contains(body, "message") {
		t.Fatalf("unknown route: %d %s", status, body)
	}
	if status, body := api.do(http.MethodGet, "/allocate", "", ""); status != http.StatusMethodNotAllowed || !strings.Contains(body, "message") {
		t.Fatalf("wrong method: %d %s", status, body)
	}
}

func TestHTTPHealthAndReadiness(t *testing.T) {
	app := newTestApp()
	down := errors.New("connection refused")
	api := newAPI(t, app.bus, app,
		httpapi.Check{Name: "postgres", Ping: func(context.Context) error { return nil }},
		httpapi.Check{Name: "redis", Ping: func(context.Context) error { return down }})
	if status, _ := api.do(http.MethodGet, "/healthz", "", ""); status != http.StatusOK {
		t.Fatalf("healthz: %d", status)
	}
	status, body := api.do(http.MethodGet, "/readyz", "", "")
	if status != http.StatusServiceUnavailable || !strings.Contains(body, `"redis":"connection refused"`) || strings.Contains(body, "postgres") {
		t.Fatalf("readyz: %d %s", status, body)
	}
}

type panickingBus struct{}

func (panickingBus) Handle(context.Context, domain.Command) (servicelayer.Result, error) {
	panic("boom")
}

func TestHTTPAPanicIsA500AndTheServerGoesOn(t *testing.T) {
	app := newTestApp()
	api := newAPI(t, panickingBus{}, app)
	for range 2 {
		status, body := api.post("/allocate", `{"orderid": "o", "sku": "LAMP", "qty": 1}`)
		if status != http.StatusInternalServerError || body != `{"message":"internal error"}`+"\n" {
			t.Fatalf("got %d %s", status, body)
		}
	}
}
