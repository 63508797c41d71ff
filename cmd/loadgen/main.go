// Command loadgen measures the allocation service (issue 5): /allocate
// throughput and latency against a raw SQL reference, the change →
// line_allocated round trip, inbound stream throughput, allocation cost after
// a long history, and peak memory. Then it starts the service in the
// embedded mode (SQLite, its own Redis) and drives it for -embedded-soak
// (2 minutes; -embedded-soak 10m for the real soak), comparing its first
// minute with its last and with PostgreSQL under the same load, and
// compares /allocate with tracing off and on (-tracing-only: just that). It
// prints one table with the targets.
//
//	go build -o bin/allocation ./cmd/allocation && go run ./cmd/loadgen -bin bin/allocation
//	go run ./cmd/loadgen -bin bin/allocation -embedded-only -embedded-soak 10m
//
// It measures only: a missed target is reported, not an error. It exits
// non-zero when the harness itself fails.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/jmoiron/sqlx"
	goredis "github.com/redis/go-redis/v9"
)

type config struct {
	bin       string
	target    string
	serviceDB string
	prefix    string
	adminURL  string
	redisURL  string
	duration  time.Duration
	quick     bool
	// outboxOnly, historyOnly and tracingOnly run those phases alone.
	outboxOnly, historyOnly, tracingOnly bool
	// soak is how long the embedded mode is driven; embeddedOnly skips
	// every other measurement but the PostgreSQL reference of the soak.
	soak         time.Duration
	embeddedOnly bool
	// flashOnly runs only the flash-sale reference (flashSalePhases).
	flashOnly   bool
	inboundOnly bool
	// embeddedAdmin, when set, is the embedded service's ADMIN_ADDR, so
	// that its profiles can be taken during the soak.
	embeddedAdmin string
}

// sizes of one run: the full one, or the -quick smoke run.
type sizes struct {
	roundTrips int
	inbound    int
	histories  []int
	samples    int
}

