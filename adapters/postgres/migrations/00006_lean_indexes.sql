-- +goose Up
-- Every index and foreign key is paid for on every allocation. Keep the ones
-- a query or an invariant needs:
-- - a line is a value: (orderid, sku, qty) is its key, in the book's model
--   and in the read model; id only keeps allocation order.
-- - the view's orderid index is the key's first column already.
-- - message ids are random UUIDs made here, never looked up in the log.
-- - pending deliveries are few: scanning them all for the due ones is cheap,
--   an index on their next attempt is not.
-- - deliveries are only written with their event, in one statement.
ALTER TABLE allocations DROP CONSTRAINT allocations_pkey;
ALTER TABLE allocations DROP CONSTRAINT allocations_orderid_sku_qty_key;
ALTER TABLE allocations ADD PRIMARY KEY (orderid, sku, qty);

ALTER TABLE allocations_view DROP CONSTRAINT allocations_view_pkey;
ALTER TABLE allocations_view DROP CONSTRAINT allocations_view_orderid_sku_qty_key;
DROP INDEX allocations_view_orderid_idx;
ALTER TABLE allocations_view ADD PRIMARY KEY (orderid, sku, qty);

ALTER TABLE event_log DROP CONSTRAINT event_log_message_id_key;
DROP INDEX event_deliveries_due_idx;
ALTER TABLE event_deliveries DROP CONSTRAINT event_deliveries_event_id_fkey;

-- +goose Down
ALTER TABLE event_deliveries ADD FOREIGN KEY (event_id) REFERENCES event_log (id) ON DELETE CASCADE;
CREATE INDEX event_deliveries_due_idx ON event_deliveries (next_attempt_at) WHERE status = 'pending';
ALTER TABLE event_log ADD CONSTRAINT event_log_message_id_key UNIQUE (message_id);

ALTER TABLE allocations_view DROP CONSTRAINT allocations_view_pkey;
CREATE INDEX allocations_view_orderid_idx ON allocations_view (orderid);
ALTER TABLE allocations_view ADD CONSTRAINT allocations_view_orderid_sku_qty_key UNIQUE (orderid, sku, qty);
ALTER TABLE allocations_view ADD PRIMARY KEY (id);

ALTER TABLE allocations DROP CONSTRAINT allocations_pkey;
ALTER TABLE allocations ADD CONSTRAINT allocations_orderid_sku_qty_key UNIQUE (orderid, sku, qty);
ALTER TABLE allocations ADD PRIMARY KEY (id);
