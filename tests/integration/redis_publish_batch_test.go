package integration_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	goredis "github.com/redis/go-redis/v9"

	"allocation/adapters/redis"
	"allocation/domain"
	"allocation/servicelayer"
	"allocation/tests/testenv"
)

// roundTrips counts what a client sends: a command or a pipeline is one
// round trip. The handshake of a new connection (HELLO, CLIENT SETINFO) is
// not counted.
type roundTrips struct {
	trips     atomic.Int64
	pipelined atomic.Int64 // commands sent in pipelines
	// tamper, when set, may change a pipeline before it is sent.
	tamper func(cmds []goredis.Cmder) []goredis.Cmder
}

func (r *roundTrips) DialHook(next goredis.DialHook) goredis.DialHook { return next }

func (r *roundTrips) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook {
	return func(ctx context.Context, cmd goredis.Cmder) error {
		if cmd.Name() != "hello" {
			r.trips.Add(1)
		}
		return next(ctx, cmd)
	}
}

func (r *roundTrips) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []goredis.Cmder) error {
		if cmds[0].Name() == "client" {
			return next(ctx, cmds)
		}
		r.trips.Add(1)
		r.pipelined.Add(int64(len(cmds)))
		if r.tamper != nil {
			cmds = r.tamper(cmds)
		}
		return next(ctx, cmds)
	}
}

// countRoundTrips makes rc count its round trips from now on, once Redis
// has the publisher's script (loading it after NOSCRIPT costs two more).
func countRoundTrips(t *testing.T, rc *goredis.Client) *roundTrips {
	t.Helper()
	warmUp := testenv.Prefix()
	testenv.DeleteKeysAtEnd(t, rc, warmUp)
	if err := redis.NewPublisher(rc, warmUp).Publish(context.Background(), allocatedEnv(0)); err != nil {
		t.Fatal(err)
	}
	r := &roundTrips{}
	rc.AddHook(r)
	return r
}

func keysWith(ctx context.Context, rc *goredis.Client, prefix string) ([]string, error) {
	var keys []string
	iter := rc.Scan(ctx, 0, "*"+prefix+"*", 1000).Iterator()
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	slices.Sort(keys)
	return keys, iter.Err()
}

func allocatedEnv(i int) servicelayer.Envelope {
	return servicelayer.NewEnvelope(context.Background(), domain.Allocated{OrderID: fmt.Sprintf("o%d", i), SKU: "LAMP", Qty: 1, BatchRef: "b1"}, time.Now())
}

func deallocatedEnv(i int) servicelayer.Envelope {
	return servicelayer.NewEnvelope(context.Background(), domain.Deallocated{OrderID: fmt.Sprintf("o%d", i), SKU: "LAMP", Qty: 1, BatchRef: "b1"}, time.Now())
}

// streamIDs is the message_id of every entry of stream, oldest first.
func streamIDs(t *testing.T, rc *goredis.Client, stream string) []string {
	t.Helper()
	entries, err := rc.XRange(context.Background(), stream, "-", "+").Result()
	if err != nil {
		t.Fatalf("XRANGE %s: %v", stream, err)
	}
	ids := make([]string, len(entries))
	for i, e := range entries {
		ids[i], _ = e.Values["message_id"].(string)
	}
	return ids
}

// channelIDs reads n messages from ch and returns their message_id.
func channelIDs(t *testing.T, ch <-chan *goredis.Message, n int) []string {
	t.Helper()
	ids := make([]string, n)
	for i := range ids {
		var body struct {
			MessageID string `json:"message_id"`
		}
		m := awaitMessage(t, ch)
		if err := json.Unmarshal([]byte(m.Payload), &body); err != nil {
			t.Fatalf("message %d %s: %v", i, m.Payload, err)
		}
		ids[i] = body.MessageID
	}
	return ids
}

// byChannel splits the message ids of envs by the channel they go out on.
func byChannel(envs []servicelayer.Envelope) map[string][]string {
	out := map[string][]string{}
	for _, env := range envs {
		ch := redis.LineAllocated
		if _, ok := env.Event.(domain.Deallocated); ok {
			ch = redis.LineDeallocated
		}
		out[ch] = append(out[ch], env.MessageID)
	}
	return out
}

