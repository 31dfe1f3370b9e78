//! The APNs channel: one HTTP/2 request to Apple Push Notification service
//! per send, through the `a2` crate, authenticated with a provider token
//! (a JWT that a2 signs with the team's `.p8` auth key and renews before
//! the hour Apple allows). Certificate auth is not offered: a2 reads `.p12`
//! certificates only through OpenSSL, which Nudge does not link.
//!
//! Each send is one alert push to `Recipient::DeviceToken`:
//! * the body is `{"aps": {"alert": {"title": subject, "body": text_body}},
//!   "data": …, "notification_id": …, "notification_type": …}`, where
//!   `data` is the message's data (left out when it is `null`) and the two
//!   ids let the app open or mark read the matching inbox item;
//! * headers: `apns-topic` is the configured bundle id, `apns-push-type`
//!   is `alert`, `apns-priority` is `10` (deliver now: every push here is
//!   a visible alert the user is meant to see when it is sent);
//! * `apns-id` is the delivery id, which is a UUID and the same on every
//!   attempt, so Apple's delivery logs and error answers name one delivery
//!   by one id. (A delivery id that is not a UUID is left out, since Apple
//!   refuses anything else as `BadMessageId`, and Apple picks an id.)
//! * `apns-collapse-id` is also the delivery id: when a retry delivers a
//!   push whose first answer was lost, the device replaces the first
//!   notification instead of showing it twice. Apple documents no
//!   deduplication by `apns-id`; collapsing is what prevents the duplicate.
//!
//! A token that is not a hex string is [`SendError::InvalidRecipient`], a
//! message with neither subject nor text is [`SendError::Permanent`], and
//! a body over Apple's limit ([`MAX_PAYLOAD_BYTES`]) is
//! [`SendError::Permanent`], all without a request.
//!
//! The receipt's provider message id is the `apns-id` Apple answers with.
//!
//! # Classification
//!
//! [`classify`] reads a2's own result. Apple's `reason` decides when a2
//! knows it; a reason a2 cannot parse (Apple adds some) leaves only the
//! status code, which decides then.
//!
//! | answer | result |
//! |---|---|
//! | `200` | receipt |
//! | `410` (`Unregistered`, or any reason) | [`SendError::InvalidRecipient`]: the token is no longer active |
//! | `400 BadDeviceToken`, `400 DeviceTokenNotForTopic` | [`SendError::InvalidRecipient`] (see below) |
//! | `429` (`TooManyRequests`, `TooManyProviderTokenUpdates`), `5xx` (`InternalServerError`, `ServiceUnavailable`, `Shutdown`) | [`SendError::Retriable`], no `retry_after`: APNs sends no `Retry-After` |
//! | `403 ExpiredProviderToken` | [`SendError::Retriable`]: a2 signs a new token once the old one is 55 minutes old, so a later attempt carries a fresh one (a clock far off makes every token look expired, and the retries then run out) |
//! | `400 IdleTimeout` | [`SendError::Retriable`]: the connection idled out, a new one works |
//! | `403 InvalidProviderToken` and other `403`s (wrong key id or team id, key revoked) | [`SendError::Permanent`]: a configuration problem, no retry fixes it |
//! | `413 PayloadTooLarge` | [`SendError::Permanent`] |
//! | other `4xx` (`BadTopic`, `TopicDisallowed`, `BadMessageId`, `MissingTopic`, …), other codes | [`SendError::Permanent`] |
//! | connection error, connection refused, timeout (a2's `ConnectionError`, `ClientError`, `RequestTimeout`) | [`SendError::Retriable`] |
//! | signing the provider token failed | [`SendError::Retriable`]: the key signed at start-up, so this is the host's fault (randomness), not the message's |
//! | other a2 errors (a request that cannot be built or serialised) | [`SendError::Permanent`] |
//! | recipient not a device token, empty message, payload over 4096 bytes | [`SendError::Permanent`], no request |
//! | device token not a hex string | [`SendError::InvalidRecipient`], no request |
//!
//! `BadDeviceToken` fails for good *and* deactivates the token rather than
//! being merely `Permanent`: the token is malformed or belongs to the other
//! environment, and either way every later push to it fails the same way.
//! The cost is that an `environment` set wrong (a sandbox token sent to
//! production, or the reverse) deactivates every token it is tried on, so
//! check `environment` before going live.

