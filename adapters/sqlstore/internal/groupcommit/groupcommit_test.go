package groupcommit

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"allocation/adapters/sqlstore/internal/parked"
	"allocation/servicelayer"
)

// waitFor is how long a test waits for something that should happen at once.
const waitFor = 5 * time.Second

// job stands for the changes of units of work: the names of the units and
// the products they write. A merged job holds several.
type job struct {
	names, skus []string
}

// fake is a database: it records every write, holds a write that carries a
// name in hold until that channel is closed, and refuses a write that carries
// a name in refuse with that error.
type fake struct {
	hold   map[string]chan struct{}
	refuse map[string]error
	during func(ctx context.Context) // called in every write, when set

	mu        sync.Mutex
	writes    [][]string
	inFlight  int
	most      int
	deadlines []time.Time
}

func (f *fake) port() Port[job, []string] {
	return Port[job, []string]{
		Write: f.write,
		Merge: func(all []job) job {
			var m job
			for _, j := range all {
				m.names = append(m.names, j.names...)
				m.skus = append(m.skus, j.skus...)
			}
			return m
		},
		Split: func(written []string, all []job) [][]string {
			out := make([][]string, len(all))
			for i, j := range all {
				for _, n := range j.names {
					if slices.Contains(written, n) {
						out[i] = append(out[i], n)
					}
				}
			}
			return out
		},
		Products: func(j job) []string { return j.skus },
	}
}

func (f *fake) write(ctx context.Context, j job) ([]string, error) {
	f.mu.Lock()
	f.writes = append(f.writes, slices.Clone(j.names))
	d, _ := ctx.Deadline()
	f.deadlines = append(f.deadlines, d)
	f.inFlight++
	f.most = max(f.most, f.inFlight)
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.inFlight--
		f.mu.Unlock()
	}()
	if f.during != nil {
		f.during(ctx)
	}
	for _, n := range j.names {
		if gate, ok := f.hold[n]; ok {
			<-gate
		}
	}
	for _, n := range j.names {
		if err, ok := f.refuse[n]; ok {
			return nil, err
		}
	}
	return j.names, nil
}

func (f *fake) written() [][]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.writes)
}

type outcome struct {
	name    string
	written []string
	err     error
}

// submit writes unit name on the products skus in a goroutine of its own
// and sends what came of it to out.
func submit(ctx context.Context, c *Committer[job, []string], name string, out chan<- outcome, skus ...string) {
	go func() {
		written, err := c.Write(ctx, job{names: []string{name}, skus: skus})
		out <- outcome{name: name, written: written, err: err}
	}()
}

// waitParked waits until n callers wait in Write: when no writer is free,
// they wait in the order they came, and are taken in that order.
func waitParked(t *testing.T, n int) {
	t.Helper()
	parked.Wait(t, "groupcommit.(*Committer[...]).Write(", n, waitFor)
}

// waitWrites waits until f has been asked for n writes.
func waitWrites(t *testing.T, f *fake, n int) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for len(f.written()) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d writes, want %d", len(f.written()), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// collect receives n outcomes, by name.
func collect(t *testing.T, out <-chan outcome, n int) map[string]outcome {
	t.Helper()
	got := map[string]outcome{}
	for range n {
		select {
		case o := <-out:
			got[o.name] = o
		case <-time.After(waitFor):
			t.Fatalf("%d of %d callers answered", len(got), n)
		}
	}
	return got
}

// blockFirst starts one writer whose first write, of unit "first", waits
// until the returned function is called.
func blockFirst(t *testing.T, f *fake, out chan outcome) (*Committer[job, []string], func()) {
	t.Helper()
	gate := make(chan struct{})
	if f.hold == nil {
		f.hold = map[string]chan struct{}{}
	}
	f.hold["first"] = gate
	c := start(f.port(), 1)
	t.Cleanup(c.Close)
	submit(context.Background(), c, "first", out, "p-first")
	// Past gathering, so that whoever comes next waits for the next write.
	waitWrites(t, f, 1)
	waitParked(t, 1)
	return c, func() { close(gate) }
}

func sortedWrites(ws [][]string) []string {
	out := make([]string, len(ws))
	for i, w := range ws {
		w = slices.Clone(w)
		slices.Sort(w)
		out[i] = strings.Join(w, ",")
	}
	return out
}

func TestAUnitAloneIsWrittenAtOnce(t *testing.T) {
	f := &fake{}
	c := New(f.port())
	defer c.Close()
	written, err := c.Write(context.Background(), job{names: []string{"a"}, skus: []string{"p"}})
	if err != nil || !slices.Equal(written, []string{"a"}) {
		t.Fatalf("got %v, %v; want [a], nil", written, err)
	}
}