// Runs of events of one channel, up to 250 long (over the cap of one
// script call), alternating between the two channels: each stream and each
// channel gets its events in the order of the batch, from one round trip.
func TestRedisPublishBatchKeepsTheOrderOfTwoThousandMixedEventsInOneRoundTrip(t *testing.T) {
	onEveryRedis(t, func(t *testing.T, connect redisConnector) {
		rc, prefix := connect(t), testenv.Prefix()
		testenv.DeleteKeysAtEnd(t, rc, prefix)
		channels := map[string]<-chan *goredis.Message{
			redis.LineAllocated:   subscribeTo(t, rc, prefix+redis.LineAllocated),
			redis.LineDeallocated: subscribeTo(t, rc, prefix+redis.LineDeallocated),
		}
		rng := rand.New(rand.NewPCG(1, 2))
		var envs []servicelayer.Envelope
		for dealloc := false; len(envs) < 2000; dealloc = !dealloc {
			for range min(1+rng.IntN(250), 2000-len(envs)) {
				if dealloc {
					envs = append(envs, deallocatedEnv(len(envs)))
				} else {
					envs = append(envs, allocatedEnv(len(envs)))
				}
			}
		}
		trips := countRoundTrips(t, rc)

		if err := redis.NewPublisher(rc, prefix).PublishBatch(context.Background(), envs); err != nil {
			t.Fatalf("PublishBatch: %v", err)
		}

		if n := trips.trips.Load(); n != 1 {
			t.Errorf("%d round trips, want 1", n)
		}
		for channel, want := range byChannel(envs) {
			if got := streamIDs(t, rc, prefix+channel); !slices.Equal(got, want) {
				t.Errorf("stream %s: %d entries, want the %d of the batch in its order", channel, len(got), len(want))
			}
			if got := channelIDs(t, channels[channel], len(want)); !slices.Equal(got, want) {
				t.Errorf("channel %s: messages not in the order of the batch", channel)
			}
		}
	})
}

// More events of one channel than one script call takes go out in several
// calls, in order, still in one round trip.
func TestRedisPublishBatchSplitsALongRunOfOneChannelAndKeepsItsOrder(t *testing.T) {
	onEveryRedis(t, func(t *testing.T, connect redisConnector) {
		rc, prefix := connect(t), testenv.Prefix()
		testenv.DeleteKeysAtEnd(t, rc, prefix)
		envs := make([]servicelayer.Envelope, 1234)
		for i := range envs {
			envs[i] = allocatedEnv(i)
		}
		trips := countRoundTrips(t, rc)

		if err := redis.NewPublisher(rc, prefix).PublishBatch(context.Background(), envs); err != nil {
			t.Fatalf("PublishBatch: %v", err)
		}

		if n, calls := trips.trips.Load(), trips.pipelined.Load(); n != 1 || calls < 2 {
			t.Errorf("%d round trips carrying %d script calls; want one carrying several", n, calls)
		}
		if got, want := streamIDs(t, rc, prefix+redis.LineAllocated), byChannel(envs)[redis.LineAllocated]; !slices.Equal(got, want) {
			t.Fatalf("stream has %d entries, want the %d of the batch in its order", len(got), len(want))
		}
	})
}

func TestRedisPublishBatchSkipsIDsRepeatedWithinAndAcrossBatches(t *testing.T) {
	onEveryRedis(t, func(t *testing.T, connect redisConnector) {
		rc, prefix := connect(t), testenv.Prefix()
		testenv.DeleteKeysAtEnd(t, rc, prefix)
		messages := subscribeTo(t, rc, prefix+redis.LineAllocated)
		a, b, c, d, e := allocatedEnv(1), allocatedEnv(2), allocatedEnv(3), allocatedEnv(4), allocatedEnv(5)
		pub := redis.NewPublisher(rc, prefix)

		for _, batch := range [][]servicelayer.Envelope{{a, b, a, c}, {b, d, c, e}, {e}} {
			if err := pub.PublishBatch(context.Background(), batch); err != nil {
				t.Fatalf("PublishBatch: %v", err)
			}
		}

		want := []string{a.MessageID, b.MessageID, c.MessageID, d.MessageID, e.MessageID}
		if got := streamIDs(t, rc, prefix+redis.LineAllocated); !slices.Equal(got, want) {
			t.Fatalf("stream %v, want %v", got, want)
		}
		if got := channelIDs(t, messages, len(want)); !slices.Equal(got, want) {
			t.Fatalf("channel %v, want %v", got, want)
		}
		select {
		case m := <-messages:
			t.Fatalf("the channel got a repeat: %s", m.Payload)
		case <-time.After(200 * time.Millisecond):
		}
	})
}

