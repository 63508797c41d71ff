package unit_test

import (
	"strings"
	"testing"

	"allocation/domain"
	"allocation/entrypoints/consumer"
)

func TestConsumerDecodesGoodMessages(t *testing.T) {
	cases := []struct {
		channel, payload string
		want             domain.Command
	}{
		{"change_batch_quantity", `{"batchref": "b1", "qty": 5}`, domain.ChangeBatchQuantity{Ref: "b1", Qty: 5}},
		{"change_batch_quantity", `{"batchref": "b1", "qty": 0, "message_id": "m1"}`, domain.ChangeBatchQuantity{Ref: "b1", Qty: 0}},
		{"allocate", `{"orderid": "o1", "sku": "LAMP", "qty": 3}`, domain.Allocate{OrderID: "o1", SKU: "LAMP", Qty: 3}},
		{"allocate", `{"orderid": "o1", "sku": "LAMP", "qty": 3, "message_id": "m2"}`, domain.Allocate{OrderID: "o1", SKU: "LAMP", Qty: 3}},
	}
	for _, c := range cases {
		got, err := consumer.Decode(c.channel, []byte(c.payload))
		if err != nil || got != c.want {
			t.Errorf("Decode(%s, %s) = %v, %v; want %v", c.channel, c.payload, got, err, c.want)
		}
	}
}

func TestConsumerRefusesMalformedMessagesNamingTheProblem(t *testing.T) {
	cases := []struct {
		channel, payload, mentions string
	}{
		{"change_batch_quantity", `not json`, "body"},
		{"change_batch_quantity", ``, "body"},
		{"change_batch_quantity", `{"batchref": "b1"}`, "qty"},
		{"change_batch_quantity", `{"qty": 1}`, "batchref"},
		{"change_batch_quantity", `{"batchref": "", "qty": 1}`, "batchref"},
		{"change_batch_quantity", `{"batchref": "b1", "qty": "5"}`, "qty"},
		{"change_batch_quantity", `{"batchref": "b1", "qty": 2.5}`, "qty"},
		{"change_batch_quantity", `{"batchref": "b1", "qty": 5, "colour": "red"}`, "colour"},
		{"change_batch_quantity", `{"batchref": "b1", "qty": 5} trailing`, "body"},
		{"allocate", `{"orderid": "o1", "sku": "LAMP"}`, "qty"},
		{"allocate", `{"orderid": 7, "sku": "LAMP", "qty": 1}`, "orderid"},
		{"allocate", `"just a string"`, "body"},
		{"elsewhere", `{}`, "channel"},
	}
	for _, c := range cases {
		_, err := consumer.Decode(c.channel, []byte(c.payload))
		if err == nil || !strings.Contains(err.Error(), c.mentions) {
			t.Errorf("Decode(%s, %s): got %v, want an error mentioning %q", c.channel, c.payload, err, c.mentions)
		}
	}
}
