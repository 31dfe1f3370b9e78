//! The agent's HTTP intake: the Segment tracking API and Nudge's own calls,
//! as an axum [`Router`] that answers only once calls are durable.
//!
//! Wire concerns live here (routes, media types, gzip, size limits, write
//! keys, statuses); what a valid call is lives in [`crate::segment`], and
//! durability in [`crate::outbox`].
//!
//! # Routes
//!
//! `POST /v1/{track,identify,page,screen,group,alias,batch}`, the analytics.js
//! short forms `/v1/{t,i,p,s,g,a,b}`, `POST /v1/sessions/start`,
//! `/v1/sessions/end` and `/v1/notify`. Each also answers `OPTIONS` for the
//! CORS preflight, and every answer carries `Access-Control-Allow-Origin: *`
//! so analytics.js can post from any page.
//!
//! # What it promises
//!
//! * `200 {"success": true, "messageId": …}` (`"messageIds": […]` for a
//!   batch) is sent only after the outbox reported the envelopes durable.
//! * A request is all or nothing: any refusal (a bad batch item, a full
//!   outbox, …) appends none of its calls. A refusal answers
//!   `{"success": false, "code", "message"}` with a status from
//!   [`RejectReason::status`], and counts once in
//!   `nudge_agent_requests_rejected_total{reason=code}`.
//! * Bodies are bounded before and after gzip decompression (32 KB per call,
//!   500 KB per batch), so neither a large body nor a gzip bomb is buffered.
//! * A missing `Content-Type` is read as JSON (some Segment libraries omit
//!   it); `application/json` and `text/plain` (what analytics.js sends to
//!   avoid a preflight) are accepted, anything else is `415`.

mod auth;
mod body;
mod error;
pub(crate) mod request_metrics;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::SystemTime;

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::map_response;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use prost::Message;
use serde_json::json;
use tracing::{debug, error};

use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::segment::{CallKind, Endpoint, Received, Request};

pub use error::{IntakeError, RejectReason};

/// What the intake handlers share. Cheap to clone.
///
/// Shutdown needs no field here: the agent stops the listener and calls
/// [`Outbox::stop_accepting`], after which appends fail with
/// `ShuttingDown` and intake answers `503 shutting_down` + `Retry-After`.
#[derive(Clone)]
pub struct IntakeState {
    /// Where accepted envelopes go; answers wait for its durable append.
    pub outbox: Outbox,
    /// Counts accepted envelopes and refused requests.
    pub metrics: Metrics,
    /// The write keys allowed to send. Empty accepts any key, or none: the
    /// agent listens on localhost by default, next to a trusted application.
    pub write_keys: Arc<Vec<String>>,
}

impl IntakeState {
    pub fn new(outbox: Outbox, metrics: Metrics, write_keys: Vec<String>) -> Self {
        Self {
            outbox,
            metrics,
            write_keys: Arc::new(write_keys),
        }
    }

    fn requires_key(&self) -> bool {
        !self.write_keys.is_empty()
    }

    fn check_key(&self, key: &str) -> Result<(), IntakeError> {
        if !self.requires_key() || self.write_keys.iter().any(|known| known == key) {
            Ok(())
        } else {
            Err(IntakeError::Unauthorized(
                "the write key is not accepted by this agent",
            ))
        }
    }
}

/// Every intake endpoint and the paths it answers on.
const ROUTES: [(Endpoint, &[&str]); 10] = [
    (Endpoint::Call(CallKind::Track), &["/v1/track", "/v1/t"]),
    (
        Endpoint::Call(CallKind::Identify),
        &["/v1/identify", "/v1/i"],
    ),
    (Endpoint::Call(CallKind::Page), &["/v1/page", "/v1/p"]),
    (Endpoint::Call(CallKind::Screen), &["/v1/screen", "/v1/s"]),
    (Endpoint::Call(CallKind::Group), &["/v1/group", "/v1/g"]),
    (Endpoint::Call(CallKind::Alias), &["/v1/alias", "/v1/a"]),
    (Endpoint::Batch, &["/v1/batch", "/v1/b"]),
    (
        Endpoint::Call(CallKind::SessionStart),
        &["/v1/sessions/start"],
    ),
    (Endpoint::Call(CallKind::SessionEnd), &["/v1/sessions/end"]),
    (Endpoint::Call(CallKind::Notify), &["/v1/notify"]),
];

