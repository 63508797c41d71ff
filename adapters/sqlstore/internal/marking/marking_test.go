package marking

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"allocation/adapters/sqlstore/internal/parked"
)

// waitFor is how long a test waits for something that should happen within
// a retry delay.
const waitFor = markRetryDelay + 5*time.Second

// fakeDB records what it is asked to mark done. While hold is set, a write
// tells started and waits for hold to close; it fails while fails > 0.
type fakeDB struct {
	mu        sync.Mutex
	active    int  // writes running now
	overlap   bool // two ran at once
	calls     [][]int
	deadlines []time.Time
	fails     int
	hold      chan struct{}
	started   chan struct{}
}

func (f *fakeDB) markDone(ctx context.Context, done []int) error {
	f.mu.Lock()
	d, _ := ctx.Deadline()
	f.calls = append(f.calls, slices.Sorted(slices.Values(done)))
	f.deadlines = append(f.deadlines, d)
	hold, started := f.hold, f.started
	fail := f.fails > 0
	f.fails--
	f.active++
	f.overlap = f.overlap || f.active > 1
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.active--
		f.mu.Unlock()
	}()
	if hold != nil {
		started <- struct{}{}
		<-hold
	}
	if fail {
		return errors.New("database down")
	}
	return nil
}

func (f *fakeDB) overlapped() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.overlap
}

func (f *fakeDB) marked() [][]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

// holdWrites makes the next writes wait until the returned function is
// called, and returns a channel each write tells when it starts.
func (f *fakeDB) holdWrites() (started <-chan struct{}, release func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hold, f.started = make(chan struct{}), make(chan struct{}, 10)
	return f.started, func() { close(f.hold) }
}

func newMarks(f *fakeDB) *Marks[int] {
	return New(f.markDone, slog.New(slog.DiscardHandler))
}

// waitUntil waits, boundedly, until cond holds.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("still waiting for %s after %v", what, waitFor)
		}
		time.Sleep(time.Millisecond)
	}
}

func waitStarted(t *testing.T, started <-chan struct{}) {
	t.Helper()
	select {
	case <-started:
	case <-time.After(waitFor):
		t.Fatal("no write started")
	}
}

func TestMadeDeliveriesAreMarkedInOneWriteAMomentLater(t *testing.T) {
	f := &fakeDB{}
	m := newMarks(f)
	m.Add("a", 1)
	m.Add("a", 2)
	m.Add("b", 3)
	if got := m.Of("a"); !slices.Equal(got, []int{1, 2}) {
		t.Fatalf("a's unmarked deliveries are %v, want [1 2]", got)
	}
	waitUntil(t, "the marks to be written", func() bool { return len(m.Of("a"))+len(m.Of("b")) == 0 })
	if got := f.marked(); len(got) != 1 || !slices.Equal(got[0], []int{1, 2, 3}) {
		t.Fatalf("writes %v, want one of [1 2 3]", got)
	}
	if d := f.deadlines[0]; d.IsZero() || time.Until(d) > markTimeout {
		t.Fatalf("the write's deadline is %v away, want at most %v", time.Until(d), markTimeout)
	}
}

func TestDeliveriesStayRecordedUntilTheWriteSucceeded(t *testing.T) {
	f := &fakeDB{}
	started, release := f.holdWrites()
	m := newMarks(f)
	m.Add("a", 1)
	waitStarted(t, started)
	if got := m.Of("a"); !slices.Equal(got, []int{1}) {
		t.Fatalf("during the write a's unmarked deliveries are %v, want [1]", got)
	}
	release()
	waitUntil(t, "the mark to be forgotten", func() bool { return len(m.Of("a")) == 0 })
}

