//! [`PreferenceStore`]: each user's [`UserPreferences`], over the storage
//! boundary's `preferences` table ([`PreferenceTable`]).
//!
//! # Promises
//!
//! * A user without a stored document gets [`UserPreferences::default`]
//!   (the operator's defaults), so "reset all" is a delete.
//! * Every write is durable before it returns: preference changes are rare
//!   and a user who saw "saved" must not find them gone after a crash.
//! * [`PreferenceStore::update`] is a compare-and-swap loop over the
//!   document's version, so concurrent changes to different settings of
//!   one user are not lost, also across replicas.
//! * [`PreferenceStore::erase_user`] (privacy) deletes the stored document;
//!   the user is back to the operator's defaults.
//! * A user id with a NUL character never has a document (no entrance
//!   lets one in, and PostgreSQL text cannot hold it): reads answer the
//!   defaults, writes are refused with [`PreferenceError::InvalidUser`].

use super::{PreferenceError, UserPreferences};
use crate::storage::{PreferenceTable, StorageError};

/// Per-user preferences. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PreferenceStore {
    table: PreferenceTable,
}

impl PreferenceError {
    /// A storage failure of `user_id`'s preferences.
    fn storage(user_id: &str, error: StorageError) -> Self {
        match error {
            StorageError::Corrupt(detail) => PreferenceError::Corrupt {
                user: user_id.to_owned(),
                detail,
            },
            other => PreferenceError::Storage(other.to_string()),
        }
    }
}

impl PreferenceStore {
    pub fn new(table: PreferenceTable) -> Self {
        PreferenceStore { table }
    }

    /// The user's preferences, or the defaults if none are stored.
    pub async fn get(&self, user_id: &str) -> Result<UserPreferences, PreferenceError> {
        Ok(self.stored(user_id).await?.unwrap_or_default())
    }

    /// Replaces the user's preferences. Validate against the operator's
    /// defaults first ([`UserPreferences::validate`]).
    pub async fn put(&self, user_id: &str, prefs: &UserPreferences) -> Result<(), PreferenceError> {
        check_user(user_id)?;
        self.table
            .put(user_id, prefs)
            .await
            .map_err(|error| PreferenceError::storage(user_id, error))
    }

    /// Reads, changes and writes the user's preferences atomically; `change`
    /// may run more than once under contention. Returns the stored result.
    pub async fn update<F>(
        &self,
        user_id: &str,
        mut change: F,
    ) -> Result<UserPreferences, PreferenceError>
    where
        F: FnMut(&mut UserPreferences) -> Result<(), PreferenceError>,
    {
        check_user(user_id)?;
        let failed = |error| PreferenceError::storage(user_id, error);
        loop {
            let current = self.table.load(user_id).await.map_err(failed)?;
            let version = current.as_ref().map(|stored| stored.version);
            let mut prefs = current.map(|stored| stored.preferences).unwrap_or_default();
            change(&mut prefs)?;
            if self
                .table
                .swap(user_id, version, &prefs)
                .await
                .map_err(failed)?
            {
                return Ok(prefs);
            }
        }
    }

    /// Each of `users`' preferences (the defaults for those who never
    /// changed anything), read in one query per 500 users.
    pub async fn get_many(
        &self,
        users: &[&str],
    ) -> Result<std::collections::HashMap<String, UserPreferences>, PreferenceError> {
        // PostgreSQL cannot hold NUL in text; such an id has nothing stored.
        let storable: Vec<&str> = users
            .iter()
            .copied()
            .filter(|user| !user.contains('\0'))
            .collect();
        let mut found = self.table.load_many(&storable).await.map_err(|error| {
            PreferenceError::storage(users.first().copied().unwrap_or(""), error)
        })?;
        for user in users {
            found.entry((*user).to_owned()).or_default();
        }
        Ok(found)
    }

    /// The user's stored document, `None` when they never changed anything
    /// (for a privacy export: defaults are not data about the user).
    pub async fn stored(&self, user_id: &str) -> Result<Option<UserPreferences>, PreferenceError> {
        if user_id.contains('\0') {
            return Ok(None);
        }
        let stored = self
            .table
            .load(user_id)
            .await
            .map_err(|error| PreferenceError::storage(user_id, error))?;
        Ok(stored.map(|stored| stored.preferences))
    }

