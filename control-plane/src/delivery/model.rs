//! What the queue stores: one [`Delivery`] per channel and recipient of a
//! notification, its [`Status`] and a log of every attempt.
//!
//! The status only moves along these edges (see [`Status::can_become`]):
//!
//! ```text
//! queued ──claim──▶ sending ──accepted──▶ sent ──provider callback──▶ delivered
//!   ▲                 │                     │                             │
//!   │                 │                     ├──open / read / click──┬─────┘ open / read / click
//!   │                 │                     │                       ▼
//!   │                 │                     │      opened / read ──click──▶ clicked
//!   │                 │                     │      (or straight to clicked)
//!   │                 │                     └──provider callback──▶ failed
//!   │                 │                        (undeliverable, or a hard bounce,
//!   │                 │                         which may also follow delivered)
//!   ├──retry later────┤ (retriable failure, attempts left)
//!   │                 ├──▶ failed         (permanent failure or invalid recipient)
//!   │                 └──▶ dead_lettered  (retriable failure, no attempts left)
//!   └─────manual retry──── dead_lettered
//! sending ──crash recovery──▶ queued
//! sending ──workflow step cancelled──▶ cancelled
//! ```
//!
//! A workflow step's delivery (one with a [`StepGate`]) and a broadcast's
//! held delivery are checked when claimed (see [`crate::send_check`]): if
//! the user already read or clicked the notification, or the broadcast was
//! cancelled, it ends `cancelled` without a provider call, with a
//! `skipped` entry in its attempt log; otherwise a workflow step gets a
//! `proceeded` entry before the provider's answer. `cancelled` is final.
//!
//! # Engagement
//!
//! After `sent` the status is a ladder that only goes up: `sent` <
//! `delivered` < `opened` = `read` < `clicked` ([`Status::engagement_rank`]).
//! What the recipient did is recorded by [`Engagement`] (an email's open
//! pixel, a tracked click, the inbox marking an in-app notification read or
//! clicked, a provider's callback): each kind sets its own timestamp once
//! (`opened_at`, `read_at`, `clicked_at`; the first one is kept), and the
//! status rises to the kind's rung if it is higher. So a late `delivered`
//! callback after a click keeps `clicked`, a click without an open (images
//! blocked) still reads `clicked`, and an in-app notification both read and
//! clicked is `clicked`. `opened` and `read` are the same rung (the email
//! and the inbox word for one thing): having one, the other sets its
//! timestamp and keeps the status. Engagement on a `sent` delivery also
//! sets `delivered_at`, because an open proves delivery.
//!
//! `failed` is final. A `sent` delivery that the provider later reports
//! undeliverable (an SMS the carrier could not deliver, an email that
//! bounced hard) is `failed` with the provider's error as its last answer;
//! it is not retried, because the provider already tried. A hard bounce
//! may also follow `delivered` (a receiving server that accepted the mail
//! and bounced it later), but never engagement: a message someone opened
//! was delivered. `failed` and `dead_lettered` deliveries take no
//! engagement. Records are serialised as JSON: field names are stable and
//! new fields get serde defaults, so old records keep loading after an
//! upgrade.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::channels::{ChannelKind, OutboundMessage, Recipient, SendError};

/// Delivery order within a channel: the notification's own priority.
pub use crate::event::Priority;

#[derive(
    Debug,
    Clone,
    Copy,
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
    as = DeliveryStatus,
    description = "Where a delivery is: `queued`, `sending`, then `sent`, `delivered`, `opened`, `read` or `clicked`; or `failed`, `dead_lettered` (waits for an operator) or `cancelled` (a workflow step the user made unnecessary)."
)]
pub enum Status {
    /// Waiting in the due index until `not_before`.
    Queued,
    /// Claimed by a worker; a send is (or was, before a crash) in flight.
    Sending,
    /// The provider accepted it.
    Sent,
    /// The provider confirmed it reached the recipient.
    Delivered,
    /// Will never be sent (permanent failure or invalid recipient), or the
    /// provider reported it undeliverable after it was sent.
    Failed,
    /// Ran out of attempts on retriable failures; waits for an operator.
    DeadLettered,
    // The engagement rungs come last so the older variants keep their
    // place; records store names, and the ladder is `engagement_rank`,
    // not this declaration order.
    /// The recipient opened it (an email's open pixel loaded, or the
    /// provider reported an open).
    Opened,
    /// The recipient read it in the inbox (in-app).
    Read,
    /// The recipient followed a link in it (a tracked click, or the inbox).
    Clicked,
    /// A workflow step that was not sent: the user had already engaged
    /// with the notification (see [`StepGate`]).
    Cancelled,
}

