package redis

import (
	"context"
	"errors"
	"fmt"
	"sync"

	goredis "github.com/redis/go-redis/v9"

	"allocation/servicelayer"
)

// ErrNoSubscriber: a message published on a channel reached nobody, so it
// is gone (pub/sub keeps nothing).
var ErrNoSubscriber = errors.New("no subscriber received it (is the service's consumer running on this REDIS_PREFIX?)")

// Redriver puts dead letters back where they came from, under a prefix.
type Redriver struct {
	client goredis.UniversalClient
	prefix string
}

// NewRedriver re-drives on prefix+channel; the prefix is used as is.
func NewRedriver(c goredis.UniversalClient, prefix string) *Redriver {
	return &Redriver{client: c, prefix: prefix}
}

// Redrive implements servicelayer.Redriver: a dead letter from a stream is
// appended to it as a new entry (its body in the "data" field), where the
// consumer group reads it; one from pub/sub is published on its channel,
// and fails with ErrNoSubscriber when nobody listened.
func (r *Redriver) Redrive(ctx context.Context, l servicelayer.DeadLetter) error {
	key := r.prefix + l.Channel
	if l.FromStream() {
		values := map[string]any{"data": string(l.Payload)}
		if err := r.client.XAdd(ctx, &goredis.XAddArgs{Stream: key, Values: values}).Err(); err != nil {
			return fmt.Errorf("append to stream %s: %w", key, err)
		}
		return nil
	}
	n, err := r.client.Publish(ctx, key, l.Payload).Result()
	if err != nil {
		return fmt.Errorf("publish on %s: %w", key, err)
	}
	if cluster, ok := r.client.(*goredis.ClusterClient); ok && n == 0 {
		// A Cluster node counts only its own subscribers, yet sends the
		// message on to every node: ask them all who listens.
		if n, err = Subscribers(ctx, cluster, key); err != nil {
			return fmt.Errorf("published on %s; counting its subscribers: %w", key, err)
		}
	}
	if n == 0 {
		return fmt.Errorf("publish on %s: %w", key, ErrNoSubscriber)
	}
	return nil
}

// Subscribers counts the clients subscribed to channel on every node of a
// Cluster, masters and replicas: PUBSUB NUMSUB answers for one node only.
func Subscribers(ctx context.Context, c *goredis.ClusterClient, channel string) (int64, error) {
	var mu sync.Mutex
	var total int64
	err := c.ForEachShard(ctx, func(ctx context.Context, node *goredis.Client) error {
		n, err := node.PubSubNumSub(ctx, channel).Result()
		if err != nil {
			return err
		}
		mu.Lock()
		total += n[channel]
		mu.Unlock()
		return nil
	})
	return total, err
}
