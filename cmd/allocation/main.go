// Command allocation runs the allocation service.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"allocation/adapters/redis"
	"allocation/adapters/sqlstore"
	"allocation/adapters/tracing"
	"allocation/bootstrap"
	"allocation/entrypoints/cli"
	"allocation/servicelayer"
)

// version and commit are set at build time with -ldflags "-X
// main.version=v1.2.3 -X main.commit=..." (make build does, from git); a
// linker flag can only set a package-level string, hence these globals.
// Without a commit the one the go command recorded is shown, if any.
var version, commit = "dev", ""

const usage = `allocation allocates order lines to batches of stock.

Usage:
  allocation serve [flags]   run the HTTP API and the Redis consumer (applies migrations first)
  allocation migrate         apply database migrations and exit
  allocation migrate status  list the migrations, each applied (when) or pending
  allocation events dead     list the event deliveries parked as dead, with their last error
  allocation events replay ID
                             put the dead deliveries of event ID back in line
  allocation events skip ID  give up the dead deliveries of event ID, so that
                             the ones of its product waiting behind go on
  allocation dead-letters list [-limit N] [-json]
                             list the inbound messages refused, oldest first
  allocation dead-letters retry ID
                             put refused message ID back on its stream or channel
  allocation healthcheck     exit 0 when the service on HTTP_ADDR is ready (GET /readyz), 1 otherwise
  allocation events log [-sku X] [-order ID] [-after C] [-limit N] [-json]
                             print the event log (the history of stock), oldest first
  allocation version         print the version, the commit and the Go version
  allocation help            show this text
  allocation COMMAND -h      show the help of one command

Configuration comes from the environment. With neither DATABASE_URL nor
REDIS_URL set the service needs nothing else: it keeps its data in a SQLite
file and runs a Redis-protocol server of its own (embedded mode).
  DATABASE_URL   PostgreSQL URL, e.g. postgres://postgres@127.0.0.1:5432/allocation?sslmode=disable
                 (unset: the SQLite file DATA_DIR/` + bootstrap.SQLiteFile + `)
  DATA_DIR       directory of the SQLite file, created if missing (default ./` + bootstrap.DefaultDataDir + `)
  REDIS_URL      Redis URL, e.g. redis://127.0.0.1:6379/0
                 (unset: an embedded Redis on EMBEDDED_REDIS_ADDR, empty at every start)
  EMBEDDED_REDIS_ADDR    where the embedded Redis listens (default ` + bootstrap.DefaultEmbeddedRedisAddr + `)
  HTTP_ADDR      API listen address  (default ` + bootstrap.DefaultHTTPAddr + `)
  ADMIN_ADDR     listen address of /debug/pprof/ and /metrics (default unset: no such listener;
                 /metrics is on HTTP_ADDR too)
  REDIS_TLS_CA_FILE      PEM file of the CA a rediss:// REDIS_URL's server is checked against
                         (default: the system's)
  REDIS_TLS_CERT_FILE, REDIS_TLS_KEY_FILE
                         PEM client certificate and key, for a Redis that asks for one
  REDIS_PREFIX   prefix of every Redis channel and key (default empty)
  SMTP_ADDR      host:port of the mail server; unset: notifications go to the log
  LOG_LEVEL      debug, info, warn or error (default info)
  STREAM_MAXLEN  roughly how many entries each outbound stream keeps (default 100000)
  PUBLISHED_ID_TTL       how long a published event's message_id is remembered, so that
                         a redelivery is dropped (default 15m, at least 1m)
  PUBLISHED_ID_LIMIT     in the embedded mode, how many published ids a generation holds
                         as well (default 100000; two generations are kept)
  STREAM_CLAIM_IDLE      how long an inbound stream entry stays with a silent replica
                         before another takes it over (default 30s)
  STREAM_MAX_DELIVERIES  deliveries of an inbound entry before it is dead-lettered (default 5)
  CONSUMER_NAME  this replica's name in the stream consumer group (default host-pid)
  CONSUMER_CONCURRENCY   inbound messages handled at once, each about another product;
                         one product's messages keep their order (default 128, 1 to 256)
  EVENT_RETENTION  how long events are kept once delivered (default 720h; 0 keeps them forever)
  INBOX_RETENTION  how long inbound message ids are remembered (default 168h; 0 keeps them;
                   at least STREAM_MAX_DELIVERIES × 2 × STREAM_CLAIM_IDLE)
  PRUNE_INTERVAL   how often old history is deleted, in batches (default 1m)
`

