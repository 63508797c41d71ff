package unit_test

import (
	"testing"

	"allocation/bootstrap"
)

// The collector's target gives a small live heap 16 MiB to grow before the
// next collection, at most 400 %, and a large one Go's default of 100 %:
// the headroom that saves CPU on a heap of a few MB never lets a large one
// grow five times over.
func TestTheCollectorsTargetFollowsTheLiveHeap(t *testing.T) {
	const mib = 1 << 20
	for _, c := range []struct {
		live uint64
		want int
	}{
		{0, 400},
		{2 * mib, 400},
		{4 * mib, 400},
		{8 * mib, 200},
		{10 * mib, 160},
		{16 * mib, 100},
		{200 * mib, 100},
	} {
		if got := bootstrap.CollectorTarget(c.live); got != c.want {
			t.Errorf("live heap %d MiB: GOGC %d, want %d", c.live/mib, got, c.want)
		}
	}
}

// The soft memory limit brakes a burst between two retunings and never a
// heap that is live: 64 MiB, or room for the live heap to double and 16 MiB
// more.
func TestTheMemoryLimitNeverHoldsBackALiveHeap(t *testing.T) {
	const mib = 1 << 20
	for _, c := range []struct {
		live uint64
		want int64
	}{
		{0, 64 * mib},
		{4 * mib, 64 * mib},
		{24 * mib, 64 * mib},
		{30 * mib, 76 * mib},
		{200 * mib, 416 * mib},
	} {
		if got := bootstrap.MemoryLimit(c.live); got != c.want {
			t.Errorf("live heap %d MiB: limit %d MiB, want %d", c.live/mib, got/mib, c.want/mib)
		}
	}
}
