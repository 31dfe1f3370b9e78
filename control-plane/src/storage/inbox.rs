//! The inbox in SQL: tables `inbox_items`, `inbox_counts` and
//! `inbox_changes` (migration 0005). The rules (what an action does, how
//! an item counts) are [`crate::inbox`]'s; this module keeps them atomic.
//!
//! # Promises
//!
//! * **One transaction per call that writes**, holding the user's
//!   `inbox_counts` row locked from its first statement (an upsert, so a
//!   user's first two writers cannot both find no row) to its commit: the
//!   items, the counts and the change log of a user change together, and
//!   a user's writers serialize, in this process or across replicas.
//! * **Per-user sequence numbers without gaps.** Each logged change takes
//!   `last_seq + 1` from the locked row, so a user's seqs are 1, 2, 3, …
//!   in commit order: a reader of the log that has seen seq N has seen
//!   every change below N (what cross-replica fan-out will rely on).
//! * **Counts are exact**: written in the transaction of every change, from
//!   the locked row's values.
//! * Listings page by `(user_id, id)`, the primary key (ids compare
//!   bytewise on both engines), with the filters SQL can check; the caller
//!   checks the rest (`inbox::InboxQuery::matches`). One scan examines a
//!   bounded window of the key range, whatever the filters match
//!   ([`InboxTable::scan`]), and says where it stopped.
//! * [`InboxTable::erase_user`] removes every row of the user in one
//!   transaction.
//! * **Other processes hear of every commit that logged changes**
//!   (PostgreSQL): the transaction sends a `NOTIFY` on `nudge_inbox`
//!   (delivered at its commit, never for a rollback) whose payload names
//!   the writing process and each user with the last seq it logged for
//!   them, as JSON (`{"by":"…","users":[["alice",7],["bob",3]]}`), split
//!   into several notifications to stay under PostgreSQL's 8000-byte
//!   limit; a user id too long for one gets a payload naming no user,
//!   "any user". [`InboxTable::listen`] hears those of *other* processes
//!   (this one publishes its own commits in-process; see `wakeups`). The
//!   payload only says where to look: the change log is what listeners
//!   read.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use jiff::Timestamp;

use super::StorageError;
use super::database::{Database, Engine, begin_write, with_pool};
use super::deliveries::placeholders;
use super::sql_text::{dynamic, numbered};
use super::tombstones::erased_among;
use super::wakeups::{Heard, INBOX_CHANNEL, Listening, listen_to};
use crate::inbox::{
    Action, Applied, CategoryCounts, Change, ChangeKind, Counts, InboxItem, UNCATEGORISED,
};

/// Ids per `IN (…)` list and rows per multi-row statement: far below either
/// engine's limit on parameters.
const CHUNK: usize = 500;

/// The inbox's three tables. Cheap to clone.
#[derive(Debug, Clone)]
pub struct InboxTable {
    database: Database,
    /// Names this process (this open database) in its notifications, so
    /// its listener skips its own commits: they are published in-process.
    instance: Arc<str>,
}

/// Which of a user's items a listing reads: a range of ids and the
/// filters SQL checks. Times are compared at millisecond precision and
/// widened, so the rows are a superset of what the exact filter keeps.
#[derive(Debug, Clone, Default)]
pub struct ItemRange<'a> {
    /// Newest first (ids descending) or oldest first.
    pub newest: bool,
    /// Strictly after this id in the listing's direction.
    pub after: Option<&'a str>,
    /// Archived items only, or unarchived only.
    pub archived: bool,
    /// Snoozed items only, or unsnoozed only.
    pub snoozed: bool,
    /// Read only (`Some(true)`), unread only, or both.
    pub read: Option<bool>,
    pub category: Option<&'a str>,
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
    /// Any of these types (empty: all). A list longer than
    /// [`MAX_SQL_TYPES`] is not checked here (the caller checks it).
    pub types: &'a [String],
}

/// Most types a listing's SQL filters on (each is a bound parameter).
pub const MAX_SQL_TYPES: usize = 50;

