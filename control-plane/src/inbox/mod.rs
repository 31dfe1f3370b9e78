//! The inbox: every user's in-app notifications with their read state, the
//! counts behind the unread badge, and a change log that live streams
//! resume from.
//!
//! # Promises
//!
//! * **One item per in-app delivery.** The in-app channel adds items keyed
//!   by user and delivery id, so a retried delivery is one item, and a
//!   user's items are one key range, in time order (delivery ids are
//!   UUIDv7-derived).
//! * **Counts are exact.** The unread badge and the per-category counts
//!   are kept in the same SQL transaction as the items they count, so they
//!   never drift from a scan (which [`InboxStore::recount`] performs, and
//!   tests compare).
//! * **Every change is logged, in order, with the counts after it.** Each
//!   add, state change and delete appends a [`Change`] with the user's
//!   next sequence number (1, 2, 3, … per user, no gaps); a client that
//!   kept the last sequence it saw gets exactly the changes after it
//!   ([`InboxStore::changes_after`]), and live subscribers
//!   ([`InboxStore::subscribe`]) get them as they commit, in sequence
//!   order, or (for a change another replica committed) a [`Live`] notice
//!   to read them from the log. Several tabs of one user stay in step
//!   through these, on one replica or several.
//! * **Stored in SQL** (`storage::InboxTable`, tables `inbox_items`,
//!   `inbox_counts`, `inbox_changes`); this module keeps the rules, the
//!   listing's cursors and the live hub.
//! * **A listing request examines a bounded number of items**
//!   ([`SCAN_BUDGET`]) whatever its filters match: SQL checks type,
//!   category, read, archived and times on a bounded window of the user's
//!   key range, the text search is checked on what it returns. When the
//!   budget runs out first, the page holds what was found (possibly
//!   nothing) and a cursor that resumes the scan there; only a page
//!   without a cursor is the last.
//! * **A user only ever reaches their own items**: every call takes the
//!   user id, and ids are looked up under it, so another user's id is
//!   simply not found.

mod hub;
pub(crate) mod query;
pub mod snooze;
mod store;

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use hub::{Live, Subscription};
pub use query::{InboxQuery, Page, Sort};
pub use store::{Applied, InboxStore, SCAN_BUDGET};

/// One notification in a user's inbox. The field docs are the API's
/// descriptions; an absent option is left out of the JSON, never `null`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(description = "One notification in a user's inbox.")]
pub struct InboxItem {
    /// The in-app delivery's id (UUIDv7); sorts by time.
    #[serde(alias = "delivery_id")]
    pub id: String,
    pub notification_id: String,
    /// The notification type, e.g. `payment_failed`.
    #[serde(rename = "type")]
    pub notification_type: String,
    /// The type's category (e.g. `billing`); absent when the type has none
    /// (counted as `uncategorised`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub category: Option<String>,
    #[serde(alias = "subject")]
    pub title: String,
    #[serde(alias = "text")]
    pub body: String,
    /// Template data and event properties (any JSON; `null` when none).
    // Required in the document: the answer always carries it.
    #[serde(default)]
    #[schema(required = true)]
    pub data: Value,
    /// RFC 3339 time.
    pub created_at: Timestamp,
    /// Shown to the user (not necessarily read); absent when not yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub seen_at: Option<Timestamp>,
    /// Absent when unread.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub read_at: Option<Timestamp>,
    /// Absent when not archived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub archived_at: Option<Timestamp>,
    // See [`snooze`].
    /// Hidden from listings and the badge until then; absent when not
    /// snoozed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub snoozed_until: Option<Timestamp>,
}

impl InboxItem {
    pub fn is_read(&self) -> bool {
        self.read_at.is_some()
    }

    pub fn is_archived(&self) -> bool {
        self.archived_at.is_some()
    }

    pub fn is_snoozed(&self) -> bool {
        self.snoozed_until.is_some()
    }

    /// Counted in the badge: unread, not archived and not snoozed.
    fn counts_as_unread(&self) -> bool {
        !self.is_read() && !self.is_archived() && !self.is_snoozed()
    }

    /// Back from a snooze: shown again, as unread and unseen, so the badge
    /// and the "new" dot bring it to the user's attention again.
    fn wake(&mut self) {
        self.snoozed_until = None;
        self.read_at = None;
        self.seen_at = None;
    }

