-- +goose Up
-- Inbound messages the consumer refused, as in PostgreSQL's migration
-- 00008. AUTOINCREMENT: an id is never handed out twice (operators retry
-- dead letters by id).
CREATE TABLE dead_letters (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    channel     TEXT NOT NULL,
    payload     BLOB NOT NULL,
    reason      TEXT NOT NULL,
    stream_id   TEXT,
    message_id  TEXT,
    received_at TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    retried_at  TEXT
);

-- +goose Down
DROP TABLE dead_letters;
