//! Topics and broadcasts over HTTP (see [`crate::broadcasts`]).
//!
//! * Operators (admin token): `/v1/admin/topics/{topic}/subscribers[/{user_id}]`
//!   — list a topic's subscribers (paged by user id), subscribe a user
//!   (`PUT`: `201` new, `200` already), unsubscribe (`DELETE`: `204`, `404`
//!   when they were not); `/v1/admin/users/{user_id}/topics` — a user's
//!   topics; `/v1/admin/broadcasts[/{id}[/cancel]]` — create (`201`, or
//!   `200` with the first when the same id and content come again, `409`
//!   when the content differs), list (newest first), read with progress,
//!   cancel (`409` once cancelled; a done one is cancelled to recall what is still held).
//! * End users (their token): `GET /v1/me/topics`, and
//!   `DELETE /v1/me/topics/{topic}` to leave one. Joining is the
//!   application's call (see the module doc of `broadcasts`).
//!
//! Refused input is a `400` naming the field; nothing is stored then.

use axum::Json;
use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use jiff::Timestamp;
use nudge_proto::v1 as pb;
use serde::{Deserialize, Serialize};

use super::ErrorBody;
use super::admin_paging::{DEFAULT_LIMIT, MAX_LIMIT};
use super::openapi::{path_params, responses};
use super::user_auth::Me;
use super::{ApiError, HttpState, JsonBody};
use crate::broadcasts::{
    self, Audience, Broadcast, BroadcastError, BroadcastSpec, Cancelled, check_name,
};
use crate::event::{JsonObject, Priority};

/// Longest `type` or `template` of a broadcast, in characters.
pub(crate) const MAX_NAME_CHARS: usize = 64;

pub fn admin_router() -> Router<HttpState> {
    Router::new()
        .route("/topics/{topic}/subscribers", get(subscribers))
        .route(
            "/topics/{topic}/subscribers/{user_id}",
            put(subscribe).delete(unsubscribe),
        )
        .route("/users/{user_id}/topics", get(user_topics))
        .route("/broadcasts", get(list).post(create))
        .route("/broadcasts/{id}", get(read))
        .route("/broadcasts/{id}/cancel", post(cancel))
}

pub fn me_router() -> Router<HttpState> {
    Router::new()
        .route("/topics", get(my_topics))
        .route("/topics/{topic}", axum::routing::delete(leave))
}

impl From<BroadcastError> for ApiError {
    fn from(error: BroadcastError) -> Self {
        match error {
            BroadcastError::Invalid(message) => ApiError::bad_request(message),
            BroadcastError::Conflict(conflict) => {
                ApiError::new(StatusCode::CONFLICT, "conflict", conflict.to_string())
            }
            BroadcastError::UserErased(user) => ApiError::new(
                StatusCode::CONFLICT,
                "user_erased",
                format!("user {user:?} is erased; lift the erasure first"),
            ),
            BroadcastError::Storage(error) => error.into(),
        }
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct Page {
    /// Items per page.
    #[serde(default)]
    #[param(minimum = 1, maximum = 1000, default = 100)]
    limit: Option<usize>,
    /// A `next` from a previous page (the last user id or broadcast id
    /// of the page before).
    #[serde(default)]
    after: Option<String>,
}

fn limit_of(page: &Page) -> Result<usize, ApiError> {
    match page.limit {
        None => Ok(DEFAULT_LIMIT),
        Some(limit) if (1..=MAX_LIMIT).contains(&limit) => Ok(limit),
        Some(limit) => Err(ApiError::bad_request(format!(
            "limit {limit} is out of range: 1 to {MAX_LIMIT}"
        ))),
    }
}

fn topic_name(topic: &str) -> Result<(), ApiError> {
    check_name("topic", topic).map_err(ApiError::bad_request)
}

#[utoipa::path(
    get,
    path = "/v1/admin/topics/{topic}/subscribers",
    operation_id = "listTopicSubscribers",
    summary = "A topic's subscribers",
    description = "By user id, a page at a time. Unknown or malformed query parameters are refused (400 bad_request).",
    tags = ["admin", "topics"],
    security(("adminToken" = [])),
    params(path_params::Topic, Page),
    responses(
        (status = 200, body = TopicSubscriberPage, description = "A page of subscribers."),
        (status = 400, response = responses::BadRequest),
        responses::AdminErrors,
    ),
)]
pub(crate) async fn subscribers(
    State(state): State<HttpState>,
    Path(topic): Path<String>,
    page: Result<Query<Page>, QueryRejection>,
) -> Result<Json<TopicSubscriberPage>, ApiError> {
    let Query(page) = page.map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
    topic_name(&topic)?;
    let limit = limit_of(&page)?;
    // No stored id holds a NUL (the databases cannot), so the ids after
    // `a\0b` are exactly those after `a`: cutting there is the same page.
    let after = page
        .after
        .as_deref()
        .map(|after| after.split('\0').next().unwrap_or_default())
        .filter(|after| !after.is_empty());
    let mut found = state
        .topics
        .subscribers_after(&topic, after, limit + 1)
        .await?;
    let more = found.len() > limit;
    found.truncate(limit);
    let next = if more {
        found
            .last()
            .map(|subscription| subscription.user_id.clone())
    } else {
        None
    };
    let total = state.topics.count(&topic).await?;
    let subscribers = found
        .into_iter()
        .map(|s| TopicSubscriber {
            user_id: s.user_id,
            subscribed_at: s.subscribed_at,
        })
        .collect();
    Ok(Json(TopicSubscriberPage {
        topic,
        total,
        subscribers,
        next,
    }))
}