// When a call of a batch fails and a later call on the same stream reaches
// Redis, the later one publishes nothing: the stream never gets a later
// event of the batch without an earlier one, and the batch sent again fills
// it in order.
func TestRedisPublishBatchThatFailedPartwayIsCompletedInOrderWhenSentAgain(t *testing.T) {
	onEveryRedis(t, func(t *testing.T, connect redisConnector) {
		rc, prefix := connect(t), testenv.Prefix()
		testenv.DeleteKeysAtEnd(t, rc, prefix)
		a1, d1, a2, d2 := allocatedEnv(1), deallocatedEnv(2), allocatedEnv(3), deallocatedEnv(4)
		batch := []servicelayer.Envelope{a1, d1, a2, d2}
		pub := redis.NewPublisher(rc, prefix)
		trips := countRoundTrips(t, rc)
		lost := errors.New("lost on the way")
		trips.tamper = func(cmds []goredis.Cmder) []goredis.Cmder {
			cmds[0].SetErr(lost) // a1's call never reaches Redis; the others do
			return cmds[1:]
		}

		if err := pub.PublishBatch(context.Background(), batch); !errors.Is(err, lost) {
			t.Fatalf("PublishBatch = %v, want the failure of the first call", err)
		}
		if got := streamIDs(t, rc, prefix+redis.LineAllocated); len(got) != 0 {
			t.Fatalf("line_allocated got %v without %s before it", got, a1.MessageID)
		}
		if got := streamIDs(t, rc, prefix+redis.LineDeallocated); !slices.Equal(got, []string{d1.MessageID, d2.MessageID}) {
			t.Fatalf("line_deallocated %v; its calls do not depend on another stream", got)
		}

		trips.tamper = nil
		if err := pub.PublishBatch(context.Background(), batch); err != nil {
			t.Fatalf("PublishBatch again: %v", err)
		}
		for channel, want := range byChannel(batch) {
			if got := streamIDs(t, rc, prefix+channel); !slices.Equal(got, want) {
				t.Errorf("stream %s %v, want %v", channel, got, want)
			}
		}
	})
}

// The published ids take the same few keys however many events go out: the
// stream and one hash per generation of ids.
func TestRedisPublisherKeepsAFixedNumberOfKeysHoweverManyEvents(t *testing.T) {
	onEveryRedis(t, func(t *testing.T, connect redisConnector) {
		rc, prefix := connect(t), testenv.Prefix()
		testenv.DeleteKeysAtEnd(t, rc, prefix)
		pub := redis.NewPublisher(rc, prefix)
		var keys [][]string
		for round := range 3 {
			var batch []servicelayer.Envelope
			for i := range 300 {
				batch = append(batch, allocatedEnv(1000*round+i))
			}
			if err := pub.PublishBatch(context.Background(), batch); err != nil {
				t.Fatal(err)
			}
			if err := pub.Publish(context.Background(), allocatedEnv(1000*round+999)); err != nil {
				t.Fatal(err)
			}
			k, err := keysWith(context.Background(), rc, prefix)
			if err != nil {
				t.Fatal(err)
			}
			keys = append(keys, k)
		}
		if len(keys[0]) != 2 || !slices.Equal(keys[0], keys[2]) {
			t.Fatalf("keys after 301, 602 and 903 events: %v; want the same two (stream, published ids)", keys)
		}
		// Every key one call touches hashes to the stream's slot on Redis
		// Cluster: the ids' key carries the stream's name as its hash tag.
		ids := slices.DeleteFunc(slices.Clone(keys[0]), func(k string) bool { return k == prefix+redis.LineAllocated })
		if len(ids) != 1 || !matchesHashTag(ids[0], prefix+redis.LineAllocated) {
			t.Fatalf("published ids kept in %v; want one key tagged {%s}", ids, prefix+redis.LineAllocated)
		}
	})
}

func matchesHashTag(key, tag string) bool {
	return len(key) > len(tag)+2 && key[:len(tag)+2] == "{"+tag+"}"
}

