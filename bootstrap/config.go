// Package bootstrap is the composition root: the only code that knows every
// adapter. It turns a Config into a running service.
package bootstrap

import (
	"allocation/adapters/tracing"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"allocation/adapters/embeddedredis"
	"allocation/adapters/redis"
)

// Config is everything the service reads from its environment.
//
// With neither DATABASE_URL nor REDIS_URL set the service needs nothing
// but itself: it keeps its data in a SQLite file under DataDir and starts
// a Redis-protocol server of its own on EmbeddedRedisAddr. Each URL that is
// set replaces its embedded part by the real thing.
type Config struct {
	// DatabaseURL is the PostgreSQL connection URL (DATABASE_URL); empty
	// keeps the data in an embedded SQLite file, SQLitePath.
	DatabaseURL string
	// DataDir holds the SQLite file when DatabaseURL is empty (DATA_DIR,
	// default "data", created when missing).
	DataDir string
	// RedisURL is the Redis connection URL (REDIS_URL); empty, with no
	// Cluster or Sentinel set either, starts an embedded Redis-protocol
	// server on EmbeddedRedisAddr.
	RedisURL string
	// RedisCluster names the nodes of a Redis Cluster to start from
	// (REDIS_CLUSTER_ADDRS=host:port,host:port,...), in place of RedisURL.
	RedisCluster []string
	// RedisSentinel is a master that Redis Sentinels watch, in place of
	// RedisURL.
	RedisSentinel Sentinel
	// RedisAuth is the ACL user and password of the Cluster's nodes, or of
	// the master and replicas Sentinel names (REDIS_USERNAME,
	// REDIS_PASSWORD). A REDIS_URL carries its own instead.
	RedisAuth RedisAuth
	// EmbeddedRedisAddr is where the embedded Redis listens when RedisURL
	// is empty (EMBEDDED_REDIS_ADDR, default 127.0.0.1:6380): redis-cli
	// and other services reach it there.
	EmbeddedRedisAddr string
	// HTTPAddr is where the API listens (HTTP_ADDR, default ":8080").
	HTTPAddr string
	// RedisPrefix is put, as is, before every Redis channel and key name
	// (REDIS_PREFIX, default empty): "t42." gives "t42.line_allocated".
	RedisPrefix string
	// SMTPAddr is the mail server host:port for notifications (SMTP_ADDR);
	// empty sends notifications to the log instead.
	SMTPAddr string
	// LogLevel is debug, info, warn or error (LOG_LEVEL, default info).
	LogLevel slog.Level
	// StreamMaxLen is roughly how many entries each outbound stream keeps
	// (STREAM_MAXLEN, default 100000).
	StreamMaxLen int64
	// StreamClaimIdle is how long an inbound stream entry may stay pending
	// with a consumer before another replica takes it over
	// (STREAM_CLAIM_IDLE, default 30s).
	StreamClaimIdle time.Duration
	// StreamMaxDeliveries is how often an inbound entry is tried before it
	// becomes a dead letter (STREAM_MAX_DELIVERIES, default 5).
	StreamMaxDeliveries int64
	// ConsumerName names this replica in the stream consumer group
	// (CONSUMER_NAME, default host-pid); it must differ between replicas.
	ConsumerName string
	// ConsumerConcurrency is how many inbound messages, each about a
	// different product, are handled at once (CONSUMER_CONCURRENCY, default
	// 128, at most MaxConsumerConcurrency). Messages about one product are
	// handled one after another whatever the setting.
	ConsumerConcurrency int
	// RedisTLS names the PEM files a rediss:// REDIS_URL trusts and shows;
	// PostgreSQL takes its own from DATABASE_URL (sslrootcert, sslcert,
	// sslkey).
	RedisTLS TLSFiles
	// AdminAddr, when set, is a second listener (ADMIN_ADDR) with
	// /debug/pprof/ and /metrics, kept apart from the API so that it can
	// stay unreachable from outside; empty: no such listener.
	AdminAddr string
	// Build says which build runs, for the allocation_build_info metric;
	// main sets it, it is not read from the environment.
	Build BuildInfo
	// Tracing is the tracer provider of the OTEL_* variables
	// (tracing.FromEnv, which allocation serve calls); nil or disabled:
	// tracing is off, and what would only cost is not instrumented.
	Tracing *tracing.Provider
	// EventRetention is how long events are kept (EVENT_RETENTION, default
	// 720h; 0 keeps them forever): older ones are deleted once every
	// delivery of theirs is done.
	EventRetention time.Duration
	// InboxRetention is how long processed inbound message ids are kept
	// (INBOX_RETENTION, default 168h; 0 keeps them forever). It may not be
	// shorter than LongestRedelivery.
	InboxRetention time.Duration
	// PruneInterval is how often the history is pruned (PRUNE_INTERVAL,
	// default 1m).
	PruneInterval time.Duration
	// PublishedIDTTL is how long the id of a published event is at least
	// remembered (PUBLISHED_ID_TTL, default 15m, at least 1m): a redelivery
	// within it is dropped, a later one is published again. Ids are kept up
	// to twice as long, which bounds what Redis holds for them.
	PublishedIDTTL time.Duration
	// PublishedIDLimit is how many published ids a generation holds on the
	// embedded Redis (PUBLISHED_ID_LIMIT, default
	// redis.EmbeddedPublishedIDLimit): it keeps them in this process's
	// memory, so a generation ends after that many events too, and at most
	// two are kept. Ignored with REDIS_URL set, where generations are by
	// time alone since replicas may share the Redis.
	PublishedIDLimit int64
}

