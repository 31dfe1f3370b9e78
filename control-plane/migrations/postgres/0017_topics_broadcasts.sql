-- Topics and broadcasts (control-plane/src/broadcasts). A topic is a name
-- users subscribe to (`topic_subscriptions`, one row per topic and user);
-- a broadcast is one notify fanned out to a topic's subscribers or to a
-- segment of users (`broadcasts`, one row each, keyed by the caller's
-- idempotency key). `body` is the broadcast's request, audience and asked
-- send time as JSON; `cursor` is the last user id the fan-out planned (it
-- walks users in id order), `scanned`/`recipients`/`notifications` its
-- progress. `state` is scheduled, running, done or cancelled. Times are
-- unix milliseconds. See control-plane/src/storage/topics.rs and
-- broadcasts.rs.
CREATE TABLE topic_subscriptions (
    topic         TEXT NOT NULL,
    user_id       TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (topic, user_id)
);
CREATE INDEX topic_subscriptions_user ON topic_subscriptions (user_id);

CREATE TABLE broadcasts (
    id               TEXT PRIMARY KEY,
    state            TEXT NOT NULL,
    send_at_ms       BIGINT NOT NULL,
    body             TEXT NOT NULL,
    cursor           TEXT,
    scanned          BIGINT NOT NULL DEFAULT 0,
    recipients       BIGINT NOT NULL DEFAULT 0,
    notifications    BIGINT NOT NULL DEFAULT 0,
    created_at_ms    BIGINT NOT NULL,
    started_at_ms    BIGINT,
    finished_at_ms   BIGINT
);
CREATE INDEX broadcasts_due ON broadcasts (send_at_ms, id)
    WHERE state IN ('scheduled', 'running');
CREATE INDEX broadcasts_by_creation ON broadcasts (created_at_ms, id);
