//! [`DeliveryTable`]: the rows under [`crate::delivery::DeliveryQueue`],
//! which owns the lifecycle rules; this module owns how they are stored.
//!
//! # Promises
//!
//! * **One record, one row.** `body` is the whole [`Delivery`] as JSON;
//!   `status`, `not_before_us`, `updated_at_us`, `provider_message_id`
//!   and `attempt_log_len` are a projection of it for the indexes, written
//!   by the same statement as the body, so they never disagree with it.
//!   The due index is partial (`status = 'queued'`): a status change moves
//!   a delivery in or out of it with no second write.
//! * **Every change is one transaction**: [`DeliveryTable::edit`] reads the
//!   row (locked `FOR UPDATE` on PostgreSQL; under SQLite's write lock),
//!   lets the caller change it, and writes it back together with the
//!   facts the change produced. A fact commits with its change or not at
//!   all (see [`crate::delivery::facts`]).
//! * **A claim is taken once.** [`DeliveryTable::claim_due`] selects due
//!   rows and marks them `sending` in one transaction; on PostgreSQL the
//!   selection is `FOR UPDATE SKIP LOCKED`, so concurrent claimers (other
//!   workers, other replicas) take disjoint sets without waiting on each
//!   other.
//! * Durable on return: every write commits before the call returns
//!   (SQLite `synchronous = FULL`, PostgreSQL's commit).

use jiff::Timestamp;
use uuid::Uuid;

use super::StorageError;
use super::database::{Database, Engine, begin_write, with_pool};
use super::sql_text::dynamic;
use super::tombstones::erased_among;
use crate::channels::ChannelKind;
use crate::delivery::{Delivery, DeliveryFact, Priority, Status};

/// The deliveries and the delivery facts. Cheap to clone.
#[derive(Clone, Debug)]
pub struct DeliveryTable {
    database: Database,
}

/// What an [`DeliveryTable::edit`] callback decided.
#[derive(Debug, Default)]
pub struct Edit {
    /// Write the delivery back (it changed).
    pub changed: bool,
    /// Facts to append in the same transaction.
    pub facts: Vec<DeliveryFact>,
}

/// One change for [`DeliveryTable::edit_all`]: what [`DeliveryTable::edit`]
/// takes, boxed so changes of many callers go in one list.
pub type Change<E> = Box<dyn FnOnce(&mut Delivery) -> Result<Edit, E> + Send>;

/// The columns of a `deliveries` row, from its record.
struct Row {
    id: String,
    notification_id: String,
    user_id: String,
    channel: i16,
    priority: i16,
    status: &'static str,
    not_before_us: i64,
    updated_at_us: i64,
    provider_message_id: Option<String>,
    attempt_log_len: i32,
    body: String,
}

impl Row {
    fn of(delivery: &Delivery) -> Result<Row, StorageError> {
        Ok(Row {
            id: delivery.id.to_string(),
            notification_id: delivery.notification_id.clone(),
            user_id: delivery.user_id.clone(),
            channel: channel_code(delivery.channel),
            priority: priority_code(delivery.priority),
            status: delivery.status.as_str(),
            not_before_us: delivery.not_before.as_microsecond(),
            updated_at_us: delivery.updated_at.as_microsecond(),
            provider_message_id: delivery.provider_message_id.clone(),
            attempt_log_len: i32::try_from(delivery.attempt_log.len()).unwrap_or(i32::MAX),
            body: serde_json::to_string(delivery)?,
        })
    }
}

const UPDATE: &str = "UPDATE deliveries SET status = $2, not_before_us = $3, updated_at_us = $4, \
    provider_message_id = $5, attempt_log_len = $6, body = $7 WHERE id = $1";