/// The intake routes, ready to be served (or merged with other routes).
pub fn intake_router(state: IntakeState) -> Router {
    let mut router = Router::new();
    for (endpoint, paths) in ROUTES {
        for path in paths {
            let handler =
                move |State(state): State<IntakeState>, headers: HeaderMap, body: Body| {
                    intake(state, endpoint, headers, body)
                };
            router = router.route(path, post(handler).options(preflight));
        }
    }
    let request_duration = state.metrics.http_request_duration.clone();
    router
        .layer(map_response(allow_any_origin))
        .layer(axum::middleware::from_fn_with_state(
            request_duration,
            request_metrics::track,
        ))
        .with_state(state)
}

async fn intake(
    state: IntakeState,
    endpoint: Endpoint,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match accept(&state, endpoint, &headers, body).await {
        Ok(ids) => {
            let answer = match endpoint {
                Endpoint::Batch => json!({ "success": true, "messageIds": ids }),
                Endpoint::Call(_) => json!({ "success": true, "messageId": ids.first() }),
            };
            (StatusCode::OK, Json(answer)).into_response()
        }
        Err(refusal) => {
            let reason = refusal.reason();
            state
                .metrics
                .requests_rejected
                .with_label_values(&[reason.as_str()])
                .inc();
            match &refusal {
                IntakeError::Storage(detail) => {
                    error!(%detail, "outbox append failed; request refused")
                }
                _ => debug!(code = reason.as_str(), message = %refusal, "request refused"),
            }
            refusal.into_response()
        }
    }
}

/// Validates, authenticates and appends one request; returns the ids of its
/// envelopes, in order, once they are durable.
async fn accept(
    state: &IntakeState,
    endpoint: Endpoint,
    headers: &HeaderMap,
    body: Body,
) -> Result<Vec<String>, IntakeError> {
    body::check_content_type(headers)?;
    let encoding = body::content_encoding(headers)?;
    let header_key = match auth::basic_write_key(headers) {
        Ok(key) => key,
        Err(problem) if state.requires_key() => return Err(IntakeError::Unauthorized(problem)),
        // Without configured keys the header only labels envelopes.
        Err(_) => None,
    };
    if let Some(key) = &header_key {
        state.check_key(key)?;
    }

    let limit = endpoint.body_limit();
    let what = match endpoint {
        Endpoint::Batch => "a batch",
        Endpoint::Call(_) => "one call",
    };
    let raw = body::read_limited(headers, body, limit, what).await?;
    let raw = match encoding {
        body::Encoding::Identity => raw,
        body::Encoding::Gzip => body::gunzip(&raw, limit, what)?,
    };

    let request = Request::parse(endpoint, &raw)?;
    for key in request.write_keys() {
        state.check_key(key)?;
    }
    let received = Received {
        write_key: header_key.unwrap_or_default(),
        received_at: nudge_proto::timestamp(SystemTime::now()),
    };
    let envelopes = request.into_envelopes(&received)?;
    if state.requires_key()
        && envelopes
            .iter()
            .any(|envelope| envelope.write_key.is_empty())
    {
        return Err(IntakeError::Unauthorized(
            "a write key is required: send it as the HTTP Basic user name or as `writeKey` in the body",
        ));
    }

    let ids: Vec<String> = envelopes
        .iter()
        .map(|envelope| envelope.id.clone())
        .collect();
    if envelopes.is_empty() {
        return Ok(ids); // an empty batch: nothing to make durable
    }
    let records: Vec<Bytes> = envelopes
        .iter()
        .map(|envelope| Bytes::from(envelope.encode_to_vec()))
        .collect();
    // Not raced against shutdown: an append under way finishes so that the
    // client gets a true answer (the listener's graceful shutdown waits).
    state.outbox.append(records).await?;
    state.metrics.events_received.inc_by(ids.len() as u64);
    Ok(ids)
}

/// Answers the CORS preflight a browser sends before a cross-origin POST
/// with JSON or Basic auth.
async fn preflight() -> impl IntoResponse {
    (
        StatusCode::NO_CONTENT,
        [
            (header::ACCESS_CONTROL_ALLOW_METHODS, "POST, OPTIONS"),
            (
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                "Content-Type, Authorization, Content-Encoding",
            ),
            (header::ACCESS_CONTROL_MAX_AGE, "86400"),
        ],
    )
}

async fn allow_any_origin(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Retry-After"),
    );
    response
}
