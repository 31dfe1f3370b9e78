//! `GET /v1/admin/analytics/{report}` (behind the admin token, mounted by
//! `admin_api`): one analytics report over the rollups
//! ([`crate::analytics::Analytics::report`]), as JSON
//! ([`crate::analytics::Report::to_json`]) or, with `format=csv`, as a CSV
//! download ([`crate::analytics::Report::to_csv`]).
//!
//! # Promises
//!
//! * **Parameters are checked before the rollups are read**, by the same
//!   function as the gRPC `nudge.v1.Analytics/GetReport`
//!   ([`super::analytics_params::parse`]): an unknown report is `404
//!   unknown_report` listing the reports; any bad or unknown parameter,
//!   and any combination the report refuses, is `400 bad_request` whose
//!   message starts with the parameter's name.
//! * **Storage failures are `500 internal`** with no detail of the store
//!   in the answer (it is logged).
//! * The rollups are read off the async workers (`spawn_blocking`).
//! * CSV answers are `text/csv; charset=utf-8` with `Content-Disposition:
//!   attachment; filename="nudge-<report>-<from>-<to>.csv"` (bounds that
//!   were not given are left out of the name).

use axum::Json;
use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::analytics_params::{self, Format, ParamError};
use super::{ApiError, HttpState};
use crate::analytics::AnalyticsError;

pub fn router() -> Router<HttpState> {
    Router::new().route("/analytics/{report}", get(report))
}

async fn report(
    State(state): State<HttpState>,
    Path(report): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let pairs = super::form::parse(raw.unwrap_or_default().as_bytes())
        .map_err(|error| ApiError::bad_request(format!("query string: {error}")))?;
    let params = analytics_params::parse(
        &report,
        pairs
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str())),
    )?;
    let analytics = state.analytics.clone();
    let query = params.query.clone();
    let report = tokio::task::spawn_blocking(move || analytics.report(&query)).await??;
    match params.format {
        Format::Json => Ok(Json(report.as_json()).into_response()),
        Format::Csv => Ok(super::download::attachment(
            report.to_csv(),
            "text/csv; charset=utf-8",
            &params.csv_file_name(),
        )),
    }
}

impl From<ParamError> for ApiError {
    fn from(error: ParamError) -> Self {
        match error {
            ParamError::UnknownReport(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "unknown_report", error.to_string())
            }
            ParamError::Invalid { .. } => ApiError::bad_request(error.to_string()),
        }
    }
}

impl From<AnalyticsError> for ApiError {
    fn from(error: AnalyticsError) -> Self {
        match error {
            AnalyticsError::Invalid { .. } => ApiError::bad_request(error.to_string()),
            other => {
                tracing::error!(error = %other, "analytics report failed in http handler");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "the analytics report could not be read",
                )
            }
        }
    }
}