// TLSFiles are PEM files for a TLS client: CAFile replaces the system's
// certificate authorities; CertFile and KeyFile, set together, are the
// client certificate the server may ask for.
type TLSFiles struct {
	CAFile   string // REDIS_TLS_CA_FILE
	CertFile string // REDIS_TLS_CERT_FILE
	KeyFile  string // REDIS_TLS_KEY_FILE
}

// Sentinel is a master watched by Redis Sentinels: the service asks them
// where the master is, and again after a failover.
type Sentinel struct {
	Master string   // REDIS_SENTINEL_MASTER: the master's name in the Sentinels' configuration
	Addrs  []string // REDIS_SENTINEL_ADDRS: host:port of the Sentinels
	// Username and Password are the Sentinels' own, when they ask for one
	// (REDIS_SENTINEL_USERNAME, REDIS_SENTINEL_PASSWORD).
	Username, Password string
}

// Set reports whether any Sentinel setting is given.
func (s Sentinel) Set() bool {
	return s.Master != "" || len(s.Addrs) > 0 || s.Username != "" || s.Password != ""
}

// RedisAuth is an ACL user and password.
type RedisAuth struct {
	Username string // REDIS_USERNAME
	Password string // REDIS_PASSWORD
}

// Set reports whether any file is named.
func (f TLSFiles) Set() bool { return f.CAFile != "" || f.CertFile != "" || f.KeyFile != "" }

// BuildInfo is what `allocation version` prints.
type BuildInfo struct {
	Version string
	Commit  string
}

// Retention defaults: a month of history, a week of inbound message ids,
// pruned every minute.
const (
	DefaultEventRetention = 720 * time.Hour
	DefaultInboxRetention = 168 * time.Hour
	DefaultPruneInterval  = time.Minute
)

// LongestRedelivery bounds how late the stream consumer may bring a message
// back: each of its StreamMaxDeliveries deliveries follows the one before
// within 1.5 StreamClaimIdle (entries idle that long are reclaimed by a scan
// every half StreamClaimIdle); twice that leaves the handling its time. An
// inbox that forgot a message id sooner could apply a redelivery twice.
func (c Config) LongestRedelivery() time.Duration {
	return time.Duration(c.StreamMaxDeliveries) * 2 * c.StreamClaimIdle
}

// DefaultConsumerConcurrency: a message mostly waits for the group commit
// it shares with the others in flight, and holds no connection meanwhile
// (its product usually comes from the cache), so more at once means larger
// shared writes. On 2 cores, 20,000 change_batch_quantity messages over 100
// products went through at about 2,450 msg/s with 16, 4,300 with 64 and
// 5,100 to 5,500 with 128 or 256 (go run ./cmd/loadgen -inbound-only,
// CONSUMER_CONCURRENCY set for the service, 2026-12-02).
const DefaultConsumerConcurrency = 128