// An id is remembered for at least the TTL wherever in its generation it
// was published, and forgotten after twice the TTL at the latest.
func TestRedisPublisherRemembersAnIDForAtLeastTheTTL(t *testing.T) {
	onEveryRedis(t, func(t *testing.T, connect redisConnector) {
		rc, prefix := connect(t), testenv.Prefix()
		testenv.DeleteKeysAtEnd(t, rc, prefix)
		const ttl = time.Minute
		pub := redis.NewPublisher(rc, prefix)
		pub.SetPublishedIDTTL(ttl)
		var clock time.Time
		pub.SetClock(func() time.Time { return clock })
		start := time.Now().Truncate(ttl)

		var want []string
		for _, into := range []time.Duration{0, ttl / 2, ttl - time.Second} {
			env := allocatedEnv(int(into))
			for _, at := range []time.Duration{0, ttl - time.Second, 2 * ttl} {
				clock = start.Add(into + at)
				if err := pub.Publish(context.Background(), env); err != nil {
					t.Fatal(err)
				}
			}
			want = append(want, env.MessageID, env.MessageID) // again after 2 TTL
			start = start.Add(3 * ttl)
		}
		if got := streamIDs(t, rc, prefix+redis.LineAllocated); !slices.Equal(got, want) {
			t.Fatalf("stream %v; want each id once within the TTL and again after twice the TTL: %v", got, want)
		}
	})
}

// The publisher asks for MAXLEN ~ n on every append: both servers keep
// about n entries, the newest. Redis trims whole nodes of its stream (100
// entries by default), so it may keep up to a node more; the embedded
// server trims to n exactly.
func TestOutboundStreamsKeepAboutTheirMaxLenOfTheNewestEntries(t *testing.T) {
	onEveryRedis(t, func(t *testing.T, connect redisConnector) {
		rc, prefix := connect(t), testenv.Prefix()
		testenv.DeleteKeysAtEnd(t, rc, prefix)
		const maxLen = 100
		pub := redis.NewPublisher(rc, prefix)
		pub.SetStreamMaxLen(maxLen)
		var last string
		for round := range 10 {
			batch := make([]servicelayer.Envelope, 100)
			for i := range batch {
				batch[i] = allocatedEnv(100*round + i)
			}
			if err := pub.PublishBatch(context.Background(), batch); err != nil {
				t.Fatal(err)
			}
			last = batch[len(batch)-1].MessageID
		}
		ids := streamIDs(t, rc, prefix+redis.LineAllocated)
		if len(ids) < maxLen || len(ids) >= 2*maxLen || ids[len(ids)-1] != last {
			t.Fatalf("stream keeps %d entries of 1,000; want about %d, ending with the newest", len(ids), maxLen)
		}
	})
}

// publishedIDs counts the ids kept in every generation of stream's
// published ids, by key.
func publishedIDs(t *testing.T, rc *goredis.Client, stream string) map[string]int64 {
	t.Helper()
	ctx := context.Background()
	var keys []string
	iter := rc.Scan(ctx, 0, "{"+stream+"}:published:*", 1000).Iterator()
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	ids := map[string]int64{}
	for _, k := range keys {
		n, err := rc.HLen(ctx, k).Result()
		if err != nil {
			t.Fatalf("HLEN %s: %v", k, err)
		}
		ids[k] = n
	}
	return ids
}

// With a limit of 100 ids a generation, 1,000 events in batches of 40
// leave at most two generations of under 140 ids in Redis: the generations
// rotate by count, and the one a rotation leaves unchecked is deleted. An
// id is still remembered through 100 later events, and forgotten once two
// generations passed it.
func TestRedisPublisherWithAnIDLimitKeepsTwoGenerationsOfAtMostTheLimit(t *testing.T) {
	onEveryRedis(t, func(t *testing.T, connect redisConnector) {
		rc, prefix := connect(t), testenv.Prefix()
		testenv.DeleteKeysAtEnd(t, rc, prefix)
		const limit = 100
		pub := redis.NewPublisher(rc, prefix)
		pub.SetPublishedIDLimit(limit)
		stream := prefix + redis.LineAllocated
		var envs []servicelayer.Envelope
		for round := range 25 {
			batch := make([]servicelayer.Envelope, 40)
			for i := range batch {
				batch[i] = allocatedEnv(100*round + i)
			}
			if err := pub.PublishBatch(context.Background(), batch); err != nil {
				t.Fatal(err)
			}
			envs = append(envs, batch...)
			kept := publishedIDs(t, rc, stream)
			if len(kept) > 2 || slices.ContainsFunc(slices.Collect(maps.Values(kept)), func(n int64) bool { return n >= limit+int64(len(batch)) }) {
				t.Fatalf("after %d events Redis keeps %v published ids; want at most 2 generations of %d and a batch", len(envs), kept, limit)
			}
		}
		recent, old := envs[len(envs)-limit:], envs[:len(envs)-3*limit]
		if err := pub.PublishBatch(context.Background(), append(slices.Clone(recent), old[0])); err != nil {
			t.Fatal(err)
		}
		ids := streamIDs(t, rc, stream)
		if n := len(ids); n != len(envs)+1 || ids[n-1] != old[0].MessageID {
			t.Fatalf("stream has %d entries ending in %s; want the %d events once and the forgotten %s again at the end",
				n, ids[n-1], len(envs), old[0].MessageID)
		}
	})
}

