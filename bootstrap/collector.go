package bootstrap

import (
	"context"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// The collector's pace. Go's default (GOGC=100) lets the heap grow by as
// much as is live before it collects again. With PostgreSQL the live heap
// is about 4 MB under load, so the collector ran 513 times by the middle of
// the flash-sale bench against 91 at GOGC=400, and an allocation cost 184
// µs of the service's CPU against 160 (go run ./cmd/loadgen
// -flashsale-only, one run each, 2026-12-02). A fixed 400 let the heap grow
// five times its size when more was live: reading 20,000 inbound messages
// at once took the peak resident memory from 47 to 95 MB (81 MB at 200).
// So the target follows the live heap: at least minHeadroom of new
// allocations between collections, never less than Go's default, never
// more than maxGCPercent. It is set once a second, slower than a burst
// grows the heap (the 20,000 messages took 1.3 s, and the peak was still
// 82 MB): a soft memory limit of memoryFloor, raised with the live heap
// at the same pace, makes the collector run sooner during such a burst
// (it peaked at 52 to 79 MB in three runs), and never holds back a heap
// that is live.
const (
	minHeadroom  = 16 << 20
	maxGCPercent = 400
	memoryFloor  = 64 << 20
	retuneEvery  = time.Second
)

// CollectorTarget is the GOGC that gives a live heap of live bytes at least
// minHeadroom before the next collection, between 100 and maxGCPercent.
func CollectorTarget(live uint64) int {
	if live == 0 {
		return maxGCPercent
	}
	return int(min(max(100*minHeadroom/live, 100), maxGCPercent))
}

// MemoryLimit is the soft memory limit for a live heap of live bytes:
// memoryFloor, or room for the heap to double and minHeadroom more.
func MemoryLimit(live uint64) int64 {
	return int64(max(memoryFloor, 2*live+minHeadroom))
}

// TuneCollector sets the collector's target, and with limitMemory the soft
// memory limit, from the live heap once a second until ctx ends. The
// program calls it unless GOGC is set, limiting memory unless GOMEMLIMIT is.
func TuneCollector(ctx context.Context, limitMemory bool) {
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	set := -1
	tick := time.NewTicker(retuneEvery)
	defer tick.Stop()
	for {
		metrics.Read(sample)
		if sample[0].Value.Kind() == metrics.KindUint64 {
			live := sample[0].Value.Uint64()
			if target := CollectorTarget(live); target != set {
				debug.SetGCPercent(target)
				set = target
			}
			if limitMemory {
				debug.SetMemoryLimit(MemoryLimit(live))
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}
