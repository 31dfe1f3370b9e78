//! The SMS channel: one call to a Twilio-compatible Messages API per send.
//!
//! Each send is `POST {base_url}/2010-04-01/Accounts/{account_sid}/Messages.json`,
//! form-encoded, with HTTP Basic auth (`account_sid:auth_token`), exactly as
//! Twilio's API takes it:
//! * `To`: the recipient's number, which must be E.164 (`+` and 8 to 15
//!   digits, the first not `0`); anything else is
//!   [`SendError::InvalidRecipient`] without a request.
//! * `From`: the configured sender number, or `MessagingServiceSid` when
//!   the configured sender is a Messaging Service sid (`MG…`): Twilio takes
//!   a service only under that name.
//! * `Body`: the message's `text_body`, or its `subject` when the text body
//!   is empty, cut to [`MAX_BODY_CHARS`] (1600, Twilio's limit for one
//!   message, counted in UTF-16 code units so that characters outside the
//!   BMP such as emoji, which Twilio counts twice, cannot push it over).
//!   A cut body ends at a word boundary when one is near, with `…`. A
//!   message with neither is [`SendError::Permanent`] without a request.
//! * `StatusCallback`: the configured `status_callback_url`, if any. Twilio
//!   then posts the message's status changes there (the control plane's
//!   `POST /v1/callbacks/twilio/status`); [`parse_status_callback`] reads
//!   that form and [`verify_twilio_signature`] checks its
//!   `X-Twilio-Signature` against that same URL.
//!
//! The receipt carries the answer's `sid` as the provider message id and
//! its `status` (e.g. `queued`) as the answer.
//!
//! # Classification
//!
//! | answer | result |
//! |---|---|
//! | `2xx` | receipt (also when the body is not the expected JSON: the message was accepted, and sending it again would duplicate it) |
//! | `429`, `5xx`, `408`, connect error, timeout | [`SendError::Retriable`], with `Retry-After` (seconds or HTTP date) |
//! | `4xx` with Twilio error code `21211` (invalid `To`), `21614` (not a mobile number) or `21610` (recipient unsubscribed, replied STOP) | [`SendError::InvalidRecipient`] |
//! | other `4xx` (`400` bad request, `401` bad credentials, `403`, `404` unknown account…), `1xx`/`3xx` (redirects are not followed) | [`SendError::Permanent`] |
//! | recipient not a phone number, empty message | [`SendError::Permanent`], no request |
//! | phone number not E.164 | [`SendError::InvalidRecipient`], no request |
//!
//! A timeout after Twilio accepted the message but before its answer
//! arrived is reported as retriable, so a retry can send a second SMS: the
//! API has no idempotency key to prevent that.

use std::time::Duration;

use async_trait::async_trait;
use reqwest::StatusCode;
use serde::Deserialize;

use super::email::{humantime_duration, recipient_kind, shorten};
use super::webhook::{api_url, http_url, retry_after, transport_error};
use super::{Channel, ChannelKind, OutboundMessage, Recipient, SendError, SendReceipt};
use crate::config::ConfigError;

/// Twilio's limit for one message body, in characters (UTF-16 code units).
pub const MAX_BODY_CHARS: usize = 1600;

/// Twilio error codes that mean the number itself cannot be sent to.
const INVALID_RECIPIENT_CODES: [u32; 3] = [
    21211, // invalid 'To' phone number
    21614, // 'To' number is not a valid mobile number
    21610, // attempt to send to an unsubscribed recipient (STOP)
];

/// The `sms` section of the config file.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmsConfig {
    /// The account sid (`AC…`), user name of the Basic auth and part of
    /// the API path.
    pub account_sid: String,
    /// The auth token (or an API key secret); never printed.
    pub auth_token: String,
    /// The sender: an E.164 number or a Messaging Service sid (`MG…`).
    pub from: String,
    /// The API's base URL, `https://api.twilio.com` unless set (tests and
    /// Twilio-compatible providers).
    #[serde(default = "default_base_url")]
    pub base_url: String,
    /// Limit for the whole request, connect to last byte, e.g. `"10s"`.
    #[serde(default = "default_timeout", with = "humantime_duration")]
    pub timeout: Duration,
    /// Where Twilio posts status changes (`StatusCallback`).
    #[serde(default)]
    pub status_callback_url: Option<String>,
}

