-- Throttling per user (control-plane/src/throttle.rs): one row per
-- notification and count it was decided in (`scope`: `type:<name>` or
-- `category:<name>`). `outcome` is `sent` (let through, counted),
-- `dropped` or `digest` (over the limit; `due_at_ms` is the digest's
-- time). The window's count reads the `sent` rows of a user and scope by
-- time; a notification planned again reads its decision by id. Times are
-- unix milliseconds. See control-plane/src/storage/throttles.rs.
CREATE TABLE notification_throttles (
    notification_id TEXT NOT NULL,
    scope           TEXT NOT NULL,
    user_id         TEXT NOT NULL,
    at_ms           BIGINT NOT NULL,
    outcome         TEXT NOT NULL,
    due_at_ms       BIGINT,
    PRIMARY KEY (notification_id, scope)
);
CREATE INDEX notification_throttles_window ON notification_throttles (user_id, scope, at_ms)
    WHERE outcome = 'sent';
CREATE INDEX notification_throttles_user ON notification_throttles (user_id);
CREATE INDEX notification_throttles_by_time ON notification_throttles (at_ms);
