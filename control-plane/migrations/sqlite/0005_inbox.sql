-- The inbox: users' in-app notifications, their counts and the change log
-- live streams resume from. Times are unix milliseconds (UTC). See
-- control-plane/src/storage/inbox.rs.

-- One row per in-app delivery. `item` is the whole `InboxItem` as JSON
-- (what every read returns); the columns beside it are copies of the
-- fields listings filter on, so a page is found by the primary key's
-- range and these, not by decoding every row. Ids sort by time.
CREATE TABLE inbox_items (
    user_id           TEXT NOT NULL,
    id                TEXT NOT NULL,
    notification_type TEXT NOT NULL,
    category          TEXT,
    created_at        INTEGER NOT NULL,
    read_at           INTEGER,
    archived_at       INTEGER,
    item              TEXT NOT NULL,
    PRIMARY KEY (user_id, id)
) WITHOUT ROWID;

-- One row per user with an inbox: the badge counts (exact, written in the
-- transaction of every change), the per-user change sequence (`last_seq`,
-- allocated under this row's lock, so one user's writers serialize and
-- their seqs have no gaps) and the highest seq pruned from the log.
CREATE TABLE inbox_counts (
    user_id    TEXT PRIMARY KEY,
    last_seq   INTEGER NOT NULL,
    pruned_seq INTEGER NOT NULL,
    unread     INTEGER NOT NULL,
    unseen     INTEGER NOT NULL,
    total      INTEGER NOT NULL,
    categories TEXT NOT NULL
) WITHOUT ROWID;

-- Each user's change log: the `Change` as JSON at its seq; `at` for
-- pruning.
CREATE TABLE inbox_changes (
    user_id TEXT NOT NULL,
    seq     INTEGER NOT NULL,
    at      INTEGER NOT NULL,
    change  TEXT NOT NULL,
    PRIMARY KEY (user_id, seq)
) WITHOUT ROWID;
CREATE INDEX inbox_changes_by_time ON inbox_changes (at);
