//! `GET /openapi.json`: the OpenAPI 3.1 document of this HTTP API
//! (`control-plane/openapi.json`, compiled in), so a binary describes
//! exactly the routes it serves. Public, like `/`: it holds no secrets.
//!
//! `tests/openapi.rs` keeps the document in step with the router both
//! ways: every documented operation exists, and every `.route(…)` in
//! `src/http/` is documented.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::HttpState;

/// The document, as written.
pub const DOCUMENT: &str = include_str!("../../openapi.json");

pub fn router() -> Router<HttpState> {
    Router::new().route("/openapi.json", get(document))
}

async fn document() -> Response {
    let mut response = DOCUMENT.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    response
}
