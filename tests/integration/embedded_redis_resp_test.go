package integration_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"allocation/adapters/embeddedredis"
	"allocation/tests/testenv"
)

// respStep is one command and what its reply may differ in between servers.
type respStep struct {
	args []any
	// mask blanks what legitimately differs from run to run (idle times).
	mask func(any) any
}

// respSteps is every kind of command the README says the embedded Redis
// speaks, as the service and its neighbours send them: strings with NX EX,
// hashes with EXPIRE, streams with consumer groups, lists, scripts, pub/sub. Stream ids are
// given, so that both servers answer the same.
func respSteps(p string) []respStep {
	script := `if not redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[5]) then return 0 end
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[4], '*', 'data', ARGV[2], 'message_id', ARGV[3])
redis.call('PUBLISH', ARGV[1], ARGV[2])
return 1`
	idle := func(v any) any { // XPENDING's entries: [id, consumer, idle ms, deliveries]
		rows, _ := v.([]any)
		for _, r := range rows {
			if row, ok := r.([]any); ok && len(row) == 4 {
				row[2] = "idle"
			}
		}
		return v
	}
	return []respStep{
		{args: []any{"PING"}},
		{args: []any{"SET", p + "k", "v", "NX", "EX", "60"}},
		{args: []any{"SET", p + "k", "v", "NX", "EX", "60"}},
		{args: []any{"GET", p + "k"}},
		{args: []any{"GET", p + "missing"}},
		{args: []any{"EXISTS", p + "k", p + "missing"}},
		{args: []any{"XADD", p + "s", "MAXLEN", "~", "100", "1-1", "data", `{"a":1}`, "message_id", "m1"}},
		{args: []any{"XADD", p + "s", "2-1", "data", `{"a":2}`}},
		{args: []any{"XLEN", p + "s"}},
		{args: []any{"XRANGE", p + "s", "-", "+"}},
		{args: []any{"XGROUP", "CREATE", p + "s", "g", "0", "MKSTREAM"}},
		{args: []any{"XGROUP", "CREATE", p + "s", "g", "0", "MKSTREAM"}},
		{args: []any{"XGROUP", "CREATE", p + "empty", "g", "0", "MKSTREAM"}},
		{args: []any{"XREAD", "COUNT", "10", "STREAMS", p + "s", "0"}},
		{args: []any{"XREAD", "COUNT", "10", "STREAMS", p + "s", "2-1"}},
		{args: []any{"XREAD", "COUNT", "10", "BLOCK", "20", "STREAMS", p + "s", "$"}},
		{args: []any{"XREADGROUP", "GROUP", "g", "c1", "COUNT", "1", "STREAMS", p + "s", p + "empty", ">", ">"}},
		{args: []any{"XREADGROUP", "GROUP", "g", "c1", "COUNT", "10", "BLOCK", "20", "STREAMS", p + "s", ">"}},
		{args: []any{"XREADGROUP", "GROUP", "g", "c1", "COUNT", "10", "STREAMS", p + "s", "0"}},
		{args: []any{"XREADGROUP", "GROUP", "g", "c1", "COUNT", "10", "BLOCK", "20", "STREAMS", p + "s", p + "empty", ">", ">"}},
		{args: []any{"XPENDING", p + "s", "g"}},
		{args: []any{"XPENDING", p + "s", "g", "IDLE", "0", "-", "+", "10"}, mask: idle},
		{args: []any{"XPENDING", p + "s", "g", "-", "+", "10", "c1"}, mask: idle},
		{args: []any{"XCLAIM", p + "s", "g", "c2", "0", "1-1"}},
		{args: []any{"XCLAIM", p + "s", "g", "c2", "0", "1-1", "JUSTID"}},
		{args: []any{"XACK", p + "s", "g", "1-1", "9-9"}},
		{args: []any{"XPENDING", p + "s", "g"}},
		{args: []any{"XTRIM", p + "s", "MAXLEN", "1"}},
		{args: []any{"LPUSH", p + "l", "a", "b", "c"}},
		{args: []any{"LTRIM", p + "l", "0", "1"}},
		{args: []any{"LRANGE", p + "l", "0", "-1"}},
		{args: []any{"LLEN", p + "l"}},
		{args: []any{"RPOP", p + "l"}},
		{args: []any{"EVAL", script, "2", p + "out", p + "published:m1", p + "ch", "body", "m1", "100", "60"}},
		{args: []any{"EVAL", script, "2", p + "out", p + "published:m1", p + "ch", "body", "m1", "100", "60"}},
		{args: []any{"EVAL", "return {1, 'two', {3}}", "0"}},
		{args: []any{"EVALSHA", "0123456789012345678901234567890123456789", "0"}},
		{args: []any{"SCRIPT", "LOAD", "return 'loaded'"}},
		{args: []any{"EVALSHA", "b534286061d4b9e4026607613b95c06c06015ae8", "0"}},
		{args: []any{"HSET", p + "h", "m1", "1", "m2", "1"}},
		{args: []any{"HEXISTS", p + "h", "m1"}},
		{args: []any{"HEXISTS", p + "h", "m3"}},
		{args: []any{"HGET", p + "h", "m2"}},
		{args: []any{"EXPIRE", p + "h", "60"}},
		{args: []any{"EXPIRE", p + "missing", "60"}},
		{args: []any{"PUBLISH", p + "ch", "nobody listens"}},
		{args: []any{"DEL", p + "k", p + "l", p + "s", p + "empty", p + "out", p + "published:m1", p + "h"}},
	}
}