// A Flush while another runs waits for it and then writes what is left:
// when it returns, nothing recorded before it is still unmarked (a claim
// reads the database right after), and no two writes ever run at once.
func TestAFlushWhileAnotherRunsWaitsForItThenMarksTheRest(t *testing.T) {
	f := &fakeDB{}
	started, release := f.holdWrites()
	m := newMarks(f)
	m.Add("a", 1)
	waitStarted(t, started)
	m.Add("a", 2)
	flushed := make(chan flushResult, 1)
	go flushAndLook(m, flushed)
	parked.Wait(t, "marking.flushAndLook", 1, waitFor) // it waits for the running write
	release()
	r := <-flushed
	if r.err != nil || len(r.left) != 0 {
		t.Fatalf("a flush that came while another ran returned %v with %v unmarked, want nil with none", r.err, r.left)
	}
	if f.overlapped() {
		t.Fatal("two writes ran at once")
	}
	if got := f.marked(); len(got) != 2 || !slices.Equal(got[0], []int{1}) || !slices.Equal(got[1], []int{2}) {
		t.Fatalf("writes %v, want [1] then [2]", got)
	}
}

func TestDeliveriesRecordedDuringAFlushAreMarkedNext(t *testing.T) {
	f := &fakeDB{}
	started, release := f.holdWrites()
	m := newMarks(f)
	m.Add("a", 1)
	waitStarted(t, started)
	m.Add("a", 2)
	release()
	waitUntil(t, "both marks to be written", func() bool { return len(m.Of("a")) == 0 })
	if got := f.marked(); len(got) != 2 || !slices.Equal(got[0], []int{1}) || !slices.Equal(got[1], []int{2}) {
		t.Fatalf("writes %v, want [1] then [2]", got)
	}
}

type flushResult struct {
	err  error
	left []int // a's deliveries still unmarked when Flush returned
}

// flushAndLook flushes and says what a's deliveries were right after.
func flushAndLook(m *Marks[int], out chan<- flushResult) {
	err := m.Flush(context.Background())
	out <- flushResult{err, m.Of("a")}
}

// failedOnce waits until the first write failed and its flush ended.
func failedOnce(t *testing.T, m *Marks[int], f *fakeDB) {
	t.Helper()
	waitUntil(t, "the failed write", func() bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		return len(f.marked()) == 1 && m.flushing == nil
	})
}

func TestAFailedWriteIsRetriedLater(t *testing.T) {
	f := &fakeDB{fails: 1}
	m := newMarks(f)
	m.Add("a", 1)
	failedOnce(t, m, f)
	if got := m.Of("a"); !slices.Equal(got, []int{1}) {
		t.Fatalf("after a failed write a's unmarked deliveries are %v, want [1]", got)
	}
	waitUntil(t, "the retry", func() bool { return len(m.Of("a")) == 0 })
	if got := f.marked(); len(got) != 2 {
		t.Fatalf("%d writes, want the failed one and its retry", len(got))
	}
}

func TestAFailedFlushSaysSo(t *testing.T) {
	f := &fakeDB{fails: 1}
	m := newMarks(f)
	_ = m.Close(context.Background()) // nothing to mark; no flush comes by itself now
	m.Add("a", 1)
	if err := m.Flush(context.Background()); err == nil {
		t.Fatal("a failed write reported no error")
	}
	if got := m.Of("a"); !slices.Equal(got, []int{1}) {
		t.Fatalf("after a failed write a's unmarked deliveries are %v, want [1]", got)
	}
}

func TestNothingToMarkWritesNothing(t *testing.T) {
	f := &fakeDB{}
	m := newMarks(f)
	if err := m.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := f.marked(); len(got) != 0 {
		t.Fatalf("writes %v, want none", got)
	}
}

func TestCloseMarksWhatIsLeft(t *testing.T) {
	f := &fakeDB{fails: 1}
	m := newMarks(f)
	m.Add("a", 1)
	failedOnce(t, m, f) // its retry is a second away
	if err := m.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := m.Of("a"); len(got) != 0 {
		t.Fatalf("after Close a's unmarked deliveries are %v, want none", got)
	}
	if got := f.marked(); len(got) != 2 {
		t.Fatalf("%d writes, want the failed one and Close's", len(got))
	}
}

func TestNoFlushIsScheduledAfterClose(t *testing.T) {
	f := &fakeDB{}
	m := newMarks(f)
	if err := m.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	m.Add("a", 1)
	m.mu.Lock()
	scheduled := m.scheduled
	m.mu.Unlock()
	if scheduled {
		t.Fatal("a flush was scheduled after Close")
	}
	if got := m.Of("a"); !slices.Equal(got, []int{1}) {
		t.Fatalf("a's unmarked deliveries are %v, want [1]: recorded, not written", got)
	}
}
