//! [`NotificationStore`]: the `notifications` table and the apps'
//! idempotency keys (`notification_keys`). The promises are
//! [`crate::notifications`]'s; how they are kept:
//!
//! * **By source event**: a unique index on `source_event_id`, so a
//!   replayed event's insert conflicts and finds the first notification,
//!   on any number of concurrent writers.
//! * **By idempotency key**: `notification_keys` holds one row per user and
//!   key. Creating takes the key with an upsert that only overwrites a row
//!   older than the window; a key still in its window keeps its row, and
//!   the create answers with the notification it names (the one it had
//!   just inserted is deleted again in the same transaction). Key,
//!   notification and source check commit in one transaction, durable
//!   before `create` returns; [`NotificationStore::create_all`] does a
//!   page of them in one, its inserts many rows per statement (one
//!   statement each cost the writer a round trip per notification).
//! * **Never for an erased user**: the transaction checks the user's
//!   tombstone first (see `tombstones`), so a create racing an erasure
//!   either is removed by it or creates nothing.
//! * Removing a notification (privacy erase, retention) removes the keys
//!   that name it in the same transaction, so a key never outlives its
//!   notification into a dangling `Existing`; and its throttle decisions
//!   (`throttles`), which a user's erasure removes whole.

use std::collections::{HashMap, HashSet};

use jiff::Timestamp;

use super::StorageError;
use super::database::{Database, begin_write, with_pool};
use super::deliveries::{ROWS_PER_STATEMENT, placeholders};
use super::sql_text::{dynamic, numbered};
use super::tombstones::erased_among;
use crate::notifications::{Created, IDEMPOTENCY_WINDOW, NewNotification, Notification};

/// Notifications in SQL. Cheap to clone; clones share the pool.
#[derive(Clone, Debug)]
pub struct NotificationStore {
    /// Also the throttle decisions' (`throttles`).
    pub(super) database: Database,
}

/// What a create found before inserting.
enum Found {
    Nothing,
    /// The user is erased: nothing was written.
    Erased,
    Existing(String),
}

impl NotificationStore {
    pub(super) fn new(database: Database) -> Self {
        NotificationStore { database }
    }

    /// Creates a notification unless its source event or idempotency key
    /// already created one (see [`crate::notifications`]); durable when it
    /// returns.
    pub async fn create(
        &self,
        draft: NewNotification,
        now: Timestamp,
    ) -> Result<Created, StorageError> {
        let mut created = self.create_all(vec![draft], now).await?;
        created
            .pop()
            .ok_or_else(|| StorageError::Corrupt("a create answered nothing".to_owned()))
    }