// MaxConsumerConcurrency: beyond this, workers would only queue for
// database connections.
const MaxConsumerConcurrency = 256

// Defaults: embedded storage and Redis, the API on port 8080.
const (
	DefaultDataDir           = "data"
	DefaultEmbeddedRedisAddr = embeddedredis.DefaultAddr
	DefaultHTTPAddr          = ":8080"
)

// SQLiteFile is the name of the embedded database file in DataDir.
const SQLiteFile = "allocation.db"

// FromEnv reads the configuration through getenv (os.Getenv in main), filling
// in defaults, and validates it.
func FromEnv(getenv func(string) string) (Config, error) {
	cfg := Config{
		DatabaseURL:       getenv("DATABASE_URL"),
		DataDir:           orDefault(getenv("DATA_DIR"), DefaultDataDir),
		RedisURL:          getenv("REDIS_URL"),
		EmbeddedRedisAddr: orDefault(getenv("EMBEDDED_REDIS_ADDR"), DefaultEmbeddedRedisAddr),
		HTTPAddr:          orDefault(getenv("HTTP_ADDR"), DefaultHTTPAddr),
		RedisPrefix:       getenv("REDIS_PREFIX"),
		SMTPAddr:          getenv("SMTP_ADDR"),
		AdminAddr:         getenv("ADMIN_ADDR"),
		RedisTLS: TLSFiles{
			CAFile:   getenv("REDIS_TLS_CA_FILE"),
			CertFile: getenv("REDIS_TLS_CERT_FILE"),
			KeyFile:  getenv("REDIS_TLS_KEY_FILE"),
		},
	}
	cfg.readRedisTopology(getenv)
	var errs []error
	cfg.StreamMaxLen = intSetting(getenv, "STREAM_MAXLEN", 100_000, &errs)
	cfg.StreamMaxDeliveries = intSetting(getenv, "STREAM_MAX_DELIVERIES", 5, &errs)
	cfg.PublishedIDLimit = intSetting(getenv, "PUBLISHED_ID_LIMIT", redis.EmbeddedPublishedIDLimit, &errs)
	cfg.ConsumerConcurrency = int(intSetting(getenv, "CONSUMER_CONCURRENCY", DefaultConsumerConcurrency, &errs))
	cfg.StreamClaimIdle = 30 * time.Second
	if v := getenv("STREAM_CLAIM_IDLE"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			errs = append(errs, fmt.Errorf("STREAM_CLAIM_IDLE %q: want a duration such as 30s", v))
		}
		cfg.StreamClaimIdle = d
	}
	cfg.EventRetention = durationSetting(getenv, "EVENT_RETENTION", DefaultEventRetention, true, &errs)
	cfg.InboxRetention = durationSetting(getenv, "INBOX_RETENTION", DefaultInboxRetention, true, &errs)
	cfg.PruneInterval = durationSetting(getenv, "PRUNE_INTERVAL", DefaultPruneInterval, false, &errs)
	cfg.PublishedIDTTL = redis.DefaultPublishedIDTTL
	if v := getenv("PUBLISHED_ID_TTL"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("PUBLISHED_ID_TTL %q: want a duration such as 15m", v))
		}
		cfg.PublishedIDTTL = d
	}
	cfg.ConsumerName = getenv("CONSUMER_NAME")
	if cfg.ConsumerName == "" {
		host, _ := os.Hostname()
		cfg.ConsumerName = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	if len(errs) > 0 {
		return Config{}, errors.Join(errs...)
	}
	if lvl := getenv("LOG_LEVEL"); lvl != "" {
		if err := cfg.LogLevel.UnmarshalText([]byte(lvl)); err != nil {
			return Config{}, fmt.Errorf("LOG_LEVEL %q: want debug, info, warn or error", lvl)
		}
	}
	return cfg, cfg.Validate()
}

