//! The middleware [`super::serve`] puts around the router: every answer is
//! judged against `openapi.json` by [`nudge_e2e::openapi_contract::check`]
//! (see there what is checked). An answer that breaks the document is
//! replaced by a `500` whose body names the operation and what broke, so
//! the test that received it fails on its status or body; the breach is
//! printed to stderr too.

use axum::body::{Body, to_bytes};
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// The middleware: answers as the router did, unless the answer breaks the
/// document.
pub async fn check(request: Request, next: Next) -> Response {
    let method = request.method().as_str().to_owned();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    if response.status() == StatusCode::SWITCHING_PROTOCOLS
        || response
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|value| value.as_bytes().starts_with(b"text/event-stream"))
    {
        return response; // never judged, and an event stream never ends
    }
    let (parts, body) = response.into_parts();
    let judged = match to_bytes(body, usize::MAX).await {
        Ok(bytes) => {
            let content_type = parts
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|value| value.to_str().ok());
            nudge_e2e::openapi_contract::check(
                &method,
                &path,
                parts.status.as_u16(),
                content_type,
                &bytes,
            )
            .map(|()| bytes)
        }
        Err(error) => Err(format!("{method} {path}: unreadable body: {error}")),
    };
    match judged {
        Ok(bytes) => Response::from_parts(parts, Body::from(bytes)),
        Err(message) => {
            eprintln!("{message}");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                axum::Json(json!({ "error": "openapi_contract", "message": message })),
            )
                .into_response()
        }
    }
}
