//! `POST /v1/callbacks/email`: an email provider's events about messages
//! it took from the email channel, in Nudge's own documented JSON format
//! (most providers' webhooks map onto it with a small adapter). Public, no
//! admin token: each request is signed with the configured
//! `[channels.email] callback_secret` instead.
//!
//! ```json
//! {"events": [
//!   {"message_id": "<0195…@acme.example>", "event": "delivered", "timestamp": "2026-01-02T03:04:05Z"},
//!   {"delivery_id": "0195…", "event": "bounced", "reason": "550 5.1.1 user unknown"}
//! ]}
//! ```
//!
//! Each event names its message by `message_id` (the `Message-ID` the
//! email channel gave it, angle brackets optional) or `delivery_id` (the
//! delivery's id, which is also the `Message-ID`'s local part); with both,
//! `delivery_id` is used. `event` is one of `delivered`, `bounced` (hard),
//! `soft_bounced`, `opened`, `clicked`, `complained`; `timestamp` (RFC
//! 3339, default: when the callback arrived, never later than that) and
//! `reason` (the provider's words, kept as the last answer) are optional;
//! other fields are ignored.
//!
//! Each request is signed the Standard Webhooks way (the scheme of Nudge's
//! own webhook channel; see [`crate::channels::email::EmailCallbackAuth`]):
//! `webhook-id` (the provider's unique id of this message, the same on its
//! resends), `webhook-timestamp` (unix seconds) and `webhook-signature:
//! v1,<base64 HMAC-SHA256 of "{webhook-id}.{webhook-timestamp}.{body}">`
//! keyed by `callback_secret` (base64-decoded when it is a `whsec_…`
//! secret, else its bytes). The earlier `X-Nudge-Signature` (a signature of
//! the body alone) is no longer accepted: it signed no time and no id, so a
//! captured callback could be replayed forever.
//!
//! # Promises
//!
//! * **Only signed callbacks act.** Missing or wrong signature: `403
//!   invalid_signature`, nothing changes.
//! * **Only fresh callbacks act.** A `webhook-timestamp` more than
//!   [`CALLBACK_TOLERANCE`] (5 minutes) before or after this server's
//!   clock: `403 stale_timestamp`, nothing changes (checked after the
//!   signature, so the time cannot be forged).
//! * **Each message acts once.** A `webhook-id` already taken (on any
//!   replica: the ids are in the database) is answered `200 {"duplicate":
//!   true, "results": []}` and changes nothing: a provider resending after
//!   a lost answer is satisfied, and a replay within the tolerance has no
//!   effect. An id is taken once its batch is well-formed, and given back
//!   if applying it fails (503), so the provider's resend is applied.
//! * **A batch is checked whole before anything changes.** Malformed JSON,
//!   a missing `events` array, an unknown `event`, a bad `timestamp` or
//!   `delivery_id`, an event with neither id: `400` naming the event's
//!   index and field, nothing changes.
//! * **Statuses only move forward** (see [`crate::delivery::model`]):
//!   `delivered` on a `sent` delivery → `delivered`; `opened`/`clicked`
//!   record the engagement (also on a delivery already delivered);
//!   `bounced` → `failed` with the reason as last answer (from `sent` or
//!   `delivered`; never after an open or click); `soft_bounced` keeps the
//!   status and, on a `sent` delivery, keeps the reason as last answer (the
//!   provider retries on its own); `complained` sets `complained_at`,
//!   counts as delivered, and switches the user's email off for the
//!   delivery's type, like the unsubscribe link — unless the type is
//!   critical (then only logged). A late or repeated event changes nothing;
//!   in particular only a complaint about a delivery that has none recorded
//!   switches email off, and it does so before the complaint is recorded:
//!   a failure in between (503) leaves nothing recorded, so the provider's
//!   resend unsubscribes; a complaint repeated in another message never
//!   undoes the user turning the type's email back on (`"unsubscribed":
//!   false` then).
//! * **The provider hears 200 for every signed, well-formed batch**, with
//!   one result per event in order: `applied` (recorded, or already so),
//!   `unknown_message` (no email delivery of that id; not retried), or
//!   `ignored` (the delivery cannot take it, e.g. an open on a failed
//!   delivery, with the reason). Only a failing store answers 503, and the
//!   provider's resend is harmless: every change is idempotent.
//!
//! | status | code | when |
//! |---|---|---|
//! | 200 | — | `{"results": [{"index", "delivery", "status", "result", …}]}` |
//! | 400 | `malformed_json`, `bad_request` | see above |
//! | 200 | — | `{"duplicate": true, "results": []}`: the `webhook-id` was taken already |
//! | 403 | `invalid_signature` | a `webhook-*` header is missing or malformed, or the signature is wrong |
//! | 403 | `stale_timestamp` | `webhook-timestamp` is more than 5 minutes from the server's time |
//! | 413 | — | a body over 1 MiB |
//! | 404 | `callbacks_disabled` | `[channels.email]` has no `callback_secret` (a request without the `webhook-*` headers is a `403` first) |
//! | 503 | `store_unavailable` | the delivery queue, preferences or callback ids failed |
//!
//! Provider-reported opens and clicks are recorded whatever the
//! `[tracking]` switches say: those switch off Nudge's own pixel and
//! redirects, while a provider's tracking is configured at the provider.

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{ApiError, ErrorBody, HttpState};
use crate::channels::ChannelKind;
use crate::channels::email::{CALLBACK_TOLERANCE, CallbackRefusal};
use crate::delivery::model::Status as DeliveryStatus;
use crate::delivery::{Delivery, DeliveryQueue, Engagement, QueueError};
use crate::engine::SettingsHandle;
use crate::preferences::{PreferenceError, PreferenceStore};
use crate::storage::block_on;