// Validate reports every setting that cannot work, all at once, in the
// order of the checks below.
func (c Config) Validate() error {
	errs := []error{c.checkDatabase()}
	errs = append(errs, c.validateRedis()...)
	errs = append(errs,
		checkListenAddr("HTTP_ADDR", c.HTTPAddr, "host:port or :port", false),
		checkListenAddr("ADMIN_ADDR", c.AdminAddr, "host:port or :port", true),
		checkListenAddr("SMTP_ADDR", c.SMTPAddr, "host:port", true),
		c.checkConsumerConcurrency(),
		c.checkInboxRetention(),
		c.checkRetentions(),
		c.checkPublishedIDTTL(),
	)
	// errors.Join leaves out the nil errors of the checks that passed.
	return errors.Join(errs...)
}

// checkDatabase refuses a DATA_DIR that cannot be part of the SQLite URL,
// or a DATABASE_URL that is not PostgreSQL's.
func (c Config) checkDatabase() error {
	if c.EmbeddedDatabase() {
		if c.DataDir == "" || strings.ContainsAny(c.DataDir, "?#") {
			return fmt.Errorf("DATA_DIR %q: want a directory name without ? or #", c.DataDir)
		}
		return nil
	}
	if u, err := url.Parse(c.DatabaseURL); err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return fmt.Errorf("DATABASE_URL %q: want postgres://user@host:port/dbname, or leave it unset for an embedded SQLite file", redactURL(c.DatabaseURL))
	}
	return nil
}

// checkListenAddr refuses an address without a port; an optional one may
// be left empty.
func checkListenAddr(name, addr, want string, optional bool) error {
	if (optional && addr == "") || strings.Contains(addr, ":") {
		return nil
	}
	return fmt.Errorf("%s %q: want %s", name, addr, want)
}

func (c Config) checkConsumerConcurrency() error {
	if c.ConsumerConcurrency < 1 || c.ConsumerConcurrency > MaxConsumerConcurrency {
		return fmt.Errorf("CONSUMER_CONCURRENCY %d: want 1 to %d", c.ConsumerConcurrency, MaxConsumerConcurrency)
	}
	return nil
}

// checkInboxRetention refuses to forget a message's id before the stream
// consumer may have stopped redelivering it.
func (c Config) checkInboxRetention() error {
	if c.InboxRetention != 0 && c.InboxRetention < c.LongestRedelivery() {
		return fmt.Errorf("INBOX_RETENTION %s: want 0 (keep) or at least %s, the longest the stream consumer may take to redeliver a message "+
			"(STREAM_MAX_DELIVERIES × 2 × STREAM_CLAIM_IDLE); lower those to allow less", c.InboxRetention, c.LongestRedelivery())
	}
	return nil
}

func (c Config) checkRetentions() error {
	if c.EventRetention < 0 || c.InboxRetention < 0 || c.PruneInterval <= 0 {
		return fmt.Errorf("EVENT_RETENTION %s, INBOX_RETENTION %s, PRUNE_INTERVAL %s: retentions are 0 (keep) or positive, the interval positive",
			c.EventRetention, c.InboxRetention, c.PruneInterval)
	}
	return nil
}

func (c Config) checkPublishedIDTTL() error {
	if c.PublishedIDTTL < redis.MinPublishedIDTTL {
		return fmt.Errorf("PUBLISHED_ID_TTL %s: want at least %s; a redelivery after it would be published again", c.PublishedIDTTL, redis.MinPublishedIDTTL)
	}
	return nil
}

// readRedisTopology reads the settings of a Redis Cluster or Sentinel.
func (c *Config) readRedisTopology(getenv func(string) string) {
	c.RedisCluster = addrList(getenv("REDIS_CLUSTER_ADDRS"))
	c.RedisSentinel = Sentinel{
		Master:   getenv("REDIS_SENTINEL_MASTER"),
		Addrs:    addrList(getenv("REDIS_SENTINEL_ADDRS")),
		Username: getenv("REDIS_SENTINEL_USERNAME"),
		Password: getenv("REDIS_SENTINEL_PASSWORD"),
	}
	c.RedisAuth = RedisAuth{Username: getenv("REDIS_USERNAME"), Password: getenv("REDIS_PASSWORD")}
}

