package redis

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// ackTimeout bounds one batch of acknowledgements, at shutdown too.
const ackTimeout = 5 * time.Second

// maxAckBatch caps the ids of one XACK, so that a large backlog is
// acknowledged in commands of reasonable size (in one round trip all the same).
const maxAckBatch = 500

// acker acknowledges settled stream entries in batches. One goroutine (run)
// sends whatever has been settled since its last round trip in one
// pipeline, one XACK per stream: while a round trip is under way, the
// entries settled meanwhile gather for the next one. Under load a batch holds
// many entries; when traffic is light, an entry is acknowledged as soon as
// it is settled, without waiting for a batch to fill. Handling never waits
// for an acknowledgement.
type acker struct {
	ctx    context.Context // not cancelled: acknowledgements are sent at shutdown too
	client goredis.UniversalClient
	group  string
	log    *slog.Logger

	mu sync.Mutex
	// held are the entries handed over and not yet acknowledged, or given
	// back unsettled, by stream key: reclaim must not hand them over again.
	held map[string]map[string]struct{}
	// settled are the entries to acknowledge next, by stream key.
	settled map[string][]string

	inHand  sync.WaitGroup // entries handed over and not yet settled
	wake    chan struct{}  // something was settled
	closing chan struct{}
	closed  chan struct{}
}

func newAcker(ctx context.Context, c goredis.UniversalClient, group string, log *slog.Logger) *acker {
	return &acker{
		ctx: ctx, client: c, group: group, log: log,
		held:    map[string]map[string]struct{}{},
		settled: map[string][]string{},
		wake:    make(chan struct{}, 1),
		closing: make(chan struct{}),
		closed:  make(chan struct{}),
	}
}

// hold records that entry id of key is handed over and will be settled.
func (a *acker) hold(key, id string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	ids := a.held[key]
	if ids == nil {
		ids = map[string]struct{}{}
		a.held[key] = ids
	}
	ids[id] = struct{}{}
	a.inHand.Add(1)
}

// holds says whether entry id of key is handed over and not yet acknowledged.
func (a *acker) holds(key, id string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	_, ok := a.held[key][id]
	return ok
}

// settle ends the handling of an entry that hold recorded: a settled one is
// acknowledged with the next batch; an unsettled one stays pending in Redis
// and is let go, for reclaim to bring back after ClaimIdle.
func (a *acker) settle(key, id string, settled bool) {
	defer a.inHand.Done()
	if settled {
		a.done(key, id)
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.release(key, id)
}

// release forgets entry id of key; a.mu is held.
func (a *acker) release(key, id string) {
	delete(a.held[key], id)
	if len(a.held[key]) == 0 {
		delete(a.held, key)
	}
}

// done queues entry id of key for acknowledgement.
func (a *acker) done(key, id string) {
	a.mu.Lock()
	ids := a.held[key]
	if ids == nil {
		ids = map[string]struct{}{}
		a.held[key] = ids
	}
	ids[id] = struct{}{} // until acknowledged
	a.settled[key] = append(a.settled[key], id)
	a.mu.Unlock()
	select {
	case a.wake <- struct{}{}:
	default: // a wake-up is due already; it will take this entry too
	}
}

// run acknowledges batches until close.
func (a *acker) run() {
	defer close(a.closed)
	for {
		select {
		case <-a.wake:
			a.flush()
		case <-a.closing:
			a.flush()
			return
		}
	}
}

// close waits until every entry handed over is settled, acknowledges the
// settled ones and stops run.
func (a *acker) close() {
	a.inHand.Wait()
	close(a.closing)
	<-a.closed
}

// flush acknowledges everything settled so far in one round trip.
func (a *acker) flush() {
	a.mu.Lock()
	batch := a.settled
	a.settled = map[string][]string{}
	a.mu.Unlock()
	if len(batch) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(a.ctx, ackTimeout)
	defer cancel()
	n := 0
	_, err := a.client.Pipelined(ctx, func(p goredis.Pipeliner) error {
		for key, ids := range batch {
			n += len(ids)
			for chunk := range slices.Chunk(ids, maxAckBatch) {
				p.XAck(ctx, key, a.group, chunk...)
			}
		}
		return nil
	})
	if err != nil {
		// Unacknowledged, they come back after ClaimIdle; the inbox knows
		// them by message or stream id, so that is harmless.
		a.log.WarnContext(ctx, "could not acknowledge stream entries", "entries", n, "error", err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for key, ids := range batch {
		for _, id := range ids {
			a.release(key, id)
		}
	}
}
