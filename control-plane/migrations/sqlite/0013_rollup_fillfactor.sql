-- Fillfactor is PostgreSQL's (see migrations/postgres/0013_rollup_fillfactor.sql):
-- SQLite rewrites a row in place in its B-tree page. Nothing changes here.
SELECT 1;