use std::error::Error as _;
use std::path::PathBuf;
use std::time::Duration;

use a2::request::payload::{Payload, PayloadLike as _};
use a2::{
    CollapseId, DefaultNotificationBuilder, ErrorReason, NotificationBuilder as _,
    NotificationOptions, Priority, PushType,
};
use async_trait::async_trait;
use serde::Deserialize;

use super::email::{humantime_duration, recipient_kind, shorten};
use super::{Channel, ChannelKind, OutboundMessage, Recipient, SendError, SendReceipt};
use crate::config::ConfigError;

/// Apple's limit for the JSON body of a (non-VoIP) push, in bytes.
pub const MAX_PAYLOAD_BYTES: usize = 4096;

/// The longest device token accepted, in hex digits (100 bytes): Apple's
/// tokens are 32 bytes today but Apple says their length may change.
const MAX_TOKEN_HEX_DIGITS: usize = 200;

/// Which APNs service the pushes go to; a device token is only valid on
/// the one its app build registered with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApnsEnvironment {
    /// `api.push.apple.com`: App Store, TestFlight and ad-hoc builds.
    #[default]
    Production,
    /// `api.development.push.apple.com`: builds run from Xcode.
    Sandbox,
}

/// The `apns` section of the config file.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApnsConfig {
    /// The auth key's id (10 characters), the provider token's `kid`.
    pub key_id: String,
    /// The Apple developer team's id (10 characters), the token's `iss`.
    pub team_id: String,
    /// Path of the `.p8` auth key file. Set this or `key_pem`, not both.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// The `.p8` auth key itself, as PEM text; never printed.
    #[serde(default)]
    pub key_pem: Option<String>,
    /// The app's bundle id, sent as `apns-topic`.
    pub topic: String,
    #[serde(default)]
    pub environment: ApnsEnvironment,
    /// Limit for one request until Apple's answer, e.g. `"10s"`; a2 counts
    /// whole seconds, so a fraction is rounded up.
    #[serde(default = "default_timeout", with = "humantime_duration")]
    pub timeout: Duration,
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

impl std::fmt::Debug for ApnsConfig {
    // By hand so the private key never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApnsConfig")
            .field("key_id", &self.key_id)
            .field("team_id", &self.team_id)
            .field("key_file", &self.key_file)
            .field("key_pem", &self.key_pem.as_ref().map(|_| "<redacted>"))
            .field("topic", &self.topic)
            .field("environment", &self.environment)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// The one call the channel makes to APNs. a2's client is the real one;
/// a2 hard-codes Apple's hosts, so tests stand in for Apple here, right
/// in front of a2, and still answer with a2's own types.
#[async_trait]
pub trait ApnsSender: Send + Sync {
    async fn send(&self, payload: Payload<'_>) -> Result<a2::Response, a2::Error>;
}

#[async_trait]
impl ApnsSender for a2::Client {
    async fn send(&self, payload: Payload<'_>) -> Result<a2::Response, a2::Error> {
        a2::Client::send(self, payload).await
    }
}

/// Sends alert pushes for one app (one topic) with one auth key.
pub struct ApnsChannel {
    sender: Box<dyn ApnsSender>,
    topic: String,
}

impl std::fmt::Debug for ApnsChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApnsChannel")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

fn config_error(setting: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        setting,
        message: message.into(),
    }
}

/// Apple's key and team ids are 10 letters and digits; checking the form
/// here turns a typo into a start-up error instead of a `403` on every push.
fn check_apple_id(setting: &'static str, id: &str) -> Result<(), ConfigError> {
    if id.len() == 10 && id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Ok(());
    }
    Err(config_error(
        setting,
        format!("{id:?} is not a 10-character Apple id (letters and digits)"),
    ))
}

fn check_topic(topic: &str) -> Result<(), ConfigError> {
    // It goes into a header as it is: no spaces, no control characters.
    if !topic.is_empty() && topic.bytes().all(|b| b.is_ascii_graphic()) {
        return Ok(());
    }
    Err(config_error(
        "apns.topic",
        format!("{topic:?} is not a bundle id (e.g. com.example.app)"),
    ))
}