/// What one [`InboxTable::scan`] examined.
#[derive(Debug, Clone, Default)]
pub struct ScanWindow {
    /// The rows that passed the SQL filters, in the scan's order.
    pub items: Vec<InboxItem>,
    /// Rows examined: fewer than asked means the range is exhausted.
    pub examined: usize,
    /// The id of the last row examined: where the next window starts.
    pub last: Option<String>,
}

/// The sequence numbers of a user's change log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogBounds {
    /// The newest change's seq (0: none yet).
    pub last: u64,
    /// The highest seq pruned (0: none).
    pub pruned: u64,
}

/// What a process hears about other processes' inbox commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboxNotice {
    /// A commit logged the user's changes up to `seq`.
    Changed { user_id: String, seq: u64 },
    /// Any user's changes may have been missed: the listener (re)connected,
    /// or a payload named no user. Every reader catches up from the log.
    Anything,
}

/// Longest payload of one notification: PostgreSQL refuses 8000 bytes and
/// more; the margin is for the brackets and commas.
const NOTIFY_PAYLOAD: usize = 7900;

/// The locked counts row: `(last_seq, unread, unseen, total, categories)`.
type CountsRow = (i64, i64, i64, i64, String);

/// Locks (creating if needed) the user's counts row inside `$tx`; yields
/// `(Counts, last_seq)`.
macro_rules! lock_counts {
    ($tx:expr, $user_id:expr) => {{
        let row: CountsRow = sqlx::query_as(
            "INSERT INTO inbox_counts (user_id, last_seq, pruned_seq, unread, unseen, total, categories) \
             VALUES ($1, 0, 0, 0, 0, 0, '{}') \
             ON CONFLICT (user_id) DO UPDATE SET last_seq = inbox_counts.last_seq \
             RETURNING last_seq, unread, unseen, total, categories",
        )
        .bind($user_id)
        .fetch_one(&mut *$tx)
        .await?;
        decode_counts($user_id, row)?
    }};
}

/// Writes the counts and the change log of one transaction in `$tx`.
macro_rules! log_changes {
    ($tx:expr, $engine:expr, $user_id:expr, $counts:expr, $changes:expr) => {{
        let counts: &Counts = $counts;
        let changes: &[Change] = $changes;
        if let Some(last) = changes.last() {
            sqlx::query(
                "UPDATE inbox_counts SET last_seq = $2, unread = $3, unseen = $4, total = $5, \
                 categories = $6 WHERE user_id = $1",
            )
            .bind($user_id)
            .bind(seq_value(last.seq)?)
            .bind(count_value(counts.unread))
            .bind(count_value(counts.unseen))
            .bind(count_value(counts.total))
            .bind(serde_json::to_string(&counts.categories)?)
            .execute(&mut *$tx)
            .await?;
        }
        for chunk in changes.chunks(CHUNK / 4) {
            let sql = format!(
                "INSERT INTO inbox_changes (user_id, seq, at, change) VALUES {}",
                placeholders(chunk.len(), 4)
            );
            let mut query = sqlx::query(dynamic($engine, sql));
            for change in chunk {
                query = query
                    .bind($user_id)
                    .bind(seq_value(change.seq)?)
                    .bind(change.at.as_millisecond())
                    .bind(serde_json::to_string(change)?);
            }
            query.execute(&mut *$tx).await?;
        }
    }};
}

/// On PostgreSQL, tells every process's listener (at commit) that `$users`
/// (user id, last seq logged) changed; see the module doc.
macro_rules! notify_changed {
    ($tx:expr, $engine:expr, $instance:expr, $users:expr) => {{
        if $engine == Engine::Postgres {
            for payload in notify_payloads(&$instance, $users)? {
                sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(INBOX_CHANNEL)
                    .bind(payload)
                    .execute(&mut *$tx)
                    .await?;
            }
        }
    }};
}