func main() {
	var cfg config
	flag.StringVar(&cfg.bin, "bin", "bin/allocation", "the allocation binary to start (ignored with -target)")
	flag.StringVar(&cfg.target, "target", "", "URL of an already running service to drive instead (e.g. http://127.0.0.1:8080)")
	flag.StringVar(&cfg.serviceDB, "service-db", "", "with -target: the service's DATABASE_URL, for the history phase")
	flag.StringVar(&cfg.prefix, "prefix", "", "with -target: the service's REDIS_PREFIX")
	flag.StringVar(&cfg.adminURL, "db", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable", "PostgreSQL to create the bench database on")
	flag.StringVar(&cfg.redisURL, "redis", "redis://127.0.0.1:6379/0", "Redis")
	flag.DurationVar(&cfg.duration, "duration", 0, "length of each load phase (default 8s, 2s with -quick)")
	flag.BoolVar(&cfg.quick, "quick", false, "a short smoke run: shorter phases, smaller histories")
	flag.BoolVar(&cfg.outboxOnly, "outbox-only", false, "run only the outbox phases (Redis stopped, frozen; backlog drain)")
	flag.BoolVar(&cfg.tracingOnly, "tracing-only", false, "run only the tracing phase (allocate with tracing off vs on, exporting every trace to a dummy OTLP endpoint)")
	flag.BoolVar(&cfg.historyOnly, "history-only", false, "run only the history phases (GET /events on a million events; allocate while pruning)")
	flag.DurationVar(&cfg.soak, "embedded-soak", 0, "how long to drive the embedded mode, comparing its first minute with its last (default 2m, 20s with -quick; 10m for the real soak)")
	flag.BoolVar(&cfg.flashOnly, "flashsale-only", false, "run only the flash-sale reference: the service against pgbench -M prepared (one statement; the 4-statement transaction on the hot SKU), with CPU per allocation")
	flag.BoolVar(&cfg.inboundOnly, "inbound-only", false, "run only the inbound phase: change_batch_quantity entries appended to the stream, timed until the consumer group acknowledged them all")
	flag.BoolVar(&cfg.embeddedOnly, "embedded-only", false, "measure only the embedded soak and PostgreSQL under the same load")
	flag.StringVar(&cfg.embeddedAdmin, "embedded-admin", "", "ADMIN_ADDR of the embedded service (host:port), to profile it during the soak through /debug/pprof/")
	flag.Parse()
	if cfg.duration == 0 {
		cfg.duration = 8 * time.Second
		if cfg.quick {
			cfg.duration = 2 * time.Second
		}
	}
	if cfg.soak == 0 {
		cfg.soak = 2 * time.Minute
		if cfg.quick {
			cfg.soak = 20 * time.Second
		}
	}
	if cfg.soak < 2*soakWindow {
		fmt.Fprintf(os.Stderr, "loadgen: -embedded-soak %s: want at least %s\n", cfg.soak, 2*soakWindow)
		os.Exit(2)
	}
	if cfg.embeddedOnly && cfg.target != "" {
		fmt.Fprintln(os.Stderr, "loadgen: -embedded-only starts its own services; it does not take -target")
		os.Exit(2)
	}

	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	if err := run(ctx, cfg, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "loadgen: "+format+"\n", args...)
}

func run(ctx context.Context, cfg config, out io.Writer) (err error) {
	if cfg.outboxOnly || cfg.historyOnly || cfg.tracingOnly {
		return runOnly(ctx, cfg, out)
	}
	rdb, err := connectRedis(ctx, cfg.redisURL)
	if err != nil {
		return err
	}
	defer rdb.Close()

	dbName := randomName("bench_")
	dbURL, err := createDatabase(ctx, cfg.adminURL, dbName)
	if err != nil {
		return fmt.Errorf("%w (make services starts PostgreSQL)", err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if derr := dropDatabase(dctx, cfg.adminURL, dbName); derr != nil && err == nil {
			err = derr
		}
	}()

	b, svc, serviceDBURL, err := newBench(ctx, cfg, rdb, dbName, dbURL)
	if err != nil {
		return err
	}
	if svc != nil {
		// Deferred in this order, the service stops before its keys go.
		defer deleteKeys(rdb, b.prefix)
		defer svc.stop()
	}
	if serviceDBURL != "" {
		if b.db, err = sqlx.ConnectContext(ctx, "postgres", serviceDBURL); err != nil {
			return fmt.Errorf("connect the service's database: %w", err)
		}
		defer b.db.Close()
	}
	spread, hot, raw, err := prepareSKUs(ctx, b, dbURL)
	if err != nil {
		return err
	}
	defer raw.close()
	return measure(ctx, cfg, b, svc, raw, spread, hot, out)
}

// sizesOf are the sizes of the full run, or of the -quick smoke run.
func sizesOf(quick bool) sizes {
	if quick {
		return sizes{roundTrips: 50, inbound: 2_000, histories: []int{0, 1_000, 10_000}, samples: 50}
	}
	return sizes{roundTrips: 200, inbound: 20_000, histories: []int{0, 10_000, 100_000}, samples: 200}
}

// connectRedis returns a client of -redis once it answers, so that a
// missing Redis is reported before anything is created.
func connectRedis(ctx context.Context, redisURL string) (*goredis.Client, error) {
	opts, err := goredis.ParseURL(redisURL)
	if err != nil {
		return nil, fmt.Errorf("parse -redis: %w", err)
	}
	rdb := goredis.NewClient(opts)
	if err := rdb.Ping(ctx).Err(); err != nil {
		rdb.Close()
		return nil, fmt.Errorf("reach Redis at %s (make services starts it): %w", redisURL, err)
	}
	return rdb, nil
}

// newBench points a bench at -target, or starts the service on the bench
// database (svc is then non-nil, for the caller to stop). serviceDBURL is
// the service's database when known, for the history phases.
func newBench(ctx context.Context, cfg config, rdb *goredis.Client, dbName, dbURL string) (b *bench, svc *service, serviceDBURL string, err error) {
	b = &bench{http: newHTTPClient(), rdb: rdb, run: randomName("")}
	if cfg.target != "" {
		b.url, b.prefix = strings.TrimSuffix(cfg.target, "/"), cfg.prefix
		return b, nil, cfg.serviceDB, nil
	}
	b.prefix = randomName("bench") + "."
	progress("starting %s serve on database %s, Redis prefix %s", cfg.bin, dbName, b.prefix)
	if svc, err = startService(ctx, cfg.bin, dbURL, cfg.redisURL, b.prefix, rdb); err != nil {
		return nil, nil, "", err
	}
	b.url = svc.url
	return b, svc, dbURL, nil
}

// prepareSKUs creates 100 SKUs and a hot one through the API, and the raw
// SQL reference on the same SKUs; the caller closes raw.
func prepareSKUs(ctx context.Context, b *bench, dbURL string) (spread []string, hot string, raw *rawSQL, err error) {
	progress("preparing 100 SKUs and a hot one through the API")
	if spread, hot, err = b.prepare(ctx, 100); err != nil {
		return nil, "", nil, fmt.Errorf("prepare: %w", err)
	}
	if raw, err = newRawSQL(ctx, dbURL, append(append([]string(nil), spread...), hot)); err != nil {
		return nil, "", nil, err
	}
	return spread, hot, raw, nil
}

// measure runs the phases in order and prints the table: the PostgreSQL
// reference of the soak first, since -embedded-only needs only it.
func measure(ctx context.Context, cfg config, b *bench, svc *service, raw *rawSQL, spread []string, hot string, out io.Writer) error {
	var t table
	if cfg.inboundOnly {
		if err := inboundPhase(ctx, b, svc, sizesOf(cfg.quick).inbound, cfg.duration, &t); err != nil {
			return err
		}
		fmt.Fprintf(out, "allocation benchmark, inbound only, %s, %d CPUs\n\n", time.Now().Format("2006-01-02 15:04"), runtime.NumCPU())
		t.print(out)
		return nil
	}
	pgRef := postgresReference(ctx, b, spread, cfg.duration, &t)
	if cfg.embeddedOnly {
		if err := embeddedSoak(ctx, cfg.bin, cfg.soak, cfg.embeddedAdmin, pgRef, &t); err != nil {
			return fmt.Errorf("embedded soak: %w", err)
		}
		fmt.Fprintf(out, "allocation benchmark, embedded soak only, %s, %d CPUs, %s for PostgreSQL\n\n",
			time.Now().Format("2006-01-02 15:04"), runtime.NumCPU(), cfg.duration)
		t.print(out)
		return nil
	}
	if cfg.flashOnly {
		if err := flashSalePhases(ctx, b, svc, raw.url, spread, hot, cfg.duration, &t); err != nil {
			return fmt.Errorf("flash sale: %w", err)
		}
		fmt.Fprintf(out, "allocation benchmark, flash-sale reference only, %s, %d CPUs, %s per load phase\n\n",
			time.Now().Format("2006-01-02 15:04"), runtime.NumCPU(), cfg.duration)
		t.print(out)
		return nil
	}
	allocatePhases(ctx, b, raw, spread, hot, cfg.duration, &t)
	if svc != nil {
		if err := flashSalePhases(ctx, b, svc, raw.url, spread, hot, cfg.duration, &t); err != nil {
			return fmt.Errorf("flash sale: %w", err)
		}
	}
	sz := sizesOf(cfg.quick)
	if err := roundTripPhase(ctx, b, sz.roundTrips, &t); err != nil {
		return err
	}
	if err := inboundPhase(ctx, b, svc, sz.inbound, cfg.duration, &t); err != nil {
		return err
	}
	if err := historyLengthPhases(ctx, b, sz, &t); err != nil {
		return err
	}
	if err := ownServicePhases(ctx, cfg, b.rdb, svc, pgRef, &t); err != nil {
		return err
	}
	fmt.Fprintf(out, "allocation benchmark, %s, %d CPUs, %s per load phase%s\n\n",
		time.Now().Format("2006-01-02 15:04"), runtime.NumCPU(), cfg.duration, map[bool]string{true: ", -quick"}[cfg.quick])
	t.print(out)
	return nil
}

// postgresReference drives /allocate as the embedded soak will, for its
// PostgreSQL figure.
func postgresReference(ctx context.Context, b *bench, spread []string, d time.Duration, t *table) summary {
	progress("POST /allocate, %d SKUs, %d clients, %s: PostgreSQL's figure for the embedded soak", soakSKUs, soakClients, d)
	pgRef := b.allocateLoad(ctx, spread[:soakSKUs], soakClients, d)
	t.add(row{name: fmt.Sprintf("POST /allocate, %d SKUs, %d clients", soakSKUs, soakClients), result: fmt.Sprintf("%.0f req/s", pgRef.rate()),
		p50: ms(pgRef.p50), p99: ms(pgRef.p99), fail: fmt.Sprint(pgRef.failures)}, pgRef.firstErr, "")
	return pgRef
}

// allocatePhases compare /allocate with raw SQL on 100 SKUs and on the hot
// one, at 1, 8 and 32 clients; the target applies at 32.
func allocatePhases(ctx context.Context, b *bench, raw *rawSQL, spread []string, hot string, d time.Duration, t *table) {
	for _, set := range []struct {
		name string
		skus []string
		goal float64
	}{{"100 SKUs", spread, 0.8}, {"hot SKU", []string{hot}, 0.5}} {
		for _, clients := range []int{1, 8, 32} {
			progress("POST /allocate, %s, %s, %s; then raw SQL", set.name, plural(clients, "client"), d)
			s := b.allocateLoad(ctx, set.skus, clients, d)
			r := raw.load(ctx, b, set.skus, clients, d)
			ratio := s.rate() / max(r.rate(), 1e-9)
			row := row{
				name:   fmt.Sprintf("POST /allocate, %s, %s", set.name, plural(clients, "client")),
				result: fmt.Sprintf("%.0f req/s", s.rate()), p50: ms(s.p50), p99: ms(s.p99), fail: fmt.Sprint(s.failures),
				raw: fmt.Sprintf("%.0f tx/s", r.rate()), ratio: fmt.Sprintf("%.2f×", ratio),
			}
			if clients == 32 {
				row.target = fmt.Sprintf("≥ %.1f× raw, 0 failures", set.goal)
				row.met = mark(ratio >= set.goal && s.failures == 0 && r.failures == 0)
			}
			t.add(row, s.firstErr, r.firstErr)
		}
	}
}

// roundTripPhase times change_batch_quantity → line_allocated, one at a time.
func roundTripPhase(ctx context.Context, b *bench, n int, t *table) error {
	progress("change_batch_quantity → line_allocated, %d round trips", n)
	rt, err := b.roundTrip(ctx, n)
	if err != nil {
		return fmt.Errorf("round trip: %w", err)
	}
	rtRow := row{name: fmt.Sprintf("change → line_allocated, %s sequential", thousands(n)),
		p50: ms(rt.p50), p99: ms(rt.p99), fail: fmt.Sprint(rt.failures), target: "p50 < 5 ms, p99 < 25 ms",
		met: mark(rt.failures == 0 && rt.p50 < 5*time.Millisecond && rt.p99 < 25*time.Millisecond)}
	if rt.failures > 0 {
		rt.firstErr = "no line_allocated within 5 s"
	}
	t.add(rtRow, rt.firstErr, "")
	return nil
}

// inboundPhase measures the inbound stream's throughput on n entries, and
// the CPU time the service (svc, nil with -target) and PostgreSQL spent per
// message.
func inboundPhase(ctx context.Context, b *bench, svc *service, n int, d time.Duration, t *table) error {
	progress("inbound: %d change_batch_quantity entries on the stream", n)
	var err error
	run := func() summary {
		var in summary
		in, err = b.inbound(ctx, n, 4*d+10*time.Second)
		return in
	}
	var in summary
	var svcCPU, pgCPU time.Duration
	if svc != nil {
		in, svcCPU, pgCPU = cpuPerOp(svc.pid(), run)
	} else {
		in = run()
	}
	if err != nil {
		return fmt.Errorf("inbound: %w", err)
	}
	t.add(row{name: fmt.Sprintf("inbound stream, %s messages", thousands(n)), result: fmt.Sprintf("%.0f msg/s", in.rate()),
		fail: fmt.Sprint(in.failures), target: "≥ 6,000 msg/s", met: mark(in.failures == 0 && in.rate() >= 6000)}, in.firstErr, "")
	if svc != nil {
		t.add(row{name: "inbound: CPU per message, the service / PostgreSQL",
			result: fmt.Sprintf("%d µs / %d µs", svcCPU.Microseconds(), pgCPU.Microseconds())}, "", "")
	}
	return nil
}

// historyLengthPhases compare /allocate after each history length with the
// fresh SKU; they need the service's database to write the history.
func historyLengthPhases(ctx context.Context, b *bench, sz sizes, t *table) error {
	if b.db == nil {
		t.note("allocate after a long history: skipped, the service's database is unknown (give -service-db)")
		return nil
	}
	var fresh time.Duration
	for i, n := range sz.histories {
		progress("POST /allocate after %d earlier allocations on its SKU, %d samples", n, sz.samples)
		h, err := b.history(ctx, n, sz.samples)
		if err != nil {
			return fmt.Errorf("history %d: %w", n, err)
		}
		r := row{name: fmt.Sprintf("POST /allocate after %s earlier", thousands(n)), p50: ms(h.p50), p99: ms(h.p99), fail: fmt.Sprint(h.failures)}
		if i == 0 {
			fresh = h.p50
		} else {
			ratio := float64(h.p50) / float64(max(fresh, 1))
			r.ratio = fmt.Sprintf("%.2f× fresh", ratio)
			if i == len(sz.histories)-1 {
				r.target = "p50 ≤ 1.5× fresh (after 100,000)"
				r.met = mark(ratio <= 1.5 && h.failures == 0)
			}
		}
		t.add(r, h.firstErr, "")
	}
	return nil
}

// ownServicePhases are the phases that start services of their own or need
// this run's service (its pid): skipped or noted with -target.
func ownServicePhases(ctx context.Context, cfg config, rdb *goredis.Client, svc *service, pgRef summary, t *table) error {
	if cfg.target == "" {
		if err := outboxPhases(ctx, cfg, t); err != nil {
			return fmt.Errorf("outbox: %w", err)
		}
		if err := historyPhases(ctx, cfg, rdb, t); err != nil {
			return fmt.Errorf("history: %w", err)
		}
		if err := tracingPhase(ctx, cfg, rdb, t); err != nil {
			return fmt.Errorf("tracing: %w", err)
		}
	}
	if err := peakRSSRow(svc, t); err != nil {
		return err
	}
	if cfg.target != "" {
		t.note("embedded soak: skipped with -target")
		return nil
	}
	if err := embeddedSoak(ctx, cfg.bin, cfg.soak, cfg.embeddedAdmin, pgRef, t); err != nil {
		return fmt.Errorf("embedded soak: %w", err)
	}
	return nil
}

// peakRSSRow reports the service's peak memory, and its warnings' count.
func peakRSSRow(svc *service, t *table) error {
	if svc == nil {
		t.note("peak RSS: skipped, the service's pid is unknown with -target")
		return nil
	}
	rss, err := peakRSS(svc.pid())
	if err != nil {
		return err
	}
	mb := float64(rss) / (1 << 20)
	t.add(row{name: "peak RSS of the service (VmHWM)", result: fmt.Sprintf("%.1f MB", mb), target: "< 100 MB", met: mark(mb < 100)}, "", "")
	if n := svc.logLines(); n > 0 {
		t.note(fmt.Sprintf("the service logged %d lines at warn or above: %s", n, svc.logs.Name()))
	}
	return nil
}

// deleteKeys removes what the run left in Redis under prefix, the published
// ids named after a stream ("{<prefix>line_allocated}:published:<n>") too.
func deleteKeys(rdb *goredis.Client, prefix string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	iter := rdb.Scan(ctx, 0, "*"+prefix+"*", 1000).Iterator()
	var keys []string
	for iter.Next(ctx) {
		if keys = append(keys, iter.Val()); len(keys) == 1000 {
			rdb.Unlink(ctx, keys...)
			keys = keys[:0]
		}
	}
	if len(keys) > 0 {
		rdb.Unlink(ctx, keys...)
	}
}

type row struct {
	name, result, p50, p99, fail, raw, ratio, target, met string
}

// table is the one table loadgen prints, aligned and valid markdown.
type table struct {
	rows  []row
	notes []string
}

func (t *table) add(r row, errs ...string) {
	t.rows = append(t.rows, r)
	for _, e := range errs {
		if e != "" {
			t.note(fmt.Sprintf("%s: first failure: %s", r.name, e))
		}
	}
}

func (t *table) note(s string) { t.notes = append(t.notes, s) }

func (t *table) print(w io.Writer) {
	header := row{"measurement", "throughput", "p50", "p99", "failures", "raw SQL", "ratio", "target", "met"}
	cells := func(r row) []string {
		return []string{r.name, r.result, r.p50, r.p99, r.fail, r.raw, r.ratio, r.target, r.met}
	}
	widths := make([]int, len(cells(header)))
	for _, r := range append([]row{header}, t.rows...) {
		for i, c := range cells(r) {
			widths[i] = max(widths[i], utf8.RuneCountInString(c))
		}
	}
	line := func(cs []string) {
		var sb strings.Builder
		for i, c := range cs {
			sb.WriteString("| " + c + strings.Repeat(" ", widths[i]-utf8.RuneCountInString(c)) + " ")
		}
		fmt.Fprintln(w, sb.String()+"|")
	}
	line(cells(header))
	sep := make([]string, len(widths))
	for i, n := range widths {
		sep[i] = strings.Repeat("-", n)
	}
	line(sep)
	for _, r := range t.rows {
		line(cells(r))
	}
	for _, n := range t.notes {
		fmt.Fprintln(w, "\n- "+n)
	}
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond)) }

func mark(ok bool) string {
	if ok {
		return "✓"
	}
	return "✗"
}

func thousands(n int) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// runOnly runs the outbox, the history or the tracing phases alone.
func runOnly(ctx context.Context, cfg config, out io.Writer) error {
	var t table
	if cfg.outboxOnly {
		if err := outboxPhases(ctx, cfg, &t); err != nil {
			return fmt.Errorf("outbox: %w", err)
		}
	}
	if cfg.historyOnly || cfg.tracingOnly {
		opts, err := goredis.ParseURL(cfg.redisURL)
		if err != nil {
			return fmt.Errorf("parse -redis: %w", err)
		}
		rdb := goredis.NewClient(opts)
		defer rdb.Close()
		if cfg.historyOnly {
			if err := historyPhases(ctx, cfg, rdb, &t); err != nil {
				return fmt.Errorf("history: %w", err)
			}
		}
		if cfg.tracingOnly {
			if err := tracingPhase(ctx, cfg, rdb, &t); err != nil {
				return fmt.Errorf("tracing: %w", err)
			}
		}
	}
	t.print(out)
	return nil
}