/// The key's PEM text from whichever of `key_file` and `key_pem` is set.
fn read_key(
    key_file: Option<PathBuf>,
    key_pem: Option<String>,
) -> Result<(Vec<u8>, &'static str), ConfigError> {
    match (key_file, key_pem) {
        (Some(path), None) => std::fs::read(&path)
            .map(|pem| (pem, "apns.key_file"))
            .map_err(|err| {
                config_error(
                    "apns.key_file",
                    format!("cannot read {}: {err}", path.display()),
                )
            }),
        (None, Some(pem)) => Ok((pem.into_bytes(), "apns.key_pem")),
        (Some(_), Some(_)) => Err(config_error(
            "apns.key_file",
            "key_file and key_pem are both set: set one of them",
        )),
        (None, None) => Err(config_error(
            "apns.key_file",
            "no auth key: set key_file (path of the .p8 file) or key_pem",
        )),
    }
}

/// a2 counts its timeout in whole seconds.
fn whole_seconds(timeout: Duration) -> u64 {
    timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0)
}

impl ApnsChannel {
    /// Checks the config, reads the auth key and signs a first provider
    /// token with it, so a missing, unreadable or wrong key stops start-up
    /// with the setting named. Connects lazily, on the first send.
    pub fn new(config: ApnsConfig) -> Result<Self, ConfigError> {
        let ApnsConfig {
            key_id,
            team_id,
            key_file,
            key_pem,
            topic,
            environment,
            timeout,
        } = config;
        check_apple_id("apns.key_id", &key_id)?;
        check_apple_id("apns.team_id", &team_id)?;
        check_topic(&topic)?;
        if timeout.is_zero() {
            return Err(config_error("apns.timeout", "must be longer than zero"));
        }
        let (pem, key_setting) = read_key(key_file, key_pem)?;
        let endpoint = match environment {
            ApnsEnvironment::Production => a2::Endpoint::Production,
            ApnsEnvironment::Sandbox => a2::Endpoint::Sandbox,
        };
        let client_config = a2::ClientConfig {
            request_timeout_secs: Some(whole_seconds(timeout)),
            ..a2::ClientConfig::new(endpoint)
        };
        let client =
            a2::Client::token(pem.as_slice(), key_id, team_id, client_config).map_err(|err| {
                config_error(
                    key_setting,
                    format!(
                        "is not an APNs auth key (a .p8 file: an EC P-256 private key, \
                         PKCS#8 in PEM): {err}"
                    ),
                )
            })?;
        Self::with_sender(topic, client)
    }

    /// A channel that hands its pushes to `sender` instead of a2's client:
    /// the seam for tests. `topic` is checked as in [`ApnsChannel::new`].
    pub fn with_sender(
        topic: impl Into<String>,
        sender: impl ApnsSender + 'static,
    ) -> Result<Self, ConfigError> {
        let topic = topic.into();
        check_topic(&topic)?;
        Ok(ApnsChannel {
            sender: Box::new(sender),
            topic,
        })
    }

    /// The push for one delivery, as a2 will send it (see the module doc).
    fn payload<'a>(
        &'a self,
        message: &'a OutboundMessage,
        token: &'a str,
        apns_id: Option<&'a str>,
    ) -> Payload<'a> {
        let mut builder = DefaultNotificationBuilder::new();
        if !message.subject.trim().is_empty() {
            builder = builder.set_title(&message.subject);
        }
        if !message.text_body.trim().is_empty() {
            builder = builder.set_body(&message.text_body);
        }
        let options = NotificationOptions {
            apns_id,
            apns_push_type: Some(PushType::Alert),
            apns_priority: Some(Priority::High),
            apns_topic: Some(&self.topic),
            // Empty or longer than Apple's 64 bytes: no collapsing, rather
            // than a push Apple refuses.
            apns_collapse_id: Some(message.delivery_id.as_str())
                .filter(|id| !id.is_empty())
                .and_then(|id| CollapseId::new(id).ok()),
            apns_expiration: None,
        };
        let mut payload = builder.build(token, options);
        if !message.data.is_null() {
            payload.data.insert("data", message.data.clone());
        }
        payload.data.insert(
            "notification_id",
            serde_json::Value::from(message.notification_id.as_str()),
        );
        payload.data.insert(
            "notification_type",
            serde_json::Value::from(message.notification_type.as_str()),
        );
        payload
    }
}

