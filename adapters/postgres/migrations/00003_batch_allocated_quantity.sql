-- +goose Up
-- The allocated total of each batch, kept by every save, so that allocating
-- reads the batches of a product and not every line ever allocated to it.
-- The check is a last line of defence against over-allocation.
ALTER TABLE batches ADD COLUMN allocated_quantity integer NOT NULL DEFAULT 0;
UPDATE batches b SET allocated_quantity = coalesce((SELECT sum(qty) FROM allocations a WHERE a.batch_id = b.id), 0);
ALTER TABLE batches ADD CONSTRAINT batches_not_over_allocated
    CHECK (allocated_quantity >= 0 AND allocated_quantity <= purchased_quantity);

-- +goose Down
ALTER TABLE batches DROP CONSTRAINT batches_not_over_allocated;
ALTER TABLE batches DROP COLUMN allocated_quantity;
