//! The in-app channel: stores the message in the user's inbox tree, where
//! the inbox API and its live stream read it.
//!
//! Promises: one entry per delivery, keyed `user_id 0x00 delivery_id`, so a
//! retried delivery overwrites its own entry instead of adding a second one,
//! and a user's entries are one contiguous key range (prefix scan). The
//! write is durable only as far as sled's own flushing makes it; the
//! delivery queue's record of the send is what survives a crash.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::email::recipient_kind;
use super::{Channel, ChannelKind, OutboundMessage, Recipient, SendError, SendReceipt};

/// One inbox entry, as stored (JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InboxEntry {
    pub delivery_id: String,
    pub notification_id: String,
    #[serde(rename = "type")]
    pub notification_type: String,
    pub subject: String,
    pub text: String,
    pub data: serde_json::Value,
    /// When the entry was stored (RFC 3339).
    pub created_at: jiff::Timestamp,
}

/// Stores messages in a sled tree given at construction.
#[derive(Debug, Clone)]
pub struct InAppChannel {
    inbox: sled::Tree,
}

impl InAppChannel {
    pub fn new(inbox: sled::Tree) -> Self {
        InAppChannel { inbox }
    }

    /// The key of one delivery in a user's inbox.
    pub fn key(user_id: &str, delivery_id: &str) -> Vec<u8> {
        let mut key = Vec::with_capacity(user_id.len() + 1 + delivery_id.len());
        key.extend_from_slice(user_id.as_bytes());
        key.push(0);
        key.extend_from_slice(delivery_id.as_bytes());
        key
    }
}

#[async_trait]
impl Channel for InAppChannel {
    fn kind(&self) -> ChannelKind {
        ChannelKind::InApp
    }

    async fn send(
        &self,
        message: &OutboundMessage,
        recipient: &Recipient,
    ) -> Result<SendReceipt, SendError> {
        let Recipient::User { user_id } = recipient else {
            return Err(SendError::Permanent {
                answer: format!(
                    "the in-app channel cannot send to {}",
                    recipient_kind(recipient)
                ),
            });
        };
        // A NUL would make one user's key a prefix of another's range.
        if user_id.is_empty() || user_id.contains('\0') {
            return Err(SendError::InvalidRecipient {
                answer: "user id is empty or contains NUL".to_owned(),
            });
        }
        let entry = InboxEntry {
            delivery_id: message.delivery_id.clone(),
            notification_id: message.notification_id.clone(),
            notification_type: message.notification_type.clone(),
            subject: message.subject.clone(),
            text: message.text_body.clone(),
            data: message.data.clone(),
            created_at: jiff::Timestamp::now(),
        };
        let value = serde_json::to_vec(&entry).expect("an inbox entry always serialises");
        let key = InAppChannel::key(user_id, &message.delivery_id);
        match self.inbox.insert(key, value) {
            Ok(_) => Ok(SendReceipt {
                provider_message_id: Some(message.delivery_id.clone()),
                answer: "stored".to_owned(),
            }),
            // sled errors are I/O or corruption: nothing about the message
            // makes them permanent, so the queue may try again.
            Err(err) => Err(SendError::Retriable {
                answer: format!("inbox store failed: {err}"),
                retry_after: None,
            }),
        }
    }
}
