//! `POST /v1/callbacks/twilio/status`: Twilio's message status callbacks
//! (the `StatusCallback` the SMS channel sends with every message). Public,
//! no admin token: Twilio signs each callback instead.
//!
//! # Promises
//!
//! * **Only Twilio's callbacks act.** `X-Twilio-Signature` is checked (in
//!   constant time) against the form and the *configured*
//!   `status_callback_url` — the URL Twilio was given and signs — not the
//!   URL the request arrived at, so the check holds behind proxies that
//!   rewrite host, scheme or path. Missing or wrong: `403
//!   invalid_signature`, and nothing changes.
//! * **The delivery follows Twilio's word**, found by the message's sid
//!   (the provider message id its `Sent` recorded):
//!   `delivered` (or `read`) → `delivered`; `undelivered`, `failed` (or
//!   `canceled`) → `failed`, with Twilio's error code in the last answer;
//!   `queued`, `sending`, `sent` → no change (the delivery is already
//!   `sent`).
//! * **Twilio hears 200 for every signed callback it need not resend**: an
//!   unknown sid (not a message of this server, or one whose `Sent` is not
//!   recorded yet), a change the delivery can no longer take (`delivered`
//!   after `failed`), a status that is not an outbound message's. Each is
//!   logged. Only a failing store answers 503.
//! * **A replay has no effect worth refusing.** Unlike the email
//!   callbacks (signed id and timestamp, see [`super::email_callbacks`]),
//!   Twilio's signature covers no time and no id and its format is
//!   Twilio's: it cannot be extended. A replayed callback can only repeat
//!   a forward move its delivery already made (statuses never go back),
//!   and no SMS status touches a preference, so it changes nothing.
//!
//! | status | code | when |
//! |---|---|---|
//! | 200 | — | `{"delivery": <id or null>, "status": <its status now or null>}` |
//! | 400 | `bad_request` | the body is not a form |
//! | 403 | `invalid_signature` | the signature is missing or wrong |
//! | 403 | `invalid_signature` | no `X-Twilio-Signature` header (configured or not) |
//! | 404 | `callbacks_disabled` | `[channels.sms]` has no `status_callback_url` |
//! | 503 | `store_unavailable` | the delivery queue failed |

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use jiff::Timestamp;
use serde::Serialize;
use uuid::Uuid;

use super::openapi::responses;
use super::{ApiError, ErrorBody, HttpState, form};
use crate::channels::ChannelKind;
use crate::channels::sms::{SmsStatus, StatusUpdate, parse_status_callback};
use crate::delivery::{DeliveryQueue, QueueError, Status};

/// Twilio's callbacks are a few hundred bytes.
const MAX_BODY: usize = 64 * 1024;

pub fn router() -> Router<HttpState> {
    Router::new()
        .route("/v1/callbacks/twilio/status", post(twilio_status))
        .layer(DefaultBodyLimit::max(MAX_BODY))
}

#[utoipa::path(
    post,
    path = "/v1/callbacks/twilio/status",
    operation_id = "twilioStatusCallback",
    summary = "Twilio's message status callbacks",
    description = "Public: Twilio signs each callback (no admin token). The delivery is found by the message sid.",
    tags = ["public", "callbacks"],
    security(),
    params(
        ("X-Twilio-Signature" = String, Header, description = "Twilio's signature: base64 HMAC-SHA1 (auth token) of the *configured* `status_callback_url` plus the sorted form fields; checked in constant time."),
    ),
    request_body(content = inline(TwilioStatusForm), content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, body = SmsCallbackResult, description = "Every signed callback Twilio need not resend (also unknown messages and changes the delivery can no longer take)."),
        (status = 400, response = responses::BadRequest),
        (status = 403, body = ErrorBody, description = "`invalid_signature`: `X-Twilio-Signature` is missing or does not match. A request without the signature header(s) is refused so whether or not the route is configured."),
        (status = 404, body = ErrorBody, description = "`callbacks_disabled`: this server is not configured for the route; the message names the setting that enables it (`status_callback_url` in `[channels.sms]`)."),
        (status = 413, description = "A body over 64 KiB."),
        (status = 503, body = ErrorBody, description = "`store_unavailable`: the delivery queue, preferences or callback ids failed; retry later."),
    ),
)]
pub(crate) async fn twilio_status(
    State(state): State<HttpState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<SmsCallbackResult>, ApiError> {
    ApiError::require_headers(&headers, &["x-twilio-signature"])?;
    let Some(auth) = &state.sms_callbacks else {
        return Err(ApiError::not_configured(
            "callbacks_disabled",
            "Twilio status callbacks are not configured on this server: \
             set status_callback_url in [channels.sms]",
        ));
    };
    let form = form::parse(&body).map_err(|error| ApiError::bad_request(error.to_string()))?;
    let signature = headers
        .get("x-twilio-signature")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    if !auth.verify(&form, signature) {
        tracing::warn!(
            signed = !signature.is_empty(),
            "Twilio status callback refused: bad signature"
        );
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "invalid_signature",
            "X-Twilio-Signature is missing or does not match this form \
             posted to the configured status_callback_url",
        ));
    }
    let Some(update) = parse_status_callback(&form) else {
        tracing::info!("Twilio status callback without an outbound message status; ignored");
        return Ok(Json(SmsCallbackResult::UNKNOWN));
    };
    let answer = apply(&state.queue, &update, Timestamp::now()).await?;
    Ok(Json(answer))
}

