// Package bootstrap is the composition root: the only code that knows every
// adapter. It turns a Config into a running service.
package bootstrap

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
)

// Config is everything the service reads from its environment.
type Config struct {
	// DatabaseURL is the PostgreSQL connection URL (DATABASE_URL).
	DatabaseURL string
	// RedisURL is the Redis connection URL (REDIS_URL).
	RedisURL string
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
}

// Defaults point at the services `make services` starts.
const (
	DefaultDatabaseURL = "postgres://postgres@127.0.0.1:5432/allocation?sslmode=disable"
	DefaultRedisURL    = "redis://127.0.0.1:6379/0"
	DefaultHTTPAddr    = ":8080"
)

// FromEnv reads the configuration through getenv (os.Getenv in main), filling
// in defaults, and validates it.
func FromEnv(getenv func(string) string) (Config, error) {
	cfg := Config{
		DatabaseURL: orDefault(getenv("DATABASE_URL"), DefaultDatabaseURL),
		RedisURL:    orDefault(getenv("REDIS_URL"), DefaultRedisURL),
		HTTPAddr:    orDefault(getenv("HTTP_ADDR"), DefaultHTTPAddr),
		RedisPrefix: getenv("REDIS_PREFIX"),
		SMTPAddr:    getenv("SMTP_ADDR"),
	}
	if lvl := getenv("LOG_LEVEL"); lvl != "" {
		if err := cfg.LogLevel.UnmarshalText([]byte(lvl)); err != nil {
			return Config{}, fmt.Errorf("LOG_LEVEL %q: want debug, info, warn or error", lvl)
		}
	}
	return cfg, cfg.Validate()
}

// Validate reports every setting that cannot work, all at once.
func (c Config) Validate() error {
	var errs []error
	if u, err := url.Parse(c.DatabaseURL); err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		errs = append(errs, fmt.Errorf("DATABASE_URL %q: want postgres://user@host:port/dbname", c.DatabaseURL))
	}
	if u, err := url.Parse(c.RedisURL); err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") {
		errs = append(errs, fmt.Errorf("REDIS_URL %q: want redis://host:port/db", c.RedisURL))
	}
	if !strings.Contains(c.HTTPAddr, ":") {
		errs = append(errs, fmt.Errorf("HTTP_ADDR %q: want host:port or :port", c.HTTPAddr))
	}
	if c.SMTPAddr != "" && !strings.Contains(c.SMTPAddr, ":") {
		errs = append(errs, fmt.Errorf("SMTP_ADDR %q: want host:port", c.SMTPAddr))
	}
	return errors.Join(errs...)
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}