// subcommandHelp explains the subcommands without flags of their own
// (`allocation migrate -h`); serve's flags explain themselves.
var subcommandHelp = map[string]string{
	"healthcheck": `Usage: allocation healthcheck

Asks the service listening on HTTP_ADDR (default ` + bootstrap.DefaultHTTPAddr + `, reached on the
loopback interface when the host part is empty or unspecified) whether it is
ready (GET /readyz) and exits 0 when it is, 1 when it is not or does not
answer within ` + healthcheckTimeout.String() + `. For container health checks on images without
a shell or curl.
`,
	"migrate": `Usage: allocation migrate
       allocation migrate status

migrate   applies the database migrations that have not run yet and exits.
          Replicas that migrate together apply each migration once.
          ` + "`allocation serve`" + ` migrates at start-up too, unless -skip-migrate.
status    lists every migration with when it was applied, or "pending",
          and changes nothing (a SQLite file that does not exist yet is
          not created).
Both work on PostgreSQL at DATABASE_URL, or on the SQLite file in DATA_DIR
when it is unset.
`,
	"version": `Usage: allocation version

Prints the version (stamped by make build from git describe; "dev" for a
plain go build), the commit, and the Go version the binary was built with.
`,
	"events": `Usage: allocation events dead
       allocation events replay ID
       allocation events skip ID
       allocation events log [flags]   (allocation events log -h for its flags)

A delivery is parked as dead only when its handler refuses it every time
(an event that cannot be encoded, say), never because Redis or the mail
server is unreachable: those are retried for as long as it takes. The later
deliveries of the same product and handler wait behind a dead one, so that
their order is never broken, until an operator decides:

dead       lists the event deliveries parked as dead after their last attempt:
           event id, handler, event, SKU, message id, attempts, when, last error.
replay ID  puts the dead deliveries of event ID back in line with fresh
           attempts; a running service's dispatcher delivers them, then the
           ones that waited behind them, in order.
skip ID    marks the dead deliveries of event ID done without making them;
           the ones that waited behind them go on.
log        prints the event log, the history of stock, oldest first.
All read the database the service uses (DATABASE_URL, or the SQLite file).
`,
}

func isHelp(arg string) bool {
	return arg == "-h" || arg == "-help" || arg == "--help" || arg == "help"
}

// printHelp writes the help of command to w when there is one. Asking for
// help anywhere among a command's arguments (`allocation events replay
// -h`) shows it and does nothing else.
func printHelp(command string, w io.Writer) bool {
	if command == "serve" {
		fs, _, _ := serveFlags(w)
		fs.Usage()
		return true
	}
	help, ok := subcommandHelp[command]
	if ok {
		fmt.Fprint(w, help)
	}
	return ok
}

