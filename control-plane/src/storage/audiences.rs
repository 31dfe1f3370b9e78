//! The users a broadcast's segment is drawn from, read in user id order
//! a page at a time (see `crate::broadcasts`):
//!
//! * with trait conditions, the profiles (table `profiles`, its primary
//!   key): only a user who was identified has traits to match;
//! * with only `active_within`, every user who has events (index
//!   `events_by_user`), then [`EventStore::active_since`] keeps those with
//!   an event ingested since the window's start.
//!
//! Each page is one indexed range read; nothing loads the whole audience.

use std::collections::{HashMap, HashSet};

use jiff::Timestamp;

use super::database::with_pool;
use super::{EventStore, StorageError};
use crate::event::JsonObject;

/// Users per `IN (…)` list: far below both engines' parameter limits.
const IN_CHUNK: usize = 500;

impl EventStore {
    /// The traits of each of `users` who has a profile: one query per
    /// [`IN_CHUNK`] users, for planning a page of notifications.
    pub async fn traits_of(
        &self,
        users: &[&str],
    ) -> Result<HashMap<String, JsonObject>, StorageError> {
        let mut found = HashMap::with_capacity(users.len());
        for chunk in users.chunks(IN_CHUNK) {
            let rows: Vec<(String, String)> = with_pool!(self.database(), pool => {
                let mut query =
                    sqlx::QueryBuilder::new("SELECT user_id, traits FROM profiles WHERE user_id IN (");
                let mut list = query.separated(", ");
                for user in chunk {
                    list.push_bind(*user);
                }
                query.push(")");
                query.build_query_as().fetch_all(pool).await?
            });
            for (user, traits) in rows {
                let traits = serde_json::from_str(&traits).map_err(|error| {
                    StorageError::Corrupt(format!("the profile of {user:?}: {error}"))
                })?;
                found.insert(user, traits);
            }
        }
        Ok(found)
    }

    /// Up to `limit` profiles with user ids after `after`, in id order:
    /// (user id, traits).
    pub async fn profiles_after(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, JsonObject)>, StorageError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows: Vec<(String, String)> = with_pool!(self.database(), pool => {
            sqlx::query_as(
                "SELECT user_id, traits FROM profiles WHERE user_id > $1 ORDER BY user_id LIMIT $2",
            )
            .bind(after.unwrap_or(""))
            .bind(limit)
            .fetch_all(pool)
            .await?
        });
        rows.into_iter()
            .map(|(user, traits)| {
                let traits = serde_json::from_str(&traits).map_err(|error| {
                    StorageError::Corrupt(format!("the profile of {user:?}: {error}"))
                })?;
                Ok((user, traits))
            })
            .collect()
    }

    /// Up to `limit` distinct ids of users with events, after `after`, in
    /// id order.
    pub async fn users_after(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StorageError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let users: Vec<String> = with_pool!(self.database(), pool => {
            sqlx::query_scalar(
                "SELECT DISTINCT user_id FROM events \
                 WHERE user_id IS NOT NULL AND user_id > $1 ORDER BY user_id LIMIT $2",
            )
            .bind(after.unwrap_or(""))
            .bind(limit)
            .fetch_all(pool)
            .await?
        });
        Ok(users)
    }

    /// Those of `users` with an event ingested at or after `since`.
    pub async fn active_since(
        &self,
        users: &[&str],
        since: Timestamp,
    ) -> Result<HashSet<String>, StorageError> {
        let mut active = HashSet::new();
        for chunk in users.chunks(IN_CHUNK) {
            let found: Vec<String> = with_pool!(self.database(), pool => {
                let mut query = sqlx::QueryBuilder::new(
                    "SELECT DISTINCT user_id FROM events WHERE ingested_at >= ",
                );
                query.push_bind(since.as_millisecond());
                query.push(" AND user_id IN (");
                let mut list = query.separated(", ");
                for user in chunk {
                    list.push_bind(*user);
                }
                query.push(")");
                query.build_query_scalar().fetch_all(pool).await?
            });
            active.extend(found);
        }
        Ok(active)
    }
}
