//! Notifications: what the engine decided to tell a user, before it is
//! split into per-channel deliveries.
//!
//! # Promises
//!
//! Creating a notification is idempotent twice over:
//!
//! * **by source event** — triggers process ingested events at least once
//!   (a crash replays them), so a notification created from event `E` is
//!   created once however often `E` is processed;
//! * **by idempotency key** — an application that resends a `notify` with
//!   the same `idempotencyKey` for the same user gets the first
//!   notification back, for at least [`IDEMPOTENCY_WINDOW`] (48 h, above
//!   the 24 h the API promises). Keys are scoped per user, so two users'
//!   `welcome` keys never collide. After the window a key is forgotten and
//!   may create a new notification.
//!
//! All three trees change in one sled transaction, and a new notification
//! is flushed before `create` returns.
//!
//! Removal (privacy erase, retention) takes a notification out of all four
//! trees in one transaction; its deliveries and inbox items are the
//! caller's (`privacy`), since they live in other stores.

use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use crate::event::NotifyRequest;

/// How long an idempotency key is remembered.
pub const IDEMPOTENCY_WINDOW: Duration = Duration::from_secs(48 * 3600);

/// A notification for one user, channel-independent: what was asked (the
/// notify's fields, or a rule's), plus its identity and origin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// UUIDv7: sorts by creation time.
    pub id: String,
    pub user_id: String,
    /// Type, template or title/body, data, channels, priority, key.
    #[serde(flatten)]
    pub request: NotifyRequest,
    /// The ingested event (a `notify`), or `rule:<name>:<event id>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_event_id: Option<String>,
    pub created_at: Timestamp,
}

/// What a caller wants notified; [`NotificationStore::create`] assigns the
/// id and creation time.
#[derive(Debug, Clone, PartialEq)]
pub struct NewNotification {
    pub user_id: String,
    pub request: NotifyRequest,
    pub source_event_id: Option<String>,
}

/// The result of [`NotificationStore::create`].
#[derive(Debug, Clone, PartialEq)]
pub enum Created {
    /// A new notification: the caller goes on to deliver it.
    New(Notification),
    /// The same source event or idempotency key created this one before:
    /// nothing more to do.
    Existing(Notification),
}

