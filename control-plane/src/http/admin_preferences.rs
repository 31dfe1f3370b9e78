//! Operator routes for a user's notification preferences (behind the admin
//! token): read them, replace them, reset them to the operator's defaults.
//! End users get the same model under `/v1/me/preferences` (`me_preferences`).
//!
//! A replacement is validated as a whole before it is stored: a critical
//! type cannot be switched off, time zones must be IANA names, quiet hours
//! `HH:MM`. Refused input is a `400` that says what was wrong, and the
//! stored preferences stay as they were.

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;

use super::openapi::{path_params, responses};
use super::{ApiError, HttpState, JsonBody};
use crate::preferences::{PreferenceError, UserPreferences};

pub fn router() -> Router<HttpState> {
    Router::new().route(
        "/users/{user_id}/preferences",
        get(read).put(replace).delete(reset),
    )
}

#[utoipa::path(
    get,
    path = "/v1/admin/users/{user_id}/preferences",
    operation_id = "getUserPreferences",
    summary = "A user's preferences",
    tags = ["admin", "preferences"],
    security(("adminToken" = [])),
    params(path_params::UserId),
    responses(
        (status = 200, body = UserPreferences, description = "The stored document (absent entries mean the operator's default)."),
        responses::AdminErrors,
    ),
)]
pub(crate) async fn read(
    State(state): State<HttpState>,
    Path(user_id): Path<String>,
) -> Result<Json<UserPreferences>, ApiError> {
    Ok(Json(state.preferences.get(&user_id).await?))
}

#[utoipa::path(
    put,
    path = "/v1/admin/users/{user_id}/preferences",
    operation_id = "replaceUserPreferences",
    summary = "Replace a user's preferences",
    description = "Validated whole before it is stored: a critical type cannot be switched off, time zones are IANA names, quiet hours `HH:MM`, unknown fields refused. A refusal is a 400 and the stored document stays as it was.",
    tags = ["admin", "preferences"],
    security(("adminToken" = [])),
    params(path_params::UserId),
    request_body = UserPreferences,
    responses(
        (status = 200, body = UserPreferences, description = "The stored document."),
        (status = 400, response = responses::BadRequest),
        responses::AdminErrors,
    ),
)]
pub(crate) async fn replace(
    State(state): State<HttpState>,
    Path(user_id): Path<String>,
    JsonBody(preferences): JsonBody<UserPreferences>,
) -> Result<Json<UserPreferences>, ApiError> {
    preferences.validate(&state.settings.current().defaults)?;
    state.preferences.put(&user_id, &preferences).await?;
    Ok(Json(preferences))
}

/// Back to the operator's defaults (the user's time zone is kept).
#[utoipa::path(
    delete,
    path = "/v1/admin/users/{user_id}/preferences",
    operation_id = "resetUserPreferences",
    summary = "Reset a user's preferences to the operator's defaults",
    tags = ["admin", "preferences"],
    security(("adminToken" = [])),
    params(path_params::UserId),
    responses(
        (status = 200, body = UserPreferences, description = "The document after the reset (the time zone is kept)."),
        responses::AdminErrors,
    ),
)]
pub(crate) async fn reset(
    State(state): State<HttpState>,
    Path(user_id): Path<String>,
) -> Result<Json<UserPreferences>, ApiError> {
    Ok(Json(state.preferences.reset_all(&user_id).await?))
}

impl From<PreferenceError> for ApiError {
    fn from(error: PreferenceError) -> Self {
        match error {
            PreferenceError::Storage(_) | PreferenceError::Corrupt { .. } => {
                tracing::error!(%error, "preference store failed in http handler");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    error.to_string(),
                )
            }
            invalid => ApiError::bad_request(invalid.to_string()),
        }
    }
}