const MAX_BODY: usize = 1024 * 1024;
/// The `source` of this route's ids in the callback id table.
const SOURCE: &str = "email";
/// Most events in one callback.
const MAX_EVENTS: usize = 1000;
/// Longest `reason` kept; longer ones are cut (on a character boundary).
const MAX_REASON: usize = 300;

pub fn router() -> Router<HttpState> {
    Router::new()
        .route("/v1/callbacks/email", post(email_events))
        .layer(DefaultBodyLimit::max(MAX_BODY))
}

// The body as documented; checked into [`Event`]s. Fields the API does
// not name are ignored, so a provider's extra fields do no harm.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = EmailCallbackBatch)]
pub(crate) struct Batch {
    #[schema(schema_with = event_list)]
    events: Vec<RawEvent>,
}

/// One provider event; needs `message_id` or `delivery_id`. Other fields
/// are ignored.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = EmailCallbackEvent)]
pub(crate) struct RawEvent {
    /// The `Message-ID` the email channel gave the message (angle brackets
    /// optional).
    #[serde(default)]
    #[schema(nullable = false)]
    message_id: Option<String>,
    /// The delivery's id; wins over `message_id`.
    #[serde(default)]
    #[schema(nullable = false, format = Uuid)]
    delivery_id: Option<String>,
    #[schema(schema_with = event_kinds)]
    event: String,
    /// Default: when the callback arrived (never later than that).
    #[serde(default)]
    #[schema(nullable = false, format = DateTime)]
    timestamp: Option<String>,
    /// The provider's words, kept as the last answer (cut to 300 bytes).
    #[serde(default)]
    #[schema(nullable = false)]
    reason: Option<String>,
}

fn event_list() -> utoipa::openapi::Array {
    use utoipa::openapi::schema::{ArrayBuilder, Ref};
    ArrayBuilder::new()
        .items(Ref::from_schema_name("EmailCallbackEvent"))
        .max_items(Some(MAX_EVENTS))
        .build()
}

fn event_kinds() -> utoipa::openapi::Object {
    super::openapi::string_enum(Kind::NAMES)
}

/// What the provider says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Delivered,
    Bounced,
    SoftBounced,
    Opened,
    Clicked,
    Complained,
}

impl Kind {
    const NAMES: [&str; 6] = [
        "delivered",
        "bounced",
        "soft_bounced",
        "opened",
        "clicked",
        "complained",
    ];

    fn parse(name: &str) -> Option<Kind> {
        Some(match name {
            "delivered" => Kind::Delivered,
            "bounced" => Kind::Bounced,
            "soft_bounced" => Kind::SoftBounced,
            "opened" => Kind::Opened,
            "clicked" => Kind::Clicked,
            "complained" => Kind::Complained,
            _ => return None,
        })
    }
}

