package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"allocation/tests/testenv"
)

type lineAllocated struct {
	OrderID       string `json:"orderid"`
	SKU           string `json:"sku"`
	Qty           int    `json:"qty"`
	BatchRef      string `json:"batchref"`
	MessageID     string `json:"message_id"`
	OccurredAt    string `json:"occurred_at"`
	CausationID   string `json:"causation_id"`
	CorrelationID string `json:"correlation_id"`
}

func TestChangeBatchQuantityLeadingToReallocation(t *testing.T) {
	t.Parallel()
	reallocationScenario(t, startService(t))
}

// reallocationScenario is the book's scenario on the running service s: two
// batches, an order allocated over HTTP to the earlier one, whose quantity
// a change_batch_quantity message on the channel then lowers; line_allocated
// announces the order on the later batch, with the chain of causes, and the
// view follows.
func reallocationScenario(t *testing.T, s *service) {
	t.Helper()
	orderID, sku := testenv.RandomName("order-"), testenv.RandomName("sku-")
	earlier, later := testenv.RandomName("old-"), testenv.RandomName("newer-")
	s.addBatch(earlier, sku, 10, "2011-01-01")
	s.addBatch(later, sku, 10, "2011-01-02")
	if status, body := s.post("/allocate", map[string]any{"orderid": orderID, "sku": sku, "qty": 10}); status != http.StatusAccepted {
		t.Fatalf("allocate: %d %v", status, body)
	}
	if _, rows := s.allocations(orderID); len(rows) != 1 || rows[0].BatchRef != earlier {
		t.Fatalf("before the change: %v, want %s", rows, earlier)
	}

	messages := s.subscribe("line_allocated")
	changeID := testenv.RandomName("change-")
	s.publish("change_batch_quantity", map[string]any{"batchref": earlier, "qty": 5, "message_id": changeID})

	got := awaitLineAllocated(t, messages, orderID, later)
	if got.SKU != sku || got.Qty != 10 || got.MessageID == "" {
		t.Fatalf("line_allocated fields: %+v", got)
	}
	// The chain can be followed: started by the change message, caused by the
	// Deallocated event it led to.
	if got.CorrelationID != changeID || got.CausationID == "" || got.CausationID == changeID {
		t.Fatalf("correlation %q, causation %q; want the change's id %q and the deallocation's", got.CorrelationID, got.CausationID, changeID)
	}
	// The consumer logs the message as handled once the bus returns, which
	// is after line_allocated went out: wait for the line.
	testenv.Eventually(t, 5*time.Second, func() error {
		if !strings.Contains(s.logs.String(), `"correlation_id":"`+changeID+`"`) {
			return fmt.Errorf("no log line of the change's work carries its id %s", changeID)
		}
		return nil
	})
	if _, err := time.Parse(time.RFC3339, got.OccurredAt); err != nil {
		t.Fatalf("occurred_at %q is not RFC 3339: %v", got.OccurredAt, err)
	}
	testenv.Eventually(t, 5*time.Second, func() error {
		if _, rows := s.allocations(orderID); len(rows) != 1 || rows[0].BatchRef != later {
			return fmt.Errorf("view after reallocation: %v, want %s", rows, later)
		}
		return nil
	})
}

func TestAllocateChannelAllocatesAndAnnounces(t *testing.T) {
	t.Parallel()
	s := startService(t)
	orderID, sku, ref := testenv.RandomName("order-"), testenv.RandomName("sku-"), testenv.RandomName("batch-")
	s.addBatch(ref, sku, 10, nil)
	messages := s.subscribe("line_allocated")

	s.publish("allocate", map[string]any{"orderid": orderID, "sku": sku, "qty": 4, "message_id": "d3b5e4a8-0000-4000-8000-000000000001"})

	awaitLineAllocated(t, messages, orderID, ref)
	testenv.Eventually(t, 5*time.Second, func() error {
		if status, rows := s.allocations(orderID); status != http.StatusOK || len(rows) != 1 || rows[0].BatchRef != ref {
			return fmt.Errorf("view: %d %v", status, rows)
		}
		return nil
	})
}

