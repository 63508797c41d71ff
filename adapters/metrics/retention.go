package metrics

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// TableRetention is what a pruning pass did to one table and left in it.
type TableRetention struct {
	Table  string
	Pruned int
	Rows   int
	// Oldest is when the oldest row left was written; zero when none.
	Oldest time.Time
}

var (
	keptDesc = prometheus.NewDesc("allocation_history_rows", "Rows a table of history keeps, as of the last pruning pass.", []string{"table"}, nil)
	ageDesc  = prometheus.NewDesc("allocation_history_oldest_row_age_seconds", "Age of the oldest row a table of history keeps (0 when empty), as of the last pruning pass.", []string{"table"}, nil)
)

// retentionCollector exports the last pruning pass: rows pruned (counted
// as they go), rows kept and the age of the oldest row, aged at each scrape.
type retentionCollector struct {
	pruned *prometheus.CounterVec
	mu     sync.Mutex
	last   []TableRetention
}

func newRetentionCollector() *retentionCollector {
	return &retentionCollector{pruned: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "allocation_history_pruned_rows_total", Help: "Rows of history deleted by retention, by table.",
	}, []string{"table"})}
}

func (c *retentionCollector) Describe(ch chan<- *prometheus.Desc) {
	c.pruned.Describe(ch)
	ch <- keptDesc
	ch <- ageDesc
}

func (c *retentionCollector) Collect(ch chan<- prometheus.Metric) {
	c.pruned.Collect(ch)
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, t := range c.last {
		age := 0.0
		if !t.Oldest.IsZero() {
			age = time.Since(t.Oldest).Seconds()
		}
		ch <- prometheus.MustNewConstMetric(keptDesc, prometheus.GaugeValue, float64(t.Rows), t.Table)
		ch <- prometheus.MustNewConstMetric(ageDesc, prometheus.GaugeValue, age, t.Table)
	}
}

// Pruned records a pruning pass.
func (m *Metrics) Pruned(tables []TableRetention) {
	m.retention.mu.Lock()
	defer m.retention.mu.Unlock()
	for _, t := range tables {
		m.retention.pruned.WithLabelValues(t.Table).Add(float64(t.Pruned))
	}
	m.retention.last = tables
}
