package integration_test

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"allocation/adapters/memory"
	"allocation/adapters/redis"
	"allocation/bootstrap"
	"allocation/domain"
	"allocation/entrypoints/cli"
	"allocation/entrypoints/consumer"
	"allocation/servicelayer"
	"allocation/tests/testenv"
)

// archives are every implementation of the dead-letter archive.
func archives() map[string]func(t *testing.T) servicelayer.DeadLetterArchive {
	return map[string]func(t *testing.T) servicelayer.DeadLetterArchive{
		"memory":   func(*testing.T) servicelayer.DeadLetterArchive { return memory.NewStore() },
		"postgres": func(t *testing.T) servicelayer.DeadLetterArchive { return freshPG(t).store },
		"sqlite":   func(t *testing.T) servicelayer.DeadLetterArchive { return freshSQLite(t).store },
	}
}

// Whatever a sender sent is kept as it came, bytes that are not text
// included, and read back oldest first, a page at a time.
func TestContractOfTheDeadLetterArchives(t *testing.T) {
	onEach(t, archives(), func(t *testing.T, open func(t *testing.T) servicelayer.DeadLetterArchive) {
		ctx := context.Background()
		a := open(t)
		received := time.Now().Add(-time.Minute).UTC().Truncate(time.Microsecond)
		sent := []servicelayer.DeadLetter{
			{Channel: consumer.Allocate, Payload: []byte("not json"), Reason: "body must be a JSON object", ReceivedAt: received},
			{Channel: consumer.Allocate, Payload: []byte{0xff, 0x00, 'x'}, Reason: "bad \xff byte and a \x00", StreamID: "1-0", ReceivedAt: received},
			{Channel: consumer.ChangeBatchQuantity, Payload: nil, Reason: "empty", MessageID: "m-1", ReceivedAt: received},
		}
		var ids []int64
		for _, l := range sent {
			id, err := a.RecordDeadLetter(ctx, l)
			if err != nil {
				t.Fatalf("record %+v: %v", l, err)
			}
			ids = append(ids, id)
		}
		if !slices.IsSorted(ids) || ids[0] == ids[1] || ids[1] == ids[2] {
			t.Fatalf("ids %v, want growing", ids)
		}
		all, err := a.DeadLetters(ctx, 0, 10)
		if err != nil || len(all) != 3 {
			t.Fatalf("DeadLetters = %+v, %v; want 3", all, err)
		}
		for i, got := range all {
			want := sent[i]
			if got.ID != ids[i] || got.Channel != want.Channel || !bytes.Equal(got.Payload, want.Payload) ||
				got.StreamID != want.StreamID || got.MessageID != want.MessageID || !got.RetriedAt.IsZero() ||
				!got.ReceivedAt.Equal(received) || got.RecordedAt.IsZero() {
				t.Errorf("dead letter %d = %+v, want %+v as recorded", i, got, want)
			}
		}
		if all[0].Reason != sent[0].Reason || all[1].Reason == "" {
			t.Errorf("reasons %q, %q", all[0].Reason, all[1].Reason)
		}
		page, err := a.DeadLetters(ctx, ids[0], 1)
		if err != nil || len(page) != 1 || page[0].ID != ids[1] {
			t.Fatalf("page after %d = %+v, %v; want dead letter %d alone", ids[0], page, err, ids[1])
		}

		at := time.Now().UTC().Truncate(time.Microsecond)
		if err := a.MarkDeadLetterRetried(ctx, ids[1], at); err != nil {
			t.Fatal(err)
		}
		got, err := a.DeadLetter(ctx, ids[1])
		if err != nil || !got.RetriedAt.Equal(at) {
			t.Fatalf("DeadLetter(%d) = %+v, %v; want retried at %s", ids[1], got, err, at)
		}
		if _, err := a.DeadLetter(ctx, ids[2]+1000); !errors.Is(err, servicelayer.ErrUnknownDeadLetter) {
			t.Fatalf("an unknown id: %v, want ErrUnknownDeadLetter", err)
		}
		if err := a.MarkDeadLetterRetried(ctx, ids[2]+1000, at); !errors.Is(err, servicelayer.ErrUnknownDeadLetter) {
			t.Fatalf("marking an unknown id: %v, want ErrUnknownDeadLetter", err)
		}
	})
}

