// Package redis carries events and commands over Redis pub/sub: it publishes
// the service's events, subscribes to the channels other services send
// commands on, and keeps the messages it could not apply (dead letters).
// Every channel and key name is the configured prefix followed by the name.
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

// Publisher implements servicelayer.Publisher.
type Publisher struct {
	client *goredis.Client
	prefix string
}

// NewPublisher publishes on prefix+channel; the prefix is used as is.
func NewPublisher(c *goredis.Client, prefix string) *Publisher {
	return &Publisher{client: c, prefix: prefix}
}

// lineAllocatedBody is the wire format of line_allocated.
type lineAllocatedBody struct {
	OrderID    string `json:"orderid"`
	SKU        string `json:"sku"`
	Qty        int    `json:"qty"`
	BatchRef   string `json:"batchref"`
	MessageID  string `json:"message_id"`
	OccurredAt string `json:"occurred_at"`
}

// Publish sends env on the channel of its event, with its message_id and
// occurred_at beside the event's fields. An event with no channel is an error.
func (p *Publisher) Publish(ctx context.Context, env servicelayer.Envelope) error {
	channel, body, err := encode(env)
	if err != nil {
		return err
	}
	if err := p.client.Publish(ctx, p.prefix+channel, body).Err(); err != nil {
		return fmt.Errorf("publish %s %s: %w", channel, env.MessageID, err)
	}
	return nil
}

func encode(env servicelayer.Envelope) (channel string, body []byte, err error) {
	switch ev := env.Event.(type) {
	case domain.Allocated:
		body, err = json.Marshal(lineAllocatedBody{
			OrderID:    ev.OrderID,
			SKU:        ev.SKU,
			Qty:        ev.Qty,
			BatchRef:   ev.BatchRef,
			MessageID:  env.MessageID,
			OccurredAt: env.OccurredAt.UTC().Format(time.RFC3339Nano),
		})
		return LineAllocated, body, err
	default:
		return "", nil, fmt.Errorf("no channel for event %s", env.Event.Name())
	}
}
