package unit_test

import (
	"encoding/json"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"

	"allocation/entrypoints/httpapi"
)

// openAPIDoc is the part of an OpenAPI 3 document these tests read.
type openAPIDoc struct {
	OpenAPI string                                `json:"openapi"`
	Paths   map[string]map[string]json.RawMessage `json:"paths"`
}

// operationMethods are the keys of an OpenAPI path item that are operations;
// the others (summary, parameters, ...) describe the path.
var operationMethods = []string{"get", "put", "post", "delete", "options", "head", "patch", "trace"}

// echoParam matches Echo's ":name" path parameters.
var echoParam = regexp.MustCompile(`:([A-Za-z0-9_]+)`)

// fetchOpenAPI returns the document the API serves at GET /openapi.json.
func fetchOpenAPI(t *testing.T) openAPIDoc {
	t.Helper()
	var doc openAPIDoc
	fetchOpenAPIInto(t, &doc)
	return doc
}

// fetchOpenAPIInto decodes the document the API serves into v.
func fetchOpenAPIInto(t *testing.T, v any) {
	t.Helper()
	app := newTestApp()
	api := serve(t, httpapi.Config{Bus: app.bus, Views: app.store})
	a := api.get("/openapi.json")
	if a.status != http.StatusOK {
		t.Fatalf("GET /openapi.json: got %v, want 200", a)
	}
	if ct := a.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("GET /openapi.json: Content-Type %q, want application/json", ct)
	}
	if err := json.Unmarshal([]byte(a.body), v); err != nil {
		t.Fatalf("GET /openapi.json is not valid JSON: %v", err)
	}
}

func TestOpenAPIIsServedAsAJSONOpenAPI3Document(t *testing.T) {
	t.Parallel()
	doc := fetchOpenAPI(t)
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Errorf("openapi = %q, want a 3.x version", doc.OpenAPI)
	}
	if len(doc.Paths) == 0 {
		t.Errorf("the document has no paths")
	}
}

func TestOpenAPIDescribesExactlyTheRoutesTheAPIServes(t *testing.T) {
	t.Parallel()
	doc := fetchOpenAPI(t)
	documented := map[string]bool{}
	for path, item := range doc.Paths {
		for key := range item {
			if slices.Contains(operationMethods, key) {
				documented[strings.ToUpper(key)+" "+path] = true
			}
		}
	}

	// Metrics is set so that the optional /metrics route is there, as it is
	// in the service.
	app := newTestApp()
	e := httpapi.New(httpapi.Config{Bus: app.bus, Views: app.store, Log: quietLog(), Metrics: http.NotFoundHandler()})
	served := map[string]bool{}
	for _, r := range e.Routes() {
		if strings.HasPrefix(r.Method, "echo_") {
			continue // Echo's own routes
		}
		served[r.Method+" "+echoParam.ReplaceAllString(r.Path, "{$1}")] = true
	}

	for op := range served {
		if !documented[op] {
			t.Errorf("route %s is served but not in openapi.json", op)
		}
	}
	for op := range documented {
		if !served[op] {
			t.Errorf("operation %s is in openapi.json but not served", op)
		}
	}
	if len(served) == 0 {
		t.Fatal("the API has no routes")
	}
}

