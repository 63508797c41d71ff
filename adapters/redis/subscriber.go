package redis

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// DeadLetters is the list where messages that could not be applied are kept,
// newest last, for a quick look; it is trimmed to the last MaxDeadLetters so
// that a flood of poison messages cannot fill Redis. The database keeps every
// one of them (the consumer records them there first).
const (
	DeadLetters    = "dead_letter"
	MaxDeadLetters = 10_000
)

// Subscriber receives messages on prefixed channels and keeps dead letters.
type Subscriber struct {
	client goredis.UniversalClient
	prefix string
	log    *slog.Logger

	readyOnce sync.Once
	ready     chan struct{}
	// trimmed is told how many old entries each DeadLetter trimmed off.
	trimmed func(n int)
}

// NewSubscriber subscribes to prefix+channel; the prefix is used as is.
func NewSubscriber(c goredis.UniversalClient, prefix string, log *slog.Logger) *Subscriber {
	if log == nil {
		log = slog.Default()
	}
	return &Subscriber{client: c, prefix: prefix, log: log, ready: make(chan struct{}), trimmed: func(int) {}}
}

// OnTrimmed has f told how many of the oldest dead letters each DeadLetter
// trimmed off the list (n > 0), for a metric; call it before Run.
func (s *Subscriber) OnTrimmed(f func(n int)) { s.trimmed = f }

// Ready is closed once Run has confirmed its first subscription to every
// channel. Pub/sub drops what is published before that, so tests (and
// anything else that publishes right after start-up) wait on it.
func (s *Subscriber) Ready() <-chan struct{} { return s.ready }

// Run calls handle for every message on channels, one at a time in arrival
// order, with the channel name unprefixed. handle may hand the message on and
// return, or block: no further message is read meanwhile (Redis buffers
// them, within its pub/sub output buffer limit), which is how a busy consumer
// holds back the flow. When the connection drops it
// re-subscribes with exponential backoff, for as long as ctx lives; it returns
// nil once ctx ends. Messages published while it is disconnected are lost:
// that is pub/sub.
func (s *Subscriber) Run(ctx context.Context, channels []string, handle func(ctx context.Context, channel string, payload []byte)) error {
	if len(channels) == 0 {
		return errors.New("redis subscriber: no channels to subscribe to")
	}
	names := make([]string, 0, len(channels))
	for _, c := range channels {
		names = append(names, s.prefix+c)
	}
	slices.Sort(names)
	names = slices.Compact(names) // the confirmation count must match

	return untilCancelled(ctx, s.log, "redis subscription lost, re-subscribing", []any{"channels", names}, func(healthy func()) error {
		return s.listen(ctx, names, handle, healthy)
	})
}

// listen holds one subscription until it fails or ctx ends. subscribed is
// called once every channel is confirmed.
func (s *Subscriber) listen(ctx context.Context, names []string, handle func(context.Context, string, []byte), subscribed func()) error {
	ps := s.client.Subscribe(ctx, names...)
	defer ps.Close()
	// A blocked Receive does not notice ctx ending; closing the subscription
	// wakes it up.
	stop := context.AfterFunc(ctx, func() { _ = ps.Close() })
	defer stop()
	for {
		msg, err := ps.Receive(ctx)
		if err != nil {
			return err
		}
		switch m := msg.(type) {
		case *goredis.Subscription:
			if m.Kind == "subscribe" && m.Count == len(names) {
				s.log.InfoContext(ctx, "redis subscription active", "channels", names)
				subscribed()
				s.readyOnce.Do(func() { close(s.ready) })
			}
		case *goredis.Message:
			handle(ctx, strings.TrimPrefix(m.Channel, s.prefix), []byte(m.Payload))
		case *goredis.Pong:
		default:
			return fmt.Errorf("unexpected pub/sub reply %T", msg)
		}
	}
}

// DeadLetterRecord is one message set aside, as stored in the dead-letter list.
type DeadLetterRecord struct {
	Channel string `json:"channel"`
	// Payload is the message as received (bytes that are not UTF-8 become
	// U+FFFD: JSON strings are text).
	Payload string `json:"payload"`
	Reason  string `json:"reason"`
	// At is when it was set aside, RFC 3339 UTC.
	At string `json:"at"`
}

// DeadLetter keeps a message that could not be applied, with the reason, at
// the end of the list prefix+DeadLetters.
func (s *Subscriber) DeadLetter(ctx context.Context, channel string, payload []byte, reason string) error {
	body, err := json.Marshal(DeadLetterRecord{
		Channel: channel,
		Payload: string(payload),
		Reason:  reason,
		At:      time.Now().UTC().Format(time.RFC3339Nano),
	})
	if err != nil {
		return fmt.Errorf("encode dead letter: %w", err)
	}
	key := s.prefix + DeadLetters
	// Push and trim in one transaction: the list never exceeds its bound,
	// and the length RPUSH answers is the one LTRIM cuts down, so what is
	// beyond the bound is exactly what was trimmed.
	var length *goredis.IntCmd
	_, err = s.client.TxPipelined(ctx, func(p goredis.Pipeliner) error {
		length = p.RPush(ctx, key, body)
		p.LTrim(ctx, key, -MaxDeadLetters, -1)
		return nil
	})
	if err != nil {
		return fmt.Errorf("dead-letter message from %s: %w", channel, err)
	}
	if n := length.Val() - MaxDeadLetters; n > 0 {
		s.trimmed(int(n))
	}
	return nil
}
