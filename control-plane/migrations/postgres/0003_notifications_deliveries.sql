-- Notifications, their idempotency keys, the delivery queue and the
-- delivery facts analytics drains. See control-plane/src/storage/
-- {notifications,deliveries}.rs for the promises these tables keep.
--
-- `body` holds the whole record as JSON (the domain type, as serde writes
-- it); the other columns are a projection of it for lookups and ordering,
-- always written in the same statement as the body.

CREATE TABLE notifications (
    id              TEXT PRIMARY KEY,
    user_id         TEXT NOT NULL,
    source_event_id TEXT,
    created_at_ms   BIGINT NOT NULL,
    body            TEXT NOT NULL
);
-- One notification per source event: replays find it.
CREATE UNIQUE INDEX notifications_by_source ON notifications (source_event_id)
    WHERE source_event_id IS NOT NULL;
CREATE INDEX notifications_by_user ON notifications (user_id, id);
CREATE INDEX notifications_by_time ON notifications (created_at_ms);

-- An app's idempotency key per user, remembered for the window.
CREATE TABLE notification_keys (
    user_id         TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    created_at_ms   BIGINT NOT NULL,
    notification_id TEXT NOT NULL,
    PRIMARY KEY (user_id, idempotency_key)
);
CREATE INDEX notification_keys_by_time ON notification_keys (created_at_ms);
CREATE INDEX notification_keys_by_notification ON notification_keys (notification_id);

-- Times in unix microseconds. `channel` and `priority` are the codes of
-- storage/deliveries.rs (priority 0 is high, so ascending order is claim
-- order).
CREATE TABLE deliveries (
    id                  TEXT PRIMARY KEY,
    notification_id     TEXT NOT NULL,
    user_id             TEXT NOT NULL,
    channel             SMALLINT NOT NULL,
    priority            SMALLINT NOT NULL,
    status              TEXT NOT NULL,
    not_before_us       BIGINT NOT NULL,
    updated_at_us       BIGINT NOT NULL,
    provider_message_id TEXT,
    attempt_log_len     INTEGER NOT NULL,
    body                TEXT NOT NULL
);
CREATE INDEX deliveries_due ON deliveries (channel, priority, not_before_us, id)
    WHERE status = 'queued';
CREATE INDEX deliveries_sending ON deliveries (id) WHERE status = 'sending';
CREATE INDEX deliveries_dead ON deliveries (id) WHERE status = 'dead_lettered';
CREATE INDEX deliveries_by_notification ON deliveries (notification_id);
CREATE INDEX deliveries_by_provider_id ON deliveries (channel, provider_message_id)
    WHERE provider_message_id IS NOT NULL;
CREATE INDEX deliveries_by_user ON deliveries (user_id);
-- Retention trims the attempt logs of deliveries not touched for long.
CREATE INDEX deliveries_long_logs ON deliveries (updated_at_us) WHERE attempt_log_len > 1;

-- Written in the transaction of the change each fact describes; drained
-- by analytics.
CREATE TABLE delivery_facts (
    seq     BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id TEXT NOT NULL,
    body    TEXT NOT NULL
);
CREATE INDEX delivery_facts_by_user ON delivery_facts (user_id);
