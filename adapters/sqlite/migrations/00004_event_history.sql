-- +goose Up
-- The event log is the history of stock, queried by product (aggregate),
-- order, batch and event name, oldest first, a page at a time (GET /events).
-- The order id and batch ref get columns of their own, filled on write and
-- here from the payload of the events logged before; NULL where an event is
-- not about one, so that the partial indexes hold only the rows they serve.
-- Each index ends with id: a page is a range scan from the cursor on.
ALTER TABLE event_log ADD COLUMN orderid TEXT;
ALTER TABLE event_log ADD COLUMN batchref TEXT;
UPDATE event_log SET orderid = json_extract(payload, '$.orderid'), batchref = json_extract(payload, '$.batchref')
    WHERE json_extract(payload, '$.orderid') IS NOT NULL OR json_extract(payload, '$.batchref') IS NOT NULL;

CREATE INDEX event_log_aggregate_idx ON event_log (aggregate, id);
CREATE INDEX event_log_orderid_idx ON event_log (orderid, id) WHERE orderid IS NOT NULL;
CREATE INDEX event_log_batchref_idx ON event_log (batchref, id) WHERE batchref IS NOT NULL;
CREATE INDEX event_log_name_idx ON event_log (name, id);

-- The pruner finds old inbox rows by when they were processed.
CREATE INDEX inbox_processed_at_idx ON inbox (processed_at);

-- +goose Down
DROP INDEX inbox_processed_at_idx;
DROP INDEX event_log_name_idx;
DROP INDEX event_log_batchref_idx;
DROP INDEX event_log_orderid_idx;
DROP INDEX event_log_aggregate_idx;
ALTER TABLE event_log DROP COLUMN batchref;
ALTER TABLE event_log DROP COLUMN orderid;
