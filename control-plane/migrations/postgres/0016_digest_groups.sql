-- Digest groups within a type (control-plane/src/digest.rs): a type's
-- `digest_key` names a field of the notification's data (e.g. the
-- project), and its items are held in one digest per value. '' is the
-- type's one digest (every item before this migration). A notification
-- is in one group, so the primary key stays as it is.
ALTER TABLE digest_items ADD COLUMN digest_group TEXT NOT NULL DEFAULT '';
