//! Notify, and following notifications to their deliveries and dead
//! letters; the notification and delivery messages.
//!
//! # Notify takes the agent's path
//!
//! A Notify call becomes the same [`Event`] an agent's notify envelope
//! becomes (through the ingest conversion, `grpc/convert.rs`) and is stored
//! with [`EventStore::ingest`]; the engine picks it up from the event feed like
//! any other. So ingest dedupe, the notification store's idempotency keys
//! and ingest ordering hold exactly as for agents. The event id is derived
//! from the user and the idempotency key when there is one (a retried call
//! is then a duplicate event for as long as ingest dedupe remembers ids),
//! else it is a fresh UUIDv7. Once the engine processed it (it polls every
//! 100 ms), the notification — `source_event_id` = that id — shows in
//! ListUserNotifications, with its deliveries in GetNotification.
//!
//! [`Event`]: crate::event::Event
//! [`EventStore::ingest`]: crate::storage::EventStore::ingest

use jiff::Timestamp;
use nudge_proto::v1 as pb;
use nudge_proto::v1::envelope::Body;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::super::convert::{cost_to_proto, event_from_envelope, to_proto_timestamp};
use super::{
    GrpcState, ServiceError, channel, page_limit, priority_to_proto, required_id, timestamp,
};
use crate::channels::Recipient;
use crate::delivery::{self, AttemptOutcome, Delivery, Status};
use crate::notifications::Notification;

/// The `agent_id` of events the management API ingests, so a stored event
/// says where it came from.
pub const AGENT_ID: &str = "management-api";

pub(super) async fn notify(
    state: &GrpcState,
    request: pb::NotifyRequest,
) -> Result<pb::NotifyResponse, ServiceError> {
    let user_id = required_id("user_id", request.user_id)?;
    let notify = request
        .notify
        .ok_or_else(|| ServiceError::invalid("notify", "must be set"))?;
    // Checked again by the conversion below; here the error names the
    // API's own field.
    for name in &notify.channels {
        channel("notify.channels", name)?;
    }
    let event_id = match notify.idempotency_key.as_str() {
        "" => Uuid::now_v7().to_string(),
        key => event_id_for_key(&user_id, key),
    };
    let now = Timestamp::now();
    let envelope = pb::Envelope {
        id: event_id.clone(),
        user_id,
        received_at: Some(to_proto_timestamp(now)),
        body: Some(Body::Notify(notify)),
        ..Default::default()
    };
    // The conversion's reasons name the field (`notify.type is empty`).
    let event = event_from_envelope(AGENT_ID, envelope, now).map_err(ServiceError::Invalid)?;
    let outcome = state.store.ingest(vec![event]).await?;
    if let Some(rejected) = outcome.rejected.into_iter().next() {
        return Err(ServiceError::Invalid(rejected.reason));
    }
    state
        .metrics
        .events_ingested
        .inc_by(u64::from(outcome.stored));
    state
        .metrics
        .events_duplicate
        .inc_by(u64::from(outcome.duplicates));
    let duplicate = outcome.duplicates > 0;
    tracing::debug!(event = %event_id, duplicate, "notify ingested through the management api");
    Ok(pb::NotifyResponse {
        event_id,
        duplicate,
    })
}

/// `notify-` and 32 hex digits of SHA-256 over user and key: stable, so a
/// retry maps to the same event; scoped per user like the notification
/// store's keys; of bounded length whatever the key's.
fn event_id_for_key(user_id: &str, key: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(user_id.as_bytes());
    hasher.update([0]);
    hasher.update(key.as_bytes());
    let digest = hasher.finalize();
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("notify-{hex}")
}

pub(super) async fn get(
    state: &GrpcState,
    request: pb::GetNotificationRequest,
) -> Result<pb::GetNotificationResponse, ServiceError> {
    let id = required_id("id", request.id)?;
    let Some(notification) = state.notifications.get(&id).await? else {
        return Err(ServiceError::NotFound(format!("no notification {id}")));
    };
    let deliveries = match Uuid::parse_str(&notification.id) {
        Ok(uuid) => state.queue.for_notification(uuid).await?,
        Err(_) => Vec::new(),
    };
    let throttle = state
        .notifications
        .throttle_decisions(&notification.id)
        .await?
        .into_iter()
        .map(|decision| pb::ThrottleDecision {
            scope: decision.scope,
            outcome: decision.outcome,
            at: timestamp(decision.at),
            digest_at: decision.digest_at.and_then(timestamp),
        })
        .collect();
    Ok(pb::GetNotificationResponse {
        notification: Some(notification_to_proto(notification)),
        deliveries: deliveries.into_iter().map(delivery_to_proto).collect(),
        throttle,
    })
}

pub(super) async fn list_for_user(
    state: &GrpcState,
    request: pb::ListUserNotificationsRequest,
) -> Result<pb::ListUserNotificationsResponse, ServiceError> {
    let user_id = required_id("user_id", request.user_id)?;
    let limit = page_limit(request.limit)?;
    let found = state.notifications.list_for_user(&user_id, limit).await?;
    Ok(pb::ListUserNotificationsResponse {
        notifications: found.into_iter().map(notification_to_proto).collect(),
    })
}

pub(super) async fn dead_letters(
    state: &GrpcState,
    request: pb::ListDeadLettersRequest,
) -> Result<pb::ListDeadLettersResponse, ServiceError> {
    let wanted = match request.channel.as_str() {
        "" => None,
        name => Some(channel("channel", name)?),
    };
    let limit = page_limit(request.limit)?;
    let after = match request.after.as_str() {
        "" => None,
        text => Some(delivery_id("after", text)?),
    };
    let found = state.queue.list_dead_letters(wanted, limit, after).await?;
    let next = if found.len() == limit {
        found.last().map(|d| d.id.to_string()).unwrap_or_default()
    } else {
        String::new()
    };
    Ok(pb::ListDeadLettersResponse {
        deliveries: found.into_iter().map(delivery_to_proto).collect(),
        next,
    })
}

