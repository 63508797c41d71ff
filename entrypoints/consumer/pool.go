package consumer

import "sync"

// OrderedPool runs jobs concurrently, except that jobs with the same key run
// one after another in the order they were submitted. The consumer keys each
// message by its product, so that messages about different products are
// handled side by side while those about one product keep their order.
//
// Each key has its own FIFO, and any free worker takes the key that has been
// ready longest. The simpler alternative, hash(key) % workers with a queue
// per worker, ties unrelated products together: two busy products that hash
// to one worker wait for each other while other workers idle, and a message
// stuck on a slow transaction stalls every product of its worker. Here a
// message waits only for earlier messages of its own product, and a key goes
// back to the end of the ready line after each job, so one hot product
// cannot starve the others.
//
// Workers are goroutines started on demand and gone when nothing is ready,
// so a pool needs no closing. At most limit jobs are queued or running at
// once: Submit blocks beyond that, which stops the caller from reading more
// messages (backpressure) instead of letting a queue grow without bound.
type OrderedPool struct {
	workers int
	slots   chan struct{} // one token per job queued or running

	mu      sync.Mutex
	lanes   map[string]*lane // keys with jobs queued or running
	ready   []string         // keys whose next job waits for a worker, oldest first
	running int              // worker goroutines alive
}

// lane holds the jobs of one key, oldest first. busy says a worker runs its
// first job; a lane with jobs that is not busy is in the ready line.
type lane struct {
	jobs []func()
	busy bool
}

// NewOrderedPool runs at most workers jobs at a time and holds at most limit
// jobs (queued and running together); values below 1 count as 1, and limit
// is at least workers, or workers would idle.
func NewOrderedPool(workers, limit int) *OrderedPool {
	workers = max(workers, 1)
	limit = max(limit, workers)
	return &OrderedPool{workers: workers, slots: make(chan struct{}, limit), lanes: map[string]*lane{}}
}

// Submit queues job behind the earlier jobs of key and returns; job runs
// later on a worker goroutine. Submit blocks while the pool is full and never
// drops a job, so a caller holding a message can always hand it over.
func (p *OrderedPool) Submit(key string, job func()) {
	p.slots <- struct{}{}
	p.mu.Lock()
	defer p.mu.Unlock()
	if l, ok := p.lanes[key]; ok {
		// Busy or in the ready line already: its turn comes.
		l.jobs = append(l.jobs, job)
		return
	}
	l := &lane{jobs: []func(){job}}
	p.lanes[key] = l
	if p.running < p.workers {
		p.running++
		l.busy = true
		go p.work(key, l)
		return
	}
	p.ready = append(p.ready, key)
}

// work runs the first job of lane l (key), then of whichever lane is ready
// next, until none is.
func (p *OrderedPool) work(key string, l *lane) {
	for {
		p.mu.Lock()
		job := l.jobs[0]
		p.mu.Unlock()

		job()

		p.mu.Lock()
		l.jobs[0] = nil // let the finished job be collected
		l.jobs = l.jobs[1:]
		<-p.slots
		if len(l.jobs) > 0 {
			l.busy = false
			p.ready = append(p.ready, key) // behind the keys that waited
		} else {
			delete(p.lanes, key)
		}
		if len(p.ready) == 0 {
			p.running--
			p.mu.Unlock()
			return
		}
		key = p.ready[0]
		p.ready[0] = ""
		p.ready = p.ready[1:]
		l = p.lanes[key]
		l.busy = true
		p.mu.Unlock()
	}
}
