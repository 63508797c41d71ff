package unit_test

import (
	"strconv"
	"strings"
	"testing"

	"allocation/domain"
	"allocation/entrypoints/consumer"
)

func TestConsumerDecodesGoodMessages(t *testing.T) {
	maxQty := strconv.Itoa(domain.MaxQuantity)
	cases := []struct {
		channel, payload string
		want             domain.Command
	}{
		{"change_batch_quantity", `{"batchref": "b1", "qty": 5}`, domain.ChangeBatchQuantity{Ref: "b1", Qty: 5}},
		{"change_batch_quantity", `{"batchref": "b1", "qty": 0, "message_id": "m1"}`, domain.ChangeBatchQuantity{Ref: "b1", Qty: 0}},
		{"change_batch_quantity", ` {"qty": ` + maxQty + `, "batchref": "b1"} ` + "\n", domain.ChangeBatchQuantity{Ref: "b1", Qty: domain.MaxQuantity}},
		{"allocate", `{"orderid": "o1", "sku": "LAMP", "qty": 3}`, domain.Allocate{OrderID: "o1", SKU: "LAMP", Qty: 3}},
		{"allocate", `{"orderid": "o1", "sku": "LAMP", "qty": 3, "message_id": "m2"}`, domain.Allocate{OrderID: "o1", SKU: "LAMP", Qty: 3}},
		{"allocate", `{"orderid": "o1", "sku": "LAMP", "qty": 1}`, domain.Allocate{OrderID: "o1", SKU: "LAMP", Qty: 1}},
		{"allocate", `{"orderid": "ордер", "sku": "LAMP-ß", "qty": ` + maxQty + `}`, domain.Allocate{OrderID: "ордер", SKU: "LAMP-ß", Qty: domain.MaxQuantity}},
	}
	for _, c := range cases {
		got, err := consumer.Decode(c.channel, []byte(c.payload))
		if err != nil || got.Command != c.want {
			t.Errorf("Decode(%s, %s) = %v, %v; want %v", c.channel, c.payload, got, err, c.want)
		}
	}
}

func TestConsumerRefusesMalformedMessagesNamingTheProblem(t *testing.T) {
	tooBig := strconv.Itoa(domain.MaxQuantity + 1)
	longRef := strings.Repeat("r", domain.MaxReferenceLength+1)
	cases := []struct {
		channel, payload, mentions string
	}{
		// not one JSON object
		{"change_batch_quantity", `not json`, "body"},
		{"change_batch_quantity", ``, "body"},
		{"change_batch_quantity", `   `, "body"},
		{"change_batch_quantity", `{"batchref": "b1", "qty": 5`, "body"},
		{"change_batch_quantity", `{"batchref": "b1", "qty": 5} trailing`, "body"},
		{"change_batch_quantity", `{"batchref": "b1", "qty": 5}{}`, "body"},
		{"change_batch_quantity", `null`, "body must be a JSON object"},
		{"allocate", `"just a string"`, "body"},
		{"allocate", `[1, 2]`, "body"},
		// missing or empty fields
		{"change_batch_quantity", `{"batchref": "b1"}`, "qty is required"},
		{"change_batch_quantity", `{"qty": 1}`, "batchref is required"},
		{"change_batch_quantity", `{"batchref": null, "qty": 1}`, "batchref is required"},
		{"change_batch_quantity", `{"batchref": "", "qty": 1}`, "batchref must be"},
		{"change_batch_quantity", `{"batchref": "` + longRef + `", "qty": 1}`, "batchref must be"},
		{"allocate", `{"orderid": "o1", "sku": "LAMP"}`, "qty is required"},
		{"allocate", `{"sku": "LAMP", "qty": 1}`, "orderid is required"},
		{"allocate", `{"orderid": "o1", "qty": 1}`, "sku is required"},
		{"allocate", `{"orderid": "", "sku": "LAMP", "qty": 1}`, "orderid must be"},
		{"allocate", `{"orderid": "o1", "sku": "", "qty": 1}`, "sku must be"},
		// wrong types
		{"change_batch_quantity", `{"batchref": "b1", "qty": "5"}`, "qty must be an integer"},
		{"change_batch_quantity", `{"batchref": "b1", "qty": 2.5}`, "qty must be an integer"},
		{"change_batch_quantity", `{"batchref": 7, "qty": 5}`, "batchref must be a string"},
		{"allocate", `{"orderid": 7, "sku": "LAMP", "qty": 1}`, "orderid must be a string"},
		{"allocate", `{"orderid": "o1", "sku": ["LAMP"], "qty": 1}`, "sku must be a string"},
		{"allocate", `{"orderid": "o1", "sku": "LAMP", "qty": true}`, "qty must be an integer"},
		{"allocate", `{"orderid": "o1", "sku": "LAMP", "qty": 1, "message_id": 9}`, "message_id must be a string"},
		// out of range
		{"change_batch_quantity", `{"batchref": "b1", "qty": -1}`, "qty must be an integer from 0"},
		{"change_batch_quantity", `{"batchref": "b1", "qty": ` + tooBig + `}`, "qty must be an integer from 0"},
		{"allocate", `{"orderid": "o1", "sku": "LAMP", "qty": 0}`, "qty must be an integer from 1"},
		{"allocate", `{"orderid": "o1", "sku": "LAMP", "qty": -3}`, "qty must be an integer from 1"},
		{"allocate", `{"orderid": "o1", "sku": "LAMP", "qty": ` + tooBig + `}`, "qty must be an integer from 1"},
		// unknown fields
		{"change_batch_quantity", `{"batchref": "b1", "qty": 5, "colour": "red"}`, "colour is not a known field"},
		{"allocate", `{"orderid": "o1", "sku": "LAMP", "qty": 1, "batchref": "b1"}`, "batchref is not a known field"},
		// nothing is sent there
		{"elsewhere", `{}`, "channel"},
		{"line_allocated", `{"orderid": "o1", "sku": "LAMP", "qty": 1, "batchref": "b1"}`, "channel"},
	}
	for _, c := range cases {
		cmd, err := consumer.Decode(c.channel, []byte(c.payload))
		if err == nil || !strings.Contains(err.Error(), c.mentions) {
			t.Errorf("Decode(%s, %.60s) = %v, %v; want an error mentioning %q", c.channel, c.payload, cmd, err, c.mentions)
		}
	}
}

func TestDuplicatedFieldsAreRefusedNotOverwritten(t *testing.T) {
	for _, payload := range []string{
		`{"batchref": "b1", "qty": 5, "qty": 500}`,
		`{"batchref": "b1", "qty": 5, "QTY": 500}`,
	} {
		_, err := consumer.Decode("change_batch_quantity", []byte(payload))
		if err == nil || !strings.Contains(err.Error(), "more than once") {
			t.Errorf("Decode(%s): got %v, want a duplicate field error", payload, err)
		}
	}
}
