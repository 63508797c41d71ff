package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"allocation/tests/testenv"
)

// previousReleaseFile pins the release an upgrade starts from; see its
// comment for how it moves forward.
const previousReleaseFile = "testdata/previous-release"

// The previous release writes a database: batches, allocations it
// published, a reallocation caused by an inbound message whose id its inbox
// keeps, and allocations whose deliveries stay pending because Redis is
// down. This build then starts on the same database and finds all of it:
// it publishes the pending deliveries once, answers the views and the
// history as the previous release wrote them, ignores the old message id
// when it comes again, and goes on allocating. A schema change that does
// not carry some of it over, or an edited released migration, fails here.
func TestUpgradeFromThePreviousReleaseKeepsItsData(t *testing.T) {
	t.Parallel()
	previous := buildPreviousRelease(t)
	for _, storage := range []string{"postgres", "sqlite"} {
		t.Run(storage, func(t *testing.T) {
			u := newUpgradeRun(t, previous, storage)
			u.writeWithThePreviousRelease()
			u.leaveDeliveriesPending()
			u.upgrade()
			u.checkPendingPublishedOnce()
			u.checkViews()
			u.checkHistory()
			u.checkInboxRemembers()
			u.checkNewAllocations()
		})
	}
}

// buildPreviousRelease builds the pinned release from git history into a
// temporary directory and returns the binary. Without that history (a
// shallow clone, a source archive) it fails: skipping would let an upgrade
// that loses data through unnoticed.
func buildPreviousRelease(t *testing.T) string {
	t.Helper()
	commit := pinnedRelease(t)
	root, err := git("", "rev-parse", "--show-toplevel")
	if err != nil {
		t.Fatalf("the upgrade test builds the previous release from git history, and this is not a git work tree (%v): run it in a clone with history", err)
	}
	full, err := git(root, "rev-parse", "--verify", "--quiet", commit+"^{commit}")
	if err != nil {
		shallow, _ := git(root, "rev-parse", "--is-shallow-repository")
		t.Fatalf("the previous release %s (%s) is not in this clone's history (shallow: %s): fetch the history first, e.g. `git fetch --unshallow` (in CI, check out with the full history, such as actions/checkout's fetch-depth: 0)",
			commit, previousReleaseFile, shallow)
	}
	// git archive, unlike a temporary worktree, leaves the repository's
	// list of worktrees, which other checkouts share, untouched.
	dir := t.TempDir()
	tarball, src := filepath.Join(dir, "previous.tar"), filepath.Join(dir, "src")
	if _, err := git(root, "archive", "--format=tar", "-o", tarball, full); err != nil {
		t.Fatalf("git archive %s: %v", full, err)
	}
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("tar", "-xf", tarball, "-C", src).CombinedOutput(); err != nil {
		t.Fatalf("unpack the previous release: %v\n%s", err, out)
	}
	bin := filepath.Join(dir, "allocation-previous")
	start := time.Now()
	// Built as TestMain builds this one (-race, no -trimpath): the
	// dependencies the releases share come from the build cache, and only
	// the packages of the module itself are compiled again.
	build := exec.Command("go", "build", "-race", "-ldflags", "-X main.version=previous-release -X main.commit="+full, "-o", bin, "./cmd/allocation")
	build.Dir = src
	build.Env = append(os.Environ(), "GOWORK=off")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the previous release %s: %v\n%s", commit, err, out)
	}
	t.Logf("built the previous release %s in %s", commit, time.Since(start).Round(time.Millisecond))
	return bin
}

// pinnedRelease reads the commit in previousReleaseFile: its one line that
// is neither empty nor a comment.
func pinnedRelease(t *testing.T) string {
	t.Helper()
	raw, err := os.ReadFile(previousReleaseFile)
	if err != nil {
		t.Fatalf("read the pinned previous release: %v", err)
	}
	var commits []string
	for _, line := range strings.Split(string(raw), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			commits = append(commits, line)
		}
	}
	if len(commits) != 1 || !regexp.MustCompile(`^[0-9a-f]{7,40}$`).MatchString(commits[0]) {
		t.Fatalf("%s holds %q; want one commit id", previousReleaseFile, commits)
	}
	return commits[0]
}

// git runs git in dir (the current directory when empty) and returns its
// trimmed output.
func git(dir string, args ...string) (string, error) {
	if dir != "" {
		args = append([]string{"-C", dir}, args...)
	}
	out, err := exec.Command("git", args...).Output()
	if ee, ok := err.(*exec.ExitError); ok {
		err = fmt.Errorf("%w: %s", err, strings.TrimSpace(string(ee.Stderr)))
	}
	return strings.TrimSpace(string(out)), err
}

// upgradeRun is one upgrade: the previous release and this build, one after
// the other, on one database, prefix and private Redis.
type upgradeRun struct {
	t        *testing.T
	rs       *testenv.RedisServer
	old, new *service
	sku      string
	early    string // a batch the inbound change shrinks
	later    string
	changeID string // the inbound message id the inbox must remember
	pending  []string
	history  []historyEvent // the product's history as the previous release showed it
}

