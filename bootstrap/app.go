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

	"allocation/adapters/embeddedredis"
	"allocation/adapters/metrics"
	"allocation/adapters/notifications"
	"allocation/adapters/postgres"
	"allocation/adapters/redis"
	"allocation/adapters/sqlite"
	"allocation/adapters/sqlstore"
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
	Store      *sqlstore.Store

	cfg      Config
	log      *slog.Logger
	db       *sqlx.DB
	redis    *goredis.Client
	embedded *embeddedredis.Server // nil with REDIS_URL set
	streams  *redis.StreamReader
}

// New opens the database (PostgreSQL, or the SQLite file) and connects to
// Redis (starting the embedded one when REDIS_URL is unset), and builds the
// bus, the API and the consumer. It applies no migrations: call Migrate
// first.
func New(ctx context.Context, cfg Config, log *slog.Logger) (*App, error) {
	db, store, err := OpenStore(ctx, cfg, log)
	if err != nil {
		return nil, err
	}
	rc, embedded, err := openRedis(cfg, log)
	if err != nil {
		store.Close()
		db.Close()
		return nil, err
	}

	m := metrics.New()
	m.WatchDB(db.DB)
	m.WatchEventLog(func(ctx context.Context) (metrics.BacklogStats, error) {
		pending, dead, oldest, err := store.Backlog(ctx)
		return metrics.BacklogStats{Pending: pending, Dead: dead, OldestPending: oldest}, err
	})

	var notifier servicelayer.Notifier = notifications.NewLog(log)
	if cfg.SMTPAddr != "" {
		notifier = notifications.NewSMTP(cfg.SMTPAddr, "")
	}
	publisher := redis.NewPublisher(rc, cfg.RedisPrefix)
	publisher.SetStreamMaxLen(cfg.StreamMaxLen)
	publisher.SetPublishedIDTTL(cfg.PublishedIDTTL)
	bus := servicelayer.NewBus(servicelayer.Dependencies{
		UoW:       store,
		Publisher: publisher,
		Notifier:  notifier,
		Log:       log,
		Observer:  m,
	})
	api := httpapi.New(httpapi.Config{
		Bus:   bus,
		Views: store,
		Checks: []httpapi.Check{
			{Name: databaseName(cfg), Ping: db.PingContext},
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
	app := &App{
		streams:    streams,
		Bus:        bus,
		Handler:    api,
		Dispatcher: servicelayer.NewDispatcher(bus, store, log),
		Store:      store,
		cfg:        cfg,
		log:        log,
		db:         db,
		redis:      rc,
		embedded:   embedded,
	}
	app.Consumer, err = consumer.New(consumer.Config{
		Bus:         bus,
		Owners:      store,
		Source:      sub,
		Log:         log,
		Concurrency: cfg.ConsumerConcurrency,
		Observe:     m.InboundMessage,
	})
	if err != nil {
		app.Close()
		return nil, err
	}
	return app, nil
}

// databaseName names the database in readiness checks and errors.
func databaseName(cfg Config) string {
	if cfg.EmbeddedDatabase() {
		return "sqlite"
	}
	return "postgres"
}

// OpenStore opens the database, the SQLite file when DATABASE_URL is unset
// and PostgreSQL otherwise, and returns it with the store on it; closing
// the store and then the database releases them.
func OpenStore(ctx context.Context, cfg Config, log *slog.Logger) (*sqlx.DB, *sqlstore.Store, error) {
	if cfg.EmbeddedDatabase() {
		db, err := sqlite.Open(ctx, cfg.SQLitePath())
		if err != nil {
			return nil, nil, err
		}
		return db, sqlite.NewStore(db, log), nil
	}
	db, err := postgres.Open(ctx, cfg.DatabaseURL)
	if err != nil {
		return nil, nil, fmt.Errorf("connect to PostgreSQL: %w", err)
	}
	store, err := postgres.NewStore(db, cfg.DatabaseURL, log)
	if err != nil {
		db.Close()
		return nil, nil, err
	}
	return db, store, nil
}

// Migrate brings the database schema up to date: the SQLite file's when
// DATABASE_URL is unset (creating it), PostgreSQL's otherwise.
func Migrate(ctx context.Context, cfg Config) error {
	if cfg.EmbeddedDatabase() {
		db, err := sqlite.Open(ctx, cfg.SQLitePath())
		if err != nil {
			return err
		}
		defer db.Close()
		return sqlite.Migrate(ctx, db)
	}
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

// Close releases the database, the Redis client and the embedded Redis.
func (a *App) Close() {
	if err := a.Store.Close(); err != nil {
		a.log.Warn("closing the store", "error", err)
	}
	if err := a.redis.Close(); err != nil {
		a.log.Warn("closing redis", "error", err)
	}
	if a.embedded != nil {
		a.embedded.Close()
	}
	if err := a.db.Close(); err != nil {
		a.log.Warn("closing the database", "error", err)
	}
}

// openRedis returns a client of REDIS_URL or, when it is unset, starts the
// embedded Redis and returns a client of it with the server.
func openRedis(cfg Config, log *slog.Logger) (*goredis.Client, *embeddedredis.Server, error) {
	rawURL := cfg.RedisURL
	var embedded *embeddedredis.Server
	if cfg.EmbeddedRedis() {
		var err error
		if embedded, err = embeddedredis.Start(cfg.EmbeddedRedisAddr); err != nil {
			return nil, nil, fmt.Errorf("%w (another allocation running? Set EMBEDDED_REDIS_ADDR to another address, or REDIS_URL to use a running Redis)", err)
		}
		rawURL = embedded.URL()
		log.Info("embedded redis listening: it keeps nothing across restarts", "redis_addr", embedded.Addr(), "redis_cli", redisCLI(embedded.Addr()))
	}
	rc, err := newRedisClient(rawURL)
	if err != nil {
		if embedded != nil {
			embedded.Close()
		}
		return nil, nil, err
	}
	return rc, embedded, nil
}

// redisCLI is the redis-cli command line that reaches addr.
func redisCLI(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "redis-cli"
	}
	if ip := net.ParseIP(host); host == "" || host == "localhost" || ip != nil && (ip.IsLoopback() || ip.IsUnspecified()) {
		return "redis-cli -p " + port
	}
	return "redis-cli -h " + host + " -p " + port
}

func newRedisClient(rawURL string) (*goredis.Client, error) {
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
