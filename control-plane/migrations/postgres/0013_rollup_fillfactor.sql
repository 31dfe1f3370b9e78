-- Analytics rollups are rewritten in place pass after pass (an actor's
-- record, a day's counters), never by key: with PostgreSQL's default
-- fillfactor of 100 every page is full, so each new row version goes to
-- another page and leaves a dead one behind, and the table and its
-- primary key grow with every pass until VACUUM catches up. Room on each
-- page lets an update stay on its page (a HOT update: no new index entry,
-- and the old version is pruned by the next reader of the page).
-- Pages written from now on keep that room; existing pages get it when
-- VACUUM FULL or pg_repack rewrites the table.
ALTER TABLE analytics_rollups SET (fillfactor = 70, autovacuum_vacuum_scale_factor = 0.05);
