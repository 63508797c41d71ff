-- +goose Up
-- The W3C Trace Context of the span that committed each event: its
-- deliveries, however late, join that trace, and the published message
-- carries it to the next service. Empty for events logged before, or
-- committed with no trace. A constant default adds the columns without
-- rewriting the table.
ALTER TABLE event_log ADD COLUMN traceparent text NOT NULL DEFAULT '';
ALTER TABLE event_log ADD COLUMN tracestate text NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE event_log DROP COLUMN tracestate;
ALTER TABLE event_log DROP COLUMN traceparent;