// newUpgradeRun prepares both services on a fresh PostgreSQL database or,
// for "sqlite", on a SQLite file (DATABASE_URL unset), with a Redis of the
// test's own, which it stops and which keeps nothing on disk: nothing is
// left under the prefix once the test ends.
func newUpgradeRun(t *testing.T, previous, storage string) *upgradeRun {
	t.Helper()
	rs := testenv.StartRedisServer(t)
	var old *service
	switch storage {
	case "postgres":
		old = newService(t, rs.URL())
	case "sqlite":
		old = &service{t: t, prefix: testenv.Prefix(), redisURL: rs.URL(), dataDir: t.TempDir(), logs: &syncBuffer{}}
		old.stopAtEnd()
	default:
		t.Fatalf("unknown storage %q", storage)
	}
	old.redis, old.bin = rs.Client(), previous
	return &upgradeRun{
		t: t, rs: rs, old: old, new: old.replica(old.env...),
		sku: testenv.RandomName("sku-"), early: testenv.RandomName("early-"), later: testenv.RandomName("later-"),
		changeID: testenv.RandomName("change-"),
	}
}

// writeWithThePreviousRelease allocates two orders and shrinks the early
// batch by an inbound stream message with an id, which moves before-1 to
// the later batch; all of it is published.
func (u *upgradeRun) writeWithThePreviousRelease() {
	s := u.old
	s.start()
	s.addBatch(u.early, u.sku, 10, "2011-01-01")
	s.addBatch(u.later, u.sku, 50, "2011-01-02")
	u.allocate(s, "before-1", 10, u.early)
	u.allocate(s, "before-2", 2, u.later)
	u.sendChange(s, 5)
	u.awaitAnnounced(s, map[string]int{"before-1": 2, "before-2": 1})
	testenv.Eventually(u.t, 10*time.Second, func() error {
		if _, rows := s.allocations("before-1"); len(rows) != 1 || rows[0].BatchRef != u.later {
			return fmt.Errorf("before-1 in %v after the change, want %s", rows, u.later)
		}
		return nil
	})
}

// leaveDeliveriesPending allocates while Redis is down, so that those
// deliveries are still in the database when the previous release stops.
func (u *upgradeRun) leaveDeliveriesPending() {
	t := u.t
	u.rs.Stop()
	for i := range 5 {
		order := fmt.Sprintf("pending-%d", i)
		u.allocate(u.old, order, 1, u.early)
		u.pending = append(u.pending, order)
	}
	u.history = u.old.events("sku=" + u.sku + "&limit=1000").Events
	if err := u.old.stop(); err != nil {
		t.Fatalf("the previous release did not stop cleanly: %v", err)
	}
	if open, dead := u.old.deliveriesLeft(); open < len(u.pending) || dead != 0 {
		t.Fatalf("the previous release left %d deliveries open and %d dead; want the %d made while Redis was down open, none dead", open, dead, len(u.pending))
	}
}

// upgrade brings Redis back, empty, and starts this build on the data.
func (u *upgradeRun) upgrade() {
	u.rs.Start()
	u.new.start()
}

// checkPendingPublishedOnce: what the previous release could not publish
// goes out once, as the events it logged (their message ids), and what it
// had published does not go out again.
func (u *upgradeRun) checkPendingPublishedOnce() {
	t := u.t
	want := map[string]int{}
	for _, order := range u.pending {
		want[order] = 1
	}
	u.awaitAnnounced(u.new, want)
	testenv.Eventually(t, 10*time.Second, func() error {
		if open, dead := u.new.deliveriesLeft(); open != 0 || dead != 0 {
			return fmt.Errorf("%d deliveries open, %d dead", open, dead)
		}
		return nil
	})
	entries, err := u.new.lineAllocatedEntries()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, e := range entries {
		seen[e.OrderID]++
		if !slices.ContainsFunc(u.history, func(h historyEvent) bool {
			return h.Type == "allocated" && h.OrderID == e.OrderID && h.MessageID == e.MessageID
		}) {
			t.Errorf("published %+v, which is not an allocated event the previous release logged", e)
		}
	}
	if !maps.Equal(seen, want) {
		t.Fatalf("once every delivery is done the stream holds %v, want %v", seen, want)
	}
}

// checkViews: the allocations view answers for every order as the
// previous release left it.
func (u *upgradeRun) checkViews() {
	want := map[string]string{"before-1": u.later, "before-2": u.later}
	for _, order := range u.pending {
		want[order] = u.early
	}
	for order, batch := range want {
		if status, rows := u.new.allocations(order); status != http.StatusOK || len(rows) != 1 || rows[0].BatchRef != batch || rows[0].SKU != u.sku {
			u.t.Errorf("GET /allocations/%s after the upgrade: %d %v, want %s in %s", order, status, rows, u.sku, batch)
		}
	}
}

