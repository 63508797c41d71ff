-- +goose Up
-- The schema the PostgreSQL migrations (adapters/postgres/migrations) end
-- with, in SQLite's terms. The store's queries are shared, so every table,
-- column, key and check they rely on is here too.
--
-- Times are TEXT written by the driver as '2006-01-02 15:04:05.999999999+00:00',
-- always in UTC (adapters/sqlite/db.go): such strings sort as the times do,
-- so next_attempt_at <= ? and min(next_attempt_at) compare them as text.
-- Dates (eta) are 'YYYY-MM-DD'.

CREATE TABLE products (
    sku            TEXT NOT NULL PRIMARY KEY, -- NOT NULL: SQLite lets a NULL into a key otherwise
    version_number INTEGER NOT NULL DEFAULT 0
);

-- allocated_quantity is kept by every save, so that allocating reads the
-- batches of a product and not every line ever allocated to it; the check is
-- a last line of defence against over-allocation.
CREATE TABLE batches (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    reference          TEXT NOT NULL UNIQUE,
    sku                TEXT NOT NULL REFERENCES products (sku),
    purchased_quantity INTEGER NOT NULL CHECK (purchased_quantity >= 0),
    allocated_quantity INTEGER NOT NULL DEFAULT 0,
    eta                TEXT,
    CONSTRAINT batches_not_over_allocated CHECK (allocated_quantity >= 0 AND allocated_quantity <= purchased_quantity)
);
CREATE INDEX batches_sku_idx ON batches (sku);

-- A line is a value (orderid, sku, qty) and is allocated at most once: that
-- is its key. id only keeps allocation order, so deallocation gives way to
-- the newest lines first; as SQLite's rowid it costs no index of its own.
CREATE TABLE allocations (
    id       INTEGER PRIMARY KEY,
    batch_id INTEGER NOT NULL REFERENCES batches (id) ON DELETE CASCADE,
    orderid  TEXT NOT NULL,
    sku      TEXT NOT NULL,
    qty      INTEGER NOT NULL CHECK (qty > 0),
    CONSTRAINT allocations_key UNIQUE (orderid, sku, qty)
);
CREATE INDEX allocations_batch_id_idx ON allocations (batch_id);

-- The read model behind GET /allocations/{orderid}, keyed like allocations;
-- its key's first column serves the lookup by order.
CREATE TABLE allocations_view (
    id       INTEGER PRIMARY KEY,
    orderid  TEXT NOT NULL,
    sku      TEXT NOT NULL,
    qty      INTEGER NOT NULL,
    batchref TEXT NOT NULL,
    CONSTRAINT allocations_view_key UNIQUE (orderid, sku, qty)
);

-- The transactional outbox: every domain event is written here in the same
-- transaction as the change that raised it. AUTOINCREMENT: an event id is
-- never handed out twice (operators replay events by id).
CREATE TABLE event_log (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id     TEXT NOT NULL,
    aggregate      TEXT NOT NULL,
    name           TEXT NOT NULL,
    payload        TEXT NOT NULL,
    occurred_at    TEXT NOT NULL,
    causation_id   TEXT NOT NULL DEFAULT '',
    correlation_id TEXT NOT NULL DEFAULT ''
);

-- One row per event and handler: what is left to do, what failed and why,
-- what was parked as dead. A dispatcher that takes a delivery holds it until
-- claimed_until (NULL: nobody holds it).
CREATE TABLE event_deliveries (
    event_id        INTEGER NOT NULL,
    handler         TEXT NOT NULL,
    aggregate       TEXT NOT NULL,
    status          TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'done', 'dead')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    next_attempt_at TEXT NOT NULL,
    updated_at      TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f+00:00', 'now')),
    claimed_until   TEXT,
    PRIMARY KEY (event_id, handler)
);
CREATE INDEX event_deliveries_pending_idx ON event_deliveries (aggregate, handler, event_id) WHERE status = 'pending';
CREATE INDEX event_deliveries_dead_idx ON event_deliveries (event_id) WHERE status = 'dead';

-- Inbound message ids already processed, recorded with their effect.
CREATE TABLE inbox (
    message_id   TEXT NOT NULL PRIMARY KEY,
    processed_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f+00:00', 'now'))
);

-- +goose Down
DROP TABLE inbox;
DROP TABLE event_deliveries;
DROP TABLE event_log;
DROP TABLE allocations_view;
DROP TABLE allocations;
DROP TABLE batches;
DROP TABLE products;