    /// [`Self::create`] for every draft, in order, in one transaction: one
    /// commit for a page of the engine's events. A draft whose key or
    /// source an earlier draft of the same call took finds that one.
    pub async fn create_all(
        &self,
        drafts: Vec<NewNotification>,
        now: Timestamp,
    ) -> Result<Vec<Created>, StorageError> {
        if drafts.is_empty() {
            return Ok(Vec::new());
        }
        let now_ms = now.as_millisecond();
        let window_ms = i64::try_from(IDEMPOTENCY_WINDOW.as_millis()).unwrap_or(i64::MAX);
        let expired_before = now_ms.saturating_sub(window_ms);
        let notifications: Vec<Notification> = drafts
            .into_iter()
            .map(|draft| Notification {
                id: uuid::Uuid::now_v7().to_string(),
                user_id: draft.user_id,
                request: draft.request,
                source_event_id: draft.source_event_id,
                created_at: now,
            })
            .collect();
        let bodies = notifications
            .iter()
            .map(serde_json::to_string)
            .collect::<Result<Vec<_>, _>>()?;
        let metrics = self.database.metrics();
        let _timer = metrics.time("notification_create");

        let found: Vec<Found> = with_pool!(write self.database, pool, engine => {
            let mut tx = begin_write(metrics, pool, engine).await?;
            let erased = erased_among!(
                tx,
                engine,
                notifications.iter().map(|notification| notification.user_id.as_str())
            );
            // Every insert first, many rows per statement: a replayed
            // source event conflicts on its unique index and writes
            // nothing, and is not among the ids returned.
            let mut inserted: HashSet<String> = HashSet::with_capacity(notifications.len());
            let live: Vec<(&Notification, &String)> = notifications
                .iter()
                .zip(&bodies)
                .filter(|(notification, _)| !erased.contains(&notification.user_id))
                .collect();
            for chunk in live.chunks(ROWS_PER_STATEMENT) {
                let sql = format!(
                    "INSERT INTO notifications (id, user_id, source_event_id, created_at_ms, body) \
                     VALUES {} ON CONFLICT (source_event_id) WHERE source_event_id IS NOT NULL \
                     DO NOTHING RETURNING id",
                    placeholders(chunk.len(), 5)
                );
                let mut query = sqlx::query_scalar(dynamic(engine, sql));
                for (notification, body) in chunk {
                    query = query
                        .bind(notification.id.as_str())
                        .bind(notification.user_id.as_str())
                        .bind(notification.source_event_id.as_deref())
                        .bind(now_ms)
                        .bind(body.as_str());
                }
                let ids: Vec<String> = query.fetch_all(&mut *tx).await?;
                inserted.extend(ids);
            }
            // The notifications that hold the sources of the rest.
            let replayed: Vec<&str> = live
                .iter()
                .filter(|(notification, _)| !inserted.contains(&notification.id))
                .filter_map(|(notification, _)| notification.source_event_id.as_deref())
                .collect();
            let mut holders: HashMap<String, String> = HashMap::new();
            for chunk in replayed.chunks(ROWS_PER_STATEMENT) {
                let sql = format!(
                    "SELECT source_event_id, id FROM notifications WHERE source_event_id IN ({})",
                    numbered(1, chunk.len())
                );
                let mut query = sqlx::query_as(dynamic(engine, sql));
                for source in chunk {
                    query = query.bind(*source);
                }
                let rows: Vec<(String, String)> = query.fetch_all(&mut *tx).await?;
                holders.extend(rows);
            }
            // Inserted here, then removed for a key another one held: the
            // notification that holds that key.
            let mut withdrawn: HashMap<String, String> = HashMap::new();
            let mut found = Vec::with_capacity(notifications.len());
            for notification in &notifications {
                if erased.contains(&notification.user_id) {
                    found.push(Found::Erased);
                    continue;
                }
                if !inserted.contains(&notification.id) {
                    let holder = notification
                        .source_event_id
                        .as_ref()
                        .and_then(|source| holders.get(source))
                        .ok_or_else(|| {
                            StorageError::Corrupt(format!(
                                "notification {} was not inserted and no notification holds its source",
                                notification.id
                            ))
                        })?;
                    // An earlier draft of this call with the same source
                    // that gave way to a key's holder: that holder.
                    let holder = withdrawn.get(holder).unwrap_or(holder);
                    found.push(Found::Existing(holder.clone()));
                    continue;
                }
                let Some(key) = &notification.request.idempotency_key else {
                    found.push(Found::Nothing);
                    continue;
                };
                // Takes the key unless a notification within the window
                // holds it; the conditional update locks the row on
                // PostgreSQL, so of two concurrent creates one wins.
                let taken: Option<String> = sqlx::query_scalar(
                    "INSERT INTO notification_keys (user_id, idempotency_key, created_at_ms, notification_id) \
                     VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (user_id, idempotency_key) DO UPDATE \
                     SET created_at_ms = excluded.created_at_ms, notification_id = excluded.notification_id \
                     WHERE notification_keys.created_at_ms <= $5 \
                     RETURNING notification_id",
                )
                .bind(&notification.user_id)
                .bind(key)
                .bind(now_ms)
                .bind(&notification.id)
                .bind(expired_before)
                .fetch_optional(&mut *tx)
                .await?;
                if taken.is_some() {
                    found.push(Found::Nothing);
                    continue;
                }
                // The key is another notification's: this one goes again.
                sqlx::query("DELETE FROM notifications WHERE id = $1")
                    .bind(&notification.id)
                    .execute(&mut *tx)
                    .await?;
                let holder: String = sqlx::query_scalar(
                    "SELECT notification_id FROM notification_keys WHERE user_id = $1 AND idempotency_key = $2",
                )
                .bind(&notification.user_id)
                .bind(key)
                .fetch_one(&mut *tx)
                .await?;
                withdrawn.insert(notification.id.clone(), holder.clone());
                found.push(Found::Existing(holder));
            }
            tx.commit().await?;
            found
        });

        let mut created = Vec::with_capacity(found.len());
        for (notification, found) in notifications.into_iter().zip(found) {
            created.push(match found {
                Found::Nothing => Created::New(notification),
                Found::Erased => Created::UserErased,
                Found::Existing(id) => {
                    let existing = self.get(&id).await?.ok_or_else(|| {
                        StorageError::Corrupt(format!(
                            "an idempotency record names notification {id}, which is missing"
                        ))
                    })?;
                    Created::Existing(existing)
                }
            });
        }
        Ok(created)
    }