// With a limit, a generation also ends after the TTL however few events
// went into it: an id published in a quiet hour is remembered through the
// next generation and forgotten after it, as without a limit, and the
// generation that held it is deleted.
func TestRedisPublisherWithAnIDLimitStillRotatesAfterTheTTL(t *testing.T) {
	onEveryRedis(t, func(t *testing.T, connect redisConnector) {
		rc, prefix := connect(t), testenv.Prefix()
		testenv.DeleteKeysAtEnd(t, rc, prefix)
		const ttl = time.Minute
		pub := redis.NewPublisher(rc, prefix)
		pub.SetPublishedIDLimit(1000)
		pub.SetPublishedIDTTL(ttl)
		start := time.Now()
		var clock time.Time
		pub.SetClock(func() time.Time { return clock })
		stream := prefix + redis.LineAllocated
		a := allocatedEnv(0)
		var want []string
		for i, at := range []time.Duration{0, ttl - time.Second, ttl, 2 * ttl} {
			clock = start.Add(at)
			other := allocatedEnv(i + 1)
			if err := pub.PublishBatch(context.Background(), []servicelayer.Envelope{a, other}); err != nil {
				t.Fatal(err)
			}
			if i == 0 || i == 3 {
				want = append(want, a.MessageID)
			}
			want = append(want, other.MessageID)
		}
		if got := streamIDs(t, rc, stream); !slices.Equal(got, want) {
			t.Fatalf("stream %v; want %s once within two generations and again after them: %v", got, a.MessageID, want)
		}
		if kept := publishedIDs(t, rc, stream); len(kept) != 2 {
			t.Fatalf("published ids kept in %v; want the last two generations only", kept)
		}
	})
}

