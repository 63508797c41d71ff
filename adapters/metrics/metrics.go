// Package metrics exposes what the service does as Prometheus metrics:
// HTTP requests, commands, event deliveries, inbound messages, dead letters,
// the event log's backlog and the database pool.
package metrics

import (
	"context"
	"database/sql"
	"errors"
	"net/http"
	"runtime"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"allocation/servicelayer"
)

// Metrics holds the service's collectors in a registry of its own.
type Metrics struct {
	reg          *prometheus.Registry
	httpRequests *prometheus.CounterVec
	httpDuration *prometheus.HistogramVec
	commands     *prometheus.CounterVec
	deliveries   *prometheus.CounterVec
	inbound      *prometheus.CounterVec
	deadLetters  *prometheus.CounterVec
	listTrimmed  prometheus.Counter
	retention    *retentionCollector
}

func New() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		httpRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "allocation_http_requests_total", Help: "HTTP requests by method, route and status.",
		}, []string{"method", "route", "status"}),
		httpDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "allocation_http_request_duration_seconds", Help: "HTTP request latency by method and route.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"method", "route"}),
		commands: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "allocation_commands_total", Help: "Commands handled, by command and outcome (ok, failed).",
		}, []string{"command", "outcome"}),
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "allocation_event_deliveries_total", Help: "Event deliveries by handler and outcome (delivered, failed: retried later or parked as dead, skipped: left to its turn).",
		}, []string{"handler", "outcome"}),
		inbound: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "allocation_inbound_messages_total", Help: "Inbound Redis messages by channel and outcome (handled, duplicate, dead_lettered, unsettled).",
		}, []string{"channel", "outcome"}),
		deadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "allocation_dead_letters_recorded_total", Help: "Refused inbound messages recorded in the database as dead letters, by channel.",
		}, []string{"channel"}),
		listTrimmed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "allocation_dead_letter_list_trimmed_total", Help: "Oldest entries trimmed off the Redis list dead_letter to keep it at its bound (the database keeps them).",
		}),
	}
	m.retention = newRetentionCollector()
	m.reg.MustRegister(m.httpRequests, m.httpDuration, m.commands, m.deliveries, m.inbound, m.deadLetters, m.listTrimmed, m.retention,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// SetBuildInfo publishes allocation_build_info{version,commit,go_version} 1,
// so that dashboards can tell which build each replica runs.
func (m *Metrics) SetBuildInfo(version, commit string) {
	if version == "" {
		version = "unknown"
	}
	if commit == "" {
		commit = "unknown"
	}
	info := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "allocation_build_info", Help: "Always 1; the labels say which build runs: version, commit and Go version.",
	}, []string{"version", "commit", "go_version"})
	info.WithLabelValues(version, commit, runtime.Version()).Set(1)
	m.reg.MustRegister(info)
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// HTTPRequest counts one answered request; route is the route pattern, not
// the path, so that ids do not explode the label set.
func (m *Metrics) HTTPRequest(method, route string, status int, d time.Duration) {
	m.httpRequests.WithLabelValues(method, route, strconv.Itoa(status)).Inc()
	m.httpDuration.WithLabelValues(method, route).Observe(d.Seconds())
}

// CommandHandled implements servicelayer.Observer.
func (m *Metrics) CommandHandled(command string, err error) {
	m.commands.WithLabelValues(command, outcome(err, "ok")).Inc()
}

// EventDelivered implements servicelayer.Observer.
func (m *Metrics) EventDelivered(handler string, err error) {
	o := outcome(err, "delivered")
	if errors.Is(err, servicelayer.ErrNotDelivered) {
		o = "skipped"
	}
	m.deliveries.WithLabelValues(handler, o).Inc()
}

// InboundMessage counts one inbound message by what became of it.
func (m *Metrics) InboundMessage(channel, outcome string) {
	m.inbound.WithLabelValues(channel, outcome).Inc()
}

// DeadLetterRecorded counts one dead letter recorded in the database.
func (m *Metrics) DeadLetterRecorded(channel string) {
	m.deadLetters.WithLabelValues(channel).Inc()
}

// DeadLetterListTrimmed counts n dead letters trimmed off the Redis list.
func (m *Metrics) DeadLetterListTrimmed(n int) {
	m.listTrimmed.Add(float64(n))
}

func outcome(err error, ok string) string {
	if err == nil {
		return ok
	}
	return "failed"
}

// WatchGroups exports how many groups of allocations waiting for one
// product were decided together, and how many allocations they held:
// their ratio is the mean size of a group, which grows with a product's
// contention (a flash sale).
func (m *Metrics) WatchGroups(coalesced func() (groups, members int64)) {
	m.reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "allocation_coalesced_groups_total",
			Help: "Groups of allocations waiting for one product's turn that were decided and written together.",
		}, func() float64 { g, _ := coalesced(); return float64(g) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "allocation_coalesced_allocations_total",
			Help: "Allocations decided in such groups.",
		}, func() float64 { _, n := coalesced(); return float64(n) }),
	)
}

// WatchDB exports the connection pool's statistics.
func (m *Metrics) WatchDB(db *sql.DB) {
	m.reg.MustRegister(collectors.NewDBStatsCollector(db, "allocation"))
}

// BacklogStats is what the event log says about deliveries left to do.
type BacklogStats struct {
	Pending, Dead int
	// Blocked are pending deliveries waiting behind a dead one of their
	// product and handler, for an operator to replay or skip it.
	Blocked int
	// OldestPending is when the oldest pending event occurred; zero if none.
	OldestPending time.Time
}

// WatchEventLog exports the event log's backlog, read at each scrape.
func (m *Metrics) WatchEventLog(stats func(ctx context.Context) (BacklogStats, error)) {
	m.reg.MustRegister(&backlogCollector{stats: stats})
}

var (
	pendingDesc = prometheus.NewDesc("allocation_event_deliveries_pending", "Event deliveries not done yet.", nil, nil)
	deadDesc    = prometheus.NewDesc("allocation_event_deliveries_dead", "Event deliveries parked as dead.", nil, nil)
	blockedDesc = prometheus.NewDesc("allocation_event_deliveries_blocked", "Pending event deliveries waiting behind one parked as dead (allocation events replay|skip).", nil, nil)
	oldestDesc  = prometheus.NewDesc("allocation_event_oldest_pending_age_seconds", "Age of the oldest event with a delivery not done.", nil, nil)
)

type backlogCollector struct {
	stats func(ctx context.Context) (BacklogStats, error)
}

func (c *backlogCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- pendingDesc
	ch <- deadDesc
	ch <- blockedDesc
	ch <- oldestDesc
}

func (c *backlogCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s, err := c.stats(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(pendingDesc, err)
		return
	}
	age := 0.0
	if !s.OldestPending.IsZero() {
		age = time.Since(s.OldestPending).Seconds()
	}
	ch <- prometheus.MustNewConstMetric(pendingDesc, prometheus.GaugeValue, float64(s.Pending))
	ch <- prometheus.MustNewConstMetric(deadDesc, prometheus.GaugeValue, float64(s.Dead))
	ch <- prometheus.MustNewConstMetric(blockedDesc, prometheus.GaugeValue, float64(s.Blocked))
	ch <- prometheus.MustNewConstMetric(oldestDesc, prometheus.GaugeValue, age)
}