/// Whether `token` looks like an APNs device token: hex digits, at most
/// 200 of them. It becomes part of the request path.
pub fn is_device_token(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= MAX_TOKEN_HEX_DIGITS
        && token.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The `apns-id` for a delivery id: its canonical (lowercase, hyphenated)
/// form when it is a UUID, else none, as Apple accepts nothing else.
pub fn apns_id(delivery_id: &str) -> Option<String> {
    let uuid = uuid::Uuid::try_parse(delivery_id).ok()?;
    Some(uuid.hyphenated().to_string())
}

#[async_trait]
impl Channel for ApnsChannel {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Apns
    }

    async fn send(
        &self,
        message: &OutboundMessage,
        recipient: &Recipient,
    ) -> Result<SendReceipt, SendError> {
        let Recipient::DeviceToken { token } = recipient else {
            return Err(SendError::Permanent {
                answer: format!(
                    "the apns channel cannot send to {}",
                    recipient_kind(recipient)
                ),
            });
        };
        if !is_device_token(token) {
            return Err(SendError::InvalidRecipient {
                answer: shorten(format!(
                    "{token:?} is not an APNs device token (hex digits)"
                )),
            });
        }
        if message.subject.trim().is_empty() && message.text_body.trim().is_empty() {
            return Err(SendError::Permanent {
                answer: "the message has neither a subject nor a text body to show".to_owned(),
            });
        }
        let apns_id = apns_id(&message.delivery_id);
        let payload = self.payload(message, token, apns_id.as_deref());
        let size = payload
            .to_json_string()
            .map_err(|err| SendError::Permanent {
                answer: shorten(format!("cannot serialise the push: {err}")),
            })?
            .len();
        if size > MAX_PAYLOAD_BYTES {
            return Err(SendError::Permanent {
                answer: format!(
                    "the push is {size} bytes, APNs takes at most {MAX_PAYLOAD_BYTES}: \
                     shorten the template or its data"
                ),
            });
        }
        classify(self.sender.send(payload).await)
    }
}

/// How a failure is treated, before it becomes a [`SendError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Retriable,
    Permanent,
    InvalidRecipient,
}

/// The module table for a reason a2 parsed. Exhaustive, so a reason added
/// in a new a2 has to be placed here.
fn reason_class(reason: &ErrorReason) -> Class {
    match reason {
        ErrorReason::Unregistered
        | ErrorReason::BadDeviceToken
        | ErrorReason::DeviceTokenNotForTopic => Class::InvalidRecipient,
        ErrorReason::TooManyRequests
        | ErrorReason::TooManyProviderTokenUpdates
        | ErrorReason::InternalServerError
        | ErrorReason::ServiceUnavailable
        | ErrorReason::Shutdown
        | ErrorReason::ExpiredProviderToken
        | ErrorReason::IdleTimeout => Class::Retriable,
        ErrorReason::InvalidProviderToken
        | ErrorReason::MissingProviderToken
        | ErrorReason::Forbidden
        | ErrorReason::BadCertificate
        | ErrorReason::BadCertificateEnvironment
        | ErrorReason::PayloadTooLarge
        | ErrorReason::PayloadEmpty
        | ErrorReason::BadCollapseId
        | ErrorReason::BadExpirationDate
        | ErrorReason::BadMessageId
        | ErrorReason::BadPriority
        | ErrorReason::BadTopic
        | ErrorReason::TopicDisallowed
        | ErrorReason::MissingTopic
        | ErrorReason::MissingDeviceToken
        | ErrorReason::DuplicateHeaders
        | ErrorReason::BadPath
        | ErrorReason::MethodNotAllowed => Class::Permanent,
    }
}

/// The module table by status code alone, for answers without a reason
/// a2 knows.
fn status_class(code: u16) -> Class {
    match code {
        410 => Class::InvalidRecipient,
        429 | 500..=599 => Class::Retriable,
        _ => Class::Permanent,
    }
}

