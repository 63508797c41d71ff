package unit_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"allocation/adapters/redis"
	"allocation/domain"
	"allocation/entrypoints/consumer"
	"allocation/entrypoints/httpapi"
	"allocation/servicelayer"
)

// asyncAPIDoc is what these tests read of the AsyncAPI 3 document.
type asyncAPIDoc struct {
	AsyncAPI string `json:"asyncapi"`
	Channels map[string]struct {
		Address  string                     `json:"address"`
		Messages map[string]json.RawMessage `json:"messages"`
	} `json:"channels"`
	Operations map[string]struct {
		Action  string `json:"action"`
		Channel struct {
			Ref string `json:"$ref"`
		} `json:"channel"`
	} `json:"operations"`
	Components struct {
		Schemas  map[string]json.RawMessage `json:"schemas"`
		Messages map[string]struct {
			Name    string `json:"name"`
			Payload struct {
				Ref string `json:"$ref"`
			} `json:"payload"`
		} `json:"messages"`
	} `json:"components"`
}

// asyncAPI is the document the API serves, and its schemas compiled.
type asyncAPI struct {
	doc     asyncAPIDoc
	raw     any
	schemas map[string]*jsonschema.Schema
}

// fetchAsyncAPI gets GET /asyncapi.json and compiles every schema of its
// components as JSON Schema draft-07, failing the test when one does not.
func fetchAsyncAPI(t *testing.T) asyncAPI {
	t.Helper()
	app := newTestApp()
	api := serve(t, httpapi.Config{Bus: app.bus, Views: app.store})
	a := api.get("/asyncapi.json")
	if a.status != http.StatusOK || !strings.HasPrefix(a.header.Get("Content-Type"), "application/json") {
		t.Fatalf("GET /asyncapi.json: got %v, want 200 application/json", a)
	}
	var out asyncAPI
	if err := json.Unmarshal([]byte(a.body), &out.doc); err != nil {
		t.Fatalf("GET /asyncapi.json is not valid JSON: %v", err)
	}
	raw, err := jsonschema.UnmarshalJSON(strings.NewReader(a.body))
	if err != nil {
		t.Fatal(err)
	}
	out.raw = raw
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft7)
	c.AssertFormat()
	if err := c.AddResource("asyncapi.json", raw); err != nil {
		t.Fatal(err)
	}
	out.schemas = map[string]*jsonschema.Schema{}
	for name := range out.doc.Components.Schemas {
		s, err := c.Compile("asyncapi.json#/components/schemas/" + name)
		if err != nil {
			t.Fatalf("schema %s does not compile: %v", name, err)
		}
		out.schemas[name] = s
	}
	return out
}

// check reports whether instance (JSON text) is valid against the named
// schema, and why not.
func (a asyncAPI) check(t *testing.T, schema, instance string) error {
	t.Helper()
	s, ok := a.schemas[schema]
	if !ok {
		t.Fatalf("asyncapi.json has no schema %s", schema)
	}
	v, err := jsonschema.UnmarshalJSON(strings.NewReader(instance))
	if err != nil {
		t.Fatalf("%s: %v", instance, err)
	}
	return s.Validate(v)
}

// resolve follows a local JSON pointer ("#/a/b") in the document.
func (a asyncAPI) resolve(ref string) (any, bool) {
	node := a.raw
	for _, part := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
		m, ok := node.(map[string]any)
		if !ok {
			return nil, false
		}
		if node, ok = m[strings.ReplaceAll(strings.ReplaceAll(part, "~1", "/"), "~0", "~")]; !ok {
			return nil, false
		}
	}
	return node, true
}

func TestAsyncAPIIsAnAsyncAPI3DocumentWhoseSchemasCompileAndReferencesResolve(t *testing.T) {
	t.Parallel()
	a := fetchAsyncAPI(t)
	if !strings.HasPrefix(a.doc.AsyncAPI, "3.") {
		t.Errorf("asyncapi = %q, want 3.x", a.doc.AsyncAPI)
	}
	var refs []string
	var walk func(any)
	walk = func(n any) {
		switch n := n.(type) {
		case map[string]any:
			for k, v := range n {
				if s, ok := v.(string); ok && k == "$ref" {
					refs = append(refs, s)
				}
				walk(v)
			}
		case []any:
			for _, v := range n {
				walk(v)
			}
		}
	}
	walk(a.raw)
	for _, ref := range refs {
		if _, ok := a.resolve(ref); !ok || !strings.HasPrefix(ref, "#/") {
			t.Errorf("$ref %s does not resolve in the document", ref)
		}
	}
	if len(refs) == 0 || len(a.schemas) == 0 {
		t.Fatal("the document has no schemas")
	}
}

