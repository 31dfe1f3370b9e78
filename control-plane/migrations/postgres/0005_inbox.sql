-- The inbox: users' in-app notifications, their counts and the change log
-- live streams resume from. Times are unix milliseconds (UTC). See
-- control-plane/src/storage/inbox.rs.
--
-- Ids and user ids compare bytewise (COLLATE "C"), as on SQLite: keyset
-- paging over ids must not depend on the database's locale.

-- One row per in-app delivery. `item` is the whole `InboxItem` as JSON
-- text (not jsonb: a title may hold \u0000, which jsonb refuses); the
-- columns beside it are copies of the fields listings filter on, so a
-- page is found by the primary key's range and these, not by decoding
-- every row. Ids sort by time.
CREATE TABLE inbox_items (
    user_id           TEXT COLLATE "C" NOT NULL,
    id                TEXT COLLATE "C" NOT NULL,
    notification_type TEXT NOT NULL,
    category          TEXT,
    created_at        BIGINT NOT NULL,
    read_at           BIGINT,
    archived_at       BIGINT,
    item              TEXT NOT NULL,
    PRIMARY KEY (user_id, id)
);

-- One row per user with an inbox: the badge counts (exact, written in the
-- transaction of every change), the per-user change sequence (`last_seq`,
-- allocated under this row's lock, so one user's writers serialize and
-- their seqs have no gaps) and the highest seq pruned from the log.
CREATE TABLE inbox_counts (
    user_id    TEXT COLLATE "C" PRIMARY KEY,
    last_seq   BIGINT NOT NULL,
    pruned_seq BIGINT NOT NULL,
    unread     BIGINT NOT NULL,
    unseen     BIGINT NOT NULL,
    total      BIGINT NOT NULL,
    categories TEXT NOT NULL
);

-- Each user's change log: the `Change` as JSON at its seq; `at` for
-- pruning.
CREATE TABLE inbox_changes (
    user_id TEXT COLLATE "C" NOT NULL,
    seq     BIGINT NOT NULL,
    at      BIGINT NOT NULL,
    change  TEXT NOT NULL,
    PRIMARY KEY (user_id, seq)
);
CREATE INDEX inbox_changes_by_time ON inbox_changes (at);
