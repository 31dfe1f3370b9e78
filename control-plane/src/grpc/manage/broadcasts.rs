//! Topics and broadcasts over gRPC: SubscribeToTopic,
//! UnsubscribeFromTopic, ListTopicSubscribers, ListUserTopics;
//! CreateBroadcast, GetBroadcast, ListBroadcasts, CancelBroadcast.
//!
//! Validation is the domain's ([`crate::broadcasts::create`],
//! [`crate::broadcasts::subscribe`]) and a broadcast's content goes
//! through the notify conversion (`convert::notify_request`), so HTTP and
//! gRPC refuse exactly the same things. Ids that hold a NUL (which no
//! store can hold) are NOT_FOUND or empty answers, never a store error.

use std::time::Duration;

use jiff::Timestamp;
use nudge_proto::v1 as pb;

use super::super::convert::{cost_to_proto, notify_request, to_proto_timestamp};
use super::catalog::{condition_from_proto, op_to_proto};
use super::{GrpcState, ServiceError, page_limit, priority_to_proto, timestamp};
use crate::broadcasts::{
    self, Audience, Broadcast, BroadcastError, BroadcastSpec, BroadcastState, Cancelled, Segment,
};

impl From<BroadcastError> for ServiceError {
    fn from(error: BroadcastError) -> Self {
        match error {
            BroadcastError::Invalid(message) => ServiceError::Invalid(message),
            BroadcastError::Conflict(conflict) => ServiceError::AlreadyExists(conflict.to_string()),
            BroadcastError::UserErased(user) => ServiceError::FailedPrecondition(format!(
                "user {user:?} is erased; lift the erasure first"
            )),
            BroadcastError::Storage(error) => error.into(),
        }
    }
}

pub(super) async fn subscribe(
    state: &GrpcState,
    request: pb::SubscribeToTopicRequest,
) -> Result<pb::SubscribeToTopicResponse, ServiceError> {
    let created = broadcasts::subscribe(
        &state.topics,
        &request.topic,
        &request.user_id,
        Timestamp::now(),
    )
    .await?;
    Ok(pb::SubscribeToTopicResponse { created })
}

pub(super) async fn unsubscribe(
    state: &GrpcState,
    request: pb::UnsubscribeFromTopicRequest,
) -> Result<pb::UnsubscribeFromTopicResponse, ServiceError> {
    broadcasts::check_name("topic", &request.topic).map_err(ServiceError::Invalid)?;
    let removed = !request.user_id.contains('\0')
        && state
            .topics
            .unsubscribe(&request.topic, &request.user_id)
            .await?;
    Ok(pb::UnsubscribeFromTopicResponse { removed })
}

pub(super) async fn list_subscribers(
    state: &GrpcState,
    request: pb::ListTopicSubscribersRequest,
) -> Result<pb::ListTopicSubscribersResponse, ServiceError> {
    broadcasts::check_name("topic", &request.topic).map_err(ServiceError::Invalid)?;
    let limit = page_size(request.page_size)?;
    // No stored id holds a NUL: the ids after `a\0b` are those after `a`.
    let after = request.page_token.split('\0').next().unwrap_or_default();
    let after = (!after.is_empty()).then_some(after);
    let mut found = state
        .topics
        .subscribers_after(&request.topic, after, limit + 1)
        .await?;
    let more = found.len() > limit;
    found.truncate(limit);
    let next_page_token = match found.last() {
        Some(last) if more => last.user_id.clone(),
        _ => String::new(),
    };
    Ok(pb::ListTopicSubscribersResponse {
        total: state.topics.count(&request.topic).await?,
        subscribers: found
            .into_iter()
            .map(|s| pb::TopicSubscriber {
                user_id: s.user_id,
                subscribed_at: timestamp(s.subscribed_at),
            })
            .collect(),
        next_page_token,
    })
}

pub(super) async fn list_user_topics(
    state: &GrpcState,
    request: pb::ListUserTopicsRequest,
) -> Result<pb::ListUserTopicsResponse, ServiceError> {
    let topics = if request.user_id.contains('\0') {
        Vec::new()
    } else {
        state.topics.of_user(&request.user_id).await?
    };
    Ok(pb::ListUserTopicsResponse {
        topics: topics
            .into_iter()
            .map(|s| pb::UserTopic {
                topic: s.topic,
                subscribed_at: timestamp(s.subscribed_at),
            })
            .collect(),
    })
}

pub(super) async fn create(
    state: &GrpcState,
    request: pb::CreateBroadcastRequest,
) -> Result<pb::CreateBroadcastResponse, ServiceError> {
    let notify = request
        .notify
        .ok_or_else(|| ServiceError::invalid("notify", "must be set"))?;
    let request_content = notify_request(notify).map_err(ServiceError::Invalid)?;
    let audience = match request.audience {
        None => return Err(ServiceError::invalid("audience", "set topic or segment")),
        Some(pb::create_broadcast_request::Audience::Topic(topic)) => Audience::Topic(topic),
        Some(pb::create_broadcast_request::Audience::Segment(segment)) => {
            Audience::Segment(segment_from_proto(segment)?)
        }
    };
    let send_at = request
        .send_at
        .map(|at| {
            Timestamp::new(at.seconds, at.nanos).map_err(|error| {
                ServiceError::invalid("send_at", format!("is out of range: {error}"))
            })
        })
        .transpose()?;
    let spec = BroadcastSpec {
        request: request_content,
        audience,
        send_at,
    };
    let (broadcast, created) =
        broadcasts::create(&state.broadcasts, &request.id, &spec, Timestamp::now()).await?;
    Ok(pb::CreateBroadcastResponse {
        broadcast: Some(broadcast_to_proto(broadcast)),
        created,
    })
}

