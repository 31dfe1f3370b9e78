//! Delayed rule triggers in SQL: table `pending_triggers` (migration
//! 0006), one row per rule and event, pending until it fires or is
//! cancelled, then kept as that trigger's finished marker.
//!
//! # Promises
//!
//! * **Once per rule and event.** [`PendingTable::schedule`] is one insert
//!   that conflicts with any row of the id, pending or finished, so a
//!   replayed event schedules nothing again, also with replicas racing.
//! * **Finished once.** [`PendingTable::finish`] turns a pending row into
//!   its marker in one statement guarded by `state = 0`: of two callers
//!   (a fire and a cancel, or two replicas) exactly one gets `true`.
//! * **Nothing about the user stays in a marker**: finishing clears the
//!   row's user and record; what is left names a rule and an event id.
//! * Every write has committed (durably) when it returns; a record that
//!   no longer decodes is [`StorageError::Corrupt`].

use jiff::Timestamp;

use super::StorageError;
use super::database::{Database, begin_write, with_pool};
use super::tombstones::erased_among;
use crate::rules::Pending;

/// How a trigger finished (the `state` column; 0 is pending).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    Fired = 1,
    Cancelled = 2,
}

/// The `pending_triggers` table. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PendingTable {
    database: Database,
}

impl PendingTable {
    pub(super) fn new(database: Database) -> Self {
        PendingTable { database }
    }

    /// Stores `pending` unless a trigger of its id is pending or finished,
    /// or its user is erased; `false` (nothing changed) then.
    pub async fn schedule(&self, pending: &Pending) -> Result<bool, StorageError> {
        let _timer = self.database.metrics().time("pending_schedule");
        let record = serde_json::to_string(pending)?;
        let metrics = self.database.metrics();
        let inserted = with_pool!(write self.database, pool, engine => {
            let mut tx = begin_write(metrics, pool, engine).await?;
            // Nothing is scheduled for an erased user (see `tombstones`).
            if !erased_among!(tx, engine, [pending.user_id.as_str()]).is_empty() {
                tx.rollback().await?;
                return Ok(false);
            }
            let inserted = sqlx::query(
                "INSERT INTO pending_triggers \
                 (id, rule, user_id, scheduled_at, due_at, record, state) \
                 VALUES ($1, $2, $3, $4, $5, $6, 0) ON CONFLICT (id) DO NOTHING",
            )
            .bind(pending.id())
            .bind(&pending.rule)
            .bind(&pending.user_id)
            .bind(pending.scheduled_at.as_millisecond())
            .bind(pending.due_at.as_millisecond())
            .bind(record)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            tx.commit().await?;
            inserted
        });
        Ok(inserted == 1)
    }

    /// `user_id`'s pending triggers whose window holds `at`
    /// (`scheduled_at <= at <= due_at`): what an `unless` event at `at`
    /// may cancel.
    pub async fn open_at(
        &self,
        user_id: &str,
        at: Timestamp,
    ) -> Result<Vec<Pending>, StorageError> {
        let at = at.as_millisecond();
        let records: Vec<String> = with_pool!(self.database, pool => {
            sqlx::query_scalar(
                "SELECT record FROM pending_triggers WHERE state = 0 AND user_id = $1 \
                 AND scheduled_at <= $2 AND due_at >= $2 ORDER BY id",
            )
            .bind(user_id)
            .bind(at)
            .fetch_all(pool)
            .await?
        });
        records.iter().map(|record| decode(record)).collect()
    }

    /// Up to `limit` pending triggers due at `now`, earliest first.
    pub async fn due(&self, now: Timestamp, limit: usize) -> Result<Vec<Pending>, StorageError> {
        let _timer = self.database.metrics().time("pending_due");
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let records: Vec<String> = with_pool!(self.database, pool => {
            sqlx::query_scalar(
                "SELECT record FROM pending_triggers WHERE state = 0 AND due_at <= $1 \
                 ORDER BY due_at, id LIMIT $2",
            )
            .bind(now.as_millisecond())
            .bind(limit)
            .fetch_all(pool)
            .await?
        });
        records.iter().map(|record| decode(record)).collect()
    }

    /// Turns the pending trigger `id` into its marker (`how`, at `at`);
    /// `false` when it was not pending (finished meanwhile, or erased).
    pub async fn finish(&self, id: &str, how: Finish, at: Timestamp) -> Result<bool, StorageError> {
        let _timer = self.database.metrics().time("pending_finish");
        let changed = with_pool!(write self.database, pool => {
            sqlx::query(
                "UPDATE pending_triggers SET state = $2, finished_at = $3, user_id = NULL, \
                 record = NULL WHERE id = $1 AND state = 0",
            )
            .bind(id)
            .bind(how as i16)
            .bind(at.as_millisecond())
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(changed == 1)
    }

    /// The trigger `id`, if pending.
    pub async fn get(&self, id: &str) -> Result<Option<Pending>, StorageError> {
        let record: Option<String> = with_pool!(self.database, pool => {
            sqlx::query_scalar("SELECT record FROM pending_triggers WHERE id = $1 AND state = 0")
                .bind(id)
                .fetch_optional(pool)
                .await?
        });
        record.as_deref().map(decode).transpose()
    }

    /// How many triggers are pending.
    pub async fn count(&self) -> Result<usize, StorageError> {
        let count: i64 = with_pool!(self.database, pool => {
            sqlx::query_scalar("SELECT COUNT(*) FROM pending_triggers WHERE state = 0")
                .fetch_one(pool)
                .await?
        });
        Ok(usize::try_from(count).unwrap_or(0))
    }

    /// Deletes the markers of triggers finished before `before`; returns
    /// how many.
    pub async fn prune_finished(&self, before: Timestamp) -> Result<usize, StorageError> {
        let _timer = self.database.metrics().time("pending_prune");
        let removed = with_pool!(write self.database, pool => {
            sqlx::query("DELETE FROM pending_triggers WHERE state <> 0 AND finished_at < $1")
                .bind(before.as_millisecond())
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(usize::try_from(removed).unwrap_or(usize::MAX))
    }

    /// `user_id`'s pending triggers, by id.
    pub async fn for_user(&self, user_id: &str) -> Result<Vec<Pending>, StorageError> {
        let records: Vec<String> = with_pool!(self.database, pool => {
            sqlx::query_scalar(
                "SELECT record FROM pending_triggers WHERE state = 0 AND user_id = $1 ORDER BY id",
            )
            .bind(user_id)
            .fetch_all(pool)
            .await?
        });
        records.iter().map(|record| decode(record)).collect()
    }

    /// Deletes `user_id`'s pending triggers; returns how many.
    pub async fn erase_user(&self, user_id: &str) -> Result<usize, StorageError> {
        let _timer = self.database.metrics().time("pending_erase_user");
        let removed = with_pool!(write self.database, pool => {
            sqlx::query("DELETE FROM pending_triggers WHERE state = 0 AND user_id = $1")
                .bind(user_id)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(usize::try_from(removed).unwrap_or(usize::MAX))
    }
}

fn decode(record: &str) -> Result<Pending, StorageError> {
    serde_json::from_str(record)
        .map_err(|error| StorageError::Corrupt(format!("pending rule trigger: {error}")))
}
