package unit_test

import (
	"testing"
	"time"

	"allocation/servicelayer"
)

// The schedule the README promises: 100 ms, doubling, never more than 30 s
// apart, less up to a fifth at random.
func TestTheDefaultRetryScheduleDoublesFrom100msAndIsCappedAt30s(t *testing.T) {
	t.Parallel()
	p := servicelayer.DefaultRetryPolicy()
	want := 100 * time.Millisecond
	for attempt := 1; attempt <= 40; attempt++ {
		for range 50 { // the jitter is random: look at many draws
			d := p.Delay(attempt)
			if d > want || d < want*4/5 {
				t.Fatalf("delay after attempt %d is %s, want between %s and %s", attempt, d, want*4/5, want)
			}
		}
		want = min(2*want, 30*time.Second)
	}
}

// Transient failures never park a delivery, however long they last; a
// permanent one parks it on its third attempt.
func TestOnlyAPermanentFailureParksADelivery(t *testing.T) {
	t.Parallel()
	p := servicelayer.DefaultRetryPolicy()
	for _, attempts := range []int{1, 3, 100, 10_000} {
		if p.Parks(attempts, false) {
			t.Fatalf("a transient failure parked a delivery after %d attempts", attempts)
		}
	}
	if p.Parks(2, true) || !p.Parks(3, true) {
		t.Fatal("a permanent failure must park on the third attempt, not before")
	}
}
