-- +goose Up
-- What caused each event (a request, a message, another event) and the
-- request or message that started its chain.
ALTER TABLE event_log ADD COLUMN causation_id varchar(255) NOT NULL DEFAULT '';
ALTER TABLE event_log ADD COLUMN correlation_id varchar(255) NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE event_log DROP COLUMN correlation_id;
ALTER TABLE event_log DROP COLUMN causation_id;
