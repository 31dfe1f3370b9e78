//! `GET /v1/admin/parked-events?limit=…&after=…` (behind the admin token,
//! mounted by `admin_api`): the events the engine parked because planning
//! them failed for good (see `storage::parked`), oldest first, as
//! `{"parked":[{"seq","event_id","user_id","kind","reason","parked_at"}…],
//! "next":<seq>|null}`. `limit` is 1..=1000 (default 100); `after` is a
//! `next` from a previous page. An empty value is refused like any other
//! non-number (the document's integers have none), and so is an unknown
//! parameter.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};

use serde::Deserialize;

use super::admin_paging::{DEFAULT_LIMIT, MAX_LIMIT};
use super::openapi::responses;
use super::{ApiError, HttpState};
use crate::storage::ParkedPage;

pub fn router() -> Router<HttpState> {
    Router::new().route("/parked-events", get(parked_events))
}

// Read as text, so that a refusal says which number was wrong.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ParkedQuery {
    /// Parked events per page.
    #[param(value_type = Option<usize>, minimum = 1, maximum = 1000, default = 100)]
    limit: Option<String>,
    /// A `next` from a previous page.
    // `usize`, not `u64`: utoipa marks a `u64` `format: int64`, and a
    // fuzzer then holds the values above `i64::MAX` invalid.
    #[param(value_type = Option<usize>, minimum = 0, maximum = 18446744073709551615_u64)]
    after: Option<String>,
}

#[utoipa::path(
    get,
    path = "/v1/admin/parked-events",
    operation_id = "listParkedEvents",
    summary = "Events the engine parked",
    description = "Events whose planning failed for a reason retrying cannot fix (content a store refuses, a corrupt record): the engine parks each with its reason, counts it in `nudge_cp_engine_events_parked_total{reason}` and moves on, so one bad event never blocks the feed. Oldest first. Unknown or malformed query parameters are refused (400 bad_request).",
    tags = ["admin"],
    security(("adminToken" = [])),
    params(ParkedQuery),
    responses(
        (status = 200, body = ParkedPage, description = "A page of parked events."),
        (status = 400, response = responses::BadRequest),
        responses::AdminErrors,
    ),
)]
pub(crate) async fn parked_events(
    State(state): State<HttpState>,
    query: Result<Query<ParkedQuery>, QueryRejection>,
) -> Result<Json<ParkedPage>, ApiError> {
    let Query(query) = query.map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
    let number = |name: &str, raw: Option<&str>| -> Result<Option<u64>, ApiError> {
        // Empty is refused, not read as absent: the document's integers
        // have no empty value.
        match raw {
            None => Ok(None),
            Some(raw) => raw
                .parse()
                .map(Some)
                .map_err(|_| ApiError::bad_request(format!("{name}: expected a whole number"))),
        }
    };
    let limit = match number("limit", query.limit.as_deref())? {
        None => DEFAULT_LIMIT,
        Some(limit) if (1..=MAX_LIMIT as u64).contains(&limit) => limit as usize,
        Some(_) => {
            return Err(ApiError::bad_request(format!(
                "limit: must be from 1 to {MAX_LIMIT}"
            )));
        }
    };
    let page = state
        .store
        .parked(number("after", query.after.as_deref())?, limit)
        .await?;
    Ok(Json(page))
}
