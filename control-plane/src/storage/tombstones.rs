//! Erasure tombstones, as the writers of a user's records see them.
//!
//! Privacy erasure commits a tombstone (`erased_users`, see `events`) and
//! then deletes the user's rows, table by table. A writer that decided to
//! create something for that user before the tombstone existed (the
//! engine holding a page of their events, a dispatcher holding a claimed
//! in-app delivery) must not commit it after those deletes went by: it
//! would outlive the erasure.
//!
//! # Promises
//!
//! * Every transaction that creates a user's notification, delivery,
//!   inbox item, digest item or pending trigger asks [`erased_among!`]
//!   first and writes nothing for the users it names.
//! * **Either order is safe.** Of a creating transaction and an erasure's
//!   tombstone, one commits first:
//!   - the creator first: the erasure's deletes start after its
//!     tombstone commits, so they see and remove what the creator wrote;
//!   - the tombstone first: the creator's check sees it.
//!
//!   On SQLite write transactions are serialized (`BEGIN IMMEDIATE`),
//!   which gives exactly these two orders. On PostgreSQL the creator takes
//!   a shared transaction-scoped advisory lock per user before its check
//!   and the tombstone's transaction the exclusive one
//!   ([`lock_user_for_erasure!`]), so they cannot overlap; and the check,
//!   a statement after the lock, reads what committed before it (READ
//!   COMMITTED). Creators never block each other (shared locks), and the
//!   lock is per user, so an erasure waits only for that user's writers.

/// The first key of the two-key advisory locks that guard tombstones (the
/// second is `hashtext(user_id)`): "nudt", apart from device
/// registration's "nudg". The two-key space does not overlap the one-key
/// locks of ingest and migrations.
pub(super) const TOMBSTONE_LOCK: i32 = 0x6e75_6474;

/// The distinct values of `users`, in first-seen order (user ids here, and
/// in the event store's statements).
pub(super) fn distinct<'a>(users: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let mut seen = std::collections::HashSet::new();
    users
        .into_iter()
        .filter(|user| seen.insert(*user))
        .collect()
}

/// Inside the write transaction `$tx` on `$engine`: takes the shared
/// tombstone lock of every user in `$users` (PostgreSQL) and yields the
/// set of those users who are erased (`HashSet<String>`). See the module
/// doc.
macro_rules! erased_among {
    ($tx:expr, $engine:expr, $users:expr) => {{
        let users: Vec<&str> = $crate::storage::tombstones::distinct($users);
        let mut erased = std::collections::HashSet::<String>::new();
        for chunk in users.chunks(500) {
            if $engine == $crate::storage::Engine::Postgres {
                let mut lock = sqlx::QueryBuilder::new("SELECT pg_advisory_xact_lock_shared(");
                lock.push_bind($crate::storage::tombstones::TOMBSTONE_LOCK);
                lock.push(", hashtext(u::text)) FROM (VALUES ");
                let mut rows = lock.separated(", ");
                for user in chunk {
                    rows.push("(");
                    rows.push_bind_unseparated(*user);
                    rows.push_unseparated(")");
                }
                lock.push(") AS users (u)");
                lock.build().execute(&mut *$tx).await?;
            }
            let mut check =
                sqlx::QueryBuilder::new("SELECT user_id FROM erased_users WHERE user_id IN (");
            let mut list = check.separated(", ");
            for user in chunk {
                list.push_bind(*user);
            }
            check.push(")");
            let found: Vec<String> = check.build_query_scalar().fetch_all(&mut *$tx).await?;
            erased.extend(found);
        }
        erased
    }};
}
pub(crate) use erased_among;

/// Inside the tombstone's transaction `$tx` on `$engine`: takes the
/// exclusive tombstone lock of `$user` (PostgreSQL; nothing on SQLite).
macro_rules! lock_user_for_erasure {
    ($tx:expr, $engine:expr, $user:expr) => {{
        if $engine == $crate::storage::Engine::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
                .bind($crate::storage::tombstones::TOMBSTONE_LOCK)
                .bind($user)
                .execute(&mut *$tx)
                .await?;
        }
    }};
}
pub(crate) use lock_user_for_erasure;