// Redis lost its scripts (a restart, SCRIPT FLUSH): the publisher loads the
// script again and publishes. Run on the embedded server only: flushing the
// scripts of the shared Redis would disturb other tests.
func TestRedisPublisherLoadsItsScriptAgainWhenRedisLostIt(t *testing.T) {
	t.Parallel()
	rc, prefix := embeddedRedis(t), testenv.Prefix()
	pub := redis.NewPublisher(rc, prefix)
	first, second := allocatedEnv(1), deallocatedEnv(2)
	if err := pub.Publish(context.Background(), first); err != nil {
		t.Fatal(err)
	}
	if err := rc.ScriptFlush(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	if err := pub.PublishBatch(context.Background(), []servicelayer.Envelope{first, second, allocatedEnv(3)}); err != nil {
		t.Fatalf("PublishBatch after SCRIPT FLUSH: %v", err)
	}
	if n := len(streamIDs(t, rc, prefix+redis.LineAllocated)) + len(streamIDs(t, rc, prefix+redis.LineDeallocated)); n != 3 {
		t.Fatalf("%d entries, want 3", n)
	}
}

func TestRedisPublisherSendsDeallocatedAsLineDeallocatedWithTheBatchTheLineLeft(t *testing.T) {
	onEveryRedis(t, func(t *testing.T, connect redisConnector) {
		rc, prefix := connect(t), testenv.Prefix()
		testenv.DeleteKeysAtEnd(t, rc, prefix)
		messages := subscribeTo(t, rc, prefix+redis.LineDeallocated)
		ev := domain.Deallocated{OrderID: testenv.RandomName("order-"), SKU: testenv.RandomName("sku-"), Qty: 3, BatchRef: testenv.RandomName("batch-")}
		env := servicelayer.Envelope{
			MessageID:     uuid.NewString(),
			OccurredAt:    time.Date(2026, 3, 14, 15, 9, 26, 535000000, time.FixedZone("CET", 3600)),
			CausationID:   "cause-1",
			CorrelationID: "chain-1",
			Event:         ev,
		}
		if err := redis.NewPublisher(rc, prefix).Publish(context.Background(), env); err != nil {
			t.Fatalf("Publish: %v", err)
		}

		msg := awaitMessage(t, messages)
		var body map[string]any
		if err := json.Unmarshal([]byte(msg.Payload), &body); err != nil {
			t.Fatalf("payload %s is not a JSON object: %v", msg.Payload, err)
		}
		want := map[string]any{
			"orderid": ev.OrderID, "sku": ev.SKU, "qty": float64(ev.Qty), "batchref": ev.BatchRef, "message_id": env.MessageID,
			"occurred_at": "2026-03-14T14:09:26.535Z", "causation_id": "cause-1", "correlation_id": "chain-1",
		}
		if !maps.Equal(body, want) {
			t.Fatalf("line_deallocated %v, want %v", body, want)
		}
		entries, err := rc.XRange(context.Background(), prefix+redis.LineDeallocated, "-", "+").Result()
		if err != nil || len(entries) != 1 || entries[0].Values["data"] != msg.Payload || entries[0].Values["message_id"] != env.MessageID {
			t.Fatalf("stream entries %v (%v); want the message with its message_id", entries, err)
		}
	})
}

// BenchmarkRedisPublishBatch times batches of new events of one channel, on
// each Redis server: what a script call of n events costs, round trip
// included (batches beyond the cap of one call take several).
func BenchmarkRedisPublishBatch(b *testing.B) {
	for name, connect := range redisServers() {
		for _, n := range []int{1, 10, 100, 1000} {
			b.Run(fmt.Sprintf("%s/events=%d", name, n), func(b *testing.B) {
				rc, prefix := connect(b), testenv.Prefix()
				b.Cleanup(func() {
					ctx := context.Background()
					keys, _ := keysWith(ctx, rc, prefix)
					if len(keys) > 0 {
						rc.Del(ctx, keys...)
					}
				})
				pub := redis.NewPublisher(rc, prefix)
				batch := make([]servicelayer.Envelope, n)
				b.ResetTimer()
				for i := 0; b.Loop(); i++ {
					b.StopTimer()
					for k := range batch {
						batch[k] = allocatedEnv(i*n + k)
					}
					b.StartTimer()
					if err := pub.PublishBatch(context.Background(), batch); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*n), "µs/event")
			})
		}
	}
}

// Requests publishing at the same time share pipelines: every event goes
// out once, each publisher's in its order, in fewer round trips than
// publications (one each before pipelines were shared).
func TestRedisConcurrentPublicationsShareRoundTripsAndKeepEachPublishersOrder(t *testing.T) {
	onEveryRedis(t, func(t *testing.T, connect redisConnector) {
		rc, prefix := connect(t), testenv.Prefix()
		testenv.DeleteKeysAtEnd(t, rc, prefix)
		const publishers, each = 32, 50
		trips := countRoundTrips(t, rc)
		pub := redis.NewPublisher(rc, prefix)
		sent := make([][]string, publishers)
		errs := make(chan error, publishers)
		for g := range publishers {
			go func() {
				for i := range each {
					env := servicelayer.NewEnvelope(context.Background(),
						domain.Allocated{OrderID: fmt.Sprintf("o%d", i), SKU: fmt.Sprintf("P%d", g), Qty: 1, BatchRef: "b1"}, time.Now())
					if err := pub.Publish(context.Background(), env); err != nil {
						errs <- err
						return
					}
					sent[g] = append(sent[g], env.MessageID)
				}
				errs <- nil
			}()
		}
		for range publishers {
			if err := <-errs; err != nil {
				t.Fatalf("Publish: %v", err)
			}
		}

		got := streamIDs(t, rc, prefix+redis.LineAllocated)
		if len(got) != publishers*each {
			t.Fatalf("stream holds %d entries, want %d", len(got), publishers*each)
		}
		position := map[string]int{}
		for i, id := range got {
			position[id] = i
		}
		for g, ids := range sent {
			for i := 1; i < len(ids); i++ {
				if position[ids[i]] < position[ids[i-1]] {
					t.Fatalf("publisher %d: event %d is in the stream before event %d", g, i, i-1)
				}
			}
		}
		if n := trips.trips.Load(); n >= publishers*each {
			t.Errorf("%d round trips for %d publications, want fewer", n, publishers*each)
		}
		t.Logf("%d publications in %d round trips", publishers*each, trips.trips.Load())
	})
}