// Every command the service relies on gets the same reply from the
// embedded Redis as from a real one, over RESP2 and RESP3 alike: a RESP3
// client (ioredis 6) failed on XREADGROUP when it got an array for a map.
func TestEmbeddedRedisAnswersLikeRedisOverRESP2AndRESP3(t *testing.T) {
	t.Parallel()
	srv, err := embeddedredis.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	opts, err := goredis.ParseURL(testenv.RedisURL())
	if err != nil {
		t.Fatal(err)
	}
	testenv.Redis(t) // fails with a hint when Redis is down
	for _, protocol := range []int{2, 3} {
		t.Run(fmt.Sprintf("RESP%d", protocol), func(t *testing.T) {
			prefix := testenv.Prefix()
			real := goredis.NewClient(&goredis.Options{Addr: opts.Addr, DB: opts.DB, Username: opts.Username, Password: opts.Password, Protocol: protocol})
			embedded := goredis.NewClient(&goredis.Options{Addr: srv.Addr(), Protocol: protocol})
			t.Cleanup(func() { _ = real.Close(); _ = embedded.Close() })
			testenv.DeleteKeysAtEnd(t, real, prefix)
			ctx := context.Background()
			for _, step := range respSteps(prefix) {
				want, wantErr := reply(ctx, real, step)
				got, gotErr := reply(ctx, embedded, step)
				if !reflect.DeepEqual(got, want) || errKind(gotErr) != errKind(wantErr) {
					t.Errorf("%.80v:\nembedded %#v, %v\nredis    %#v, %v", step.args, got, gotErr, want, wantErr)
				}
			}
			// MULTI/EXEC on one connection: each command is QUEUED, EXEC
			// answers with all their replies.
			tx := [][]any{
				{"MULTI"},
				{"LPUSH", prefix + "tx", "a"},
				{"XADD", prefix + "txs", "1-1", "data", "x"},
				{"LRANGE", prefix + "tx", "0", "-1"},
				{"EXEC"},
				{"DEL", prefix + "tx", prefix + "txs"},
			}
			want, got := transaction(t, real, tx), transaction(t, embedded, tx)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("MULTI/EXEC:\nembedded %#v\nredis    %#v", got, want)
			}
		})
	}
}

// transaction sends cmds on one connection and returns their replies
// (an error as its code).
func transaction(t *testing.T, rc *goredis.Client, cmds [][]any) []any {
	t.Helper()
	ctx := context.Background()
	conn := rc.Conn()
	defer conn.Close()
	var out []any
	for _, cmd := range cmds {
		v, err := conn.Do(ctx, cmd...).Result()
		if err != nil {
			v = errKind(err)
		}
		out = append(out, v)
	}
	return out
}

func reply(ctx context.Context, rc *goredis.Client, step respStep) (any, error) {
	v, err := rc.Do(ctx, step.args...).Result()
	if errors.Is(err, goredis.Nil) {
		return "(nil)", nil
	}
	if err == nil && step.mask != nil {
		v = step.mask(v)
	}
	return v, err
}

