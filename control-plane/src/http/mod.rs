//! The HTTP/JSON API on `NUDGE_CP_HTTP_LISTEN`.
//!
//! For now: `GET /` (service info), `GET /healthz`, `GET /openapi.json`
//! (this API's OpenAPI document, `openapi`), and the operator routes
//! under `/v1/admin/`, which require `Authorization: Bearer
//! <NUDGE_CP_ADMIN_TOKEN>` (compared in constant time). Errors are JSON
//! `{"error":{"code":…,"message":…}}` with the matching status; the mapping
//! from [`ApiError`] to a response is in one place, its `IntoResponse`.
//!
//! Among them, `GET /v1/admin/analytics/{report}` (`admin_analytics`)
//! serves the analytics reports, with the parameters `analytics_params`
//! checks for it and for the gRPC `nudge.v1.Analytics` alike.
//!
//! When no admin token is configured the admin routes answer 503
//! `admin_disabled`: the request may be fine, the server is not set up for
//! it, and no token a caller sends could be right.
//!
//! End users reach their own data under `/v1/me/` with a token their
//! application's backend signed (`user_auth`); the notification center is
//! `me_notifications`, the preferences `me_preferences`. The web inbox
//! that uses them (`/inbox.js`, `/inbox`, `/inbox/preferences`) and the
//! CORS of `/v1/me/` are `web`.
//!
//! Some routes are public, each authenticated by a signature rather than
//! the admin token: the unsubscribe links in emails
//! (`/v1/unsubscribe/{token}`, `public_links`), the open pixel and click
//! links of engagement tracking (`/v1/t/open/{token}.gif`,
//! `/v1/t/click/{token}`, `tracking`), Twilio's status callbacks
//! (`/v1/callbacks/twilio/status`, `sms_callbacks`) and the email
//! provider's event callbacks (`/v1/callbacks/email`, `email_callbacks`).
//! Unconfigured, they answer `404` with `links_disabled` or
//! `callbacks_disabled` and a message naming the setting that enables them
//! ([`ApiError::not_configured`]): the route is not there for this server,
//! and a `503` would invite retries that cannot succeed. The open pixel
//! always answers its GIF.

mod admin_analytics;
mod admin_api;
mod admin_notifications;
mod admin_paging;
mod admin_parked;
mod admin_preferences;
mod admin_privacy;
pub mod analytics_params;
mod broadcast_schemas;
mod broadcasts;
mod devices;
mod download;
mod email_callbacks;
mod form;
mod json_body;
mod me_activity;
mod me_notifications;
mod me_preferences;
mod me_stream;
pub mod openapi;
mod public_links;
pub mod request_metrics;
mod sms_callbacks;
pub mod stream_limits;
mod stream_params;
mod strict_json;
mod tracking;
pub mod user_auth;
mod web;

pub use json_body::JsonBody;
pub use me_stream::{Heartbeat, LiveMetrics, LiveStream};
pub use stream_limits::StreamLimits;

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;

use crate::config::AdminToken;
use crate::storage::{EventStore, StorageError};

/// What every HTTP handler can reach.
#[derive(Clone)]
pub struct HttpState {
    pub store: EventStore,
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
    /// Checks open and click tracking links, with the `[tracking]`
    /// switches; `None` without `public_url`.
    pub tracking: Option<crate::links::TrackingLinks>,
    /// Checks the email provider's event callbacks; `None` without
    /// `[channels.email] callback_secret`.
    pub email_callbacks: Option<crate::channels::email::EmailCallbackAuth>,
    /// The ids of callbacks already taken, shared by every replica: a
    /// replayed or resent email callback changes nothing.
    pub callback_ids: crate::storage::CallbackIdTable,
    /// Users' in-app notifications and their read state.
    pub inbox: crate::inbox::InboxStore,
    /// Verifies end users' tokens; `None` disables `/v1/me/*` (503).
    pub user_tokens: Option<user_auth::UserTokenSecret>,
    /// The live stream's shutdown, heartbeat and metrics.
    pub live: LiveStream,
    /// Erase and export of a user (`admin_privacy`).
    pub privacy: crate::privacy::Privacy,
    /// `nudge_cp_http_request_duration_seconds` (`request_metrics`).
    pub request_duration: prometheus::HistogramVec,
    /// The analytics rollups and their reports (`admin_analytics`).
    pub analytics: crate::analytics::Analytics,
    /// Topic subscriptions (`broadcasts`).
    pub topics: crate::storage::TopicTable,
    /// Broadcasts and their progress (`broadcasts`).
    pub broadcasts: crate::storage::BroadcastTable,
}

