//! The HTTP/JSON API on `NUDGE_CP_HTTP_LISTEN`.
//!
//! For now: `GET /` (service info), `GET /healthz`, and the operator routes
//! under `/v1/admin/`, which require `Authorization: Bearer
//! <NUDGE_CP_ADMIN_TOKEN>` (compared in constant time). Errors are JSON
//! `{"error":{"code":…,"message":…}}` with the matching status; the mapping
//! from [`ApiError`] to a response is in one place, its `IntoResponse`.
//!
//! When no admin token is configured the admin routes answer 503
//! `admin_disabled`: the request may be fine, the server is not set up for
//! it, and no token a caller sends could be right.
//!
//! Two groups of routes are public, each authenticated by a signature
//! rather than the admin token: the unsubscribe links in emails
//! (`/v1/unsubscribe/{token}`, `public_links`) and Twilio's status
//! callbacks (`/v1/callbacks/twilio/status`, `sms_callbacks`). Unconfigured,
//! they answer 503 like the admin routes.

mod admin_api;
mod admin_devices;
mod admin_notifications;
mod admin_preferences;
mod form;
mod public_links;
mod sms_callbacks;

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::config::AdminToken;
use crate::store::{Store, StoreError};

/// What every HTTP handler can reach.
#[derive(Clone)]
pub struct HttpState {
    pub store: Arc<dyn Store>,
    /// Notifications and their deliveries, for the operator routes.
    pub notifications: crate::notifications::NotificationStore,
    pub queue: crate::delivery::DeliveryQueue,
    /// Users' preferences, and the operator's defaults they are checked
    /// against.
    pub preferences: crate::preferences::PreferenceStore,
    /// Users' push devices.
    pub devices: crate::devices::DeviceStore,
    /// The engine's settings now in force (types and their defaults).
    pub settings: crate::engine::SettingsHandle,
    /// `None` disables the admin routes (see the module doc).
    pub admin_token: Option<AdminToken>,
    /// Checks the tokens of unsubscribe links; `None` without `public_url`.
    pub unsubscribe: Option<crate::links::UnsubscribeLinks>,
    /// Checks Twilio's status callbacks; `None` without
    /// `[channels.sms] status_callback_url`.
    pub sms_callbacks: Option<crate::channels::sms::StatusCallbackAuth>,
}

/// The router of the HTTP listener.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/healthz", get(|| async { "ok\n" }))
        .nest("/v1/admin", admin_api::router(state.clone()))
        .merge(public_links::router())
        .merge(sms_callbacks::router())
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .with_state(state)
}

async fn root() -> Json<serde_json::Value> {
    Json(json!({ "service": "nudge-control-plane", "version": env!("CARGO_PKG_VERSION") }))
}

/// An error answer: status plus a stable machine-readable code.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        tracing::error!(%error, "store failed in http handler");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            error.to_string(),
        )
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(error: tokio::task::JoinError) -> Self {
        tracing::error!(%error, "store task failed in http handler");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "store task failed",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({ "error": { "code": self.code, "message": self.message } }));
        let mut response = (self.status, body).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}
