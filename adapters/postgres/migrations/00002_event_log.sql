-- +goose Up
-- The transactional outbox: every domain event is written here in the same
-- transaction as the change that raised it.
CREATE TABLE event_log (
    id          bigserial PRIMARY KEY,
    message_id  uuid NOT NULL UNIQUE,
    aggregate   varchar(255) NOT NULL,
    name        text NOT NULL,
    payload     jsonb NOT NULL,
    occurred_at timestamptz NOT NULL
);

-- One row per event and handler: what is left to do, what failed and why,
-- what was parked as dead. aggregate is copied from event_log so that the
-- per-product ordering checks need no join.
CREATE TABLE event_deliveries (
    event_id        bigint NOT NULL REFERENCES event_log (id) ON DELETE CASCADE,
    handler         text NOT NULL,
    aggregate       varchar(255) NOT NULL,
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'done', 'dead')),
    attempts        integer NOT NULL DEFAULT 0,
    last_error      text,
    next_attempt_at timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id, handler)
);
CREATE INDEX event_deliveries_pending_idx ON event_deliveries (aggregate, handler, event_id) WHERE status = 'pending';
CREATE INDEX event_deliveries_due_idx ON event_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX event_deliveries_dead_idx ON event_deliveries (event_id) WHERE status = 'dead';

-- Inbound message ids already processed, recorded with their effect.
CREATE TABLE inbox (
    message_id   varchar(255) PRIMARY KEY,
    processed_at timestamptz NOT NULL DEFAULT now()
);

-- +goose Down
DROP TABLE inbox;
DROP TABLE event_deliveries;
DROP TABLE event_log;