/// Maps a2's result of one send to a receipt or a [`SendError`] (the
/// module doc's table).
pub fn classify(result: Result<a2::Response, a2::Error>) -> Result<SendReceipt, SendError> {
    let response = match result {
        // a2 returns `Ok` for `200` only.
        Ok(response) => {
            return Ok(SendReceipt {
                answer: status_line(response.code),
                provider_message_id: response.apns_id,
            });
        }
        Err(a2::Error::ResponseError(response)) => response,
        Err(err) => return Err(classify_error(&err)),
    };
    let reason = response.error.as_ref().map(|body| &body.reason);
    let class = reason.map_or_else(|| status_class(response.code), reason_class);
    let answer = rejection_answer(&response);
    Err(match class {
        Class::Retriable => SendError::Retriable {
            answer,
            retry_after: None,
        },
        Class::Permanent => SendError::Permanent { answer },
        Class::InvalidRecipient => SendError::InvalidRecipient { answer },
    })
}

/// A failure without an answer from Apple.
fn classify_error(err: &a2::Error) -> SendError {
    let mut answer = err.to_string();
    let mut source = err.source();
    while let Some(inner) = source {
        // a2's messages already include their direct source's.
        let text = inner.to_string();
        if !answer.contains(&text) {
            answer.push_str(": ");
            answer.push_str(&text);
        }
        source = inner.source();
    }
    let answer = shorten(answer);
    match err {
        a2::Error::ConnectionError(_)
        | a2::Error::ClientError(_)
        | a2::Error::RequestTimeout(_)
        | a2::Error::SignerError(_) => SendError::Retriable {
            answer,
            retry_after: None,
        },
        // A request that cannot be built or serialised fails the same way
        // every time; the rest (key, certificate, TLS setup) only come from
        // building the client, not from a send.
        _ => SendError::Permanent { answer },
    }
}

/// `"200 OK"`, `"503 Service Unavailable"`.
fn status_line(code: u16) -> String {
    let text = reqwest::StatusCode::from_u16(code)
        .ok()
        .and_then(|status| status.canonical_reason())
        .unwrap_or_default();
    format!("{code} {text}").trim_end().to_owned()
}

/// E.g. `410 Unregistered (token inactive since 2017-10-17T14:17:45.488Z):
/// The device token is inactive …`, or the status line without a reason.
fn rejection_answer(response: &a2::Response) -> String {
    let Some(body) = &response.error else {
        return status_line(response.code);
    };
    let since = body
        .timestamp
        .and_then(|millis| i64::try_from(millis).ok())
        .and_then(|millis| jiff::Timestamp::from_millisecond(millis).ok())
        .map(|at| format!(" (token inactive since {at})"))
        .unwrap_or_default();
    shorten(format!(
        "{} {:?}{since}: {}",
        response.code, body.reason, body.reason
    ))
}

#[cfg(test)]
mod tests {
    use a2::ErrorBody;
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as BASE64;

    use super::*;

