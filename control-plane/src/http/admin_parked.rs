//! `GET /v1/admin/parked-events?limit=…&after=…` (behind the admin token,
//! mounted by `admin_api`): the events the engine parked because planning
//! them failed for good (see `storage::parked`), oldest first, as
//! `{"parked":[{"seq","event_id","user_id","kind","reason","parked_at"}…],
//! "next":<seq>|null}`. `limit` is 1..=1000 (default 100); `after` is a
//! `next` from a previous page; an empty value is no value.

use std::collections::HashMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};

use super::admin_paging::{DEFAULT_LIMIT, MAX_LIMIT};
use super::{ApiError, HttpState};
use crate::storage::ParkedPage;

pub fn router() -> Router<HttpState> {
    Router::new().route("/parked-events", get(parked_events))
}

async fn parked_events(
    State(state): State<HttpState>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<ParkedPage>, ApiError> {
    let Query(query) = query.map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
    if let Some(unknown) = query
        .keys()
        .find(|key| !["limit", "after"].contains(&key.as_str()))
    {
        return Err(ApiError::bad_request(format!(
            "{unknown}: unknown query parameter (limit, after)"
        )));
    }
    let number = |name: &str| -> Result<Option<u64>, ApiError> {
        // Empty is refused, not read as absent: the document's integers
        // have no empty value.
        match query.get(name).map(String::as_str) {
            None => Ok(None),
            Some(raw) => raw
                .parse()
                .map(Some)
                .map_err(|_| ApiError::bad_request(format!("{name}: expected a whole number"))),
        }
    };
    let limit = match number("limit")? {
        None => DEFAULT_LIMIT,
        Some(limit) if (1..=MAX_LIMIT as u64).contains(&limit) => limit as usize,
        Some(_) => {
            return Err(ApiError::bad_request(format!(
                "limit: must be from 1 to {MAX_LIMIT}"
            )));
        }
    };
    let page = state.store.parked(number("after")?, limit).await?;
    Ok(Json(page))
}