// checkHistory: the event log reads as the previous release showed it, and
// an order's history still follows the reallocation back to the message.
func (u *upgradeRun) checkHistory() {
	t := u.t
	got := u.new.events("sku=" + u.sku + "&limit=1000").Events
	if !slices.EqualFunc(got, u.history, sameEvent) {
		t.Fatalf("GET /events after the upgrade:\n%+v\nthe previous release showed:\n%+v", got, u.history)
	}
	var types []string
	history := u.new.orderHistory("before-1")
	for _, e := range history {
		types = append(types, e.Type)
	}
	if !slices.Equal(types, []string{"allocated", "deallocated", "allocated"}) {
		t.Fatalf("history of before-1: %v, want allocated, deallocated, allocated", types)
	}
	for _, e := range history[1:] {
		if e.CorrelationID != u.changeID {
			t.Errorf("%s event of before-1 correlated with %q, want the change message %s", e.Type, e.CorrelationID, u.changeID)
		}
	}
}

// checkInboxRemembers sends the old message id again, with a quantity that
// would move four more lines were it applied: the inbox must know it.
func (u *upgradeRun) checkInboxRemembers() {
	t := u.t
	u.sendChange(u.new, 1)
	testenv.Eventually(t, 20*time.Second, func() error {
		for _, line := range strings.Split(u.new.logs.String(), "\n") {
			if !strings.Contains(line, `"message_id":"`+u.changeID+`"`) {
				continue
			}
			if strings.Contains(line, "duplicate message skipped") {
				return nil
			}
			if strings.Contains(line, "message handled") {
				t.Fatalf("the repeated message %s was applied again: the inbox forgot it across the upgrade", u.changeID)
			}
		}
		return fmt.Errorf("no log line says the repeated message %s was skipped", u.changeID)
	})
	if changes := u.new.events("sku=" + u.sku + "&type=batch_quantity_changed").Events; len(changes) != 1 {
		t.Fatalf("%d batch_quantity_changed events after the repeat, want the previous release's one", len(changes))
	}
	u.checkViews()
}

// checkNewAllocations: this build allocates on the carried-over stock (the
// early batch is full) and publishes it.
func (u *upgradeRun) checkNewAllocations() {
	u.allocate(u.new, "after-1", 1, u.later)
	want := map[string]int{"after-1": 1}
	for _, order := range u.pending {
		want[order] = 1
	}
	u.awaitAnnounced(u.new, want)
}

func (u *upgradeRun) allocate(s *service, order string, qty int, batch string) {
	u.t.Helper()
	status, body := s.post("/allocate", map[string]any{"orderid": order, "sku": u.sku, "qty": qty})
	if status != http.StatusAccepted || body["batchref"] != batch {
		u.t.Fatalf("allocate %s: %d %v, want 202 to %s", order, status, body, batch)
	}
}

// sendChange sets the early batch's quantity by a message on the inbound
// stream, with the run's message id.
func (u *upgradeRun) sendChange(s *service, qty int) {
	u.t.Helper()
	raw, _ := json.Marshal(map[string]any{"batchref": u.early, "qty": qty, "message_id": u.changeID})
	err := s.redis.XAdd(context.Background(), &goredis.XAddArgs{Stream: s.prefix + "change_batch_quantity", Values: map[string]any{"data": raw}}).Err()
	if err != nil {
		u.t.Fatalf("send change_batch_quantity: %v", err)
	}
}

// awaitAnnounced waits until the outbound stream holds exactly want: order
// id -> how many line_allocated entries.
func (u *upgradeRun) awaitAnnounced(s *service, want map[string]int) {
	u.t.Helper()
	testenv.Eventually(u.t, 30*time.Second, func() error {
		seen, err := s.announcements()
		if err != nil {
			return err
		}
		if !maps.Equal(seen, want) {
			return fmt.Errorf("line_allocated stream holds %v, want %v", seen, want)
		}
		return nil
	})
}

// orderHistory is GET /allocations/{orderid}/history.
func (s *service) orderHistory(orderID string) []historyEvent {
	s.t.Helper()
	resp, err := http.Get(s.url + "/allocations/" + orderID + "/history")
	if err != nil {
		s.t.Fatalf("GET history of %s: %v", orderID, err)
	}
	defer resp.Body.Close()
	var page historyPage
	if resp.StatusCode != http.StatusOK {
		s.t.Fatalf("GET history of %s: %d", orderID, resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(&page); err != nil {
		s.t.Fatalf("GET history of %s: %v", orderID, err)
	}
	return page.Events
}

// sameEvent compares what both releases show of an event; fields a newer
// release adds are not compared.
func sameEvent(a, b historyEvent) bool {
	qty := func(q *int) int {
		if q == nil {
			return -1
		}
		return *q
	}
	return a.ID == b.ID && a.Type == b.Type && a.OrderID == b.OrderID && a.BatchRef == b.BatchRef &&
		qty(a.Qty) == qty(b.Qty) && a.MessageID == b.MessageID && a.OccurredAt.Equal(b.OccurredAt) &&
		a.CausationID == b.CausationID && a.CorrelationID == b.CorrelationID
}
