//! Operator routes for notifications and their deliveries (behind the admin
//! token, mounted by `admin_api`): a notification with the status of each
//! of its deliveries, the dead letters, and retrying one.

use axum::Json;
use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::admin_paging::{DEFAULT_LIMIT, MAX_LIMIT};
use super::openapi::{path_params, responses};
use super::{ApiError, HttpState};
use crate::channels::ChannelKind;
use crate::delivery::{Delivery, QueueError};
use crate::notifications::Notification;
use crate::throttle::Recorded;

pub fn router() -> Router<HttpState> {
    Router::new()
        .route("/notifications/{id}", get(notification))
        .route("/users/{user_id}/notifications", get(user_notifications))
        .route("/dead-letters", get(dead_letters))
        .route("/dead-letters/{id}/retry", post(retry))
}

/// A notification and every delivery planned for it, with status,
/// attempts, timestamps and the provider's answers, and its throttle
/// decisions.
#[utoipa::path(
    get,
    path = "/v1/admin/notifications/{id}",
    operation_id = "getNotification",
    summary = "A notification with every delivery planned for it",
    tags = ["admin"],
    security(("adminToken" = [])),
    params(NotificationId),
    responses(
        (status = 200, body = NotificationWithDeliveries, description = "The notification and its deliveries (status, attempts, timestamps, provider answers)."),
        (status = 404, response = responses::NotFound),
        responses::AdminErrors,
    ),
)]
pub(crate) async fn notification(
    State(state): State<HttpState>,
    Path(id): Path<String>,
) -> Result<Json<NotificationWithDeliveries>, ApiError> {
    let Some(notification) = state.notifications.get(&id).await? else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no notification {id}"),
        ));
    };
    let deliveries: Vec<Delivery> = match Uuid::parse_str(&notification.id) {
        Ok(uuid) => state.queue.for_notification(uuid).await?,
        Err(_) => Vec::new(),
    };
    // What its type's throttle decided, if it has one (see
    // `crate::throttle`): a dropped notification has no deliveries, and
    // this says why.
    let throttle = state
        .notifications
        .throttle_decisions(&notification.id)
        .await?;
    Ok(Json(NotificationWithDeliveries {
        notification,
        deliveries,
        throttle,
    }))
}

/// `{id}` of `/v1/admin/notifications/{id}` (documentation only: the
/// handler extracts the string).
#[derive(utoipa::IntoParams)]
#[into_params(names("id"), parameter_in = Path)]
#[expect(
    dead_code,
    reason = "documents the `Path<String>` the handler extracts"
)]
struct NotificationId(
    /// The notification id.
    #[param(example = "dummy-notification")]
    String,
);

/// `{id}` of `/v1/admin/dead-letters/{id}/retry`.
#[derive(utoipa::IntoParams)]
#[into_params(names("id"), parameter_in = Path)]
#[expect(
    dead_code,
    reason = "documents the `Path<String>` the handler extracts"
)]
struct DeliveryId(
    /// The delivery id (UUID).
    #[param(value_type = uuid::Uuid, example = "00000000-0000-0000-0000-000000000000")]
    String,
);

/// A notification with every delivery planned for it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct NotificationWithDeliveries {
    notification: Notification,
    deliveries: Vec<Delivery>,
    /// What the type's throttle decided for this notification, one entry
    /// per count it was decided in (empty when its type has no throttle
    /// and its category is not counted). A `dropped` notification has no
    /// deliveries: this is why.
    throttle: Vec<Recorded>,
}

/// A user's notifications.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct NotificationList {
    /// Newest first.
    notifications: Vec<Notification>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct LimitQuery {
    /// At most this many.
    #[param(minimum = 1, maximum = 1000, default = 100)]
    limit: Option<usize>,
}

/// A user's notifications, newest first.
#[utoipa::path(
    get,
    path = "/v1/admin/users/{user_id}/notifications",
    operation_id = "listUserNotifications",
    summary = "A user's notifications, newest first",
    description = "Unknown or malformed query parameters are refused (400 bad_request).",
    tags = ["admin"],
    security(("adminToken" = [])),
    params(path_params::UserId, LimitQuery),
    responses(
        (status = 200, body = NotificationList, description = "The notifications."),
        (status = 400, response = responses::BadRequest),
        responses::AdminErrors,
    ),
)]
pub(crate) async fn user_notifications(
    State(state): State<HttpState>,
    Path(user_id): Path<String>,
    query: Result<Query<LimitQuery>, QueryRejection>,
) -> Result<Json<NotificationList>, ApiError> {
    let Query(query) = query.map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
    let limit = checked_limit(query.limit)?;
    let notifications = state.notifications.list_for_user(&user_id, limit).await?;
    Ok(Json(NotificationList { notifications }))
}

