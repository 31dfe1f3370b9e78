-- The engine's own small records, moved from sled. Times are unix
-- milliseconds (UTC). See control-plane/src/storage/{cursors,digests,pending}.rs.

-- Named positions in the event feed: `events` is the engine's. A row per
-- cursor leaves room for leased feed partitions (each its own name).
CREATE TABLE cursors (
    name     TEXT PRIMARY KEY,
    position INTEGER NOT NULL
);

-- Notifications held for a user's hourly, daily or weekly digest: one row
-- per item. A digest is the group (due_at, user_id, notification_type,
-- channel); the key starts with the due time, so "digests due by now" is
-- a range scan of the primary key from its start. `item` is the
-- DigestItem as JSON.
CREATE TABLE digest_items (
    due_at            INTEGER NOT NULL,
    user_id           TEXT NOT NULL,
    notification_type TEXT NOT NULL,
    channel           TEXT NOT NULL,
    notification_id   TEXT NOT NULL,
    item              TEXT NOT NULL,
    PRIMARY KEY (due_at, user_id, notification_type, channel, notification_id)
);
-- Privacy: a user's items without a scan.
CREATE INDEX digest_items_user ON digest_items (user_id);

-- Delayed rule triggers: one row per rule and event (`id` is `<rule>:<event
-- id>`). Pending (`state` 0) until its time or until an `unless` event
-- cancels it; then the same row becomes the finished marker (1 fired,
-- 2 cancelled, with `finished_at`) so that replaying the event does not
-- schedule it again: scheduling is an insert that conflicts with any row
-- of the id. Finishing clears `user_id` and `record` (the Pending as JSON):
-- a marker names a rule and an event, nothing about the user. Markers are
-- pruned by age.
CREATE TABLE pending_triggers (
    id           TEXT PRIMARY KEY,
    rule         TEXT NOT NULL,
    user_id      TEXT,
    scheduled_at INTEGER NOT NULL,
    due_at       INTEGER NOT NULL,
    record       TEXT,
    state        INTEGER NOT NULL DEFAULT 0,
    finished_at  INTEGER
);
-- Due triggers, earliest first: a range scan over pending rows only.
CREATE INDEX pending_triggers_due ON pending_triggers (due_at, id) WHERE state = 0;
-- A user's pending triggers (cancellation by an `unless` event, privacy).
CREATE INDEX pending_triggers_user ON pending_triggers (user_id, id) WHERE state = 0;
-- Markers by age, for pruning.
CREATE INDEX pending_triggers_finished ON pending_triggers (finished_at) WHERE state <> 0;
