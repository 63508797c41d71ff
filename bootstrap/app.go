package bootstrap

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
	goredis "github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"

	"allocation/adapters/embeddedredis"
	"allocation/adapters/metrics"
	"allocation/adapters/notifications"
	"allocation/adapters/postgres"
	"allocation/adapters/redis"
	"allocation/adapters/sqlite"
	"allocation/adapters/sqlstore"
	"allocation/adapters/tracing"
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
	redis    goredis.UniversalClient
	embedded *embeddedredis.Server // nil unless the embedded Redis runs
	streams  *redis.StreamReader
	metrics  *metrics.Metrics
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
	m := newMetrics(cfg, db, store)
	notifier := newNotifier(cfg, log)
	tp := cfg.tracer()
	if cfg.tracing() {
		if err := tracing.Redis(rc, tp); err != nil {
			rc.Close()
			if embedded != nil {
				embedded.Close() // else it keeps serving after a failed start
			}
			store.Close()
			db.Close()
			return nil, err
		}
	}
	bus := servicelayer.NewBus(servicelayer.Dependencies{
		UoW:            store,
		Publisher:      newPublisher(cfg, rc),
		Notifier:       notifier,
		Log:            log,
		Observer:       m,
		TracerProvider: tp,
	})
	app := &App{
		Bus:        bus,
		Handler:    newAPI(cfg, log, bus, store, db, rc, m, tp),
		Dispatcher: servicelayer.NewDispatcher(bus, store, log),
		Store:      store,
		cfg:        cfg,
		log:        log,
		db:         db,
		redis:      rc,
		embedded:   embedded,
		metrics:    m,
	}
	if err := app.wireConsumer(tp); err != nil {
		app.Close()
		return nil, err
	}
	return app, nil
}

// newMetrics makes the service's metrics, the database pool's and the
// event log's backlog among them.
func newMetrics(cfg Config, db *sqlx.DB, store *sqlstore.Store) *metrics.Metrics {
	m := metrics.New()
	m.SetBuildInfo(cfg.Build.Version, cfg.Build.Commit)
	m.WatchDB(db.DB)
	m.WatchGroups(store.Coalesced)
	m.WatchEventLog(func(ctx context.Context) (metrics.BacklogStats, error) {
		b, err := store.Backlog(ctx)
		return metrics.BacklogStats{Pending: b.Pending, Dead: b.Dead, Blocked: b.Blocked, OldestPending: b.Oldest}, err
	})
	return m
}

// newNotifier sends the notifications by mail when SMTP_ADDR is set, and
// only logs them otherwise.
func newNotifier(cfg Config, log *slog.Logger) servicelayer.Notifier {
	if cfg.SMTPAddr != "" {
		return notifications.NewSMTP(cfg.SMTPAddr, "")
	}
	return notifications.NewLog(log)
}

// newPublisher publishes the outbound events to the Redis streams.
func newPublisher(cfg Config, rc goredis.UniversalClient) *redis.Publisher {
	publisher := redis.NewPublisher(rc, cfg.RedisPrefix)
	publisher.SetStreamMaxLen(cfg.StreamMaxLen)
	publisher.SetPublishedIDTTL(cfg.PublishedIDTTL)
	if cfg.EmbeddedRedis() {
		// The embedded server holds the ids in this process's memory, and
		// this process is its only publisher.
		publisher.SetPublishedIDLimit(cfg.PublishedIDLimit)
	}
	return publisher
}

// newAPI is the HTTP API, its readiness checking the database and Redis.
func newAPI(cfg Config, log *slog.Logger, bus *servicelayer.Bus, store *sqlstore.Store, db *sqlx.DB, rc goredis.UniversalClient,
	m *metrics.Metrics, tp trace.TracerProvider) http.Handler {
	return httpapi.New(httpapi.Config{
		Bus:   bus,
		Views: store,
		Checks: []httpapi.Check{
			{Name: databaseName(cfg), Ping: db.PingContext},
			{Name: "redis", Ping: func(ctx context.Context) error { return rc.Ping(ctx).Err() }},
		},
		Log:     log,
		Observe: m.HTTPRequest,
		Metrics: m.Handler(),
		Tracing: tracing.HTTP(tp),
	})
}

