-- Snooze in the inbox (control-plane/src/inbox/snooze.rs): an item hidden
-- until `snoozed_until` (unix milliseconds), then back as unread. The
-- partial index is what the waker reads: only snoozed items are in it.
ALTER TABLE inbox_items ADD COLUMN snoozed_until INTEGER;
CREATE INDEX inbox_items_snoozed ON inbox_items (snoozed_until) WHERE snoozed_until IS NOT NULL;
