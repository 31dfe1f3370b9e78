//! Topics and broadcasts: one notify for many users.
//!
//! * A **topic** is a name users subscribe to: through the API on their
//!   behalf (admin HTTP, gRPC), or by a subscription rule when they send a
//!   tracked event (see [`rules`]). Users see their topics and can leave
//!   one (`/v1/me/topics`); joining is the application's call, because a
//!   topic name may be private (a project's id).
//! * A **broadcast** is a notify sent to an [`Audience`]: a topic's
//!   subscribers, or a [`Segment`] of users (traits that match conditions,
//!   recent activity). It is created once per id (the caller's idempotency
//!   key), at a time of the caller's choosing, and then *fanned out* by the
//!   engine (see `engine::broadcast`): one notification per recipient, each
//!   planned like any notify, so each recipient's preferences, quiet hours
//!   and throttles apply.
//!
//! # Promises
//!
//! * **One id, one broadcast.** Creating it again with the same content
//!   returns the first (its progress included); different content under
//!   the same id is refused ([`Conflict`]).
//! * **Each recipient gets one notification**, however often the fan-out
//!   is interrupted and resumed: a recipient's notification has the source
//!   id `broadcast:<id>:<user>` ([`source_id`]), which the notification
//!   store creates once.
//! * **Progress is durable and visible.** The fan-out walks the audience in
//!   user id order, a page at a time, and records after each page how far
//!   it got and how many users it scanned, reached and created
//!   notifications for.
//! * **Cancellation** stops the fan-out before its next page and recalls
//!   what was planned but is still held (quiet hours, a workflow's wait):
//!   such a delivery carries the broadcast's id and is checked when it
//!   comes due ([`crate::send_check`]), ending `cancelled`. What already
//!   went out, or waits in a digest, stays. A done broadcast can be
//!   cancelled (to recall what is held); a cancelled one not again.
//!
//! Erased users are never notified (the notification store checks the
//! tombstone); erasing a user removes their subscriptions.

pub mod rules;

use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::event::{JsonObject, NotifyRequest};
use crate::rules::Condition;

/// Longest topic name or broadcast id, in bytes.
pub const MAX_NAME_BYTES: usize = 128;
/// [`check_name`]'s rule as a JSON Schema pattern, for the API document.
pub fn name_pattern() -> String {
    format!("^[A-Za-z0-9_.:/@-]{{1,{MAX_NAME_BYTES}}}$")
}

/// Longest time ahead a broadcast may be scheduled.
pub const MAX_SCHEDULE_AHEAD: Duration = Duration::from_secs(366 * 86_400);
/// Longest `active_within` a segment may have.
pub const MAX_ACTIVE_WITHIN: Duration = Duration::from_secs(9999 * 86_400);
/// Most conditions a segment may have.
pub const MAX_CONDITIONS: usize = 32;

/// A topic name or broadcast id: 1 to 128 bytes of `A-Z a-z 0-9 _ . : - /
/// @`, so it reads well in URLs and logs and never needs escaping.
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b"_.:-/@".contains(&b);
    if name.is_empty() || name.len() > MAX_NAME_BYTES || !name.bytes().all(allowed) {
        return Err(format!(
            "{what} {name:?} is invalid: use 1 to {MAX_NAME_BYTES} characters of A-Z a-z 0-9 _ . : - / @"
        ));
    }
    Ok(())
}

/// The source id of the notification a broadcast creates for a user.
pub fn source_id(broadcast_id: &str, user_id: &str) -> String {
    format!("broadcast:{broadcast_id}:{user_id}")
}

// JSON: `{"topic": "news"}` or `{"segment": {…}}`.
/// Who a broadcast goes to: a topic's subscribers, or a segment of users.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Audience {
    /// The topic's subscribers when the fan-out reaches them.
    Topic(String),
    Segment(Segment),
}

