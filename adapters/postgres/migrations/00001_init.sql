-- +goose Up
CREATE TABLE products (
    sku            varchar(255) PRIMARY KEY,
    version_number integer NOT NULL DEFAULT 0
);

CREATE TABLE batches (
    id                 bigserial PRIMARY KEY,
    reference          varchar(255) NOT NULL UNIQUE,
    sku                varchar(255) NOT NULL REFERENCES products (sku),
    purchased_quantity integer NOT NULL CHECK (purchased_quantity >= 0),
    eta                date
);
CREATE INDEX batches_sku_idx ON batches (sku);

-- A line is a value (orderid, sku, qty) and is allocated at most once. The id
-- keeps allocation order, so deallocation gives way to the newest lines first.
CREATE TABLE allocations (
    id       bigserial PRIMARY KEY,
    batch_id bigint NOT NULL REFERENCES batches (id) ON DELETE CASCADE,
    orderid  varchar(255) NOT NULL,
    sku      varchar(255) NOT NULL,
    qty      integer NOT NULL CHECK (qty > 0),
    UNIQUE (orderid, sku, qty)
);
CREATE INDEX allocations_batch_id_idx ON allocations (batch_id);

-- The read model behind GET /allocations/{orderid}.
CREATE TABLE allocations_view (
    id       bigserial PRIMARY KEY,
    orderid  varchar(255) NOT NULL,
    sku      varchar(255) NOT NULL,
    qty      integer NOT NULL,
    batchref varchar(255) NOT NULL,
    UNIQUE (orderid, sku, qty)
);
CREATE INDEX allocations_view_orderid_idx ON allocations_view (orderid);

-- +goose Down
DROP TABLE allocations_view;
DROP TABLE allocations;
DROP TABLE batches;
DROP TABLE products;
