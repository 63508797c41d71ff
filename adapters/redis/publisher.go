// Package redis carries events and commands over Redis: it publishes the
// service's events on pub/sub channels and appends them to streams, reads the
// commands other services send (pub/sub, and streams through a consumer
// group), and keeps the messages it could not apply (dead letters). Every
// channel and key name is the configured prefix followed by the name.
package redis

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"allocation/domain"
	"allocation/servicelayer"
)

// The channels the service's events go out on; each event is also appended
// to the stream of the same name.
const (
	// LineAllocated carries Allocated events.
	LineAllocated = "line_allocated"
	// LineDeallocated carries Deallocated events: the line left batchref.
	LineDeallocated = "line_deallocated"
)

// Defaults of the outbound streams.
const (
	// DefaultStreamMaxLen is roughly how many entries a stream keeps (XADD
	// MAXLEN ~): enough for a subscriber that was down a while to catch up.
	DefaultStreamMaxLen = 100_000
	// DefaultPublishedIDTTL is how long a published message id is at least
	// remembered, so that a redelivery is dropped. Redeliveries come within
	// minutes: after a crash between publishing and marking the delivery
	// done (2 s grace, 5 s claims), or a publish that timed out but went
	// through (retries give up after about five minutes). Ids are kept
	// between one and two TTLs (see publishedKeys) at about 90 bytes each
	// (62,000 ids took 5.5 MB on Redis 7): at 1,000 events/s, 15 minutes
	// hold 80 to 160 MB; a day would hold gigabytes.
	DefaultPublishedIDTTL = 15 * time.Minute
	// EmbeddedPublishedIDLimit is how many ids a generation holds on the
	// embedded server (SetPublishedIDLimit), whose memory is the process's:
	// at most twice as many are kept, about 105 bytes each there (21 MB in
	// all), where the TTL alone kept up to 1.8 million at 1,000 events/s.
	// An id is then remembered for at least the TTL or 100,000 later
	// events of its stream, whichever comes first: 50 s at 2,000 events/s,
	// twice what the embedded mode does on 2 cores, against the 35 s a
	// transient failure puts between two attempts of one delivery at most
	// (DeliveryTimeout, then a retry at most 30 s later). A crash needs no
	// window there: it takes the embedded server and its streams with it.
	EmbeddedPublishedIDLimit = 100_000
	// MinPublishedIDTTL is the shortest window accepted: below a minute a
	// delivery retried after a short outage would already be forgotten.
	MinPublishedIDTTL = time.Minute
	// maxEventsPerCall caps the events one script call publishes, because a
	// script blocks Redis while it runs. Measured on Redis 7 (INFO
	// commandstats, 2 busy cores): a call takes 15 µs for 1 event, 1.0 ms
	// for 100 and 14 ms for 1,000, so about 10 µs an event and 5 µs a call.
	// Past a few dozen events a bigger call saves nothing but blocks longer:
	// 64 events hold other clients up for about 0.65 ms. (On the embedded
	// server an event costs some 250 µs whatever the call size, since every
	// command of a script builds a client of its own.)
	maxEventsPerCall = 64
)

// publishMany appends events of one channel to its stream and publishes
// them on the channel, in order, skipping every message id published
// before: one atomic step in Redis per call, so that a redelivered event
// never reaches a stream reader twice.
//
// Published ids are kept in hashes of one generation each (publishedKeys),
// not in a key per id: the key count stays the same however many events go
// out. A new id goes into the current generation, which is kept for two
// generations; both the current and the previous one are checked.
//
// Calls of one batch on one stream are chained: a call publishes nothing
// unless the batch's event before its first one was published (by an
// earlier call, or before), so that when a call fails the later ones on the
// same stream fail too and the stream never gets the batch out of order.
//
// KEYS[1] stream, KEYS[2] current generation of published ids, KEYS[3] the
// previous generation; ARGV: channel, max length, generation length in
// seconds, id that must be published first ("" for none), then message id,
// body, traceparent and tracestate of each event, in order; the last two
// become entry fields when not empty. Returns how many it published.
var publishMany = goredis.NewScript(`
local function published(id)
	return redis.call('HEXISTS', KEYS[2], id) == 1 or redis.call('HEXISTS', KEYS[3], id) == 1
end
if ARGV[4] ~= '' and not published(ARGV[4]) then
	return redis.error_reply('ORDER ' .. ARGV[4] .. ' must be published first')
end
local n = 0
for i = 5, #ARGV, 4 do
	local id, body, parent, state = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
	if not published(id) then
		if parent == '' then
			redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'data', body, 'message_id', id)
		elseif state == '' then
			redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'data', body, 'message_id', id, 'traceparent', parent)
		else
			redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'data', body, 'message_id', id,
				'traceparent', parent, 'tracestate', state)
		end
		redis.call('PUBLISH', ARGV[1], body)
		redis.call('HSET', KEYS[2], id, '1')
		n = n + 1
	end
end
if n > 0 then
	redis.call('EXPIRE', KEYS[2], 2 * tonumber(ARGV[3]))
end
return n
`)