/// Users whose profile traits satisfy every condition, and (with
/// `active_within`) who sent an event within that long before the fan-out
/// reached them. At least one of the two is set.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Segment {
    /// Conditions on the user's traits (from identify calls), as a rule's
    /// `when` on event properties: `{property, op, value}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(schema_with = trait_conditions)]
    pub traits: Vec<Condition>,
    /// Only users with an event ingested in that window, written in the
    /// largest unit that divides it (`7d`, `36h`, `90m`, `45s`).
    #[serde(default, with = "window", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, pattern = "^[1-9][0-9]*(s|m|h|d)$")]
    pub active_within: Option<Duration>,
}

// The conditions' schema (`TraitCondition`, `http::broadcast_schemas`): its
// `oneOf` by operator is stricter than [`Condition`]'s fields.
fn trait_conditions() -> utoipa::openapi::Array {
    use utoipa::openapi::schema::{ArrayBuilder, Ref};
    ArrayBuilder::new()
        .items(Ref::from_schema_name("TraitCondition"))
        .max_items(Some(MAX_CONDITIONS))
        .build()
}

/// `active_within` as text: read as humantime (`7d`, `1h 30m`), written in
/// the largest unit that divides it (`7d`, `90m`), the form the HTTP API
/// documents. Whole seconds only (checked by [`Audience::validate`]).
mod window {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(duration) => s.collect_str(&format(*duration)),
            None => s.serialize_none(),
        }
    }

    /// Absent is `None` (`#[serde(default)]`); `null` is refused like any
    /// other non-duration.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text)
            .map(Some)
            .map_err(serde::de::Error::custom)
    }

    pub fn format(duration: Duration) -> String {
        let seconds = duration.as_secs();
        [(86_400, "d"), (3_600, "h"), (60, "m")]
            .into_iter()
            .find(|(unit, _)| seconds > 0 && seconds.is_multiple_of(*unit))
            .map_or_else(
                || format!("{seconds}s"),
                |(unit, name)| format!("{}{name}", seconds / unit),
            )
    }
}

impl Segment {
    /// Whether `traits` satisfy every condition.
    pub fn matches(&self, traits: &JsonObject) -> bool {
        self.traits.iter().all(|condition| condition.holds(traits))
    }
}

impl Audience {
    /// Checks what serde cannot; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Audience::Topic(topic) => check_name("audience.topic", topic),
            Audience::Segment(segment) => {
                if segment.traits.is_empty() && segment.active_within.is_none() {
                    return Err(
                        "audience.segment needs `traits` conditions, `active_within`, or both"
                            .to_owned(),
                    );
                }
                if segment.traits.len() > MAX_CONDITIONS {
                    return Err(format!(
                        "audience.segment.traits has {} conditions; at most {MAX_CONDITIONS}",
                        segment.traits.len()
                    ));
                }
                for (index, condition) in segment.traits.iter().enumerate() {
                    if let Some(problem) = condition.problem() {
                        return Err(format!(
                            "audience.segment.traits[{index}] (`{}` {}): {problem}",
                            condition.property, condition.op
                        ));
                    }
                }
                if let Some(within) = segment.active_within
                    && (within.is_zero()
                        || within.subsec_nanos() != 0
                        || within > MAX_ACTIVE_WITHIN)
                {
                    return Err(format!(
                        "audience.segment.active_within is {}; it must be whole seconds, \
                         longer than zero and at most 9999 days",
                        humantime::format_duration(within)
                    ));
                }
                Ok(())
            }
        }
    }
}

/// Where a broadcast is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(
    description = "`scheduled` (waiting for its time), `running`, `done` (every recipient's notification planned) or `cancelled`."
)]
pub enum BroadcastState {
    /// Waiting for its `send_at`.
    Scheduled,
    /// Being fanned out.
    Running,
    /// Every recipient's notification was planned.
    Done,
    /// Stopped by a caller before it was done.
    Cancelled,
}

