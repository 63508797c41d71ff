package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"
)

// soakWindow is the resolution of a soak: operations are counted by the
// window they finished in.
const soakWindow = 5 * time.Second

// soakClients and soakSKUs are the load of the embedded soak and of its
// PostgreSQL reference: a small shop's busy hour.
const (
	soakClients = 16
	soakSKUs    = 100
)

// timeline records operations by the soakWindow they finished in; its
// windows are made up front, so that only each recorder needs a lock.
type timeline struct {
	start   time.Time
	windows []*recorder
}

func newTimeline(d time.Duration) *timeline {
	tl := &timeline{start: time.Now(), windows: make([]*recorder, max(1, int(d/soakWindow)))}
	for i := range tl.windows {
		tl.windows[i] = &recorder{}
	}
	return tl
}

func (tl *timeline) add(lat time.Duration, err error) {
	i := min(int(time.Since(tl.start)/soakWindow), len(tl.windows)-1)
	tl.windows[i].add(lat, err)
}

// span summarises the windows [from, to).
func (tl *timeline) span(from, to int) summary {
	var all recorder
	for _, w := range tl.windows[from:to] {
		w.mu.Lock()
		all.lats = append(all.lats, w.lats...)
		all.failures += w.failures
		if all.firstErr == "" {
			all.firstErr = w.firstErr
		}
		w.mu.Unlock()
	}
	return all.summary(time.Duration(to-from) * soakWindow)
}

// soak runs op from clients goroutines for d and records each by when it
// finished; every minute it reports the last minute's throughput.
func soak(ctx context.Context, clients int, d time.Duration, op func(ctx context.Context, rng *rand.Rand) error) *timeline {
	tl := newTimeline(d)
	stop := tl.start.Add(time.Duration(len(tl.windows)) * soakWindow)
	var wg sync.WaitGroup
	for w := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), uint64(tl.start.UnixNano())))
			for time.Now().Before(stop) && ctx.Err() == nil {
				t0 := time.Now()
				err := op(ctx, rng)
				tl.add(time.Since(t0), err)
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	perMinute := int(time.Minute / soakWindow)
	tick := time.NewTicker(time.Minute)
	defer tick.Stop()
	for minute := 1; ; minute++ {
		select {
		case <-done:
			return tl
		case <-tick.C:
			if to := minute * perMinute; to <= len(tl.windows) {
				progress("embedded soak, minute %d: %.0f req/s", minute, tl.span(to-perMinute, to).rate())
			}
		}
	}
}

// embeddedSoak starts the service in the embedded mode, drives POST
// /allocate from soakClients clients over soakSKUs SKUs for d, and adds to
// t the throughput of the first minute (the first half of a shorter soak)
// and of the last one, and how the sustained throughput compares with
// PostgreSQL's under the same load (pg, measured by the caller). A
// non-empty admin is the service's ADMIN_ADDR, for profiling it meanwhile.
func embeddedSoak(ctx context.Context, bin string, d time.Duration, admin string, pg summary, t *table) error {
	b := &bench{http: newHTTPClient(), run: randomName(""), prefix: randomName("bench") + "."}
	progress("starting %s serve in the embedded mode", bin)
	svc, rdb, err := startEmbedded(ctx, bin, b.prefix, "ADMIN_ADDR="+admin)
	if err != nil {
		return err
	}
	defer svc.stop()
	b.url, b.rdb = svc.url, rdb
	skus, _, err := b.prepare(ctx, soakSKUs)
	if err != nil {
		return fmt.Errorf("prepare the embedded service: %w", err)
	}
	progress("embedded: POST /allocate, %d SKUs, %d clients, %s", soakSKUs, soakClients, d)
	cpu := sampleCPU(ctx, svc.pid(), int(d/soakWindow))
	tl := soak(ctx, soakClients, d, func(ctx context.Context, rng *rand.Rand) error {
		_, err := b.allocate(ctx, b.newOrder(), skus[rng.IntN(len(skus))])
		return err
	})

	n := len(tl.windows)
	span := min(int(time.Minute/soakWindow), max(1, n/2))
	spanLen := time.Duration(span) * soakWindow
	first, last := tl.span(0, span), tl.span(n-span, n)
	name := fmt.Sprintf("embedded, POST /allocate, %d SKUs, %d clients", soakSKUs, soakClients)
	t.add(row{name: fmt.Sprintf("%s, first %s", name, spanLen), result: fmt.Sprintf("%.0f req/s", first.rate()),
		p50: ms(first.p50), p99: ms(first.p99), fail: fmt.Sprint(first.failures)}, first.firstErr, "")
	held := last.rate() / max(first.rate(), 1e-9)
	t.add(row{name: fmt.Sprintf("%s, last %s of %s", name, spanLen, time.Duration(n)*soakWindow), result: fmt.Sprintf("%.0f req/s", last.rate()),
		p50: ms(last.p50), p99: ms(last.p99), fail: fmt.Sprint(last.failures), ratio: fmt.Sprintf("%.2f× first", held),
		target: "≥ 0.9× first, 0 failures", met: mark(held >= 0.9 && first.failures == 0 && last.failures == 0)}, last.firstErr, "")
	t.add(row{name: fmt.Sprintf("embedded (last %s) / PostgreSQL, %d SKUs, %d clients", spanLen, soakSKUs, soakClients),
		result: fmt.Sprintf("%.0f / %.0f req/s", last.rate(), pg.rate()), ratio: fmt.Sprintf("%.2f×", last.rate()/max(pg.rate(), 1e-9))}, "", "")
	t.add(row{name: "CPU per request of the embedded service, last / first", result: cpu.perOp(n-span, n, last.ops),
		ratio: fmt.Sprintf("%s first", cpu.perOp(0, span, first.ops))}, "", "")
	rss, err := peakRSS(svc.pid())
	if err != nil {
		return err
	}
	t.add(row{name: "peak RSS of the embedded service (VmHWM)", result: fmt.Sprintf("%.1f MB", float64(rss)/(1<<20))}, "", "")
	entries, ids, err := redisHoldings(ctx, rdb, b.prefix, "line_allocated", "line_deallocated")
	if err != nil {
		return err
	}
	t.add(row{name: "the embedded Redis at the end: stream entries, published ids", result: fmt.Sprintf("%s, %s", thousands(int(entries)), thousands(int(ids)))}, "", "")
	if lines := svc.logLines(); lines > 0 {
		t.note(fmt.Sprintf("the embedded service logged %d lines at warn or above: %s", lines, svc.logs.Name()))
	}
	return nil
}
