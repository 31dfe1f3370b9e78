-- Users' notification preferences and their push devices. Times are unix
-- milliseconds (UTC). See control-plane/src/storage/{preferences,devices}.rs.

-- One document per user who changed anything (no row: the operator's
-- defaults). The document is read and written whole (planning reads it
-- per notification, a client replaces it per save), so it is one JSON
-- value; `version` grows with every write, for compare-and-swap updates.
CREATE TABLE preferences (
    user_id    TEXT PRIMARY KEY,
    document   TEXT NOT NULL,
    version    INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;

-- One row per push address. `id` is derived from platform and address, so
-- the primary key keeps an address with one user: registering it for
-- another user moves the row. `address` is the APNs/FCM token or the Web
-- Push endpoint; `p256dh` and `auth` are the Web Push keys. A deactivated
-- device (`active` = 0) always has `deactivated_at`.
CREATE TABLE devices (
    id                 TEXT PRIMARY KEY,
    user_id            TEXT NOT NULL,
    platform           TEXT NOT NULL,
    address            TEXT NOT NULL,
    p256dh             TEXT,
    auth               TEXT,
    label              TEXT,
    active             INTEGER NOT NULL,
    deactivated_reason TEXT,
    deactivated_at     INTEGER,
    created_at         INTEGER NOT NULL,
    last_seen_at       INTEGER NOT NULL
) WITHOUT ROWID;
-- A user's devices (listing, planning, the per-user cap).
CREATE INDEX devices_by_user ON devices (user_id, platform);
-- Cleanup: active devices not seen for long, deactivated ones retired.
CREATE INDEX devices_stale ON devices (last_seen_at) WHERE active;
CREATE INDEX devices_retired ON devices (deactivated_at) WHERE NOT active;
