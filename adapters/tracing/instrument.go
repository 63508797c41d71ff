package tracing

import (
	"context"
	"database/sql/driver"
	"fmt"
	"strings"

	"github.com/XSAM/otelsql"
	"github.com/jmoiron/sqlx"
	"github.com/labstack/echo/v4"
	"github.com/redis/go-redis/extra/redisotel/v9"
	goredis "github.com/redis/go-redis/v9"
	"go.opentelemetry.io/contrib/instrumentation/github.com/labstack/echo/otelecho"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Propagator reads and writes the W3C traceparent and tracestate headers.
var Propagator propagation.TextMapPropagator = propagation.TraceContext{}

// untracedPaths are the probes and scrapes: a span each, several times a
// second, would bury the requests that matter.
var untracedPaths = map[string]bool{"/healthz": true, "/readyz": true, "/metrics": true}

// HTTP is the Echo middleware (otelecho) that starts the span of each
// request, the child of the caller's traceparent header when it sends one.
// It goes first, so that everything after it (request ids, the access log)
// runs inside the span. With tracing off (a disabled Provider, or the no-op
// one) it only reads a caller's traceparent, which the events the request
// commits carry on: a request without one pays nothing.
func HTTP(provider trace.TracerProvider) echo.MiddlewareFunc {
	if p, ok := provider.(*Provider); ok && !p.Enabled {
		return propagateOnly
	}
	if _, ok := provider.(noop.TracerProvider); ok {
		return propagateOnly
	}
	return otelecho.Middleware(DefaultServiceName,
		otelecho.WithTracerProvider(provider),
		otelecho.WithPropagators(Propagator),
		otelecho.WithSkipper(func(c echo.Context) bool { return untracedPaths[c.Request().URL.Path] }),
	)
}

// propagateOnly puts the caller's trace context, when it sends one, in the
// request's context: the no-op tracer's spans carry it on.
func propagateOnly(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		req := c.Request()
		if _, ok := req.Header["Traceparent"]; ok {
			c.SetRequest(req.WithContext(Propagator.Extract(req.Context(), propagation.HeaderCarrier(req.Header))))
		}
		return next(c)
	}
}

// backgroundCommands are what the service sends Redis on its own, in loops
// (the health watcher, the stream readers) or to open a connection (hello,
// client setinfo), not for a request or message: left out, they would each
// be a trace of their own several times a second.
var backgroundCommands = map[string]bool{
	"hello": true, "client": true, "ping": true, "xreadgroup": true, "xautoclaim": true, "xack": true, "xpending": true,
	"xgroup": true, "xinfo": true, "subscribe": true, "psubscribe": true, "unsubscribe": true,
}

// Redis adds spans for the commands and pipelines client sends
// (redisotel), without their arguments (message bodies), dial spans or the
// background loops' commands.
func Redis(client goredis.UniversalClient, provider trace.TracerProvider) error {
	skip := func(cmd goredis.Cmder) bool {
		return redisotel.DefaultCommandFilter(cmd) || backgroundCommands[strings.ToLower(cmd.Name())]
	}
	err := redisotel.InstrumentTracing(client,
		redisotel.WithTracerProvider(provider),
		redisotel.WithDBStatement(false),
		redisotel.WithDialFilter(true),
		redisotel.WithCommandFilter(skip),
		redisotel.WithCommandsFilter(func(cmds []goredis.Cmder) bool {
			for _, c := range cmds {
				if !skip(c) {
					return false
				}
			}
			return true
		}),
	)
	if err != nil {
		return fmt.Errorf("instrument redis: %w", err)
	}
	return nil
}

// SQLDriver registers driverName wrapped by otelsql, which adds a span for
// each statement and transaction made under a span (a request, a message, a
// delivery; the pruner's and the dispatcher's polls are left out), and
// returns the wrapper's name, with sqlx told its placeholders are
// driverName's.
func SQLDriver(driverName string, provider trace.TracerProvider) (string, error) {
	name, err := otelsql.Register(driverName,
		otelsql.WithTracerProvider(provider),
		otelsql.WithSpanOptions(otelsql.SpanOptions{
			OmitConnResetSession: true,
			OmitConnectorConnect: true,
			OmitRows:             true,
			SpanFilter: func(ctx context.Context, _ otelsql.Method, _ string, _ []driver.NamedValue) bool {
				return trace.SpanContextFromContext(ctx).IsValid()
			},
		}),
	)
	if err != nil {
		return "", fmt.Errorf("instrument %s: %w", driverName, err)
	}
	sqlx.BindDriver(name, sqlx.BindType(driverName))
	return name, nil
}