/// What `POST /v1/callbacks/email` answers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = EmailCallbackResults)]
pub(crate) struct Answer {
    /// One per event, in order; empty for a duplicate.
    results: Vec<EventResult>,
    // Only `true` is ever sent (described in `duplicate_flag`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    #[schema(schema_with = duplicate_flag)]
    duplicate: bool,
}

fn duplicate_flag() -> utoipa::openapi::Object {
    let mut flag = super::openapi::always_true();
    flag.description =
        Some("Present when the `webhook-id` was taken already: nothing was applied.".to_owned());
    flag
}

/// What one event of a callback did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = EmailCallbackResult)]
pub(crate) struct EventResult {
    /// The event's place in the batch, from 0.
    index: usize,
    /// The delivery it applied to; null for an unknown message.
    #[schema(required = true)]
    delivery: Option<Uuid>,
    /// The delivery's status after the event; null for an unknown message.
    #[schema(required = true)]
    status: Option<DeliveryStatus>,
    result: Outcome,
    /// Why an event was `ignored`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    reason: Option<String>,
    /// For `complained`: whether the user's email was switched off for the
    /// type.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    unsubscribed: Option<bool>,
}

impl EventResult {
    fn unknown_message() -> Self {
        EventResult {
            index: 0,
            delivery: None,
            status: None,
            result: Outcome::UnknownMessage,
            reason: None,
            unsubscribed: None,
        }
    }
}

/// Whether an event was applied to its delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = EmailCallbackOutcome)]
pub(crate) enum Outcome {
    Applied,
    UnknownMessage,
    Ignored,
}

/// Which message an event is about.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Delivery(Uuid),
    MessageId(String),
}

/// One checked event.
#[derive(Debug, Clone)]
struct Event {
    target: Target,
    kind: Kind,
    at: Timestamp,
    reason: Option<String>,
}

#[utoipa::path(
    post,
    path = "/v1/callbacks/email",
    operation_id = "emailProviderCallback",
    summary = "An email provider's events",
    description = "Public: each request is signed the Standard Webhooks way with `[channels.email] callback_secret` (signed id and timestamp; the earlier `X-Nudge-Signature` is no longer accepted). Stale timestamps are refused and a message id is applied once. The batch is checked whole before anything changes; statuses only move forward; every change is idempotent. A delivery's first `complained` also switches the user's email off for the type (unless critical); a repeated complaint does not.",
    tags = ["public", "callbacks"],
    security(),
    params(
        ("webhook-id" = String, Header, min_length = 1, description = "The provider's unique id of this message, the same on its resends (Standard Webhooks). An id already taken is answered `200 {\"duplicate\": true, \"results\": []}` without effect."),
        ("webhook-timestamp" = String, Header, pattern = "^-?[0-9]+$", description = "When the message was signed, unix seconds; refused when more than 5 minutes from the server's time, either way."),
        ("webhook-signature" = String, Header, description = "`v1,<base64 HMAC-SHA256 of \"{webhook-id}.{webhook-timestamp}.{body}\">` keyed by `callback_secret` (base64-decoded when it is a `whsec_` secret); several space-separated entries allowed."),
    ),
    request_body = Batch,
    responses(
        (status = 200, body = Answer, description = "Every signed, fresh, well-formed batch: one result per event, in order; or `{\"duplicate\": true, \"results\": []}` when its `webhook-id` was taken already (nothing changed)."),
        (status = 400, body = ErrorBody, description = "`malformed_json` or `bad_request` naming the event's index and field; nothing changed."),
        (status = 403, body = ErrorBody, description = "`invalid_signature`: a `webhook-*` header is missing or malformed, or the signature is wrong; `stale_timestamp`: `webhook-timestamp` is more than 5 minutes from the server's time. Nothing changed. A request without the signature header(s) is refused so whether or not the route is configured."),
        (status = 413, description = "A body over 1 MiB."),
        (status = 503, body = ErrorBody, description = "`store_unavailable`: the delivery queue, preferences or callback ids failed; retry later."),
        (status = 404, body = ErrorBody, description = "`callbacks_disabled`: this server is not configured for the route; the message names the setting that enables it (`callback_secret` in `[channels.email]`)."),
    ),
)]
pub(crate) async fn email_events(
    State(state): State<HttpState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Answer>, ApiError> {
    ApiError::require_headers(
        &headers,
        &["webhook-id", "webhook-timestamp", "webhook-signature"],
    )?;
    let Some(auth) = &state.email_callbacks else {
        return Err(ApiError::not_configured(
            "callbacks_disabled",
            "email callbacks are not configured on this server: \
             set callback_secret in [channels.email]",
        ));
    };
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
    };
    let (id, signature) = (header("webhook-id").trim(), header("webhook-signature"));
    let now = Timestamp::now();
    let signed_at = match auth.verify(id, header("webhook-timestamp"), signature, &body, now) {
        Ok(signed_at) => signed_at,
        Err(refusal) => {
            let code = match refusal {
                CallbackRefusal::InvalidSignature => "invalid_signature",
                CallbackRefusal::StaleTimestamp { .. } => "stale_timestamp",
            };
            tracing::warn!(
                signed = !signature.is_empty(),
                code,
                "email callback refused: {refusal}"
            );
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                code,
                refusal.to_string(),
            ));
        }
    };
    let events = parse(&body, now)?;
    // Kept until the signed time is past the tolerance: a replay after
    // that is refused as stale.
    let expires_at = Timestamp::from_second(signed_at)
        .ok()
        .and_then(|at| at.checked_add(CALLBACK_TOLERANCE).ok())
        .unwrap_or(now);
    if !state.callback_ids.claim(SOURCE, id, expires_at).await? {
        tracing::info!(webhook_id = %id, "email callback already taken; a duplicate changes nothing");
        return Ok(Json(Answer {
            results: Vec::new(),
            duplicate: true,
        }));
    }
    let (queue, preferences, settings) = (
        state.queue.clone(),
        state.preferences.clone(),
        state.settings.clone(),
    );
    let results = tokio::task::spawn_blocking(move || {
        events
            .iter()
            .enumerate()
            .map(|(index, event)| {
                let result = apply(&queue, &preferences, &settings, event)?;
                Ok(EventResult { index, ..result })
            })
            .collect::<Result<Vec<EventResult>, ApiError>>()
    })
    .await?;
    match results {
        Ok(results) => Ok(Json(Answer {
            results,
            duplicate: false,
        })),
        Err(error) => {
            // Nothing or part of the batch applied: the provider resends
            // it, and every change is idempotent.
            if let Err(release) = state.callback_ids.release(SOURCE, id).await {
                tracing::warn!(webhook_id = %id, error = %release, "cannot give back a failed callback's id; its resend will be taken for a duplicate");
            }
            Err(error)
        }
    }
}