    fn category_name(&self) -> &str {
        self.category.as_deref().unwrap_or(UNCATEGORISED)
    }
}

/// The category of items whose type has none.
pub const UNCATEGORISED: &str = "uncategorised";

/// What a user's badge and category tabs show. Archived items are in
/// `total` but never in `unread`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(description = "What a user's badge and category tabs show.")]
pub struct Counts {
    /// Unread, not archived and not snoozed: the badge.
    pub unread: u64,
    /// Unread and not yet seen: a "new" dot.
    pub unseen: u64,
    /// Archived and snoozed items included.
    pub total: u64,
    /// Per category name (`uncategorised` for types without one).
    pub categories: BTreeMap<String, CategoryCounts>,
}

/// One category's unread and total items.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CategoryCounts {
    pub unread: u64,
    pub total: u64,
}

impl Counts {
    pub(crate) fn add(&mut self, item: &InboxItem) {
        self.apply(item, 1);
    }

    pub(crate) fn remove(&mut self, item: &InboxItem) {
        self.apply(item, -1);
    }

    fn apply(&mut self, item: &InboxItem, sign: i64) {
        let step = |value: &mut u64| {
            *value = value.saturating_add_signed(sign);
        };
        step(&mut self.total);
        let unread = item.counts_as_unread();
        if unread {
            step(&mut self.unread);
            if item.seen_at.is_none() {
                step(&mut self.unseen);
            }
        }
        let category = self
            .categories
            .entry(item.category_name().to_owned())
            .or_default();
        step(&mut category.total);
        if unread {
            step(&mut category.unread);
        }
        if category.total == 0 {
            self.categories.remove(item.category_name());
        }
    }
}

/// What a user (or an API call on their behalf) does to items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Read,
    Unread,
    Seen,
    Archive,
    Unarchive,
    Delete,
    /// Hide the item until this time (a later snooze moves it). The store
    /// refuses a time that is not in the future or too far ahead
    /// ([`snooze::check_until`]).
    Snooze(Timestamp),
    /// Bring a snoozed item back now, as unread (cancel early).
    Unsnooze,
    /// The waker's: bring the item back if its snooze is due at the
    /// action's `now`. Checked on the locked row, so an item snoozed again
    /// (later) since the waker found it stays hidden.
    WakeIfDue,
}

impl Action {
    /// Applies the action to `item` at `now`; `false` when nothing
    /// changed (already read, …), so no change is logged.
    pub(crate) fn apply(self, item: &mut InboxItem, now: Timestamp) -> bool {
        let set = |field: &mut Option<Timestamp>| {
            if field.is_some() {
                return false;
            }
            *field = Some(now);
            true
        };
        match self {
            // Reading implies seeing.
            Action::Read => {
                let seen = set(&mut item.seen_at);
                set(&mut item.read_at) || seen
            }
            Action::Unread => item.read_at.take().is_some(),
            Action::Seen => set(&mut item.seen_at),
            Action::Archive => set(&mut item.archived_at),
            Action::Unarchive => item.archived_at.take().is_some(),
            Action::Delete => true,
            Action::Snooze(until) => {
                let changed = item.snoozed_until != Some(until);
                item.snoozed_until = Some(until);
                changed
            }
            Action::Unsnooze => {
                let snoozed = item.is_snoozed();
                if snoozed {
                    item.wake();
                }
                snoozed
            }
            Action::WakeIfDue => {
                let due = item.snoozed_until.is_some_and(|until| until <= now);
                if due {
                    item.wake();
                }
                due
            }
        }
    }
}

/// One entry of a user's change log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Change {
    /// The user's change number: 1, 2, 3, … per user; resume after the
    /// last one seen.
    pub seq: u64,
    pub at: Timestamp,
    pub kind: ChangeKind,
    /// The item after the change (absent for a delete).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub item: Option<InboxItem>,
    /// The item's id (also for a delete).
    pub id: String,
    /// The user's counts after the change: keeps badges in step.
    pub counts: Counts,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    Added,
    Updated,
    Deleted,
}

#[derive(Debug, thiserror::Error)]
pub enum InboxError {
    #[error("inbox storage: {0}")]
    Storage(#[from] crate::storage::StorageError),
    #[error("{0}")]
    Invalid(String),
}

#[cfg(test)]
mod tests;
