//! The control plane's event vocabulary: one call an application made
//! ([`Event`], its kind and fields), what an ingest did with a batch, user
//! profiles, and the cursors that page through events. Storage of these
//! lives in [`crate::storage`]; no wire types (tonic, axum) appear here.

use std::fmt;
use std::str::FromStr;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A JSON object, as Segment's `properties`, `traits`, `context` are.
pub type JsonObject = Map<String, Value>;

mod deserialize;

// `Deserialize` is written by hand ([`deserialize`]): it reads what the
// derived `Serialize` writes without buffering the whole event first.
/// One call an application made, as the control plane stored it
/// (Segment-shaped): the common fields, and the kind's own next to its
/// `type`.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Event {
    /// The envelope id (the client's `messageId` or the agent's UUIDv7); the
    /// dedupe key.
    pub id: String,
    /// Known user, if the call named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub user_id: Option<String>,
    /// Anonymous (device/browser) id, if the call carried one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub anonymous_id: Option<String>,
    /// When it happened, according to the client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub timestamp: Option<Timestamp>,
    /// When the client's library sent it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub sent_at: Option<Timestamp>,
    /// When the agent accepted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub received_at: Option<Timestamp>,
    /// When the control plane accepted the batch carrying it.
    pub ingested_at: Timestamp,
    /// Which agent shipped it ("" when the agent did not say), for tracing
    /// a bad event back to its source.
    pub agent_id: String,
    /// The write key the call was made with, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub write_key: Option<String>,
    /// Segment's `context` object (empty when absent).
    #[serde(default)]
    #[schema(required = true, value_type = Object)]
    pub context: JsonObject,
    /// Segment's `integrations` object (empty when absent).
    #[serde(default)]
    #[schema(required = true, value_type = Object)]
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

/// The kind of call and the fields only that kind has, under a `type` tag
/// next to the event's common fields, so a stored event reads like a
/// Segment call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventBody {
    Track {
        event: String,
        #[serde(default)]
        #[schema(required = true, value_type = Object)]
        properties: JsonObject,
    },
    Identify {
        #[serde(default)]
        #[schema(required = true, value_type = Object)]
        traits: JsonObject,
    },
    Page {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schema(nullable = false)]
        name: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schema(nullable = false)]
        category: Option<String>,
        #[serde(default)]
        #[schema(required = true, value_type = Object)]
        properties: JsonObject,
    },
    Screen {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schema(nullable = false)]
        name: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schema(nullable = false)]
        category: Option<String>,
        #[serde(default)]
        #[schema(required = true, value_type = Object)]
        properties: JsonObject,
    },
    Group {
        group_id: String,
        #[serde(default)]
        #[schema(required = true, value_type = Object)]
        traits: JsonObject,
    },
    Alias {
        previous_id: String,
    },
    SessionStart {
        session_id: String,
        #[serde(default)]
        #[schema(required = true, value_type = Object)]
        properties: JsonObject,
    },
    SessionEnd {
        session_id: String,
        #[serde(default)]
        #[schema(required = true, value_type = Object)]
        properties: JsonObject,
    },
    Notify(NotifyRequest),
}

/// An application's request to notify `Event::user_id`; the engine turns
/// it into a notification (which embeds it) and then deliveries. The
/// field docs are the API's descriptions (`Notification` in the admin
/// API shows these fields); the schema marks as required what a stored
/// notification always carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(description = "What was asked: the notify call's fields, or a rule's.")]
pub struct NotifyRequest {
    /// Notification type, e.g. "payment_failed"; preferences are per type.
    pub notification_type: String,
    /// Template name; when absent, `title` and `body` are used as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub template: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub body: Option<String>,
    // Typed: a name that is no channel is refused where the call comes in
    // (the agent's intake, gRPC), never carried to the engine.
    /// Channels to use; empty: the type's defaults.
    #[serde(default)]
    #[schema(required = true)]
    pub channels: Vec<crate::channels::ChannelKind>,
    /// Template data.
    #[serde(default)]
    #[schema(required = true, value_type = Object)]
    pub data: JsonObject,
    #[serde(default)]
    #[schema(required = true)]
    pub priority: Priority,
    /// A resent notify with the same key creates one notification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub idempotency_key: Option<String>,
    /// Cost of each message of this notification in the configured
    /// currency, as a decimal string ("0.05"), overriding the configured
    /// cost per channel (e.g. a negotiated SMS price). Absent: the
    /// configured cost per channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, format = "decimal", pattern = "^[0-9]+(\\.[0-9]{1,6})?$")]
    pub cost: Option<crate::money::Money>,
}

/// A notification's priority, which its deliveries keep: within a channel
/// every due `High` is sent before any due `Normal`, which goes before any
/// due `Low`. One type from the notify call to the queue's due index.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
#[schema(
    description = "Within a channel every due `high` delivery is sent before any due `normal` one, which goes before any due `low` one."
)]
pub enum Priority {
    Low,
    #[default]
    Normal,
    High,
}

impl Priority {
    pub const ALL: [Priority; 3] = [Priority::Low, Priority::Normal, Priority::High];

    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Normal => "normal",
            Priority::High => "high",
        }
    }
}

/// What one [`crate::storage::EventStore::ingest`] call did with its events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestOutcome {
    /// Events newly stored by this call.
    pub stored: u32,
    /// Events whose id was already stored (resends absorbed by dedupe).
    pub duplicates: u32,
    /// Events dropped because their user was erased (see
    /// [`crate::storage::EventStore::erase_user`]): accepted, so the agent stops resending, and
    /// never stored.
    pub erased: u32,
    /// Events refused for good, with the reason.
    pub rejected: Vec<Rejected>,
}

/// What [`crate::storage::EventStore::erase_user`] removed.
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(description = "A user's merged identify traits.")]
pub struct Profile {
    pub user_id: String,
    #[schema(value_type = Object)]
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
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct EventPage {
    /// Oldest first.
    pub events: Vec<Event>,
    /// Pass as `after` to get the next page; null on the last.
    #[schema(required = true, value_type = Option<String>)]
    pub next: Option<Cursor>,
    /// For each event, the cursor that resumes right after it (for callers
    /// that stop in the middle of a page, e.g. when filtering).
    #[schema(value_type = Vec<String>)]
    pub cursors: Vec<Cursor>,
}

/// How many partitions the event feed is split into (see
/// [`FeedPartition`]). Fixed: changing it would move users between
/// partitions, so it is part of the stored data's meaning.
pub const FEED_PARTITIONS: u16 = 32;

/// Which share of the event feed an event belongs to: replicas lease
/// partitions, so each event is planned by one replica, and one user's
/// events (all in one partition) are planned in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FeedPartition(pub u16);

impl FeedPartition {
    /// The partition of `event`: by its user, else its anonymous id, else
    /// its own id. FNV-1a, so the mapping is stable across builds and
    /// platforms (it is stored with every event).
    pub fn of(event: &Event) -> FeedPartition {
        let key = event
            .user_id
            .as_deref()
            .or(event.anonymous_id.as_deref())
            .unwrap_or(&event.id);
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in key.as_bytes() {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        // The remainder is below FEED_PARTITIONS, which fits a u16.
        FeedPartition(u16::try_from(hash % u64::from(FEED_PARTITIONS)).unwrap_or(0))
    }

    /// Every partition, in order.
    pub fn all() -> impl Iterator<Item = FeedPartition> {
        (0..FEED_PARTITIONS).map(FeedPartition)
    }
}

impl fmt::Display for FeedPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}", self.0)
    }
}