/// The body's events, every one checked; the first problem is a 400.
fn parse(body: &[u8], now: Timestamp) -> Result<Vec<Event>, ApiError> {
    let batch: Batch = serde_json::from_slice(body).map_err(|error| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!(
                "the body is not a callback batch ({{\"events\": [{{\"message_id\" or \
                 \"delivery_id\", \"event\", \"timestamp\", \"reason\"}}]}}): {error}"
            ),
        )
    })?;
    if batch.events.len() > MAX_EVENTS {
        return Err(ApiError::bad_request(format!(
            "events: {} events; at most {MAX_EVENTS} per callback",
            batch.events.len()
        )));
    }
    batch
        .events
        .into_iter()
        .enumerate()
        .map(|(index, raw)| check(index, raw, now))
        .collect()
}

fn check(index: usize, raw: RawEvent, now: Timestamp) -> Result<Event, ApiError> {
    let field = |name: &str, message: String| {
        ApiError::bad_request(format!("events[{index}].{name}: {message}"))
    };
    let kind = Kind::parse(&raw.event).ok_or_else(|| {
        field(
            "event",
            format!(
                "unknown event {:?}; expected one of {}",
                raw.event,
                Kind::NAMES.join(", ")
            ),
        )
    })?;
    let non_empty = |text: Option<String>| text.filter(|text| !text.trim().is_empty());
    let target = match (non_empty(raw.delivery_id), non_empty(raw.message_id)) {
        (Some(id), _) => Target::Delivery(
            Uuid::parse_str(id.trim())
                .map_err(|_| field("delivery_id", format!("{id:?} is not a delivery id")))?,
        ),
        (None, Some(message_id)) => Target::MessageId(message_id.trim().to_owned()),
        (None, None) => {
            return Err(ApiError::bad_request(format!(
                "events[{index}]: needs message_id or delivery_id"
            )));
        }
    };
    let at = match raw.timestamp.as_deref() {
        None => now,
        Some(text) => text
            .parse::<Timestamp>()
            .map_err(|error| {
                field(
                    "timestamp",
                    format!("{text:?} is not an RFC 3339 time: {error}"),
                )
            })?
            .min(now),
    };
    let reason = non_empty(raw.reason).map(|reason| shorten(reason.trim()));
    Ok(Event {
        target,
        kind,
        at,
        reason,
    })
}

