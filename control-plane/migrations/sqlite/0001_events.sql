-- Events as agents shipped them, the dedupe window, profiles, erasure
-- tombstones and the counters the metrics show. Times are unix
-- milliseconds (UTC). See control-plane/src/storage/events.rs.

-- AUTOINCREMENT: a sequence number is never handed out twice, even after
-- the newest event was erased, so a feed cursor never skips a new event.
CREATE TABLE events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id     TEXT,
    ingested_at INTEGER NOT NULL,
    payload     BLOB NOT NULL
);
CREATE INDEX events_by_user ON events (user_id, seq) WHERE user_id IS NOT NULL;

CREATE TABLE event_ids (
    id          TEXT PRIMARY KEY,
    ingested_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX event_ids_by_time ON event_ids (ingested_at);

CREATE TABLE profiles (
    user_id    TEXT PRIMARY KEY,
    traits     TEXT NOT NULL,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE erased_users (
    user_id   TEXT PRIMARY KEY,
    erased_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO counters (name, value) VALUES ('events', 0), ('event_ids', 0);
