// Command allocation runs the allocation service.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strconv"
	"syscall"
	"text/tabwriter"
	"time"

	"allocation/bootstrap"
	"allocation/servicelayer"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3"; a
// linker flag can only set a package-level string, hence this one global.
var version = "dev"

const usage = `allocation allocates order lines to batches of stock.

Usage:
  allocation serve [flags]   run the HTTP API and the Redis consumer (applies migrations first)
  allocation migrate         apply database migrations and exit
  allocation events dead     list the event deliveries parked as dead, with their last error
  allocation events replay ID
                             put the dead deliveries of event ID back in line
  allocation version         print the version, the commit and the Go version
  allocation help            show this text

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
  REDIS_PREFIX   prefix of every Redis channel and key (default empty)
  SMTP_ADDR      host:port of the mail server; unset: notifications go to the log
  LOG_LEVEL      debug, info, warn or error (default info)
  STREAM_MAXLEN  roughly how many entries each outbound stream keeps (default 100000)
  PUBLISHED_ID_TTL       how long a published event's message_id is remembered, so that
                         a redelivery is dropped (default 15m, at least 1m)
  STREAM_CLAIM_IDLE      how long an inbound stream entry stays with a silent replica
                         before another takes it over (default 30s)
  STREAM_MAX_DELIVERIES  deliveries of an inbound entry before it is dead-lettered (default 5)
  CONSUMER_NAME  this replica's name in the stream consumer group (default host-pid)
  CONSUMER_CONCURRENCY   inbound messages handled at once, each about another product;
                         one product's messages keep their order (default 16, 1 to 256)
`

// subcommandHelp explains the subcommands without flags of their own
// (`allocation migrate -h`); serve's flags explain themselves.
var subcommandHelp = map[string]string{
	"migrate": `Usage: allocation migrate

Applies the database migrations that have not run yet and exits: PostgreSQL
at DATABASE_URL, or the SQLite file in DATA_DIR when it is unset. Replicas
that migrate together apply each migration once. ` + "`allocation serve`" + ` migrates
at start-up too, unless -skip-migrate.
`,
	"events": `Usage: allocation events dead
       allocation events replay ID

dead       lists the event deliveries parked as dead after their last attempt:
           event id, handler, event, SKU, message id, attempts, when, last error.
replay ID  puts the dead deliveries of event ID back in line with fresh
           attempts; a running service's dispatcher delivers them.
Both read the database the service uses (DATABASE_URL, or the SQLite file).
`,
}

func isHelp(arg string) bool {
	return arg == "-h" || arg == "-help" || arg == "--help" || arg == "help"
}

func main() {
	os.Exit(run(os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

func run(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	// version and help need no configuration: they must answer even where
	// none is set.
	if args[0] == "version" || args[0] == "-version" || args[0] == "--version" {
		printVersion(stdout)
		return 0
	}
	if help, ok := subcommandHelp[args[0]]; ok && len(args) > 1 && isHelp(args[1]) {
		fmt.Fprint(stdout, help)
		return 0
	}
	cfg, err := bootstrap.FromEnv(getenv)
	if err != nil {
		fmt.Fprintf(stderr, "configuration: %v\n", err)
		return 2
	}
	log := slog.New(servicelayer.CauseHandler{Handler: slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: cfg.LogLevel})})
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	switch args[0] {
	case "serve":
		err = serve(ctx, cfg, log, args[1:], stderr)
	case "migrate":
		err = bootstrap.Migrate(ctx, cfg)
		if err == nil {
			log.Info("migrations applied")
		}
	case "events":
		err = events(ctx, cfg, log, args[1:], stdout)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stderr, usage)
		return 0
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

func serve(ctx context.Context, cfg bootstrap.Config, log *slog.Logger, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var parts bootstrap.Parts
	fs.BoolVar(&parts.HTTP, "http", true, "run the HTTP API")
	fs.BoolVar(&parts.Consumer, "consumer", true, "run the Redis consumer")
	fs.BoolVar(&parts.Dispatcher, "dispatcher", true, "run the event dispatcher (delivers what the request path could not)")
	skipMigrate := fs.Bool("skip-migrate", false, "do not apply migrations at start-up")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: allocation serve [flags]\n\nRuns the HTTP API and the Redis consumer in one process; flags run a part alone.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	log.Info("allocation starting", cfg.StartupAttrs()...)
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
	err = app.Run(ctx, parts)
	log.Info("allocation stopped")
	return err
}

// printVersion writes the version, and the commit and Go version the binary
// was built from. The commit is known when the build recorded VCS details
// (go build without -buildvcs=false, in a git work tree).
func printVersion(w io.Writer) {
	commit, modified := "unknown", ""
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, s := range info.Settings {
			switch {
			case s.Key == "vcs.revision":
				commit = s.Value
			case s.Key == "vcs.modified" && s.Value == "true":
				modified = " (modified)"
			}
		}
	}
	fmt.Fprintf(w, "allocation %s\ncommit %s%s\n%s\n", version, commit, modified, runtime.Version())
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
		return errors.New("events: want `dead` or `replay ID`")
	}
	db, eventLog, err := bootstrap.OpenStore(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer db.Close()
	defer eventLog.Close()
	switch {
	case args[0] == "dead" && len(args) == 1:
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
	case args[0] == "replay" && len(args) == 2:
		id, err := strconv.ParseInt(args[1], 10, 64)
		if err != nil {
			return fmt.Errorf("events replay: %q is not an event id", args[1])
		}
		n, err := eventLog.Replay(ctx, id)
		if err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("event %d has no dead delivery", id)
		}
		fmt.Fprintf(stdout, "event %d: %d deliveries back in line\n", id, n)
		return nil
	}
	return fmt.Errorf("events: unknown arguments %q: want `dead` or `replay ID`", args)
}