/// A page of a topic's subscribers, by user id.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct TopicSubscriberPage {
    topic: String,
    /// Subscribers in all.
    total: u64,
    subscribers: Vec<TopicSubscriber>,
    /// Pass as `after` for the next page; null on the last.
    #[schema(required = true)]
    next: Option<String>,
}

/// One subscriber of a topic.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct TopicSubscriber {
    user_id: String,
    subscribed_at: Timestamp,
}

#[utoipa::path(
    put,
    path = "/v1/admin/topics/{topic}/subscribers/{user_id}",
    operation_id = "subscribeUserToTopic",
    summary = "Subscribe a user to a topic",
    tags = ["admin", "topics"],
    security(("adminToken" = [])),
    params(path_params::Topic, path_params::SubscriberId),
    responses(
        (status = 201, body = TopicSubscribed, description = "Subscribed now."),
        (status = 200, body = TopicSubscribed, description = "Already subscribed."),
        (status = 400, response = responses::BadRequest),
        (status = 409, body = ErrorBody, description = "`user_erased`: the user is erased; nothing was stored."),
        responses::AdminErrors,
    ),
)]
pub(crate) async fn subscribe(
    State(state): State<HttpState>,
    Path((topic, user_id)): Path<(String, String)>,
) -> Result<(StatusCode, Json<TopicSubscribed>), ApiError> {
    let new = broadcasts::subscribe(&state.topics, &topic, &user_id, Timestamp::now()).await?;
    let status = if new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(TopicSubscribed {
            topic,
            user_id,
            subscribed: true,
        }),
    ))
}

/// A subscription, new (`201`) or already there (`200`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct TopicSubscribed {
    topic: String,
    user_id: String,
    /// Always `true`.
    #[schema(schema_with = super::openapi::always_true)]
    subscribed: bool,
}

#[utoipa::path(
    delete,
    path = "/v1/admin/topics/{topic}/subscribers/{user_id}",
    operation_id = "unsubscribeUserFromTopic",
    summary = "Take a user off a topic",
    tags = ["admin", "topics"],
    security(("adminToken" = [])),
    params(path_params::Topic, path_params::SubscriberId),
    responses(
        (status = 204, description = "Unsubscribed."),
        (status = 400, response = responses::BadRequest),
        (status = 404, response = responses::NotFound),
        responses::AdminErrors,
    ),
)]
pub(crate) async fn unsubscribe(
    State(state): State<HttpState>,
    Path((topic, user_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    topic_name(&topic)?;
    // An id with a NUL cannot be stored, so it is subscribed to nothing.
    if !user_id.contains('\0') && state.topics.unsubscribe(&topic, &user_id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("user {user_id:?} is not subscribed to {topic:?}"),
        ))
    }
}

#[utoipa::path(
    get,
    path = "/v1/admin/users/{user_id}/topics",
    operation_id = "listUserTopics",
    summary = "The topics a user follows",
    tags = ["admin", "topics"],
    security(("adminToken" = [])),
    params(path_params::UserId),
    responses(
        (status = 200, body = UserTopics, description = "The user's topics, by name."),
        responses::AdminErrors,
    ),
)]
pub(crate) async fn user_topics(
    state: State<HttpState>,
    Path(user_id): Path<String>,
) -> Result<Json<UserTopics>, ApiError> {
    topics_of(state, user_id).await
}

#[utoipa::path(
    get,
    path = "/v1/me/topics",
    operation_id = "listMyTopics",
    summary = "The topics the user follows",
    description = "Joining a topic is the application's call (topic names may be private); a user can leave any.",
    tags = ["me", "topics"],
    security(("userToken" = [])),
    responses(
        (status = 200, body = UserTopics, description = "The user's topics, by name."),
        responses::UserErrors,
    ),
)]
pub(crate) async fn my_topics(
    state: State<HttpState>,
    Me(user): Me,
) -> Result<Json<UserTopics>, ApiError> {
    topics_of(state, user).await
}