// Every channel and stream the service reads or publishes is in the
// document, with the direction it has.
func TestAsyncAPIDescribesEveryChannelAndStreamTheServiceUses(t *testing.T) {
	t.Parallel()
	a := fetchAsyncAPI(t)
	got := map[string]int{} // "action address" -> how many channels (pub/sub and stream)
	for _, op := range a.doc.Operations {
		ch, ok := a.doc.Channels[strings.TrimPrefix(op.Channel.Ref, "#/channels/")]
		if !ok {
			t.Errorf("operation on %s: no such channel", op.Channel.Ref)
			continue
		}
		got[op.Action+" "+ch.Address]++
	}
	for _, want := range []string{
		"receive " + consumer.ChangeBatchQuantity, "receive " + consumer.Allocate,
		"send " + redis.LineAllocated, "send line_deallocated",
	} {
		if got[want] != 2 {
			t.Errorf("%s: %d channels, want 2 (pub/sub and stream); the document has %v", want, got[want], got)
		}
	}
}

// The inbound schemas accept what the consumer's decoder accepts and
// refuse what it refuses (apart from what JSON Schema cannot see: a field
// given twice).
func TestAsyncAPIInboundSchemasAgreeWithTheConsumersDecoder(t *testing.T) {
	t.Parallel()
	a := fetchAsyncAPI(t)
	meta := `"message_id": "m1", "traceparent": "` + traceParent + `", "tracestate": "` + traceState + `", "correlation_id": "c1", "causation_id": "c0"`
	cases := []struct {
		channel, schema, payload string
	}{
		{consumer.ChangeBatchQuantity, "ChangeBatchQuantity", `{"batchref": "b1", "qty": 5}`},
		{consumer.ChangeBatchQuantity, "ChangeBatchQuantity", `{"batchref": "b1", "qty": 0, ` + meta + `}`},
		{consumer.ChangeBatchQuantity, "ChangeBatchQuantity", `{"batchref": "b1", "qty": 5, "colour": "red", "extra": {"n": [1]}}`},
		{consumer.ChangeBatchQuantity, "ChangeBatchQuantity", `{"batchref": "b1", "qty": 1000000000}`},
		{consumer.ChangeBatchQuantity, "ChangeBatchQuantity", `{"batchref": "b1", "qty": 1000000001}`},
		{consumer.ChangeBatchQuantity, "ChangeBatchQuantity", `{"batchref": "b1", "qty": -1}`},
		{consumer.ChangeBatchQuantity, "ChangeBatchQuantity", `{"batchref": "b1", "qty": "5"}`},
		{consumer.ChangeBatchQuantity, "ChangeBatchQuantity", `{"batchref": "b1", "qty": 2.5}`},
		{consumer.ChangeBatchQuantity, "ChangeBatchQuantity", `{"batchref": "", "qty": 5}`},
		{consumer.ChangeBatchQuantity, "ChangeBatchQuantity", `{"batchref": "` + strings.Repeat("r", 256) + `", "qty": 5}`},
		{consumer.ChangeBatchQuantity, "ChangeBatchQuantity", `{"qty": 5}`},
		{consumer.ChangeBatchQuantity, "ChangeBatchQuantity", `{"batchref": 7, "qty": 5}`},
		{consumer.ChangeBatchQuantity, "ChangeBatchQuantity", `[1]`},
		{consumer.Allocate, "Allocate", `{"orderid": "o1", "sku": "LAMP", "qty": 3}`},
		{consumer.Allocate, "Allocate", `{"orderid": "o1", "sku": "LAMP", "qty": 3, ` + meta + `, "priority": "high"}`},
		{consumer.Allocate, "Allocate", `{"orderid": "o1", "sku": "LAMP", "qty": 0}`},
		{consumer.Allocate, "Allocate", `{"orderid": "o1", "sku": "LAMP"}`},
		{consumer.Allocate, "Allocate", `{"orderid": "o1", "qty": 1}`},
		{consumer.Allocate, "Allocate", `{"orderid": "o1", "sku": ["LAMP"], "qty": 1}`},
		{consumer.Allocate, "Allocate", `{"orderid": "o1", "sku": "LAMP", "qty": 1, "message_id": ""}`},
		{consumer.Allocate, "Allocate", `{"orderid": "o1", "sku": "LAMP", "qty": 1, "message_id": 9}`},
		{consumer.Allocate, "Allocate", `{"orderid": "o1", "sku": "LAMP", "qty": 1, "correlation_id": ""}`},
		{consumer.Allocate, "Allocate", `{"orderid": "o1", "sku": "LAMP", "qty": 1, "causation_id": {"id": 1}}`},
		{consumer.Allocate, "Allocate", `{"orderid": "o1", "sku": "LAMP", "qty": 1, "traceparent": "00-abc"}`},
		{consumer.Allocate, "Allocate", `{"orderid": "o1", "sku": "LAMP", "qty": 1, "traceparent": "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"}`},
		{consumer.Allocate, "Allocate", `{"orderid": "o1", "sku": "LAMP", "qty": 1, "tracestate": ""}`},
		{consumer.Allocate, "Allocate", `{"orderid": "o1", "sku": "LAMP", "qty": 1, "tracestate": "` + strings.Repeat("a", 513) + `"}`},
	}
	accepted, refused := 0, 0
	for _, c := range cases {
		_, decodeErr := consumer.Decode(c.channel, []byte(c.payload))
		schemaErr := a.check(t, c.schema, c.payload)
		if (decodeErr == nil) != (schemaErr == nil) {
			t.Errorf("%s %.100s: the decoder says %v, the schema %s says %v", c.channel, c.payload, decodeErr, c.schema, schemaErr)
		}
		if decodeErr == nil {
			accepted++
		} else {
			refused++
		}
	}
	if accepted < 5 || refused < 10 {
		t.Fatalf("%d accepted and %d refused samples: the cases no longer test both sides", accepted, refused)
	}
}

