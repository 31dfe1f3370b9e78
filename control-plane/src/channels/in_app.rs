//! The in-app channel: adds the message to the user's inbox
//! ([`crate::inbox`]), where the inbox API and its live stream read it.
//!
//! Promises: one inbox item per delivery (the item id is the delivery id),
//! so a retried delivery is still one item and keeps its read state; the
//! add is one SQL transaction with the user's counts and change log, so
//! the badge and live stream see it at once, and it has committed
//! (durably) before the send is reported done.

use async_trait::async_trait;

use super::email::recipient_kind;
use super::{Channel, ChannelKind, OutboundMessage, Recipient, SendError, SendReceipt};
use crate::inbox::{InboxError, InboxItem, InboxStore};

/// Adds messages to users' inboxes.
#[derive(Debug, Clone)]
pub struct InAppChannel {
    inbox: InboxStore,
}

impl InAppChannel {
    pub fn new(inbox: InboxStore) -> Self {
        InAppChannel { inbox }
    }
}

/// The inbox item for `message`, created now.
pub fn inbox_item(message: &OutboundMessage) -> InboxItem {
    InboxItem {
        id: message.delivery_id.clone(),
        notification_id: message.notification_id.clone(),
        notification_type: message.notification_type.clone(),
        category: message.category.clone(),
        title: message.subject.clone(),
        body: message.text_body.clone(),
        data: message.data.clone(),
        created_at: jiff::Timestamp::now(),
        seen_at: None,
        read_at: None,
        archived_at: None,
        snoozed_until: None,
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
        match self.inbox.add(user_id, &inbox_item(message)).await {
            Ok(added) => Ok(SendReceipt {
                provider_message_id: Some(message.delivery_id.clone()),
                answer: if added { "stored" } else { "already stored" }.to_owned(),
            }),
            // A NUL would make one user's key a prefix of another's range.
            Err(InboxError::Invalid(reason)) => Err(SendError::InvalidRecipient { answer: reason }),
            // Storage errors are the database's: nothing about the message
            // makes them permanent, so the queue may try again.
            Err(error) => Err(SendError::Retriable {
                answer: format!("inbox store failed: {error}"),
                retry_after: None,
            }),
        }
    }
}