/// The signed-in user leaves a topic: the operator's unsubscribe, for the
/// token's user.
#[utoipa::path(
    delete,
    path = "/v1/me/topics/{topic}",
    operation_id = "leaveMyTopic",
    summary = "Leave a topic",
    tags = ["me", "topics"],
    security(("userToken" = [])),
    params(path_params::Topic),
    responses(
        (status = 204, description = "Left."),
        (status = 400, response = responses::BadRequest),
        (status = 404, response = responses::NotFound),
        responses::UserErrors,
    ),
)]
pub(crate) async fn leave(
    state: State<HttpState>,
    Me(user): Me,
    Path(topic): Path<String>,
) -> Result<StatusCode, ApiError> {
    unsubscribe(state, Path((topic, user))).await
}

async fn topics_of(
    State(state): State<HttpState>,
    user_id: String,
) -> Result<Json<UserTopics>, ApiError> {
    // An id with a NUL cannot be stored, so it follows nothing.
    let stored = if user_id.contains('\0') {
        Vec::new()
    } else {
        state.topics.of_user(&user_id).await?
    };
    let topics = stored
        .into_iter()
        .map(|s| UserTopic {
            topic: s.topic,
            subscribed_at: s.subscribed_at,
        })
        .collect();
    Ok(Json(UserTopics { user_id, topics }))
}

/// The topics a user follows, by name.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct UserTopics {
    user_id: String,
    topics: Vec<UserTopic>,
}

/// One topic a user follows.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct UserTopic {
    topic: String,
    subscribed_at: Timestamp,
}

/// `POST /v1/admin/broadcasts`: a notify's fields (as an agent's
/// `/v1/notify` takes them, without a user) plus the id, the audience and
/// an optional start time.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewBroadcast {
    id: String,
    #[serde(rename = "type")]
    notification_type: String,
    #[serde(default)]
    template: Option<String>,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    data: JsonObject,
    #[serde(default)]
    channels: Vec<String>,
    #[serde(default)]
    priority: Priority,
    /// Per message, a decimal string ("0.05").
    #[serde(default)]
    cost: Option<String>,
    audience: Audience,
    #[serde(default)]
    send_at: Option<Timestamp>,
}

// Its schema states limits (lengths, patterns, the audience's `oneOf`)
// the struct leaves to `spec`: built in `broadcast_schemas`.

impl NewBroadcast {
    /// The spec, with the notify's content checked as any notify's is.
    fn spec(self) -> Result<(String, BroadcastSpec), ApiError> {
        // JSON Schema's `maxLength` counts characters, the store's limit
        // (256) bytes: 64 characters fit it in any script, so that is the
        // limit this route documents and keeps.
        for (field, name) in [
            ("type", Some(&self.notification_type)),
            ("template", self.template.as_ref()),
        ] {
            if let Some(name) = name
                && name.chars().count() > MAX_NAME_CHARS
            {
                return Err(ApiError::bad_request(format!(
                    "{field} is {} characters long; at most {MAX_NAME_CHARS}",
                    name.chars().count()
                )));
            }
        }
        let notify = pb::Notify {
            r#type: self.notification_type,
            template: self.template.unwrap_or_default(),
            title: self.title.unwrap_or_default(),
            body: self.body.unwrap_or_default(),
            data_json: serde_json::to_string(&self.data)
                .map_err(|error| ApiError::bad_request(format!("data: {error}")))?,
            channels: self.channels,
            priority: match self.priority {
                Priority::Low => pb::Priority::Low,
                Priority::Normal => pb::Priority::Normal,
                Priority::High => pb::Priority::High,
            }
            .into(),
            cost: self.cost.unwrap_or_default(),
            ..Default::default()
        };
        // Reasons name the proto field (`notify.type …`); the JSON field
        // is the same name without the prefix.
        let request = crate::grpc::convert::notify_request(notify).map_err(|reason| {
            ApiError::bad_request(reason.strip_prefix("notify.").unwrap_or(&reason).to_owned())
        })?;
        let spec = BroadcastSpec {
            request,
            audience: self.audience,
            send_at: self.send_at,
        };
        Ok((self.id, spec))
    }
}

