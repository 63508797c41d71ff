package unit_test

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"strings"
	"sync"
	"testing"
	"time"

	"allocation/adapters/memory"
	"allocation/entrypoints/cli"
	"allocation/entrypoints/consumer"
	"allocation/servicelayer"
)

func TestDeadLettersCommandLineErrorsSayWhatIsWanted(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		args []string
		want string // the error mentions it
	}{
		{nil, "want `list` or `retry ID`"},
		{[]string{"purge"}, `unknown subcommand "purge"`},
		{[]string{"retry"}, "want one dead letter id, got 0"},
		{[]string{"retry", "1", "2"}, "want one dead letter id, got 2"},
		{[]string{"retry", "abc"}, `"abc" is not a dead letter id`},
		{[]string{"retry", "0"}, `"0" is not a dead letter id`},
		{[]string{"retry", "-limit", "5", "1"}, "flag provided but not defined: -limit"},
		{[]string{"list", "-limit", "0"}, "-limit 0: want 1 to 10000"},
		{[]string{"list", "-limit", "10001"}, "-limit 10001: want 1 to 10000"},
		{[]string{"list", "-limit", "many"}, `invalid value "many" for flag -limit`},
		{[]string{"list", "-after", "-1"}, "-after -1"},
		{[]string{"list", "7"}, `unexpected arguments ["7"]`},
		{[]string{"list", "-yaml"}, "flag provided but not defined: -yaml"},
	} {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			var out bytes.Buffer
			_, err := cli.ParseDeadLetters(c.args, &out)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("ParseDeadLetters(%q) = %v, want an error mentioning %q", c.args, err, c.want)
			}
			if out.Len() != 0 {
				t.Errorf("printed %q on a wrong command line; the error says it all", out.String())
			}
		})
	}
}

func TestDeadLettersCommandLinesThatParse(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		args []string
		want cli.DeadLetters
	}{
		{[]string{"list"}, cli.DeadLetters{Limit: cli.DefaultDeadLetterLimit}},
		{[]string{"list", "-limit", "5", "-json", "-after", "40"}, cli.DeadLetters{Limit: 5, JSON: true, After: 40}},
		{[]string{"retry", "42"}, cli.DeadLetters{Retry: true, ID: 42}},
		{[]string{"retry", "-again", "42"}, cli.DeadLetters{Retry: true, ID: 42, Again: true}},
	} {
		got, err := cli.ParseDeadLetters(c.args, &bytes.Buffer{})
		if err != nil || got != c.want {
			t.Errorf("ParseDeadLetters(%q) = %+v, %v; want %+v", c.args, got, err, c.want)
		}
	}
}

func TestDeadLettersHelpIsPrintedForEveryForm(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"-h"}, {"--help"}, {"help"}, {"list", "-h"}, {"retry", "-help"}} {
		var out bytes.Buffer
		if _, err := cli.ParseDeadLetters(args, &out); !errors.Is(err, flag.ErrHelp) {
			t.Errorf("%q: %v, want flag.ErrHelp", args, err)
		}
		if !strings.Contains(out.String(), "allocation dead-letters retry [-again] ID") {
			t.Errorf("%q printed %q, want the usage", args, out.String())
		}
	}
}

// fakeRedriver records what it re-drives.
type fakeRedriver struct {
	mu   sync.Mutex
	sent []servicelayer.DeadLetter
	err  error
}

func (r *fakeRedriver) Redrive(_ context.Context, l servicelayer.DeadLetter) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return r.err
	}
	r.sent = append(r.sent, l)
	return nil
}

func TestRetryingADeadLetterRedrivesItOnceAndMarksIt(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store := memory.NewStore()
	id, err := store.RecordDeadLetter(ctx, servicelayer.DeadLetter{Channel: consumer.Allocate, Payload: []byte(`{}`), Reason: "r", StreamID: "5-0"})
	if err != nil {
		t.Fatal(err)
	}
	to := &fakeRedriver{err: errors.New("redis down")}
	if _, err := servicelayer.RetryDeadLetter(ctx, store, to, id, false, time.Now()); err == nil {
		t.Fatal("a failed re-drive reported success")
	}
	if l, _ := store.DeadLetter(ctx, id); !l.RetriedAt.IsZero() {
		t.Fatal("a dead letter that was not re-driven was marked retried")
	}
	to.err = nil
	var out bytes.Buffer
	if err := (cli.DeadLetters{Retry: true, ID: id}).Run(ctx, store, to, &out); err != nil {
		t.Fatal(err)
	}
	if len(to.sent) != 1 || string(to.sent[0].Payload) != `{}` || !strings.Contains(out.String(), "re-driven on stream allocate") {
		t.Fatalf("re-driven %+v, printed %q", to.sent, out.String())
	}
	if err := (cli.DeadLetters{Retry: true, ID: id}).Run(ctx, store, to, &out); !errors.Is(err, servicelayer.ErrRetriedAlready) {
		t.Fatalf("a second retry: %v, want ErrRetriedAlready", err)
	}
	if err := (cli.DeadLetters{Retry: true, ID: id, Again: true}).Run(ctx, store, to, &out); err != nil || len(to.sent) != 2 {
		t.Fatalf("retry -again: %v, re-driven %d times", err, len(to.sent))
	}
	if err := (cli.DeadLetters{Retry: true, ID: id + 1}).Run(ctx, store, to, &out); !errors.Is(err, servicelayer.ErrUnknownDeadLetter) {
		t.Fatalf("an unknown id: %v, want ErrUnknownDeadLetter", err)
	}
}