fn default_base_url() -> String {
    "https://api.twilio.com".to_owned()
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

impl std::fmt::Debug for SmsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmsConfig")
            .field("account_sid", &self.account_sid)
            .field("auth_token", &"<redacted>")
            .field("from", &self.from)
            .field("base_url", &self.base_url)
            .field("timeout", &self.timeout)
            .field("status_callback_url", &self.status_callback_url)
            .finish()
    }
}

/// Whether `number` is an E.164 phone number: `+`, then 8 to 15 digits,
/// the first not `0`. No spaces or punctuation.
pub fn is_e164(number: &str) -> bool {
    let Some(digits) = number.strip_prefix('+') else {
        return false;
    };
    (8..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

fn is_messaging_service_sid(from: &str) -> bool {
    from.len() == 34 && from.starts_with("MG") && from[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// The SMS body for `message`: its text body, or its subject when the text
/// body is empty, cut to [`MAX_BODY_CHARS`] (see the module doc).
pub fn sms_body(message: &OutboundMessage) -> String {
    let text = message.text_body.trim();
    let text = if text.is_empty() {
        message.subject.trim()
    } else {
        text
    };
    truncate_body(text, MAX_BODY_CHARS)
}

/// Cuts `text` to at most `limit` UTF-16 code units, never inside a
/// character; a cut text ends with `…` (counted), at the last whitespace
/// when there is one in the last 10% of the kept text.
pub fn truncate_body(text: &str, limit: usize) -> String {
    if text.encode_utf16().count() <= limit {
        return text.to_owned();
    }
    // Keep room for the ellipsis (one UTF-16 unit).
    let budget = limit.saturating_sub(1);
    let mut used = 0;
    let mut end = 0;
    for (index, ch) in text.char_indices() {
        if used + ch.len_utf16() > budget {
            break;
        }
        used += ch.len_utf16();
        end = index + ch.len_utf8();
    }
    let kept = &text[..end];
    let floor = end - end / 10;
    let kept = match kept.rfind(char::is_whitespace) {
        Some(space) if space >= floor && space > 0 => &kept[..space],
        _ => kept,
    };
    format!("{}…", kept.trim_end())
}

/// A message's delivery status, as Twilio's status callback reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmsStatus {
    /// `accepted`, `scheduled` or `queued`: not yet handed to the carrier.
    Queued,
    /// `sending` or `sent`: handed to the carrier.
    Sent,
    /// `delivered` (or `read`): the carrier confirmed delivery.
    Delivered,
    /// `undelivered`: the carrier could not deliver it.
    Undelivered,
    /// `failed` or `canceled`: it was never sent.
    Failed,
}

/// One status callback from Twilio.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusUpdate {
    /// The message's sid: the receipt's `provider_message_id`.
    pub message_sid: String,
    pub status: SmsStatus,
    /// Twilio's error code (e.g. `30003` unreachable handset), for
    /// `undelivered` and `failed`.
    pub error_code: Option<u32>,
}

/// Reads Twilio's status callback form (`MessageSid`, `MessageStatus`,
/// `ErrorCode`; other fields are ignored). `None` when the sid or the
/// status is missing, or the status is not an outbound message's
/// (`receiving`, `received`, unknown ones).
pub fn parse_status_callback(form: &[(String, String)]) -> Option<StatusUpdate> {
    let field = |name: &str| {
        form.iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.trim())
            .filter(|value| !value.is_empty())
    };
    let message_sid = field("MessageSid").or_else(|| field("SmsSid"))?.to_owned();
    let status = match field("MessageStatus")
        .or_else(|| field("SmsStatus"))?
        .to_ascii_lowercase()
        .as_str()
    {
        "accepted" | "scheduled" | "queued" => SmsStatus::Queued,
        "sending" | "sent" => SmsStatus::Sent,
        "delivered" | "read" => SmsStatus::Delivered,
        "undelivered" => SmsStatus::Undelivered,
        "failed" | "canceled" => SmsStatus::Failed,
        _ => return None,
    };
    let error_code = field("ErrorCode").and_then(|code| code.parse().ok());
    Some(StatusUpdate {
        message_sid,
        status,
        error_code,
    })
}

/// What checking a status callback's signature needs: the URL Twilio
/// posts to, exactly as configured, and the auth token. Never printed.
#[derive(Clone)]
pub struct StatusCallbackAuth {
    pub url: String,
    auth_token: String,
}

impl std::fmt::Debug for StatusCallbackAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusCallbackAuth")
            .field("url", &self.url)
            .field("auth_token", &"<redacted>")
            .finish()
    }
}

