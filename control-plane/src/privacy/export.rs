//! [`Privacy::write_export`]: everything held about a user as one JSON
//! document (the answer of `GET /v1/admin/users/{id}/export`), written
//! page by page into a [`ChunkSink`] so a user with a long history is
//! exported in bounded memory.
//!
//! The document is one object, its members in this order: `user_id`,
//! `exported_at`, `erased_at` (set when the user was erased; everything
//! else is then empty), `profile`, `events` (in ingest order),
//! `notifications` (newest first, each with its `deliveries` and their
//! attempt logs), `inbox` (by id, archived items too), `devices`,
//! `preferences` (`null` when the user never changed the operator's
//! defaults), `pending_triggers`, `topics` (the topics the user follows),
//! and `analytics` (what the rollups hold
//! about the user: the `users`, `user_events`, `sessions` and `delivery`
//! reports, all time; left out when the analytics do not run here).
//!
//! The long lists (events, notifications, inbox) are read [`PAGE`] rows
//! per store call and flushed after each page; the short ones (a user's
//! devices, preferences, pending triggers, analytics reports) in one read.
//! A store that fails midway ends the stream with an error
//! ([`crate::chunks`]), never with a document that looks complete.
//!
//! Digest items are not listed on their own: each is a copy of one of the
//! user's notifications, which are. Device tokens are included: the
//! export is the user's own data, handed to the user.

use jiff::Timestamp;
use serde::Serialize;
use uuid::Uuid;

use super::Privacy;
use crate::broadcasts::Subscription;
use crate::chunks::{ChunkSink, StreamError};
use crate::delivery::Delivery;
use crate::devices::Device;
use crate::event::{Event, Profile};
use crate::inbox::InboxItem;
use crate::notifications::Notification;
use crate::preferences::UserPreferences;
use crate::rules::Pending;

/// Rows read per store call (and so at most per chunk) of each long list.
pub const PAGE: usize = 500;

/// A notification with every delivery planned for it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ExportedNotification {
    #[serde(flatten)]
    pub notification: Notification,
    pub deliveries: Vec<Delivery>,
}

/// The document [`Privacy::write_export`] writes, member by member: the
/// API's schema of it (`UserExport`). Never built: a whole history would
/// then sit in memory. `deny_unknown_fields` makes the schema refuse a
/// member this struct does not name, so the contract check of every
/// test's answers catches a member written but not described here (and
/// `required` one described but not written).
#[derive(Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(
    description = "Everything held about a user. An unknown user gets empty lists; an erased one (`erased_at` set) too."
)]
pub(crate) struct UserExport {
    user_id: String,
    exported_at: Timestamp,
    /// When the user was erased; `null` unless they were.
    #[schema(required = true)]
    erased_at: Option<Timestamp>,
    #[schema(required = true)]
    profile: Option<Profile>,
    /// In ingest order.
    events: Vec<Event>,
    /// Newest first, each with its deliveries and their attempt logs.
    notifications: Vec<ExportedNotification>,
    /// By id, archived items too.
    inbox: Vec<InboxItem>,
    /// Tokens included: the export is the user's own data.
    devices: Vec<Device>,
    /// `null` when the user never changed the operator's defaults.
    #[schema(required = true)]
    preferences: Option<UserPreferences>,
    /// Delayed rule triggers not fired yet.
    pending_triggers: Vec<Pending>,
    /// The topics the user follows.
    topics: Vec<Subscription>,
    /// What the analytics hold about the user (the `users`, `user_events`,
    /// `sessions` and `delivery` reports, all time); absent when the
    /// analytics do not run on this control plane.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object, nullable = false)]
    analytics: Option<serde_json::Value>,
}

/// Writes `"name":` (after a comma unless it opens the object).
fn member(sink: &mut ChunkSink, name: &str, first: bool) -> Result<(), StreamError> {
    if !first {
        sink.write(b",\n");
    }
    sink.write_json(name)?;
    sink.write(b":");
    Ok(())
}

