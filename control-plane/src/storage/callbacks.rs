//! The message ids of provider callbacks already taken (table
//! `callback_ids`, migration 0011), shared by every replica on the
//! database: how a replayed or resent callback is recognised.
//!
//! # Promises
//!
//! * **One taker per id.** [`CallbackIdTable::claim`] is one `INSERT … ON
//!   CONFLICT DO NOTHING`: of any number of callers with the same source
//!   and id, on any replicas, exactly one gets `true`, and a row once
//!   committed answers `false` to every later claim until it is pruned.
//! * **Kept as long as it matters.** A row is kept until its
//!   `expires_at` (the callback's signed time plus the tolerance, after
//!   which the timestamp check refuses the callback anyway) has passed;
//!   [`CallbackIdTable::prune`] deletes only rows expired before the
//!   cutoff it is given.
//! * **A claim can be given back** ([`CallbackIdTable::release`]) when
//!   applying the callback failed, so the provider's resend is applied
//!   instead of being taken for a duplicate.

use jiff::Timestamp;

use super::StorageError;
use super::database::{Database, with_pool};

/// The `callback_ids` table. Cheap to clone.
#[derive(Debug, Clone)]
pub struct CallbackIdTable {
    database: Database,
}

impl CallbackIdTable {
    pub(super) fn new(database: Database) -> Self {
        CallbackIdTable { database }
    }

    /// Takes `id` of `source` (e.g. `email`) until `expires_at`: `true`
    /// when nobody took it before, `false` for a duplicate.
    pub async fn claim(
        &self,
        source: &str,
        id: &str,
        expires_at: Timestamp,
    ) -> Result<bool, StorageError> {
        let _timer = self.database.metrics().time("callback_id_claim");
        let inserted = with_pool!(write self.database, pool => {
            sqlx::query(
                "INSERT INTO callback_ids (source, id, expires_at_ms) VALUES ($1, $2, $3) \
                 ON CONFLICT (source, id) DO NOTHING",
            )
            .bind(source)
            .bind(id)
            .bind(expires_at.as_millisecond())
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(inserted == 1)
    }

    /// Gives `id` of `source` back: its next claim succeeds.
    pub async fn release(&self, source: &str, id: &str) -> Result<(), StorageError> {
        let _timer = self.database.metrics().time("callback_id_release");
        with_pool!(write self.database, pool => {
            sqlx::query("DELETE FROM callback_ids WHERE source = $1 AND id = $2")
                .bind(source)
                .bind(id)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Deletes the ids that expired before `cutoff`; how many.
    pub async fn prune(&self, cutoff: Timestamp) -> Result<u64, StorageError> {
        let _timer = self.database.metrics().time("callback_id_prune");
        let removed = with_pool!(write self.database, pool => {
            sqlx::query("DELETE FROM callback_ids WHERE expires_at_ms < $1")
                .bind(cutoff.as_millisecond())
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(removed)
    }
}
