// Package embeddedredis runs a Redis-protocol server inside the process
// (github.com/alicebob/miniredis), so that the service runs where no Redis
// is installed. The service talks to it over TCP through the same client as
// to a real Redis, and so can anything else on the machine: redis-cli,
// other services.
//
// It keeps everything in memory: what it holds (streams, consumer groups,
// dead letters, the publisher's published ids) is gone when the process
// stops. It speaks what the service uses: pub/sub, Lua scripts (HEXISTS,
// HSET, EXPIRE, XADD MAXLEN ~, PUBLISH), streams with consumer groups
// (XREADGROUP, XACK, XPENDING, XCLAIM), lists and MULTI/EXEC, to RESP2 and
// RESP3 clients alike (see resp3.go). It does not do CLIENT KILL, CONFIG,
// persistence or replication.
package embeddedredis

import (
	"fmt"

	"github.com/alicebob/miniredis/v2"
)

// DefaultAddr is where the embedded server listens unless told otherwise:
// beside a real Redis's 6379, so both can run.
const DefaultAddr = "127.0.0.1:6380"

// Server is a running embedded Redis.
type Server struct {
	m *miniredis.Miniredis
}

// Start listens on addr (host:port; port 0 picks a free one) and serves
// until Close.
func Start(addr string) (*Server, error) {
	m := miniredis.NewMiniRedis()
	// Keys expire as time passes, as on a real Redis: the publisher's
	// generations of published ids would otherwise pile up for ever. Every
	// command first looks at every key for expiry, so what is kept must be
	// few keys, not one per event.
	m.ClockTTL(true)
	if err := m.StartAddr(addr); err != nil {
		return nil, fmt.Errorf("embedded redis on %s: %w", addr, err)
	}
	m.Server().SetPreHook(resp3Hook(m.Server()))
	return &Server{m: m}, nil
}

// Addr is the host:port the server listens on.
func (s *Server) Addr() string { return s.m.Addr() }

// URL is the redis:// URL of the server, for the usual client.
func (s *Server) URL() string { return "redis://" + s.m.Addr() + "/0" }

// Close stops the server and closes its connections; what it held is gone.
func (s *Server) Close() { s.m.Close() }
