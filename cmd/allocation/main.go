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
	"syscall"

	"allocation/bootstrap"
)

const usage = `allocation allocates order lines to batches of stock.

Usage:
  allocation serve [flags]   run the HTTP API and the Redis consumer (applies migrations first)
  allocation migrate         apply database migrations and exit
  allocation help            show this text

Configuration comes from the environment:
  DATABASE_URL   PostgreSQL URL      (default ` + bootstrap.DefaultDatabaseURL + `)
  REDIS_URL      Redis URL           (default ` + bootstrap.DefaultRedisURL + `)
  HTTP_ADDR      API listen address  (default ` + bootstrap.DefaultHTTPAddr + `)
  REDIS_PREFIX   prefix of every Redis channel and key (default empty)
  SMTP_ADDR      host:port of the mail server; unset: notifications go to the log
  LOG_LEVEL      debug, info, warn or error (default info)
`

func main() {
	os.Exit(run(os.Args[1:], os.Getenv, os.Stderr))
}

func run(args []string, getenv func(string) string, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cfg, err := bootstrap.FromEnv(getenv)
	if err != nil {
		fmt.Fprintf(stderr, "configuration: %v\n", err)
		return 2
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))
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
	skipMigrate := fs.Bool("skip-migrate", false, "do not apply migrations at start-up")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: allocation serve [flags]\n\nRuns the HTTP API and the Redis consumer in one process; flags run a part alone.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
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
	log.Info("allocation serving", "http", parts.HTTP, "consumer", parts.Consumer,
		"redis_prefix", cfg.RedisPrefix, "notifications", notificationsMode(cfg))
	err = app.Run(ctx, parts)
	log.Info("allocation stopped")
	return err
}

func notificationsMode(cfg bootstrap.Config) string {
	if cfg.SMTPAddr == "" {
		return "log"
	}
	return "smtp " + cfg.SMTPAddr
}
