//! Users' notification preferences in SQL: table `preferences` (migration
//! 0002), one JSON document ([`UserPreferences`]) per user who changed
//! anything.
//!
//! # Promises
//!
//! * A user without a row is `None` from [`PreferenceTable::load`]: what
//!   that means (the operator's defaults) is the caller's business.
//! * Every write has committed (durably) when it returns.
//! * [`PreferenceTable::swap`] is a compare-and-swap on the row's
//!   `version`, which every write increments: it writes only if nobody
//!   wrote since the caller's `load`, so a read-change-write loop over it
//!   never loses a concurrent change (replicas included).
//! * A stored document that no longer decodes is
//!   [`StorageError::Corrupt`], never silently the defaults.

use jiff::Timestamp;

use super::StorageError;
use super::database::{Database, with_pool};
use crate::preferences::UserPreferences;

/// The `preferences` table. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PreferenceTable {
    database: Database,
}

/// A user's stored document and the version it was read at (for
/// [`PreferenceTable::swap`]).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredPreferences {
    pub preferences: UserPreferences,
    pub version: i64,
}

impl PreferenceTable {
    pub(super) fn new(database: Database) -> Self {
        PreferenceTable { database }
    }

    /// The user's stored document, `None` when there is none.
    pub async fn load(&self, user_id: &str) -> Result<Option<StoredPreferences>, StorageError> {
        let _timer = self.database.metrics().time("preferences_load");
        let row: Option<(String, i64)> = with_pool!(self.database, pool => {
            sqlx::query_as("SELECT document, version FROM preferences WHERE user_id = $1")
                .bind(user_id)
                .fetch_optional(pool)
                .await?
        });
        row.map(|(document, version)| {
            let preferences = serde_json::from_str(&document).map_err(|error| {
                StorageError::Corrupt(format!("preferences of user {user_id:?}: {error}"))
            })?;
            Ok(StoredPreferences {
                preferences,
                version,
            })
        })
        .transpose()
    }

    /// The stored documents of those of `users` who have one: one query
    /// per 500 users, for planning a page of notifications.
    pub async fn load_many(
        &self,
        users: &[&str],
    ) -> Result<std::collections::HashMap<String, UserPreferences>, StorageError> {
        let _timer = self.database.metrics().time("preferences_load_many");
        let mut found = std::collections::HashMap::with_capacity(users.len());
        for chunk in users.chunks(500) {
            let rows: Vec<(String, String)> = with_pool!(self.database, pool => {
                let mut query = sqlx::QueryBuilder::new(
                    "SELECT user_id, document FROM preferences WHERE user_id IN (",
                );
                let mut list = query.separated(", ");
                for user in chunk {
                    list.push_bind(*user);
                }
                query.push(")");
                query.build_query_as().fetch_all(pool).await?
            });
            for (user, document) in rows {
                let preferences = serde_json::from_str(&document).map_err(|error| {
                    StorageError::Corrupt(format!("preferences of user {user:?}: {error}"))
                })?;
                found.insert(user, preferences);
            }
        }
        Ok(found)
    }

    /// Replaces the user's document, whatever was stored.
    pub async fn put(
        &self,
        user_id: &str,
        preferences: &UserPreferences,
    ) -> Result<(), StorageError> {
        let _timer = self.database.metrics().time("preferences_put");
        let document = serde_json::to_string(preferences)?;
        with_pool!(write self.database, pool => {
            sqlx::query(
                "INSERT INTO preferences (user_id, document, version, updated_at) VALUES ($1, $2, 1, $3) \
                 ON CONFLICT (user_id) DO UPDATE SET document = excluded.document, \
                 version = preferences.version + 1, updated_at = excluded.updated_at",
            )
            .bind(user_id)
            .bind(document)
            .bind(Timestamp::now().as_millisecond())
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Writes `preferences` if the stored version is still `expected`
    /// (`None`: still no row); `false`, writing nothing, when another
    /// write came first.
    pub async fn swap(
        &self,
        user_id: &str,
        expected: Option<i64>,
        preferences: &UserPreferences,
    ) -> Result<bool, StorageError> {
        let _timer = self.database.metrics().time("preferences_swap");
        let document = serde_json::to_string(preferences)?;
        let now = Timestamp::now().as_millisecond();
        let written = with_pool!(write self.database, pool => {
            match expected {
                None => sqlx::query(
                    "INSERT INTO preferences (user_id, document, version, updated_at) \
                     VALUES ($1, $2, 1, $3) ON CONFLICT (user_id) DO NOTHING",
                )
                .bind(user_id)
                .bind(document)
                .bind(now)
                .execute(pool)
                .await?
                .rows_affected(),
                Some(version) => sqlx::query(
                    "UPDATE preferences SET document = $2, version = version + 1, updated_at = $3 \
                     WHERE user_id = $1 AND version = $4",
                )
                .bind(user_id)
                .bind(document)
                .bind(now)
                .bind(version)
                .execute(pool)
                .await?
                .rows_affected(),
            }
        });
        Ok(written == 1)
    }

    /// Deletes the user's document; `true` when there was one.
    pub async fn delete(&self, user_id: &str) -> Result<bool, StorageError> {
        let _timer = self.database.metrics().time("preferences_delete");
        let removed = with_pool!(write self.database, pool => {
            sqlx::query("DELETE FROM preferences WHERE user_id = $1")
                .bind(user_id)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(removed > 0)
    }

    /// Stores `document` as the user's text as is: for tests of what a
    /// damaged row does.
    #[cfg(test)]
    pub(crate) async fn put_raw(&self, user_id: &str, document: &str) -> Result<(), StorageError> {
        with_pool!(write self.database, pool => {
            sqlx::query(
                "INSERT INTO preferences (user_id, document, version, updated_at) VALUES ($1, $2, 1, 0)",
            )
            .bind(user_id)
            .bind(document)
            .execute(pool)
            .await?;
        });
        Ok(())
    }
}
