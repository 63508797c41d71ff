// Package parked lets the store's machinery tests wait until goroutines
// are blocked inside a function, so that the order in which they wait is
// known before the test lets them go. It reads the goroutines' stacks: a
// goroutine counts when it waits in a select with the function in its
// stack.
package parked

import (
	"runtime"
	"strings"
	"testing"
	"time"
)

// Wait waits, at most for limit, until n goroutines wait in a select
// inside function (as it appears in a stack trace, e.g.
// "turns.(*Turns).Take"), and fails t otherwise.
func Wait(t testing.TB, function string, n int, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	buf := make([]byte, 1<<20)
	for {
		got := count(buf, function)
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines wait in %s, want %d", got, function, n)
		}
		runtime.Gosched()
		time.Sleep(time.Millisecond) // polling a condition, bounded above
	}
}

func count(buf []byte, function string) int {
	stacks := string(buf[:runtime.Stack(buf, true)])
	n := 0
	for _, g := range strings.Split(stacks, "\n\n") {
		if strings.Contains(g, "[select") && strings.Contains(g, function) {
			n++
		}
	}
	return n
}
