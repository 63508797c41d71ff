package redis

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// StreamOptions tune a StreamReader.
type StreamOptions struct {
	// Group is the consumer group every replica joins ("allocation").
	Group string
	// Consumer names this reader within the group; unique per process.
	Consumer string
	// ClaimIdle is how long an entry stays pending with a consumer before
	// another one takes it over, presuming the first dead (30 s).
	ClaimIdle time.Duration
	// MaxDeliveries is how often an entry is tried before it is set aside
	// as a dead letter (5).
	MaxDeliveries int64
	// SetAside records an entry the reader refuses itself (it has no
	// "data" field, or was delivered MaxDeliveries times) as a dead letter;
	// the entry is acknowledged only once it returns nil, and stays pending
	// (tried again later) otherwise. The consumer's SetAsideEntry records
	// it in the database. Nil keeps it in the Redis list dead_letter only.
	SetAside func(ctx context.Context, stream, id string, payload []byte, reason string) error
}

func (o StreamOptions) withDefaults() StreamOptions {
	if o.Group == "" {
		o.Group = "allocation"
	}
	if o.ClaimIdle == 0 {
		o.ClaimIdle = 30 * time.Second
	}
	if o.MaxDeliveries == 0 {
		o.MaxDeliveries = 5
	}
	return o
}

// StreamReader reads command streams through a consumer group: each entry
// goes to one replica, stays pending until it is acknowledged, and is taken
// over by another replica when its consumer dies.
type StreamReader struct {
	client goredis.UniversalClient
	prefix string
	opts   StreamOptions
	dead   *Subscriber // for its dead letters
	log    *slog.Logger
}

// NewStreamReader reads prefix+stream for each stream given to Run.
func NewStreamReader(c goredis.UniversalClient, prefix string, opts StreamOptions, log *slog.Logger) *StreamReader {
	if log == nil {
		log = slog.Default()
	}
	return &StreamReader{client: c, prefix: prefix, opts: opts.withDefaults(), dead: NewSubscriber(c, prefix, log), log: log}
}

// Run reads streams until ctx ends, reconnecting with backoff when Redis is
// away. Each stream is read on its own (one XREADGROUP per stream, not one
// over all of them): on Redis Cluster the streams live in different hash
// slots, and one command may only touch keys of one slot. It calls handle
// for one entry of a stream at a time, in stream order (id is the entry's
// stream id, payload its "data" field, fields its other fields); entries of
// different streams may be handed over at the same time, from different
// goroutines. handle may block, and Run then reads no further on that
// stream. handle calls settle once the entry is settled (applied, or set
// aside as a dead letter: true) or not (false), from any goroutine and in
// any order. Settled entries are acknowledged in batches, never before they
// are settled; the others stay pending and come back after ClaimIdle. When
// ctx ends, Run returns only once every entry it handed over is settled and
// the settled ones are acknowledged.
func (r *StreamReader) Run(ctx context.Context, streams []string, handle streamHandler) error {
	acks := newAcker(context.WithoutCancel(ctx), r.client, r.opts.Group, r.log)
	go acks.run()
	var readers sync.WaitGroup
	for _, stream := range streams {
		readers.Go(func() {
			// untilCancelled returns (nil) only once ctx ends.
			_ = untilCancelled(ctx, r.log, "redis stream read failed, retrying", []any{"stream", stream}, func(healthy func()) error {
				return r.read(ctx, stream, handle, acks, healthy)
			})
		})
	}
	readers.Wait()
	acks.close()
	return nil
}

type streamHandler = func(ctx context.Context, stream, id string, payload []byte, fields map[string]string, settle func(settled bool))

// readCount is how many entries one XREADGROUP asks for.
const readCount = 100

// read creates the group on stream when it is missing and reads the stream
// through it, taking over entries left idle too long, until ctx ends or
// Redis fails.
func (r *StreamReader) read(ctx context.Context, stream string, handle streamHandler, acks *acker, healthy func()) error {
	key := r.prefix + stream
	// From "0": entries appended before any replica ever ran count too.
	err := r.client.XGroupCreateMkStream(ctx, key, r.opts.Group, "0").Err()
	if err != nil && !strings.Contains(err.Error(), "BUSYGROUP") {
		return fmt.Errorf("create group on %s: %w", key, err)
	}
	healthy()
	nextClaim := time.Now()
	for ctx.Err() == nil {
		if time.Now().After(nextClaim) {
			if err := r.reclaim(ctx, key, handle, acks); err != nil {
				return err
			}
			nextClaim = time.Now().Add(r.opts.ClaimIdle / 2)
		}
		res, err := r.client.XReadGroup(ctx, &goredis.XReadGroupArgs{
			Group: r.opts.Group, Consumer: r.opts.Consumer, Streams: []string{key, ">"}, Count: readCount, Block: time.Second,
		}).Result()
		if errors.Is(err, goredis.Nil) {
			continue
		}
		if err != nil {
			return err
		}
		// Every entry read is in hand, even when ctx ends meanwhile: all of
		// them are handed over, and Run waits for them.
		for _, s := range res {
			for _, m := range s.Messages {
				r.deliver(ctx, s.Stream, m, handle, acks)
			}
		}
	}
	return nil
}

