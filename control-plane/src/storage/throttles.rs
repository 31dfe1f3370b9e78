//! Throttle decisions in SQL (table `notification_throttles`, migration
//! 0015), kept beside the notifications they are about. The rules are
//! [`crate::throttle`]'s; this module keeps them exact across replicas.
//!
//! * **One transaction per decision**, which on PostgreSQL first takes a
//!   transaction-scoped advisory lock on the user: two replicas deciding
//!   for one user (a feed partition changing hands) take turns, so the
//!   count each reads includes the other's. SQLite has one writer.
//! * **A decision is read back before it is made**: the notification's
//!   row for the scope, so a replay gets the first answer.
//! * The window's count reads at most `limit` rows through a partial index
//!   on the `sent` rows: a busy user costs the same as a quiet one.

use jiff::Timestamp;
use sha2::{Digest, Sha256};

use super::StorageError;
use super::database::{Engine, begin_write, with_pool};
use super::notifications::NotificationStore;
use crate::throttle::{Check, Decision, Recorded, ThrottleOver};

/// The advisory lock key of a user's throttle decisions: 8 bytes of a
/// SHA-256 of a fixed prefix and the user id (a different key space from
/// the other advisory locks, which are constants).
fn user_lock(user_id: &str) -> i64 {
    let digest = Sha256::new()
        .chain_update(b"nudge-throttle\0")
        .chain_update(user_id.as_bytes())
        .finalize();
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(bytes)
}

impl NotificationStore {
    /// Decides, once, whether `notification_id` of `user_id` goes out now
    /// under `check` (see [`crate::throttle`]), and records it: let
    /// through, it counts in every scope of `check.counted_in`; over the
    /// limit, its outcome is recorded in the limit's scope. A notification
    /// decided before gets that decision again.
    pub async fn throttle(
        &self,
        user_id: &str,
        notification_id: &str,
        check: &Check,
        now: Timestamp,
    ) -> Result<Decision, StorageError> {
        let (decision, _first) = self.decide(user_id, notification_id, check, now).await?;
        Ok(decision)
    }

    /// [`Self::throttle`], also saying whether the decision was made now
    /// (`true`) or read back from an earlier plan (`false`): metrics count
    /// each decision once.
    pub async fn decide(
        &self,
        user_id: &str,
        notification_id: &str,
        check: &Check,
        now: Timestamp,
    ) -> Result<(Decision, bool), StorageError> {
        let metrics = self.database.metrics();
        let _timer = metrics.time("throttle_decide");
        let decision = with_pool!(write self.database, pool, engine => {
            let mut tx = begin_write(metrics, pool, engine).await?;
            if engine == Engine::Postgres {
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(user_lock(user_id))
                    .execute(&mut *tx)
                    .await?;
            }
            let before: Option<(String, Option<i64>)> = sqlx::query_as(
                "SELECT outcome, due_at_ms FROM notification_throttles \
                 WHERE notification_id = $1 ORDER BY scope LIMIT 1",
            )
            .bind(notification_id)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some((outcome, due_at)) = before {
                tx.commit().await?;
                return Ok((decoded(&outcome, due_at)?, false));
            }
            // Over the limit: the `limit` newest counted in the window
            // fill it; the oldest of them leaves it first.
            let mut over = None;
            if let Some(limit) = &check.limit {
                let since = now
                    .checked_sub(limit.window)
                    .unwrap_or(Timestamp::MIN)
                    .as_millisecond();
                let counted: Vec<i64> = sqlx::query_scalar(
                    "SELECT at_ms FROM notification_throttles \
                     WHERE user_id = $1 AND scope = $2 AND outcome = 'sent' AND at_ms > $3 \
                     ORDER BY at_ms DESC LIMIT $4",
                )
                .bind(user_id)
                .bind(&limit.scope)
                .bind(since)
                .bind(i64::from(limit.limit))
                .fetch_all(&mut *tx)
                .await?;
                if counted.len() >= usize::try_from(limit.limit).unwrap_or(usize::MAX) {
                    let oldest = counted.iter().copied().min().unwrap_or(since);
                    let frees = Timestamp::from_millisecond(oldest)
                        .ok()
                        .and_then(|at| at.checked_add(limit.window).ok())
                        .unwrap_or(now);
                    over = Some(match limit.over {
                        ThrottleOver::Drop => Decision::Dropped,
                        ThrottleOver::Digest => Decision::Digest { at: frees.max(now) },
                    });
                }
            }
            let (decision, scopes) = match over {
                Some(decision) => {
                    let scope = check.limit.as_ref().map(|l| l.scope.clone()).unwrap_or_default();
                    (decision, vec![scope])
                }
                None => (Decision::Sent, check.counted_in.clone()),
            };
            let due_at = match decision {
                Decision::Digest { at } => Some(at.as_millisecond()),
                _ => None,
            };
            for scope in &scopes {
                sqlx::query(
                    "INSERT INTO notification_throttles \
                     (notification_id, scope, user_id, at_ms, outcome, due_at_ms) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                )
                .bind(notification_id)
                .bind(scope)
                .bind(user_id)
                .bind(now.as_millisecond())
                .bind(decision.outcome())
                .bind(due_at)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            decision
        });
        Ok((decision, true))
    }

    /// The throttle decisions recorded for a notification, by scope.
    pub async fn throttle_decisions(
        &self,
        notification_id: &str,
    ) -> Result<Vec<Recorded>, StorageError> {
        let rows: Vec<(String, String, i64, Option<i64>)> = with_pool!(self.database, pool => {
            sqlx::query_as(
                "SELECT scope, outcome, at_ms, due_at_ms FROM notification_throttles \
                 WHERE notification_id = $1 ORDER BY scope",
            )
            .bind(notification_id)
            .fetch_all(pool)
            .await?
        });
        rows.into_iter()
            .map(|(scope, outcome, at, due_at)| {
                Ok(Recorded {
                    scope,
                    outcome,
                    at: time(at)?,
                    digest_at: due_at.map(time).transpose()?,
                })
            })
            .collect()
    }

    /// Forgets decisions made before `cutoff` (older than any window);
    /// returns how many.
    pub async fn prune_throttle_decisions(&self, cutoff: Timestamp) -> Result<u64, StorageError> {
        let pruned = with_pool!(write self.database, pool => {
            sqlx::query("DELETE FROM notification_throttles WHERE at_ms < $1")
                .bind(cutoff.as_millisecond())
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(pruned)
    }
}

fn time(millis: i64) -> Result<Timestamp, StorageError> {
    Timestamp::from_millisecond(millis)
        .map_err(|error| StorageError::Corrupt(format!("a throttle decision's time: {error}")))
}

/// A recorded outcome as the decision it was.
fn decoded(outcome: &str, due_at: Option<i64>) -> Result<Decision, StorageError> {
    match (outcome, due_at) {
        ("sent", _) => Ok(Decision::Sent),
        ("dropped", _) => Ok(Decision::Dropped),
        ("digest", Some(at)) => Ok(Decision::Digest { at: time(at)? }),
        _ => Err(StorageError::Corrupt(format!(
            "a throttle decision {outcome:?} (digest time {due_at:?})"
        ))),
    }
}