impl Status {
    pub const ALL: [Status; 10] = [
        Status::Queued,
        Status::Sending,
        Status::Sent,
        Status::Delivered,
        Status::Failed,
        Status::DeadLettered,
        Status::Opened,
        Status::Read,
        Status::Clicked,
        Status::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Sending => "sending",
            Status::Sent => "sent",
            Status::Delivered => "delivered",
            Status::Failed => "failed",
            Status::DeadLettered => "dead_lettered",
            Status::Opened => "opened",
            Status::Read => "read",
            Status::Clicked => "clicked",
            Status::Cancelled => "cancelled",
        }
    }

    /// The rung on the ladder after `sent` (see the module doc): 0 for
    /// `sent`, 1 `delivered`, 2 `opened` and `read`, 3 `clicked`; `None`
    /// for the states before and beside it (queued, sending, failed, dead
    /// lettered), which take no engagement.
    pub fn engagement_rank(self) -> Option<u8> {
        match self {
            Status::Sent => Some(0),
            Status::Delivered => Some(1),
            Status::Opened | Status::Read => Some(2),
            Status::Clicked => Some(3),
            Status::Queued
            | Status::Sending
            | Status::Failed
            | Status::DeadLettered
            | Status::Cancelled => None,
        }
    }

    /// The lifecycle of the module docs, as a predicate the queue checks
    /// before every write.
    pub fn can_become(self, next: Status) -> bool {
        use Status::*;
        matches!(
            (self, next),
            (Queued, Sending)
                | (Sending, Sent | Queued | Failed | DeadLettered | Cancelled)
                | (Sent, Delivered | Opened | Read | Clicked | Failed)
                | (Delivered, Opened | Read | Clicked | Failed)
                | (Opened | Read, Clicked)
                | (DeadLettered, Queued)
        )
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something the recipient did with a sent message (see the module doc).
#[derive(
    Debug,
    Clone,
    Copy,
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
#[schema(description = "Something the recipient did with a sent message.")]
pub enum Engagement {
    /// An email was opened: its open pixel loaded, or the provider said so.
    Opened,
    /// An in-app notification was read in the inbox.
    Read,
    /// A link in it was followed: a tracked click, the provider, the inbox.
    Clicked,
}

impl Engagement {
    /// The status this engagement raises a delivery to.
    pub fn status(self) -> Status {
        match self {
            Engagement::Opened => Status::Opened,
            Engagement::Read => Status::Read,
            Engagement::Clicked => Status::Clicked,
        }
    }

    pub fn as_str(self) -> &'static str {
        self.status().as_str()
    }
}

/// How one attempt ended, as written in the attempt log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    Sent,
    Retriable,
    Permanent,
    InvalidRecipient,
    /// A workflow step's check passed (no provider call; the answer says
    /// what was checked). The provider's answer follows.
    Proceeded,
    /// A workflow step's check cancelled it (no provider call; the answer
    /// says what the user had done).
    Skipped,
}

impl AttemptOutcome {
    pub fn of(error: &SendError) -> Self {
        match error {
            SendError::Retriable { .. } => AttemptOutcome::Retriable,
            SendError::Permanent { .. } => AttemptOutcome::Permanent,
            SendError::InvalidRecipient { .. } => AttemptOutcome::InvalidRecipient,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Sent => "sent",
            AttemptOutcome::Retriable => "retriable",
            AttemptOutcome::Permanent => "permanent",
            AttemptOutcome::InvalidRecipient => "invalid_recipient",
            AttemptOutcome::Proceeded => "proceeded",
            AttemptOutcome::Skipped => "skipped",
        }
    }
}