pub(super) async fn retry(
    state: &GrpcState,
    request: pb::RetryDeadLetterRequest,
) -> Result<pb::RetryDeadLetterResponse, ServiceError> {
    let id = delivery_id("delivery_id", &request.delivery_id)?;
    let delivery = state.queue.retry_dead_letter(id, Timestamp::now()).await?;
    tracing::info!(delivery = %delivery.id, channel = %delivery.channel, "dead letter retried through the management api");
    Ok(pb::RetryDeadLetterResponse {
        delivery: Some(delivery_to_proto(delivery)),
    })
}

fn delivery_id(field: &str, text: &str) -> Result<Uuid, ServiceError> {
    Uuid::parse_str(text)
        .map_err(|_| ServiceError::invalid(field, format!("{text:?} is not a delivery id")))
}

fn notification_to_proto(notification: Notification) -> pb::Notification {
    let request = notification.request;
    pb::Notification {
        id: notification.id,
        user_id: notification.user_id,
        r#type: request.notification_type,
        template: request.template.unwrap_or_default(),
        title: request.title.unwrap_or_default(),
        body: request.body.unwrap_or_default(),
        channels: request
            .channels
            .iter()
            .map(|channel| channel.as_str().to_owned())
            .collect(),
        data_json: serde_json::Value::Object(request.data).to_string(),
        priority: priority_to_proto(request.priority).into(),
        idempotency_key: request.idempotency_key.unwrap_or_default(),
        source_event_id: notification.source_event_id.unwrap_or_default(),
        created_at: timestamp(notification.created_at),
        cost: cost_to_proto(request.cost),
    }
}

fn delivery_to_proto(delivery: Delivery) -> pb::Delivery {
    let recipient = match delivery.recipient {
        Recipient::Email { address, .. } => address,
        Recipient::Phone { number } => number,
        Recipient::DeviceToken { token } => token,
        Recipient::WebPush { endpoint, .. } => endpoint,
        Recipient::Url { url } => url,
        Recipient::User { user_id } => user_id,
    };
    let priority = match delivery.priority {
        delivery::Priority::Low => pb::Priority::Low,
        delivery::Priority::Normal => pb::Priority::Normal,
        delivery::Priority::High => pb::Priority::High,
    };
    pb::Delivery {
        id: delivery.id.to_string(),
        notification_id: delivery.notification_id,
        user_id: delivery.user_id,
        channel: delivery.channel.as_str().to_owned(),
        recipient,
        status: status_to_proto(delivery.status).into(),
        priority: priority.into(),
        attempts: delivery.attempts,
        attempt_log: delivery
            .attempt_log
            .into_iter()
            .map(|attempt| pb::Attempt {
                at: timestamp(attempt.at),
                outcome: outcome_to_proto(attempt.outcome).into(),
                answer: attempt.answer,
            })
            .collect(),
        provider_message_id: delivery.provider_message_id.unwrap_or_default(),
        last_answer: delivery.last_answer.unwrap_or_default(),
        subject: delivery.message.subject,
        text: delivery.message.text_body,
        not_before: timestamp(delivery.not_before),
        created_at: timestamp(delivery.created_at),
        updated_at: timestamp(delivery.updated_at),
        sent_at: delivery.sent_at.and_then(timestamp),
        delivered_at: delivery.delivered_at.and_then(timestamp),
        opened_at: delivery.opened_at.and_then(timestamp),
        read_at: delivery.read_at.and_then(timestamp),
        clicked_at: delivery.clicked_at.and_then(timestamp),
        complained_at: delivery.complained_at.and_then(timestamp),
    }
}

fn status_to_proto(status: Status) -> pb::DeliveryStatus {
    match status {
        Status::Queued => pb::DeliveryStatus::Queued,
        Status::Sending => pb::DeliveryStatus::Sending,
        Status::Sent => pb::DeliveryStatus::Sent,
        Status::Delivered => pb::DeliveryStatus::Delivered,
        Status::Failed => pb::DeliveryStatus::Failed,
        Status::DeadLettered => pb::DeliveryStatus::DeadLettered,
        Status::Opened => pb::DeliveryStatus::Opened,
        Status::Read => pb::DeliveryStatus::Read,
        Status::Clicked => pb::DeliveryStatus::Clicked,
        Status::Cancelled => pb::DeliveryStatus::Cancelled,
    }
}

fn outcome_to_proto(outcome: AttemptOutcome) -> pb::AttemptOutcome {
    match outcome {
        AttemptOutcome::Sent => pb::AttemptOutcome::Sent,
        AttemptOutcome::Retriable => pb::AttemptOutcome::Retriable,
        AttemptOutcome::Permanent => pb::AttemptOutcome::Permanent,
        AttemptOutcome::InvalidRecipient => pb::AttemptOutcome::InvalidRecipient,
        AttemptOutcome::Proceeded => pb::AttemptOutcome::Proceeded,
        AttemptOutcome::Skipped => pb::AttemptOutcome::Skipped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_event_ids_are_stable_and_scoped_per_user() {
        let id = event_id_for_key("u1", "inv-42");
        assert_eq!(id, event_id_for_key("u1", "inv-42"));
        assert_ne!(id, event_id_for_key("u2", "inv-42"));
        assert_eq!(id.len(), "notify-".len() + 32);
        assert_eq!(event_id_for_key("u1", &"k".repeat(10_000)).len(), id.len());
    }
}