/// Reads the stored items among `$ids` inside `$tx`, by id.
macro_rules! read_items {
    ($tx:expr, $engine:expr, $user_id:expr, $ids:expr) => {{
        let mut found: HashMap<String, InboxItem> = HashMap::new();
        for chunk in $ids.chunks(CHUNK) {
            let sql = format!(
                "SELECT item FROM inbox_items WHERE user_id = $1 AND id IN ({})",
                numbered(2, chunk.len())
            );
            let mut query = sqlx::query_scalar(dynamic($engine, sql)).bind($user_id);
            for id in chunk {
                query = query.bind(id.as_str());
            }
            let rows: Vec<String> = query.fetch_all(&mut *$tx).await?;
            for row in rows {
                let item = decode_item($user_id, &row)?;
                found.insert(item.id.clone(), item);
            }
        }
        found
    }};
}

/// Inserts `$items` (new ones) or replaces their state (existing ones)
/// inside `$tx`.
macro_rules! upsert_items {
    ($tx:expr, $engine:expr, $user_id:expr, $items:expr) => {{
        let items: &[&InboxItem] = $items;
        for chunk in items.chunks(CHUNK / 9) {
            let sql = format!(
                "INSERT INTO inbox_items (user_id, id, notification_type, category, created_at, \
                 read_at, archived_at, snoozed_until, item) VALUES {} \
                 ON CONFLICT (user_id, id) DO UPDATE SET read_at = excluded.read_at, \
                 archived_at = excluded.archived_at, snoozed_until = excluded.snoozed_until, \
                 item = excluded.item",
                placeholders(chunk.len(), 9)
            );
            let mut query = sqlx::query(dynamic($engine, sql));
            for item in chunk {
                query = query
                    .bind($user_id)
                    .bind(item.id.as_str())
                    .bind(item.notification_type.as_str())
                    .bind(item.category.as_deref())
                    .bind(item.created_at.as_millisecond())
                    .bind(item.read_at.map(Timestamp::as_millisecond))
                    .bind(item.archived_at.map(Timestamp::as_millisecond))
                    .bind(item.snoozed_until.map(Timestamp::as_millisecond))
                    .bind(serde_json::to_string(item)?);
            }
            query.execute(&mut *$tx).await?;
        }
    }};
}

impl InboxTable {
    pub(super) fn new(database: Database) -> Self {
        InboxTable {
            database,
            instance: uuid::Uuid::now_v7().simple().to_string().into(),
        }
    }

    /// Calls `heard` for every user another process (or this one) logged
    /// changes of, and with [`InboxNotice::Anything`] after every
    /// (re)connect of the listener, until the guard is dropped. `None` on
    /// SQLite, where this process is the only writer. Call inside a tokio
    /// runtime.
    pub fn listen(&self, heard: impl Fn(InboxNotice) + Send + 'static) -> Option<Listening> {
        let instance = Arc::clone(&self.instance);
        listen_to(&self.database, INBOX_CHANNEL, move |what| match what {
            Heard::Connected => heard(InboxNotice::Anything),
            Heard::Notified(payload) => match serde_json::from_str::<Payload>(payload) {
                Ok(payload) if *payload.by == *instance => {}
                Ok(Payload {
                    users: Some(users), ..
                }) => {
                    for (user_id, seq) in users {
                        heard(InboxNotice::Changed { user_id, seq });
                    }
                }
                // "Any user", or a payload this build cannot read (a
                // newer replica's): reading the log costs little.
                Ok(Payload { users: None, .. }) | Err(_) => heard(InboxNotice::Anything),
            },
        })
    }