// validateRedis checks that one Redis is chosen, and every setting of it:
// REDIS_URL, a Cluster, Sentinel, or none of them (the embedded Redis).
func (c Config) validateRedis() []error {
	errs := []error{c.checkOneRedis(), c.checkRedisAddr()}
	errs = append(errs, checkAddrs("REDIS_CLUSTER_ADDRS", c.RedisCluster)...)
	errs = append(errs, c.checkSentinel()...)
	errs = append(errs, c.checkRedisAuth())
	errs = append(errs, c.checkRedisTLS()...)
	return withoutNil(errs)
}

// checkOneRedis refuses more than one way to reach Redis.
func (c Config) checkOneRedis() error {
	chosen := []string{}
	if c.RedisURL != "" {
		chosen = append(chosen, "REDIS_URL")
	}
	if len(c.RedisCluster) > 0 {
		chosen = append(chosen, "REDIS_CLUSTER_ADDRS")
	}
	if c.RedisSentinel.Set() {
		chosen = append(chosen, "REDIS_SENTINEL_MASTER with REDIS_SENTINEL_ADDRS")
	}
	if len(chosen) > 1 {
		return fmt.Errorf("%s: set one of them, they are different ways to reach Redis", strings.Join(chosen, " and "))
	}
	return nil
}

// checkRedisAddr checks the embedded Redis's address, or REDIS_URL.
func (c Config) checkRedisAddr() error {
	switch {
	case c.EmbeddedRedis():
		if _, port, err := net.SplitHostPort(c.EmbeddedRedisAddr); err != nil || port == "" {
			return fmt.Errorf("EMBEDDED_REDIS_ADDR %q: want host:port", c.EmbeddedRedisAddr)
		}
	case c.RedisURL != "":
		if u, err := url.Parse(c.RedisURL); err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") {
			return fmt.Errorf("REDIS_URL %q: want redis://host:port/db, or leave it unset for an embedded Redis", redactURL(c.RedisURL))
		}
	}
	return nil
}

// checkSentinel wants both the master's name and its Sentinels, once
// either is set.
func (c Config) checkSentinel() []error {
	s := c.RedisSentinel
	if !s.Set() {
		return nil
	}
	var errs []error
	if s.Master == "" || len(s.Addrs) == 0 {
		errs = append(errs, errors.New("REDIS_SENTINEL_MASTER and REDIS_SENTINEL_ADDRS: set both, the master's name and where its Sentinels listen"))
	}
	return append(errs, checkAddrs("REDIS_SENTINEL_ADDRS", s.Addrs)...)
}

// checkRedisAuth refuses REDIS_USERNAME and REDIS_PASSWORD where nothing
// would use them.
func (c Config) checkRedisAuth() error {
	if c.RedisAuth != (RedisAuth{}) && len(c.RedisCluster) == 0 && c.RedisSentinel.Master == "" {
		return errors.New("REDIS_USERNAME and REDIS_PASSWORD are for REDIS_CLUSTER_ADDRS or REDIS_SENTINEL_MASTER; a REDIS_URL carries its own (redis://user:password@host:port/db)")
	}
	return nil
}

// checkRedisTLS allows the TLS files only with a rediss:// REDIS_URL, and
// the certificate only with its key.
func (c Config) checkRedisTLS() []error {
	if !c.RedisTLS.Set() {
		return nil
	}
	var errs []error
	if len(c.RedisCluster) > 0 || c.RedisSentinel.Set() {
		errs = append(errs, errors.New("REDIS_TLS_CA_FILE, REDIS_TLS_CERT_FILE and REDIS_TLS_KEY_FILE: TLS to a Redis Cluster or through Sentinel is not supported; use a rediss:// REDIS_URL"))
	} else if u, err := url.Parse(c.RedisURL); err != nil || u.Scheme != "rediss" {
		errs = append(errs, errors.New("REDIS_TLS_CA_FILE, REDIS_TLS_CERT_FILE and REDIS_TLS_KEY_FILE need a rediss:// REDIS_URL"))
	}
	if (c.RedisTLS.CertFile == "") != (c.RedisTLS.KeyFile == "") {
		errs = append(errs, errors.New("REDIS_TLS_CERT_FILE and REDIS_TLS_KEY_FILE: set both or neither"))
	}
	return errs
}