// wireConsumer builds the consumer of the pub/sub channels and the reader
// of the inbound streams, which sets aside through the consumer.
func (a *App) wireConsumer(tp trace.TracerProvider) error {
	sub := redis.NewSubscriber(a.redis, a.cfg.RedisPrefix, a.log)
	sub.OnTrimmed(a.metrics.DeadLetterListTrimmed)
	var err error
	a.Consumer, err = consumer.New(consumer.Config{
		Bus:            a.Bus,
		Owners:         a.Store,
		Source:         sub,
		DeadLetters:    countedDeadLetters{DeadLetterRecorder: a.Store, recorded: a.metrics.DeadLetterRecorded},
		Log:            a.log,
		Concurrency:    a.cfg.ConsumerConcurrency,
		Observe:        a.metrics.InboundMessage,
		TracerProvider: tp,
	})
	if err != nil {
		return err
	}
	a.streams = redis.NewStreamReader(a.redis, a.cfg.RedisPrefix, redis.StreamOptions{
		Consumer:      a.cfg.ConsumerName,
		ClaimIdle:     a.cfg.StreamClaimIdle,
		MaxDeliveries: a.cfg.StreamMaxDeliveries,
		// Entries the reader refuses itself are recorded like the others.
		SetAside: a.Consumer.SetAsideEntry,
	}, a.log)
	return nil
}

// countedDeadLetters counts the dead letters recorded, by channel.
type countedDeadLetters struct {
	servicelayer.DeadLetterRecorder
	recorded func(channel string)
}

func (c countedDeadLetters) RecordDeadLetter(ctx context.Context, l servicelayer.DeadLetter) (int64, error) {
	id, err := c.DeadLetterRecorder.RecordDeadLetter(ctx, l)
	if err == nil {
		c.recorded(l.Channel)
	}
	return id, err
}

// tracing says whether spans are recorded: only then are Redis and SQL
// instrumented, which would cost without a span to record.
func (c Config) tracing() bool { return c.Tracing != nil && c.Tracing.Enabled }

// tracer is the tracer provider: the no-op one when tracing is off.
func (c Config) tracer() trace.TracerProvider {
	if c.Tracing == nil {
		return tracing.Disabled()
	}
	return c.Tracing
}

// databaseName names the database in readiness checks and errors.
func databaseName(cfg Config) string {
	if cfg.EmbeddedDatabase() {
		return "sqlite"
	}
	return "postgres"
}

// StoreOptions builds a store for the bus's handlers: a delivery of each
// event for each of its handlers, and a dispatcher's claim on a delivery
// lasting a second longer than the dispatcher lets it run.
func StoreOptions(log *slog.Logger) sqlstore.Options {
	return sqlstore.Options{Log: log, Routes: servicelayer.EventRoutes(), ClaimLease: servicelayer.DeliveryTimeout + time.Second}
}

// OpenStore opens the database, the SQLite file when DATABASE_URL is unset
// and PostgreSQL otherwise, and returns it with the store on it; closing
// the store and then the database releases them.
func OpenStore(ctx context.Context, cfg Config, log *slog.Logger) (*sqlx.DB, *sqlstore.Store, error) {
	driver := "postgres"
	if cfg.EmbeddedDatabase() {
		driver = "sqlite"
	}
	if cfg.tracing() {
		var err error
		if driver, err = tracing.SQLDriver(driver, cfg.tracer()); err != nil {
			return nil, nil, err
		}
	}
	if cfg.EmbeddedDatabase() {
		db, err := sqlite.OpenDriver(ctx, driver, cfg.SQLitePath())
		if err != nil {
			return nil, nil, err
		}
		return db, sqlite.NewStore(db, StoreOptions(log)), nil
	}
	db, err := postgres.OpenDriver(ctx, driver, cfg.DatabaseURL)
	if err != nil {
		return nil, nil, fmt.Errorf("connect to PostgreSQL: %w", err)
	}
	store, err := postgres.NewStore(db, cfg.DatabaseURL, StoreOptions(log))
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

// MigrationStatus lists the migrations, oldest first, with when the
// database applied each: the SQLite file's when DATABASE_URL is unset (a
// file that does not exist yet is not created: every migration is
// pending), PostgreSQL's otherwise.
func MigrationStatus(ctx context.Context, cfg Config) ([]sqlstore.MigrationState, error) {
	if cfg.EmbeddedDatabase() {
		if _, err := os.Stat(cfg.SQLitePath()); errors.Is(err, fs.ErrNotExist) {
			return sqlite.MigrationStatus(ctx, nil)
		}
		db, err := sqlite.Open(ctx, cfg.SQLitePath())
		if err != nil {
			return nil, err
		}
		defer db.Close()
		return sqlite.MigrationStatus(ctx, db)
	}
	db, err := postgres.Open(ctx, cfg.DatabaseURL)
	if err != nil {
		return nil, fmt.Errorf("connect to PostgreSQL: %w", err)
	}
	defer db.Close()
	return postgres.MigrationStatus(ctx, db)
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
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, ctx := errgroup.WithContext(ctx)
	// A listener that cannot open stops the ones already serving.
	failed := func(err error) error {
		cancel()
		_ = g.Wait()
		return err
	}
	if parts.HTTP {
		addr, err := a.serveHTTP(ctx, g, "http api", a.cfg.HTTPAddr, a.Handler, WriteTimeout)
		if err != nil {
			return failed(err)
		}
		g.Go(func() error { a.announceReady(ctx, addr); return nil })
	}
	if a.cfg.AdminAddr != "" {
		// A CPU profile takes 30 seconds by default: no write timeout.
		if _, err := a.serveHTTP(ctx, g, "admin", a.cfg.AdminAddr, a.AdminHandler(), 0); err != nil {
			return failed(err)
		}
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
		g.Go(func() error {
			lost := func(context.Context) { a.Bus.Pause(servicelayer.PublishHandler) }
			redis.Watch(ctx, a.redis, a.log, lost, a.Dispatcher.Resume)
			return nil
		})
	}
	g.Go(func() error { return a.prune(ctx) })
	return g.Wait()
}

// serveHTTP listens on addr and serves h in g until ctx ends, then shuts
// the server down gracefully. name says which listener in logs and errors.
func (a *App) serveHTTP(ctx context.Context, g *errgroup.Group, name, addr string, h http.Handler, writeTimeout time.Duration) (net.Addr, error) {
	srv := &http.Server{
		Addr:              addr,
		Handler:           h,
		ReadHeaderTimeout: ReadHeaderTimeout,
		ReadTimeout:       ReadTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       IdleTimeout,
		ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelWarn),
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s: listen on %s: %w", name, addr, err)
	}
	a.log.Info(name+" listening", "addr", ln.Addr().String())
	g.Go(func() error {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("%s server: %w", name, err)
		}
		return nil
	})
	g.Go(func() error {
		<-ctx.Done()
		shutdownCtx, cancel := context.WithTimeout(context.Background(), ShutdownTimeout)
		defer cancel()
		if err := srv.Shutdown(shutdownCtx); err != nil {
			return fmt.Errorf("%s shutdown: %w", name, err)
		}
		return nil
	})
	return ln.Addr(), nil
}

