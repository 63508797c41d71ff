-- +goose Up
-- Deliveries not done (pending, or parked as dead) by product and handler:
-- the dispatcher walks this index from one product to the next to find the
-- first delivery of each (the heads), and a product's backlog is read from
-- it in order. A dead delivery is in it because what comes after it waits
-- for an operator: per-product order is never broken.
CREATE INDEX event_deliveries_open_idx ON event_deliveries (aggregate, handler, event_id) WHERE status <> 'done';
DROP INDEX event_deliveries_pending_idx;

-- Every event other services hear about is published by one handler, so
-- that a line's line_deallocated and the line_allocated of its reallocation
-- go out in one queue per product, in order.
UPDATE event_deliveries SET handler = 'publish' WHERE handler = 'publish_line_allocated';

-- +goose Down
UPDATE event_deliveries SET handler = 'publish_line_allocated' WHERE handler = 'publish';
CREATE INDEX event_deliveries_pending_idx ON event_deliveries (aggregate, handler, event_id) WHERE status = 'pending';
DROP INDEX event_deliveries_open_idx;
