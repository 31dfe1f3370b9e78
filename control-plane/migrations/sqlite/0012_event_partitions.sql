-- Time partitions of `events` and `event_ids` are PostgreSQL's (see
-- migrations/postgres/0012_event_partitions.sql); SQLite keeps one table
-- each and removes old rows with chunked deletes. Nothing changes here.
SELECT 1;