/// Removes the delivery facts with sequence numbers `$seqs` (`&[i64]`)
/// inside the transaction `$tx`: for [`DeliveryTable::delete_facts`] and
/// for the analytics commit that counted them (`RollupTable::commit`).
macro_rules! delete_facts_in {
    ($tx:expr, $engine:expr, $seqs:expr) => {
        for chunk in $seqs.chunks(500) {
            let sql = format!(
                "DELETE FROM delivery_facts WHERE seq IN ({})",
                $crate::storage::sql_text::numbered(1, chunk.len())
            );
            let mut query = sqlx::query($crate::storage::sql_text::dynamic($engine, sql));
            for seq in chunk {
                query = query.bind(*seq);
            }
            query.execute(&mut *$tx).await?;
        }
    };
}

pub(crate) use delete_facts_in;

/// Binds a [`Row`] to [`UPDATE`].
macro_rules! update_row {
    ($row:expr) => {
        sqlx::query(UPDATE)
            .bind(&$row.id)
            .bind($row.status)
            .bind($row.not_before_us)
            .bind($row.updated_at_us)
            .bind(&$row.provider_message_id)
            .bind($row.attempt_log_len)
            .bind(&$row.body)
    };
}

/// Appends facts inside the caller's transaction `$tx`, many rows per
/// statement.
macro_rules! insert_facts {
    ($tx:expr, $engine:expr, $facts:expr) => {
        for chunk in $facts.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "INSERT INTO delivery_facts (user_id, body) VALUES {}",
                placeholders(chunk.len(), 2)
            );
            let mut query = sqlx::query(dynamic($engine, sql));
            for fact in chunk {
                query = query
                    .bind(fact.user_id.clone())
                    .bind(serde_json::to_string(fact)?);
            }
            query.execute(&mut *$tx).await?;
        }
    };
}

/// Writes `$rows` (a slice of [`Row`]) over their stored rows inside the
/// caller's transaction `$tx`, many rows per statement.
macro_rules! update_rows {
    ($tx:expr, $engine:expr, $rows:expr) => {
        for chunk in $rows.chunks(ROWS_PER_STATEMENT) {
            // VALUES columns are column1, column2, … on both engines.
            let sql = format!(
                "UPDATE deliveries SET status = v.column2, not_before_us = v.column3, \
                 updated_at_us = v.column4, provider_message_id = v.column5, \
                 attempt_log_len = v.column6, body = v.column7 \
                 FROM (VALUES {}) AS v WHERE deliveries.id = v.column1",
                placeholders(chunk.len(), 7)
            );
            let mut query = sqlx::query(dynamic($engine, sql));
            for row in chunk {
                query = query
                    .bind(&row.id)
                    .bind(row.status)
                    .bind(row.not_before_us)
                    .bind(row.updated_at_us)
                    .bind(&row.provider_message_id)
                    .bind(row.attempt_log_len)
                    .bind(&row.body);
            }
            query.execute(&mut *$tx).await?;
        }
    };
}

impl DeliveryTable {
    pub(super) fn new(database: Database) -> Self {
        DeliveryTable { database }
    }

    /// Inserts every delivery whose id is not stored yet, in one
    /// transaction; returns the ids that were new.
    pub async fn insert_new(&self, deliveries: &[Delivery]) -> Result<Vec<Uuid>, StorageError> {
        if deliveries.is_empty() {
            return Ok(Vec::new());
        }
        let rows = deliveries
            .iter()
            .map(Row::of)
            .collect::<Result<Vec<_>, _>>()?;
        let metrics = self.database.metrics();
        let _timer = metrics.time("delivery_insert");
        let mut new: Vec<String> = Vec::with_capacity(rows.len());
        with_pool!(write self.database, pool, engine => {
            let mut tx = begin_write(metrics, pool, engine).await?;
            // An erased user's deliveries are not written (see
            // `tombstones`): their notification is being erased too.
            let erased = erased_among!(tx, engine, rows.iter().map(|row| row.user_id.as_str()));
            let rows: Vec<&Row> = rows.iter().filter(|row| !erased.contains(&row.user_id)).collect();
            for chunk in rows.chunks(ROWS_PER_STATEMENT) {
                let sql = format!(
                    "INSERT INTO deliveries (id, notification_id, user_id, channel, priority, status, \
                     not_before_us, updated_at_us, provider_message_id, attempt_log_len, body) \
                     VALUES {} ON CONFLICT (id) DO NOTHING RETURNING id",
                    placeholders(chunk.len(), 11)
                );
                let mut query = sqlx::query_scalar(dynamic(engine, sql));
                for row in chunk {
                    query = query
                        .bind(&row.id)
                        .bind(&row.notification_id)
                        .bind(&row.user_id)
                        .bind(row.channel)
                        .bind(row.priority)
                        .bind(row.status)
                        .bind(row.not_before_us)
                        .bind(row.updated_at_us)
                        .bind(&row.provider_message_id)
                        .bind(row.attempt_log_len)
                        .bind(&row.body);
                }
                let inserted: Vec<String> = query.fetch_all(&mut *tx).await?;
                new.extend(inserted);
            }
            tx.commit().await?;
        });
        // In the callers' order.
        let new: std::collections::HashSet<String> = new.into_iter().collect();
        Ok(deliveries
            .iter()
            .filter(|delivery| new.contains(&delivery.id.to_string()))
            .map(|delivery| delivery.id)
            .collect())
    }