fn segment_from_proto(segment: pb::Segment) -> Result<Segment, ServiceError> {
    let traits = segment
        .traits
        .into_iter()
        .enumerate()
        .map(|(index, condition)| {
            condition_from_proto(&format!("audience.segment.traits[{index}]"), condition)
        })
        .collect::<Result<_, _>>()?;
    let active_within = segment
        .active_within
        .map(|within| {
            let seconds = u64::try_from(within.seconds).ok();
            let nanos = u32::try_from(within.nanos).ok();
            match (seconds, nanos) {
                (Some(seconds), Some(nanos)) => Ok(Duration::new(seconds, nanos)),
                _ => Err(ServiceError::invalid(
                    "audience.segment.active_within",
                    "must not be negative",
                )),
            }
        })
        .transpose()?;
    Ok(Segment {
        traits,
        active_within,
    })
}

pub(super) async fn get(
    state: &GrpcState,
    request: pb::GetBroadcastRequest,
) -> Result<pb::GetBroadcastResponse, ServiceError> {
    let found = if broadcasts::check_name("id", &request.id).is_ok() {
        state.broadcasts.get(&request.id).await?
    } else {
        None
    };
    let broadcast = found.ok_or_else(|| not_found(&request.id))?;
    Ok(pb::GetBroadcastResponse {
        broadcast: Some(broadcast_to_proto(broadcast)),
    })
}

pub(super) async fn list(
    state: &GrpcState,
    request: pb::ListBroadcastsRequest,
) -> Result<pb::ListBroadcastsResponse, ServiceError> {
    let limit = page_size(request.page_size)?;
    let after = (!request.page_token.is_empty()).then_some(request.page_token.as_str());
    // No broadcast id holds a NUL: after one that does not exist, nothing.
    let mut found = if after.is_some_and(|after| after.contains('\0')) {
        Vec::new()
    } else {
        state.broadcasts.list(after, limit + 1).await?
    };
    let more = found.len() > limit;
    found.truncate(limit);
    let next_page_token = match found.last() {
        Some(last) if more => last.id.clone(),
        _ => String::new(),
    };
    Ok(pb::ListBroadcastsResponse {
        broadcasts: found.into_iter().map(broadcast_to_proto).collect(),
        next_page_token,
    })
}

pub(super) async fn cancel(
    state: &GrpcState,
    request: pb::CancelBroadcastRequest,
) -> Result<pb::CancelBroadcastResponse, ServiceError> {
    if broadcasts::check_name("id", &request.id).is_err() {
        return Err(not_found(&request.id));
    }
    match state
        .broadcasts
        .cancel(&request.id, Timestamp::now())
        .await?
    {
        Cancelled::Now(broadcast) => Ok(pb::CancelBroadcastResponse {
            broadcast: Some(broadcast_to_proto(broadcast)),
        }),
        Cancelled::Closed(broadcast) => Err(ServiceError::FailedPrecondition(format!(
            "broadcast {:?} is {} already",
            broadcast.id,
            broadcast.state.as_str()
        ))),
        Cancelled::NotFound => Err(not_found(&request.id)),
    }
}

/// [`page_limit`], its refusal naming this API's field, `page_size`.
fn page_size(size: u32) -> Result<usize, ServiceError> {
    page_limit(size).map_err(|error| match error {
        ServiceError::Invalid(message) => match message.strip_prefix("limit") {
            Some(rest) => ServiceError::Invalid(format!("page_size{rest}")),
            None => ServiceError::Invalid(message),
        },
        other => other,
    })
}

fn not_found(id: &str) -> ServiceError {
    ServiceError::NotFound(format!("no broadcast {id:?}"))
}

fn broadcast_to_proto(broadcast: Broadcast) -> pb::Broadcast {
    use pb::broadcast::Audience as Wire;
    let request = broadcast.spec.request;
    let notify = pb::Notify {
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
        cost: cost_to_proto(request.cost),
        ..Default::default()
    };
    let audience = match broadcast.spec.audience {
        Audience::Topic(topic) => Wire::Topic(topic),
        Audience::Segment(segment) => Wire::Segment(pb::Segment {
            traits: segment
                .traits
                .into_iter()
                .map(|condition| pb::Condition {
                    property: condition.property,
                    op: op_to_proto(condition.op).into(),
                    value_json: condition
                        .value
                        .map(|value| value.to_string())
                        .unwrap_or_default(),
                })
                .collect(),
            active_within: segment.active_within.map(|within| prost_types::Duration {
                seconds: i64::try_from(within.as_secs()).unwrap_or(i64::MAX),
                nanos: 0,
            }),
        }),
    };
    let state = match broadcast.state {
        BroadcastState::Scheduled => pb::BroadcastState::Scheduled,
        BroadcastState::Running => pb::BroadcastState::Running,
        BroadcastState::Done => pb::BroadcastState::Done,
        BroadcastState::Cancelled => pb::BroadcastState::Cancelled,
    };
    pb::Broadcast {
        id: broadcast.id,
        notify: Some(notify),
        audience: Some(audience),
        send_at: broadcast.spec.send_at.map(to_proto_timestamp),
        state: state.into(),
        due_at: timestamp(broadcast.due_at),
        scanned: broadcast.scanned,
        recipients: broadcast.recipients,
        notifications: broadcast.notifications,
        created_at: timestamp(broadcast.created_at),
        started_at: broadcast.started_at.and_then(timestamp),
        finished_at: broadcast.finished_at.and_then(timestamp),
    }
}