    /// Adds each group's items the user does not have yet (the first of
    /// repeated ids), all groups in one transaction (one commit, one
    /// fsync: group commit of concurrent adds); the changes logged per
    /// group, one `Added` per new item, in the order of `groups` and of
    /// their items. A user may appear in several
    /// groups; nothing is added for an erased user. Users' counts rows are
    /// locked in user order, so two such transactions cannot deadlock.
    ///
    /// Each user's statements run once per call, whatever number of
    /// groups name them: the in-app channel's concurrent sends arrive as
    /// one group per delivery, many of them for the same few users, and
    /// one set of statements per group made the inbox the largest share
    /// of the writer's statements (README, notification benchmark).
    pub async fn insert_groups(
        &self,
        groups: &[(&str, &[InboxItem])],
    ) -> Result<Vec<Vec<Change>>, StorageError> {
        let mut results: Vec<Vec<Change>> = vec![Vec::new(); groups.len()];
        if groups.iter().all(|(_, items)| items.is_empty()) {
            return Ok(results);
        }
        let metrics = self.database.metrics();
        let _timer = metrics.time("inbox_insert");
        // Each user's groups, in the order of `groups`; users in order.
        let mut by_user: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (index, (user_id, items)) in groups.iter().enumerate() {
            if !items.is_empty() {
                by_user.entry(*user_id).or_default().push(index);
            }
        }
        with_pool!(write self.database, pool, engine => {
            let mut tx = begin_write(metrics, pool, engine).await?;
            // Before the counts rows' upsert, which would create them.
            let erased = erased_among!(tx, engine, by_user.keys().copied());
            for (user_id, indexes) in &by_user {
                let user_id = *user_id;
                if erased.contains(user_id) {
                    continue;
                }
                let ids: Vec<String> = indexes
                    .iter()
                    .flat_map(|&index| groups[index].1.iter().map(|item| item.id.clone()))
                    .collect();
                let (mut counts, mut seq) = lock_counts!(tx, user_id);
                let stored = read_items!(tx, engine, user_id, ids);
                let mut seen: HashSet<&str> = HashSet::new();
                let mut new: Vec<&InboxItem> = Vec::new();
                let mut logged: Vec<Change> = Vec::new();
                for &index in indexes {
                    let mut changes = Vec::new();
                    for item in groups[index].1 {
                        if stored.contains_key(&item.id) || !seen.insert(&item.id) {
                            continue;
                        }
                        counts.add(item);
                        seq += 1;
                        changes.push(Change {
                            seq,
                            at: item.created_at,
                            kind: ChangeKind::Added,
                            item: Some(item.clone()),
                            id: item.id.clone(),
                            counts: counts.clone(),
                        });
                        new.push(item);
                    }
                    logged.extend(changes.iter().cloned());
                    results[index] = changes;
                }
                upsert_items!(tx, engine, user_id, &new);
                log_changes!(tx, engine, user_id, &counts, &logged);
            }
            // A user's groups logged increasing seqs: the last one wins.
            let mut changed: BTreeMap<&str, u64> = BTreeMap::new();
            for ((user_id, _), changes) in groups.iter().zip(&results) {
                if let Some(last) = changes.last() {
                    changed.insert(user_id, last.seq);
                }
            }
            notify_changed!(tx, engine, self.instance, changed);
            tx.commit().await?;
        });
        Ok(results)
    }