func main() {
	os.Exit(run(os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

func run(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	if answerHelpOrVersion(args, stdout) {
		return 0
	}
	// A wrong command line fails before anything is opened.
	deadLetterCmd, code, done := parseDeadLetters(args, stdout, stderr)
	if done {
		return code
	}
	// healthcheck needs HTTP_ADDR only: a setting it does not use must not
	// make a healthy container look sick.
	if args[0] == "healthcheck" {
		return runHealthcheck(getenv, stdout, stderr)
	}
	cfg, err := bootstrap.FromEnv(getenv)
	if err != nil {
		fmt.Fprintf(stderr, "configuration: %v\n", err)
		return 2
	}
	cfg.Build = bootstrap.BuildInfo{Version: version, Commit: buildCommit()}
	log := slog.New(tracing.LogHandler{Handler: servicelayer.CauseHandler{Handler: slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: cfg.LogLevel})}})
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return runCommand(ctx, cfg, log, args, deadLetterCmd, getenv, stdout, stderr)
}

// answerHelpOrVersion prints the help or the version when args ask for
// either, and reports whether they did. version and help need no
// configuration: they must answer even where none is set.
func answerHelpOrVersion(args []string, stdout io.Writer) bool {
	// events log has flags of its own, which its help lists.
	ownFlags := len(args) > 1 && args[0] == "events" && args[1] == "log"
	if !ownFlags && slices.ContainsFunc(args[1:], isHelp) && printHelp(args[0], stdout) {
		return true
	}
	if args[0] == "version" || args[0] == "-version" || args[0] == "--version" {
		printVersion(stdout)
		return true
	}
	if isHelp(args[0]) {
		fmt.Fprint(stdout, usage) // asked for: the output, not a diagnostic
		return true
	}
	return false
}

// parseDeadLetters parses the arguments of dead-letters, whose flags
// answer for themselves: done says run should exit with code now (help
// shown, or a wrong command line).
func parseDeadLetters(args []string, stdout, stderr io.Writer) (cmd cli.DeadLetters, code int, done bool) {
	if args[0] != "dead-letters" {
		return cmd, 0, false
	}
	cmd, err := cli.ParseDeadLetters(args[1:], stdout)
	if errors.Is(err, flag.ErrHelp) {
		return cmd, 0, true
	}
	if err != nil {
		fmt.Fprintln(stderr, err)
		return cmd, 2, true
	}
	return cmd, 0, false
}

// runHealthcheck runs `allocation healthcheck` and returns its exit code.
func runHealthcheck(getenv func(string) string, stdout, stderr io.Writer) int {
	if err := healthcheck(getenv("HTTP_ADDR"), stdout); err != nil {
		fmt.Fprintf(stderr, "healthcheck: %v\n", err)
		return 1
	}
	return 0
}

// runCommand runs a command that needs the configuration and returns its
// exit code; a failure is logged, as the service logs.
func runCommand(ctx context.Context, cfg bootstrap.Config, log *slog.Logger, args []string, deadLetterCmd cli.DeadLetters,
	getenv func(string) string, stdout, stderr io.Writer) int {
	var err error
	switch args[0] {
	case "serve":
		err = serve(ctx, cfg, log, args[1:], stderr, getenv)
	case "migrate":
		err = migrate(ctx, cfg, log, args[1:], stdout)
	case "events":
		err = events(ctx, cfg, log, args[1:], stdout)
	case "dead-letters":
		err = deadLetters(ctx, cfg, log, deadLetterCmd, stdout)
	default:
		fmt.Fprintf(stderr, "unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		log.Error("allocation failed", "command", args[0], "error", err)
		return 1
	}
	return 0
}

// serveFlags returns serve's flags, which write their help and errors to w.
func serveFlags(w io.Writer) (*flag.FlagSet, *bootstrap.Parts, *bool) {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(w)
	var parts bootstrap.Parts
	fs.BoolVar(&parts.HTTP, "http", true, "run the HTTP API")
	fs.BoolVar(&parts.Consumer, "consumer", true, "run the Redis consumer")
	fs.BoolVar(&parts.Dispatcher, "dispatcher", true, "run the event dispatcher (delivers what the request path could not)")
	skipMigrate := fs.Bool("skip-migrate", false, "do not apply migrations at start-up")
	fs.Usage = func() {
		fmt.Fprintln(w, "Usage: allocation serve [flags]\n\nRuns the HTTP API and the Redis consumer in one process; flags run a part alone.\n"+
			"It logs \"allocation ready\" once it answers requests, and \"shutting down\" on SIGINT or SIGTERM.")
		fs.PrintDefaults()
	}
	return fs, &parts, skipMigrate
}

func serve(ctx context.Context, cfg bootstrap.Config, log *slog.Logger, args []string, stderr io.Writer, getenv func(string) string) error {
	fs, p, skipMigrate := serveFlags(stderr)
	if err := fs.Parse(args); err != nil {
		return err
	}
	parts := *p
	log.Info("allocation starting", cfg.StartupAttrs()...)
	// The collector's pace follows the live heap (bootstrap.TuneCollector).
	// The embedded mode keeps Go's default: its heap is mostly the
	// in-process Redis's streams, hundreds of MB.
	if !cfg.EmbeddedDatabase() && getenv("GOGC") == "" {
		go bootstrap.TuneCollector(ctx, getenv("GOMEMLIMIT") == "")
	}
	tp, err := startTracing(ctx, getenv, log)
	if err != nil {
		return err
	}
	defer func() {
		if err := tp.Shutdown(context.WithoutCancel(ctx)); err != nil {
			log.Warn("traces not flushed", "error", err)
		}
	}()
	cfg.Tracing = tp
	if !*skipMigrate {
		if err := bootstrap.Migrate(ctx, cfg); err != nil {
			return fmt.Errorf("migrate: %w", err)
		}
	}
	app, err := bootstrap.New(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer app.Close()
	log.Info("allocation serving", "http", parts.HTTP, "consumer", parts.Consumer, "dispatcher", parts.Dispatcher,
		"redis_prefix", cfg.RedisPrefix, "notifications", notificationsMode(cfg))
	running := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			log.Info("shutting down: finishing the requests and messages in hand", "reason", context.Cause(ctx).Error())
		case <-running:
		}
	}()
	err = app.Run(ctx, parts)
	close(running)
	log.Info("allocation stopped")
	return err
}

// startTracing sets up tracing from the OTEL_* variables and says where
// spans go; with no OTLP endpoint it is off and says so.
func startTracing(ctx context.Context, getenv func(string) string, log *slog.Logger) (*tracing.Provider, error) {
	tp, err := tracing.FromEnv(ctx, getenv, version)
	if err != nil {
		return nil, fmt.Errorf("tracing: %w", err)
	}
	if !tp.Enabled {
		log.Info("tracing off: no OTEL_EXPORTER_OTLP_ENDPOINT, nothing is exported")
		return tp, nil
	}
	tracing.LogErrors(log)
	log.Info("tracing on", "otlp_endpoint", tp.Endpoint, "otlp_protocol", tp.Protocol)
	return tp, nil
}

// migrate applies the migrations, or with `status` lists them.
func migrate(ctx context.Context, cfg bootstrap.Config, log *slog.Logger, args []string, stdout io.Writer) error {
	switch {
	case len(args) == 0:
		if err := bootstrap.Migrate(ctx, cfg); err != nil {
			return err
		}
		log.Info("migrations applied")
		return nil
	case len(args) == 1 && args[0] == "status":
		states, err := bootstrap.MigrationStatus(ctx, cfg)
		if err != nil {
			return err
		}
		w := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "VERSION\tMIGRATION\tAPPLIED AT")
		pending := 0
		for _, m := range states {
			applied := "pending"
			if m.Applied() {
				applied = m.AppliedAt.Format(time.RFC3339)
			} else {
				pending++
			}
			fmt.Fprintf(w, "%d\t%s\t%s\n", m.Version, m.Name, applied)
		}
		if err := w.Flush(); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s: %d of %d migrations applied, %d pending\n", databaseName(cfg), len(states)-pending, len(states), pending)
		return nil
	}
	return fmt.Errorf("migrate: unknown arguments %q: want nothing or `status`", args)
}

