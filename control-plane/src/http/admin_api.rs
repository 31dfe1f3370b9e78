//! Operator routes under `/v1/admin/`, all behind the admin bearer token.
//!
//! * `GET /v1/admin/events?user_id=…&limit=…&after=…` →
//!   `{"events":[Event…],"next":"<cursor>"|null}`; `limit` is 1..=1000
//!   (default 100), `after` is a `next` from a previous page.
//! * `GET /v1/admin/users/{user_id}/profile` →
//!   `{"user_id":…,"traits":{…},"updated_at":"<RFC 3339>"}`, 404 when unknown.
//! * `GET /v1/admin/stats` → `{"events":N,"dedupe_entries":M}`.
//!
//! The routes of `admin_notifications`, `admin_parked`, `admin_preferences`,
//! `admin_privacy`, `admin_analytics` and `devices` are mounted here too.

use axum::Json;
use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use serde::Deserialize;

use super::admin_paging::{DEFAULT_LIMIT, MAX_LIMIT};
use super::openapi::{path_params, responses};
use super::{ApiError, HttpState};
use crate::event::{Cursor, EventPage, Profile};

pub fn router(state: HttpState) -> Router<HttpState> {
    Router::new()
        .route("/events", get(events))
        .route("/users/{user_id}/profile", get(profile))
        .route("/stats", get(stats))
        .merge(super::admin_notifications::router())
        .merge(super::admin_parked::router())
        .merge(super::admin_preferences::router())
        .merge(super::admin_privacy::router())
        .merge(super::admin_analytics::router())
        .merge(super::devices::admin_router())
        .merge(super::broadcasts::admin_router())
        .route_layer(middleware::from_fn_with_state(state, require_admin))
}

/// Lets a request through only with the right bearer token.
async fn require_admin(
    State(state): State<HttpState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let Some(expected) = &state.admin_token else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "admin_disabled",
            "the admin API is disabled: NUDGE_CP_ADMIN_TOKEN is not configured",
        ));
    };
    let presented = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    match presented {
        Some(token) if expected.matches(token.trim().as_bytes()) => Ok(next.run(request).await),
        Some(_) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the admin token is wrong",
        )),
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing Authorization: Bearer <admin token> header",
        )),
    }
}

// Read as text, so that each refusal says what was wrong; other
// parameters are ignored.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct EventsQuery {
    /// Whose events.
    #[param(required = true, value_type = String, min_length = 1, example = "u123")]
    user_id: Option<String>,
    /// Events per page.
    #[param(value_type = Option<usize>, minimum = 1, maximum = 1000, default = 100)]
    limit: Option<String>,
    /// A `next` from a previous page; empty is the same as absent.
    #[param(pattern = "^[0-9]{0,19}$")]
    after: Option<String>,
}

#[utoipa::path(
    get,
    path = "/v1/admin/events",
    operation_id = "listUserEvents",
    summary = "A user's events, oldest first",
    tags = ["admin"],
    security(("adminToken" = [])),
    params(EventsQuery),
    responses(
        (status = 200, body = EventPage, description = "A page of events."),
        (status = 400, response = responses::BadRequest),
        responses::AdminErrors,
    ),
)]
pub(crate) async fn events(
    State(state): State<HttpState>,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Json<EventPage>, ApiError> {
    let Query(query) = query.map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
    let user_id = match query.user_id {
        Some(user_id) if !user_id.is_empty() => user_id,
        _ => return Err(ApiError::bad_request("query parameter user_id is required")),
    };
    let limit = match query.limit {
        None => DEFAULT_LIMIT,
        Some(raw) => match raw.parse::<usize>() {
            Ok(limit) if (1..=MAX_LIMIT).contains(&limit) => limit,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "limit must be an integer from 1 to {MAX_LIMIT}"
                )));
            }
        },
    };
    let after = match query.after {
        None => None,
        Some(raw) if raw.is_empty() => None,
        Some(raw) => Some(
            raw.parse::<Cursor>()
                .map_err(|_| ApiError::bad_request("after must be a cursor returned as next"))?,
        ),
    };
    let page = state.store.events_for_user(&user_id, limit, after).await?;
    Ok(Json(page))
}

#[utoipa::path(
    get,
    path = "/v1/admin/users/{user_id}/profile",
    operation_id = "getUserProfile",
    summary = "A user's merged identify traits",
    description = "404 when the user never identified.",
    tags = ["admin"],
    security(("adminToken" = [])),
    params(path_params::UserId),
    responses(
        (status = 200, body = Profile, description = "The profile."),
        (status = 404, response = responses::NotFound),
        responses::AdminErrors,
    ),
)]
pub(crate) async fn profile(
    State(state): State<HttpState>,
    Path(user_id): Path<String>,
) -> Result<Json<Profile>, ApiError> {
    match state.store.profile(&user_id).await? {
        Some(profile) => Ok(Json(profile)),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no profile for user {user_id}"),
        )),
    }
}

#[utoipa::path(
    get,
    path = "/v1/admin/stats",
    operation_id = "getStats",
    summary = "Store counters",
    tags = ["admin"],
    security(("adminToken" = [])),
    responses(
        (status = 200, body = Stats, description = "Counters."),
        responses::AdminErrors,
    ),
)]
pub(crate) async fn stats(State(state): State<HttpState>) -> Result<Json<Stats>, ApiError> {
    let (events, dedupe_entries) = (
        state.store.event_count().await?,
        state.store.dedupe_count().await?,
    );
    Ok(Json(Stats {
        events,
        dedupe_entries,
    }))
}

/// Totals of the event store.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct Stats {
    /// Events stored.
    events: u64,
    /// Event ids remembered for deduplication.
    dedupe_entries: u64,
}
