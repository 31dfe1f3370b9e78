//! Storage behind one trait, and the domain types it stores.
//!
//! Everything above this module (gRPC, HTTP, the pruner) talks to an
//! `Arc<dyn Store>` and never to sled, so another engine can replace the
//! embedded default later. The promises every implementation keeps:
//!
//! * [`Store::ingest`] is idempotent by [`Event::id`] for as long as the id is
//!   inside the dedupe window: a resend, or the same id in two concurrent
//!   calls, is stored exactly once and counted as a duplicate afterwards.
//! * [`Store::ingest`] returns only once everything it reports as stored (or
//!   as a duplicate of something stored) is durable, so a caller may ack it.
//! * Methods are synchronous and may block on disk: async code calls them
//!   through `tokio::task::spawn_blocking`.
//!
//! No wire types (tonic, axum) appear here.

mod sled_store;

use std::fmt;
use std::str::FromStr;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use sled_store::SledStore;

/// A JSON object, as Segment's `properties`, `traits`, `context` are.
pub type JsonObject = Map<String, Value>;

/// One call an application made, as the control plane stored it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The envelope id (the client's `messageId` or the agent's UUIDv7); the
    /// dedupe key.
    pub id: String,
    /// Known user, if the call named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// Anonymous (device/browser) id, if the call carried one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anonymous_id: Option<String>,
    /// When it happened, according to the client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<Timestamp>,
    /// When the client's library sent it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<Timestamp>,
    /// When the agent accepted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received_at: Option<Timestamp>,
    /// When the control plane accepted the batch carrying it.
    pub ingested_at: Timestamp,
    /// Which agent shipped it ("" when the agent did not say), for tracing
    /// a bad event back to its source.
    pub agent_id: String,
    /// The write key the call was made with, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_key: Option<String>,
    /// Segment's `context` object (empty when absent).
    #[serde(default)]
    pub context: JsonObject,
    /// Segment's `integrations` object (empty when absent).
    #[serde(default)]
    pub integrations: JsonObject,
    /// What kind of call it was, with the fields only that kind has.
    #[serde(flatten)]
    pub body: EventBody,
}

impl Event {
    /// The kind of call, without its fields.
    pub fn kind(&self) -> EventKind {
        match self.body {
            EventBody::Track { .. } => EventKind::Track,
            EventBody::Identify { .. } => EventKind::Identify,
            EventBody::Page { .. } => EventKind::Page,
            EventBody::Screen { .. } => EventKind::Screen,
            EventBody::Group { .. } => EventKind::Group,
            EventBody::Alias { .. } => EventKind::Alias,
            EventBody::SessionStart { .. } => EventKind::SessionStart,
            EventBody::SessionEnd { .. } => EventKind::SessionEnd,
            EventBody::Notify(_) => EventKind::Notify,
        }
    }
}

/// The kinds of calls an application can make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Track,
    Identify,
    Page,
    Screen,
    Group,
    Alias,
    SessionStart,
    SessionEnd,
    Notify,
}

impl EventKind {
    /// The stable name used in JSON and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Track => "track",
            EventKind::Identify => "identify",
            EventKind::Page => "page",
            EventKind::Screen => "screen",
            EventKind::Group => "group",
            EventKind::Alias => "alias",
            EventKind::SessionStart => "session_start",
            EventKind::SessionEnd => "session_end",
            EventKind::Notify => "notify",
        }
    }
}

/// The per-kind fields of an [`Event`]; serialized with a `"type"` tag next
/// to the common fields, so stored JSON reads like a Segment call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventBody {
    Track {
        event: String,
        #[serde(default)]
        properties: JsonObject,
    },
    Identify {
        #[serde(default)]
        traits: JsonObject,
    },
    Page {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        category: Option<String>,
        #[serde(default)]
        properties: JsonObject,
    },
    Screen {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        category: Option<String>,
        #[serde(default)]
        properties: JsonObject,
    },
    Group {
        group_id: String,
        #[serde(default)]
        traits: JsonObject,
    },
    Alias {
        previous_id: String,
    },
    SessionStart {
        session_id: String,
        #[serde(default)]
        properties: JsonObject,
    },
    SessionEnd {
        session_id: String,
        #[serde(default)]
        properties: JsonObject,
    },
    Notify(NotifyRequest),
}

/// An application's request to notify `Event::user_id`; the engine turns
/// it into a notification (which embeds it) and then deliveries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotifyRequest {
    /// Notification type, e.g. "payment_failed"; preferences are per type.
    pub notification_type: String,
    /// Template name; when absent, `title` and `body` are used as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Channels to use; empty means the type's defaults.
    #[serde(default)]
    pub channels: Vec<String>,
    /// Template data.
    #[serde(default)]
    pub data: JsonObject,
    #[serde(default)]
    pub priority: Priority,
    /// A resent notify with the same key creates one notification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// Cost of each message of this notification, overriding the
    /// configured cost per channel (e.g. a negotiated SMS price).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<crate::analytics::Money>,
}

