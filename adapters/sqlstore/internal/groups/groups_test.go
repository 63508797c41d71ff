package groups

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"allocation/adapters/sqlstore/internal/turns"
)

// recorder is a group's shared state: who decided, in what order, and what
// each Write got.
type recorder struct {
	mu      sync.Mutex
	order   []string
	writes  [][]string
	running int // members deciding at once; more than one is a bug
	overlap bool
}

type fixture struct {
	t      *testing.T
	turns  *turns.Turns
	groups *Groups[*recorder, string]
	states chan *recorder // each group's state, as it starts
}

func newFixture(t *testing.T, max int) *fixture {
	f := &fixture{t: t, turns: turns.New(), states: make(chan *recorder, 16)}
	f.groups = New(Config[*recorder, string]{
		Turns: f.turns,
		Max:   max,
		Start: func(string) *recorder { r := &recorder{}; f.states <- r; return r },
		Write: func(r *recorder, decided []string) {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.writes = append(r.writes, decided)
		},
	})
	return f
}

// hold takes the key's turn, so that callers queue behind it.
func (f *fixture) hold(key string) func() {
	release, err := f.turns.Take(context.Background(), key)
	if err != nil {
		f.t.Fatal(err)
	}
	return release
}

// awaitWaiting waits, bounded, until n callers are in key's open group.
func (f *fixture) awaitWaiting(key string, n int) {
	f.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for f.groups.Waiting(key) != n {
		if time.Now().After(deadline) {
			f.t.Fatalf("%d callers wait for %s after 5 s, want %d", f.groups.Waiting(key), key, n)
		}
		time.Sleep(time.Millisecond) // polling a condition, bounded above
	}
}

// member joins, decides (recording itself), waits for the write and ends.
func (f *fixture) member(ctx context.Context, key, name string, done chan<- error) {
	m, err := f.groups.Join(ctx, key, name)
	if err != nil {
		done <- err
		return
	}
	r := m.State()
	r.mu.Lock()
	r.running++
	r.overlap = r.overlap || r.running > 1
	r.order = append(r.order, name)
	r.mu.Unlock()
	r.mu.Lock()
	r.running--
	r.mu.Unlock()
	m.Decided()
	err = m.Written(context.Background())
	m.End()
	done <- err
}

func TestMembersDecideOneAtATimeInTheOrderTheyCameAndAreWrittenOnce(t *testing.T) {
	f := newFixture(t, 64)
	release := f.hold("p")
	done := make(chan error, 5)
	names := []string{"a", "b", "c", "d", "e"}
	for i, name := range names {
		go f.member(context.Background(), "p", name, done)
		f.awaitWaiting("p", i+1) // so that they come in this order
	}
	release()
	for range names {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	r := <-f.states
	if !slices.Equal(r.order, names) || r.overlap {
		t.Errorf("decided in the order %v (overlapping: %v), want %v one at a time", r.order, r.overlap, names)
	}
	if len(r.writes) != 1 || !slices.Equal(r.writes[0], names) {
		t.Errorf("writes %v, want one of %v", r.writes, names)
	}
	if groups, members := f.groups.Formed(); groups != 1 || members != 5 {
		t.Errorf("formed %d groups of %d members, want 1 of 5", groups, members)
	}
}

func TestAMemberThatGivesUpIsLeftOutAndTheTurnStillPassesOn(t *testing.T) {
	f := newFixture(t, 64)
	release := f.hold("p")
	done := make(chan error, 3)
	go f.member(context.Background(), "p", "a", done)
	f.awaitWaiting("p", 1)
	ctx, cancel := context.WithCancel(context.Background())
	go f.member(ctx, "p", "impatient", done)
	f.awaitWaiting("p", 2)
	go f.member(context.Background(), "p", "c", done)
	f.awaitWaiting("p", 3)
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("the member that gave up got %v, want context.Canceled", err)
	}
	release()
	for range 2 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	r := <-f.states
	if len(r.writes) != 1 || !slices.Equal(r.writes[0], []string{"a", "c"}) {
		t.Errorf("writes %v, want one of a and c", r.writes)
	}
	f.takeWithin("p", 5*time.Second)
}

func TestAGroupEveryMemberLeftPassesTheTurnOn(t *testing.T) {
	f := newFixture(t, 64)
	release := f.hold("p")
	done := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	go f.member(ctx, "p", "a", done)
	f.awaitWaiting("p", 1)
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
	release()
	f.takeWithin("p", 5*time.Second)
}

func TestAFullGroupLeavesTheNextCallersToTheNextGroup(t *testing.T) {
	f := newFixture(t, 2)
	release := f.hold("p")
	done := make(chan error, 3)
	go f.member(context.Background(), "p", "a", done)
	f.awaitWaiting("p", 1)
	go f.member(context.Background(), "p", "b", done)
	f.awaitWaiting("p", 2)
	go f.member(context.Background(), "p", "c", done)
	f.awaitWaiting("p", 1) // the open group is the next one now
	release()
	for range 3 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	first, second := <-f.states, <-f.states
	if !slices.Equal(first.order, []string{"a", "b"}) || !slices.Equal(second.order, []string{"c"}) {
		t.Errorf("groups decided %v then %v, want [a b] then [c]", first.order, second.order)
	}
}

func TestTheTurnPassesOnOnlyOnceEveryMemberEnded(t *testing.T) {
	f := newFixture(t, 64)
	release := f.hold("p")
	joined := make(chan *Member[*recorder, string], 2)
	for i, name := range []string{"a", "b"} {
		go func() {
			m, err := f.groups.Join(context.Background(), "p", name)
			if err != nil {
				t.Error(err)
				return
			}
			m.Decided()
			joined <- m
		}()
		f.awaitWaiting("p", i+1)
	}
	release()
	a, b := <-joined, <-joined
	a.End()
	if other, free := f.turns.TryTake("p"); free {
		other()
		t.Fatal("the turn passed on while a member had not ended")
	}
	b.End()
	b.End() // twice does nothing more
	f.takeWithin("p", 5*time.Second)
}

// takeWithin takes and gives back key's turn, failing when it is not free
// within d.
func (f *fixture) takeWithin(key string, d time.Duration) {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	release, err := f.turns.Take(ctx, key)
	if err != nil {
		f.t.Fatalf("the turn of %s is not free: %v", key, err)
	}
	release()
}
