-- The analytics rollups, moved from sled: one ordered key-value table.
-- Keys are the byte keys of control-plane/src/analytics/{keys,layout}.rs
-- (a family tag, then parts each ended by 0x00, periods that sort in time
-- order), so "all of a day" or "all of an actor" is a range of the primary
-- key; BLOBs compare bytewise (memcmp), as bytea does on PostgreSQL, so
-- both engines return a range in the same order. Values are counter
-- vectors (big-endian i64s), actor records or JSON, as the layout says.
-- WITHOUT ROWID: the table is its primary key's B-tree, so a range scan
-- reads the rows in key order without a second lookup.
-- See control-plane/src/storage/rollups.rs.
CREATE TABLE analytics_rollups (
    key   BLOB PRIMARY KEY,
    value BLOB NOT NULL
) WITHOUT ROWID;

-- The commit generation (key "generation", 8 bytes big-endian): every
-- commit of a pass moves it on, and commits only if it is still what the
-- pass read when it began, so two workers (replicas) never both apply a
-- pass over the same state. Seeded so the first commit has a row to check.
INSERT INTO analytics_rollups (key, value)
VALUES (X'67656E65726174696F6E', X'0000000000000000');