func TestUnitsThatWaitAreMergedIntoOneWrite(t *testing.T) {
	f := &fake{}
	out := make(chan outcome, 10)
	c, release := blockFirst(t, f, out)
	for i := range 5 {
		submit(context.Background(), c, fmt.Sprint("u", i), out, fmt.Sprint("p", i))
	}
	waitParked(t, 6)
	release()
	got := collect(t, out, 6)
	for name, o := range got {
		if o.err != nil || !slices.Equal(o.written, []string{name}) {
			t.Errorf("%s got %v, %v; want its own answer", name, o.written, o.err)
		}
	}
	want := []string{"first", "u0,u1,u2,u3,u4"}
	if w := sortedWrites(f.written()); !slices.Equal(w, want) {
		t.Fatalf("writes %q, want %q", w, want)
	}
}

func TestAtMostMaxMergedInOneWrite(t *testing.T) {
	f := &fake{}
	n := maxMerged + 6
	out := make(chan outcome, n+1)
	c, release := blockFirst(t, f, out)
	for i := range n {
		submit(context.Background(), c, fmt.Sprint("u", i), out, fmt.Sprint("p", i))
	}
	waitParked(t, n+1)
	release()
	collect(t, out, n+1)
	var sizes []int
	for _, w := range f.written() {
		sizes = append(sizes, len(w))
	}
	if want := []int{1, maxMerged, 6}; !slices.Equal(sizes, want) {
		t.Fatalf("writes of %v units, want %v", sizes, want)
	}
}

func TestUnitsOnOneProductAreNotMerged(t *testing.T) {
	f := &fake{}
	out := make(chan outcome, 4)
	c, release := blockFirst(t, f, out)
	submit(context.Background(), c, "x1", out, "x")
	waitParked(t, 2)
	submit(context.Background(), c, "x2", out, "x")
	waitParked(t, 3)
	submit(context.Background(), c, "y", out, "y", "z")
	waitParked(t, 4)
	release()
	got := collect(t, out, 4)
	for name, o := range got {
		if o.err != nil || !slices.Equal(o.written, []string{name}) {
			t.Errorf("%s got %v, %v; want its own answer", name, o.written, o.err)
		}
	}
	want := []string{"first", "x1,y", "x2"}
	if w := sortedWrites(f.written()); !slices.Equal(w, want) {
		t.Fatalf("writes %q, want %q: the second unit on x comes after, alone", w, want)
	}
}

func TestARefusedUnitDoesNotFailTheOthers(t *testing.T) {
	errRefused := errors.New("conflict")
	f := &fake{refuse: map[string]error{"bad": errRefused}}
	out := make(chan outcome, 4)
	c, release := blockFirst(t, f, out)
	for i, name := range []string{"a", "bad", "b"} {
		submit(context.Background(), c, name, out, "p-"+name)
		waitParked(t, i+2)
	}
	release()
	got := collect(t, out, 4)
	if !errors.Is(got["bad"].err, errRefused) {
		t.Errorf("the refused unit got %v, want its refusal", got["bad"].err)
	}
	for _, name := range []string{"a", "b"} {
		if o := got[name]; o.err != nil || !slices.Equal(o.written, []string{name}) {
			t.Errorf("%s got %v, %v; want its own answer", name, o.written, o.err)
		}
	}
	want := []string{"first", "a,b,bad", "a", "bad", "b"}
	if w := sortedWrites(f.written()); !slices.Equal(w, want) {
		t.Fatalf("writes %q, want %q: merged, then each alone", w, want)
	}
}

func TestUnavailableGoesToAllWithoutWritingEachAlone(t *testing.T) {
	errDown := errors.Join(servicelayer.ErrUnavailable, errors.New("connection refused"))
	f := &fake{refuse: map[string]error{"b": errDown}}
	out := make(chan outcome, 4)
	c, release := blockFirst(t, f, out)
	for i, name := range []string{"a", "b", "c"} {
		submit(context.Background(), c, name, out, "p-"+name)
		waitParked(t, i+2)
	}
	release()
	got := collect(t, out, 4)
	for _, name := range []string{"a", "b", "c"} {
		if !errors.Is(got[name].err, servicelayer.ErrUnavailable) {
			t.Errorf("%s got %v, want unavailable", name, got[name].err)
		}
	}
	want := []string{"first", "a,b,c"}
	if w := sortedWrites(f.written()); !slices.Equal(w, want) {
		t.Fatalf("writes %q, want %q", w, want)
	}
}

func TestACallerThatLeavesWhileQueuedIsToldAndNotWritten(t *testing.T) {
	f := &fake{}
	out := make(chan outcome, 2)
	c, release := blockFirst(t, f, out)
	ctx, cancel := context.WithCancel(context.Background())
	submit(ctx, c, "gone", out, "p")
	waitParked(t, 2)
	cancel()
	o := <-out
	if !errors.Is(o.err, servicelayer.ErrUnavailable) || !errors.Is(o.err, context.Canceled) {
		t.Fatalf("the caller that left got %v, want unavailable and context.Canceled", o.err)
	}
	release()
	collect(t, out, 1)
	c.Close()
	if w := sortedWrites(f.written()); !slices.Equal(w, []string{"first"}) {
		t.Fatalf("writes %q, want only the first", w)
	}
}