// Publisher implements servicelayer.Publisher.
type Publisher struct {
	client goredis.UniversalClient
	prefix string
	maxLen int64
	ttl    time.Duration
	now    func() time.Time
	// idLimit, when not 0, ends a generation of published ids after that
	// many events as well as after the TTL; counted holds each stream's
	// current generation then.
	idLimit int64
	mu      sync.Mutex
	counted map[string]*generation
	// share gathers concurrent publications into shared pipelines.
	share pipelineShare
}

// generation is a stream's current generation of published ids when they
// are counted: its number, when it began, and how many events went into it.
type generation struct {
	num     int64
	started time.Time
	sent    int64
}

// NewPublisher publishes on prefix+channel and appends to the stream of the
// same name; the prefix is used as is.
func NewPublisher(c goredis.UniversalClient, prefix string) *Publisher {
	return &Publisher{client: c, prefix: prefix, maxLen: DefaultStreamMaxLen, ttl: DefaultPublishedIDTTL, now: time.Now,
		counted: map[string]*generation{}}
}

// SetPublishedIDLimit bounds the published ids Redis holds for a stream to
// two generations of n events and one batch each (0, the default, bounds
// them by the TTL only): a generation ends after n events as well as after
// the TTL, and the one this leaves unchecked is deleted. An id is then
// remembered for at least the TTL or n later events of its stream,
// whichever comes first.
//
// The generations are counted in this process, so it must be the only
// publisher on its Redis and prefix, as in the embedded mode (the embedded
// server is the process's own); replicas sharing a Redis would number their
// generations apart and miss each other's ids.
func (p *Publisher) SetPublishedIDLimit(n int64) { p.idLimit = max(n, 0) }

// SetStreamMaxLen changes roughly how many entries each outbound stream keeps.
func (p *Publisher) SetStreamMaxLen(n int64) { p.maxLen = n }

// SetPublishedIDTTL changes how long a published message id is at least
// remembered (whole seconds; at least MinPublishedIDTTL): a redelivery
// later than that is published again.
func (p *Publisher) SetPublishedIDTTL(d time.Duration) {
	p.ttl = max(d.Truncate(time.Second), MinPublishedIDTTL)
}

// SetClock replaces time.Now as the clock that picks the generation of
// published ids, for tests that look past the TTL.
func (p *Publisher) SetClock(now func() time.Time) { p.now = now }

// eventBody is the wire format of line_allocated and line_deallocated.
type eventBody struct {
	OrderID       string `json:"orderid"`
	SKU           string `json:"sku"`
	Qty           int    `json:"qty"`
	BatchRef      string `json:"batchref"`
	MessageID     string `json:"message_id"`
	OccurredAt    string `json:"occurred_at"`
	CausationID   string `json:"causation_id,omitempty"`
	CorrelationID string `json:"correlation_id,omitempty"`
	// TraceParent and TraceState are the W3C Trace Context of the span
	// that committed the event, so that the receiver joins its trace.
	TraceParent string `json:"traceparent,omitempty"`
	TraceState  string `json:"tracestate,omitempty"`
}

// Publish sends env on the channel of its event, with its message_id and
// occurred_at beside the event's fields, as PublishBatch of one would, in a
// pipeline shared with concurrent callers (sharedpipeline.go).
func (p *Publisher) Publish(ctx context.Context, env servicelayer.Envelope) error {
	return p.publishShared(ctx, env)
}