#[utoipa::path(
    post,
    path = "/v1/admin/broadcasts",
    operation_id = "createBroadcast",
    summary = "Send one notify to a topic or a segment",
    description = "Creates the broadcast; the engine then fans it out at `send_at` (or at once), a page of users at a time, one notification per recipient planned like any notify: each recipient's preferences, quiet hours and throttles apply. Creating the same id with the same content again returns the first (200); different content under the same id is a 409.",
    tags = ["admin", "topics"],
    security(("adminToken" = [])),
    request_body = NewBroadcast,
    responses(
        (status = 201, body = Broadcast, description = "Created."),
        (status = 200, body = Broadcast, description = "The same id and content were created before: that broadcast, with its progress."),
        (status = 400, response = responses::BadRequest),
        (status = 409, response = responses::Conflict),
        responses::AdminErrors,
    ),
)]
pub(crate) async fn create(
    State(state): State<HttpState>,
    JsonBody(new): JsonBody<NewBroadcast>,
) -> Result<(StatusCode, Json<Broadcast>), ApiError> {
    let (id, spec) = new.spec()?;
    let (broadcast, created) =
        broadcasts::create(&state.broadcasts, &id, &spec, Timestamp::now()).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(broadcast)))
}

#[utoipa::path(
    get,
    path = "/v1/admin/broadcasts",
    operation_id = "listBroadcasts",
    summary = "Broadcasts, newest first",
    description = "Unknown or malformed query parameters are refused (400 bad_request).",
    tags = ["admin", "topics"],
    security(("adminToken" = [])),
    params(Page),
    responses(
        (status = 200, body = BroadcastPage, description = "A page of broadcasts."),
        (status = 400, response = responses::BadRequest),
        responses::AdminErrors,
    ),
)]
pub(crate) async fn list(
    State(state): State<HttpState>,
    page: Result<Query<Page>, QueryRejection>,
) -> Result<Json<BroadcastPage>, ApiError> {
    let Query(page) = page.map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
    let limit = limit_of(&page)?;
    let after = page.after.as_deref().filter(|after| !after.is_empty());
    // A broadcast id never holds a NUL: after one that does not exist,
    // the page is empty.
    if after.is_some_and(|after| after.contains('\0')) {
        return Ok(Json(BroadcastPage {
            broadcasts: Vec::new(),
            next: None,
        }));
    }
    let mut found = state.broadcasts.list(after, limit + 1).await?;
    let more = found.len() > limit;
    found.truncate(limit);
    let next = if more {
        found.last().map(|broadcast| broadcast.id.clone())
    } else {
        None
    };
    Ok(Json(BroadcastPage {
        broadcasts: found,
        next,
    }))
}

/// A page of broadcasts, by id.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct BroadcastPage {
    broadcasts: Vec<Broadcast>,
    /// Pass as `after` for the next page; null on the last.
    #[schema(required = true)]
    next: Option<String>,
}

fn no_broadcast(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no broadcast {id:?}"),
    )
}

#[utoipa::path(
    get,
    path = "/v1/admin/broadcasts/{id}",
    operation_id = "getBroadcast",
    summary = "A broadcast and its progress",
    tags = ["admin", "topics"],
    security(("adminToken" = [])),
    params(path_params::BroadcastId),
    responses(
        (status = 200, body = Broadcast, description = "The broadcast."),
        (status = 404, response = responses::NotFound),
        responses::AdminErrors,
    ),
)]
pub(crate) async fn read(
    State(state): State<HttpState>,
    Path(id): Path<String>,
) -> Result<Json<Broadcast>, ApiError> {
    if check_name("id", &id).is_err() {
        return Err(no_broadcast(&id));
    }
    let found = state.broadcasts.get(&id).await?;
    found.map(Json).ok_or_else(|| no_broadcast(&id))
}

#[utoipa::path(
    post,
    path = "/v1/admin/broadcasts/{id}/cancel",
    operation_id = "cancelBroadcast",
    summary = "Cancel a broadcast: stop its fan-out and recall what is still held",
    description = "The fan-out stops before its next page, and deliveries planned but still held (quiet hours, a workflow's wait) end `cancelled` when they come due, without being sent. What already went out, or waits in a digest, stays. A done broadcast can be cancelled (to recall what is held); a cancelled one is a 409.",
    tags = ["admin", "topics"],
    security(("adminToken" = [])),
    params(path_params::BroadcastId),
    responses(
        (status = 200, body = Broadcast, description = "Cancelled."),
        (status = 404, response = responses::NotFound),
        (status = 409, response = responses::Conflict),
        responses::AdminErrors,
    ),
)]
pub(crate) async fn cancel(
    State(state): State<HttpState>,
    Path(id): Path<String>,
) -> Result<Json<Broadcast>, ApiError> {
    if check_name("id", &id).is_err() {
        return Err(no_broadcast(&id));
    }
    match state.broadcasts.cancel(&id, Timestamp::now()).await? {
        Cancelled::Now(broadcast) => Ok(Json(broadcast)),
        Cancelled::Closed(broadcast) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("broadcast {id:?} is {} already", broadcast.state.as_str()),
        )),
        Cancelled::NotFound => Err(no_broadcast(&id)),
    }
}