    /// A fresh `.p8`-style key: EC P-256, PKCS#8, PEM.
    fn key_pem() -> String {
        let rng = ring::rand::SystemRandom::new();
        let der = ring::signature::EcdsaKeyPair::generate_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &rng,
        )
        .unwrap();
        let encoded = BASE64.encode(der.as_ref());
        let lines: Vec<&str> = encoded
            .as_bytes()
            .chunks(64)
            .map(|line| std::str::from_utf8(line).unwrap())
            .collect();
        format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            lines.join("\n")
        )
    }

    fn config() -> ApnsConfig {
        ApnsConfig {
            key_id: "ABC123DEFG".to_owned(),
            team_id: "DEF123GHIJ".to_owned(),
            key_file: None,
            key_pem: Some(key_pem()),
            topic: "com.example.app".to_owned(),
            environment: ApnsEnvironment::Sandbox,
            timeout: Duration::from_secs(5),
        }
    }

    fn rejected(code: u16, reason: Option<ErrorReason>) -> Result<a2::Response, a2::Error> {
        Err(a2::Error::ResponseError(a2::Response {
            error: reason.map(|reason| ErrorBody {
                reason,
                timestamp: None,
            }),
            apns_id: Some("0198a3c4-0000-7000-8000-000000000001".to_owned()),
            code,
        }))
    }

    fn class_of(result: Result<a2::Response, a2::Error>) -> Class {
        match classify(result) {
            Ok(receipt) => panic!("expected a failure, got {receipt:?}"),
            Err(SendError::Retriable { retry_after, .. }) => {
                assert_eq!(retry_after, None, "APNs sends no Retry-After");
                Class::Retriable
            }
            Err(SendError::Permanent { .. }) => Class::Permanent,
            Err(SendError::InvalidRecipient { .. }) => Class::InvalidRecipient,
        }
    }

    #[test]
    fn accepted_push_gives_apples_apns_id() {
        let receipt = classify(Ok(a2::Response {
            error: None,
            apns_id: Some("0198a3c4-0000-7000-8000-000000000001".to_owned()),
            code: 200,
        }))
        .unwrap();
        assert_eq!(
            receipt,
            SendReceipt {
                provider_message_id: Some("0198a3c4-0000-7000-8000-000000000001".to_owned()),
                answer: "200 OK".to_owned(),
            }
        );
    }

    #[test]
    fn every_row_of_the_table() {
        use Class::*;
        use ErrorReason as R;
        let rows = [
            (410, Some(R::Unregistered), InvalidRecipient),
            (410, None, InvalidRecipient),
            (400, Some(R::BadDeviceToken), InvalidRecipient),
            (400, Some(R::DeviceTokenNotForTopic), InvalidRecipient),
            (429, Some(R::TooManyRequests), Retriable),
            (429, Some(R::TooManyProviderTokenUpdates), Retriable),
            (429, None, Retriable),
            (500, Some(R::InternalServerError), Retriable),
            (503, Some(R::ServiceUnavailable), Retriable),
            (503, Some(R::Shutdown), Retriable),
            (502, None, Retriable),
            (403, Some(R::ExpiredProviderToken), Retriable),
            (400, Some(R::IdleTimeout), Retriable),
            (403, Some(R::InvalidProviderToken), Permanent),
            (403, Some(R::MissingProviderToken), Permanent),
            (403, Some(R::Forbidden), Permanent),
            (403, None, Permanent),
            (413, Some(R::PayloadTooLarge), Permanent),
            (413, None, Permanent),
            (400, Some(R::BadTopic), Permanent),
            (400, Some(R::TopicDisallowed), Permanent),
            (400, Some(R::BadMessageId), Permanent),
            (400, Some(R::BadCollapseId), Permanent),
            (400, Some(R::MissingTopic), Permanent),
            (400, Some(R::PayloadEmpty), Permanent),
            (405, Some(R::MethodNotAllowed), Permanent),
            (400, None, Permanent),
            (404, None, Permanent),
        ];
        for (code, reason, expected) in rows {
            let label = format!("{code} {reason:?}");
            assert_eq!(class_of(rejected(code, reason)), expected, "{label}");
        }
    }

    #[test]
    fn failures_without_an_answer() {
        assert_eq!(
            class_of(Err(a2::Error::RequestTimeout(10))),
            Class::Retriable
        );
        assert_eq!(
            class_of(Err(a2::Error::InvalidOptions("bad".to_owned()))),
            Class::Permanent
        );
        let not_json = serde_json::from_str::<serde_json::Value>("{").unwrap_err();
        assert_eq!(
            class_of(Err(a2::Error::SerializeError(not_json))),
            Class::Permanent
        );
        // a2's ConnectionError and ClientError wrap hyper errors, which
        // only hyper can make: the integration test gets a real one.
    }

    #[test]
    fn answers_name_the_code_and_reason() {
        let err = classify(rejected(400, Some(ErrorReason::BadDeviceToken))).unwrap_err();
        assert!(err.answer().starts_with("400 BadDeviceToken: "), "{err:?}");
        let err = classify(Err(a2::Error::ResponseError(a2::Response {
            error: Some(ErrorBody {
                reason: ErrorReason::Unregistered,
                timestamp: Some(1_508_249_865_488),
            }),
            apns_id: None,
            code: 410,
        })))
        .unwrap_err();
        assert!(
            err.answer()
                .starts_with("410 Unregistered (token inactive since 2017-10-17T14:17:45.488Z): "),
            "{err:?}"
        );
        let err = classify(rejected(503, None)).unwrap_err();
        assert_eq!(err.answer(), "503 Service Unavailable");
        let err = classify(Err(a2::Error::RequestTimeout(10))).unwrap_err();
        assert_eq!(err.answer(), "The request timed out after 10 s");
    }

    #[test]
    fn tokens_and_apns_ids() {
        assert!(is_device_token(&"a1".repeat(32)));
        assert!(is_device_token(&"A1".repeat(32)));
        for bad in ["", "not-hex", "<a1b2 c3d4>", "a1\r\nb2", &"a".repeat(201)] {
            assert!(!is_device_token(bad), "{bad:?}");
        }
        assert_eq!(
            apns_id("0198A3C4-0000-7000-8000-000000000001").as_deref(),
            Some("0198a3c4-0000-7000-8000-000000000001")
        );
        assert_eq!(
            apns_id("0198a3c4000070008000000000000001").as_deref(),
            Some("0198a3c4-0000-7000-8000-000000000001")
        );
        assert_eq!(apns_id("compliance-1"), None);
    }

    #[test]
    fn new_checks_the_config_and_the_key() {
        assert!(ApnsChannel::new(config()).is_ok());
        let setting = |config: ApnsConfig| ApnsChannel::new(config).unwrap_err().setting;
        assert_eq!(
            setting(ApnsConfig {
                key_pem: Some(
                    "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".to_owned()
                ),
                ..config()
            }),
            "apns.key_pem"
        );
        assert_eq!(
            setting(ApnsConfig {
                key_file: Some("/nonexistent/AuthKey.p8".into()),
                key_pem: None,
                ..config()
            }),
            "apns.key_file"
        );
        assert_eq!(
            setting(ApnsConfig {
                key_file: Some("/nonexistent/AuthKey.p8".into()),
                ..config()
            }),
            "apns.key_file"
        );
        assert_eq!(
            setting(ApnsConfig {
                key_pem: None,
                ..config()
            }),
            "apns.key_file"
        );
        assert_eq!(
            setting(ApnsConfig {
                key_id: "ABC".to_owned(),
                ..config()
            }),
            "apns.key_id"
        );
        assert_eq!(
            setting(ApnsConfig {
                team_id: "DEF123GHI!".to_owned(),
                ..config()
            }),
            "apns.team_id"
        );
        assert_eq!(
            setting(ApnsConfig {
                topic: "com.example app".to_owned(),
                ..config()
            }),
            "apns.topic"
        );
        assert_eq!(
            setting(ApnsConfig {
                timeout: Duration::ZERO,
                ..config()
            }),
            "apns.timeout"
        );
        assert_eq!(whole_seconds(Duration::from_millis(1500)), 2);
        assert_eq!(whole_seconds(Duration::from_secs(10)), 10);
    }

    #[test]
    fn config_file_section_parses_and_rejects_unknown_keys() {
        let parsed: ApnsConfig = toml::from_str(
            r#"
            key_id = "ABC123DEFG"
            team_id = "DEF123GHIJ"
            key_file = "/etc/nudge/AuthKey_ABC123DEFG.p8"
            topic = "com.example.app"
            "#,
        )
        .unwrap();
        assert_eq!(parsed.environment, ApnsEnvironment::Production);
        assert_eq!(parsed.timeout, Duration::from_secs(10));
        let parsed: ApnsConfig = toml::from_str(
            r#"
            key_id = "ABC123DEFG"
            team_id = "DEF123GHIJ"
            key_pem = "pem"
            topic = "com.example.app"
            environment = "sandbox"
            timeout = "3s"
            "#,
        )
        .unwrap();
        assert_eq!(parsed.environment, ApnsEnvironment::Sandbox);
        assert_eq!(parsed.timeout, Duration::from_secs(3));
        let unknown = toml::from_str::<ApnsConfig>(
            r#"
            key_id = "ABC123DEFG"
            team_id = "DEF123GHIJ"
            key_file = "k.p8"
            topic = "com.example.app"
            enviroment = "sandbox"
            "#,
        );
        assert!(unknown.is_err());
        let secret = key_pem();
        let debug = format!(
            "{:?}",
            ApnsConfig {
                key_pem: Some(secret.clone()),
                ..config()
            }
        );
        assert!(!debug.contains(&secret[40..80]), "{debug}");
        assert!(debug.contains("<redacted>"));
    }
}