    /// Applies `action` at `now` to each of `ids` that is the user's, in
    /// one transaction; returns what changed (see [`Applied`]) and the
    /// changes logged, in the order of `ids`.
    pub async fn apply(
        &self,
        user_id: &str,
        ids: &[String],
        action: Action,
        now: Timestamp,
    ) -> Result<(Applied, Vec<Change>), StorageError> {
        let metrics = self.database.metrics();
        let _timer = metrics.time("inbox_apply");
        if ids.is_empty() {
            return Ok((Applied::default(), Vec::new()));
        }
        let done = with_pool!(write self.database, pool, engine => {
            let mut tx = begin_write(metrics, pool, engine).await?;
            let (mut counts, mut seq) = lock_counts!(tx, user_id);
            let mut stored = read_items!(tx, engine, user_id, ids);
            let mut applied = Applied::default();
            let mut changes = Vec::new();
            // Ids changed but not deleted, in first-change order.
            let mut dirty: Vec<String> = Vec::new();
            let mut deleted: Vec<String> = Vec::new();
            for id in ids {
                // A repeated id sees its state after the earlier change
                // (and is missing once deleted), as one by one would.
                let Some(item) = stored.get_mut(id) else {
                    applied.missing.push(id.clone());
                    continue;
                };
                let before = item.clone();
                if !action.apply(item, now) {
                    continue;
                }
                counts.remove(&before);
                seq += 1;
                if action == Action::Delete {
                    stored.remove(id);
                    dirty.retain(|dirty| dirty != id);
                    deleted.push(id.clone());
                    changes.push(Change {
                        seq,
                        at: now,
                        kind: ChangeKind::Deleted,
                        item: None,
                        id: id.clone(),
                        counts: counts.clone(),
                    });
                    applied.changed.push(before);
                } else {
                    counts.add(item);
                    changes.push(Change {
                        seq,
                        at: now,
                        kind: ChangeKind::Updated,
                        item: Some(item.clone()),
                        id: id.clone(),
                        counts: counts.clone(),
                    });
                    applied.changed.push(item.clone());
                    if !dirty.contains(id) {
                        dirty.push(id.clone());
                    }
                }
            }
            let updated_refs: Vec<&InboxItem> =
                dirty.iter().filter_map(|id| stored.get(id)).collect();
            upsert_items!(tx, engine, user_id, &updated_refs);
            for chunk in deleted.chunks(CHUNK) {
                let sql = format!(
                    "DELETE FROM inbox_items WHERE user_id = $1 AND id IN ({})",
                    numbered(2, chunk.len())
                );
                let mut query = sqlx::query(dynamic(engine, sql)).bind(user_id);
                for id in chunk {
                    query = query.bind(id.as_str());
                }
                query.execute(&mut *tx).await?;
            }
            log_changes!(tx, engine, user_id, &counts, &changes);
            if let Some(last) = changes.last() {
                notify_changed!(tx, engine, self.instance, [(user_id, last.seq)]);
            }
            tx.commit().await?;
            (applied, changes)
        });
        Ok(done)
    }

    pub async fn get(&self, user_id: &str, id: &str) -> Result<Option<InboxItem>, StorageError> {
        let _timer = self.database.metrics().time("inbox_get");
        let row: Option<String> = with_pool!(self.database, pool => {
            sqlx::query_scalar("SELECT item FROM inbox_items WHERE user_id = $1 AND id = $2")
                .bind(user_id)
                .bind(id)
                .fetch_optional(pool)
                .await?
        });
        row.map(|row| decode_item(user_id, &row)).transpose()
    }

