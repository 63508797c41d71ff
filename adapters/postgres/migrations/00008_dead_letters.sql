-- +goose Up
-- Inbound messages the consumer refused, kept for ever (the Redis list
-- dead_letter keeps only the newest 10,000). A stream entry is acknowledged
-- only once its row is committed. The payload is kept as bytes, exactly as
-- received: a refused message need not be UTF-8, let alone JSON.
CREATE TABLE dead_letters (
    id          bigserial PRIMARY KEY,
    channel     text NOT NULL,
    payload     bytea NOT NULL,
    reason      text NOT NULL,
    stream_id   text,
    message_id  text,
    received_at timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL,
    retried_at  timestamptz
);

-- +goose Down
DROP TABLE dead_letters;
