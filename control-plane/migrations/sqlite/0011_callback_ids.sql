-- Callback message ids already taken (issue 15): a provider callback
-- whose `webhook-id` is here is a duplicate (a replay, or a resend after
-- a lost answer) and changes nothing. See
-- control-plane/src/storage/callbacks.rs. `expires_at_ms` is the signed
-- timestamp plus the tolerance: after it the timestamp check refuses the
-- callback anyway, and housekeeping deletes the row.
CREATE TABLE callback_ids (
    source        TEXT NOT NULL,
    id            TEXT NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    PRIMARY KEY (source, id)
);
CREATE INDEX callback_ids_expiry ON callback_ids (expires_at_ms);