// PublishBatch publishes envs in one round trip to Redis: on each stream and
// channel in the order of envs, each message id once (a repeat, in envs or
// from an earlier call, is skipped).
//
// An envelope that cannot be encoded (its event has no channel) fails the
// whole batch before anything is sent, with an error wrapping
// servicelayer.ErrPermanent; publish the envelopes one by one to find it.
// Any other error is Redis's or the network's, returned as is: then each
// stream holds the batch's events up to some point (none, some or all of
// them), never a later one without an earlier one, and calling PublishBatch
// again with the same envs publishes the rest, in order.
func (p *Publisher) PublishBatch(ctx context.Context, envs []servicelayer.Envelope) error {
	calls, stale, err := p.plan(envs)
	if err != nil || len(calls) == 0 {
		return err
	}
	failed, err := p.send(ctx, stale, calls)
	if err != nil && goredis.HasErrorPrefix(err, "NOSCRIPT") {
		// Redis lost its scripts (a restart, SCRIPT FLUSH): load it and
		// send the failed call and every later one again; those that went
		// through skip their events, being published already.
		if err = publishMany.Load(ctx, p.client).Err(); err == nil {
			var again int
			again, err = p.send(ctx, nil, calls[failed:])
			failed += again
		}
	}
	if err != nil {
		c := calls[min(failed, len(calls)-1)]
		return fmt.Errorf("publish %d events on %s from message %s: %w", c.events, c.channel, c.args[4], err)
	}
	return nil
}

// call is one run of publishMany: consecutive events of one channel.
type call struct {
	channel string
	keys    []string
	args    []any
	events  int
}

// plan encodes envs and groups them into calls of publishMany: consecutive
// events of one channel, at most maxEventsPerCall each. It also returns the
// keys of published ids no longer checked, to delete (SetPublishedIDLimit).
func (p *Publisher) plan(envs []servicelayer.Envelope) ([]call, []string, error) {
	genSeconds := int64(p.ttl / time.Second)
	var calls []call
	last := map[string]string{}  // channel -> id of its latest event so far
	events := map[string]int64{} // stream -> events
	for _, env := range envs {
		channel, body, err := encode(env)
		if err != nil {
			return nil, nil, fmt.Errorf("publish %s: %w", env.MessageID, err)
		}
		if n := len(calls); n == 0 || calls[n-1].channel != channel || calls[n-1].events == maxEventsPerCall {
			calls = append(calls, call{channel: channel, args: []any{p.prefix + channel, p.maxLen, genSeconds, last[channel]}})
		}
		c := &calls[len(calls)-1]
		c.args = append(c.args, env.MessageID, body, env.TraceParent, env.TraceState)
		c.events++
		last[channel] = env.MessageID
		events[p.prefix+channel]++
	}
	gens, stale := p.generations(events)
	for i := range calls {
		stream := p.prefix + calls[i].channel
		published, gen := publishedKeys(stream), gens[stream]
		calls[i].keys = []string{stream, published + strconv.FormatInt(gen, 10), published + strconv.FormatInt(gen-1, 10)}
	}
	return calls, stale, nil
}