// service is the wired service (bootstrap) on a fresh PostgreSQL database
// and a Redis prefix of its own, its consumer running.
type service struct {
	app    *bootstrap.App
	cfg    bootstrap.Config
	db     *sql.DB
	rc     *goredis.Client
	prefix string
}

func startService(t *testing.T) *service {
	t.Helper()
	ctx := context.Background()
	s := &service{prefix: testenv.Prefix(), rc: testenv.Redis(t)}
	env := map[string]string{
		"DATABASE_URL":  testenv.FreshDatabase(t),
		"REDIS_URL":     testenv.RedisURL(),
		"REDIS_PREFIX":  s.prefix,
		"HTTP_ADDR":     "127.0.0.1:0",
		"CONSUMER_NAME": "c1",
	}
	cfg, err := bootstrap.FromEnv(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	s.cfg = cfg
	testenv.DeleteKeysAtEnd(t, s.rc, s.prefix) // after the service has stopped
	if err := bootstrap.Migrate(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	s.db, err = sql.Open("postgres", cfg.DatabaseURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.db.Close() })
	// Every refused message is logged; only errors are worth showing.
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	s.app, err = bootstrap.New(ctx, cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := s.app.Run(runCtx, bootstrap.Parts{Consumer: true}); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		s.app.Close()
	})
	// Pub/sub drops what is published before the subscription.
	testenv.Eventually(t, waitTimeout, func() error {
		n, err := s.rc.PubSubNumSub(ctx, s.prefix+consumer.Allocate, s.prefix+consumer.ChangeBatchQuantity).Result()
		if err != nil {
			return err
		}
		if n[s.prefix+consumer.Allocate] == 0 || n[s.prefix+consumer.ChangeBatchQuantity] == 0 {
			return fmt.Errorf("not subscribed yet: %v", n)
		}
		return nil
	})
	return s
}