/// One provider call, kept so an operator can see why a delivery failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Attempt {
    /// RFC 3339 time.
    pub at: Timestamp,
    /// How the attempt ended. `proceeded` and `skipped` are a workflow
    /// step's check (no provider call): `skipped` ends the delivery
    /// `cancelled`.
    // Not `inline`: utoipa wraps an inlined enum with a doc comment in an
    // `allOf` whose second part says `type: object`, which no string fits.
    pub outcome: AttemptOutcome,
    /// The provider's answer, as the channel shortened it.
    pub answer: String,
}

/// What a workflow step's delivery is checked against when it comes due
/// (see [`crate::workflow`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(description = "What a workflow step's delivery is checked against when it comes due.")]
pub struct StepGate {
    /// The step's place in its type's steps, from 1.
    #[schema(minimum = 1)]
    pub step: u32,
    /// Engagement with any other delivery of the notification that cancels
    /// this one (always `read` and `clicked`; `opened` when the step says).
    #[schema(inline)]
    pub unless: std::collections::BTreeSet<Engagement>,
}

/// The caller's part of a new delivery; [`Delivery::new`] fills in the id,
/// status and timestamps.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub notification_id: String,
    pub user_id: String,
    pub channel: ChannelKind,
    pub priority: Priority,
    pub message: OutboundMessage,
    pub recipient: Recipient,
    /// Hold until then (quiet hours, digest windows); `None` means now.
    pub not_before: Option<Timestamp>,
}

/// One notification on one channel to one address. The field docs are the
/// API's descriptions; the comments above some say more for this code.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(description = "One notification on one channel to one address, with its status history.")]
pub struct Delivery {
    // UUIDv7, so ids sort by creation time.
    /// UUIDv7; also the receivers' dedupe key.
    pub id: Uuid,
    pub notification_id: String,
    // Kept for the inbox and API lookups; never a metric label.
    pub user_id: String,
    pub channel: ChannelKind,
    pub priority: Priority,
    pub message: OutboundMessage,
    pub recipient: Recipient,
    pub status: Status,
    // What the retry policy counts; the full history is `attempt_log`.
    /// Since enqueue or the last manual retry.
    pub attempts: u32,
    // Not claimed before this time: the scheduled time for quiet hours and
    // digests, then the next retry time.
    /// Not sent before this RFC 3339 time: when quiet hours, a digest or a
    /// workflow's wait release it, then the next retry.
    pub not_before: Timestamp,
    /// RFC 3339 time.
    pub created_at: Timestamp,
    // Queue latency is measured from here, so quiet hours do not count.
    /// When it first became due (`created_at`, or later if it was held).
    pub first_due_at: Timestamp,
    /// RFC 3339 time.
    pub updated_at: Timestamp,
    /// RFC 3339 time.
    pub sent_at: Option<Timestamp>,
    /// RFC 3339 time.
    pub delivered_at: Option<Timestamp>,
    // See [`Engagement`].
    /// First open (email pixel or provider report).
    #[serde(default)]
    pub opened_at: Option<Timestamp>,
    /// First read in the inbox.
    #[serde(default)]
    pub read_at: Option<Timestamp>,
    /// First click (tracked link, provider report or inbox).
    #[serde(default)]
    pub clicked_at: Option<Timestamp>,
    // The status stays (a complaint is no step on the ladder); see
    // `http::email_callbacks`.
    /// First spam complaint the provider reported; the user's email for
    /// the type is switched off.
    #[serde(default)]
    pub complained_at: Option<Timestamp>,
    pub provider_message_id: Option<String>,
    // Kept on dead letters for the operator.
    /// The provider's last answer.
    pub last_answer: Option<String>,
    #[serde(default)]
    #[schema(required = true)]
    pub attempt_log: Vec<Attempt>,
    // For per-template analytics.
    /// The template it was rendered with; absent when the notify gave
    /// title and body as they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub template: Option<String>,
    /// The notify's cost of each message, a decimal string (`"0.05"`);
    /// absent: the configured cost of the channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, format = "decimal", pattern = "^[0-9]+(\\.[0-9]{1,6})?$")]
    pub cost: Option<crate::money::Money>,
    /// Present on a workflow step after a wait: checked when it comes due;
    /// engagement of a kind in `unless` with any other delivery of the
    /// notification cancels it (status `cancelled`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub step: Option<StepGate>,
    // Checked when it comes due, so that cancelling the broadcast recalls
    // it.
    /// The broadcast it belongs to, on a delivery held for later (quiet
    /// hours, a workflow's wait): if the broadcast is cancelled by the time
    /// it comes due, it ends `cancelled` unsent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub broadcast: Option<String>,
}