    pub async fn get(&self, id: Uuid) -> Result<Option<Delivery>, StorageError> {
        let body: Option<String> = with_pool!(self.database, pool => {
            sqlx::query_scalar("SELECT body FROM deliveries WHERE id = $1")
                .bind(id.to_string())
                .fetch_optional(pool)
                .await?
        });
        body.as_deref().map(decode).transpose()
    }

    /// Every delivery of one notification, by id.
    pub async fn for_notification(
        &self,
        notification_id: &str,
    ) -> Result<Vec<Delivery>, StorageError> {
        let bodies: Vec<String> = with_pool!(self.database, pool => {
            sqlx::query_scalar("SELECT body FROM deliveries WHERE notification_id = $1 ORDER BY id")
                .bind(notification_id)
                .fetch_all(pool)
                .await?
        });
        bodies.iter().map(|body| decode(body)).collect()
    }

    /// Reads delivery `id` under a lock, applies `change`, and writes the
    /// delivery (if `change` says it changed) and its facts back, all in one
    /// transaction. `Ok(None)` when there is no such delivery; an error
    /// from `change` rolls back and is returned as it is.
    pub async fn edit<E>(
        &self,
        id: Uuid,
        change: impl FnOnce(&mut Delivery) -> Result<Edit, E>,
    ) -> Result<Option<Delivery>, E>
    where
        E: From<StorageError>,
    {
        let metrics = self.database.metrics();
        let _timer = metrics.time("delivery_edit");
        let key = id.to_string();
        let outcome: Result<Option<Delivery>, E> = with_pool!(write self.database, pool, engine => {
            let mut tx = begin_write(metrics, pool, engine).await?;
            let select = match engine {
                Engine::Sqlite => "SELECT body FROM deliveries WHERE id = $1",
                Engine::Postgres => "SELECT body FROM deliveries WHERE id = $1 FOR UPDATE",
            };
            let body: Option<String> = sqlx::query_scalar(select)
                .bind(&key)
                .fetch_optional(&mut *tx)
                .await
                .map_err(StorageError::from)?;
            match body {
                None => {
                    tx.rollback().await.map_err(StorageError::from)?;
                    Ok(None)
                }
                Some(body) => {
                    let mut delivery = decode(&body)?;
                    match change(&mut delivery) {
                        // Rolled back now, not when the connection is next
                        // used: until then PostgreSQL would keep the row
                        // locked, and claims skip locked rows.
                        Err(error) => {
                            tx.rollback().await.map_err(StorageError::from)?;
                            Err(error)
                        }
                        Ok(edit) => {
                            let written: Result<(), StorageError> = async {
                                if edit.changed {
                                    let row = Row::of(&delivery)?;
                                    update_row!(row).execute(&mut *tx).await?;
                                }
                                insert_facts!(tx, engine, edit.facts);
                                tx.commit().await?;
                                Ok(())
                            }
                            .await;
                            written?;
                            Ok(Some(delivery))
                        }
                    }
                }
            }
        });
        outcome
    }

