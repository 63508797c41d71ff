package servicelayer

import (
	"math/rand/v2"
	"time"
)

// RetryPolicy says when a failed delivery is tried again and when it is
// parked as dead. Only permanent failures (ErrPermanent) park a delivery;
// a transient one (Redis or SMTP unreachable, a timeout) is retried for as
// long as it takes, at most Max apart.
type RetryPolicy struct {
	// MaxAttempts is how many attempts a delivery gets before a permanent
	// failure parks it.
	MaxAttempts int
	Initial     time.Duration
	Max         time.Duration
}

// DefaultRetryPolicy: 0.1 s, 0.2 s, 0.4 s … doubling up to 30 s. An outage
// is noticed within 30 s of its end even without the wake-up a reconnection
// sends; a permanent failure is parked after three attempts (0.3 s).
func DefaultRetryPolicy() RetryPolicy {
	return RetryPolicy{MaxAttempts: 3, Initial: 100 * time.Millisecond, Max: 30 * time.Second}
}

// Delay is how long to wait after the given number of failed attempts:
// Initial doubled per attempt, capped at Max, less up to a fifth at random
// so that replicas do not retry in step.
func (p RetryPolicy) Delay(attempts int) time.Duration {
	d := p.Initial
	for i := 1; i < attempts && d < p.Max; i++ {
		d *= 2
	}
	d = min(d, p.Max)
	return d - time.Duration(rand.Int64N(int64(d)/5+1))
}

// Parks says whether a delivery that failed with cause on its attempts-th
// attempt is parked as dead.
func (p RetryPolicy) Parks(attempts int, permanent bool) bool {
	return permanent && attempts >= p.MaxAttempts
}
