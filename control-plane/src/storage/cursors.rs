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
//! * One row per name: each feed partition keeps its own (`feed/NN`).
//! * **Only a lease holder moves a partition's cursor.**
//!   [`CursorTable::advance_held`] moves a cursor only while the caller
//!   holds the lease of the same name (checked in the same statement, by
//!   the database's clock), and never backwards: a replica that lost a
//!   partition mid-page cannot undo the progress of the one that took it
//!   over.

use std::collections::HashMap;

use super::StorageError;
use super::database::{Database, with_pool};
use super::leases::now_sql;
use super::sql_text::dynamic;
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
        with_pool!(write self.database, pool => {
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

    /// The positions stored under `names`; a name never stored is absent.
    pub async fn load_many(
        &self,
        names: &[String],
    ) -> Result<HashMap<String, Cursor>, StorageError> {
        if names.is_empty() {
            return Ok(HashMap::new());
        }
        let _timer = self.database.metrics().time("cursor_load");
        let placeholders = placeholders(names.len(), 1);
        let sql = format!("SELECT name, position FROM cursors WHERE name IN ({placeholders})");
        let rows: Vec<(String, i64)> = with_pool!(self.database, pool, engine => {
            let mut query = sqlx::query_as(dynamic(engine, sql.clone()));
            for name in names {
                query = query.bind(name);
            }
            query.fetch_all(pool).await?
        });
        rows.into_iter()
            .map(|(name, position)| {
                let cursor = u64::try_from(position)
                    .map(Cursor)
                    .map_err(|_| StorageError::Corrupt(format!("cursor {name:?} at {position}")))?;
                Ok((name, cursor))
            })
            .collect()
    }

    /// Moves each of `names` forward to `position`, where `holder` holds
    /// the lease of the same name; answers the names it may still move
    /// (held), whether or not they were already there. One statement.
    pub async fn advance_held(
        &self,
        names: &[String],
        position: Cursor,
        holder: &str,
    ) -> Result<Vec<String>, StorageError> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let _timer = self.database.metrics().time("cursor_store");
        let position = i64::try_from(position.0).map_err(|_| {
            StorageError::Corrupt(format!("feed position {} is out of range", position.0))
        })?;
        let placeholders = placeholders(names.len(), 3);
        let held: Vec<String> = with_pool!(write self.database, pool, engine => {
            // Every held row is written (the CASE keeps a cursor that is
            // ahead), so RETURNING names exactly the held ones.
            let sql = format!(
                "INSERT INTO cursors (name, position) \
                 SELECT name, $1 FROM leases WHERE holder = $2 AND expires_at_us > {} \
                 AND name IN ({placeholders}) \
                 ON CONFLICT (name) DO UPDATE SET position = CASE \
                 WHEN cursors.position < excluded.position THEN excluded.position \
                 ELSE cursors.position END \
                 RETURNING name",
                now_sql(engine)
            );
            let mut query = sqlx::query_scalar(dynamic(engine, sql))
                .bind(position)
                .bind(holder);
            for name in names {
                query = query.bind(name);
            }
            query.fetch_all(pool).await?
        });
        Ok(held)
    }
}

/// `$first, $first+1, …`: `count` placeholders.
fn placeholders(count: usize, first: usize) -> String {
    (first..first + count)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}