/// Applies one event; its result (`index` left at 0).
fn apply(
    queue: &DeliveryQueue,
    preferences: &PreferenceStore,
    settings: &SettingsHandle,
    event: &Event,
) -> Result<EventResult, ApiError> {
    let Some(found) = find(queue, &event.target)? else {
        tracing::info!(target = ?event.target, kind = ?event.kind, "email callback for an unknown message; ignored");
        return Ok(EventResult::unknown_message());
    };
    let id = found.id;
    let reason = event.reason.as_deref();
    // A complaint unsubscribes *before* it is recorded: should recording
    // fail (503), the provider's resend still finds no complaint and
    // switches again (harmless: off is off). Once recorded, no later
    // complaint about the delivery switches anything, so a replay never
    // undoes the user turning the type's email back on.
    let unsubscribed = match event.kind {
        Kind::Complained if found.complained_at.is_none() => {
            Some(switch_off(preferences, settings, &found)?)
        }
        Kind::Complained => {
            tracing::info!(delivery = %id, "repeated spam complaint; preferences left as they are");
            Some(false)
        }
        _ => None,
    };
    let changed = match event.kind {
        Kind::Delivered => block_on(queue.mark_delivered(id, event.at)),
        Kind::Bounced => block_on(queue.mark_bounced(
            id,
            &with_reason("hard bounce reported by the email provider", reason),
            event.at,
        )),
        Kind::SoftBounced => block_on(queue.record_soft_bounce(
            id,
            &with_reason("soft bounce reported by the email provider", reason),
            event.at,
        )),
        Kind::Opened => block_on(queue.record_engagement(id, Engagement::Opened, event.at)),
        Kind::Clicked => block_on(queue.record_engagement(id, Engagement::Clicked, event.at)),
        Kind::Complained => {
            block_on(queue.record_complaint(id, event.at)).map(|(delivery, _first)| delivery)
        }
    };
    let delivery = match changed {
        Ok(delivery) => delivery,
        Err(QueueError::NotFound(_)) => {
            return Ok(EventResult::unknown_message());
        }
        Err(error @ QueueError::InvalidTransition { from, .. }) => {
            tracing::info!(delivery = %id, kind = ?event.kind, status = %from, "email callback the delivery cannot follow; ignored");
            return Ok(EventResult {
                delivery: Some(id),
                status: Some(from),
                result: Outcome::Ignored,
                reason: Some(error.to_string()),
                ..EventResult::unknown_message()
            });
        }
        Err(error) => return Err(error.into()),
    };
    tracing::info!(delivery = %id, kind = ?event.kind, status = %delivery.status, "email callback applied");
    Ok(EventResult {
        delivery: Some(id),
        status: Some(delivery.status),
        result: Outcome::Applied,
        unsubscribed,
        ..EventResult::unknown_message()
    })
}

/// The email delivery `target` names, if there is one.
fn find(queue: &DeliveryQueue, target: &Target) -> Result<Option<Delivery>, QueueError> {
    let id = match target {
        Target::Delivery(id) => *id,
        Target::MessageId(message_id) => {
            let bare = message_id
                .strip_prefix('<')
                .and_then(|rest| rest.strip_suffix('>'))
                .unwrap_or(message_id);
            let indexed =
                block_on(queue.find_by_provider_id(ChannelKind::Email, &format!("<{bare}>")))?;
            match indexed {
                Some(id) => id,
                // Not indexed (its `Sent` not recorded yet, or a provider
                // that rewrote the brackets): our Message-IDs are
                // `<delivery id@domain>`.
                None => match Uuid::parse_str(bare.split('@').next().unwrap_or_default()) {
                    Ok(id) => id,
                    Err(_) => return Ok(None),
                },
            }
        }
    };
    Ok(block_on(queue.get(id))?.filter(|delivery| delivery.channel == ChannelKind::Email))
}