    /// [`Self::edit`] for many changes in one transaction (a group
    /// commit): each change sees the delivery as the changes before it in
    /// `changes` left it; a change that errs leaves it as it was and gets
    /// its error back, the others still apply. Each delivery is written
    /// once, after all its changes. `Err` only when the transaction
    /// failed, and then nothing was written.
    #[allow(clippy::type_complexity)]
    pub async fn edit_all<E>(
        &self,
        changes: Vec<(
            Uuid,
            Box<dyn FnOnce(&mut Delivery) -> Result<Edit, E> + Send>,
        )>,
    ) -> Result<Vec<Result<Option<Delivery>, E>>, StorageError> {
        let metrics = self.database.metrics();
        let _timer = metrics.time("delivery_edit_group");
        let mut results = Vec::with_capacity(changes.len());
        with_pool!(write self.database, pool, engine => {
            let mut tx = begin_write(metrics, pool, engine).await?;
            // Each delivery as the changes so far left it; `true` when it
            // must be written. Loaded (and on PostgreSQL locked) in id
            // order, so two groups never wait for each other in a cycle.
            let mut current: std::collections::HashMap<Uuid, (Delivery, bool)> =
                std::collections::HashMap::new();
            let ids: std::collections::BTreeSet<String> =
                changes.iter().map(|(id, _)| id.to_string()).collect();
            let ids: Vec<String> = ids.into_iter().collect();
            for chunk in ids.chunks(500) {
                let mut sql = String::from("SELECT body FROM deliveries WHERE id IN (");
                for index in 1..=chunk.len() {
                    if index > 1 {
                        sql.push(',');
                    }
                    sql.push('$');
                    sql.push_str(&index.to_string());
                }
                sql.push_str(") ORDER BY id");
                if engine == Engine::Postgres {
                    sql.push_str(" FOR UPDATE");
                }
                let mut query = sqlx::query_scalar(dynamic(engine, sql));
                for id in chunk {
                    query = query.bind(id);
                }
                let bodies: Vec<String> = query.fetch_all(&mut *tx).await?;
                for body in &bodies {
                    let delivery = decode(body)?;
                    current.insert(delivery.id, (delivery, false));
                }
            }
            let mut facts = Vec::new();
            for (id, change) in changes {
                let Some((delivery, dirty)) = current.get_mut(&id) else {
                    results.push(Ok(None));
                    continue;
                };
                let mut candidate = delivery.clone();
                match change(&mut candidate) {
                    Err(error) => results.push(Err(error)),
                    Ok(edit) => {
                        if edit.changed {
                            *delivery = candidate;
                            *dirty = true;
                        }
                        facts.extend(edit.facts);
                        results.push(Ok(Some(delivery.clone())));
                    }
                }
            }
            let rows = current
                .values()
                .filter(|(_, dirty)| *dirty)
                .map(|(delivery, _)| Row::of(delivery))
                .collect::<Result<Vec<_>, _>>()?;
            update_rows!(tx, engine, rows);
            insert_facts!(tx, engine, facts);
            tx.commit().await?;
        });
        Ok(results)
    }