// The document's status codes for a few answers the handlers are known to
// give, so that a response added to a handler is not forgotten in the
// document's most visible places.
func TestOpenAPIDocumentsTheStatusesOfTheCommands(t *testing.T) {
	t.Parallel()
	doc := fetchOpenAPI(t)
	want := map[string][]string{
		"POST /add_batch":                    {"201", "400", "409", "413", "415", "503"},
		"POST /allocate":                     {"202", "400", "413", "415", "503"},
		"GET /allocations/{orderid}":         {"200", "400", "404", "503"},
		"GET /allocations/{orderid}/history": {"200", "400", "404", "503"},
		"GET /events":                        {"200", "400", "503"},
		"GET /readyz":                        {"200", "503"},
		"GET /healthz":                       {"200"},
		"GET /openapi.json":                  {"200"},
		"HEAD /healthz":                      {"200"},
		"HEAD /readyz":                       {"200", "503"},
	}
	for op, statuses := range want {
		method, path, _ := strings.Cut(op, " ")
		raw, ok := doc.Paths[path][strings.ToLower(method)]
		if !ok {
			t.Errorf("%s: not in the document", op)
			continue
		}
		var operation struct {
			Responses map[string]json.RawMessage `json:"responses"`
		}
		if err := json.Unmarshal(raw, &operation); err != nil {
			t.Errorf("%s: %v", op, err)
			continue
		}
		for _, s := range statuses {
			if _, ok := operation.Responses[s]; !ok {
				t.Errorf("%s: response %s is not documented", op, s)
			}
		}
	}
}

// The document's request limits are the ones the API enforces: a body at a
// documented bound is accepted and one past it refused.
func TestOpenAPIRequestLimitsMatchTheAPI(t *testing.T) {
	t.Parallel()
	var spec struct {
		Components struct {
			Schemas map[string]struct {
				Required   []string `json:"required"`
				Additional *bool    `json:"additionalProperties"`
				Properties map[string]struct {
					Minimum *int64 `json:"minimum"`
					Maximum *int64 `json:"maximum"`
				} `json:"properties"`
			} `json:"schemas"`
		} `json:"components"`
	}
	fetchOpenAPIInto(t, &spec)
	alloc := spec.Components.Schemas["AllocateRequest"]
	batch := spec.Components.Schemas["AddBatchRequest"]
	for name, s := range map[string]struct {
		required   []string
		additional *bool
	}{"AllocateRequest": {alloc.Required, alloc.Additional}, "AddBatchRequest": {batch.Required, batch.Additional}} {
		if s.additional == nil || *s.additional {
			t.Errorf("%s: additionalProperties must be false (unknown fields are refused)", name)
		}
		if len(s.required) != 3 {
			t.Errorf("%s: required = %v, want three fields", name, s.required)
		}
	}
	lineQty, batchQty := alloc.Properties["qty"], batch.Properties["qty"]
	if lineQty.Minimum == nil || lineQty.Maximum == nil || batchQty.Minimum == nil || batchQty.Maximum == nil {
		t.Fatalf("qty bounds missing: line %+v, batch %+v", lineQty, batchQty)
	}

	app := newTestApp()
	api := newAPI(t, app)
	sku := uniqueName("LAMP")
	api.addBatch(uniqueName("b"), sku, int(*batchQty.Maximum), nil)
	if a := api.post("/add_batch", map[string]any{"ref": uniqueName("b"), "sku": sku, "qty": *batchQty.Minimum, "eta": nil}); a.status != http.StatusCreated {
		t.Errorf("batch qty at the documented minimum: got %v, want 201", a)
	}
	if a := api.post("/add_batch", map[string]any{"ref": uniqueName("b"), "sku": sku, "qty": *batchQty.Maximum + 1, "eta": nil}); a.status != http.StatusBadRequest {
		t.Errorf("batch qty past the documented maximum: got %v, want 400", a)
	}
	if a := api.post("/add_batch", map[string]any{"ref": uniqueName("b"), "sku": sku, "qty": *batchQty.Minimum - 1, "eta": nil}); a.status != http.StatusBadRequest {
		t.Errorf("batch qty under the documented minimum: got %v, want 400", a)
	}
	for qty, status := range map[int64]int{
		*lineQty.Minimum:     http.StatusAccepted,
		*lineQty.Maximum:     http.StatusAccepted,
		*lineQty.Minimum - 1: http.StatusBadRequest,
		*lineQty.Maximum + 1: http.StatusBadRequest,
	} {
		if a := api.post("/allocate", map[string]any{"orderid": uniqueName("o"), "sku": sku, "qty": qty}); a.status != status {
			t.Errorf("line qty %d: got %v, want %d", qty, a, status)
		}
	}
}