func TestACallerThatLeftIsLeftOutOfTheWrite(t *testing.T) {
	f := &fake{}
	c := start(f.port(), 0)
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	left := &unit[job, []string]{ctx: gone, changes: job{names: []string{"gone"}, skus: []string{"p1"}}, done: make(chan result[[]string], 1)}
	c.writeGroup([]*unit[job, []string]{
		left,
		{ctx: context.Background(), changes: job{names: []string{"a"}, skus: []string{"p2"}}, done: make(chan result[[]string], 1)},
		{ctx: context.Background(), changes: job{names: []string{"b"}, skus: []string{"p3"}}, done: make(chan result[[]string], 1)},
	})
	if r := <-left.done; !errors.Is(r.err, servicelayer.ErrUnavailable) || !errors.Is(r.err, context.Canceled) {
		t.Fatalf("the caller that left got %v, want unavailable and context.Canceled", r.err)
	}
	if w := sortedWrites(f.written()); !slices.Equal(w, []string{"a,b"}) {
		t.Fatalf("writes %q, want the two still waiting", w)
	}
}

func TestNobodysCancellationCutsTheWriteShort(t *testing.T) {
	ctxA, cancelA := context.WithCancel(context.Background())
	defer cancelA()
	late := time.Now().Add(time.Hour)
	ctxB, cancelB := context.WithDeadline(context.Background(), late)
	defer cancelB()
	var cutShort error
	f := &fake{during: func(ctx context.Context) {
		cancelA() // the first caller leaves during the write
		cutShort = ctx.Err()
	}}
	c := start(f.port(), 0)
	units := []*unit[job, []string]{
		{ctx: ctxA, changes: job{names: []string{"a"}, skus: []string{"p1"}}, done: make(chan result[[]string], 1)},
		{ctx: ctxB, changes: job{names: []string{"b"}, skus: []string{"p2"}}, done: make(chan result[[]string], 1)},
	}
	c.writeGroup(slices.Clone(units)) // it reuses the slice it is given
	if cutShort != nil {
		t.Fatalf("a caller leaving ended the write: %v", cutShort)
	}
	if d := f.deadlines[0]; !d.Equal(late) {
		t.Fatalf("write deadline %v, want the latest caller's, %v", d, late)
	}
	for _, u := range units {
		if r := <-u.done; r.err != nil {
			t.Fatalf("got %v, want the write to succeed", r.err)
		}
	}
}

func TestAWriteNobodyBoundsGetsTheAbandonedWriteLimit(t *testing.T) {
	f := &fake{}
	c := start(f.port(), 0)
	before := time.Now()
	u := &unit[job, []string]{ctx: context.Background(), changes: job{names: []string{"a"}}, done: make(chan result[[]string], 1)}
	c.writeGroup([]*unit[job, []string]{u})
	after := time.Now()
	d := f.deadlines[0]
	if d.Before(before.Add(abandonedWriteLimit)) || d.After(after.Add(abandonedWriteLimit)) {
		t.Fatalf("write deadline %v from now, want %v", d.Sub(before), abandonedWriteLimit)
	}
}

func TestAtMostWritersAtOnce(t *testing.T) {
	gate := make(chan struct{})
	f := &fake{hold: map[string]chan struct{}{}}
	n := 3 * writers
	for i := range n {
		f.hold[fmt.Sprint("u", i)] = gate
	}
	c := New(f.port())
	defer c.Close()
	out := make(chan outcome, n)
	for i := range n {
		submit(context.Background(), c, fmt.Sprint("u", i), out, fmt.Sprint("p", i))
	}
	waitParked(t, n)
	deadline := time.Now().Add(waitFor)
	for {
		f.mu.Lock()
		busy := f.inFlight
		f.mu.Unlock()
		if busy == writers {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d writes under way, want %d", busy, writers)
		}
		time.Sleep(time.Millisecond)
	}
	close(gate)
	for name, o := range collect(t, out, n) {
		if o.err != nil || !slices.Equal(o.written, []string{name}) {
			t.Errorf("%s got %v, %v; want its own answer", name, o.written, o.err)
		}
	}
	if f.most > writers {
		t.Fatalf("%d writes at once, want at most %d", f.most, writers)
	}
}

func TestCloseWaitsForTheWriters(t *testing.T) {
	f := &fake{}
	out := make(chan outcome, 1)
	c, release := blockFirst(t, f, out)
	closed := make(chan struct{})
	go func() {
		c.Close()
		close(closed)
	}()
	select {
	case <-closed:
		t.Fatal("Close returned while a write was under way")
	case o := <-out:
		t.Fatalf("the held write answered before its release: %v", o)
	default:
	}
	release()
	select {
	case <-closed:
	case <-time.After(waitFor):
		t.Fatal("Close did not return after the write ended")
	}
	if o := collect(t, out, 1)["first"]; o.err != nil {
		t.Fatalf("the write under way at Close got %v", o.err)
	}
	if _, err := c.Write(context.Background(), job{names: []string{"late"}}); !errors.Is(err, ErrClosed) {
		t.Fatalf("a write after Close got %v, want ErrClosed", err)
	}
}