impl HttpState {
    /// Every store in `stores` and nothing else configured: admin and
    /// end-user auth off, no links, no callbacks, no types. For tests and
    /// tools that run the HTTP API on its own; set the fields they need
    /// with struct update syntax. (The program builds its state from the
    /// engine's own stores instead: the inbox's live hub must be shared
    /// with the in-app channel.)
    pub fn standalone(stores: &crate::storage::Stores) -> Result<Self, crate::Error> {
        let store = stores.events.clone();
        // Default settings, system time, metrics in a registry of its own.
        let analytics = crate::analytics::Analytics::open(
            stores,
            crate::analytics::AnalyticsConfig::default(),
            Arc::new(crate::delivery::SystemClock),
            &prometheus::Registry::new(),
        )?;
        let privacy = crate::privacy::Privacy::open(stores)?.with_analytics(analytics.clone());
        Ok(HttpState {
            store,
            notifications: stores.notifications.clone(),
            queue: stores.deliveries.clone(),
            preferences: stores.preferences.clone(),
            devices: stores.devices.clone(),
            settings: crate::engine::SettingsHandle::default(),
            admin_token: None,
            unsubscribe: None,
            sms_callbacks: None,
            tracking: None,
            email_callbacks: None,
            callback_ids: stores.callback_ids.clone(),
            inbox: stores.inbox.clone(),
            user_tokens: None,
            live: LiveStream::default(),
            privacy,
            request_duration: request_metrics::histogram()?,
            analytics,
            topics: stores.topics.clone(),
            broadcasts: stores.broadcasts.clone(),
        })
    }
}

/// The router of the HTTP listener.
pub fn router(state: HttpState) -> Router {
    let request_duration = state.request_duration.clone();
    Router::new()
        .route("/", get(root))
        .route("/healthz", get(healthz))
        .nest("/v1/admin", admin_api::router(state.clone()))
        .nest(
            "/v1/me",
            me_notifications::router()
                .merge(me_stream::router())
                .merge(devices::me_router())
                .merge(me_activity::router())
                .merge(me_preferences::router())
                .merge(broadcasts::me_router()),
        )
        .merge(public_links::router())
        .merge(sms_callbacks::router())
        .merge(tracking::router())
        .merge(email_callbacks::router())
        .merge(web::router())
        .merge(openapi::router())
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .with_state(state)
        .layer(axum::middleware::from_fn(web::cors))
        .layer(axum::middleware::from_fn_with_state(
            request_duration,
            request_metrics::track,
        ))
}

#[utoipa::path(
    get,
    path = "/",
    operation_id = "getServiceInfo",
    summary = "Service name and version",
    tags = ["service"],
    security(),
    responses(
        (status = 200, body = ServiceInfo, description = "The service."),
    ),
)]
pub(crate) async fn root() -> Json<ServiceInfo> {
    Json(ServiceInfo {
        service: "nudge-control-plane",
        version: env!("CARGO_PKG_VERSION"),
    })
}

#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "getHealth",
    summary = "Liveness of the HTTP listener",
    tags = ["service"],
    security(),
    responses(
        (status = 200, content_type = "text/plain; charset=utf-8", body = String,
         description = "Alive: the body is `ok` and a newline."),
    ),
)]
pub(crate) async fn healthz() -> &'static str {
    "ok\n"
}

/// What `GET /` answers: which service this is, and its version.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ServiceInfo {
    #[schema(schema_with = service_name)]
    service: &'static str,
    version: &'static str,
}

fn service_name() -> utoipa::openapi::Object {
    openapi::string_enum(["nudge-control-plane"])
}

/// The JSON of every error answer: `{"error": {"code", "message"}}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(
    as = Error,
    description = "Every error the API answers in JSON (a `401` also carries `WWW-Authenticate: Bearer`). An unknown route is `404 not_found` \"no such route\"."
)]
pub(crate) struct ErrorBody {
    #[schema(inline)]
    error: ErrorDetail,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct ErrorDetail {
    /// Stable, machine-readable: `bad_request`, `unauthorized`,
    /// `invalid_token`, `not_found`, `unknown_report`, `conflict`,
    /// `critical_type`, `invalid_link`, `malformed_json`,
    /// `invalid_signature`, `admin_disabled`, `user_auth_disabled`,
    /// `links_disabled`, `callbacks_disabled`, `payload_too_large`,
    /// `store_unavailable`, `internal`.
    #[schema(examples("bad_request"))]
    code: &'static str,
    /// For people: says what was wrong.
    message: String,
}

/// An error answer: status plus a stable machine-readable code.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// Seconds for a `Retry-After` header: refusals that pass with time.
    retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// Adds `Retry-After: secs` to the answer.
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// A route whose feature this server is not configured for: `404`,
    /// because to a caller the route is not there (no retry and no other
    /// input will change that, which a `503` would suggest), with `code`
    /// and a `message` naming the setting that enables it.
    pub fn not_configured(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, code, message)
    }

    /// A signed route's request that lacks one of its signature `headers`:
    /// `403 invalid_signature`, whether or not the route is configured,
    /// since no configuration could accept it.
    pub fn require_headers(headers: &HeaderMap, names: &[&str]) -> Result<(), Self> {
        match names.iter().find(|name| !headers.contains_key(**name)) {
            None => Ok(()),
            Some(name) => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "invalid_signature",
                format!(
                    "the {name} header is missing: requests to this route are signed with {}",
                    names.join(", ")
                ),
            )),
        }
    }
}

impl From<StorageError> for ApiError {
    fn from(error: StorageError) -> Self {
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
        let body = Json(ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
            },
        });
        let mut response = (self.status, body).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        response
    }
}
