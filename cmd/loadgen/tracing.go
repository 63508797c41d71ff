package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// The tracing phase compares POST /allocate (16 clients over 100 SKUs) on
// two services side by side, each on a fresh database: one with tracing
// off (no OTLP endpoint, as deployed by default) and one sampling every
// trace (OTEL_TRACES_SAMPLER=always_on) and exporting it to a dummy OTLP
// endpoint loadgen serves, which accepts and discards. The load alternates
// between them, off, on, off, on, so that a machine that slows down or
// speeds up meanwhile weighs on both alike.
const (
	tracingClients = 16
	tracingSKUs    = 100
)

// otlpSink accepts OTLP/HTTP exports and counts them, throwing them away.
type otlpSink struct {
	*httptest.Server
	exports, bytes atomic.Int64
}

func newOTLPSink() *otlpSink {
	s := &otlpSink{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		s.exports.Add(1)
		s.bytes.Add(n)
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	return s
}

// tracedService is one service of the phase with its bench.
type tracedService struct {
	svc  *service
	b    *bench
	skus []string
	drop func()
}

// startTraced starts a service on a fresh database with env added, and
// prepares its SKUs.
func startTraced(ctx context.Context, cfg config, rdb *goredis.Client, env ...string) (*tracedService, error) {
	name := randomName("bench_tracing_")
	dbURL, err := createDatabase(ctx, cfg.adminURL, name)
	if err != nil {
		return nil, err
	}
	drop := func() {
		dctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := dropDatabase(dctx, cfg.adminURL, name); err != nil {
			progress("%v", err)
		}
	}
	b := &bench{http: newHTTPClient(), rdb: rdb, run: randomName(""), prefix: randomName("bench") + "."}
	svc, err := startProcess(ctx, cfg.bin, b.prefix, rdb, append([]string{"DATABASE_URL=" + dbURL, "REDIS_URL=" + cfg.redisURL}, env...)...)
	if err != nil {
		drop()
		return nil, err
	}
	ts := &tracedService{svc: svc, b: b, drop: func() {
		svc.stop()
		deleteKeys(rdb, b.prefix)
		drop()
	}}
	b.url = svc.url
	if ts.skus, _, err = b.prepare(ctx, tracingSKUs); err != nil {
		ts.drop()
		return nil, fmt.Errorf("prepare: %w", err)
	}
	return ts, nil
}

// tracingPhase adds to t the throughput with tracing off and on, and their
// ratio.
func tracingPhase(ctx context.Context, cfg config, rdb *goredis.Client, t *table) error {
	sink := newOTLPSink()
	defer sink.Close()
	progress("tracing: starting a service with tracing off and one exporting every trace to %s", sink.URL)
	off, err := startTraced(ctx, cfg, rdb, "OTEL_EXPORTER_OTLP_ENDPOINT=", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=")
	if err != nil {
		return fmt.Errorf("service with tracing off: %w", err)
	}
	defer off.drop()
	on, err := startTraced(ctx, cfg, rdb, "OTEL_EXPORTER_OTLP_ENDPOINT="+sink.URL, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=",
		"OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf", "OTEL_TRACES_SAMPLER=always_on", "OTEL_SDK_DISABLED=", "OTEL_TRACES_EXPORTER=")
	if err != nil {
		return fmt.Errorf("service with tracing on: %w", err)
	}
	defer on.drop()

	var offRuns, onRuns []summary
	for round := range 2 {
		for _, s := range []struct {
			name string
			ts   *tracedService
			into *[]summary
		}{{"off", off, &offRuns}, {"on", on, &onRuns}} {
			progress("tracing %s, round %d: POST /allocate, %d SKUs, %d clients, %s", s.name, round+1, tracingSKUs, tracingClients, cfg.duration)
			*s.into = append(*s.into, s.ts.b.allocateLoad(ctx, s.ts.skus, tracingClients, cfg.duration))
		}
	}
	// What the batch span processor still holds goes out within its 5 s
	// schedule: wait for it, so that the count below is the run's.
	time.Sleep(6 * time.Second)
	offSum, onSum := merge(offRuns), merge(onRuns)
	ratio := onSum.rate() / max(offSum.rate(), 1e-9)
	label := fmt.Sprintf("POST /allocate, %d SKUs, %d clients", tracingSKUs, tracingClients)
	t.add(row{name: label + ", tracing off (no endpoint)", result: fmt.Sprintf("%.0f req/s", offSum.rate()),
		p50: ms(offSum.p50), p99: ms(offSum.p99), fail: fmt.Sprint(offSum.failures)}, offSum.firstErr, "")
	t.add(row{name: fmt.Sprintf("%s, tracing on (always_on, %d OTLP exports, %.1f MB)", label, sink.exports.Load(), float64(sink.bytes.Load())/(1<<20)),
		result: fmt.Sprintf("%.0f req/s", onSum.rate()), p50: ms(onSum.p50), p99: ms(onSum.p99), fail: fmt.Sprint(onSum.failures),
		ratio: fmt.Sprintf("%.2f× off", ratio)}, onSum.firstErr, "")
	if sink.exports.Load() == 0 {
		t.note("tracing on: the dummy OTLP endpoint received nothing; the service did not export")
	}
	return nil
}

// merge is the summary of runs of equal length taken as one: their rates
// add, their latencies are pooled.
func merge(runs []summary) summary {
	var all recorder
	var elapsed time.Duration
	for _, s := range runs {
		all.lats = append(all.lats, s.lats...)
		all.failures += s.failures
		if all.firstErr == "" {
			all.firstErr = s.firstErr
		}
		elapsed += s.elapsed
	}
	return all.summary(elapsed)
}
