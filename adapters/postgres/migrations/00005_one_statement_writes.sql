-- +goose Up
-- A unit of work is written in one statement (adapters/postgres/apply.go).
-- When one of its checks fails (a product moved on, the inbound message was
-- processed already, the delivery was done by someone else) the statement
-- calls this to abort with a code the store recognises; everything it did is
-- undone with it.
-- +goose StatementBegin
CREATE FUNCTION allocation_refuse(code text, reason text) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = code, MESSAGE = reason;
END
$$;
-- +goose StatementEnd

-- A dispatcher that takes a delivery holds it until claimed_until, so that
-- no other takes it meanwhile; NULL: nobody holds it.
ALTER TABLE event_deliveries ADD COLUMN claimed_until timestamptz;

-- +goose Down
ALTER TABLE event_deliveries DROP COLUMN claimed_until;
DROP FUNCTION allocation_refuse(text, text);