func (s *service) count(t *testing.T, query string, args ...any) int {
	t.Helper()
	var n int
	if err := s.db.QueryRow(query, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

// metric is the value of the sample of the service's metrics named by
// series (name and labels as exposed), 0 when it is not there.
func (s *service) metric(t *testing.T, series string) float64 {
	t.Helper()
	rec := httptest.NewRecorder()
	s.app.Handler.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /metrics: %d", rec.Code)
	}
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindStringSubmatch(rec.Body.String())
	if m == nil {
		return 0
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func (s *service) pending(t *testing.T, stream string) int64 {
	t.Helper()
	p, err := s.rc.XPending(context.Background(), s.prefix+stream, "allocation").Result()
	if err != nil {
		t.Fatalf("XPENDING %s: %v", stream, err)
	}
	return p.Count
}

// The Redis list keeps the newest 10,000 dead letters; the database keeps
// every one, from streams and from pub/sub, and a stream entry is
// acknowledged once its dead letter is in. What the list trimmed is counted.
func TestEveryRefusedMessageIsRecordedBeyondTheRedisListsBound(t *testing.T) {
	t.Parallel()
	s := startService(t)
	ctx := context.Background()
	const perSource = (redis.MaxDeadLetters + 100) / 2
	pipe := s.rc.Pipeline()
	for i := range perSource {
		pipe.XAdd(ctx, &goredis.XAddArgs{Stream: s.prefix + consumer.Allocate, Values: map[string]any{"data": fmt.Sprintf("not json %d", i)}})
		pipe.Publish(ctx, s.prefix+consumer.ChangeBatchQuantity, fmt.Sprintf(`{"batchref": "b", "qty": "lots %d"}`, i))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}

	testenv.Eventually(t, 2*time.Minute, func() error {
		if n := s.count(t, `SELECT count(*) FROM dead_letters`); n != 2*perSource {
			return fmt.Errorf("%d dead letters recorded, want %d", n, 2*perSource)
		}
		return nil
	})
	if n := s.count(t, `SELECT count(DISTINCT stream_id) FROM dead_letters WHERE channel = $1`, consumer.Allocate); n != perSource {
		t.Errorf("%d stream entries recorded, want %d", n, perSource)
	}
	if n := s.count(t, `SELECT count(*) FROM dead_letters WHERE channel = $1 AND stream_id IS NULL`, consumer.ChangeBatchQuantity); n != perSource {
		t.Errorf("%d pub/sub messages recorded, want %d", n, perSource)
	}
	// Recorded first, acknowledged after: nothing left pending.
	testenv.Eventually(t, waitTimeout, func() error {
		if n := s.pending(t, consumer.Allocate); n != 0 {
			return fmt.Errorf("%d entries still pending", n)
		}
		return nil
	})
	// The list holds the newest 10,000 once the last ones are in.
	testenv.Eventually(t, waitTimeout, func() error {
		trimmed := s.metric(t, "allocation_dead_letter_list_trimmed_total")
		n, err := s.rc.LLen(ctx, s.prefix+redis.DeadLetters).Result()
		if err != nil || n != redis.MaxDeadLetters || trimmed != 2*perSource-redis.MaxDeadLetters {
			return fmt.Errorf("list holds %d (%v) and %v were trimmed; want %d and %d", n, err, trimmed, redis.MaxDeadLetters, 2*perSource-redis.MaxDeadLetters)
		}
		return nil
	})
	for _, ch := range []string{consumer.Allocate, consumer.ChangeBatchQuantity} {
		if got := s.metric(t, `allocation_dead_letters_recorded_total{channel="`+ch+`"}`); got != perSource {
			t.Errorf("dead letters recorded on %s: metric %v, want %d", ch, got, perSource)
		}
	}
}

// A message refused because it came too early (its batch or SKU did not
// exist yet) is applied once re-driven, from a stream or from pub/sub; the
// dead letter is marked retried, and is not re-driven twice by mistake.
func TestARetriedDeadLetterIsAppliedWhereItCameFrom(t *testing.T) {
	t.Parallel()
	s := startService(t)
	ctx := context.Background()
	ref, sku, order := testenv.RandomName("b-"), testenv.RandomName("SKU-"), testenv.RandomName("o-")
	if err := s.rc.XAdd(ctx, &goredis.XAddArgs{Stream: s.prefix + consumer.ChangeBatchQuantity,
		Values: map[string]any{"data": `{"batchref": "` + ref + `", "qty": 7}`}}).Err(); err != nil {
		t.Fatal(err)
	}
	if err := s.rc.Publish(ctx, s.prefix+consumer.Allocate, `{"orderid": "`+order+`", "sku": "`+sku+`", "qty": 3}`).Err(); err != nil {
		t.Fatal(err)
	}
	var letters []servicelayer.DeadLetter
	testenv.Eventually(t, 10*time.Second, func() error {
		var err error
		if letters, err = s.app.Store.DeadLetters(ctx, 0, 10); err != nil || len(letters) != 2 {
			return fmt.Errorf("dead letters %+v (%v), want 2", letters, err)
		}
		return nil
	})
	byChannel := map[string]servicelayer.DeadLetter{}
	for _, l := range letters {
		byChannel[l.Channel] = l
	}
	change, allocate := byChannel[consumer.ChangeBatchQuantity], byChannel[consumer.Allocate]
	if !change.FromStream() || allocate.FromStream() {
		t.Fatalf("dead letters %+v: want the change from the stream, the allocation from pub/sub", letters)
	}
	if _, err := s.app.Bus.Handle(ctx, domain.CreateBatch{Ref: ref, SKU: sku, Qty: 20}); err != nil {
		t.Fatal(err)
	}

	redriver := redis.NewRedriver(s.rc, s.prefix)
	for _, l := range []servicelayer.DeadLetter{change, allocate} {
		var out bytes.Buffer
		if err := (cli.DeadLetters{Retry: true, ID: l.ID}).Run(ctx, s.app.Store, redriver, &out); err != nil {
			t.Fatalf("retry %d: %v", l.ID, err)
		}
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		var qty int
		if err := s.db.QueryRow(`SELECT purchased_quantity FROM batches WHERE reference = $1`, ref).Scan(&qty); err != nil || qty != 7 {
			return fmt.Errorf("batch %s holds %d (%v), want 7", ref, qty, err)
		}
		got, err := s.app.Store.Allocations(ctx, order)
		if err != nil || len(got) != 1 || got[0].BatchRef != ref {
			return fmt.Errorf("allocations of %s = %v (%v), want %s", order, got, err, ref)
		}
		return nil
	})
	for _, l := range []servicelayer.DeadLetter{change, allocate} {
		got, err := s.app.Store.DeadLetter(ctx, l.ID)
		if err != nil || got.RetriedAt.IsZero() {
			t.Errorf("dead letter %d = %+v (%v), want it marked retried", l.ID, got, err)
		}
	}
	if n := s.count(t, `SELECT count(*) FROM dead_letters`); n != 2 {
		t.Errorf("%d dead letters after the retries succeeded, want the 2 retried", n)
	}
	if _, err := servicelayer.RetryDeadLetter(ctx, s.app.Store, redriver, change.ID, false, time.Now()); !errors.Is(err, servicelayer.ErrRetriedAlready) {
		t.Errorf("a second retry: %v, want ErrRetriedAlready", err)
	}
	if _, err := servicelayer.RetryDeadLetter(ctx, s.app.Store, redriver, 1_000_000, false, time.Now()); !errors.Is(err, servicelayer.ErrUnknownDeadLetter) {
		t.Errorf("an unknown id: %v, want ErrUnknownDeadLetter", err)
	}
}

// A retry that is refused again is a dead letter of its own.
func TestADeadLetterRefusedAgainOnRetryIsANewDeadLetter(t *testing.T) {
	t.Parallel()
	s := startService(t)
	ctx := context.Background()
	if err := s.rc.XAdd(ctx, &goredis.XAddArgs{Stream: s.prefix + consumer.Allocate, Values: map[string]any{"data": `{"orderid": "o", "sku": "NOPE", "qty": 1}`}}).Err(); err != nil {
		t.Fatal(err)
	}
	await := func(n int) []servicelayer.DeadLetter {
		t.Helper()
		var letters []servicelayer.DeadLetter
		testenv.Eventually(t, 10*time.Second, func() error {
			var err error
			if letters, err = s.app.Store.DeadLetters(ctx, 0, 10); err != nil || len(letters) != n {
				return fmt.Errorf("dead letters %+v (%v), want %d", letters, err, n)
			}
			return nil
		})
		return letters
	}
	first := await(1)[0]
	if _, err := servicelayer.RetryDeadLetter(ctx, s.app.Store, redis.NewRedriver(s.rc, s.prefix), first.ID, false, time.Now()); err != nil {
		t.Fatal(err)
	}
	second := await(2)[1]
	if second.ID == first.ID || !bytes.Equal(second.Payload, first.Payload) || second.StreamID == first.StreamID || !second.RetriedAt.IsZero() {
		t.Fatalf("after the retry: %+v, then %+v; want a new dead letter of the same payload from a new entry", first, second)
	}
}

// While the database refuses dead letters, a refused stream entry is not
// acknowledged: it stays pending, comes back, and is recorded and
// acknowledged once the database takes it.
func TestARefusedStreamEntryStaysPendingUntilItsDeadLetterIsCommitted(t *testing.T) {
	onEveryEngine(t, func(t *testing.T, open opener) {
		ctx := context.Background()
		db := open(t)
		rc, prefix := testenv.Redis(t), testenv.Prefix()
		testenv.DeleteKeysAtEnd(t, rc, prefix)
		log, _ := testLogger(t)
		bus := servicelayer.NewBus(servicelayer.Dependencies{UoW: db.store, Publisher: &recordingPublisher{}, Notifier: nopNotifier{}, Log: log})
		c, err := consumer.New(consumer.Config{Bus: bus, Owners: db.store, Source: redis.NewSubscriber(rc, prefix, log), DeadLetters: db.store, Log: log})
		if err != nil {
			t.Fatal(err)
		}
		// The table is away: every write of a dead letter fails.
		if _, err := db.ExecContext(ctx, `ALTER TABLE dead_letters RENAME TO dead_letters_away`); err != nil {
			t.Fatal(err)
		}
		id, err := rc.XAdd(ctx, &goredis.XAddArgs{Stream: prefix + consumer.Allocate, Values: map[string]any{"data": "not json"}}).Result()
		if err != nil {
			t.Fatal(err)
		}
		reader := redis.NewStreamReader(rc, prefix, redis.StreamOptions{Consumer: "c1", ClaimIdle: 100 * time.Millisecond, MaxDeliveries: 3, SetAside: c.SetAsideEntry}, log)
		runCtx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); _ = c.RunStreams(runCtx, reader) }()
		t.Cleanup(func() { cancel(); <-done })

		// Delivered again and again, past its delivery limit, and never
		// acknowledged.
		testenv.Eventually(t, 20*time.Second, func() error {
			p, err := rc.XPendingExt(ctx, &goredis.XPendingExtArgs{Stream: prefix + consumer.Allocate, Group: "allocation", Start: "-", End: "+", Count: 10}).Result()
			if err != nil {
				return err
			}
			if len(p) != 1 || p[0].ID != id || p[0].RetryCount < 4 {
				return fmt.Errorf("pending %+v, want %s delivered past its limit of 3", p, id)
			}
			return nil
		})
		if _, err := db.ExecContext(ctx, `ALTER TABLE dead_letters_away RENAME TO dead_letters`); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, 20*time.Second, func() error {
			p, err := rc.XPending(ctx, prefix+consumer.Allocate, "allocation").Result()
			if err != nil || p.Count != 0 {
				return fmt.Errorf("pending %+v (%v), want none", p, err)
			}
			return nil
		})
		letters, err := db.store.DeadLetters(ctx, 0, 10)
		if err != nil || len(letters) != 1 || letters[0].StreamID != id || string(letters[0].Payload) != "not json" {
			t.Fatalf("dead letters %+v (%v), want entry %s once", letters, err, id)
		}
		// Whether recorded by the consumer or, past its limit, by the
		// reader, the reason says what is wrong with it.
		if !strings.Contains(letters[0].Reason, "JSON object") {
			t.Errorf("reason %q, want it to say the body is not a JSON object", letters[0].Reason)
		}
	})
}

// Dead letters recorded at the same time (a flood of refused messages) are
// written together, and each gets an id of its own.
func TestDeadLettersRecordedTogetherEachGetTheirOwnRow(t *testing.T) {
	onEach(t, archives(), func(t *testing.T, open func(t *testing.T) servicelayer.DeadLetterArchive) {
		ctx := context.Background()
		a := open(t)
		const n = 300
		ids := make([]int64, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				id, err := a.RecordDeadLetter(ctx, servicelayer.DeadLetter{Channel: consumer.Allocate, Payload: []byte(strconv.Itoa(i)), Reason: "r"})
				if err != nil {
					t.Errorf("record %d: %v", i, err)
				}
				ids[i] = id
			}()
		}
		wg.Wait()
		all, err := a.DeadLetters(ctx, 0, 2*n)
		if err != nil || len(all) != n {
			t.Fatalf("%d dead letters (%v), want %d", len(all), err, n)
		}
		byID := map[int64]string{}
		for _, l := range all {
			byID[l.ID] = string(l.Payload)
		}
		for i, id := range ids {
			if byID[id] != strconv.Itoa(i) {
				t.Fatalf("record %d got id %d, which holds %q", i, id, byID[id])
			}
		}
	})
}
