//! Items held for digests in SQL: table `digest_items` (migration 0006;
//! `digest_group` from 0016), one row per item, keyed by (due time, user,
//! type, channel, notification id), so the due digests are a range scan
//! from the start of the key and a digest's items sit next to each other
//! (a notification is in one group, so the group needs no place in the
//! key; it splits a (time, user, type, channel) range into digests).
//!
//! # Promises
//!
//! * [`DigestTable::add`] has committed (durably) when it returns. A
//!   notification is folded into at most one digest per channel, ever: the
//!   add records its fold (`digest_folds`) in the same transaction and
//!   adds nothing when the fold was there, so a notification planned again
//!   (an idempotent resend, a replayed event) after its digest was sent
//!   is not in the next one. Folds go with the user and, by age, with the
//!   notifications' retention.
//! * [`DigestTable::due`] returns whole digests (a limit never splits
//!   one), the earliest due first; it only reads, so a crash before
//!   [`DigestTable::remove`] returns the same digest again (firing is at
//!   least once; the engine's notification is idempotent by the digest's
//!   source id).
//! * [`DigestTable::remove`] deletes exactly the items of the digest that
//!   was read: an item added to the same digest in between is not lost
//!   unseen by a delete of the whole group.
//! * A row that no longer decodes is [`StorageError::Corrupt`].

use jiff::Timestamp;

use super::StorageError;
use super::database::{Database, begin_write, with_pool};
use super::tombstones::erased_among;
use crate::channels::ChannelKind;
use crate::digest::{DigestItem, DigestKey, DueDigest};

/// The `digest_items` table. Cheap to clone.
#[derive(Debug, Clone)]
pub struct DigestTable {
    database: Database,
}

type Row = (i64, String, String, String, String, String);

impl DigestTable {
    pub(super) fn new(database: Database) -> Self {
        DigestTable { database }
    }

