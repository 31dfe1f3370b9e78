//! `nudge_agent_http_request_duration_seconds{route,method,status}`: how
//! long each intake route takes to answer (including the durable append),
//! measured by a middleware around the intake router, to the response
//! head.
//!
//! Labels stay bounded: `route` is the matched route *template* (e.g.
//! `/v1/track`, never a raw path),
//! `unmatched` for requests no route took; `method` is one of the standard
//! methods or `other`; `status` is the numeric status code.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use prometheus::{HistogramOpts, HistogramVec};

/// The metric's name.
pub const NAME: &str = "nudge_agent_http_request_duration_seconds";
/// The `route` of requests that matched no route.
pub const UNMATCHED: &str = "unmatched";

/// The histogram, not yet registered.
pub(crate) fn histogram() -> Result<HistogramVec, prometheus::Error> {
    HistogramVec::new(
        HistogramOpts::new(
            NAME,
            "Time to answer an HTTP intake request, to the response head, by route \
             template, method and status code.",
        )
        .buckets(vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ]),
        &["route", "method", "status"],
    )
}

/// The middleware; apply it to the outer router, after nesting, so the
/// matched path is the full template.
pub(crate) async fn track(
    State(histogram): State<HistogramVec>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| UNMATCHED.to_owned(), |path| path.as_str().to_owned());
    let method = method_label(request.method());
    let start = Instant::now();
    let response = next.run(request).await;
    histogram
        .with_label_values(&[route.as_str(), method, response.status().as_str()])
        .observe(start.elapsed().as_secs_f64());
    response
}

/// The standard methods by name; any extension method is `other`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}