// generations picks the generation of published ids that each stream's
// events go into, given how many go to each, and names the generations
// that this makes unchecked. By default the generation of time t is t /
// TTL (Unix seconds), and Redis expires the old ones. With a limit each
// stream's generations are counted here instead: one ends when the TTL has
// passed since it began or when it took the limit of events, and the one
// before it, checked no more, is to be deleted.
func (p *Publisher) generations(events map[string]int64) (map[string]int64, []string) {
	now := p.now()
	gens := make(map[string]int64, len(events))
	if p.idLimit == 0 {
		for stream := range events {
			gens[stream] = now.Unix() / int64(p.ttl/time.Second)
		}
		return gens, nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	var stale []string
	for stream, n := range events {
		g := p.counted[stream]
		switch {
		case g == nil:
			// Unix seconds: a restarted process does not reuse the
			// numbers of generations it may have left on a Redis.
			g = &generation{num: now.Unix(), started: now}
			p.counted[stream] = g
		case g.sent >= p.idLimit || now.Sub(g.started) >= p.ttl:
			// Full once it took the limit, not before a batch would take
			// it over: an id then stays checked through limit later
			// events, batches of them included.
			stale = append(stale, publishedKeys(stream)+strconv.FormatInt(g.num-1, 10))
			*g = generation{num: g.num + 1, started: now}
		}
		g.sent += n
		gens[stream] = g.num
	}
	return gens, stale
}

// send deletes the stale keys and runs calls, in as few pipelines as keep
// their order (waves), and returns the index of the first call that failed,
// with its error. Nothing after a failed call is sent. A failed delete is no
// failure: the key expires anyway.
func (p *Publisher) send(ctx context.Context, stale []string, calls []call) (int, error) {
	sent := 0
	for _, wave := range p.waves(calls) {
		if failed, err := p.sendWave(ctx, stale, wave); err != nil {
			return sent + failed, err
		}
		stale = nil // deleted with the first wave
		sent += len(wave)
	}
	return sent, nil
}

// waves splits calls into pipelines sent one after another. One Redis runs
// a pipeline's commands in order, so on a single node (or Sentinel's
// master) one pipeline keeps the order across streams. A Cluster client
// sends each node's share of a pipeline at the same time, so there a call
// waits for the earlier calls of other slots: a line_deallocated still goes
// out before the line_allocated that follows it. Calls of one hash tag are
// on one slot and share a wave.
func (p *Publisher) waves(calls []call) [][]call {
	if _, cluster := p.client.(*goredis.ClusterClient); !cluster {
		return [][]call{calls}
	}
	var waves [][]call
	start := 0
	for i := 1; i <= len(calls); i++ {
		if i == len(calls) || hashTag(calls[i].keys[0]) != hashTag(calls[start].keys[0]) {
			waves = append(waves, calls[start:i])
			start = i
		}
	}
	return waves
}

// sendWave deletes the stale keys and runs calls in one pipeline, and
// returns the index of the first call that failed, with its error.
func (p *Publisher) sendWave(ctx context.Context, stale []string, calls []call) (int, error) {
	pipe := p.client.Pipeline()
	for _, key := range stale {
		pipe.Del(ctx, key)
	}
	cmds := make([]*goredis.Cmd, len(calls))
	for i, c := range calls {
		cmds[i] = publishMany.EvalSha(ctx, pipe, c.keys, c.args...)
	}
	_, _ = pipe.Exec(ctx) // each command keeps its own error
	for i, cmd := range cmds {
		if err := cmd.Err(); err != nil {
			return i, err
		}
	}
	return len(calls), nil
}

// publishedKeys is the name of the published ids of stream, less the
// generation number: "{<stream>}:published:". An id written in generation
// g is found by every check until g+1 ends: by time alone, at least one
// TTL and at most two (see generations). The hash tag
// makes every key of one call hash to the stream's slot on Redis Cluster
// (a stream key that has a hash tag of its own keeps it).
func publishedKeys(stream string) string {
	if hashTag(stream) != stream {
		return stream + ":published:"
	}
	return "{" + stream + "}:published:"
}

// hashTag is the part of key that Redis Cluster hashes to find its slot:
// what is between the first "{" and the next "}" when that is not empty,
// else the whole key.
func hashTag(key string) string {
	if open := strings.IndexByte(key, '{'); open >= 0 {
		if end := strings.IndexByte(key[open+1:], '}'); end > 0 {
			return key[open+1 : open+1+end]
		}
	}
	return key
}

func encode(env servicelayer.Envelope) (channel string, body []byte, err error) {
	wire := eventBody{
		MessageID:     env.MessageID,
		OccurredAt:    env.OccurredAt.UTC().Format(time.RFC3339Nano),
		CausationID:   env.CausationID,
		CorrelationID: env.CorrelationID,
		TraceParent:   env.TraceParent,
		TraceState:    env.TraceState,
	}
	switch ev := env.Event.(type) {
	case domain.Allocated:
		channel = LineAllocated
		wire.OrderID, wire.SKU, wire.Qty, wire.BatchRef = ev.OrderID, ev.SKU, ev.Qty, ev.BatchRef
	case domain.Deallocated:
		channel = LineDeallocated
		wire.OrderID, wire.SKU, wire.Qty, wire.BatchRef = ev.OrderID, ev.SKU, ev.Qty, ev.BatchRef
	default:
		name := "(none)"
		if env.Event != nil {
			name = env.Event.Name()
		}
		return "", nil, fmt.Errorf("no channel for event %s: %w", name, servicelayer.ErrPermanent)
	}
	if body, err = json.Marshal(wire); err != nil {
		return "", nil, fmt.Errorf("encode %s: %v: %w", env.Event.Name(), err, servicelayer.ErrPermanent)
	}
	return channel, body, nil
}