// withoutNil leaves out the nil errors of the checks that passed, so that
// validateRedis returns nothing when all pass.
func withoutNil(errs []error) []error {
	var out []error
	for _, err := range errs {
		if err != nil {
			out = append(out, err)
		}
	}
	return out
}

// checkAddrs refuses addresses that are not host:port.
func checkAddrs(name string, addrs []string) []error {
	var errs []error
	for _, a := range addrs {
		if host, port, err := net.SplitHostPort(a); err != nil || host == "" || port == "" {
			errs = append(errs, fmt.Errorf("%s: %q is not host:port", name, a))
		}
	}
	return errs
}

// addrList splits a comma-separated list of addresses, leaving out blanks.
func addrList(v string) []string {
	var addrs []string
	for _, a := range strings.Split(v, ",") {
		if a = strings.TrimSpace(a); a != "" {
			addrs = append(addrs, a)
		}
	}
	return addrs
}

// EmbeddedDatabase reports whether the data is kept in the SQLite file
// (DATABASE_URL unset).
func (c Config) EmbeddedDatabase() bool { return c.DatabaseURL == "" }

// EmbeddedRedis reports whether the service starts its own Redis: neither
// REDIS_URL nor a Cluster nor Sentinel is set.
func (c Config) EmbeddedRedis() bool {
	return c.RedisURL == "" && len(c.RedisCluster) == 0 && !c.RedisSentinel.Set()
}

// SQLitePath is the embedded database file.
func (c Config) SQLitePath() string { return filepath.Join(c.DataDir, SQLiteFile) }

// Mode names what the service runs on: "embedded" (SQLite and its own
// Redis: nothing to install), "postgres+redis", or a mix of the two.
func (c Config) Mode() string {
	switch db, rd := c.EmbeddedDatabase(), c.EmbeddedRedis(); {
	case db && rd:
		return "embedded"
	case db:
		return "sqlite+redis"
	case rd:
		return "postgres+embedded-redis"
	}
	return "postgres+redis"
}

// StartupAttrs say, for the first log line, what the service runs on: the
// mode, the database (the SQLite file, or the PostgreSQL URL without its
// password) and the Redis address to use.
func (c Config) StartupAttrs() []any {
	attrs := []any{"mode", c.Mode()}
	if c.EmbeddedDatabase() {
		file, err := filepath.Abs(c.SQLitePath())
		if err != nil {
			file = c.SQLitePath()
		}
		attrs = append(attrs, "database", "sqlite", "data_file", file)
	} else {
		attrs = append(attrs, "database", "postgres", "database_url", redactURL(c.DatabaseURL))
	}
	switch {
	case c.EmbeddedRedis():
		attrs = append(attrs, "redis", "embedded", "redis_addr", c.EmbeddedRedisAddr)
	case len(c.RedisCluster) > 0:
		attrs = append(attrs, "redis", "cluster", "redis_cluster_addrs", strings.Join(c.RedisCluster, ","))
	case c.RedisSentinel.Set():
		attrs = append(attrs, "redis", "sentinel", "redis_sentinel_master", c.RedisSentinel.Master,
			"redis_sentinel_addrs", strings.Join(c.RedisSentinel.Addrs, ","))
	default:
		attrs = append(attrs, "redis", "external", "redis_url", redactURL(c.RedisURL))
	}
	return attrs
}

// redactURL hides the password of a URL, for logs and errors.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparseable URL)"
	}
	return u.Redacted()
}

func intSetting(getenv func(string) string, name string, def int64, errs *[]error) int64 {
	v := getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n <= 0 {
		*errs = append(*errs, fmt.Errorf("%s %q: want a positive integer", name, v))
	}
	return n
}

// durationSetting reads a Go duration (30s, 720h); zero is allowed when
// zeroKeeps says it means "keep forever".
func durationSetting(getenv func(string) string, name string, def time.Duration, zeroKeeps bool, errs *[]error) time.Duration {
	v := getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 || (d == 0 && !zeroKeeps) {
		want := "a positive duration such as 1m"
		if zeroKeeps {
			want = "a duration such as 720h, or 0 to keep forever"
		}
		*errs = append(*errs, fmt.Errorf("%s %q: want %s", name, v, want))
	}
	return d
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}
