-- Events and the dedupe window in time partitions (issue 12; see
-- control-plane/src/storage/partitions.rs).
--
-- Both tables become partitioned by `ingested_at` (unix milliseconds):
-- one partition per 7-day span (`events_pYYYYMMDD`, named by the span's
-- first UTC day), made ahead of time by the control plane, so that
-- retention and the dedupe window drop whole partitions instead of
-- deleting rows (deleted rows are dead tuples for VACUUM; a dropped
-- partition gives its files back at once).
--
-- The tables as they were become the DEFAULT partitions: they keep every
-- row stored before this migration, and catch a row no span covers (a
-- span that could not be made in time). Their old rows are removed by
-- chunked deletes, with the help of an index on `ingested_at` that only
-- the default partitions have.
--
-- A partitioned table's unique keys must contain the partition key, so
-- `event_ids` is unique by (id, ingested_at): that an id is stored once
-- is kept by the writer, which asks for the ids of a batch under the
-- ingest lock before inserting (storage/events.rs).

-- `seq` keeps counting from where the identity column was: a sequence
-- of its own, since the partitions share one.
CREATE SEQUENCE events_seq AS BIGINT;
SELECT setval('events_seq',
              GREATEST(COALESCE((SELECT max(seq) FROM events), 0),
                       COALESCE(pg_sequence_last_value(pg_get_serial_sequence('events', 'seq')), 0)) + 1,
              false);

ALTER TABLE events RENAME TO events_default;
ALTER TABLE events_default ALTER COLUMN seq DROP IDENTITY;
ALTER TABLE events_default DROP CONSTRAINT events_pkey;
DROP INDEX events_by_user;
CREATE INDEX events_default_by_time ON events_default (ingested_at);

CREATE TABLE events (
    seq            BIGINT NOT NULL DEFAULT nextval('events_seq'),
    user_id        TEXT,
    ingested_at    BIGINT NOT NULL,
    payload        BYTEA NOT NULL,
    feed_partition SMALLINT NOT NULL DEFAULT 0,
    PRIMARY KEY (seq, ingested_at)
) PARTITION BY RANGE (ingested_at);
ALTER SEQUENCE events_seq OWNED BY events.seq;
CREATE INDEX events_by_user ON events (user_id, seq) WHERE user_id IS NOT NULL;
ALTER TABLE events ATTACH PARTITION events_default DEFAULT;

ALTER TABLE event_ids RENAME TO event_ids_default;
ALTER TABLE event_ids_default DROP CONSTRAINT event_ids_pkey;
ALTER INDEX event_ids_by_time RENAME TO event_ids_default_by_time;

CREATE TABLE event_ids (
    id          TEXT NOT NULL,
    ingested_at BIGINT NOT NULL,
    PRIMARY KEY (id, ingested_at)
) PARTITION BY RANGE (ingested_at);
ALTER TABLE event_ids ATTACH PARTITION event_ids_default DEFAULT;