/// Writes one element of an array that `count` elements precede.
fn element<T: Serialize>(
    sink: &mut ChunkSink,
    value: &T,
    count: &mut usize,
) -> Result<(), StreamError> {
    if *count > 0 {
        sink.write(b",");
    }
    sink.write(b"\n");
    sink.write_json(value)?;
    *count += 1;
    Ok(())
}

impl Privacy {
    /// Writes everything held about `user_id` into `sink`, as described in
    /// the module doc, flushing after each page read.
    pub async fn write_export(
        &self,
        user_id: &str,
        now: Timestamp,
        sink: &mut ChunkSink,
    ) -> Result<(), StreamError> {
        sink.write(b"{");
        member(sink, "user_id", true)?;
        sink.write_json(user_id)?;
        member(sink, "exported_at", false)?;
        sink.write_json(&now)?;
        member(sink, "erased_at", false)?;
        sink.write_json(
            &self
                .store
                .erased_at(user_id)
                .await
                .map_err(StreamError::source)?,
        )?;
        member(sink, "profile", false)?;
        sink.write_json(
            &self
                .store
                .profile(user_id)
                .await
                .map_err(StreamError::source)?,
        )?;
        sink.flush().await?;

        member(sink, "events", false)?;
        sink.write(b"[");
        let (mut count, mut after) = (0, None);
        loop {
            let page = self
                .store
                .events_for_user(user_id, PAGE, after)
                .await
                .map_err(StreamError::source)?;
            for event in &page.events {
                element(sink, event, &mut count)?;
            }
            sink.flush().await?;
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        sink.write(b"]");

        member(sink, "notifications", false)?;
        sink.write(b"[");
        let (mut count, mut before) = (0, None::<String>);
        loop {
            let page = self
                .notifications
                .page_for_user(user_id, before.as_deref(), PAGE)
                .await
                .map_err(StreamError::source)?;
            let full = page.len() == PAGE;
            before = page.last().map(|notification| notification.id.clone());
            for notification in page {
                let deliveries = match Uuid::parse_str(&notification.id) {
                    Ok(id) => self
                        .queue
                        .for_notification(id)
                        .await
                        .map_err(StreamError::source)?,
                    Err(_) => Vec::new(),
                };
                let exported = ExportedNotification {
                    notification,
                    deliveries,
                };
                element(sink, &exported, &mut count)?;
            }
            sink.flush().await?;
            if !full {
                break;
            }
        }
        sink.write(b"]");

        member(sink, "inbox", false)?;
        sink.write(b"[");
        let (mut count, mut after) = (0, None::<String>);
        loop {
            let page = self
                .inbox
                .items_after(user_id, after.as_deref(), PAGE)
                .await
                .map_err(StreamError::source)?;
            let full = page.len() == PAGE;
            after = page.last().map(|item| item.id.clone());
            for item in &page {
                element(sink, item, &mut count)?;
            }
            sink.flush().await?;
            if !full {
                break;
            }
        }
        sink.write(b"]");

        member(sink, "devices", false)?;
        sink.write_json(
            &self
                .devices
                .list(user_id)
                .await
                .map_err(StreamError::source)?,
        )?;
        member(sink, "preferences", false)?;
        sink.write_json(
            &self
                .preferences
                .stored(user_id)
                .await
                .map_err(StreamError::source)?,
        )?;
        member(sink, "pending_triggers", false)?;
        sink.write_json(
            &self
                .pending
                .for_user(user_id)
                .await
                .map_err(StreamError::source)?,
        )?;
        member(sink, "topics", false)?;
        sink.write_json(
            &self
                .topics
                .of_user(user_id)
                .await
                .map_err(StreamError::source)?,
        )?;
        if let Some(analytics) = &self.analytics {
            // The reports are synchronous (they wait on the store through
            // `block_on`): off the async workers.
            let analytics = analytics.clone();
            let user = user_id.to_owned();
            let report = tokio::task::spawn_blocking(move || analytics.export_user(&user))
                .await
                .map_err(StreamError::source)?
                .map_err(StreamError::source)?;
            member(sink, "analytics", false)?;
            sink.write_json(&report)?;
        }
        sink.write(b"}\n");
        sink.flush().await
    }
}
