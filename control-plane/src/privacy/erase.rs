//! [`Privacy::erase_user`]: removes a user from every store, tombstone
//! first (see the promises in [`super`]).
//!
//! Order matters: the tombstone stops new events; pending triggers and
//! digest items go before notifications so neither fires a new one in
//! between; deliveries go with their notifications; the rest last.

use jiff::Timestamp;
use serde::Serialize;
use uuid::Uuid;

use super::{Privacy, PrivacyError};
use crate::storage::block_on;

// The answer of `DELETE /v1/admin/users/{id}`.
/// What one erase removed: counts of records (zeros on a repeat).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[schema(as = UserErasure)]
pub struct Erased {
    pub user_id: String,
    /// When the user was first erased (the tombstone's time).
    #[schema(required = true)]
    pub erased_at: Option<Timestamp>,
    pub events: u64,
    pub profile: bool,
    pub notifications: usize,
    pub deliveries: usize,
    pub inbox_items: usize,
    pub devices: usize,
    pub preferences: bool,
    pub digest_items: usize,
    pub pending_triggers: usize,
    /// Topics the user followed.
    pub topic_subscriptions: usize,
    /// Per-user analytics records (engagement, sessions, links, figures).
    pub analytics_records: usize,
}

impl Privacy {
    /// Erases `user_id` everywhere, at `now`; idempotent. Durable when it
    /// returns.
    pub fn erase_user(&self, user_id: &str, now: Timestamp) -> Result<Erased, PrivacyError> {
        let events = block_on(self.store.erase_user(user_id, now))?;
        let pending_triggers = block_on(self.pending.erase_user(user_id))?;
        let digest_items = block_on(self.digests.erase_user(user_id))?;
        let notifications = block_on(self.notifications.erase_user(user_id))?;
        let mut deliveries = 0;
        for notification in &notifications {
            let Ok(id) = Uuid::parse_str(&notification.id) else {
                continue;
            };
            for delivery in block_on(self.queue.for_notification(id))? {
                deliveries += usize::from(block_on(self.queue.delete(delivery.id))?.is_some());
            }
        }
        let inbox_items = block_on(self.inbox.erase_user(user_id))?;
        let devices = block_on(self.devices.erase_user(user_id))?;
        let preferences = block_on(self.preferences.erase_user(user_id))?;
        let topic_subscriptions = block_on(self.topics.erase_user(user_id))?;
        let analytics_records = match &self.analytics {
            Some(analytics) => analytics.erase_user(user_id)?,
            None => 0,
        };
        tracing::info!(
            events = events.events,
            notifications = notifications.len(),
            deliveries,
            "user erased"
        );
        Ok(Erased {
            user_id: user_id.to_owned(),
            erased_at: block_on(self.store.erased_at(user_id))?,
            events: events.events,
            profile: events.profile,
            notifications: notifications.len(),
            deliveries,
            inbox_items,
            devices,
            preferences,
            digest_items,
            pending_triggers,
            topic_subscriptions,
            analytics_records,
        })
    }
}
