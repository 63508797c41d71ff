package integration_test

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"allocation/adapters/redis"
	"allocation/domain"
	"allocation/servicelayer"
	"allocation/tests/testenv"
)

func TestRedisPublisherSendsAllocatedAsLineAllocatedUnderThePrefix(t *testing.T) {
	onEveryRedis(t, func(t *testing.T, connect redisConnector) {
		rc := connect(t)
		prefix := testenv.Prefix()
		testenv.DeleteKeysAtEnd(t, rc, prefix)
		messages := subscribeTo(t, rc, prefix+"line_allocated")

		env := servicelayer.Envelope{
			MessageID:  uuid.NewString(),
			OccurredAt: time.Date(2026, 3, 14, 15, 9, 26, 535000000, time.FixedZone("CET", 3600)),
			Event:      domain.Allocated{OrderID: testenv.RandomName("order-"), SKU: testenv.RandomName("sku-"), Qty: 7, BatchRef: testenv.RandomName("batch-")},
		}
		if err := redis.NewPublisher(rc, prefix).Publish(context.Background(), env); err != nil {
			t.Fatalf("Publish: %v", err)
		}

		msg := awaitMessage(t, messages)
		if msg.Channel != prefix+"line_allocated" {
			t.Errorf("channel = %q, want %q", msg.Channel, prefix+"line_allocated")
		}
		var body map[string]any
		if err := json.Unmarshal([]byte(msg.Payload), &body); err != nil {
			t.Fatalf("payload %s is not a JSON object: %v", msg.Payload, err)
		}
		wantKeys := []string{"batchref", "message_id", "occurred_at", "orderid", "qty", "sku"}
		if got := slices.Sorted(maps.Keys(body)); !slices.Equal(got, wantKeys) {
			t.Errorf("fields = %v, want exactly %v", got, wantKeys)
		}
		ev := env.Event.(domain.Allocated)
		for field, want := range map[string]any{
			"orderid": ev.OrderID, "sku": ev.SKU, "qty": float64(ev.Qty), "batchref": ev.BatchRef, "message_id": env.MessageID,
		} {
			if body[field] != want {
				t.Errorf("%s = %v, want %v", field, body[field], want)
			}
		}
		stamp, _ := body["occurred_at"].(string)
		at, err := time.Parse(time.RFC3339, stamp)
		if err != nil {
			t.Fatalf("occurred_at %q is not RFC 3339: %v", stamp, err)
		}
		if !at.Equal(env.OccurredAt) || !strings.HasSuffix(stamp, "Z") {
			t.Errorf("occurred_at = %q, want %s in UTC", stamp, env.OccurredAt.UTC().Format(time.RFC3339Nano))
		}
	})
}

// An event with no channel is the message's own fault: a permanent failure,
// found before anything of its batch is sent.
func TestRedisPublisherRefusesEventsThatHaveNoChannel(t *testing.T) {
	t.Parallel()
	rc, prefix := testenv.Redis(t), testenv.Prefix()
	testenv.DeleteKeysAtEnd(t, rc, prefix)
	pub := redis.NewPublisher(rc, prefix)
	for _, ev := range []domain.Event{domain.OutOfStock{SKU: "LAMP"}, nil} {
		env := servicelayer.Envelope{MessageID: uuid.NewString(), OccurredAt: time.Now(), Event: ev}
		name := "(none)"
		if ev != nil {
			name = ev.Name()
		}
		err := pub.Publish(context.Background(), env)
		if !errors.Is(err, servicelayer.ErrPermanent) || !strings.Contains(err.Error(), name) {
			t.Errorf("Publish(%s) = %v, want a permanent failure naming the event", name, err)
		}
		err = pub.PublishBatch(context.Background(), []servicelayer.Envelope{allocatedEnv(1), env})
		if !errors.Is(err, servicelayer.ErrPermanent) {
			t.Errorf("PublishBatch with %s = %v, want a permanent failure", name, err)
		}
	}
	if keys, err := keysWith(context.Background(), rc, prefix); err != nil || len(keys) != 0 {
		t.Fatalf("keys %v (%v); a batch with an unpublishable event must send nothing", keys, err)
	}
}
