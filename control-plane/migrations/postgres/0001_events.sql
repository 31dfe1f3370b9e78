-- Events as agents shipped them, the dedupe window, profiles, erasure
-- tombstones and the counters the metrics show. Times are unix
-- milliseconds (UTC). See control-plane/src/storage/events.rs.

CREATE TABLE events (
    seq         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id     TEXT,
    ingested_at BIGINT NOT NULL,
    payload     BYTEA NOT NULL
);
CREATE INDEX events_by_user ON events (user_id, seq) WHERE user_id IS NOT NULL;

CREATE TABLE event_ids (
    id          TEXT PRIMARY KEY,
    ingested_at BIGINT NOT NULL
);
CREATE INDEX event_ids_by_time ON event_ids (ingested_at);

CREATE TABLE profiles (
    user_id    TEXT PRIMARY KEY,
    traits     TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE erased_users (
    user_id   TEXT PRIMARY KEY,
    erased_at BIGINT NOT NULL
);

CREATE TABLE counters (
    name  TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO counters (name, value) VALUES ('events', 0), ('event_ids', 0);