// A sender may add fields of its own and propagate its trace and chain: the
// message is applied, and the event it raises carries the sender's
// correlation_id and is caused by the message.
func TestAnAllocateMessageWithExtraFieldsIsAppliedAndItsChainCarriedOn(t *testing.T) {
	t.Parallel()
	s := startService(t)
	orderID, sku, ref := testenv.RandomName("order-"), testenv.RandomName("sku-"), testenv.RandomName("batch-")
	s.addBatch(ref, sku, 10, nil)
	messages := s.subscribe("line_allocated")

	messageID, correlationID := testenv.RandomName("msg-"), testenv.RandomName("checkout-")
	s.publish("allocate", map[string]any{
		"orderid": orderID, "sku": sku, "qty": 4, "message_id": messageID,
		"correlation_id": correlationID, "causation_id": testenv.RandomName("cart-"),
		"traceparent":  "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"channel_hint": "web", "customer": map[string]any{"tier": "gold"},
	})

	got := awaitLineAllocated(t, messages, orderID, ref)
	if got.CorrelationID != correlationID || got.CausationID != messageID {
		t.Fatalf("line_allocated correlation_id %q, causation_id %q; want %q and the message's id %q", got.CorrelationID, got.CausationID, correlationID, messageID)
	}
}

// Poison messages are set aside with a reason and the consumer goes on.
func TestPoisonMessagesAreDeadLetteredAndTheConsumerGoesOn(t *testing.T) {
	t.Parallel()
	s := startService(t)
	sku, ref := testenv.RandomName("sku-"), testenv.RandomName("batch-")
	s.addBatch(ref, sku, 10, nil)
	poison := []struct {
		channel string
		body    []byte
	}{
		{"allocate", []byte(`not json`)},
		{"allocate", []byte(`{"orderid": "o", "sku": "` + sku + `", "qty": "many"}`)},
		{"allocate", []byte(`{"orderid": "o", "sku": "no-such-sku", "qty": 1}`)},
		{"change_batch_quantity", []byte(`{"batchref": "` + ref + `"}`)},
		{"change_batch_quantity", []byte(`{"batchref": "no-such-batch", "qty": 3}`)},
		{"change_batch_quantity", []byte(`{"batchref": "` + ref + `", "qty": -3}`)},
	}
	for _, p := range poison {
		s.publish(p.channel, p.body)
	}
	orderID := testenv.RandomName("order-")
	s.publish("allocate", map[string]any{"orderid": orderID, "sku": sku, "qty": 1})

	testenv.Eventually(t, 10*time.Second, func() error {
		if status, rows := s.allocations(orderID); status != http.StatusOK || len(rows) != 1 {
			return fmt.Errorf("good message after poison not handled: %d %v", status, rows)
		}
		return nil
	})
	// Messages about other products (and malformed ones) are handled side
	// by side with the good one: wait for them too.
	var letters []string
	testenv.Eventually(t, 10*time.Second, func() error {
		var err error
		letters, err = s.redis.LRange(context.Background(), s.prefix+"dead_letter", 0, -1).Result()
		if err != nil {
			return fmt.Errorf("read dead letters: %w", err)
		}
		if len(letters) != len(poison) {
			return fmt.Errorf("%d dead letters, want %d: %v", len(letters), len(poison), letters)
		}
		return nil
	})
	for _, l := range letters {
		var letter struct{ Channel, Payload, Reason string }
		if err := json.Unmarshal([]byte(l), &letter); err != nil || letter.Reason == "" || letter.Channel == "" {
			t.Errorf("dead letter without channel or reason: %s", l)
		}
	}
	// Nothing of a poison message was applied: the batch still has 10 - 1.
	status, body := s.post("/allocate", map[string]any{"orderid": testenv.RandomName("o-"), "sku": sku, "qty": 9})
	if status != http.StatusAccepted || body["batchref"] != ref {
		t.Fatalf("stock after poison: %d %v, want the remaining 9 allocatable", status, body)
	}
}
