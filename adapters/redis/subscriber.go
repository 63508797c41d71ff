package redis

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"
	goredis "github.com/redis/go-redis/v9"
)

// DeadLetters is the list where messages that could not be applied are kept,
// newest last; it is trimmed to the last maxDeadLetters.
const (
	DeadLetters    = "dead_letter"
	maxDeadLetters = 10_000
)

// Subscriber receives messages on prefixed channels.
type Subscriber struct {
	client *goredis.Client
	prefix string
	log    *slog.Logger
}

func NewSubscriber(c *goredis.Client, prefix string, log *slog.Logger) *Subscriber {
	return &Subscriber{client: c, prefix: prefix, log: log}
}

// Run calls handle for every message on channels, one at a time in arrival
// order, with the channel name unprefixed. It re-subscribes with backoff when
// the connection drops and returns nil once ctx ends.
func (s *Subscriber) Run(ctx context.Context, channels []string, handle func(ctx context.Context, channel string, payload []byte)) error {
	names := make([]string, len(channels))
	for i, c := range channels {
		names[i] = s.prefix + c
	}
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval = 100 * time.Millisecond
	bo.MaxInterval = 5 * time.Second
	bo.MaxElapsedTime = 0 // never give up while ctx lives
	for {
		err := s.listen(ctx, names, handle, bo.Reset)
		if ctx.Err() != nil {
			return nil
		}
		wait := bo.NextBackOff()
		s.log.WarnContext(ctx, "redis subscription lost, reconnecting", "error", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

// listen holds one subscription until it fails or ctx ends.
func (s *Subscriber) listen(ctx context.Context, names []string, handle func(context.Context, string, []byte), subscribed func()) error {
	ps := s.client.Subscribe(ctx, names...)
	defer ps.Close()
	// Receive does not return when ctx ends; closing the subscription does.
	stop := context.AfterFunc(ctx, func() { _ = ps.Close() })
	defer stop()
	for {
		msg, err := ps.Receive(ctx)
		if err != nil {
			return err
		}
		switch m := msg.(type) {
		case *goredis.Subscription:
			if m.Kind == "subscribe" {
				s.log.InfoContext(ctx, "subscribed", "channel", m.Channel)
				subscribed()
			}
		case *goredis.Message:
			handle(ctx, strings.TrimPrefix(m.Channel, s.prefix), []byte(m.Payload))
		case *goredis.Pong:
		default:
			return fmt.Errorf("unexpected pubsub message %T", msg)
		}
	}
}

type deadLetter struct {
	Channel string `json:"channel"`
	Payload string `json:"payload"`
	Reason  string `json:"reason"`
	At      string `json:"at"`
}

// DeadLetter keeps a message that could not be applied, with the reason.
func (s *Subscriber) DeadLetter(ctx context.Context, channel string, payload []byte, reason string) error {
	body, err := json.Marshal(deadLetter{Channel: channel, Payload: string(payload), Reason: reason, At: time.Now().UTC().Format(time.RFC3339Nano)})
	if err != nil {
		return fmt.Errorf("encode dead letter: %w", err)
	}
	key := s.prefix + DeadLetters
	_, err = s.client.TxPipelined(ctx, func(p goredis.Pipeliner) error {
		p.RPush(ctx, key, body)
		p.LTrim(ctx, key, -maxDeadLetters, -1)
		return nil
	})
	if err != nil {
		return fmt.Errorf("dead-letter message from %s: %w", channel, err)
	}
	return nil
}
