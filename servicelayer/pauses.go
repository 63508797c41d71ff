package servicelayer

import (
	"sync"
	"time"
)

// handlerPauses backs off per handler, not per delivery. After a transient
// failure (Redis unreachable, say) nothing else of that handler is tried
// until the pause ends or the dependency is known to be back (Resume): with
// Redis down, a thousand allocations a second would otherwise each pay a
// failed publish and a database write recording it, and the dispatcher would
// re-scan a growing backlog. Deliveries skipped meanwhile stay pending in the
// event log; the dispatcher sends them in order once the pause is over.
type handlerPauses struct {
	mu     sync.Mutex
	policy RetryPolicy
	byName map[string]pause
}

type pause struct {
	failures int
	until    time.Time
}

func newHandlerPauses(policy RetryPolicy) *handlerPauses {
	if policy.Initial <= 0 || policy.Max <= 0 {
		policy = DefaultRetryPolicy()
	}
	return &handlerPauses{policy: policy, byName: map[string]pause{}}
}

// paused reports whether handler is not to be tried now.
func (p *handlerPauses) paused(handler string, now time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return now.Before(p.byName[handler].until)
}

// failed pauses handler, for longer after each failure in a row.
func (p *handlerPauses) failed(handler string, now time.Time) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	ps := p.byName[handler]
	ps.failures++
	d := p.policy.Delay(ps.failures)
	ps.until = now.Add(d)
	p.byName[handler] = ps
	return d
}

// pauseLongest pauses handler for the policy's longest delay.
func (p *handlerPauses) pauseLongest(handler string, now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	ps := p.byName[handler]
	ps.until = now.Add(p.policy.Max)
	p.byName[handler] = ps
}

// succeeded ends handler's pause and its run of failures.
func (p *handlerPauses) succeeded(handler string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.byName, handler)
}

// resumeAll ends every pause: a dependency came back.
func (p *handlerPauses) resumeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	clear(p.byName)
}

// next is when the earliest pause ends; zero when nothing is paused.
func (p *handlerPauses) next() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	var next time.Time
	for _, ps := range p.byName {
		if next.IsZero() || ps.until.Before(next) {
			next = ps.until
		}
	}
	return next
}