// errKind is an error's code (ERR, BUSYGROUP, NOSCRIPT): the wording after
// it differs between servers.
func errKind(err error) string {
	if err == nil {
		return ""
	}
	code, _, _ := strings.Cut(err.Error(), " ")
	return code
}

// What a consumer group reader gets is the same on both servers, over RESP2
// and RESP3, through the typed API too, also when a blocked XREADGROUP is woken by an
// entry appended meanwhile, and so is pub/sub.
func TestEmbeddedRedisServesBlockedStreamReadersAndSubscribersLikeRedis(t *testing.T) {
	t.Parallel()
	srv, err := embeddedredis.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	opts, err := goredis.ParseURL(testenv.RedisURL())
	if err != nil {
		t.Fatal(err)
	}
	testenv.Redis(t)
	for _, protocol := range []int{2, 3} {
		t.Run(fmt.Sprintf("RESP%d", protocol), func(t *testing.T) {
			readAndSubscribe(t, protocol, map[string]*goredis.Options{
				"redis":    {Addr: opts.Addr, DB: opts.DB, Username: opts.Username, Password: opts.Password, Protocol: protocol},
				"embedded": {Addr: srv.Addr(), Protocol: protocol},
			})
		})
	}
}

// readAndSubscribe has a blocked XREADGROUP woken by an XADD, and a
// subscriber get a message, on each server; both must see the same.
func readAndSubscribe(t *testing.T, protocol int, servers map[string]*goredis.Options) {
	prefix := testenv.Prefix()
	got := map[string][]goredis.XStream{}
	messages := map[string]string{}
	for name, o := range servers {
		rc := goredis.NewClient(o)
		t.Cleanup(func() { _ = rc.Close() })
		testenv.DeleteKeysAtEnd(t, rc, prefix)
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		stream := prefix + "allocate"
		if err := rc.XGroupCreateMkStream(ctx, stream, "g", "0").Err(); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		ps := rc.Subscribe(ctx, prefix+"line_allocated")
		t.Cleanup(func() { _ = ps.Close() })
		if _, err := ps.Receive(ctx); err != nil {
			t.Fatalf("%s: subscribe: %v", name, err)
		}
		read := make(chan []goredis.XStream, 1)
		go func() {
			res, err := rc.XReadGroup(ctx, &goredis.XReadGroupArgs{Group: "g", Consumer: "c1", Streams: []string{stream, ">"}, Count: 10, Block: 2 * time.Second}).Result()
			if err != nil {
				t.Errorf("%s: XREADGROUP: %v", name, err)
			}
			read <- res
		}()
		// The reader is blocked (or about to be): the entry wakes it.
		testenv.Eventually(t, waitTimeout, func() error {
			clients, err := rc.ClientList(ctx).Result()
			if err == nil && !strings.Contains(clients, "cmd=xreadgroup") && name == "redis" {
				return errors.New("the reader is not blocked yet")
			}
			return nil
		})
		if err := rc.XAdd(ctx, &goredis.XAddArgs{Stream: stream, ID: "5-1", Values: map[string]any{"data": `{"orderid":"o1"}`, "message_id": "m1"}}).Err(); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		select {
		case got[name] = <-read:
		case <-ctx.Done():
			t.Fatalf("%s: the blocked reader got nothing", name)
		}
		if err := rc.Publish(ctx, prefix+"line_allocated", "hello").Err(); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		m, err := ps.ReceiveMessage(ctx)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		messages[name] = m.Channel + " " + m.Payload
	}
	want := []goredis.XStream{{Stream: prefix + "allocate", Messages: []goredis.XMessage{{ID: "5-1", Values: map[string]any{"data": `{"orderid":"o1"}`, "message_id": "m1"}}}}}
	for name := range servers {
		if !reflect.DeepEqual(got[name], want) {
			t.Errorf("%s over RESP%d: XREADGROUP woken by XADD read %+v, want %+v", name, protocol, got[name], want)
		}
		if messages[name] != prefix+"line_allocated hello" {
			t.Errorf("%s: subscriber got %q", name, messages[name])
		}
	}
}