/// The form fields of a callback that Nudge reads; Twilio sends more,
/// which are ignored.
#[derive(utoipa::ToSchema)]
#[expect(
    dead_code,
    reason = "documents the form `parse_status_callback` reads by name"
)]
struct TwilioStatusForm {
    /// Or `SmsSid`.
    #[schema(rename = "MessageSid", nullable = false)]
    message_sid: Option<String>,
    /// Or `SmsStatus`: `delivered`/`read` → delivered; `undelivered`,
    /// `failed`, `canceled` → failed; `accepted`, `scheduled`, `queued`,
    /// `sending`, `sent` → no change.
    #[schema(rename = "MessageStatus", nullable = false)]
    message_status: Option<String>,
    #[schema(rename = "ErrorCode", nullable = false)]
    error_code: Option<String>,
}

/// The answer to a status callback.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(
    description = "The delivery the callback was about and its status now; nulls when the callback named no known message (still 200: Twilio need not resend)."
)]
pub(crate) struct SmsCallbackResult {
    #[schema(required = true)]
    delivery: Option<Uuid>,
    #[schema(required = true)]
    status: Option<Status>,
}

impl SmsCallbackResult {
    /// A callback about no known message.
    const UNKNOWN: SmsCallbackResult = SmsCallbackResult {
        delivery: None,
        status: None,
    };

    fn of(delivery: Uuid, status: Status) -> Self {
        SmsCallbackResult {
            delivery: Some(delivery),
            status: Some(status),
        }
    }
}

/// Moves the delivery as the module doc says; the answer.
async fn apply(
    queue: &DeliveryQueue,
    update: &StatusUpdate,
    now: Timestamp,
) -> Result<SmsCallbackResult, QueueError> {
    let sid = &update.message_sid;
    let Some(id) = queue.find_by_provider_id(ChannelKind::Sms, sid).await? else {
        tracing::info!(%sid, status = ?update.status, "Twilio status callback for an unknown message; ignored");
        return Ok(SmsCallbackResult::UNKNOWN);
    };
    let changed = match update.status {
        SmsStatus::Delivered => queue.mark_delivered(id, now).await,
        SmsStatus::Undelivered | SmsStatus::Failed => {
            let what = if update.status == SmsStatus::Failed {
                "failed"
            } else {
                "undelivered"
            };
            let answer = match update.error_code {
                Some(code) => format!("Twilio reported {what} (Twilio error {code})"),
                None => format!("Twilio reported {what}"),
            };
            queue.mark_undeliverable(id, &answer, now).await
        }
        SmsStatus::Queued | SmsStatus::Sent => queue.get(id).await?.ok_or(QueueError::NotFound(id)),
    };
    let delivery = match changed {
        Ok(delivery) => delivery,
        // The index outlived its delivery: as unknown as no entry at all.
        Err(QueueError::NotFound(_)) => {
            tracing::info!(%sid, delivery = %id, "Twilio status callback for a delivery that is gone; ignored");
            return Ok(SmsCallbackResult::UNKNOWN);
        }
        Err(QueueError::InvalidTransition { from, to, .. }) => {
            tracing::warn!(%sid, delivery = %id, %from, %to, "Twilio status callback the delivery can no longer follow; ignored");
            return Ok(SmsCallbackResult::of(id, from));
        }
        Err(error) => return Err(error),
    };
    tracing::info!(%sid, delivery = %id, status = %delivery.status, "Twilio status callback applied");
    Ok(SmsCallbackResult::of(id, delivery.status))
}