    pub async fn get(&self, id: &str) -> Result<Option<Notification>, StorageError> {
        let body: Option<String> = with_pool!(self.database, pool => {
            sqlx::query_scalar("SELECT body FROM notifications WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await?
        });
        body.as_deref().map(decode).transpose()
    }

    /// A user's notifications, newest first, at most `limit`.
    pub async fn list_for_user(
        &self,
        user_id: &str,
        limit: usize,
    ) -> Result<Vec<Notification>, StorageError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let bodies: Vec<String> = with_pool!(self.database, pool => {
            sqlx::query_scalar(
                "SELECT body FROM notifications WHERE user_id = $1 ORDER BY id DESC LIMIT $2",
            )
            .bind(user_id)
            .bind(limit)
            .fetch_all(pool)
            .await?
        });
        bodies.iter().map(|body| decode(body)).collect()
    }

    /// A user's notifications older than the id `before` (all when
    /// `None`), newest first, at most `limit`: the pages of a privacy
    /// export, one range of the `(user_id, id)` index each.
    pub async fn page_for_user(
        &self,
        user_id: &str,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Notification>, StorageError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let bodies: Vec<String> = with_pool!(self.database, pool => {
            match before {
                Some(before) => sqlx::query_scalar(
                    "SELECT body FROM notifications WHERE user_id = $1 AND id < $2 \
                     ORDER BY id DESC LIMIT $3",
                )
                .bind(user_id)
                .bind(before)
                .bind(limit)
                .fetch_all(pool)
                .await?,
                None => sqlx::query_scalar(
                    "SELECT body FROM notifications WHERE user_id = $1 ORDER BY id DESC LIMIT $2",
                )
                .bind(user_id)
                .bind(limit)
                .fetch_all(pool)
                .await?,
            }
        });
        bodies.iter().map(|body| decode(body)).collect()
    }

    /// Removes every notification of `user_id` and the user's idempotency
    /// keys; returns the removed notifications (so the caller can remove
    /// their deliveries). Durable when it returns.
    pub async fn erase_user(&self, user_id: &str) -> Result<Vec<Notification>, StorageError> {
        let metrics = self.database.metrics();
        let bodies: Vec<String> = with_pool!(write self.database, pool, engine => {
            let mut tx = begin_write(metrics, pool, engine).await?;
            sqlx::query("DELETE FROM notification_keys WHERE user_id = $1")
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM notification_throttles WHERE user_id = $1")
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
            let bodies = sqlx::query_scalar("DELETE FROM notifications WHERE user_id = $1 RETURNING body")
                .bind(user_id)
                .fetch_all(&mut *tx)
                .await?;
            tx.commit().await?;
            bodies
        });
        bodies.iter().map(|body| decode(body)).collect()
    }

    /// Retention, first step: up to `limit` notifications created before
    /// `cutoff`, oldest first. Read only: the caller removes what hangs
    /// off them (deliveries, inbox items) and then [`Self::remove`]s them,
    /// so a pass cut short leaves the notifications to be found again by
    /// the next one, never their deliveries without a notification.
    pub async fn created_before(
        &self,
        cutoff: Timestamp,
        limit: usize,
    ) -> Result<Vec<Notification>, StorageError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let bodies: Vec<String> = with_pool!(self.database, pool => {
            sqlx::query_scalar(
                "SELECT body FROM notifications WHERE created_at_ms < $1 \
                 ORDER BY created_at_ms, id LIMIT $2",
            )
            .bind(cutoff.as_millisecond())
            .bind(limit)
            .fetch_all(pool)
            .await?
        });
        bodies.iter().map(|body| decode(body)).collect()
    }

    /// Removes the notifications `ids` with the keys that name them, in
    /// one transaction; returns how many were there.
    pub async fn remove(&self, ids: &[String]) -> Result<usize, StorageError> {
        let metrics = self.database.metrics();
        let removed = with_pool!(write self.database, pool, engine => {
            let mut tx = begin_write(metrics, pool, engine).await?;
            let mut removed = 0;
            for id in ids {
                sqlx::query("DELETE FROM notification_keys WHERE notification_id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("DELETE FROM notification_throttles WHERE notification_id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                removed += sqlx::query("DELETE FROM notifications WHERE id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected() as usize;
            }
            tx.commit().await?;
            removed
        });
        Ok(removed)
    }

    /// Forgets idempotency keys older than the window; returns how many.
    pub async fn prune_idempotency_keys(&self, now: Timestamp) -> Result<u64, StorageError> {
        let window_ms = i64::try_from(IDEMPOTENCY_WINDOW.as_millis()).unwrap_or(i64::MAX);
        let cutoff = now.as_millisecond().saturating_sub(window_ms);
        let pruned = with_pool!(write self.database, pool => {
            sqlx::query("DELETE FROM notification_keys WHERE created_at_ms < $1")
                .bind(cutoff)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(pruned)
    }
}

fn decode(body: &str) -> Result<Notification, StorageError> {
    serde_json::from_str(body)
        .map_err(|error| StorageError::Corrupt(format!("a notification: {error}")))
}
