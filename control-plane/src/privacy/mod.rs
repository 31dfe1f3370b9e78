//! Privacy: erase a user everywhere, export everything held about a user,
//! and retention (old data removed by age).
//!
//! # Promises
//!
//! * **Erase is complete and sticky.** [`Privacy::erase_user`] removes the
//!   user's events and profile, notifications (with their index and
//!   idempotency entries), the deliveries of those notifications (queue
//!   record, due/sending/dead and provider-id indexes, attempt logs), inbox
//!   items, counts and change log, devices, stored preferences, held digest
//!   items, pending rule triggers and the analytics' per-user data
//!   (engagement, sessions, events by name, per-user delivery figures,
//!   anonymous ids linked to the user; aggregate counts stay, they name
//!   nobody). It first writes a tombstone
//!   (`erased_users`), so events of the user that agents deliver later are
//!   acknowledged and dropped (`nudge_cp_events_erased_total`), never
//!   stored and never notified. Only `user_id` is matched: an event that
//!   carries just an anonymous id is not linked to the user.
//! * **Nothing created for the user outlives the erase**, even by work
//!   that was under way when it started: each store's creating
//!   transaction checks the tombstone (`storage::tombstones`), so it
//!   either committed before the tombstone, and the deletes that follow
//!   remove it, or creates nothing.
//! * **Idempotent.** Erasing again reports zeros (or what was created
//!   for the user id after an operator lifted the tombstone); the first
//!   erase time is kept.
//! * **The tombstone holds** until an operator lifts it
//!   ([`Privacy::lift_erasure`], `DELETE /v1/admin/users/{id}/erasure`):
//!   re-using the user id after an erase is blocked until then.
//! * Kept on purpose: dedupe entries (event ids, so a resent old event is
//!   still a duplicate; they age out with the dedupe window) and finished
//!   rule-trigger markers (a rule name and an event id).
//! * **Export** ([`Privacy::write_export`]) is one JSON document of the
//!   same data, device tokens included: it is the user's own data, for the
//!   user (the operator hands it over). It is written page by page as it
//!   is sent, so its memory is bounded whatever the user's history.
//! * **Retention** ([`retention`]) removes only records older than their
//!   kind's limit; see there.
//!
//! Every method but the export waits for the stores through
//! [`crate::storage::block_on`]: async callers use `spawn_blocking`.

pub mod erase;
pub mod export;
pub mod retention;

use crate::delivery::{DeliveryQueue, QueueError};
use crate::devices::{DeviceError, DeviceStore};
use crate::digest::{DigestError, DigestStore};
use crate::inbox::{InboxError, InboxStore};
use crate::notifications::NotificationStore;
use crate::preferences::{PreferenceError, PreferenceStore};
use crate::rules::{PendingError, PendingTriggers};
use crate::storage::{EventStore, StorageError, Stores};

pub use erase::Erased;
pub use export::ExportedNotification;
pub(crate) use export::UserExport;
pub use retention::{RetentionConfig, RetentionReport};

/// Every store that holds data about users (the control plane's one set of
/// [`Stores`]). Cheap to clone.
#[derive(Clone)]
pub struct Privacy {
    store: EventStore,
    notifications: NotificationStore,
    queue: DeliveryQueue,
    inbox: InboxStore,
    devices: DeviceStore,
    preferences: PreferenceStore,
    digests: DigestStore,
    pending: PendingTriggers,
    topics: crate::storage::TopicTable,
    /// The analytics rollups' per-user data (engagement, sessions,
    /// per-user delivery figures); `None` in tools that run without them.
    analytics: Option<crate::analytics::Analytics>,
}

impl Privacy {
    /// Every store of `stores` that holds user data (the same ones the
    /// engine uses; nothing here needs the engine's in-memory hubs).
    pub fn open(stores: &Stores) -> Result<Self, PrivacyError> {
        Ok(Privacy {
            store: stores.events.clone(),
            notifications: stores.notifications.clone(),
            queue: stores.deliveries.clone(),
            inbox: stores.inbox.clone(),
            devices: stores.devices.clone(),
            preferences: stores.preferences.clone(),
            digests: stores.digests.clone(),
            pending: stores.pending.clone(),
            topics: stores.topics.clone(),
            analytics: None,
        })
    }

    /// Erases and exports the user's analytics too (the same instance
    /// the rollup worker runs, so erase and passes take turns).
    pub fn with_analytics(mut self, analytics: crate::analytics::Analytics) -> Self {
        self.analytics = Some(analytics);
        self
    }

    /// Lifts the user's tombstone; `false` when there was none.
    pub fn lift_erasure(&self, user_id: &str) -> Result<bool, PrivacyError> {
        Ok(crate::storage::block_on(self.store.lift_erasure(user_id))?)
    }
}

/// A store failed; nothing the caller sent was wrong, so it is worth
/// retrying (an erase is idempotent).
#[derive(Debug, thiserror::Error)]
pub enum PrivacyError {
    #[error(transparent)]
    Store(#[from] StorageError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Inbox(#[from] InboxError),
    #[error(transparent)]
    Devices(#[from] DeviceError),
    #[error(transparent)]
    Preferences(#[from] PreferenceError),
    #[error(transparent)]
    Digests(#[from] DigestError),
    #[error(transparent)]
    Pending(#[from] PendingError),
    #[error(transparent)]
    Analytics(#[from] crate::analytics::AnalyticsError),
}
