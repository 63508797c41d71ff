package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// The flash-sale reference: what this PostgreSQL does with the least an
// allocation must write, run by pgbench -M prepared on the raw SQL tables
// (rawref, whose products are numbered 1..100 for the spread and 101 for
// the hot SKU), against the service under the same clients:
//
//   - oneStatement bumps the product's version, inserts the line and the
//     event in one statement, on a random one of the 100 SKUs;
//   - fourStatements is the transaction of rawSQL.allocate on the hot SKU:
//     lock the product, insert the line, bump the version, insert the event.
//
// The service is measured with the CPU time it and the PostgreSQL backends
// spent per answered allocation, read from /proc.
const (
	oneStatement = `\set n random(1, 100)
WITH p AS (UPDATE rawref.products SET version = version + 1 WHERE n = :n RETURNING sku, version),
     l AS (INSERT INTO rawref.allocations (sku, orderid, qty) SELECT sku, 'pgbench-' || version, 1 FROM p)
INSERT INTO rawref.events (payload) SELECT jsonb_build_object('sku', sku, 'qty', 1, 'version', version) FROM p;
`
	fourStatements = `BEGIN;
SELECT version FROM rawref.products WHERE n = 101 FOR UPDATE;
INSERT INTO rawref.allocations (sku, orderid, qty) SELECT sku, 'pgbench', 1 FROM rawref.products WHERE n = 101;
UPDATE rawref.products SET version = version + 1 WHERE n = 101;
INSERT INTO rawref.events (payload) VALUES ('{"sku": "hot", "qty": 1}');
END;
`
	flashClients = 32
)

// pgbenchResult is what pgbench reports of a run.
type pgbenchResult struct {
	tps     float64
	latency time.Duration // average
}

var (
	tpsLine     = regexp.MustCompile(`tps = ([0-9.]+) \(without initial connection time\)`)
	latencyLine = regexp.MustCompile(`latency average = ([0-9.]+) ms`)
)

// runPgbench runs script with pgbench -M prepared at clients for d.
func runPgbench(ctx context.Context, dbURL, script string, clients int, d time.Duration) (pgbenchResult, error) {
	dir, err := os.MkdirTemp("", "loadgen-pgbench-")
	if err != nil {
		return pgbenchResult{}, err
	}
	defer os.RemoveAll(dir)
	file := filepath.Join(dir, "script.sql")
	if err := os.WriteFile(file, []byte(script), 0o600); err != nil {
		return pgbenchResult{}, err
	}
	out, err := exec.CommandContext(ctx, "pgbench", "-M", "prepared", "-n", "-c", strconv.Itoa(clients),
		"-j", "2", "-T", strconv.Itoa(max(int(d.Seconds()), 1)), "-f", file, dbURL).CombinedOutput()
	if err != nil {
		return pgbenchResult{}, fmt.Errorf("pgbench: %w: %s", err, out)
	}
	tps, lat := tpsLine.FindSubmatch(out), latencyLine.FindSubmatch(out)
	if tps == nil || lat == nil {
		return pgbenchResult{}, fmt.Errorf("pgbench printed no tps or latency: %s", out)
	}
	t, _ := strconv.ParseFloat(string(tps[1]), 64)
	l, _ := strconv.ParseFloat(string(lat[1]), 64)
	return pgbenchResult{tps: t, latency: time.Duration(l * float64(time.Millisecond))}, nil
}

// postgresCPU is the CPU time every postgres process on this machine has
// used so far: the server's backends and its own workers.
func postgresCPU() time.Duration {
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	var total time.Duration
	for _, dir := range dirs {
		comm, err := os.ReadFile(filepath.Join(dir, "comm"))
		if err != nil || strings.TrimSpace(string(comm)) != "postgres" {
			continue
		}
		pid, _ := strconv.Atoi(filepath.Base(dir))
		if cpu, err := processCPU(pid); err == nil {
			total += cpu
		}
	}
	return total
}

// cpuPerOp runs load and returns its summary with the CPU time the service
// (pid) and PostgreSQL spent per operation that succeeded.
func cpuPerOp(pid int, load func() summary) (s summary, service, postgres time.Duration) {
	svc0, _ := processCPU(pid)
	pg0 := postgresCPU()
	s = load()
	svc1, _ := processCPU(pid)
	pg1 := postgresCPU()
	ok := time.Duration(max(s.ops-s.failures, 1))
	return s, (svc1 - svc0) / ok, (pg1 - pg0) / ok
}

