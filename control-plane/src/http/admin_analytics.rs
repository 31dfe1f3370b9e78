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

use super::analytics_params::{self, Format, ParamError, ReportParams};
use super::openapi::responses;
use super::{ApiError, ErrorBody, HttpState};
use crate::analytics::{AnalyticsError, ReportJson};

pub fn router() -> Router<HttpState> {
    Router::new().route("/analytics/{report}", get(report))
}

#[utoipa::path(
    get,
    path = "/v1/admin/analytics/{report}",
    operation_id = "getAnalyticsReport",
    summary = "An analytics report, as JSON or CSV",
    description = "One analytics report, read from the rollups the control plane maintains as events and delivery facts arrive (its cost does not grow with the number of events). The answer is a table: `columns` names the columns in order, each row has a value per column. Rates are fractions in 0..1 (`null` when there is nothing to divide by), durations are seconds, money is a decimal string in `currency`, times are RFC 3339. Days are UTC days; weeks start Monday (ISO).\n\nReports (the `columns` of the answer name their figures exactly):\n\n* `summary`: per period (`granularity`), events, unique users and unique sessions.\n* `resources`: per resource, the counts of the standard actions (view, click, add to cart, purchase) and their conversion rates (view→click, click→cart, cart→purchase).\n* `resource_actions`: per resource and event name, every action's count.\n* `funnels`: each configured funnel's steps (`[[analytics.funnels]]`), the users reaching each and the conversion from the previous step.\n* `sessions`: sessions with their start, end (explicit or by inactivity; `null` while open) and duration.\n* `users`: per user (or anonymous visitor), sessions, time spent, active days, events and the features used most.\n* `user_events`: per user, events by name.\n* `delivery`: per period, type and channel, sent, delivered, opened, read, clicked, failed and bounced, their rates, times to deliver, read and click, retries and cost.\n* `templates`: per template (with type and channel), the delivery figures plus conversions.\n* `costs`: per day, type, channel and provider, messages, cost, conversions and cost per conversion.\n* `outcomes`: financial outcomes per day and outcome name, attributed to the notification acted on (type, channel, template) or unattributed.\n* `channels`: channels ranked by effectiveness.\n\nA report ignores filters that do not apply to it and refuses (400, naming the parameter) combinations it cannot answer. Unknown, repeated or malformed query parameters are refused (400 `bad_request`, the message starts with the parameter's name); an empty value means the parameter is not set. The same reports are served over gRPC as `nudge.v1.Analytics/GetReport` with the same parameters.",
    tags = ["admin", "analytics"],
    security(("adminToken" = [])),
    params(ReportParams),
    responses(
        (status = 200, description = "The report. CSV (`format=csv`) is RFC 4180 with a header row equal to `columns`, a row per row; a `null` is an empty field, and fields a spreadsheet would run as a formula are prefixed with `'`. It comes with `Content-Disposition: attachment; filename=\"nudge-<report>-<from>-<to>.csv\"` (bounds not given are left out).",
         headers(("Content-Disposition" = String, description = "With `format=csv` only: `attachment; filename=\"nudge-summary-2026-01-01-2026-01-31.csv\"`.")),
         content((ReportJson = "application/json"), (String = "text/csv; charset=utf-8"))),
        (status = 400, response = responses::BadRequest),
        (status = 404, body = ErrorBody, description = "`unknown_report`: no such report; the message lists the reports there are."),
        (status = 500, body = ErrorBody, description = "`internal`: the rollups could not be read (details are logged, not answered)."),
        responses::AdminErrors,
    ),
)]
pub(crate) async fn report(
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
