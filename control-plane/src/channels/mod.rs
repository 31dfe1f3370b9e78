//! Delivery channels: one module per channel behind the one [`Channel`]
//! trait.
//!
//! A channel only *sends*: it turns an [`OutboundMessage`] for a
//! [`Recipient`] into one provider call and reports what the provider said,
//! classified as a [`SendError`] when it failed. Whether and when to retry,
//! how often, and when to give up is decided outside the channels (the
//! delivery queue's retry policy), from that classification alone.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Every channel Nudge delivers on. The string forms are stable: they
/// appear in the API, the config file and metric labels.
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
#[schema(as = Channel, description = "A delivery channel.")]
pub enum ChannelKind {
    InApp,
    Email,
    Apns,
    Fcm,
    WebPush,
    Sms,
    Webhook,
}

impl ChannelKind {
    pub const ALL: [ChannelKind; 7] = [
        ChannelKind::InApp,
        ChannelKind::Email,
        ChannelKind::Apns,
        ChannelKind::Fcm,
        ChannelKind::WebPush,
        ChannelKind::Sms,
        ChannelKind::Webhook,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::InApp => "in_app",
            ChannelKind::Email => "email",
            ChannelKind::Apns => "apns",
            ChannelKind::Fcm => "fcm",
            ChannelKind::WebPush => "web_push",
            ChannelKind::Sms => "sms",
            ChannelKind::Webhook => "webhook",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text)
    }
}

impl std::fmt::Display for ChannelKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A notification rendered for one channel, ready to send. The field docs
/// are the API's descriptions (`Delivery.message`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(description = "The notification rendered for one channel.")]
pub struct OutboundMessage {
    /// The delivery's id: stable across retries, so providers and receivers
    /// can dedupe (e.g. the webhook's `webhook-id`).
    pub delivery_id: String,
    pub notification_id: String,
    /// The notification type (e.g. `payment_failed`).
    pub notification_type: String,
    /// The type's category (e.g. `billing`), for the inbox's tabs; absent
    /// when the type has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub category: Option<String>,
    /// Email subject, or push/in-app title.
    pub subject: String,
    pub text_body: String,
    /// HTML body for email; empty when the template has none.
    pub html_body: String,
    /// Template data and event properties, for channels that carry data
    /// (webhook payload, push data).
    pub data: serde_json::Value,
    /// One-click unsubscribe URL (RFC 8058) for email, when the control
    /// plane has a public URL configured; `null` otherwise.
    #[schema(required = true)]
    pub unsubscribe_url: Option<String>,
}

/// Where one delivery goes: the user's address on this channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(description = "Where the delivery goes: an object with exactly one key naming the kind.")]
pub enum Recipient {
    Email {
        address: String,
        name: Option<String>,
    },
    Phone {
        number: String,
    },
    /// An APNs or FCM device token.
    DeviceToken {
        token: String,
    },
    /// A Web Push subscription (endpoint and the browser's keys, base64url).
    WebPush {
        endpoint: String,
        p256dh: String,
        auth: String,
    },
    /// A webhook destination URL.
    Url {
        url: String,
    },
    /// The user's own inbox.
    User {
        user_id: String,
    },
}

/// What the provider answered when it accepted a message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SendReceipt {
    /// The provider's id for the message, if it gives one.
    pub provider_message_id: Option<String>,
    /// The provider's answer, shortened, for the attempt log.
    pub answer: String,
}

/// Why a send failed, classified for the retry policy.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SendError {
    /// Worth trying again later: the provider is down, throttling or timed
    /// out. `retry_after` is the provider's own hint (`Retry-After`).
    #[error("temporary failure: {answer}")]
    Retriable {
        answer: String,
        retry_after: Option<Duration>,
    },
    /// Trying again would fail the same way (bad request, refused content).
    #[error("permanent failure: {answer}")]
    Permanent { answer: String },
    /// The address, token or subscription is no longer valid: fail for good
    /// and deactivate it so it is not used again.
    #[error("invalid recipient: {answer}")]
    InvalidRecipient { answer: String },
}

impl SendError {
    pub fn answer(&self) -> &str {
        match self {
            SendError::Retriable { answer, .. }
            | SendError::Permanent { answer }
            | SendError::InvalidRecipient { answer } => answer,
        }
    }
}

/// One delivery channel. Implementations hold their provider client and
/// credentials; they are shared between concurrent sends.
#[async_trait::async_trait]
pub trait Channel: Send + Sync {
    fn kind(&self) -> ChannelKind;

    /// Sends one message to one recipient: exactly one provider call, no
    /// retries of its own.
    async fn send(
        &self,
        message: &OutboundMessage,
        recipient: &Recipient,
    ) -> Result<SendReceipt, SendError>;
}

pub mod answer;
pub mod apns;
pub mod compliance;
pub mod email;
pub mod fcm;
pub mod in_app;
pub mod sms;
pub mod web_push;
pub mod webhook;

#[cfg(test)]
mod tests {
    use super::ChannelKind;

    /// The agent refuses a notify naming an unknown channel with the shared
    /// check's list; it must be exactly these kinds, or the agent would
    /// acknowledge what the control plane refuses (or the other way round).
    #[test]
    fn the_shared_check_knows_exactly_these_channels() {
        let kinds: Vec<&str> = ChannelKind::ALL.iter().map(|kind| kind.as_str()).collect();
        assert_eq!(kinds, nudge_proto::validate::CHANNELS);
        for name in nudge_proto::validate::CHANNELS {
            assert_eq!(
                ChannelKind::parse(name).map(ChannelKind::as_str),
                Some(name)
            );
        }
    }
}