// flashSalePhases compares the service with pgbench on the same PostgreSQL
// (see oneStatement and fourStatements), in one table.
func flashSalePhases(ctx context.Context, b *bench, svc *service, dbURL string, spread []string, hot string, d time.Duration, t *table) error {
	if svc == nil {
		return fmt.Errorf("the flash-sale phases read the service's CPU time: run it with -bin, not -target")
	}
	progress("flash sale: pgbench -M prepared, one statement, 1 and %d clients, 100 SKUs", flashClients)
	one1, err := runPgbench(ctx, dbURL, oneStatement, 1, d)
	if err != nil {
		return err
	}
	one32, err := runPgbench(ctx, dbURL, oneStatement, flashClients, d)
	if err != nil {
		return err
	}
	progress("flash sale: pgbench -M prepared, the 4-statement transaction, %d clients, hot SKU", flashClients)
	four, err := runPgbench(ctx, dbURL, fourStatements, flashClients, d)
	if err != nil {
		return err
	}
	progress("flash sale: POST /allocate, 1 and %d clients over 100 SKUs, %d on the hot SKU", flashClients, flashClients)
	single := b.allocateLoad(ctx, spread, 1, d)
	spreadRun, svcCPU, pgCPU := cpuPerOp(svc.pid(), func() summary { return b.allocateLoad(ctx, spread, flashClients, d) })
	hotRun := b.allocateLoad(ctx, []string{hot}, flashClients, d)
	flashSaleRows(t, one1, one32, four, single, spreadRun, hotRun, svcCPU, pgCPU)
	return nil
}

func flashSaleRows(t *table, one1, one32, four pgbenchResult, single, spreadRun, hotRun summary, svcCPU, pgCPU time.Duration) {
	ratio := func(a, b float64) float64 { return a / max(b, 1e-9) }
	spreadRatio, hotRatio := ratio(spreadRun.rate(), one32.tps), ratio(hotRun.rate(), four.tps)
	latRatio := ratio(float64(single.p50), float64(one1.latency))
	t.add(row{name: fmt.Sprintf("flash sale: POST /allocate, %d clients, 100 SKUs", flashClients), result: fmt.Sprintf("%.0f req/s", spreadRun.rate()),
		p50: ms(spreadRun.p50), p99: ms(spreadRun.p99), fail: fmt.Sprint(spreadRun.failures), raw: fmt.Sprintf("%.0f tps", one32.tps),
		ratio: fmt.Sprintf("%.2f× pgbench one statement", spreadRatio), target: "≥ 0.6×", met: mark(spreadRatio >= 0.6 && spreadRun.failures == 0)}, spreadRun.firstErr, "")
	t.add(row{name: fmt.Sprintf("flash sale: POST /allocate, %d clients, hot SKU", flashClients), result: fmt.Sprintf("%.0f req/s", hotRun.rate()),
		p50: ms(hotRun.p50), p99: ms(hotRun.p99), fail: fmt.Sprint(hotRun.failures), raw: fmt.Sprintf("%.0f tps", four.tps),
		ratio: fmt.Sprintf("%.2f× pgbench 4 statements", hotRatio), target: "≥ 3×, 0 failures", met: mark(hotRatio >= 3 && hotRun.failures == 0)}, hotRun.firstErr, "")
	t.add(row{name: fmt.Sprintf("flash sale: CPU per allocation at %d clients, the service", flashClients), result: fmt.Sprintf("%d µs", svcCPU.Microseconds()),
		target: "≤ 150 µs", met: mark(svcCPU <= 150*time.Microsecond)}, "", "")
	t.add(row{name: fmt.Sprintf("flash sale: CPU per allocation at %d clients, PostgreSQL", flashClients), result: fmt.Sprintf("%d µs", pgCPU.Microseconds()),
		target: "≤ 250 µs", met: mark(pgCPU <= 250*time.Microsecond)}, "", "")
	t.add(row{name: "flash sale: POST /allocate, 1 client, 100 SKUs", p50: ms(single.p50), p99: ms(single.p99), fail: fmt.Sprint(single.failures),
		raw:   fmt.Sprintf("%.2f ms", float64(one1.latency)/float64(time.Millisecond)),
		ratio: fmt.Sprintf("p50 %.2f× pgbench's latency", latRatio), target: "≤ 3×", met: mark(latRatio <= 3 && single.failures == 0)}, single.firstErr, "")
}
