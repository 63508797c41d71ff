package cache

import (
	"fmt"
	"sync"
	"testing"
)

// held counts the keys of keys the map still has.
func held(b *Bounded[string, int], keys []string) int {
	n := 0
	for _, k := range keys {
		if _, ok := b.Get(k); ok {
			n++
		}
	}
	return n
}

func keys(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("k%d", i)
	}
	return out
}

func TestGetPutForget(t *testing.T) {
	b := New[string, int](10)
	if _, ok := b.Get("a"); ok {
		t.Fatal("an empty map found a")
	}
	b.Put("a", 1)
	b.Put("a", 2)
	if v, ok := b.Get("a"); !ok || v != 2 {
		t.Fatalf("a is %d, %v; want 2, true", v, ok)
	}
	b.Forget("a")
	b.Forget("a") // forgetting what is not there does nothing
	if _, ok := b.Get("a"); ok {
		t.Fatal("a forgotten key was found")
	}
}

func TestTheBoundHolds(t *testing.T) {
	const max = 5
	b := New[string, int](max)
	all := keys(3 * max)
	for i, k := range all {
		b.Put(k, i)
		if n := held(b, all); n > max {
			t.Fatalf("%d entries after %d puts, bound %d", n, i+1, max)
		}
	}
	if n := held(b, all); n != max {
		t.Fatalf("%d entries after filling, want %d", n, max)
	}
}

func TestANewKeyEvictsOneOtherAndAReplacementNone(t *testing.T) {
	const max = 4
	b := New[string, int](max)
	old := keys(max)
	for i, k := range old {
		b.Put(k, i)
	}
	b.Put(old[0], 100) // full, but not a new key: nothing goes
	if n := held(b, old); n != max {
		t.Fatalf("replacing a key in a full map left %d of %d", n, max)
	}
	b.Put("new", 1)
	if _, ok := b.Get("new"); !ok {
		t.Fatal("the new key was not kept")
	}
	if n := held(b, old); n != max-1 {
		t.Fatalf("a new key in a full map left %d of the %d old entries, want %d", n, max, max-1)
	}
	b.Forget("new")
	b.Put("other", 2) // room again: nothing goes
	if n := held(b, old); n != max-1 {
		t.Fatalf("a put with room evicted an entry: %d of %d old left", n, max-1)
	}
}

func TestConcurrentUse(t *testing.T) {
	const max = 50
	b := New[string, int](max)
	all := keys(4 * max)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i, k := range all {
				switch (i + w) % 3 {
				case 0:
					b.Put(k, i)
				case 1:
					b.Get(k)
				default:
					b.Forget(k)
				}
			}
		})
	}
	wg.Wait()
	if n := held(b, all); n > max {
		t.Fatalf("%d entries after concurrent use, bound %d", n, max)
	}
}
