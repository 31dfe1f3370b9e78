//! What the queue stores: one [`Delivery`] per channel and recipient of a
//! notification, its [`Status`] and a log of every attempt.
//!
//! The status only moves along these edges (see [`Status::can_become`]):
//!
//! ```text
//! queued ──claim──▶ sending ──accepted──▶ sent ──provider callback──▶ delivered
//!   ▲                 │                     │
//!   │                 │                     └──provider callback──▶ failed
//!   │                 │                        (provider reported it undeliverable)
//!   ├──retry later────┤ (retriable failure, attempts left)
//!   │                 ├──▶ failed         (permanent failure or invalid recipient)
//!   │                 └──▶ dead_lettered  (retriable failure, no attempts left)
//!   └─────manual retry──── dead_lettered
//! sending ──crash recovery──▶ queued
//! ```
//!
//! `delivered`, `failed` are final. A `sent` delivery that the provider
//! later reports undeliverable (an SMS the carrier could not deliver) is
//! `failed` with the provider's error as its last answer; it is not
//! retried, because the provider already tried. Records are serialised as JSON: field
//! names are stable and new fields get serde defaults, so old records keep
//! loading after an upgrade.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::channels::{ChannelKind, OutboundMessage, Recipient, SendError};

/// Delivery order within a channel: every due `High` goes before any due
/// `Normal`, which goes before any due `Low`.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
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
}

impl Status {
    pub const ALL: [Status; 6] = [
        Status::Queued,
        Status::Sending,
        Status::Sent,
        Status::Delivered,
        Status::Failed,
        Status::DeadLettered,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Sending => "sending",
            Status::Sent => "sent",
            Status::Delivered => "delivered",
            Status::Failed => "failed",
            Status::DeadLettered => "dead_lettered",
        }
    }

    /// The lifecycle of the module docs, as a predicate the queue checks
    /// before every write.
    pub fn can_become(self, next: Status) -> bool {
        use Status::*;
        matches!(
            (self, next),
            (Queued, Sending)
                | (Sending, Sent | Queued | Failed | DeadLettered)
                | (Sent, Delivered | Failed)
                | (DeadLettered, Queued)
        )
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How one attempt ended, as written in the attempt log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    Sent,
    Retriable,
    Permanent,
    InvalidRecipient,
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
        }
    }
}

/// One provider call, kept so an operator can see why a delivery failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    pub at: Timestamp,
    pub outcome: AttemptOutcome,
    /// The provider's answer, as the channel shortened it.
    pub answer: String,
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    /// UUIDv7, so ids sort by creation time; also the receivers' dedupe key.
    pub id: Uuid,
    pub notification_id: String,
    /// Kept for the inbox and API lookups; never a metric label.
    pub user_id: String,
    pub channel: ChannelKind,
    pub priority: Priority,
    pub message: OutboundMessage,
    pub recipient: Recipient,
    pub status: Status,
    /// Attempts since enqueue or the last manual retry: what the retry
    /// policy counts. The full history is `attempt_log`.
    pub attempts: u32,
    /// Not claimed before this time: the scheduled time for quiet hours and
    /// digests, then the next retry time.
    pub not_before: Timestamp,
    pub created_at: Timestamp,
    /// When it first became due (`created_at`, or later if it was held):
    /// queue latency is measured from here, so quiet hours do not count.
    pub first_due_at: Timestamp,
    pub updated_at: Timestamp,
    pub sent_at: Option<Timestamp>,
    pub delivered_at: Option<Timestamp>,
    pub provider_message_id: Option<String>,
    /// The provider's last answer, kept on dead letters for the operator.
    pub last_answer: Option<String>,
    #[serde(default)]
    pub attempt_log: Vec<Attempt>,
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
            provider_message_id: None,
            last_answer: None,
            attempt_log: Vec::new(),
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
        assert!(!Delivered.can_become(Failed));
        assert!(DeadLettered.can_become(Queued));
        assert!(!Queued.can_become(Sent));
        assert!(!Failed.can_become(Queued));
        assert!(!Delivered.can_become(Queued));
        assert!(!Sent.can_become(Queued));
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
