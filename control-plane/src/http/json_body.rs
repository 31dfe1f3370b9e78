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
//! * Every body of this API is a JSON object, and so is every nested
//!   struct: an array, which serde would read as a struct's fields in
//!   order, is refused, naming where (`types.invoice: expected a JSON
//!   object`; see `strict_json`).
//! * `Option<JsonBody<T>>` is for optional bodies: no body at all (no
//!   `Content-Type`, nothing sent) is `None`, and so is a JSON `null` (what
//!   the OpenAPI document derives for an optional body); anything else sent
//!   is read as above, so a wrong optional body is refused, never ignored.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, OptionalFromRequest, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use serde::de::DeserializeOwned;

use super::{ApiError, strict_json};

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
        if !is_json(request.headers()) {
            return Err(not_json());
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| refused(&rejection.into()))?;
        read(&bytes).map(JsonBody)
    }
}

/// The `400` for a body sent with another content type.
fn not_json() -> ApiError {
    ApiError::bad_request("the request body must be JSON (Content-Type: application/json)")
}

/// A JSON body's bytes as `T`, or the `400` that says what is wrong.
fn read<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, ApiError> {
    // axum's reading names the field that failed (`types.a.frequency`).
    let Json(body) = Json::<T>::from_bytes(bytes).map_err(|rejection| refused(&rejection))?;
    // Then the same once more, objects only (it parsed, so this does too).
    let value = serde_json::from_slice(bytes)
        .map_err(|error| ApiError::bad_request(format!("request body: {error}")))?;
    strict_json::check::<T>(value)
        .map_err(|message| ApiError::bad_request(format!("request body: {message}")))?;
    Ok(body)
}

impl<T, S> OptionalFromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Option<Self>, ApiError> {
        if request.headers().contains_key(CONTENT_TYPE) {
            if !is_json(request.headers()) {
                return Err(not_json());
            }
            let bytes = Bytes::from_request(request, state)
                .await
                .map_err(|rejection| refused(&rejection.into()))?;
            if bytes.trim_ascii() == b"null" {
                return Ok(None);
            }
            return read(&bytes).map(|body| Some(JsonBody(body)));
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

/// `application/json` or a `+json` type, parameters (`charset`) aside.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim();
    essence.eq_ignore_ascii_case("application/json")
        || essence
            .rsplit_once('+')
            .is_some_and(|(kind, suffix)| kind.contains('/') && suffix.eq_ignore_ascii_case("json"))
}

/// axum's rejection as the API's `400` (or `413` for a body over the
/// limit), keeping its message: it names the field serde stumbled on.
fn refused(rejection: &JsonRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            rejection.body_text(),
        );
    }
    ApiError::bad_request(format!("request body: {}", rejection.body_text()))
}