/// Delivery priority of a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    Low,
    #[default]
    Normal,
    High,
}

/// What one [`Store::ingest`] call did with its events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestOutcome {
    /// Events newly stored by this call.
    pub stored: u32,
    /// Events whose id was already stored (resends absorbed by dedupe).
    pub duplicates: u32,
    /// Events dropped because their user was erased (see
    /// [`Store::erase_user`]): accepted, so the agent stops resending, and
    /// never stored.
    pub erased: u32,
    /// Events refused for good, with the reason.
    pub rejected: Vec<Rejected>,
}

/// What [`Store::erase_user`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ErasedEvents {
    /// The user's events (and their by-user index entries).
    pub events: u64,
    /// Whether a profile was removed.
    pub profile: bool,
}

/// An event that can never be stored, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub id: String,
    pub reason: String,
}

/// A user's profile: the traits of every `identify` merged, the last ingested
/// value winning per key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub user_id: String,
    pub traits: JsonObject,
    /// `ingested_at` of the last identify that changed the profile.
    pub updated_at: Timestamp,
}

/// An opaque position in a user's event history, for paging. Serialized as a
/// decimal string so JavaScript clients keep it exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor(pub u64);

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for Cursor {
    type Err = std::num::ParseIntError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(Cursor)
    }
}

impl Serialize for Cursor {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// One page of a user's events, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventPage {
    pub events: Vec<Event>,
    /// Pass as `after` to get the next page; `None` when this is the last.
    pub next: Option<Cursor>,
    /// For each event, the cursor that resumes right after it (for callers
    /// that stop in the middle of a page, e.g. when filtering).
    pub cursors: Vec<Cursor>,
}

/// Why a store operation failed. All variants are worth retrying later: the
/// data the caller sent was fine, the store was not.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage engine failed: {0}")]
    Engine(#[from] sled::Error),
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
    #[error("could not encode a record: {0}")]
    Encode(#[from] serde_json::Error),
}

/// The storage every control-plane component uses. Object safe, so it is
/// shared as `Arc<dyn Store>`.
pub trait Store: Send + Sync + 'static {
    /// Stores `events` that were not stored before (by id), durably, and says
    /// what happened to each. Ids repeated inside `events` count once.
    fn ingest(&self, events: Vec<Event>) -> Result<IngestOutcome, StoreError>;

    /// A user's events in ingest order, at most `limit`, starting after
    /// `after`.
    fn events_for_user(
        &self,
        user_id: &str,
        limit: usize,
        after: Option<Cursor>,
    ) -> Result<EventPage, StoreError>;

    /// Every user's events in ingest order, at most `limit`, starting after
    /// `after`: the feed the notification engine tails.
    fn events_after(&self, after: Option<Cursor>, limit: usize) -> Result<EventPage, StoreError>;

    /// The position of the newest stored event (`None` when there is
    /// none): how far behind a feed reader is.
    fn last_cursor(&self) -> Result<Option<Cursor>, StoreError>;

    /// The merged identify traits of a user, if any identify was stored.
    fn profile(&self, user_id: &str) -> Result<Option<Profile>, StoreError>;

    /// Forgets dedupe entries of events ingested before `older_than` and
    /// returns how many it removed. The events themselves stay.
    fn prune_dedupe(&self, older_than: Timestamp) -> Result<u64, StoreError>;

    /// How many events are stored.
    fn event_count(&self) -> Result<u64, StoreError>;

    /// How many event ids the dedupe window remembers.
    fn dedupe_count(&self) -> Result<u64, StoreError>;

    /// Makes every write so far durable (used at shutdown).
    fn flush(&self) -> Result<(), StoreError>;

    /// Erases a user (privacy): removes their events (by `user_id`) and
    /// profile, and leaves a tombstone (`erased_at` = `at`) so that events
    /// of this user ingested later are dropped (counted in
    /// [`IngestOutcome::erased`]) instead of stored. Dedupe entries stay: an
    /// id carries nothing about the user and ages out with the window.
    /// Idempotent; durable when it returns.
    fn erase_user(&self, user_id: &str, at: Timestamp) -> Result<ErasedEvents, StoreError>;

    /// When the user was erased, if a tombstone blocks their events.
    fn erased_at(&self, user_id: &str) -> Result<Option<Timestamp>, StoreError>;

    /// Removes the user's tombstone, so their events are stored again;
    /// `false` when there was none.
    fn lift_erasure(&self, user_id: &str) -> Result<bool, StoreError>;

    /// Retention: removes events ingested before `older_than`, oldest
    /// first, and returns how many. Profiles stay (they are the user's
    /// current state, not history); dedupe entries follow their own window.
    fn prune_events(&self, older_than: Timestamp) -> Result<u64, StoreError>;
}
