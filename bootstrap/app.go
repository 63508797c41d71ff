package bootstrap

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/jmoiron/sqlx"
	goredis "github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"

	"allocation/adapters/metrics"
	"allocation/adapters/notifications"
	"allocation/adapters/postgres"
	"allocation/adapters/redis"
	"allocation/entrypoints/consumer"
	"allocation/entrypoints/httpapi"
	"allocation/servicelayer"
)

// Timeouts of the HTTP server: a slow or stuck client cannot hold a
// connection, and shutdown waits at most ShutdownTimeout for requests in flight.
const (
	ReadHeaderTimeout = 5 * time.Second
	ReadTimeout       = 10 * time.Second
	WriteTimeout      = 30 * time.Second
	IdleTimeout       = 2 * time.Minute
	ShutdownTimeout   = 15 * time.Second
)

// App is the service, wired. Close releases its connections.
type App struct {
	Bus        *servicelayer.Bus
	Handler    http.Handler
	Consumer   *consumer.Consumer
	Dispatcher *servicelayer.Dispatcher
	Events     *postgres.EventLog

	cfg     Config
	log     *slog.Logger
	db      *sqlx.DB
	redis   *goredis.Client
	streams *redis.StreamReader
}

// New connects to PostgreSQL and Redis and builds the bus, the API and the
// consumer. It applies no migrations: call Migrate first.
func New(ctx context.Context, cfg Config, log *slog.Logger) (*App, error) {
	db, err := postgres.Open(ctx, cfg.DatabaseURL)
	if err != nil {
		return nil, fmt.Errorf("connect to PostgreSQL: %w", err)
	}
	rc, err := openRedis(cfg.RedisURL)
	if err != nil {
		db.Close()
		return nil, err
	}
	events, err := postgres.NewEventLog(db, cfg.DatabaseURL, log)
	if err != nil {
		rc.Close()
		db.Close()
		return nil, err
	}

	m := metrics.New()
	m.WatchDB(db.DB)
	m.WatchEventLog(func(ctx context.Context) (metrics.BacklogStats, error) {
		pending, dead, oldest, err := events.Backlog(ctx)
		return metrics.BacklogStats{Pending: pending, Dead: dead, OldestPending: oldest}, err
	})

	var notifier servicelayer.Notifier = notifications.NewLog(log)
	if cfg.SMTPAddr != "" {
		notifier = notifications.NewSMTP(cfg.SMTPAddr, "")
	}
	publisher := redis.NewPublisher(rc, cfg.RedisPrefix)
	publisher.SetStreamMaxLen(cfg.StreamMaxLen)
	bus := servicelayer.NewBus(servicelayer.Dependencies{
		UoW:       postgres.NewUnitOfWork(db, log),
		Publisher: publisher,
		Notifier:  notifier,
		Log:       log,
		Observer:  m,
	})
	views := postgres.NewViews(db)
	api := httpapi.New(httpapi.Config{
		Bus:   bus,
		Views: views,
		Checks: []httpapi.Check{
			{Name: "postgres", Ping: db.PingContext},
			{Name: "redis", Ping: func(ctx context.Context) error { return rc.Ping(ctx).Err() }},
		},
		Log:     log,
		Observe: m.HTTPRequest,
		Metrics: m.Handler(),
	})
	sub := redis.NewSubscriber(rc, cfg.RedisPrefix, log)
	streams := redis.NewStreamReader(rc, cfg.RedisPrefix, redis.StreamOptions{
		Consumer:      cfg.ConsumerName,
		ClaimIdle:     cfg.StreamClaimIdle,
		MaxDeliveries: cfg.StreamMaxDeliveries,
	}, log)
	inbound, err := consumer.New(consumer.Config{
		Bus:         bus,
		Owners:      views,
		Source:      sub,
		Log:         log,
		Concurrency: cfg.ConsumerConcurrency,
		Observe:     m.InboundMessage,
	})
	if err != nil {
		_ = events.Close()
		rc.Close()
		db.Close()
		return nil, err
	}
	return &App{
		streams:    streams,
		Bus:        bus,
		Handler:    api,
		Consumer:   inbound,
		Dispatcher: servicelayer.NewDispatcher(bus, events, log),
		Events:     events,
		cfg:        cfg,
		log:        log,
		db:         db,
		redis:      rc,
	}, nil
}

// Migrate brings the database schema up to date.
func Migrate(ctx context.Context, cfg Config) error {
	db, err := postgres.Open(ctx, cfg.DatabaseURL)
	if err != nil {
		return fmt.Errorf("connect to PostgreSQL: %w", err)
	}
	defer db.Close()
	return postgres.Migrate(ctx, db)
}

// Parts says which parts of the service Run runs.
type Parts struct {
	HTTP       bool
	Consumer   bool
	Dispatcher bool
}

// Run serves until ctx is cancelled, then shuts down gracefully: the API stops
// accepting connections and finishes requests in flight; the consumer finishes
// the messages in hand and acknowledges the settled ones.
func (a *App) Run(ctx context.Context, parts Parts) error {
	g, ctx := errgroup.WithContext(ctx)
	if parts.HTTP {
		srv := &http.Server{
			Addr:              a.cfg.HTTPAddr,
			Handler:           a.Handler,
			ReadHeaderTimeout: ReadHeaderTimeout,
			ReadTimeout:       ReadTimeout,
			WriteTimeout:      WriteTimeout,
			IdleTimeout:       IdleTimeout,
			ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelWarn),
		}
		ln, err := net.Listen("tcp", a.cfg.HTTPAddr)
		if err != nil {
			return fmt.Errorf("listen on %s: %w", a.cfg.HTTPAddr, err)
		}
		a.log.Info("http api listening", "addr", ln.Addr().String())
		g.Go(func() error {
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("http server: %w", err)
			}
			return nil
		})
		g.Go(func() error {
			<-ctx.Done()
			shutdownCtx, cancel := context.WithTimeout(context.Background(), ShutdownTimeout)
			defer cancel()
			if err := srv.Shutdown(shutdownCtx); err != nil {
				return fmt.Errorf("http shutdown: %w", err)
			}
			return nil
		})
	}
	if parts.Consumer {
		a.log.Info("redis consumer starting", "prefix", a.cfg.RedisPrefix)
		g.Go(func() error { return a.Consumer.Run(ctx) })
		a.log.Info("redis stream consumer starting", "consumer", a.cfg.ConsumerName)
		g.Go(func() error { return a.Consumer.RunStreams(ctx, a.streams) })
	}
	if parts.Dispatcher {
		a.log.Info("event dispatcher starting")
		g.Go(func() error { return a.Dispatcher.Run(ctx) })
	}
	return g.Wait()
}

// Close releases the database pool and the Redis client.
func (a *App) Close() {
	if err := a.Events.Close(); err != nil {
		a.log.Warn("closing event log listener", "error", err)
	}
	if err := a.redis.Close(); err != nil {
		a.log.Warn("closing redis", "error", err)
	}
	if err := a.db.Close(); err != nil {
		a.log.Warn("closing postgres", "error", err)
	}
}

func openRedis(rawURL string) (*goredis.Client, error) {
	opts, err := goredis.ParseURL(rawURL)
	if err != nil {
		return nil, fmt.Errorf("REDIS_URL: %w", err)
	}
	// Fail fast while Redis is down: the event log keeps what could not be
	// published and the dispatcher retries it, so a request must not wait.
	opts.MaxRetries = 1
	opts.DialTimeout = 2 * time.Second
	opts.ReadTimeout = 2 * time.Second
	opts.WriteTimeout = 2 * time.Second
	return goredis.NewClient(opts), nil
}