    /// Deletes the user's preferences; `true` when some were stored.
    pub async fn erase_user(&self, user_id: &str) -> Result<bool, PreferenceError> {
        if user_id.contains('\0') {
            return Ok(false);
        }
        self.table
            .delete(user_id)
            .await
            .map_err(|error| PreferenceError::storage(user_id, error))
    }

    /// Back to the operator's defaults for one type.
    pub async fn reset_type(
        &self,
        user_id: &str,
        notification_type: &str,
    ) -> Result<UserPreferences, PreferenceError> {
        self.update(user_id, |prefs| {
            prefs.reset_type(notification_type);
            Ok(())
        })
        .await
    }

    /// Back to the operator's defaults for everything
    /// (see [`UserPreferences::reset_all`]).
    pub async fn reset_all(&self, user_id: &str) -> Result<UserPreferences, PreferenceError> {
        self.update(user_id, |prefs| {
            prefs.reset_all();
            Ok(())
        })
        .await
    }

    /// Forgets the user entirely (account deletion).
    pub async fn delete(&self, user_id: &str) -> Result<(), PreferenceError> {
        self.erase_user(user_id).await.map(drop)
    }
}

fn check_user(user_id: &str) -> Result<(), PreferenceError> {
    if user_id.contains('\0') {
        return Err(PreferenceError::InvalidUser(
            "the user id contains a NUL character".to_owned(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channels::ChannelKind;
    use crate::preferences::{Frequency, OperatorDefaults, QuietHours};
    use crate::storage::Stores;

    async fn store() -> (tempfile::TempDir, Stores) {
        let dir = tempfile::tempdir().unwrap();
        let stores = Stores::open_embedded(dir.path()).await.unwrap();
        (dir, stores)
    }

    #[tokio::test]
    async fn get_put_reset_and_delete() {
        let (_dir, stores) = store().await;
        let store = &stores.preferences;
        assert_eq!(store.get("u1").await.unwrap(), UserPreferences::default());

        let mut prefs = UserPreferences {
            quiet_hours: Some(QuietHours::new("22:00", "07:00", "Europe/Berlin").unwrap()),
            ..UserPreferences::default()
        };
        prefs.set_channel(ChannelKind::Sms, false);
        store.put("u1", &prefs).await.unwrap();
        assert_eq!(store.get("u1").await.unwrap(), prefs);
        assert_eq!(store.get("u2").await.unwrap(), UserPreferences::default());

        let defaults = OperatorDefaults::default();
        let updated = store
            .update("u1", |prefs| {
                prefs.set_frequency(&defaults, "comment", Frequency::Daily)
            })
            .await
            .unwrap();
        assert_eq!(updated.types["comment"].frequency, Some(Frequency::Daily));
        let after = store.reset_type("u1", "comment").await.unwrap();
        assert!(after.types.is_empty());
        assert_eq!(store.get("u1").await.unwrap(), after);

        let after = store.reset_all("u1").await.unwrap();
        assert_eq!(after, UserPreferences::default());
        store.delete("u1").await.unwrap();
        assert_eq!(store.get("u1").await.unwrap(), UserPreferences::default());
    }

    #[tokio::test]
    async fn corrupt_value_is_a_clear_error() {
        let (_dir, stores) = store().await;
        stores
            .preferences
            .table
            .put_raw("u1", "not json")
            .await
            .unwrap();
        let error = stores.preferences.get("u1").await.unwrap_err();
        assert!(matches!(error, PreferenceError::Corrupt { .. }), "{error}");
    }

    #[tokio::test]
    async fn a_user_id_with_nul_has_defaults_and_cannot_be_written() {
        let (_dir, stores) = store().await;
        let store = &stores.preferences;
        assert_eq!(store.get("a\0b").await.unwrap(), UserPreferences::default());
        let error = store
            .put("a\0b", &UserPreferences::default())
            .await
            .unwrap_err();
        assert!(matches!(error, PreferenceError::InvalidUser(_)), "{error}");
        assert!(!store.erase_user("a\0b").await.unwrap());
    }
}
