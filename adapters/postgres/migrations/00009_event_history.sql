-- +goose Up
-- The event log is the history of stock, queried by product (aggregate),
-- order, batch and event name, oldest first, a page at a time (GET /events).
-- The order id and batch ref get columns of their own, filled on write and
-- here from the payload of the events logged before; NULL where an event is
-- not about one, so that the partial indexes hold only the rows they serve.
-- Each index ends with id: a page is a range scan from the cursor on, however
-- long the log.
--
-- Retention deletes old events in batches of bounded size (adapters/sqlstore
-- prune.go) rather than partitioning event_log by time. Dropping a partition
-- would be cheaper than deleting its rows, but an old event is only deleted
-- once every delivery of it is done, so a partition could seldom be dropped
-- whole; id would no longer be unique on its own (a partitioned table's keys
-- include the partition key); and partitions need creating ahead of time.
-- Measured on 1,000,000 events (README, History and retention), a batch of
-- 1,000 deletes takes milliseconds and the queries stay index range scans,
-- so partitioning buys nothing here worth that.
ALTER TABLE event_log ADD COLUMN orderid varchar(255);
ALTER TABLE event_log ADD COLUMN batchref varchar(255);
UPDATE event_log SET orderid = payload->>'orderid', batchref = payload->>'batchref'
    WHERE payload ? 'orderid' OR payload ? 'batchref';

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