// printVersion writes the version, and the commit and Go version the binary
// was built from. The commit is the one stamped with -ldflags or else the
// one the build recorded (go build without -buildvcs=false, in a git work
// tree).
func printVersion(w io.Writer) {
	fmt.Fprintf(w, "allocation %s\ncommit %s\n%s\n", version, buildCommit(), runtime.Version())
}

// buildCommit is the commit the binary was built from, with " (modified)" when
// the work tree had changes, or "unknown".
func buildCommit() string {
	if commit != "" {
		return commit
	}
	recorded, modified := "unknown", ""
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, s := range info.Settings {
			switch {
			case s.Key == "vcs.revision":
				recorded = s.Value
			case s.Key == "vcs.modified" && s.Value == "true":
				modified = " (modified)"
			}
		}
	}
	return recorded + modified
}

// healthcheckTimeout bounds the whole check, below the usual container
// health check timeouts.
const healthcheckTimeout = 3 * time.Second

// healthcheck asks the service on httpAddr for GET /readyz and returns nil
// when it answers 200.
func healthcheck(httpAddr string, stdout io.Writer) error {
	if httpAddr == "" {
		httpAddr = bootstrap.DefaultHTTPAddr
	}
	host, port, err := net.SplitHostPort(httpAddr)
	if err != nil {
		return fmt.Errorf("HTTP_ADDR %q: %w", httpAddr, err)
	}
	// A server listening on every interface is reached on the loopback one.
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
		if ip != nil && ip.To4() == nil {
			host = "::1"
		}
	}
	url := "http://" + net.JoinHostPort(host, port) + "/readyz"
	client := &http.Client{Timeout: healthcheckTimeout}
	resp, err := client.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s answered %d: %s", url, resp.StatusCode, strings.TrimSpace(string(body)))
	}
	fmt.Fprintf(stdout, "%s: ready\n", url)
	return nil
}