impl StatusCallbackAuth {
    pub fn new(url: impl Into<String>, auth_token: impl Into<String>) -> Self {
        StatusCallbackAuth {
            url: url.into(),
            auth_token: auth_token.into(),
        }
    }

    /// Whether `signature` is Twilio's for `params` posted to this URL.
    pub fn verify(&self, params: &[(String, String)], signature: &str) -> bool {
        verify_twilio_signature(&self.auth_token, &self.url, params, signature)
    }
}

impl SmsConfig {
    /// The callback route's credentials, when `status_callback_url` is set.
    pub fn status_callback_auth(&self) -> Option<StatusCallbackAuth> {
        let url = self.status_callback_url.as_ref()?;
        Some(StatusCallbackAuth::new(url, &self.auth_token))
    }
}

/// What Twilio signs a request with: the URL it posted to, then every POST
/// parameter's name and value, sorted by name (then value), with no
/// separators, under HMAC-SHA1 keyed by the auth token; base64. This is
/// Twilio's documented algorithm (SHA-1 is its choice, not ours; ring names
/// it "for legacy use only").
pub fn twilio_signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    use base64::Engine as _;
    let tag = ring::hmac::sign(&twilio_key(auth_token), &signed_text(url, params));
    base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
}

/// Checks an `X-Twilio-Signature` header in constant time (see
/// [`twilio_signature`]).
pub fn verify_twilio_signature(
    auth_token: &str,
    url: &str,
    params: &[(String, String)],
    signature: &str,
) -> bool {
    use base64::Engine as _;
    let Ok(tag) = base64::engine::general_purpose::STANDARD.decode(signature.trim()) else {
        return false;
    };
    ring::hmac::verify(&twilio_key(auth_token), &signed_text(url, params), &tag).is_ok()
}

fn twilio_key(auth_token: &str) -> ring::hmac::Key {
    ring::hmac::Key::new(
        ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        auth_token.as_bytes(),
    )
}

fn signed_text(url: &str, params: &[(String, String)]) -> Vec<u8> {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut text = url.as_bytes().to_vec();
    for (name, value) in sorted {
        text.extend_from_slice(name.as_bytes());
        text.extend_from_slice(value.as_bytes());
    }
    text
}

/// Sends SMS through one Twilio (or Twilio-compatible) account.
pub struct SmsChannel {
    client: reqwest::Client,
    messages_url: reqwest::Url,
    account_sid: String,
    auth_token: String,
    from: String,
    status_callback_url: Option<String>,
}

impl std::fmt::Debug for SmsChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmsChannel")
            .field("messages_url", &self.messages_url.as_str())
            .field("from", &self.from)
            .finish_non_exhaustive()
    }
}

