package main

import (
	"sort"
	"sync"
	"time"
)

// summary is what one measured phase produced.
type summary struct {
	ops      int           // operations finished, failed or not
	failures int           // of which failed
	elapsed  time.Duration // wall time of the phase
	p50, p99 time.Duration
	firstErr string          // the first failure, to show the reader why
	lats     []time.Duration // every latency, sorted: phases can be pooled
}

// rate is finished operations that did not fail, per second.
func (s summary) rate() float64 {
	if s.elapsed <= 0 {
		return 0
	}
	return float64(s.ops-s.failures) / s.elapsed.Seconds()
}

// recorder collects latencies from many goroutines.
type recorder struct {
	mu       sync.Mutex
	lats     []time.Duration
	failures int
	firstErr string
}

func (r *recorder) add(lat time.Duration, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lats = append(r.lats, lat)
	if err != nil {
		r.failures++
		if r.firstErr == "" {
			r.firstErr = err.Error()
		}
	}
}

func (r *recorder) summary(elapsed time.Duration) summary {
	r.mu.Lock()
	defer r.mu.Unlock()
	sorted := append([]time.Duration(nil), r.lats...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
	return summary{
		ops: len(sorted), failures: r.failures, elapsed: elapsed, firstErr: r.firstErr,
		p50: percentile(sorted, 50), p99: percentile(sorted, 99), lats: sorted,
	}
}

// percentile is the nearest-rank percentile of sorted latencies (0 if none).
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(p/100*float64(len(sorted))+0.5) - 1
	rank = max(0, min(rank, len(sorted)-1))
	return sorted[rank]
}
