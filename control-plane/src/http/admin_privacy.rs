//! Operator privacy routes (behind the admin token, mounted by
//! `admin_api`); see [`crate::privacy`] for what they promise.
//!
//! * `GET /v1/admin/users/{user_id}/export` → everything held about the
//!   user as one JSON document (a download: `Content-Disposition:
//!   attachment`), streamed as it is read, in bounded memory: a store
//!   that fails before the first chunk is `503`, one that fails later
//!   aborts the transfer (see [`super::download`]).
//! * `DELETE /v1/admin/users/{user_id}` → erases the user everywhere and
//!   tombstones the id; `200` with the counts of what was removed.
//!   Idempotent (a repeat answers zeros).
//! * `DELETE /v1/admin/users/{user_id}/erasure` → lifts the tombstone so
//!   the id's events are stored again; `204`, or `404` without one.

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{delete, get};
use jiff::Timestamp;

use super::openapi::{path_params, responses};
use super::{ApiError, HttpState};
use crate::chunks;
use crate::privacy::{Erased, PrivacyError, UserExport};

pub fn router() -> Router<HttpState> {
    Router::new()
        .route("/users/{user_id}/export", get(export))
        .route("/users/{user_id}", delete(erase))
        .route("/users/{user_id}/erasure", delete(lift))
}

#[utoipa::path(
    get,
    path = "/v1/admin/users/{user_id}/export",
    operation_id = "exportUser",
    summary = "Everything held about a user, as one JSON document",
    description = "A download (Content-Disposition: attachment): profile, events, notifications each with its deliveries (attempt logs included), inbox items, devices (tokens included: it is the user's own data), stored preferences (null when never changed) and pending rule triggers. An unknown user gets empty lists. The body is streamed as it is read from storage (chunked transfer, memory bounded whatever the history's size). A storage failure before the first chunk is a 503; one after it aborts the transfer (the connection closes before the body's end), so a download that completes is the whole document — treat a broken transfer as a failure and retry.",
    tags = ["admin"],
    security(("adminToken" = [])),
    params(path_params::UserId),
    responses(
        (status = 200, body = UserExport, description = "The export."),
        responses::AdminErrors,
    ),
)]
pub(crate) async fn export(
    State(state): State<HttpState>,
    Path(user_id): Path<String>,
) -> Result<Response, ApiError> {
    let privacy = state.privacy.clone();
    let chunks = chunks::spawn(move |mut sink| async move {
        privacy
            .write_export(&user_id, Timestamp::now(), &mut sink)
            .await?;
        Ok(sink)
    });
    super::download::streamed(chunks, "application/json", "user-export.json").await
}

#[utoipa::path(
    delete,
    path = "/v1/admin/users/{user_id}",
    operation_id = "eraseUser",
    summary = "Erase a user everywhere",
    description = "Removes the user's events, profile, notifications with their deliveries and attempt logs, inbox items, devices, preferences, held digest items, pending rule triggers and topic subscriptions, and tombstones the id: events of this user that agents deliver later are acknowledged and dropped (nudge_cp_events_erased_total). Idempotent: a repeat answers zeros. The tombstone holds until DELETE /v1/admin/users/{user_id}/erasure.",
    tags = ["admin"],
    security(("adminToken" = [])),
    params(path_params::UserId),
    responses(
        (status = 200, body = Erased, description = "What was removed."),
        (status = 400, response = responses::BadRequest),
        responses::AdminErrors,
    ),
)]
pub(crate) async fn erase(
    State(state): State<HttpState>,
    Path(user_id): Path<String>,
) -> Result<Json<Erased>, ApiError> {
    if user_id.is_empty() || user_id.contains('\0') {
        return Err(ApiError::bad_request(
            "the user id is empty or contains NUL",
        ));
    }
    let privacy = state.privacy.clone();
    let erased =
        tokio::task::spawn_blocking(move || privacy.erase_user(&user_id, Timestamp::now()))
            .await??;
    Ok(Json(erased))
}

#[utoipa::path(
    delete,
    path = "/v1/admin/users/{user_id}/erasure",
    operation_id = "liftUserErasure",
    summary = "Lift an erased user's tombstone",
    description = "Events of the user id are stored again from now on. Nothing erased comes back.",
    tags = ["admin"],
    security(("adminToken" = [])),
    params(path_params::UserId),
    responses(
        (status = 204, description = "The tombstone was lifted."),
        (status = 404, response = responses::NotFound),
        responses::AdminErrors,
    ),
)]
pub(crate) async fn lift(
    State(state): State<HttpState>,
    Path(user_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let privacy = state.privacy.clone();
    let lookup = user_id.clone();
    if tokio::task::spawn_blocking(move || privacy.lift_erasure(&lookup)).await?? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("user {user_id} is not erased"),
        ))
    }
}

impl From<PrivacyError> for ApiError {
    fn from(error: PrivacyError) -> Self {
        tracing::error!(%error, "privacy operation failed in http handler");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            error.to_string(),
        )
    }
}
