//! `nudge.v1.Analytics` (proto/nudge/v1/analytics.proto): the analytics
//! reports of the admin HTTP API (`GET /v1/admin/analytics/{report}`)
//! over gRPC.
//!
//! # Promises
//!
//! * **Admin token**, checked before the handler runs by the Management
//!   service's interceptor (`manage::Authorize`): missing or wrong →
//!   UNAUTHENTICATED, none configured → UNAVAILABLE.
//! * **The HTTP API's parameters and checks**: the request's fields go
//!   through [`crate::http::analytics_params::parse`] under their HTTP
//!   names (the proto fields are named alike), so an unknown report is
//!   NOT_FOUND and a bad field is INVALID_ARGUMENT whose message starts
//!   with the field, exactly where the HTTP API answers 404 and 400.
//!   `limit` 0 means the default.
//! * **The same table**: columns and rows are [`crate::analytics::Report`]'s,
//!   each cell as [`crate::analytics::Cell::to_text`] (a missing value is
//!   the empty string); `csv` is [`crate::analytics::Report::to_csv`],
//!   filled only when `format` is `"csv"`.
//! * The rollups are read off the async workers (`spawn_blocking`);
//!   storage failures carry no detail of the store (it is logged).

use nudge_proto::v1 as pb;
use nudge_proto::v1::analytics_server::{Analytics, AnalyticsServer};
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status};

use super::manage::Authorize;
use super::{GrpcState, ServiceError};
use crate::analytics::Report;
use crate::http::analytics_params::{self, Format};

/// The fully-qualified name health reports for the Analytics service.
pub const ANALYTICS_SERVICE_NAME: &str = "nudge.v1.Analytics";

/// The Analytics service over the control plane's rollups.
pub struct AnalyticsService {
    analytics: crate::analytics::Analytics,
}

/// The service behind the admin token check, ready for `add_service`.
pub(super) fn server(
    state: &GrpcState,
) -> InterceptedService<AnalyticsServer<AnalyticsService>, Authorize> {
    InterceptedService::new(
        AnalyticsServer::new(AnalyticsService {
            analytics: state.analytics.clone(),
        }),
        Authorize::new(state.admin_token.clone()),
    )
}

#[tonic::async_trait]
impl Analytics for AnalyticsService {
    async fn get_report(
        &self,
        request: Request<pb::ReportRequest>,
    ) -> Result<Response<pb::ReportResponse>, Status> {
        get_report(&self.analytics, request.into_inner())
            .await
            .map(Response::new)
            .map_err(Status::from)
    }
}

async fn get_report(
    analytics: &crate::analytics::Analytics,
    request: pb::ReportRequest,
) -> Result<pb::ReportResponse, ServiceError> {
    let limit = match request.limit {
        0 => String::new(),
        limit => limit.to_string(),
    };
    let pairs = [
        ("from", request.from.as_str()),
        ("to", request.to.as_str()),
        ("user", request.user.as_str()),
        ("type", request.r#type.as_str()),
        ("channel", request.channel.as_str()),
        ("resource", request.resource.as_str()),
        ("funnel", request.funnel.as_str()),
        ("granularity", request.granularity.as_str()),
        ("limit", limit.as_str()),
        ("format", request.format.as_str()),
    ];
    let params = analytics_params::parse(&request.report, pairs)?;
    let analytics = analytics.clone();
    let query = params.query;
    let report = tokio::task::spawn_blocking(move || analytics.report(&query)).await??;
    Ok(response(&report, params.format))
}

fn response(report: &Report, format: Format) -> pb::ReportResponse {
    pb::ReportResponse {
        report: report.name.as_str().to_owned(),
        currency: report.currency.clone(),
        columns: report
            .columns
            .iter()
            .map(|column| (*column).to_owned())
            .collect(),
        rows: report
            .rows
            .iter()
            .map(|row| pb::Row {
                values: row.iter().map(|cell| cell.to_text()).collect(),
            })
            .collect(),
        csv: match format {
            Format::Csv => report.to_csv(),
            Format::Json => String::new(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analytics::{Cell, ReportName};

    #[test]
    fn rows_carry_each_cell_as_text() {
        let mut report = Report::new(ReportName::Costs, &["channel", "rate", "n"], "EUR");
        report.push(vec!["sms".into(), Cell::Null, Cell::Int(3)]);
        let json = response(&report, Format::Json);
        assert_eq!(json.report, "costs");
        assert_eq!(json.currency, "EUR");
        assert_eq!(json.columns, ["channel", "rate", "n"]);
        assert_eq!(json.rows[0].values, ["sms", "", "3"]);
        assert!(json.csv.is_empty());
        let csv = response(&report, Format::Csv);
        assert_eq!(csv.csv, report.to_csv());
    }
}
