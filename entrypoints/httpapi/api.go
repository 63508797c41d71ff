// Package httpapi is the service's HTTP API (Echo): it turns requests into
// commands for the bus and answers queries from the read model.
//
// Choices the contract leaves open: POST /add_batch answers 201
// {"message": "batch REF added"}, also when the same batch is added again; a
// body is read as application/json (another Content-Type is 415, none is
// taken as JSON), must be valid UTF-8 and must name its fields exactly as
// documented (case counts), each at most once; every field is required but
// eta, which may be null or left out (both mean stock in the warehouse); an
// unknown batch is bad input (400); a dependency that is down or too slow is
// 503; any other failure is 500 {"message": "internal error"}, its details
// only in the log. /healthz and /readyz answer HEAD like GET, without the
// body.
package httpapi

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"

	"allocation/domain"
	"allocation/servicelayer"
)

// Bus handles commands.
type Bus interface {
	Handle(ctx context.Context, cmd domain.Command) (servicelayer.Result, error)
}

// Views answers queries from the read model and the event log.
type Views interface {
	Allocations(ctx context.Context, orderID string) ([]servicelayer.Allocation, error)
	servicelayer.History
}

// Check is a dependency /readyz pings.
type Check struct {
	Name string
	Ping func(ctx context.Context) error
}

// Config is what the API needs.
type Config struct {
	Bus    Bus
	Views  Views
	Checks []Check
	Log    *slog.Logger
	// BodyLimit caps request bodies ("64K" when empty); larger ones get 413.
	BodyLimit string
	// RequestTimeout bounds the work of one request (4 s when zero): a
	// dependency that hangs gets a 503 instead of a hung client.
	RequestTimeout time.Duration
	// ReadyTimeout bounds each /readyz (2 s when zero); a check that has not
	// answered by then counts as failed.
	ReadyTimeout time.Duration
	// Observe, when set, is told of every answered request, with the route
	// pattern (not the path), for metrics.
	Observe func(method, route string, status int, d time.Duration)
	// Metrics, when set, is served at GET /metrics.
	Metrics http.Handler
	// Tracing, when set, runs first on every request: it starts the
	// request's span (tracing.HTTP).
	Tracing echo.MiddlewareFunc
}

// New returns the API's handler.
func New(cfg Config) *echo.Echo {
	if cfg.BodyLimit == "" {
		cfg.BodyLimit = "64K"
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.RequestTimeout == 0 {
		cfg.RequestTimeout = 4 * time.Second
	}
	if cfg.ReadyTimeout == 0 {
		cfg.ReadyTimeout = 2 * time.Second
	}
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = errorHandler(cfg.Log)
	if cfg.Tracing != nil {
		e.Use(cfg.Tracing)
	}
	e.Use(middleware.RequestIDWithConfig(middleware.RequestIDConfig{
		// The request id is the cause of all the request's work: its logs and
		// the events it raises carry it.
		RequestIDHandler: func(c echo.Context, id string) {
			ctx := servicelayer.WithCause(c.Request().Context(), servicelayer.Cause{CausationID: id, CorrelationID: id})
			c.SetRequest(c.Request().WithContext(ctx))
		},
	}))
	e.Use(accessLog(cfg.Log, cfg.Observe))
	e.Use(middleware.RecoverWithConfig(middleware.RecoverConfig{
		DisableStackAll: true,
		// The panic and its stack go to our log; the error handler then
		// answers 500 without either.
		LogErrorFunc: func(c echo.Context, err error, stack []byte) error {
			cfg.Log.ErrorContext(c.Request().Context(), "panic while handling request",
				"method", c.Request().Method, "path", c.Request().URL.Path,
				"request_id", c.Response().Header().Get(echo.HeaderXRequestID),
				"error", err, "stack", string(stack))
			return err
		},
	}))
	e.Use(middleware.BodyLimit(cfg.BodyLimit))
	e.Use(middleware.ContextTimeoutWithConfig(middleware.ContextTimeoutConfig{
		Timeout: cfg.RequestTimeout,
		// The error handler turns a deadline into 503 like any other outage.
		ErrorHandler: func(err error, _ echo.Context) error { return err },
	}))

	h := handlers{bus: cfg.Bus, views: cfg.Views, checks: cfg.Checks, readyTimeout: cfg.ReadyTimeout}
	e.POST("/add_batch", h.addBatch)
	e.POST("/allocate", h.allocate)
	e.GET("/allocations/:orderid", h.allocations)
	// Echo does not match an empty parameter: without this route an empty
	// order id would be an unknown route (404) rather than bad input (400).
	e.GET("/allocations/", h.allocations)
	e.GET("/allocations/:orderid/history", h.orderHistory)
	e.GET("/events", h.events)
	e.GET("/healthz", h.healthz)
	e.HEAD("/healthz", h.healthz) // net/http leaves out the body of a HEAD answer
	e.GET("/readyz", h.readyz)
	e.HEAD("/readyz", h.readyz)
	e.GET("/openapi.json", serveOpenAPI)
	e.GET("/asyncapi.json", serveAsyncAPI)
	if cfg.Metrics != nil {
		e.GET("/metrics", echo.WrapHandler(cfg.Metrics))
	}
	return e
}

// accessLog writes one line per request.
func accessLog(log *slog.Logger, observe func(method, route string, status int, d time.Duration)) echo.MiddlewareFunc {
	if observe == nil {
		observe = func(string, string, int, time.Duration) {}
	}
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			start := time.Now()
			err := next(c)
			if err != nil {
				// Let the error handler write the answer now, so the status is known.
				c.Error(err)
			}
			status := c.Response().Status
			route := c.Path()
			if route == "" {
				route = "unmatched" // unknown paths must not each become a label
			}
			observe(c.Request().Method, route, status, time.Since(start))
			level := slog.LevelInfo
			if status >= http.StatusInternalServerError {
				level = slog.LevelError
			}
			if !log.Enabled(c.Request().Context(), level) {
				return nil // the line's arguments would be built for nothing
			}
			log.Log(c.Request().Context(), level, "http request",
				"method", c.Request().Method,
				"path", c.Request().URL.Path,
				"status", status,
				"duration_ms", float64(time.Since(start).Microseconds())/1000,
				"request_id", c.Response().Header().Get(echo.HeaderXRequestID))
			return nil
		}
	}
}