impl SmsChannel {
    pub fn new(config: SmsConfig) -> Result<Self, ConfigError> {
        let SmsConfig {
            account_sid,
            auth_token,
            from,
            base_url,
            timeout,
            status_callback_url,
        } = config;
        if account_sid.is_empty() || !account_sid.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(ConfigError {
                setting: "sms.account_sid",
                message: "must be a non-empty account sid (letters and digits)".to_owned(),
            });
        }
        if auth_token.trim().is_empty() {
            return Err(ConfigError {
                setting: "sms.auth_token",
                message: "is empty".to_owned(),
            });
        }
        if !is_e164(&from) && !is_messaging_service_sid(&from) {
            return Err(ConfigError {
                setting: "sms.from",
                message: format!(
                    "{from:?} is neither an E.164 number (+ and 8 to 15 digits) \
                     nor a Messaging Service sid (MG and 32 hex digits)"
                ),
            });
        }
        if timeout.is_zero() {
            return Err(ConfigError {
                setting: "sms.timeout",
                message: "must be longer than zero".to_owned(),
            });
        }
        let messages_url = api_url(
            "sms.base_url",
            &base_url,
            &format!("/2010-04-01/Accounts/{account_sid}/Messages.json"),
        )?;
        if let Some(callback) = &status_callback_url {
            http_url("sms.status_callback_url", callback)?;
        }
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("nudge-sms/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|err| ConfigError {
                setting: "sms",
                message: format!("cannot build the HTTP client: {err}"),
            })?;
        Ok(SmsChannel {
            client,
            messages_url,
            account_sid,
            auth_token,
            from,
            status_callback_url,
        })
    }
}

#[async_trait]
impl Channel for SmsChannel {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Sms
    }

    async fn send(
        &self,
        message: &OutboundMessage,
        recipient: &Recipient,
    ) -> Result<SendReceipt, SendError> {
        let Recipient::Phone { number } = recipient else {
            return Err(SendError::Permanent {
                answer: format!(
                    "the sms channel cannot send to {}",
                    recipient_kind(recipient)
                ),
            });
        };
        if !is_e164(number) {
            return Err(SendError::InvalidRecipient {
                answer: shorten(format!(
                    "{number:?} is not an E.164 phone number (+ and 8 to 15 digits)"
                )),
            });
        }
        let body = sms_body(message);
        if body.is_empty() {
            return Err(SendError::Permanent {
                answer: "the message has neither a text body nor a subject to send".to_owned(),
            });
        }
        let from_field = if is_messaging_service_sid(&self.from) {
            "MessagingServiceSid"
        } else {
            "From"
        };
        let mut form: Vec<(&str, &str)> = vec![
            ("To", number.as_str()),
            (from_field, self.from.as_str()),
            ("Body", body.as_str()),
        ];
        if let Some(callback) = &self.status_callback_url {
            form.push(("StatusCallback", callback.as_str()));
        }
        let now = jiff::Timestamp::now();
        let result = self
            .client
            .post(self.messages_url.clone())
            .basic_auth(&self.account_sid, Some(&self.auth_token))
            .header(reqwest::header::ACCEPT, "application/json")
            .form(&form)
            .send()
            .await;
        let response = match result {
            Ok(response) => response,
            Err(err) => return Err(transport_error(&err)),
        };
        let status = response.status();
        let retry_after = retry_after(response.headers(), now);
        // The body only refines the answer; a failure to read it does not
        // change what the status said.
        let text = super::answer::read_capped(response)
            .await
            .unwrap_or_default();
        classify_response(status, &text, retry_after)
    }
}

/// The fields of a Twilio answer this channel reads: a message resource
/// on success, an error resource on failure.
#[derive(Debug, Default, Deserialize)]
struct TwilioAnswer {
    sid: Option<String>,
    status: Option<serde_json::Value>,
    code: Option<u32>,
    message: Option<String>,
}