// deliver hands one entry to handle, which settles it later.
func (r *StreamReader) deliver(ctx context.Context, key string, m goredis.XMessage, handle streamHandler, acks *acker) {
	stream := strings.TrimPrefix(key, r.prefix)
	ctx = context.WithoutCancel(ctx) // handle has it: it must be finished
	payload, ok := m.Values["data"].(string)
	if !ok {
		if r.deadLetter(ctx, stream, m, `entry has no "data" field holding the JSON body`) {
			acks.done(key, m.ID)
		}
		return
	}
	fields := make(map[string]string, len(m.Values)-1)
	for name, v := range m.Values {
		if s, ok := v.(string); ok && name != "data" {
			fields[name] = s
		}
	}
	acks.hold(key, m.ID)
	handle(ctx, stream, m.ID, []byte(payload), fields, func(settled bool) { acks.settle(key, m.ID, settled) })
}

// reclaim takes over entries that stayed pending longer than ClaimIdle with
// a (presumably dead) consumer, and sets aside those delivered too often.
// Entries this reader holds are left alone: they are being handled, or are
// settled and about to be acknowledged.
func (r *StreamReader) reclaim(ctx context.Context, key string, handle streamHandler, acks *acker) error {
	pending, err := r.client.XPendingExt(ctx, &goredis.XPendingExtArgs{
		Stream: key, Group: r.opts.Group, Idle: r.opts.ClaimIdle, Start: "-", End: "+", Count: readCount,
	}).Result()
	if err != nil {
		return fmt.Errorf("read pending entries of %s: %w", key, err)
	}
	stream := strings.TrimPrefix(key, r.prefix)
	byID := make(map[string]goredis.XPendingExt, len(pending))
	ids := make([]string, 0, len(pending))
	for _, p := range pending {
		if !acks.holds(key, p.ID) {
			byID[p.ID] = p
			ids = append(ids, p.ID)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	// MinIdle again: an entry another replica claimed meanwhile stays with it.
	claimed, err := r.client.XClaim(ctx, &goredis.XClaimArgs{
		Stream: key, Group: r.opts.Group, Consumer: r.opts.Consumer, MinIdle: r.opts.ClaimIdle, Messages: ids,
	}).Result()
	if err != nil {
		return fmt.Errorf("claim %d pending entries of %s: %w", len(ids), key, err)
	}
	for _, m := range claimed {
		p := byID[m.ID]
		r.log.InfoContext(ctx, "took over a pending stream entry", "stream", stream, "id", m.ID, "from", p.Consumer, "deliveries", p.RetryCount+1)
		if p.RetryCount >= r.opts.MaxDeliveries {
			if r.deadLetter(context.WithoutCancel(ctx), stream, m, fmt.Sprintf("delivered %d times without being settled", p.RetryCount)) {
				acks.done(key, m.ID)
			}
			continue
		}
		r.deliver(ctx, key, m, handle, acks)
	}
	return nil
}

func (r *StreamReader) deadLetter(ctx context.Context, stream string, m goredis.XMessage, reason string) bool {
	payload, _ := m.Values["data"].(string)
	if r.opts.SetAside != nil {
		if err := r.opts.SetAside(ctx, stream, m.ID, []byte(payload), reason); err != nil {
			r.log.ErrorContext(ctx, "stream entry not set aside: it stays pending", "stream", stream, "id", m.ID, "error", err)
			return false
		}
		return true
	}
	r.log.WarnContext(ctx, "stream entry set aside", "stream", stream, "id", m.ID, "reason", reason)
	if err := r.dead.DeadLetter(ctx, stream, []byte(payload), reason+" (stream entry "+m.ID+")"); err != nil {
		r.log.ErrorContext(ctx, "dead letter lost", "stream", stream, "id", m.ID, "error", err)
		return false
	}
	return true
}