/// A complaint: the user's email off for the delivery's type, as the
/// unsubscribe link does. `false` when the type is critical (it cannot be
/// switched off) or the delivery has no type.
fn switch_off(
    preferences: &PreferenceStore,
    settings: &SettingsHandle,
    delivery: &Delivery,
) -> Result<bool, ApiError> {
    let notification_type = &delivery.message.notification_type;
    if notification_type.is_empty() {
        return Ok(false);
    }
    let settings = settings.current();
    // Runs on the blocking thread `email_events` applies the batch on.
    let switched = block_on(preferences.update(&delivery.user_id, |prefs| {
        prefs.set_type_channel(
            &settings.defaults,
            notification_type,
            ChannelKind::Email,
            false,
        )
    }));
    match switched {
        Ok(_) => {
            tracing::info!(delivery = %delivery.id, %notification_type, "spam complaint: the type's email is switched off for its user");
            Ok(true)
        }
        Err(PreferenceError::Critical { .. }) => {
            tracing::warn!(delivery = %delivery.id, %notification_type, "spam complaint about a critical type; it cannot be switched off");
            Ok(false)
        }
        Err(error) => Err(error.into()),
    }
}

fn with_reason(what: &str, reason: Option<&str>) -> String {
    match reason {
        Some(reason) => format!("{what}: {reason}"),
        None => what.to_owned(),
    }
}

fn shorten(text: &str) -> String {
    if text.len() <= MAX_REASON {
        return text.to_owned();
    }
    let mut end = MAX_REASON;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        Timestamp::from_second(1_800_000_000).unwrap()
    }

    fn error(body: &str) -> String {
        let error = parse(body.as_bytes(), now()).unwrap_err();
        format!("{} {}: {}", error.status, error.code, error.message)
    }

    #[test]
    fn parses_the_documented_format() {
        let events = parse(
            br#"{"events":[
                {"message_id":" <a@b> ","event":"delivered","timestamp":"2027-01-15T08:00:00Z","extra":1},
                {"message_id":"x","delivery_id":"01950000-0000-7000-8000-000000000001","event":"bounced","reason":"550 no"},
                {"message_id":"y","event":"complained","timestamp":"2099-01-01T00:00:00+02:00"}
            ]}"#,
            now(),
        )
        .unwrap();
        assert_eq!(events[0].target, Target::MessageId("<a@b>".to_owned()));
        assert_eq!(events[0].kind, Kind::Delivered);
        assert_eq!(events[0].at, "2027-01-15T08:00:00Z".parse().unwrap());
        assert_eq!(
            events[1].target,
            Target::Delivery(Uuid::parse_str("01950000-0000-7000-8000-000000000001").unwrap())
        );
        assert_eq!(events[1].reason.as_deref(), Some("550 no"));
        assert_eq!(events[2].at, now(), "a future time is clamped to now");
        assert!(parse(br#"{"events":[]}"#, now()).unwrap().is_empty());
    }

    #[test]
    fn says_what_is_wrong() {
        let message = error("{");
        assert!(
            message.starts_with("400 Bad Request malformed_json"),
            "{message}"
        );
        let message = error(r#"{"event":"delivered"}"#);
        assert!(message.contains("missing field `events`"), "{message}");
        let message = error(
            r#"{"events":[{"message_id":"a","event":"delivered"},{"message_id":"a","event":"read"}]}"#,
        );
        assert!(
            message.contains("events[1].event: unknown event \"read\""),
            "{message}"
        );
        let message = error(r#"{"events":[{"event":"opened"}]}"#);
        assert!(
            message.contains("events[0]: needs message_id or delivery_id"),
            "{message}"
        );
        let message = error(r#"{"events":[{"delivery_id":"nope","event":"opened"}]}"#);
        assert!(message.contains("events[0].delivery_id"), "{message}");
        let message =
            error(r#"{"events":[{"message_id":"a","event":"opened","timestamp":"yesterday"}]}"#);
        assert!(message.contains("events[0].timestamp"), "{message}");
        let message = error(r#"{"events":[{"message_id":5,"event":"opened"}]}"#);
        assert!(message.contains("malformed_json"), "{message}");
    }

    #[test]
    fn long_reasons_are_cut() {
        let long = "ü".repeat(400);
        let short = shorten(&long);
        assert!(short.len() <= MAX_REASON + "…".len(), "{}", short.len());
        assert!(short.ends_with('…'));
    }
}