    /// Up to `limit` items whose snooze is due at `now` (`snoozed_until`
    /// at or before it), soonest first, as `(user_id, id)`: what the
    /// waker brings back. Read through the partial index on
    /// `snoozed_until`, which holds snoozed items only.
    pub async fn due_snoozes(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<(String, String)>, StorageError> {
        let _timer = self.database.metrics().time("inbox_due_snoozes");
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = with_pool!(self.database, pool => {
            sqlx::query_as(
                "SELECT user_id, id FROM inbox_items \
                 WHERE snoozed_until IS NOT NULL AND snoozed_until <= $1 \
                 ORDER BY snoozed_until LIMIT $2",
            )
            .bind(now.as_millisecond())
            .bind(limit)
            .fetch_all(pool)
            .await?
        });
        Ok(rows)
    }

    /// The user's counts (all zero for a user without items).
    pub async fn counts(&self, user_id: &str) -> Result<Counts, StorageError> {
        let _timer = self.database.metrics().time("inbox_counts");
        let row: Option<CountsRow> = with_pool!(self.database, pool => {
            sqlx::query_as(
                "SELECT last_seq, unread, unseen, total, categories FROM inbox_counts WHERE user_id = $1",
            )
            .bind(user_id)
            .fetch_optional(pool)
            .await?
        });
        Ok(match row {
            Some(row) => decode_counts(user_id, row)?.0,
            None => Counts::default(),
        })
    }

    /// The next `window` of the user's items in `range`'s direction after
    /// `range.after`, each row with its item when it passes `range`'s
    /// filters: at most `window` rows are examined, however few match,
    /// so a listing whose filter matches nothing costs a bounded read.
    pub async fn scan(
        &self,
        user_id: &str,
        range: &ItemRange<'_>,
        window: usize,
    ) -> Result<ScanWindow, StorageError> {
        let _timer = self.database.metrics().time("inbox_scan");
        let (compare, order, start) = if range.newest {
            // After every id: ids are ASCII, this sorts above them bytewise.
            ("<", "DESC", "\u{10FFFF}")
        } else {
            (">", "ASC", "")
        };
        // The type filter goes to SQL when its list is short; a longer one
        // (a client may repeat `type`) is left to the caller's exact check.
        let types: &[String] = if range.types.len() <= MAX_SQL_TYPES {
            range.types
        } else {
            &[]
        };
        let type_filter = if types.is_empty() {
            String::new()
        } else {
            let list: Vec<String> = (0..types.len()).map(|i| format!("${}", 11 + i)).collect();
            format!(" AND notification_type IN ({})", list.join(", "))
        };
        // The inner query walks the primary key's range for the user (the
        // cursor is a bound of the index, not a filter), `LIMIT` rows and no
        // more; the outer one checks the filters on those rows only and
        // returns the item of those that pass.
        let sql = format!(
            "SELECT id, CASE WHEN (archived_at IS NOT NULL) = $3 \
             AND ($4 IS NULL OR (read_at IS NOT NULL) = $4) \
             AND ($5 IS NULL OR COALESCE(category, $6) = $5) \
             AND ($7 IS NULL OR created_at >= $7) \
             AND ($8 IS NULL OR created_at <= $8) \
             AND (snoozed_until IS NOT NULL) = $10{type_filter} THEN item END \
             FROM (SELECT id, notification_type, category, created_at, read_at, archived_at, \
             snoozed_until, item \
             FROM inbox_items WHERE user_id = $1 AND id {compare} $2 \
             ORDER BY id {order} LIMIT $9) AS examined \
             ORDER BY id {order}"
        );
        // Floors of both bounds: `created >= since` implies the floors
        // compare `>=`, and `created < until` implies floor ≤ floor.
        let since = range.since.map(Timestamp::as_millisecond);
        let until = range.until.map(Timestamp::as_millisecond);
        let after = range.after.unwrap_or(start);
        let limit = i64::try_from(window).unwrap_or(i64::MAX);
        let rows: Vec<(String, Option<String>)> = with_pool!(self.database, pool => {
            let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(user_id)
                .bind(after)
                .bind(range.archived)
                .bind(range.read)
                .bind(range.category)
                .bind(UNCATEGORISED)
                .bind(since)
                .bind(until)
                .bind(limit)
                .bind(range.snoozed);
            for kind in types {
                query = query.bind(kind.as_str());
            }
            query.fetch_all(pool).await?
        });
        let examined = rows.len();
        let last = rows.last().map(|(id, _)| id.clone());
        let items = rows
            .iter()
            .filter_map(|(_, item)| item.as_deref())
            .map(|item| decode_item(user_id, item))
            .collect::<Result<_, _>>()?;
        Ok(ScanWindow {
            items,
            examined,
            last,
        })
    }

    /// Up to `limit` of the user's items after the id `after` (all of
    /// them, archived too), by id: a privacy export's page.
    pub async fn items_after(
        &self,
        user_id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<InboxItem>, StorageError> {
        let _timer = self.database.metrics().time("inbox_items_of");
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows: Vec<String> = with_pool!(self.database, pool => {
            sqlx::query_scalar(
                "SELECT item FROM inbox_items WHERE user_id = $1 AND id > $2 ORDER BY id LIMIT $3",
            )
            .bind(user_id)
            .bind(after.unwrap_or(""))
            .bind(limit)
            .fetch_all(pool)
            .await?
        });
        rows.iter().map(|row| decode_item(user_id, row)).collect()
    }

    /// Every item of the user, by id.
    pub async fn items_of(&self, user_id: &str) -> Result<Vec<InboxItem>, StorageError> {
        let _timer = self.database.metrics().time("inbox_items_of");
        let rows: Vec<String> = with_pool!(self.database, pool => {
            sqlx::query_scalar("SELECT item FROM inbox_items WHERE user_id = $1 ORDER BY id")
                .bind(user_id)
                .fetch_all(pool)
                .await?
        });
        rows.iter().map(|row| decode_item(user_id, row)).collect()
    }

    /// The user's changes after `seq`, oldest first, at most `limit`.
    pub async fn changes_after(
        &self,
        user_id: &str,
        seq: u64,
        limit: usize,
    ) -> Result<Vec<Change>, StorageError> {
        let _timer = self.database.metrics().time("inbox_changes_after");
        let after = i64::try_from(seq).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows: Vec<String> = with_pool!(self.database, pool => {
            sqlx::query_scalar(
                "SELECT change FROM inbox_changes WHERE user_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
            )
            .bind(user_id)
            .bind(after)
            .bind(limit)
            .fetch_all(pool)
            .await?
        });
        rows.iter()
            .map(|row| {
                serde_json::from_str(row).map_err(|error| {
                    StorageError::Corrupt(format!("inbox change of user {user_id:?}: {error}"))
                })
            })
            .collect()
    }

    /// Where the user's change log stands.
    pub async fn log_bounds(&self, user_id: &str) -> Result<LogBounds, StorageError> {
        let _timer = self.database.metrics().time("inbox_log_bounds");
        let row: Option<(i64, i64)> = with_pool!(self.database, pool => {
            sqlx::query_as("SELECT last_seq, pruned_seq FROM inbox_counts WHERE user_id = $1")
                .bind(user_id)
                .fetch_optional(pool)
                .await?
        });
        let (last, pruned) = row.unwrap_or_default();
        Ok(LogBounds {
            last: u64::try_from(last).unwrap_or_default(),
            pruned: u64::try_from(pruned).unwrap_or_default(),
        })
    }

    /// Removes every change logged before `cutoff` and raises each user's
    /// pruned mark to the highest seq removed, in one transaction; returns
    /// how many were removed.
    pub async fn prune_changes(&self, cutoff: Timestamp) -> Result<u64, StorageError> {
        let metrics = self.database.metrics();
        let _timer = metrics.time("inbox_prune_changes");
        let cutoff = cutoff.as_millisecond();
        let removed = with_pool!(write self.database, pool, engine => {
            let mut tx = begin_write(metrics, pool, engine).await?;
            sqlx::query(
                "UPDATE inbox_counts SET pruned_seq = pruned.seq \
                 FROM (SELECT user_id, MAX(seq) AS seq FROM inbox_changes WHERE at < $1 GROUP BY user_id) AS pruned \
                 WHERE inbox_counts.user_id = pruned.user_id AND pruned.seq > inbox_counts.pruned_seq",
            )
            .bind(cutoff)
            .execute(&mut *tx)
            .await?;
            let removed = sqlx::query("DELETE FROM inbox_changes WHERE at < $1")
                .bind(cutoff)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            tx.commit().await?;
            removed
        });
        Ok(removed)
    }

    /// Removes the user's items, counts, change log and pruned mark in one
    /// transaction; returns how many items there were.
    pub async fn erase_user(&self, user_id: &str) -> Result<u64, StorageError> {
        let metrics = self.database.metrics();
        let _timer = metrics.time("inbox_erase_user");
        let removed = with_pool!(write self.database, pool, engine => {
            let mut tx = begin_write(metrics, pool, engine).await?;
            // The counts row first: a writer of this user waits for it.
            sqlx::query("DELETE FROM inbox_counts WHERE user_id = $1")
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
            let removed = sqlx::query("DELETE FROM inbox_items WHERE user_id = $1")
                .bind(user_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            sqlx::query("DELETE FROM inbox_changes WHERE user_id = $1")
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            removed
        });
        Ok(removed)
    }
}

/// One notification's payload (see the module doc).
#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Payload {
    /// The writing process (its `InboxTable::instance`).
    by: String,
    /// `(user id, last seq logged)`; `None` for "any user".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    users: Option<Vec<(String, u64)>>,
}

/// The payloads by `instance` that name `users` (id, last seq), each under
/// [`NOTIFY_PAYLOAD`] bytes; one naming no user ("any user") for an id too
/// long to name.
fn notify_payloads<'a>(
    instance: &str,
    users: impl IntoIterator<Item = (&'a str, u64)>,
) -> Result<Vec<String>, StorageError> {
    let head = serde_json::to_string(instance)?;
    // `{"by":…,"users":[` … `]}`
    let room = NOTIFY_PAYLOAD.saturating_sub(head.len() + 20);
    let wrap = |entries: &[String]| format!("{{\"by\":{head},\"users\":[{}]}}", entries.join(","));
    let mut payloads = Vec::new();
    let mut entries: Vec<String> = Vec::new();
    let mut size = 0;
    let mut anyone = false;
    for (user_id, seq) in users {
        let entry = serde_json::to_string(&(user_id, seq))?;
        if entry.len() > room {
            anyone = true;
            continue;
        }
        if size + entry.len() > room {
            payloads.push(wrap(&entries));
            entries.clear();
            size = 0;
        }
        size += entry.len() + 1;
        entries.push(entry);
    }
    if !entries.is_empty() {
        payloads.push(wrap(&entries));
    }
    if anyone {
        payloads.push(format!("{{\"by\":{head}}}"));
    }
    Ok(payloads)
}

fn seq_value(seq: u64) -> Result<i64, StorageError> {
    i64::try_from(seq).map_err(|_| StorageError::Corrupt(format!("inbox seq {seq} out of range")))
}

fn count_value(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

fn decode_item(user_id: &str, row: &str) -> Result<InboxItem, StorageError> {
    serde_json::from_str(row)
        .map_err(|error| StorageError::Corrupt(format!("inbox item of user {user_id:?}: {error}")))
}

fn decode_counts(user_id: &str, row: CountsRow) -> Result<(Counts, u64), StorageError> {
    let (last_seq, unread, unseen, total, categories) = row;
    let corrupt =
        |what: &str| StorageError::Corrupt(format!("inbox counts of user {user_id:?}: {what}"));
    let count = |value: i64| u64::try_from(value).map_err(|_| corrupt("a negative count"));
    let categories: BTreeMap<String, CategoryCounts> =
        serde_json::from_str(&categories).map_err(|error| corrupt(&error.to_string()))?;
    Ok((
        Counts {
            unread: count(unread)?,
            unseen: count(unseen)?,
            total: count(total)?,
            categories,
        },
        count(last_seq)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(payload: &str) -> Payload {
        serde_json::from_str(payload).expect("a payload")
    }

    #[test]
    fn notifications_name_every_user_and_stay_under_postgres_limit() {
        let users: Vec<(String, u64)> = (0..2_000)
            .map(|n| (format!("user-{n:05}-\"quoted\"\n"), n))
            .collect();
        let payloads =
            notify_payloads("me", users.iter().map(|(user, seq)| (user.as_str(), *seq))).unwrap();
        assert!(payloads.len() > 1, "split: {} payloads", payloads.len());
        let mut heard = Vec::new();
        for payload in &payloads {
            assert!(payload.len() < 8000, "{} bytes", payload.len());
            let payload = parse(payload);
            assert_eq!(payload.by, "me");
            heard.extend(payload.users.expect("names users"));
        }
        assert_eq!(heard, users);
    }

    #[test]
    fn a_user_id_too_long_to_name_makes_an_any_user_notification() {
        let long = "x".repeat(NOTIFY_PAYLOAD);
        let payloads = notify_payloads("me", [("short", 3), (long.as_str(), 9)]).unwrap();
        assert_eq!(payloads.len(), 2);
        assert_eq!(parse(&payloads[0]).users, Some(vec![("short".into(), 3)]));
        assert_eq!(parse(&payloads[1]).users, None, "any user");
        assert_eq!(notify_payloads("me", []).unwrap(), Vec::<String>::new());
    }
}