#[derive(Debug, thiserror::Error)]
pub enum NotificationError {
    #[error("notification storage: {0}")]
    Storage(#[from] sled::Error),
    #[error("stored notification is unreadable: {0}")]
    Corrupt(#[from] serde_json::Error),
}

/// Notifications in sled: `notifications` (id → JSON), a per-user index
/// (`notification_by_user`: user \0 id, newest last since ids are UUIDv7),
/// and the two idempotency indexes (`notification_by_source`: event id →
/// id; `notification_by_key`: user \0 key → creation millis + id).
#[derive(Clone)]
pub struct NotificationStore {
    db: sled::Db,
    notifications: sled::Tree,
    by_user: sled::Tree,
    by_source: sled::Tree,
    by_key: sled::Tree,
}

impl NotificationStore {
    pub fn open(db: &sled::Db) -> Result<Self, NotificationError> {
        Ok(Self {
            db: db.clone(),
            notifications: db.open_tree("notifications")?,
            by_user: db.open_tree("notification_by_user")?,
            by_source: db.open_tree("notification_by_source")?,
            by_key: db.open_tree("notification_by_key")?,
        })
    }

    /// Creates a notification unless its source event or idempotency key
    /// already created one (see the module doc); durable when it returns.
    pub async fn create(
        &self,
        draft: NewNotification,
        now: Timestamp,
    ) -> Result<Created, NotificationError> {
        let notification = Notification {
            id: uuid::Uuid::now_v7().to_string(),
            user_id: draft.user_id,
            request: draft.request,
            source_event_id: draft.source_event_id,
            created_at: now,
        };
        let encoded = serde_json::to_vec(&notification)?;
        let key_entry = notification
            .request
            .idempotency_key
            .as_ref()
            .map(|key| idempotency_key(&notification.user_id, key));
        let now_millis = now.as_millisecond();
        let window_millis = IDEMPOTENCY_WINDOW.as_millis() as i64;

        let user_key = idempotency_key(&notification.user_id, &notification.id);
        let existing_id = (
            &self.notifications,
            &self.by_user,
            &self.by_source,
            &self.by_key,
        )
            .transaction(|(notifications, by_user, by_source, by_key)| {
                if let Some(source) = &notification.source_event_id
                    && let Some(id) = by_source.get(source.as_bytes())?
                {
                    return Ok(Some(id.to_vec()));
                }
                if let Some(key) = &key_entry
                    && let Some(entry) = by_key.get(key)?
                {
                    let (created, id) = split_key_entry(&entry);
                    if now_millis - created < window_millis {
                        return Ok(Some(id.to_vec()));
                    }
                }
                notifications.insert(notification.id.as_bytes(), encoded.as_slice())?;
                by_user.insert(user_key.as_slice(), &[][..])?;
                if let Some(source) = &notification.source_event_id {
                    by_source.insert(source.as_bytes(), notification.id.as_bytes())?;
                }
                if let Some(key) = &key_entry {
                    let mut entry = now_millis.to_be_bytes().to_vec();
                    entry.extend_from_slice(notification.id.as_bytes());
                    by_key.insert(key.as_slice(), entry)?;
                }
                Ok::<_, ConflictableTransactionError<()>>(None)
            })
            .map_err(|error| match error {
                TransactionError::Storage(error) => NotificationError::Storage(error),
                TransactionError::Abort(()) => unreachable!("the transaction never aborts"),
            })?;

        match existing_id {
            Some(id) => {
                let id = String::from_utf8_lossy(&id).into_owned();
                let existing = self.get(&id)?.ok_or_else(|| {
                    NotificationError::Storage(sled::Error::ReportableBug(format!(
                        "idempotency index points at missing notification {id}"
                    )))
                })?;
                Ok(Created::Existing(existing))
            }
            None => {
                self.db.flush_async().await?;
                Ok(Created::New(notification))
            }
        }
    }

    pub fn get(&self, id: &str) -> Result<Option<Notification>, NotificationError> {
        match self.notifications.get(id.as_bytes())? {
            Some(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
            None => Ok(None),
        }
    }

    /// A user's notifications, newest first, at most `limit`.
    pub fn list_for_user(
        &self,
        user_id: &str,
        limit: usize,
    ) -> Result<Vec<Notification>, NotificationError> {
        let prefix = idempotency_key(user_id, "");
        let mut found = Vec::new();
        for entry in self.by_user.scan_prefix(&prefix).keys().rev().take(limit) {
            let key = entry?;
            let id = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
            if let Some(notification) = self.get(&id)? {
                found.push(notification);
            }
        }
        Ok(found)
    }

    /// Removes every notification of `user_id` with its index entries, and
    /// the user's idempotency keys; returns the removed notifications (so
    /// the caller can remove their deliveries). Flushed.
    pub fn erase_user(&self, user_id: &str) -> Result<Vec<Notification>, NotificationError> {
        let prefix = idempotency_key(user_id, "");
        let mut removed = Vec::new();
        for entry in self.by_user.scan_prefix(&prefix).keys() {
            let key = entry?;
            let id = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
            match self.remove(&id)? {
                Some(notification) => removed.push(notification),
                None => {
                    self.by_user.remove(&key)?;
                }
            }
        }
        for entry in self.by_key.scan_prefix(&prefix).keys() {
            self.by_key.remove(entry?)?;
        }
        self.db.flush()?;
        Ok(removed)
    }

    /// Retention: removes up to `limit` notifications created before
    /// `cutoff`, oldest first (ids are UUIDv7, so id order is creation
    /// order), and returns them. Not flushed (sled's background flush;
    /// a crash brings them back for the next pass).
    pub fn prune_created_before(
        &self,
        cutoff: Timestamp,
        limit: usize,
    ) -> Result<Vec<Notification>, NotificationError> {
        let mut old = Vec::new();
        for entry in self.notifications.iter().values().take(limit) {
            let notification: Notification = serde_json::from_slice(&entry?)?;
            if notification.created_at >= cutoff {
                break;
            }
            old.push(notification.id);
        }
        let mut removed = Vec::with_capacity(old.len());
        for id in old {
            if let Some(notification) = self.remove(&id)? {
                removed.push(notification);
            }
        }
        Ok(removed)
    }

    /// Takes one notification out of the record and index trees.
    fn remove(&self, id: &str) -> Result<Option<Notification>, NotificationError> {
        let Some(notification) = self.get(id)? else {
            return Ok(None);
        };
        let user_key = idempotency_key(&notification.user_id, &notification.id);
        let key_entry = notification
            .request
            .idempotency_key
            .as_ref()
            .map(|key| idempotency_key(&notification.user_id, key));
        (
            &self.notifications,
            &self.by_user,
            &self.by_source,
            &self.by_key,
        )
            .transaction(|(notifications, by_user, by_source, by_key)| {
                notifications.remove(id.as_bytes())?;
                by_user.remove(user_key.as_slice())?;
                if let Some(source) = &notification.source_event_id
                    && by_source.get(source.as_bytes())?.as_deref() == Some(id.as_bytes())
                {
                    by_source.remove(source.as_bytes())?;
                }
                if let Some(key) = &key_entry
                    && let Some(entry) = by_key.get(key)?
                    && split_key_entry(&entry).1 == id.as_bytes()
                {
                    by_key.remove(key.as_slice())?;
                }
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(|error| match error {
                TransactionError::Storage(error) => NotificationError::Storage(error),
                TransactionError::Abort(()) => unreachable!("the transaction never aborts"),
            })?;
        Ok(Some(notification))
    }

    /// Forgets idempotency keys older than the window; returns how many.
    pub fn prune_idempotency_keys(&self, now: Timestamp) -> Result<usize, NotificationError> {
        let cutoff = now.as_millisecond() - IDEMPOTENCY_WINDOW.as_millis() as i64;
        let mut pruned = 0;
        for entry in self.by_key.iter() {
            let (key, value) = entry?;
            if split_key_entry(&value).0 < cutoff {
                // Removed only if unchanged, so a key renewed meanwhile stays.
                if self
                    .by_key
                    .compare_and_swap(&key, Some(&value), None::<&[u8]>)?
                    .is_ok()
                {
                    pruned += 1;
                }
            }
        }
        Ok(pruned)
    }
}

/// `user \0 suffix`: the key shape of the per-user trees.
fn idempotency_key(user_id: &str, key: &str) -> Vec<u8> {
    let mut entry = user_id.as_bytes().to_vec();
    entry.push(0);
    entry.extend_from_slice(key.as_bytes());
    entry
}

/// A `notification_by_key` value: creation millis (8 bytes BE), then the id.
fn split_key_entry(entry: &[u8]) -> (i64, &[u8]) {
    match entry.split_first_chunk::<8>() {
        Some((millis, id)) => (i64::from_be_bytes(*millis), id),
        None => (i64::MIN, &[]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Priority;

    fn draft(user: &str, key: Option<&str>, source: Option<&str>) -> NewNotification {
        NewNotification {
            user_id: user.into(),
            request: NotifyRequest {
                notification_type: "payment_failed".into(),
                template: None,
                title: Some("Payment failed".into()),
                body: Some("Update your card".into()),
                data: Default::default(),
                priority: Priority::High,
                channels: vec![crate::channels::ChannelKind::Email],
                idempotency_key: key.map(Into::into),
                cost: None,
            },
            source_event_id: source.map(Into::into),
        }
    }

    fn store() -> (tempfile::TempDir, NotificationStore) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        (dir, NotificationStore::open(&db).unwrap())
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    fn id_of(created: &Created) -> &str {
        match created {
            Created::New(n) | Created::Existing(n) => &n.id,
        }
    }

    #[tokio::test]
    async fn the_same_idempotency_key_creates_one_notification_within_the_window() {
        let (_dir, store) = store();
        let first = store
            .create(draft("u1", Some("inv-42"), None), at(0))
            .await
            .unwrap();
        let again = store
            .create(draft("u1", Some("inv-42"), None), at(47 * 3600))
            .await
            .unwrap();
        assert!(matches!(first, Created::New(_)));
        assert!(matches!(again, Created::Existing(_)));
        assert_eq!(id_of(&first), id_of(&again));
        let later = store
            .create(draft("u1", Some("inv-42"), None), at(49 * 3600))
            .await
            .unwrap();
        assert!(matches!(later, Created::New(_)), "the window is over");
    }

    #[tokio::test]
    async fn keys_are_scoped_per_user() {
        let (_dir, store) = store();
        let a = store
            .create(draft("u1", Some("welcome"), None), at(0))
            .await
            .unwrap();
        let b = store
            .create(draft("u2", Some("welcome"), None), at(0))
            .await
            .unwrap();
        assert!(matches!(b, Created::New(_)));
        assert_ne!(id_of(&a), id_of(&b));
    }

    #[tokio::test]
    async fn replaying_a_source_event_creates_nothing_new() {
        let (_dir, store) = store();
        let first = store
            .create(draft("u1", None, Some("evt-1")), at(0))
            .await
            .unwrap();
        let replay = store
            .create(draft("u1", None, Some("evt-1")), at(90 * 86_400))
            .await
            .unwrap();
        assert!(matches!(replay, Created::Existing(_)));
        assert_eq!(id_of(&first), id_of(&replay));
        let stored = store.get(id_of(&first)).unwrap().unwrap();
        assert_eq!(stored.request.title.as_deref(), Some("Payment failed"));
        assert_eq!(stored.request.priority, Priority::High);
    }

    #[tokio::test]
    async fn erasing_a_user_removes_their_notifications_and_keys_only() {
        let (_dir, store) = store();
        let mine = store
            .create(draft("u", Some("k"), Some("e1")), at(10))
            .await
            .unwrap();
        let theirs = store
            .create(draft("v", Some("k"), Some("e2")), at(10))
            .await
            .unwrap();
        let removed = store.erase_user("u").unwrap();
        assert_eq!(removed.len(), 1);
        assert_eq!(removed[0].id, id_of(&mine));
        assert!(store.get(id_of(&mine)).unwrap().is_none());
        assert!(store.list_for_user("u", 10).unwrap().is_empty());
        assert_eq!(store.list_for_user("v", 10).unwrap().len(), 1);
        assert!(store.get(id_of(&theirs)).unwrap().is_some());
        // The key and source are free again: a new notify creates anew.
        let again = store
            .create(draft("u", Some("k"), Some("e1")), at(20))
            .await
            .unwrap();
        assert!(matches!(again, Created::New(_)));
    }

    #[tokio::test]
    async fn pruning_by_age_removes_only_older_notifications() {
        let (_dir, store) = store();
        let old = store.create(draft("u", None, None), at(10)).await.unwrap();
        let edge = store.create(draft("u", None, None), at(20)).await.unwrap();
        let removed = store.prune_created_before(at(20), 100).unwrap();
        assert_eq!(removed.len(), 1);
        assert_eq!(removed[0].id, id_of(&old));
        assert!(store.get(id_of(&edge)).unwrap().is_some());
        assert_eq!(store.list_for_user("u", 10).unwrap().len(), 1);
        assert!(store.prune_created_before(at(20), 100).unwrap().is_empty());
    }

    #[tokio::test]
    async fn pruning_forgets_only_expired_keys() {
        let (_dir, store) = store();
        store
            .create(draft("u1", Some("old"), None), at(0))
            .await
            .unwrap();
        store
            .create(draft("u1", Some("fresh"), None), at(40 * 3600))
            .await
            .unwrap();
        assert_eq!(store.prune_idempotency_keys(at(50 * 3600)).unwrap(), 1);
        let fresh = store
            .create(draft("u1", Some("fresh"), None), at(50 * 3600))
            .await
            .unwrap();
        assert!(matches!(fresh, Created::Existing(_)));
    }
}
