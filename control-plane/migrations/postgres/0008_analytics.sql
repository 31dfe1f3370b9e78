-- The analytics rollups, moved from sled: one ordered key-value table.
-- Keys are the byte keys of control-plane/src/analytics/{keys,layout}.rs
-- (a family tag, then parts each ended by 0x00, periods that sort in time
-- order), so "all of a day" or "all of an actor" is a range of the primary
-- key; bytea compares bytewise (memcmp, whatever the collation), as BLOBs
-- do on SQLite, so both engines return a range in the same order. Values
-- are counter vectors (big-endian i64s), actor records or JSON, as the
-- layout says. See control-plane/src/storage/rollups.rs.
CREATE TABLE analytics_rollups (
    key   BYTEA PRIMARY KEY,
    value BYTEA NOT NULL
);

-- The commit generation (key "generation", 8 bytes big-endian): every
-- commit of a pass moves it on, and commits only if it is still what the
-- pass read when it began, so two workers (replicas) never both apply a
-- pass over the same state. Seeded so the first commit has a row to check.
INSERT INTO analytics_rollups (key, value)
VALUES ('\x67656e65726174696f6e'::bytea, '\x0000000000000000'::bytea);