// AdminHandler serves what ADMIN_ADDR offers: the runtime profiles of
// net/http/pprof under /debug/pprof/ and the metrics on /metrics.
func (a *App) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.Handle("/metrics", a.metrics.Handler())
	return mux
}

// prune keeps the history within its retention whatever parts run: replicas
// take turns (PostgreSQL advisory lock), so each may run it.
func (a *App) prune(ctx context.Context) error {
	r := sqlstore.Retention{Events: a.cfg.EventRetention, Inbox: a.cfg.InboxRetention}
	interval := a.cfg.PruneInterval
	if interval <= 0 { // a Config made by hand, not by FromEnv
		interval = DefaultPruneInterval
	}
	a.log.Info("history pruner starting", "event_retention", r.Events.String(), "inbox_retention", r.Inbox.String(),
		"interval", interval.String())
	return a.Store.RunPruner(ctx, r, interval, func(stats []sqlstore.TableStats) {
		tables := make([]metrics.TableRetention, len(stats))
		for i, t := range stats {
			tables[i] = metrics.TableRetention(t)
			if t.Pruned > 0 {
				a.log.Debug("history pruned", "table", t.Table, "pruned", t.Pruned, "kept", t.Rows)
			}
		}
		a.metrics.Pruned(tables)
	})
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

// openRedis returns a client of the Redis cfg names (REDIS_URL, a Cluster
// or Sentinel) or, when none is set, starts the embedded Redis and returns
// a client of it with the server.
func openRedis(cfg Config, log *slog.Logger) (goredis.UniversalClient, *embeddedredis.Server, error) {
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
	// go-redis logs the odd event of its own (a bad connection dropped, a
	// duration truncated) through a process-wide logger: send it to the
	// service's JSON log rather than as plain text to stderr.
	goredis.SetLogger(redis.NewClientLogger(log))
	var rc goredis.UniversalClient
	var err error
	if embedded != nil {
		rc, err = newRedisClient(Config{}, rawURL)
	} else {
		rc, err = newRedisClient(cfg, rawURL)
	}
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

// RedisClient connects to the Redis the service uses, for a command that
// runs beside it: REDIS_URL, the Cluster or Sentinel's master, or, when none
// is set, the running service's embedded Redis at EMBEDDED_REDIS_ADDR. It
// fails when that does not answer.
func RedisClient(ctx context.Context, cfg Config) (goredis.UniversalClient, error) {
	rawURL := cfg.RedisURL
	if cfg.EmbeddedRedis() {
		rawURL = "redis://" + cfg.EmbeddedRedisAddr + "/0"
	}
	rc, err := newRedisClient(cfg, rawURL)
	if err != nil {
		return nil, err
	}
	if err := rc.Ping(ctx).Err(); err != nil {
		rc.Close()
		if cfg.EmbeddedRedis() {
			return nil, fmt.Errorf("no embedded Redis answers at %s (%w): start the service (allocation serve), or set REDIS_URL", cfg.EmbeddedRedisAddr, err)
		}
		return nil, fmt.Errorf("redis %s: %w", redisName(cfg), err)
	}
	return rc, nil
}

// redisName says which Redis cfg names, without a password, for errors.
func redisName(cfg Config) string {
	switch {
	case len(cfg.RedisCluster) > 0:
		return "cluster " + strings.Join(cfg.RedisCluster, ",")
	case cfg.RedisSentinel.Set():
		return "master " + cfg.RedisSentinel.Master + " of the sentinels at " + strings.Join(cfg.RedisSentinel.Addrs, ",")
	}
	return "at " + redactURL(cfg.RedisURL)
}

// Redis client limits. Fail fast while Redis is down: the event log keeps
// what could not be published and the dispatcher retries it, so a request
// must not wait. go-redis dials five times, 100 ms apart, by default: half
// a second that a request holding its product would wait on a Redis that
// is gone.
const (
	redisMaxRetries         = 1
	redisDialerRetries      = 1
	redisDialerRetryTimeout = 10 * time.Millisecond
	redisTimeout            = 2 * time.Second // dial, read and write
)

// newRedisClient returns a client of the Cluster or Sentinel's master that
// cfg names, or else of rawURL. A rediss:// URL speaks TLS, trusting the
// system's certificate authorities or, when cfg.RedisTLS names one, its
// CAFile's, and showing its client certificate when the server asks for
// one. The URL carries the ACL user and password
// (rediss://user:password@host:port/db).
func newRedisClient(cfg Config, rawURL string) (goredis.UniversalClient, error) {
	if opts := UniversalOptions(cfg); opts != nil {
		return goredis.NewUniversalClient(opts), nil
	}
	opts, err := goredis.ParseURL(rawURL)
	if err != nil {
		return nil, fmt.Errorf("REDIS_URL %s: %w", redactURL(rawURL), err)
	}
	if files := cfg.RedisTLS; files.Set() {
		if opts.TLSConfig == nil {
			return nil, errors.New("REDIS_TLS_* files need a rediss:// REDIS_URL")
		}
		if err := applyTLSFiles(opts.TLSConfig, files); err != nil {
			return nil, err
		}
	}
	opts.MaxRetries = redisMaxRetries
	opts.DialerRetries = redisDialerRetries
	opts.DialerRetryTimeout = redisDialerRetryTimeout
	opts.DialTimeout, opts.ReadTimeout, opts.WriteTimeout = redisTimeout, redisTimeout, redisTimeout
	return goredis.NewClient(opts), nil
}

// UniversalOptions are go-redis's options for the Redis Cluster or the
// master behind Sentinel that cfg names (REDIS_USERNAME and REDIS_PASSWORD
// apply to their nodes), with the service's limits; nil when cfg names
// neither.
func UniversalOptions(cfg Config) *goredis.UniversalOptions {
	var opts *goredis.UniversalOptions
	switch {
	case len(cfg.RedisCluster) > 0:
		// IsClusterMode: a Cluster named by one node is still a Cluster.
		opts = &goredis.UniversalOptions{Addrs: cfg.RedisCluster, IsClusterMode: true}
	case cfg.RedisSentinel.Set():
		s := cfg.RedisSentinel
		opts = &goredis.UniversalOptions{Addrs: s.Addrs, MasterName: s.Master, SentinelUsername: s.Username, SentinelPassword: s.Password}
	default:
		return nil
	}
	opts.Username, opts.Password = cfg.RedisAuth.Username, cfg.RedisAuth.Password
	opts.MaxRetries = redisMaxRetries
	opts.DialerRetries = redisDialerRetries
	opts.DialerRetryTimeout = redisDialerRetryTimeout
	opts.DialTimeout, opts.ReadTimeout, opts.WriteTimeout = redisTimeout, redisTimeout, redisTimeout
	return opts
}

// applyTLSFiles loads the CA and the client certificate files names into c.
func applyTLSFiles(c *tls.Config, files TLSFiles) error {
	if files.CAFile != "" {
		pem, err := os.ReadFile(files.CAFile)
		if err != nil {
			return fmt.Errorf("REDIS_TLS_CA_FILE: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("REDIS_TLS_CA_FILE %s: no PEM certificate in it", files.CAFile)
		}
		c.RootCAs = pool
	}
	if files.CertFile != "" || files.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(files.CertFile, files.KeyFile)
		if err != nil {
			return fmt.Errorf("REDIS_TLS_CERT_FILE and REDIS_TLS_KEY_FILE: %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return nil
}