    /// Holds `item` for the digest `key`, unless its notification was
    /// folded into a digest on this channel before (even one already
    /// sent) or the user is erased; `false` then.
    pub async fn add(&self, key: &DigestKey, item: &DigestItem) -> Result<bool, StorageError> {
        let _timer = self.database.metrics().time("digest_add");
        let document = serde_json::to_string(item)?;
        let metrics = self.database.metrics();
        with_pool!(write self.database, pool, engine => {
            let mut tx = begin_write(metrics, pool, engine).await?;
            // Nothing is held for an erased user (see `tombstones`).
            if !erased_among!(tx, engine, [key.user_id.as_str()]).is_empty() {
                tx.rollback().await?;
                return Ok(false);
            }
            let folded = sqlx::query(
                "INSERT INTO digest_folds (notification_id, channel, user_id, due_at) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (notification_id, channel) DO NOTHING",
            )
            .bind(&item.notification_id)
            .bind(key.channel.as_str())
            .bind(&key.user_id)
            .bind(key.due_at.as_millisecond())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if folded == 0 {
                tx.rollback().await?;
                return Ok(false);
            }
            sqlx::query(
                "INSERT INTO digest_items \
                 (due_at, user_id, notification_type, channel, notification_id, item, digest_group) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(key.due_at.as_millisecond())
            .bind(&key.user_id)
            .bind(&key.notification_type)
            .bind(key.channel.as_str())
            .bind(&item.notification_id)
            .bind(document)
            .bind(&key.group)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        });
        Ok(true)
    }

    /// Forgets the folds of digests due before `cutoff` (the notifications'
    /// retention: a fold is never older than its notification); returns
    /// how many.
    pub async fn prune_folds(&self, cutoff: Timestamp) -> Result<u64, StorageError> {
        let _timer = self.database.metrics().time("digest_prune_folds");
        let removed = with_pool!(write self.database, pool => {
            sqlx::query("DELETE FROM digest_folds WHERE due_at < $1")
                .bind(cutoff.as_millisecond())
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(removed)
    }

    /// Up to `limit` digests due at `now`, earliest first, each with all
    /// its items (in key order; the caller orders them for display).
    pub async fn due(&self, now: Timestamp, limit: usize) -> Result<Vec<DueDigest>, StorageError> {
        let _timer = self.database.metrics().time("digest_due");
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // The groups first (a range of the key, limited), then their
        // items: a limit on items could split a digest.
        let rows: Vec<Row> = with_pool!(self.database, pool => {
            sqlx::query_as(
                "SELECT i.due_at, i.user_id, i.notification_type, i.channel, i.digest_group, i.item \
                 FROM digest_items i JOIN ( \
                     SELECT due_at, user_id, notification_type, channel, digest_group \
                     FROM digest_items WHERE due_at <= $1 \
                     GROUP BY due_at, user_id, notification_type, channel, digest_group \
                     ORDER BY due_at, user_id, notification_type, channel, digest_group LIMIT $2 \
                 ) g ON i.due_at = g.due_at AND i.user_id = g.user_id \
                     AND i.notification_type = g.notification_type AND i.channel = g.channel \
                     AND i.digest_group = g.digest_group \
                 ORDER BY i.due_at, i.user_id, i.notification_type, i.channel, i.digest_group, \
                     i.notification_id",
            )
            .bind(now.as_millisecond())
            .bind(limit)
            .fetch_all(pool)
            .await?
        });
        let mut groups: Vec<DueDigest> = Vec::new();
        for (due_at, user_id, notification_type, channel, group, document) in rows {
            let key = DigestKey {
                due_at: Timestamp::from_millisecond(due_at)
                    .map_err(|error| StorageError::Corrupt(format!("digest due at: {error}")))?,
                user_id,
                notification_type,
                channel: parse_channel(&channel)?,
                group,
            };
            let item: DigestItem = serde_json::from_str(&document).map_err(|error| {
                StorageError::Corrupt(format!("digest item of {:?}: {error}", key.source_id()))
            })?;
            match groups.last_mut() {
                Some(group) if group.key == key => group.items.push(item),
                _ => groups.push(DueDigest {
                    key,
                    items: vec![item],
                }),
            }
        }
        Ok(groups)
    }

    /// Forgets the items of `digest` (it was enqueued), in one transaction.
    pub async fn remove(&self, digest: &DueDigest) -> Result<(), StorageError> {
        let _timer = self.database.metrics().time("digest_remove");
        let key = &digest.key;
        with_pool!(write self.database, pool, engine => {
            let mut tx = begin_write(self.database.metrics(), pool, engine).await?;
            for item in &digest.items {
                sqlx::query(
                    "DELETE FROM digest_items WHERE due_at = $1 AND user_id = $2 \
                     AND notification_type = $3 AND channel = $4 AND notification_id = $5",
                )
                .bind(key.due_at.as_millisecond())
                .bind(&key.user_id)
                .bind(&key.notification_type)
                .bind(key.channel.as_str())
                .bind(&item.notification_id)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Deletes every item held for `user_id`; returns how many.
    pub async fn erase_user(&self, user_id: &str) -> Result<usize, StorageError> {
        let _timer = self.database.metrics().time("digest_erase_user");
        let metrics = self.database.metrics();
        let removed = with_pool!(write self.database, pool, engine => {
            let mut tx = begin_write(metrics, pool, engine).await?;
            let removed = sqlx::query("DELETE FROM digest_items WHERE user_id = $1")
                .bind(user_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            sqlx::query("DELETE FROM digest_folds WHERE user_id = $1")
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            removed
        });
        Ok(usize::try_from(removed).unwrap_or(usize::MAX))
    }

    /// Items held now (for tests and the queue-depth view).
    pub async fn count(&self) -> Result<usize, StorageError> {
        let count: i64 = with_pool!(self.database, pool => {
            sqlx::query_scalar("SELECT COUNT(*) FROM digest_items")
                .fetch_one(pool)
                .await?
        });
        Ok(usize::try_from(count).unwrap_or(0))
    }
}

fn parse_channel(name: &str) -> Result<ChannelKind, StorageError> {
    ChannelKind::parse(name)
        .ok_or_else(|| StorageError::Corrupt(format!("digest channel {name:?}")))
}
