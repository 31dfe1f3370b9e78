//! Topic subscriptions in SQL (table `topic_subscriptions`, migration
//! 0017): one row per topic and user. The fan-out of a broadcast walks a
//! topic's rows in user id order through the primary key; a user's topics
//! (and their erasure) go through the index on `user_id`.
//!
//! Subscribing checks the erasure tombstone in the same transaction (see
//! `tombstones`): an erased user is never subscribed again.

use jiff::Timestamp;

use super::StorageError;
use super::database::{Database, begin_write, with_pool};
use super::tombstones::erased_among;
use crate::broadcasts::Subscription;

/// What [`TopicTable::subscribe`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subscribed {
    New,
    Already,
    /// The user is erased: nothing was stored.
    UserErased,
}

#[derive(Clone, Debug)]
pub struct TopicTable {
    database: Database,
}

impl TopicTable {
    pub(super) fn new(database: Database) -> Self {
        TopicTable { database }
    }

    /// Subscribes `user_id` to `topic` (names checked by the caller).
    pub async fn subscribe(
        &self,
        topic: &str,
        user_id: &str,
        now: Timestamp,
    ) -> Result<Subscribed, StorageError> {
        let metrics = self.database.metrics();
        let subscribed = with_pool!(write self.database, pool, engine => {
            let mut tx = begin_write(metrics, pool, engine).await?;
            let erased = erased_among!(tx, engine, [user_id]);
            if erased.contains(user_id) {
                tx.commit().await?;
                return Ok(Subscribed::UserErased);
            }
            let inserted = sqlx::query(
                "INSERT INTO topic_subscriptions (topic, user_id, created_at_ms) \
                 VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            )
            .bind(topic)
            .bind(user_id)
            .bind(now.as_millisecond())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            tx.commit().await?;
            if inserted == 1 { Subscribed::New } else { Subscribed::Already }
        });
        Ok(subscribed)
    }

    /// Takes `user_id` off `topic`; `false` when they were not on it.
    pub async fn unsubscribe(&self, topic: &str, user_id: &str) -> Result<bool, StorageError> {
        let removed = with_pool!(write self.database, pool => {
            sqlx::query("DELETE FROM topic_subscriptions WHERE topic = $1 AND user_id = $2")
                .bind(topic)
                .bind(user_id)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(removed == 1)
    }

    /// The topics `user_id` follows, by name.
    pub async fn of_user(&self, user_id: &str) -> Result<Vec<Subscription>, StorageError> {
        let rows: Vec<(String, i64)> = with_pool!(self.database, pool => {
            sqlx::query_as(
                "SELECT topic, created_at_ms FROM topic_subscriptions \
                 WHERE user_id = $1 ORDER BY topic",
            )
            .bind(user_id)
            .fetch_all(pool)
            .await?
        });
        rows.into_iter()
            .map(|(topic, at)| {
                Ok(Subscription {
                    topic,
                    user_id: user_id.to_owned(),
                    subscribed_at: time(at)?,
                })
            })
            .collect()
    }

    /// Up to `limit` subscribers of `topic` with ids after `after`, in id
    /// order: a page of a fan-out or of a listing.
    pub async fn subscribers_after(
        &self,
        topic: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Subscription>, StorageError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows: Vec<(String, i64)> = with_pool!(self.database, pool => {
            sqlx::query_as(
                "SELECT user_id, created_at_ms FROM topic_subscriptions \
                 WHERE topic = $1 AND user_id > $2 ORDER BY user_id LIMIT $3",
            )
            .bind(topic)
            .bind(after.unwrap_or(""))
            .bind(limit)
            .fetch_all(pool)
            .await?
        });
        rows.into_iter()
            .map(|(user_id, at)| {
                Ok(Subscription {
                    topic: topic.to_owned(),
                    user_id,
                    subscribed_at: time(at)?,
                })
            })
            .collect()
    }

    /// How many users follow `topic`.
    pub async fn count(&self, topic: &str) -> Result<u64, StorageError> {
        let count: i64 = with_pool!(self.database, pool => {
            sqlx::query_scalar("SELECT COUNT(*) FROM topic_subscriptions WHERE topic = $1")
                .bind(topic)
                .fetch_one(pool)
                .await?
        });
        Ok(u64::try_from(count).unwrap_or(0))
    }

    /// Removes every subscription of `user_id` (privacy erase); returns
    /// how many.
    pub async fn erase_user(&self, user_id: &str) -> Result<usize, StorageError> {
        let removed = with_pool!(write self.database, pool => {
            sqlx::query("DELETE FROM topic_subscriptions WHERE user_id = $1")
                .bind(user_id)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(usize::try_from(removed).unwrap_or(usize::MAX))
    }
}

fn time(millis: i64) -> Result<Timestamp, StorageError> {
    Timestamp::from_millisecond(millis)
        .map_err(|error| StorageError::Corrupt(format!("a subscription's time: {error}")))
}
