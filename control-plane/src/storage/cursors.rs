//! Named positions in the event feed (table `cursors`, migration 0006):
//! the engine's cursor, `events`, is one row.
//!
//! # Promises
//!
//! * [`CursorTable::store`] has committed (durably) when it returns: the
//!   engine moves its cursor only after the events before it were planned,
//!   so a position read back after a crash or a restart never skips an
//!   unplanned event.
//! * A name never stored is `None`: start of the feed.
//! * One row per name, so feed partitions under leases (issue 13) can
//!   each keep their own without a schema change.

use super::StorageError;
use super::database::{Database, with_pool};
use crate::event::Cursor;

/// The `cursors` table. Cheap to clone.
#[derive(Debug, Clone)]
pub struct CursorTable {
    database: Database,
}

impl CursorTable {
    pub(super) fn new(database: Database) -> Self {
        CursorTable { database }
    }

    /// The position stored under `name`, `None` when there is none.
    pub async fn load(&self, name: &str) -> Result<Option<Cursor>, StorageError> {
        let _timer = self.database.metrics().time("cursor_load");
        let position: Option<i64> = with_pool!(self.database, pool => {
            sqlx::query_scalar("SELECT position FROM cursors WHERE name = $1")
                .bind(name)
                .fetch_optional(pool)
                .await?
        });
        position
            .map(|position| {
                u64::try_from(position)
                    .map(Cursor)
                    .map_err(|_| StorageError::Corrupt(format!("cursor {name:?} at {position}")))
            })
            .transpose()
    }

    /// Stores `position` under `name`, whatever was there.
    pub async fn store(&self, name: &str, position: Cursor) -> Result<(), StorageError> {
        let _timer = self.database.metrics().time("cursor_store");
        let position = i64::try_from(position.0).map_err(|_| {
            StorageError::Corrupt(format!("feed position {} is out of range", position.0))
        })?;
        with_pool!(self.database, pool => {
            sqlx::query(
                "INSERT INTO cursors (name, position) VALUES ($1, $2) \
                 ON CONFLICT (name) DO UPDATE SET position = excluded.position",
            )
            .bind(name)
            .bind(position)
            .execute(pool)
            .await?;
        });
        Ok(())
    }
}