// A stream entry's fields are described by InboundStreamEntry, and its data
// field by the body's schema.
func TestAsyncAPIInboundStreamEntriesAgreeWithTheConsumersDecoder(t *testing.T) {
	t.Parallel()
	a := fetchAsyncAPI(t)
	body := `{"orderid": "o1", "sku": "LAMP", "qty": 1}`
	cases := []map[string]string{
		{},
		{"message_id": "m1", "traceparent": traceParent, "tracestate": traceState, "correlation_id": "c1", "causation_id": "c0", "producer": "shop"},
		{"message_id": ""},
		{"traceparent": "not-a-trace"},
		{"correlation_id": strings.Repeat("c", 256)},
	}
	for _, fields := range cases {
		entry := map[string]string{"data": body}
		for k, v := range fields {
			entry[k] = v
		}
		raw, err := json.Marshal(entry)
		if err != nil {
			t.Fatal(err)
		}
		_, decodeErr := consumer.DecodeEntry(consumer.Allocate, []byte(body), fields)
		schemaErr := a.check(t, "InboundStreamEntry", string(raw))
		if (decodeErr == nil) != (schemaErr == nil) {
			t.Errorf("entry %v: the decoder says %v, the schema says %v", fields, decodeErr, schemaErr)
		}
	}
	if err := a.check(t, "InboundStreamEntry", `{"message_id": "m1"}`); err == nil {
		t.Error("an entry without data is valid, want it refused as the reader refuses it")
	}
}