impl Delivery {
    /// A queued delivery with a fresh UUIDv7, also written into the
    /// message's `delivery_id` so the channel passes it to the provider.
    pub fn new(new: NewDelivery, now: Timestamp) -> Self {
        let id = Uuid::now_v7();
        let not_before = new.not_before.map_or(now, |at| at.max(now));
        let mut message = new.message;
        message.delivery_id = id.to_string();
        Delivery {
            id,
            notification_id: new.notification_id,
            user_id: new.user_id,
            channel: new.channel,
            priority: new.priority,
            message,
            recipient: new.recipient,
            status: Status::Queued,
            attempts: 0,
            not_before,
            created_at: now,
            first_due_at: not_before,
            updated_at: now,
            sent_at: None,
            delivered_at: None,
            opened_at: None,
            read_at: None,
            clicked_at: None,
            complained_at: None,
            provider_message_id: None,
            last_answer: None,
            attempt_log: Vec::new(),
            template: None,
            cost: None,
            step: None,
            broadcast: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_edges() {
        use Status::*;
        assert!(Queued.can_become(Sending));
        assert!(Sending.can_become(Queued));
        assert!(Sent.can_become(Delivered));
        assert!(Sent.can_become(Failed));
        assert!(Delivered.can_become(Failed), "a hard bounce after delivery");
        assert!(DeadLettered.can_become(Queued));
        assert!(!Queued.can_become(Sent));
        assert!(!Failed.can_become(Queued));
        assert!(!Delivered.can_become(Queued));
        assert!(!Sent.can_become(Queued));
        // Engagement only goes up.
        assert!(Sent.can_become(Clicked));
        assert!(Delivered.can_become(Opened));
        assert!(Opened.can_become(Clicked));
        assert!(Read.can_become(Clicked));
        assert!(!Opened.can_become(Read));
        assert!(!Clicked.can_become(Opened));
        assert!(!Clicked.can_become(Delivered));
        assert!(!Opened.can_become(Failed));
        assert!(!Failed.can_become(Opened));
        assert!(!DeadLettered.can_become(Clicked));
        assert!(!Queued.can_become(Opened));
    }

    #[test]
    fn engagement_ranks_follow_the_edges() {
        for from in Status::ALL {
            for to in Status::ALL {
                if let (Some(a), Some(b)) = (from.engagement_rank(), to.engagement_rank()) {
                    assert_eq!(from.can_become(to), b > a, "{from} → {to}");
                }
            }
        }
    }

    #[test]
    fn old_records_load_without_engagement_fields() {
        let delivery = Delivery::new(
            NewDelivery {
                notification_id: "n".into(),
                user_id: "u".into(),
                channel: ChannelKind::Email,
                priority: Priority::Normal,
                message: OutboundMessage::default(),
                recipient: Recipient::User {
                    user_id: "u".into(),
                },
                not_before: None,
            },
            Timestamp::UNIX_EPOCH,
        );
        let mut json = serde_json::to_value(&delivery).unwrap();
        let object = json.as_object_mut().unwrap();
        for field in ["opened_at", "read_at", "clicked_at", "complained_at"] {
            assert!(object.remove(field).is_some(), "{field}");
        }
        let loaded: Delivery = serde_json::from_value(json).unwrap();
        assert_eq!(loaded, delivery);
    }

    #[test]
    fn priorities_are_ordered() {
        assert!(Priority::High > Priority::Normal && Priority::Normal > Priority::Low);
    }

    #[test]
    fn attempt_outcome_strings() {
        let json = serde_json::to_string(&AttemptOutcome::InvalidRecipient).unwrap();
        assert_eq!(json, "\"invalid_recipient\"");
    }
}
