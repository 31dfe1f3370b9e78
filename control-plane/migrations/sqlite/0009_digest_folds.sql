-- Which notifications were folded into a digest, per channel: a
-- notification planned again (an idempotent resend, a replayed event)
-- must not be added to a later digest once its first digest was sent and
-- its item deleted. Adding an item first inserts its fold here and skips
-- the item if the fold was there. Times are unix milliseconds (UTC).
-- Folds go with their user (erasure) and, by their digest's due time (never
-- before the notification's creation), with the notifications' retention.
-- See control-plane/src/storage/digests.rs.
CREATE TABLE digest_folds (
    notification_id TEXT NOT NULL,
    channel         TEXT NOT NULL,
    user_id         TEXT NOT NULL,
    due_at          INTEGER NOT NULL,
    PRIMARY KEY (notification_id, channel)
);
CREATE INDEX digest_folds_user ON digest_folds (user_id);
CREATE INDEX digest_folds_by_due ON digest_folds (due_at);
