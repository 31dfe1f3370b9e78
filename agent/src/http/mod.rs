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
//! CORS preflight. Which pages may call, and which routes answer browsers at
//! all, is [`cors`]'s job; what a browser may do once it calls (no notify, no
//! contact traits unless it holds a server key) is [`trust`]'s.
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
//! * Checks run from the cheapest to the costliest, so a refused request
//!   costs little: media type, `Origin`, write key in the header, then the
//!   body (size, JSON, write keys in it, validation), then trust.

mod auth;
mod body;
pub mod cors;
mod error;
pub(crate) mod request_metrics;
pub mod trust;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::SystemTime;

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use prost::Message;
use serde::Serialize;
use tracing::{debug, error};

use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::segment::{CallKind, Endpoint, Received, Request};

pub use cors::AllowedOrigins;
pub use error::{IntakeError, RejectReason};
pub use trust::ServerKeys;

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
    /// The secret keys that make a call trusted (see [`trust`]); also
    /// accepted wherever a write key is.
    pub server_keys: Arc<ServerKeys>,
    /// The pages that may call the public routes (see [`cors`]).
    pub origins: Arc<AllowedOrigins>,
}

impl IntakeState {
    /// Without server keys, and open to every origin: what the agent did
    /// before server keys existed; see [`Self::with_server_keys`] and
    /// [`Self::with_origins`].
    pub fn new(outbox: Outbox, metrics: Metrics, write_keys: Vec<String>) -> Self {
        Self {
            outbox,
            metrics,
            write_keys: Arc::new(write_keys),
            server_keys: Arc::new(ServerKeys::default()),
            origins: Arc::new(AllowedOrigins::Any),
        }
    }

    pub fn with_server_keys(mut self, keys: ServerKeys) -> Self {
        self.server_keys = Arc::new(keys);
        self
    }

    pub fn with_origins(mut self, origins: AllowedOrigins) -> Self {
        self.origins = Arc::new(origins);
        self
    }

    fn requires_key(&self) -> bool {
        !self.write_keys.is_empty()
    }

    fn check_key(&self, key: &str) -> Result<(), IntakeError> {
        if !self.requires_key()
            || self.write_keys.iter().any(|known| known == key)
            || self.server_keys.contains(key)
        {
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
            let options = move |State(state): State<IntakeState>, headers: HeaderMap| {
                preflight(state, endpoint, headers)
            };
            router = router.route(path, post(handler).options(options));
        }
    }
    let request_duration = state.metrics.http_request_duration.clone();
    router
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
    let mut response = match accept(&state, endpoint, &headers, body).await {
        Ok(ids) => {
            let answer = match endpoint {
                Endpoint::Batch => Accepted {
                    success: true,
                    message_id: None,
                    message_ids: Some(&ids),
                },
                Endpoint::Call(_) => Accepted {
                    success: true,
                    message_id: ids.first().map(String::as_str),
                    message_ids: None,
                },
            };
            (StatusCode::OK, Json(answer)).into_response()
        }
        Err(refusal) => refuse(&state, refusal),
    };
    // Refusals too: a page allowed to call reads why it was refused.
    cors::decorate(&state.origins, endpoint, &headers, &mut response);
    response
}

/// Counts, logs and answers a refusal.
/// The success answer: `{"success":true,"messageId":…}` for one call,
/// `"messageIds":[…]` for a batch. A struct, not a `json!` tree: it is
/// written on every accepted call.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Accepted<'a> {
    success: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    message_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message_ids: Option<&'a [String]>,
}

fn refuse(state: &IntakeState, refusal: IntakeError) -> Response {
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
    cors::check_origin(&state.origins, headers)?;
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
        state.check_key(&key)?;
    }
    let contact_traits = request.contact_traits();
    let caller = trust::Caller {
        browser: headers.contains_key(header::ORIGIN),
        basic_server_key: header_key
            .as_deref()
            .is_some_and(|key| state.server_keys.contains(key)),
    };
    let received = Received {
        write_key: header_key.unwrap_or_default(),
        received_at: nudge_proto::timestamp(SystemTime::now()),
    };
    let mut envelopes = request.into_envelopes(&received)?;
    if state.requires_key()
        && envelopes
            .iter()
            .any(|envelope| envelope.write_key.is_empty())
    {
        return Err(IntakeError::Unauthorized(
            "a write key is required: send it as the HTTP Basic user name or as `writeKey` in the body",
        ));
    }
    // After authentication (401 before 403), before anything is stored.
    state
        .server_keys
        .check(caller, &contact_traits, &mut envelopes)?;

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
/// with JSON or Basic auth; a refusal counts like any other.
async fn preflight(state: IntakeState, endpoint: Endpoint, headers: HeaderMap) -> Response {
    cors::preflight(&state.origins, endpoint, &headers)
        .unwrap_or_else(|forbidden| refuse(&state, forbidden.into()))
}
