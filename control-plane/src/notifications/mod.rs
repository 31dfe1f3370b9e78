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
//! The check and the insert commit in one transaction, durable before
//! `create` returns (see [`crate::storage::NotificationStore`] for the
//! tables).
//!
//! Removal (privacy erase, retention) takes a notification and the keys
//! naming it out in one transaction; its deliveries and inbox items are
//! the caller's (`privacy`), since they live in other stores.

use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::event::NotifyRequest;

/// How long an idempotency key is remembered.
pub const IDEMPOTENCY_WINDOW: Duration = Duration::from_secs(48 * 3600);

/// A notification for one user, channel-independent: what was asked (the
/// notify's fields, or a rule's), plus its identity and origin. The field
/// docs are the API's descriptions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(description = "A notification for one user, channel-independent.")]
pub struct Notification {
    /// UUIDv7: sorts by creation time.
    pub id: String,
    pub user_id: String,
    // Type, template or title/body, data, channels, priority, key.
    #[serde(flatten)]
    pub request: NotifyRequest,
    /// The ingested notify event, or `rule:<name>:<event id>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub source_event_id: Option<String>,
    /// RFC 3339 time.
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
    /// The user is erased (privacy): nothing was created, nothing is to
    /// be delivered.
    UserErased,
}

pub use crate::storage::NotificationStore;

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

    async fn store() -> (tempfile::TempDir, NotificationStore) {
        let dir = tempfile::tempdir().unwrap();
        let stores = crate::storage::Stores::open_embedded(dir.path())
            .await
            .unwrap();
        (dir, stores.notifications)
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    fn id_of(created: &Created) -> &str {
        match created {
            Created::New(n) | Created::Existing(n) => &n.id,
            Created::UserErased => panic!("no test user is erased"),
        }
    }

    #[tokio::test]
    async fn the_same_idempotency_key_creates_one_notification_within_the_window() {
        let (_dir, store) = store().await;
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
        let (_dir, store) = store().await;
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
        let (_dir, store) = store().await;
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
        let stored = store.get(id_of(&first)).await.unwrap().unwrap();
        assert_eq!(stored.request.title.as_deref(), Some("Payment failed"));
        assert_eq!(stored.request.priority, Priority::High);
    }

    #[tokio::test]
    async fn erasing_a_user_removes_their_notifications_and_keys_only() {
        let (_dir, store) = store().await;
        let mine = store
            .create(draft("u", Some("k"), Some("e1")), at(10))
            .await
            .unwrap();
        let theirs = store
            .create(draft("v", Some("k"), Some("e2")), at(10))
            .await
            .unwrap();
        let removed = store.erase_user("u").await.unwrap();
        assert_eq!(removed.len(), 1);
        assert_eq!(removed[0].id, id_of(&mine));
        assert!(store.get(id_of(&mine)).await.unwrap().is_none());
        assert!(store.list_for_user("u", 10).await.unwrap().is_empty());
        assert_eq!(store.list_for_user("v", 10).await.unwrap().len(), 1);
        assert!(store.get(id_of(&theirs)).await.unwrap().is_some());
        // The key and source are free again: a new notify creates anew.
        let again = store
            .create(draft("u", Some("k"), Some("e1")), at(20))
            .await
            .unwrap();
        assert!(matches!(again, Created::New(_)));
    }

    #[tokio::test]
    async fn pruning_by_age_removes_only_older_notifications() {
        let (_dir, store) = store().await;
        let old = store.create(draft("u", None, None), at(10)).await.unwrap();
        let edge = store.create(draft("u", None, None), at(20)).await.unwrap();
        let found = store.created_before(at(20), 100).await.unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].id, id_of(&old));
        // Finding removes nothing; removing does, once.
        assert_eq!(store.list_for_user("u", 10).await.unwrap().len(), 2);
        assert_eq!(store.remove(&[found[0].id.clone()]).await.unwrap(), 1);
        assert_eq!(store.remove(&[found[0].id.clone()]).await.unwrap(), 0);
        assert!(store.get(id_of(&edge)).await.unwrap().is_some());
        assert_eq!(store.list_for_user("u", 10).await.unwrap().len(), 1);
        assert!(store.created_before(at(20), 100).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn pruning_forgets_only_expired_keys() {
        let (_dir, store) = store().await;
        store
            .create(draft("u1", Some("old"), None), at(0))
            .await
            .unwrap();
        store
            .create(draft("u1", Some("fresh"), None), at(40 * 3600))
            .await
            .unwrap();
        assert_eq!(
            store.prune_idempotency_keys(at(50 * 3600)).await.unwrap(),
            1
        );
        let fresh = store
            .create(draft("u1", Some("fresh"), None), at(50 * 3600))
            .await
            .unwrap();
        assert!(matches!(fresh, Created::Existing(_)));
    }
}