// databaseName says which database a command works on, without its password.
func databaseName(cfg bootstrap.Config) string {
	if cfg.EmbeddedDatabase() {
		return "sqlite " + cfg.SQLitePath()
	}
	if u, err := url.Parse(cfg.DatabaseURL); err == nil {
		return "postgres " + u.Redacted()
	}
	return "postgres"
}

func notificationsMode(cfg bootstrap.Config) string {
	if cfg.SMTPAddr == "" {
		return "log"
	}
	return "smtp " + cfg.SMTPAddr
}

// events inspects and repairs the event log.
func events(ctx context.Context, cfg bootstrap.Config, log *slog.Logger, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New("events: want `dead`, `replay ID`, `skip ID` or `log`")
	}
	if args[0] == "log" && len(args) > 1 && isHelp(args[1]) {
		// Help needs no database: the flags answer before it is read.
		return eventsLog(ctx, nil, args[1:], stdout, stdout)
	}
	db, eventLog, err := bootstrap.OpenStore(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer db.Close()
	defer eventLog.Close()
	switch {
	case args[0] == "dead" && len(args) == 1:
		return eventsDead(ctx, eventLog, stdout)
	case args[0] == "log":
		return eventsLog(ctx, eventLog, args[1:], stdout, os.Stderr)
	case args[0] == "replay" && len(args) == 2:
		return repairDead(ctx, "replay", args[1], eventLog.Replay, stdout, "deliveries back in line")
	case args[0] == "skip" && len(args) == 2:
		return repairDead(ctx, "skip", args[1], eventLog.Skip, stdout, "deliveries skipped; what waited behind them goes on")
	}
	return fmt.Errorf("events: unknown arguments %q: want `dead`, `replay ID` or `skip ID`", args)
}

// eventsDead lists the deliveries parked as dead, as a table.
func eventsDead(ctx context.Context, eventLog *sqlstore.Store, stdout io.Writer) error {
	dead, err := eventLog.Dead(ctx)
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "EVENT\tHANDLER\tNAME\tSKU\tMESSAGE ID\tATTEMPTS\tPARKED AT\tLAST ERROR")
	for _, d := range dead {
		fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", d.LogID, d.Handler, d.Event.Name(), d.Event.ProductSKU(),
			d.MessageID, d.Attempts, d.ParkedAt.UTC().Format(time.RFC3339), d.LastError)
	}
	return w.Flush()
}

// repairDead runs `events replay ID` or `events skip ID` (named by verb):
// repair acts on the dead deliveries of event arg, and what it did is
// reported as their count and done.
func repairDead(ctx context.Context, verb, arg string, repair func(context.Context, int64) (int, error), stdout io.Writer, done string) error {
	id, err := strconv.ParseInt(arg, 10, 64)
	if err != nil {
		return fmt.Errorf("events %s: %q is not an event id", verb, arg)
	}
	n, err := repair(ctx, id)
	if err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("event %d has no dead delivery", id)
	}
	fmt.Fprintf(stdout, "event %d: %d %s\n", id, n, done)
	return nil
}

// deadLetters lists or retries the inbound messages the service refused.
func deadLetters(ctx context.Context, cfg bootstrap.Config, log *slog.Logger, cmd cli.DeadLetters, stdout io.Writer) error {
	db, store, err := bootstrap.OpenStore(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer db.Close()
	defer store.Close()
	var redriver servicelayer.Redriver
	if cmd.Retry {
		rc, err := bootstrap.RedisClient(ctx, cfg)
		if err != nil {
			return err
		}
		defer rc.Close()
		redriver = redis.NewRedriver(rc, cfg.RedisPrefix)
	}
	return cmd.Run(ctx, store, redriver, stdout)
}