impl BroadcastState {
    pub fn as_str(self) -> &'static str {
        match self {
            BroadcastState::Scheduled => "scheduled",
            BroadcastState::Running => "running",
            BroadcastState::Done => "done",
            BroadcastState::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            BroadcastState::Scheduled,
            BroadcastState::Running,
            BroadcastState::Done,
            BroadcastState::Cancelled,
        ]
        .into_iter()
        .find(|state| state.as_str() == text)
    }

    /// Whether the fan-out still has work (and a cancel still applies).
    pub fn is_open(self) -> bool {
        matches!(self, BroadcastState::Scheduled | BroadcastState::Running)
    }
}

/// What a caller asks to broadcast: the part that must be the same when
/// the id is used again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BroadcastSpec {
    /// What each recipient's notification says (its `idempotency_key` is
    /// never set: the broadcast id is the key).
    pub request: NotifyRequest,
    pub audience: Audience,
    /// The start time asked for; absent: at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub send_at: Option<Timestamp>,
}

impl BroadcastSpec {
    /// Checks the audience and the send time (the request was checked when
    /// it was converted, like a notify's). `now` is the caller's clock.
    pub fn validate(&self, now: Timestamp) -> Result<(), String> {
        self.audience.validate()?;
        if let Some(at) = self.send_at {
            let latest = now
                .checked_add(MAX_SCHEDULE_AHEAD)
                .unwrap_or(Timestamp::MAX);
            if at > latest {
                return Err(format!(
                    "send_at {at} is more than 366 days ahead (latest {latest})"
                ));
            }
        }
        Ok(())
    }
}

/// A broadcast with its fan-out progress.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Broadcast {
    pub id: String,
    #[serde(flatten)]
    pub spec: BroadcastSpec,
    pub state: BroadcastState,
    /// When the fan-out starts (or started): `send_at`, or the creation
    /// time.
    pub due_at: Timestamp,
    /// Users looked at so far (a segment's candidates, a topic's
    /// subscribers).
    pub scanned: u64,
    /// Of those, users in the audience: each got a notification planned.
    pub recipients: u64,
    /// Notifications created (a resumed page creates none again).
    pub notifications: u64,
    /// The last user id planned: the fan-out resumes after it.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub cursor: Option<String>,
    pub created_at: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub started_at: Option<Timestamp>,
    /// When it was done or cancelled.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub finished_at: Option<Timestamp>,
}

/// The id was used before for a different broadcast.
#[derive(Debug, Clone, thiserror::Error)]
#[error("broadcast {id:?} already exists with a different content; use a new id")]
pub struct Conflict {
    pub id: String,
    /// The broadcast that has the id.
    pub existing: Box<Broadcast>,
}

/// A topic a user follows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[schema(as = TopicSubscription)]
pub struct Subscription {
    pub topic: String,
    pub user_id: String,
    pub subscribed_at: Timestamp,
}

pub use crate::storage::{BroadcastTable, Cancelled, Subscribed, TopicTable};

/// Why a broadcast was not created, or a subscription not changed.
#[derive(Debug, thiserror::Error)]
pub enum BroadcastError {
    /// Bad input; the message names the field.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Conflict(#[from] Conflict),
    #[error("user {0:?} is erased")]
    UserErased(String),
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
}

/// Creates broadcast `id` (the API's one way in): checks the id and the
/// spec, then stores it once. `(broadcast, true)` when created now,
/// `(broadcast, false)` when the same spec was created before.
pub async fn create(
    table: &BroadcastTable,
    id: &str,
    spec: &BroadcastSpec,
    now: Timestamp,
) -> Result<(Broadcast, bool), BroadcastError> {
    check_name("id", id).map_err(BroadcastError::Invalid)?;
    spec.validate(now).map_err(BroadcastError::Invalid)?;
    Ok(table.create(id, spec, now).await??)
}

/// A user id as the stores take it: 1 to 1,024 bytes, no NUL.
pub fn check_user_id(user_id: &str) -> Result<(), BroadcastError> {
    if user_id.is_empty() || user_id.len() > 1024 || user_id.contains('\0') {
        return Err(BroadcastError::Invalid(
            "user_id must be 1 to 1024 bytes without NUL".to_owned(),
        ));
    }
    Ok(())
}