/// Maps Twilio's answer to a receipt or a [`SendError`] (the module doc's
/// table).
pub fn classify_response(
    status: StatusCode,
    body: &str,
    retry_after: Option<Duration>,
) -> Result<SendReceipt, SendError> {
    let parsed: Option<TwilioAnswer> = serde_json::from_str(body).ok();
    if status.is_success() {
        let parsed = parsed.unwrap_or_default();
        let answer = match parsed.status.as_ref().and_then(|status| status.as_str()) {
            Some(state) if !state.is_empty() => state.to_owned(),
            _ => format!("{status} {}", body.trim()).trim_end().to_owned(),
        };
        return Ok(SendReceipt {
            provider_message_id: parsed.sid.filter(|sid| !sid.is_empty()),
            answer: shorten(answer),
        });
    }
    let code = parsed.as_ref().and_then(|answer| answer.code);
    let answer = match (&parsed, code) {
        (Some(parsed), Some(code)) => format!(
            "{status} (Twilio error {code}) {}",
            parsed.message.as_deref().unwrap_or_default()
        ),
        _ => format!("{status} {}", body.trim()),
    };
    let answer = shorten(answer.trim_end().to_owned());
    match status.as_u16() {
        408 | 429 | 500..=599 => Err(SendError::Retriable {
            answer,
            retry_after,
        }),
        400..=499 if code.is_some_and(|code| INVALID_RECIPIENT_CODES.contains(&code)) => {
            Err(SendError::InvalidRecipient { answer })
        }
        _ => Err(SendError::Permanent { answer }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> SmsConfig {
        SmsConfig {
            account_sid: "AC00000000000000000000000000000001".to_owned(),
            auth_token: "secret-token".to_owned(),
            from: "+15005550006".to_owned(),
            base_url: default_base_url(),
            timeout: default_timeout(),
            status_callback_url: None,
        }
    }

    #[test]
    fn validates_e164_numbers() {
        for good in [
            "+15005550006",
            "+4915123456789",
            "+12345678",
            "+123456789012345",
        ] {
            assert!(is_e164(good), "{good} should be valid");
        }
        for bad in [
            "",
            "+",
            "15005550006",
            "+1234567",
            "+1234567890123456",
            "+0123456789",
            "+1 500 555 0006",
            "+1-500-555-0006",
            "+1500555000a",
            "++15005550006",
            "+１５００５５５０００６",
        ] {
            assert!(!is_e164(bad), "{bad:?} should be invalid");
        }
    }

    #[test]
    fn short_bodies_are_kept_and_long_ones_cut_at_the_limit() {
        assert_eq!(truncate_body("hello", 1600), "hello");
        let exact = "a".repeat(1600);
        assert_eq!(truncate_body(&exact, 1600), exact);

        let long = "a".repeat(2000);
        let cut = truncate_body(&long, 1600);
        assert_eq!(cut.encode_utf16().count(), 1600);
        assert!(cut.ends_with('…'));

        // Cut at a nearby word boundary.
        let words = "word ".repeat(400);
        let cut = truncate_body(&words, 1600);
        assert!(cut.encode_utf16().count() <= 1600);
        assert!(cut.ends_with("word…"), "{cut}");

        // Never inside a character; emoji count as two UTF-16 units.
        let emoji = "😀".repeat(1000);
        let cut = truncate_body(&emoji, 1600);
        assert!(cut.encode_utf16().count() <= 1600);
        assert_eq!(cut.chars().filter(|c| *c == '😀').count(), 799);
    }

    #[test]
    fn body_falls_back_to_the_subject() {
        let mut message = OutboundMessage {
            subject: "Subject".to_owned(),
            text_body: "Text".to_owned(),
            ..OutboundMessage::default()
        };
        assert_eq!(sms_body(&message), "Text");
        message.text_body = "  ".to_owned();
        assert_eq!(sms_body(&message), "Subject");
        message.subject.clear();
        assert_eq!(sms_body(&message), "");
    }

    fn form(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn parses_status_callbacks() {
        let update = parse_status_callback(&form(&[
            ("AccountSid", "AC1"),
            ("MessageSid", "SM123"),
            ("MessageStatus", "delivered"),
        ]))
        .unwrap();
        assert_eq!(
            update,
            StatusUpdate {
                message_sid: "SM123".to_owned(),
                status: SmsStatus::Delivered,
                error_code: None,
            }
        );
        let update = parse_status_callback(&form(&[
            ("MessageSid", "SM124"),
            ("MessageStatus", "undelivered"),
            ("ErrorCode", "30003"),
        ]))
        .unwrap();
        assert_eq!(update.status, SmsStatus::Undelivered);
        assert_eq!(update.error_code, Some(30003));

        for (text, status) in [
            ("accepted", SmsStatus::Queued),
            ("queued", SmsStatus::Queued),
            ("sending", SmsStatus::Sent),
            ("sent", SmsStatus::Sent),
            ("failed", SmsStatus::Failed),
            ("canceled", SmsStatus::Failed),
        ] {
            let update = parse_status_callback(&form(&[
                ("MessageSid", "SM1"),
                ("MessageStatus", text),
                ("ErrorCode", ""),
            ]))
            .unwrap();
            assert_eq!(update.status, status, "{text}");
            assert_eq!(update.error_code, None);
        }
        // Legacy field names.
        let update =
            parse_status_callback(&form(&[("SmsSid", "SM9"), ("SmsStatus", "sent")])).unwrap();
        assert_eq!(update.message_sid, "SM9");

        assert_eq!(
            parse_status_callback(&form(&[("MessageStatus", "sent")])),
            None
        );
        assert_eq!(parse_status_callback(&form(&[("MessageSid", "SM1")])), None);
        assert_eq!(
            parse_status_callback(&form(&[
                ("MessageSid", "SM1"),
                ("MessageStatus", "received")
            ])),
            None
        );
    }

    /// The example of Twilio's request validation docs (twilio-php's
    /// "Validate Incoming Requests"): same URL, form, token and signature.
    #[test]
    fn twilio_signatures_match_twilios_example() {
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        let params = form(&[
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675309"),
            ("Digits", "1234"),
            ("From", "+14158675309"),
            ("To", "+18005551212"),
        ]);
        let token = "12345";
        let signature = twilio_signature(token, url, &params);
        assert_eq!(signature, "RSOYDt4T1cUTdK1PDd93/VVr8B8=");
        // Order of the form does not matter; every byte does.
        let mut reversed = params.clone();
        reversed.reverse();
        assert!(verify_twilio_signature(token, url, &reversed, &signature));
        assert!(!verify_twilio_signature("54321", url, &params, &signature));
        assert!(!verify_twilio_signature(
            token,
            "https://mycompany.com/myapp.php",
            &params,
            &signature
        ));
        let mut changed = params.clone();
        changed[2].1 = "1235".to_owned();
        assert!(!verify_twilio_signature(token, url, &changed, &signature));
        assert!(!verify_twilio_signature(token, url, &params, "not base64"));
        assert!(!verify_twilio_signature(token, url, &params, ""));

        let auth = config().status_callback_auth();
        assert!(auth.is_none(), "no callback URL, no route");
        let auth = SmsConfig {
            status_callback_url: Some(url.to_owned()),
            auth_token: token.to_owned(),
            ..config()
        }
        .status_callback_auth()
        .unwrap();
        assert!(auth.verify(&params, &signature));
        assert!(!format!("{auth:?}").contains(token));
    }

    #[test]
    fn classifies_twilio_answers() {
        let ok = classify_response(
            StatusCode::CREATED,
            r#"{"sid":"SM1","status":"queued"}"#,
            None,
        )
        .unwrap();
        assert_eq!(ok.provider_message_id.as_deref(), Some("SM1"));
        assert_eq!(ok.answer, "queued");
        let odd = classify_response(StatusCode::CREATED, "accepted", None).unwrap();
        assert_eq!(odd.provider_message_id, None);
        assert_eq!(odd.answer, "201 Created accepted");

        let wait = Some(Duration::from_secs(3));
        assert_eq!(
            classify_response(StatusCode::TOO_MANY_REQUESTS, "{}", wait).unwrap_err(),
            SendError::Retriable {
                answer: "429 Too Many Requests {}".to_owned(),
                retry_after: wait,
            }
        );
        assert!(matches!(
            classify_response(StatusCode::SERVICE_UNAVAILABLE, "", None),
            Err(SendError::Retriable { .. })
        ));
        for code in INVALID_RECIPIENT_CODES {
            let body = format!(r#"{{"code":{code},"message":"no","status":400}}"#);
            let err = classify_response(StatusCode::BAD_REQUEST, &body, None).unwrap_err();
            assert!(matches!(err, SendError::InvalidRecipient { .. }), "{err:?}");
            assert!(err.answer().contains(&code.to_string()), "{err:?}");
        }
        for (status, body) in [
            (
                StatusCode::BAD_REQUEST,
                r#"{"code":21602,"message":"Body required"}"#,
            ),
            (StatusCode::BAD_REQUEST, "not json"),
            (
                StatusCode::UNAUTHORIZED,
                r#"{"code":20003,"message":"Authenticate"}"#,
            ),
            (StatusCode::NOT_FOUND, r#"{"code":20404}"#),
            (StatusCode::FOUND, ""),
        ] {
            let err = classify_response(status, body, None).unwrap_err();
            assert!(
                matches!(err, SendError::Permanent { .. }),
                "{status}: {err:?}"
            );
        }
    }

    #[test]
    fn config_is_checked_and_the_token_hidden() {
        assert!(SmsChannel::new(config()).is_ok());
        let service = SmsConfig {
            from: format!("MG{}", "0123456789abcdef".repeat(2)),
            ..config()
        };
        assert!(SmsChannel::new(service).is_ok());
        let bad = |config: SmsConfig| SmsChannel::new(config).unwrap_err().setting;
        assert_eq!(
            bad(SmsConfig {
                from: "Nudge".to_owned(),
                ..config()
            }),
            "sms.from"
        );
        assert_eq!(
            bad(SmsConfig {
                account_sid: "AC/../x".to_owned(),
                ..config()
            }),
            "sms.account_sid"
        );
        assert_eq!(
            bad(SmsConfig {
                auth_token: String::new(),
                ..config()
            }),
            "sms.auth_token"
        );
        assert_eq!(
            bad(SmsConfig {
                base_url: "ftp://example.com".to_owned(),
                ..config()
            }),
            "sms.base_url"
        );
        assert_eq!(
            bad(SmsConfig {
                status_callback_url: Some("nope".to_owned()),
                ..config()
            }),
            "sms.status_callback_url"
        );
        assert!(!format!("{:?}", config()).contains("secret-token"));

        let parsed: SmsConfig = serde_json::from_value(serde_json::json!({
            "account_sid": "AC1", "auth_token": "t", "from": "+15005550006", "timeout": "3s"
        }))
        .unwrap();
        assert_eq!(parsed.base_url, "https://api.twilio.com");
        assert_eq!(parsed.timeout, Duration::from_secs(3));
        assert!(
            serde_json::from_value::<SmsConfig>(serde_json::json!({
                "account_sid": "AC1", "auth_token": "t", "from": "+15005550006", "form": "x"
            }))
            .is_err()
        );
    }

    #[test]
    fn builds_the_messages_url() {
        let channel = SmsChannel::new(SmsConfig {
            base_url: "http://127.0.0.1:9/prefix/".to_owned(),
            ..config()
        })
        .unwrap();
        assert_eq!(
            channel.messages_url.as_str(),
            "http://127.0.0.1:9/prefix/2010-04-01/Accounts/AC00000000000000000000000000000001/Messages.json"
        );
    }
}