    /// Moves up to `limit` due deliveries of `channel` (`not_before <= now`,
    /// to the microsecond) to `Sending` and returns them: highest priority
    /// first, then oldest `not_before`, then id. One statement.
    pub async fn claim_due(
        &self,
        channel: ChannelKind,
        now: Timestamp,
        limit: usize,
        lease: std::time::Duration,
    ) -> Result<Vec<Delivery>, StorageError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let lease_until = now
            .as_microsecond()
            .saturating_add(i64::try_from(lease.as_micros()).unwrap_or(i64::MAX));
        let metrics = self.database.metrics();
        let _timer = metrics.time("delivery_claim");
        // The record's own JSON changes with the columns, in the same
        // statement: one round trip per claim.
        let updated_at = serde_json::to_value(now)?;
        let updated_at = updated_at.as_str().unwrap_or_default().to_owned();
        let bodies: Vec<String> = with_pool!(write self.database, pool, engine => {
            let claim = match engine {
                Engine::Sqlite => "UPDATE deliveries SET status = 'sending', updated_at_us = $1, \
                    lease_until_us = $5, body = json_set(body, '$.status', 'sending', '$.updated_at', $2) \
                    WHERE id IN (SELECT id FROM deliveries \
                        WHERE status = 'queued' AND channel = $3 AND not_before_us <= $1 \
                        ORDER BY priority, not_before_us, id LIMIT $4) \
                    RETURNING body",
                Engine::Postgres => "UPDATE deliveries SET status = 'sending', updated_at_us = $1, \
                    lease_until_us = $5, body = jsonb_set(jsonb_set(body::jsonb, '{status}', '\"sending\"'), \
                        '{updated_at}', to_jsonb($2::text))::text \
                    WHERE id IN (SELECT id FROM deliveries \
                        WHERE status = 'queued' AND channel = $3 AND not_before_us <= $1 \
                        ORDER BY priority, not_before_us, id LIMIT $4 FOR UPDATE SKIP LOCKED) \
                    RETURNING body",
            };
            sqlx::query_scalar(claim)
                .bind(now.as_microsecond())
                .bind(&updated_at)
                .bind(channel_code(channel))
                .bind(limit)
                .bind(lease_until)
                .fetch_all(pool)
                .await?
        });
        let mut claimed = bodies
            .iter()
            .map(|body| decode(body))
            .collect::<Result<Vec<_>, _>>()?;
        // RETURNING has no order: claim order again.
        claimed.sort_by(|a, b| {
            (priority_code(a.priority), a.not_before, a.id).cmp(&(
                priority_code(b.priority),
                b.not_before,
                b.id,
            ))
        });
        Ok(claimed)
    }

    /// Puts claimed deliveries back to `queued` (due as before, no attempt
    /// counted): those whose claim expired by `now`, or with `every`, all
    /// of them. A claim taken by a build from before claim leases (no
    /// expiry stored) expires `lease` after it was taken. Answers the
    /// channels of what it requeued, one entry per delivery. One statement.
    pub async fn requeue_claims(
        &self,
        now: Timestamp,
        every: bool,
        lease: std::time::Duration,
    ) -> Result<Vec<ChannelKind>, StorageError> {
        let lease_us = i64::try_from(lease.as_micros()).unwrap_or(i64::MAX / 2);
        let updated_at = serde_json::to_value(now)?;
        let updated_at = updated_at.as_str().unwrap_or_default().to_owned();
        let channels: Vec<i16> = with_pool!(write self.database, pool, engine => {
            let requeue = match engine {
                Engine::Sqlite => "UPDATE deliveries SET status = 'queued', updated_at_us = $1, \
                    lease_until_us = NULL, \
                    body = json_set(body, '$.status', 'queued', '$.updated_at', $2) \
                    WHERE status = 'sending' AND ($3 OR COALESCE(lease_until_us, updated_at_us + $4) <= $1) \
                    RETURNING channel",
                Engine::Postgres => "UPDATE deliveries SET status = 'queued', updated_at_us = $1, \
                    lease_until_us = NULL, \
                    body = jsonb_set(jsonb_set(body::jsonb, '{status}', '\"queued\"'), \
                        '{updated_at}', to_jsonb($2::text))::text \
                    WHERE status = 'sending' AND ($3 OR COALESCE(lease_until_us, updated_at_us + $4) <= $1) \
                    RETURNING channel",
            };
            sqlx::query_scalar(requeue)
                .bind(now.as_microsecond())
                .bind(&updated_at)
                .bind(every)
                .bind(lease_us)
                .fetch_all(pool)
                .await?
        });
        Ok(channels.into_iter().filter_map(channel_of).collect())
    }

    /// Whether every claim in the database is this process's: SQLite's
    /// file serves one process, so at start-up every claim found is a dead
    /// one's. On PostgreSQL other replicas hold claims of their own.
    pub fn claims_are_ours_alone(&self) -> bool {
        self.database.engine() == Engine::Sqlite
    }

    /// The ids of deliveries in `status`, in id order, at most `limit`
    /// after `after`, optionally of one channel.
    pub async fn ids_in_status(
        &self,
        status: Status,
        channel: Option<ChannelKind>,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<Uuid>, StorageError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let ids: Vec<String> = with_pool!(self.database, pool => {
            sqlx::query_scalar(
                "SELECT id FROM deliveries WHERE status = $1 AND id > $2 \
                 AND ($3 < 0 OR channel = $3) ORDER BY id LIMIT $4",
            )
            .bind(status.as_str())
            .bind(after.map(|id| id.to_string()).unwrap_or_default())
            .bind(channel.map_or(-1, channel_code))
            .bind(limit)
            .fetch_all(pool)
            .await?
        });
        ids.iter().map(|id| parse_id(id)).collect()
    }

    /// Deliveries in `status` per channel.
    pub async fn count_by_channel(
        &self,
        status: Status,
    ) -> Result<Vec<(ChannelKind, u64)>, StorageError> {
        let rows: Vec<(i16, i64)> = with_pool!(self.database, pool => {
            sqlx::query_as(
                "SELECT channel, COUNT(*) FROM deliveries WHERE status = $1 GROUP BY channel",
            )
            .bind(status.as_str())
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .filter_map(|(code, count)| {
                Some((channel_of(code)?, u64::try_from(count).unwrap_or(0)))
            })
            .collect())
    }

    /// The newest delivery on `channel` whose provider message id is
    /// `provider_id`.
    pub async fn find_by_provider_id(
        &self,
        channel: ChannelKind,
        provider_id: &str,
    ) -> Result<Option<Uuid>, StorageError> {
        let id: Option<String> = with_pool!(self.database, pool => {
            sqlx::query_scalar(
                "SELECT id FROM deliveries WHERE channel = $1 AND provider_message_id = $2 \
                 ORDER BY updated_at_us DESC, id DESC LIMIT 1",
            )
            .bind(channel_code(channel))
            .bind(provider_id)
            .fetch_optional(pool)
            .await?
        });
        id.as_deref().map(parse_id).transpose()
    }

    /// Removes a delivery; the removed one, `None` when there was none.
    pub async fn delete(&self, id: Uuid) -> Result<Option<Delivery>, StorageError> {
        let body: Option<String> = with_pool!(write self.database, pool => {
            sqlx::query_scalar("DELETE FROM deliveries WHERE id = $1 RETURNING body")
                .bind(id.to_string())
                .fetch_optional(pool)
                .await?
        });
        body.as_deref().map(decode).transpose()
    }

    /// Up to `limit` ids of deliveries with more than one attempt logged
    /// and last updated before `cutoff` (attempt-log retention).
    pub async fn long_logs_before(
        &self,
        cutoff: Timestamp,
        limit: usize,
    ) -> Result<Vec<Uuid>, StorageError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let ids: Vec<String> = with_pool!(self.database, pool => {
            sqlx::query_scalar(
                "SELECT id FROM deliveries WHERE attempt_log_len > 1 AND updated_at_us < $1 \
                 ORDER BY updated_at_us LIMIT $2",
            )
            .bind(cutoff.as_microsecond())
            .bind(limit)
            .fetch_all(pool)
            .await?
        });
        ids.iter().map(|id| parse_id(id)).collect()
    }

    /// How many facts wait for analytics.
    pub async fn fact_count(&self) -> Result<u64, StorageError> {
        let count: i64 = with_pool!(self.database, pool => {
            sqlx::query_scalar("SELECT COUNT(*) FROM delivery_facts")
                .fetch_one(pool)
                .await?
        });
        Ok(u64::try_from(count).unwrap_or(0))
    }

    /// Up to `limit` facts, oldest first, with their sequence numbers
    /// (what [`Self::delete_facts`] and `RollupTable::commit` take). A fact whose record does not
    /// decode is returned as `Err` in its place, so the caller can drop it
    /// without blocking the log.
    pub async fn facts(
        &self,
        limit: usize,
    ) -> Result<Vec<(i64, Result<DeliveryFact, String>)>, StorageError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows: Vec<(i64, String)> = with_pool!(self.database, pool => {
            sqlx::query_as("SELECT seq, body FROM delivery_facts ORDER BY seq LIMIT $1")
                .bind(limit)
                .fetch_all(pool)
                .await?
        });
        Ok(rows
            .into_iter()
            .map(|(seq, body)| {
                let fact = serde_json::from_str(&body).map_err(|error| error.to_string());
                (seq, fact)
            })
            .collect())
    }

    /// Removes the facts with these sequence numbers, on their own.
    /// Idempotent: numbers already gone are skipped. Analytics does not
    /// use it: it removes what it counted inside its own commit
    /// (`RollupTable::commit`), so counting and removal cannot come apart.
    pub async fn delete_facts(&self, seqs: &[i64]) -> Result<(), StorageError> {
        if seqs.is_empty() {
            return Ok(());
        }
        let metrics = self.database.metrics();
        let _timer = metrics.time("delivery_facts_delete");
        with_pool!(write self.database, pool, engine => {
            let mut tx = begin_write(metrics, pool, engine).await?;
            delete_facts_in!(tx, engine, seqs);
            tx.commit().await?;
        });
        Ok(())
    }

    /// Removes every fact about `user_id` not counted yet (privacy erase).
    pub async fn delete_facts_of_user(&self, user_id: &str) -> Result<u64, StorageError> {
        let removed = with_pool!(write self.database, pool => {
            sqlx::query("DELETE FROM delivery_facts WHERE user_id = $1")
                .bind(user_id)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(removed)
    }
}

/// `($1,$2,…),(…)`: `rows` tuples of `columns` placeholders.
pub(super) fn placeholders(rows: usize, columns: usize) -> String {
    let mut sql = String::with_capacity(rows * columns * 4);
    for row in 0..rows {
        if row > 0 {
            sql.push(',');
        }
        sql.push('(');
        for column in 0..columns {
            if column > 0 {
                sql.push(',');
            }
            sql.push('$');
            sql.push_str(&(row * columns + column + 1).to_string());
        }
        sql.push(')');
    }
    sql
}

/// Rows per multi-row statement: far below either engine's limit on
/// parameters (SQLite 32,766; PostgreSQL 65,535) at 11 columns.
pub(super) const ROWS_PER_STATEMENT: usize = 500;

fn decode(body: &str) -> Result<Delivery, StorageError> {
    serde_json::from_str(body)
        .map_err(|error| StorageError::Corrupt(format!("a delivery: {error}")))
}

fn parse_id(id: &str) -> Result<Uuid, StorageError> {
    Uuid::parse_str(id).map_err(|error| StorageError::Corrupt(format!("delivery id {id}: {error}")))
}

/// Stored channel codes: fixed here, independent of `ChannelKind::ALL`'s
/// order, because they are in rows.
fn channel_code(channel: ChannelKind) -> i16 {
    match channel {
        ChannelKind::InApp => 0,
        ChannelKind::Email => 1,
        ChannelKind::Apns => 2,
        ChannelKind::Fcm => 3,
        ChannelKind::WebPush => 4,
        ChannelKind::Sms => 5,
        ChannelKind::Webhook => 6,
    }
}

fn channel_of(code: i16) -> Option<ChannelKind> {
    ChannelKind::ALL
        .into_iter()
        .find(|channel| channel_code(*channel) == code)
}

/// Ascending is claim order: high first.
fn priority_code(priority: Priority) -> i16 {
    match priority {
        Priority::High => 0,
        Priority::Normal => 1,
        Priority::Low => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_codes_round_trip() {
        for channel in ChannelKind::ALL {
            assert_eq!(channel_of(channel_code(channel)), Some(channel));
        }
    }
}