fn checked_limit(limit: Option<usize>) -> Result<usize, ApiError> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::bad_request(format!(
            "limit must be between 1 and {MAX_LIMIT}"
        )));
    }
    Ok(limit)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct DeadLetterQuery {
    // Read as text, so that an unknown name is a 400 that names it.
    /// Only this channel.
    #[param(value_type = Option<ChannelKind>)]
    channel: Option<String>,
    /// Deliveries per page.
    #[param(minimum = 1, maximum = 1000, default = 100)]
    limit: Option<usize>,
    /// A `next` from a previous page.
    #[param(format = Uuid)]
    after: Option<String>,
}

#[utoipa::path(
    get,
    path = "/v1/admin/dead-letters",
    operation_id = "listDeadLetters",
    summary = "Dead-lettered deliveries",
    description = "Deliveries that ran out of attempts and wait for an operator. Unknown or malformed query parameters are refused (400 bad_request).",
    tags = ["admin"],
    security(("adminToken" = [])),
    params(DeadLetterQuery),
    responses(
        (status = 200, body = DeadLetterPage, description = "A page of dead letters."),
        (status = 400, response = responses::BadRequest),
        responses::AdminErrors,
    ),
)]
pub(crate) async fn dead_letters(
    State(state): State<HttpState>,
    query: Result<Query<DeadLetterQuery>, QueryRejection>,
) -> Result<Json<DeadLetterPage>, ApiError> {
    let Query(query) = query.map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
    let channel = match query.channel.as_deref() {
        None => None,
        Some(name) => Some(
            ChannelKind::parse(name)
                .ok_or_else(|| ApiError::bad_request(format!("unknown channel {name:?}")))?,
        ),
    };
    let limit = checked_limit(query.limit)?;
    let after = match query.after.as_deref() {
        None => None,
        Some(text) => Some(parse_id(text)?),
    };
    let deliveries = state.queue.list_dead_letters(channel, limit, after).await?;
    let next = (deliveries.len() == limit)
        .then(|| deliveries.last().map(|d| d.id))
        .flatten();
    Ok(Json(DeadLetterPage { deliveries, next }))
}

/// One page of dead letters, oldest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct DeadLetterPage {
    deliveries: Vec<Delivery>,
    /// Pass as `after` for the next page; null on the last.
    #[schema(required = true)]
    next: Option<Uuid>,
}

/// Puts a dead letter back on the queue, due now, with a fresh attempt count.
#[utoipa::path(
    post,
    path = "/v1/admin/dead-letters/{id}/retry",
    operation_id = "retryDeadLetter",
    summary = "Put a dead letter back on the queue",
    description = "400 when `id` is not a UUID, 404 when no such delivery, 409 when the delivery is not dead-lettered.",
    tags = ["admin"],
    security(("adminToken" = [])),
    params(DeliveryId),
    responses(
        (status = 200, body = Delivery, description = "The delivery, queued again, due now, with a fresh attempt count."),
        (status = 400, response = responses::BadRequest),
        (status = 404, response = responses::NotFound),
        (status = 409, response = responses::Conflict),
        responses::AdminErrors,
    ),
)]
pub(crate) async fn retry(
    State(state): State<HttpState>,
    Path(id): Path<String>,
) -> Result<Json<Delivery>, ApiError> {
    let id = parse_id(&id)?;
    let delivery = state
        .queue
        .retry_dead_letter(id, jiff::Timestamp::now())
        .await?;
    Ok(Json(delivery))
}

fn parse_id(text: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text)
        .map_err(|_| ApiError::bad_request(format!("{text:?} is not a delivery id")))
}

impl From<QueueError> for ApiError {
    fn from(error: QueueError) -> Self {
        match error {
            QueueError::NotFound(id) => ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no delivery {id}"),
            ),
            QueueError::InvalidTransition { .. } => {
                ApiError::new(StatusCode::CONFLICT, "conflict", error.to_string())
            }
            other => {
                tracing::error!(error = %other, "delivery queue failed in http handler");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    other.to_string(),
                )
            }
        }
    }
}
