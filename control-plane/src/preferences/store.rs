//! [`PreferenceStore`]: each user's [`UserPreferences`] as one JSON value in
//! a sled tree, keyed by the user id's bytes.
//!
//! # Promises
//!
//! * A user without a stored document gets [`UserPreferences::default`]
//!   (the operator's defaults), so "reset all" is a delete.
//! * Every write is flushed before it returns: preference changes are rare
//!   and a user who saw "saved" must not find them gone after a crash.
//! * [`PreferenceStore::update`] is a compare-and-swap loop, so concurrent
//!   changes to different settings of one user are not lost.
//! * [`PreferenceStore::erase_user`] (privacy) deletes the stored document
//!   (flushed); the user is back to the operator's defaults.

use super::{PreferenceError, UserPreferences};

/// Per-user preferences in a sled tree the caller opens (and names).
#[derive(Debug, Clone)]
pub struct PreferenceStore {
    tree: sled::Tree,
}

impl From<sled::Error> for PreferenceError {
    fn from(error: sled::Error) -> Self {
        PreferenceError::Storage(error.to_string())
    }
}

impl PreferenceStore {
    pub fn new(tree: sled::Tree) -> Self {
        PreferenceStore { tree }
    }

    /// The user's preferences, or the defaults if none are stored.
    pub fn get(&self, user_id: &str) -> Result<UserPreferences, PreferenceError> {
        match self.tree.get(user_id.as_bytes())? {
            Some(bytes) => decode(user_id, &bytes),
            None => Ok(UserPreferences::default()),
        }
    }

    /// Replaces the user's preferences. Validate against the operator's
    /// defaults first ([`UserPreferences::validate`]).
    pub fn put(&self, user_id: &str, prefs: &UserPreferences) -> Result<(), PreferenceError> {
        let bytes = encode(prefs)?;
        self.tree.insert(user_id.as_bytes(), bytes)?;
        self.tree.flush()?;
        Ok(())
    }

    /// Reads, changes and writes the user's preferences atomically; `change`
    /// may run more than once under contention. Returns the stored result.
    pub fn update<F>(
        &self,
        user_id: &str,
        mut change: F,
    ) -> Result<UserPreferences, PreferenceError>
    where
        F: FnMut(&mut UserPreferences) -> Result<(), PreferenceError>,
    {
        loop {
            let current = self.tree.get(user_id.as_bytes())?;
            let mut prefs = match &current {
                Some(bytes) => decode(user_id, bytes)?,
                None => UserPreferences::default(),
            };
            change(&mut prefs)?;
            let bytes = encode(&prefs)?;
            let swapped = self
                .tree
                .compare_and_swap(user_id.as_bytes(), current, Some(bytes))?;
            if swapped.is_ok() {
                self.tree.flush()?;
                return Ok(prefs);
            }
        }
    }

    /// The user's stored document, `None` when they never changed anything
    /// (for a privacy export: defaults are not data about the user).
    pub fn stored(&self, user_id: &str) -> Result<Option<UserPreferences>, PreferenceError> {
        match self.tree.get(user_id.as_bytes())? {
            Some(bytes) => Ok(Some(decode(user_id, &bytes)?)),
            None => Ok(None),
        }
    }

    /// Deletes the user's preferences; `true` when some were stored.
    pub fn erase_user(&self, user_id: &str) -> Result<bool, PreferenceError> {
        let removed = self.tree.remove(user_id.as_bytes())?.is_some();
        self.tree.flush()?;
        Ok(removed)
    }

    /// Back to the operator's defaults for one type.
    pub fn reset_type(
        &self,
        user_id: &str,
        notification_type: &str,
    ) -> Result<UserPreferences, PreferenceError> {
        self.update(user_id, |prefs| {
            prefs.reset_type(notification_type);
            Ok(())
        })
    }

    /// Back to the operator's defaults for everything
    /// (see [`UserPreferences::reset_all`]).
    pub fn reset_all(&self, user_id: &str) -> Result<UserPreferences, PreferenceError> {
        self.update(user_id, |prefs| {
            prefs.reset_all();
            Ok(())
        })
    }

    /// Forgets the user entirely (account deletion).
    pub fn delete(&self, user_id: &str) -> Result<(), PreferenceError> {
        self.tree.remove(user_id.as_bytes())?;
        self.tree.flush()?;
        Ok(())
    }
}

fn encode(prefs: &UserPreferences) -> Result<Vec<u8>, PreferenceError> {
    serde_json::to_vec(prefs).map_err(|error| PreferenceError::Storage(error.to_string()))
}

fn decode(user_id: &str, bytes: &[u8]) -> Result<UserPreferences, PreferenceError> {
    serde_json::from_slice(bytes).map_err(|error| PreferenceError::Corrupt {
        user: user_id.to_owned(),
        detail: error.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channels::ChannelKind;
    use crate::preferences::{Frequency, OperatorDefaults, QuietHours};

    fn store() -> (tempfile::TempDir, PreferenceStore) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let tree = db.open_tree("preferences").unwrap();
        (dir, PreferenceStore::new(tree))
    }

    #[test]
    fn get_put_reset_and_delete() {
        let (_dir, store) = store();
        assert_eq!(store.get("u1").unwrap(), UserPreferences::default());

        let mut prefs = UserPreferences {
            quiet_hours: Some(QuietHours::new("22:00", "07:00", "Europe/Berlin").unwrap()),
            ..UserPreferences::default()
        };
        prefs.set_channel(ChannelKind::Sms, false);
        store.put("u1", &prefs).unwrap();
        assert_eq!(store.get("u1").unwrap(), prefs);
        assert_eq!(store.get("u2").unwrap(), UserPreferences::default());

        let defaults = OperatorDefaults::default();
        let updated = store
            .update("u1", |prefs| {
                prefs.set_frequency(&defaults, "comment", Frequency::Daily)
            })
            .unwrap();
        assert_eq!(updated.types["comment"].frequency, Some(Frequency::Daily));
        let after = store.reset_type("u1", "comment").unwrap();
        assert!(after.types.is_empty());
        assert_eq!(store.get("u1").unwrap(), after);

        let after = store.reset_all("u1").unwrap();
        assert_eq!(after, UserPreferences::default());
        store.delete("u1").unwrap();
        assert_eq!(store.get("u1").unwrap(), UserPreferences::default());
    }

    #[test]
    fn corrupt_value_is_a_clear_error() {
        let (_dir, store) = store();
        store.tree.insert("u1", b"not json".as_slice()).unwrap();
        let error = store.get("u1").unwrap_err();
        assert!(matches!(error, PreferenceError::Corrupt { .. }), "{error}");
    }
}
