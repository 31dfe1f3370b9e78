//! [`JsonBody`]: the one way handlers read a JSON request body.
//!
//! Promises, for every route that takes one:
//!
//! * A body that is not JSON, not `Content-Type: application/json`, or not
//!   the route's shape (a wrong type, an unknown or missing field) is a
//!   `400 bad_request` in the API's JSON error format, with serde's message
//!   naming the field (`types.a.frequency: unknown variant …`). axum's own
//!   rejections are plain text with `415`/`422`, statuses and a content
//!   type the OpenAPI document does not promise; they never reach a client.
//! * The handler runs only with a body it can use, so a refused body
//!   changes nothing.
//! * `Option<JsonBody<T>>` is for optional bodies: no body at all (no
//!   `Content-Type`, nothing sent) is `None`; anything sent is read as
//!   above, so a wrong optional body is refused, never ignored.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, OptionalFromRequest, Request};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use serde::de::DeserializeOwned;

use super::ApiError;

/// A request body read as JSON into `T` (see the module doc).
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T, S> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        match <Json<T> as FromRequest<S>>::from_request(request, state).await {
            Ok(Json(value)) => Ok(JsonBody(value)),
            Err(rejection) => Err(refused(&rejection)),
        }
    }
}

impl<T, S> OptionalFromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Option<Self>, ApiError> {
        if request.headers().contains_key(CONTENT_TYPE) {
            return <Self as FromRequest<S>>::from_request(request, state)
                .await
                .map(Some);
        }
        // No content type: absent only if nothing was sent either; bytes
        // without a type are a body the client meant and got wrong.
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| refused(&rejection.into()))?;
        if bytes.is_empty() {
            Ok(None)
        } else {
            Err(ApiError::bad_request(
                "a request body needs Content-Type: application/json",
            ))
        }
    }
}

/// axum's rejection as the API's `400`, keeping its message (it names the
/// field serde stumbled on).
fn refused(rejection: &JsonRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            rejection.body_text(),
        );
    }
    match rejection {
        JsonRejection::MissingJsonContentType(_) => {
            ApiError::bad_request("the request body must be JSON (Content-Type: application/json)")
        }
        other => ApiError::bad_request(format!("request body: {}", other.body_text())),
    }
}