func TestDeadLettersAreListedOldestFirst(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store := memory.NewStore()
	for _, p := range []string{"first", "second\tline", "third"} {
		if _, err := store.RecordDeadLetter(ctx, servicelayer.DeadLetter{Channel: consumer.Allocate, Payload: []byte(p), Reason: "bad"}); err != nil {
			t.Fatal(err)
		}
	}
	var out bytes.Buffer
	if err := (cli.DeadLetters{Limit: 2}).Run(ctx, store, nil, &out); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[1], "1 ") || !strings.Contains(lines[1], `"first"`) || !strings.Contains(lines[2], `"second\tline"`) {
		t.Fatalf("list printed:\n%s\nwant a header, then dead letters 1 and 2", out.String())
	}
	out.Reset()
	if err := (cli.DeadLetters{Limit: 10, After: 2, JSON: true}).Run(ctx, store, nil, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), `"id": 3`) || !strings.Contains(out.String(), `"payload": "third"`) || strings.Contains(out.String(), `"id": 2`) {
		t.Fatalf("list -json -after 2 printed %s", out.String())
	}
}

// failingRecorder fails its first failures calls with err, then records.
type failingRecorder struct {
	*memory.Store
	mu       sync.Mutex
	failures int
	err      error
}

func (r *failingRecorder) RecordDeadLetter(ctx context.Context, l servicelayer.DeadLetter) (int64, error) {
	r.mu.Lock()
	if r.failures > 0 {
		r.failures--
		r.mu.Unlock()
		return 0, r.err
	}
	r.mu.Unlock()
	return r.Store.RecordDeadLetter(ctx, l)
}

// A stream entry is acknowledged only once its dead letter is recorded: a
// database that refuses the write leaves it pending; one that was away for a
// moment is waited for.
func TestAStreamEntryIsSettledOnlyOnceItsDeadLetterIsRecorded(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name    string
		rec     *failingRecorder
		settled bool
	}{
		{"write refused", &failingRecorder{Store: memory.NewStore(), failures: 1 << 30, err: errors.New("disk full")}, false},
		{"database back", &failingRecorder{Store: memory.NewStore(), failures: 2, err: servicelayer.ErrUnavailable}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			streams := &fakeStream{settled: make(chan settlement, 1), entries: [][3]string{{consumer.Allocate, "9-0", `not json`}}}
			cons := newConsumer(t, consumer.Config{Bus: newGatedBus(nil), Owners: fakeOwners{}, Source: newFakePubSub(), DeadLetters: c.rec})
			runConsumer(t, cons, func(cons *consumer.Consumer, ctx context.Context) error { return cons.RunStreams(ctx, streams) })
			s := receive(t, streams.settled, "the entry settled or given back")
			if s.settled != c.settled {
				t.Fatalf("settled = %v, want %v", s.settled, c.settled)
			}
			kept, _ := c.rec.Store.DeadLetters(context.Background(), 0, 10)
			if c.settled && (len(kept) != 1 || kept[0].StreamID != "9-0" || string(kept[0].Payload) != "not json") {
				t.Fatalf("recorded %+v, want the entry", kept)
			}
		})
	}
}

func TestTheStreamReadersOwnRefusalsAreRecorded(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rec := &failingRecorder{Store: memory.NewStore(), failures: 1, err: errors.New("disk full")}
	src := newFakePubSub()
	cons := newConsumer(t, consumer.Config{Bus: newGatedBus(nil), Owners: fakeOwners{}, Source: src, DeadLetters: rec})
	if err := cons.SetAsideEntry(ctx, consumer.Allocate, "3-0", []byte(`{"message_id": "m-7"}`), "delivered 5 times"); err == nil {
		t.Fatal("SetAsideEntry succeeded though nothing was recorded: the entry would be acknowledged and lost")
	}
	if err := cons.SetAsideEntry(ctx, consumer.Allocate, "3-0", []byte(`{"message_id": "m-7"}`), "delivered 5 times"); err != nil {
		t.Fatal(err)
	}
	kept, _ := rec.Store.DeadLetters(ctx, 0, 10)
	if len(kept) != 1 || kept[0].StreamID != "3-0" || kept[0].MessageID != "m-7" || !strings.HasPrefix(kept[0].Reason, "delivered 5 times; ") {
		t.Fatalf("recorded %+v", kept)
	}
	if got := src.deadLetters(); len(got) != 1 {
		t.Fatalf("the Redis list got %q, want the recorded entry once", got)
	}
}
