// Package redis carries events and commands over Redis: it publishes the
// service's events on pub/sub channels and appends them to streams, reads the
// commands other services send (pub/sub, and streams through a consumer
// group), and keeps the messages it could not apply (dead letters). Every
// channel and key name is the configured prefix followed by the name.
package redis

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"allocation/domain"
	"allocation/servicelayer"
)

// LineAllocated is the channel Allocated events go out on.
const LineAllocated = "line_allocated"

// Defaults of the outbound streams.
const (
	// DefaultStreamMaxLen is roughly how many entries a stream keeps (XADD
	// MAXLEN ~): enough for a subscriber that was down a while to catch up.
	DefaultStreamMaxLen = 100_000
	// dedupeTTL is how long a published message id is remembered, so that a
	// redelivery is dropped. Redeliveries come within minutes: after a crash
	// between publishing and marking the delivery done (2 s grace, 5 s
	// claims), or a publish that timed out but went through (retries give
	// up after about five minutes). At 1,000 events/s a day's worth of ids
	// would take Redis gigabytes; a quarter of an hour takes tens of MB.
	dedupeTTL = 15 * time.Minute
)

// publishOnce appends the message to the stream and publishes it on the
// channel, unless its id was published before: one atomic step in Redis, so
// that a redelivered event never reaches a stream reader twice.
//
// KEYS[1] stream, KEYS[2] dedupe key; ARGV: channel, body, message id,
// max length, dedupe ttl in seconds.
var publishOnce = goredis.NewScript(`
if not redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[5]) then
	return 0
end
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[4], '*', 'data', ARGV[2], 'message_id', ARGV[3])
redis.call('PUBLISH', ARGV[1], ARGV[2])
return 1
`)

// Publisher implements servicelayer.Publisher.
type Publisher struct {
	client *goredis.Client
	prefix string
	maxLen int64
}

// NewPublisher publishes on prefix+channel and appends to the stream of the
// same name; the prefix is used as is.
func NewPublisher(c *goredis.Client, prefix string) *Publisher {
	return &Publisher{client: c, prefix: prefix, maxLen: DefaultStreamMaxLen}
}

// SetStreamMaxLen changes roughly how many entries each outbound stream keeps.
func (p *Publisher) SetStreamMaxLen(n int64) { p.maxLen = n }

// lineAllocatedBody is the wire format of line_allocated.
type lineAllocatedBody struct {
	OrderID       string `json:"orderid"`
	SKU           string `json:"sku"`
	Qty           int    `json:"qty"`
	BatchRef      string `json:"batchref"`
	MessageID     string `json:"message_id"`
	OccurredAt    string `json:"occurred_at"`
	CausationID   string `json:"causation_id,omitempty"`
	CorrelationID string `json:"correlation_id,omitempty"`
}

// Publish sends env on the channel of its event, with its message_id and
// occurred_at beside the event's fields. An event with no channel is an error.
func (p *Publisher) Publish(ctx context.Context, env servicelayer.Envelope) error {
	channel, body, err := encode(env)
	if err != nil {
		return err
	}
	keys := []string{p.prefix + channel, p.prefix + "published:" + env.MessageID}
	err = publishOnce.Run(ctx, p.client, keys, p.prefix+channel, body, env.MessageID, p.maxLen, int64(dedupeTTL.Seconds())).Err()
	if err != nil {
		return fmt.Errorf("publish %s %s: %w", channel, env.MessageID, err)
	}
	return nil
}

func encode(env servicelayer.Envelope) (channel string, body []byte, err error) {
	switch ev := env.Event.(type) {
	case domain.Allocated:
		body, err = json.Marshal(lineAllocatedBody{
			OrderID:       ev.OrderID,
			SKU:           ev.SKU,
			Qty:           ev.Qty,
			BatchRef:      ev.BatchRef,
			MessageID:     env.MessageID,
			OccurredAt:    env.OccurredAt.UTC().Format(time.RFC3339Nano),
			CausationID:   env.CausationID,
			CorrelationID: env.CorrelationID,
		})
		return LineAllocated, body, err
	default:
		return "", nil, fmt.Errorf("no channel for event %s", env.Event.Name())
	}
}

// PublishBatch publishes envs in order.
func (p *Publisher) PublishBatch(ctx context.Context, envs []servicelayer.Envelope) error {
	for _, env := range envs {
		if err := p.Publish(ctx, env); err != nil {
			return err
		}
	}
	return nil
}