// What the publisher sends is valid against the schema of its channel.
func TestAsyncAPIOutboundSchemasAgreeWithThePublishersEncoder(t *testing.T) {
	t.Parallel()
	a := fetchAsyncAPI(t)
	ctx := t.Context()
	at := time.Date(2026, 3, 14, 15, 9, 26, 535000000, time.FixedZone("CET", 3600))
	envs := []servicelayer.Envelope{
		servicelayer.NewEnvelope(ctx, domain.Allocated{OrderID: "o1", SKU: "LAMP", Qty: 7, BatchRef: "b1"}, at),
		servicelayer.NewEnvelope(servicelayer.WithCause(ctx, servicelayer.Cause{CausationID: "m-1", CorrelationID: "corr-1"}),
			domain.Allocated{OrderID: "o2", SKU: "LAMP", Qty: 1, BatchRef: "b2"}, at),
		servicelayer.NewEnvelope(ctx, domain.Deallocated{OrderID: "o1", SKU: "LAMP", Qty: 7, BatchRef: "b1"}, at),
		// Committed under a trace: the body and the entry carry it.
		servicelayer.NewEnvelope(servicelayer.WithTraceContext(ctx, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "vendor=x"),
			domain.Allocated{OrderID: "o3", SKU: "LAMP", Qty: 1, BatchRef: "b2"}, at),
		servicelayer.NewEnvelope(servicelayer.WithTraceContext(ctx, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", ""),
			domain.Deallocated{OrderID: "o3", SKU: "LAMP", Qty: 1, BatchRef: "b2"}, at),
	}
	if envs[3].TraceParent == "" || envs[3].TraceState != "vendor=x" {
		t.Fatalf("an event sealed under a trace keeps no trace context: %+v", envs[3])
	}
	schemaOf := map[string]string{redis.LineAllocated: "LineAllocated", "line_deallocated": "LineDeallocated"}
	checked := 0
	for _, env := range envs {
		channel, body, err := redis.Encode(env)
		if err != nil {
			t.Fatalf("encode %s: %v", env.Event.Name(), err)
		}
		schema, ok := schemaOf[channel]
		if !ok {
			t.Errorf("the publisher sends on %s, which asyncapi.json does not describe", channel)
			continue
		}
		if err := a.check(t, schema, string(body)); err != nil {
			t.Errorf("%s body %s is not valid against %s: %v", channel, body, schema, err)
		}
		fields := map[string]string{"data": string(body), "message_id": env.MessageID}
		if env.TraceParent != "" {
			if !strings.Contains(string(body), `"traceparent":"`+env.TraceParent+`"`) {
				t.Errorf("%s body %s does not carry the event's traceparent %s", channel, body, env.TraceParent)
			}
			fields["traceparent"] = env.TraceParent
		}
		if env.TraceState != "" {
			fields["tracestate"] = env.TraceState
		}
		entry, _ := json.Marshal(fields)
		if err := a.check(t, "OutboundStreamEntry", string(entry)); err != nil {
			t.Errorf("%s stream entry %s: %v", channel, entry, err)
		}
		checked++
	}
	if checked != len(envs) {
		t.Fatalf("%d bodies checked, want every one of %d", checked, len(envs))
	}
	// The documented line_deallocated body, as its publisher is to send it.
	deallocated := `{"orderid": "o1", "sku": "LAMP", "qty": 7, "batchref": "b1", "message_id": "0f8fad5b-d9cb-469f-a165-70867728950e", "occurred_at": "2026-03-14T14:09:26.535Z", "causation_id": "m-1", "correlation_id": "corr-1"}`
	if err := a.check(t, "LineDeallocated", deallocated); err != nil {
		t.Errorf("line_deallocated %s: %v", deallocated, err)
	}
	// And the schemas are strict enough to notice a change.
	for _, bad := range []string{
		`{"orderid": "o1", "sku": "LAMP", "qty": "7", "batchref": "b1", "message_id": "0f8fad5b-d9cb-469f-a165-70867728950e", "occurred_at": "2026-03-14T14:09:26.535Z"}`,
		`{"orderid": "o1", "sku": "LAMP", "qty": 7, "message_id": "0f8fad5b-d9cb-469f-a165-70867728950e", "occurred_at": "2026-03-14T14:09:26.535Z"}`,
		`{"orderid": "o1", "sku": "LAMP", "qty": 7, "batchref": "b1", "message_id": "0f8fad5b-d9cb-469f-a165-70867728950e", "occurred_at": "yesterday"}`,
		`{"orderid": "o1", "sku": "LAMP", "qty": 7, "batchref": "b1", "message_id": "0f8fad5b-d9cb-469f-a165-70867728950e", "occurred_at": "2026-03-14T14:09:26.535Z", "batch": "b1"}`,
	} {
		if a.check(t, "LineAllocated", bad) == nil {
			t.Errorf("LineAllocated accepts %s", bad)
		}
	}
}