/// Subscribes `user_id` to `topic` (the API's one way in); `true` when
/// they were not subscribed before.
pub async fn subscribe(
    table: &TopicTable,
    topic: &str,
    user_id: &str,
    now: Timestamp,
) -> Result<bool, BroadcastError> {
    check_name("topic", topic).map_err(BroadcastError::Invalid)?;
    check_user_id(user_id)?;
    match table.subscribe(topic, user_id, now).await? {
        Subscribed::New => Ok(true),
        Subscribed::Already => Ok(false),
        Subscribed::UserErased => Err(BroadcastError::UserErased(user_id.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_bounded_and_plain() {
        assert!(check_name("topic", "project:42/releases@eu").is_ok());
        assert!(check_name("topic", "").is_err());
        assert!(check_name("topic", &"a".repeat(129)).is_err());
        let error = check_name("audience.topic", "new s").unwrap_err();
        assert!(error.contains("audience.topic"), "{error}");
        assert!(check_name("topic", "a\0b").is_err());
    }

    #[test]
    fn segments_need_a_condition_and_sane_values() {
        let parse = |json: &str| serde_json::from_str::<Audience>(json).unwrap();
        assert!(parse(r#"{"segment": {}}"#).validate().is_err());
        assert!(
            parse(r#"{"segment": {"active_within": "7d"}}"#)
                .validate()
                .is_ok()
        );
        let error =
            parse(r#"{"segment": {"traits": [{"property": "age", "op": "gt", "value": "x"}]}}"#)
                .validate()
                .unwrap_err();
        assert!(error.contains("traits[0]"), "{error}");
        assert!(
            serde_json::from_str::<Audience>(r#"{"topic": "a", "segment": {}}"#).is_err(),
            "one audience"
        );
        let segment = Segment {
            traits: serde_json::from_str(
                r#"[{"property": "plan", "op": "eq", "value": "pro"},
                    {"property": "seats", "op": "gte", "value": 5}]"#,
            )
            .unwrap(),
            active_within: None,
        };
        let traits = |json: &str| serde_json::from_str::<JsonObject>(json).unwrap();
        assert!(segment.matches(&traits(r#"{"plan": "pro", "seats": 5}"#)));
        assert!(!segment.matches(&traits(r#"{"plan": "pro", "seats": 4}"#)));
        assert!(!segment.matches(&traits(r#"{"plan": "free", "seats": 50}"#)));
    }

    #[test]
    fn activity_windows_are_written_in_their_largest_unit() {
        let parse = |json: &str| serde_json::from_str::<Audience>(json).unwrap();
        for (given, written) in [
            ("7d", "7d"),
            ("1h 30m", "90m"),
            ("36h", "36h"),
            ("45s", "45s"),
        ] {
            let audience = parse(&format!(r#"{{"segment": {{"active_within": "{given}"}}}}"#));
            assert!(audience.validate().is_ok(), "{given}");
            let json = serde_json::to_value(&audience).unwrap();
            assert_eq!(json["segment"]["active_within"], written);
            assert_eq!(serde_json::from_value::<Audience>(json).unwrap(), audience);
        }
        assert!(
            serde_json::from_str::<Audience>(r#"{"segment": {"active_within": null}}"#).is_err()
        );
        for refused in ["1500ms", "10000d"] {
            let audience = parse(&format!(
                r#"{{"segment": {{"active_within": "{refused}"}}}}"#
            ));
            let error = audience.validate().unwrap_err();
            assert!(error.contains("active_within"), "{error}");
        }
    }

    #[test]
    fn states_round_trip() {
        for state in [
            BroadcastState::Scheduled,
            BroadcastState::Running,
            BroadcastState::Done,
            BroadcastState::Cancelled,
        ] {
            assert_eq!(BroadcastState::parse(state.as_str()), Some(state));
        }
        assert!(BroadcastState::Running.is_open());
        assert!(!BroadcastState::Done.is_open());
    }
}
