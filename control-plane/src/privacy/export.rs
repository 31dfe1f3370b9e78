//! [`Privacy::export_user`]: everything held about a user as one JSON
//! document (the answer of `GET /v1/admin/users/{id}/export`).
//!
//! Digest items are not listed on their own: each is a copy of one of the
//! user's notifications, which are. Device tokens are included: the
//! export is the user's own data, handed to the user.

use jiff::Timestamp;
use serde::Serialize;
use uuid::Uuid;

use super::{Privacy, PrivacyError};
use crate::delivery::Delivery;
use crate::devices::Device;
use crate::event::{Event, Profile};
use crate::inbox::InboxItem;
use crate::notifications::Notification;
use crate::preferences::UserPreferences;
use crate::rules::Pending;
use crate::storage::block_on;

/// Events read per store call while exporting.
const PAGE: usize = 1000;

/// One user's data.
#[derive(Debug, Clone, Serialize)]
pub struct UserExport {
    pub user_id: String,
    pub exported_at: Timestamp,
    /// Set when the user was erased (then everything else is empty).
    pub erased_at: Option<Timestamp>,
    pub profile: Option<Profile>,
    /// In ingest order.
    pub events: Vec<Event>,
    /// Newest first, each with its deliveries and their attempt logs.
    pub notifications: Vec<ExportedNotification>,
    pub inbox: Vec<InboxItem>,
    pub devices: Vec<Device>,
    /// `None` when the user never changed the operator's defaults.
    pub preferences: Option<UserPreferences>,
    pub pending_triggers: Vec<Pending>,
    /// What the analytics hold about the user: the `users`, `user_events`,
    /// `sessions` and `delivery` reports for them (all time). `None` when
    /// the analytics do not run here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub analytics: Option<serde_json::Value>,
}

/// A notification with every delivery planned for it.
#[derive(Debug, Clone, Serialize)]
pub struct ExportedNotification {
    #[serde(flatten)]
    pub notification: Notification,
    pub deliveries: Vec<Delivery>,
}

impl Privacy {
    /// Collects everything held about `user_id`.
    pub fn export_user(&self, user_id: &str, now: Timestamp) -> Result<UserExport, PrivacyError> {
        let mut events = Vec::new();
        let mut after = None;
        loop {
            let page = block_on(self.store.events_for_user(user_id, PAGE, after))?;
            events.extend(page.events);
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        let mut notifications = Vec::new();
        for notification in block_on(self.notifications.list_for_user(user_id, usize::MAX))? {
            let deliveries = match Uuid::parse_str(&notification.id) {
                Ok(id) => block_on(self.queue.for_notification(id))?,
                Err(_) => Vec::new(),
            };
            notifications.push(ExportedNotification {
                notification,
                deliveries,
            });
        }
        Ok(UserExport {
            user_id: user_id.to_owned(),
            exported_at: now,
            erased_at: block_on(self.store.erased_at(user_id))?,
            profile: block_on(self.store.profile(user_id))?,
            events,
            notifications,
            inbox: block_on(self.inbox.items_of(user_id))?,
            devices: block_on(self.devices.list(user_id))?,
            preferences: block_on(self.preferences.stored(user_id))?,
            pending_triggers: block_on(self.pending.for_user(user_id))?,
            analytics: match &self.analytics {
                Some(analytics) => Some(analytics.export_user(user_id)?),
                None => None,
            },
        })
    }
}
