//! The email channel: one SMTP transaction per send, over lettre's async
//! transport with a pool of connections to one relay, TLS through rustls.
//!
//! It promises that a message carries a text part (and an HTML alternative
//! when the template has one), a `Message-ID` that stays the same for every
//! attempt of one delivery, and, when the message has an unsubscribe URL,
//! the one-click unsubscribe headers of RFC 8058.
//!
//! # Classification of failures
//!
//! | what happened | result |
//! |---|---|
//! | connection refused, reset, timeout, TLS handshake, unparsable reply | [`SendError::Retriable`] |
//! | any `4xx` reply (greylisting, throttling, mailbox busy) | [`SendError::Retriable`] |
//! | `5xx` with an enhanced code `5.1.x` (bad mailbox, domain, syntax) other than the sender's own `5.1.7`/`5.1.8`, or `5.2.1` (mailbox disabled) | [`SendError::InvalidRecipient`] |
//! | `550`, `551` or `553` without an enhanced code (RFC 5321: mailbox unavailable, user not local, mailbox name not allowed) | [`SendError::InvalidRecipient`] |
//! | any other `5xx` (policy `5.7.x`, message too big, authentication refused) | [`SendError::Permanent`] |
//! | recipient not an email address, or a malformed address | [`SendError::Permanent`] / [`SendError::InvalidRecipient`] |
//! | a client-side error (no usable AUTH mechanism, message that cannot be built) | [`SendError::Permanent`] |
//!
//! A `550` whose enhanced code says policy (`5.7.1`, spam) is `Permanent`,
//! not `InvalidRecipient`: the address is fine, the content was refused.

use std::time::Duration;

use async_trait::async_trait;
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::response::{Response, Severity};
use lettre::transport::smtp::{Error as SmtpError, PoolConfig};
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::Deserialize;

use super::{Channel, ChannelKind, OutboundMessage, Recipient, SendError, SendReceipt};
use crate::config::ConfigError;

/// Longest provider answer kept for the attempt log.
const MAX_ANSWER: usize = 300;

/// How the connection to the relay is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmailTls {
    /// Plain text: only for a relay on the same host or a trusted network.
    None,
    /// Plain connection upgraded with `STARTTLS`, which is *required*: a
    /// relay that does not offer it fails the send instead of silently
    /// receiving the mail in clear (port 587).
    StartTls,
    /// TLS from the first byte (implicit TLS, port 465).
    Tls,
}

/// The `email` section of the config file.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// The SMTP relay's host name; also the name its TLS certificate must
    /// carry.
    pub host: String,
    /// The relay's port; defaults to what `tls` implies (25, 587 or 465).
    #[serde(default)]
    pub port: Option<u16>,
    pub tls: EmailTls,
    /// AUTH credentials; both or neither.
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// The `From` mailbox, e.g. `Acme <notify@acme.example>`; its domain
    /// also names the `Message-ID`s.
    pub from: String,
    /// Most connections kept open to the relay, which bounds how many
    /// sends run at once.
    #[serde(default = "default_pool_max_size")]
    pub pool_max_size: u32,
    /// Limit for connecting and for each SMTP command, e.g. `"30s"`.
    #[serde(default = "default_timeout", with = "humantime_duration")]
    pub timeout: Duration,
    /// Authenticates the email provider's event callbacks (`POST
    /// /v1/callbacks/email`, see [`EmailCallbackAuth`]); at least
    /// [`MIN_CALLBACK_SECRET_BYTES`]. Unset: the route answers 503.
    #[serde(default)]
    pub callback_secret: Option<String>,
}

/// Shortest accepted `callback_secret`, in bytes.
pub const MIN_CALLBACK_SECRET_BYTES: usize = 32;

fn default_pool_max_size() -> u32 {
    4
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

impl std::fmt::Debug for EmailConfig {
    // By hand so the password never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("from", &self.from)
            .field("pool_max_size", &self.pool_max_size)
            .field("timeout", &self.timeout)
            .field(
                "callback_secret",
                &self.callback_secret.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Durations in the config file are humantime strings (`"30s"`, `"1m"`).
pub(crate) mod humantime_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

impl EmailConfig {
    /// The callback route's credentials, when `callback_secret` is set.
    pub fn callback_auth(&self) -> Option<EmailCallbackAuth> {
        self.callback_secret.as_deref().map(EmailCallbackAuth::new)
    }
}

/// How far a callback's `webhook-timestamp` may be from this server's
/// clock, either way: older ones are refused as stale (a captured callback
/// replayed later), later ones as forged or from a clock far off. Also how
/// long a callback's `webhook-id` is remembered (see
/// [`crate::storage::CallbackIdTable`]): a repeat within it is a duplicate,
/// one after it is stale.
pub const CALLBACK_TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// Authenticates an email provider's event callback the Standard Webhooks
/// way (<https://www.standardwebhooks.com/>, the scheme of Nudge's own
/// webhook channel, whose [`super::webhook::sign`] it reuses): headers
/// `webhook-id` (the message's unique id), `webhook-timestamp` (unix
/// seconds) and `webhook-signature: v1,<base64 HMAC-SHA256 of
/// "{id}.{timestamp}.{body}">` (several space-separated entries allowed;
/// any match verifies, compared in constant time). The key is
/// `callback_secret`: base64-decoded when it is a Standard Webhooks secret
/// (`whsec_…`), else its bytes as written. The secret never reaches
/// `Debug` output.
#[derive(Clone)]
pub struct EmailCallbackAuth {
    key: std::sync::Arc<[u8]>,
}

impl std::fmt::Debug for EmailCallbackAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EmailCallbackAuth(<redacted>)")
    }
}

/// Why a callback's authentication failed (see [`EmailCallbackAuth::verify`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallbackRefusal {
    /// A header missing, empty or malformed, or a signature that does not
    /// match.
    #[error(
        "webhook-id, webhook-timestamp and webhook-signature must be present, and \
         webhook-signature v1,<base64 HMAC-SHA256 of \"{{webhook-id}}.{{webhook-timestamp}}.{{body}}\" \
         keyed by the configured callback_secret>"
    )]
    InvalidSignature,
    /// Correctly signed, but the timestamp is further than
    /// [`CALLBACK_TOLERANCE`] from now.
    #[error(
        "webhook-timestamp {timestamp} is {distance} s from this server's time {now}; \
         at most {} s either way are accepted",
        CALLBACK_TOLERANCE.as_secs()
    )]
    StaleTimestamp {
        timestamp: i64,
        now: i64,
        distance: u64,
    },
}

impl EmailCallbackAuth {
    pub fn new(secret: &str) -> Self {
        let key = secret
            .strip_prefix("whsec_")
            .and_then(|_| super::webhook::decode_secret(secret))
            .unwrap_or_else(|| secret.as_bytes().to_vec());
        EmailCallbackAuth {
            key: std::sync::Arc::from(key),
        }
    }

    /// The `webhook-signature` value for a callback (for providers'
    /// adapters and tests).
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        super::webhook::sign(&self.key, id, timestamp, body)
    }

    /// Checks a callback's three headers (as received; `""` when missing)
    /// against `body` and `now`: the signature first, then the timestamp's
    /// distance from `now`. Returns the signed timestamp (unix seconds).
    pub fn verify(
        &self,
        id: &str,
        timestamp: &str,
        signature: &str,
        body: &[u8],
        now: jiff::Timestamp,
    ) -> Result<i64, CallbackRefusal> {
        let id = id.trim();
        let Ok(timestamp) = timestamp.trim().parse::<i64>() else {
            return Err(CallbackRefusal::InvalidSignature);
        };
        if id.is_empty()
            || !super::webhook::verify_with_key(&self.key, id, timestamp, body, signature)
        {
            return Err(CallbackRefusal::InvalidSignature);
        }
        let now = now.as_second();
        let distance = now.abs_diff(timestamp);
        if distance > CALLBACK_TOLERANCE.as_secs() {
            return Err(CallbackRefusal::StaleTimestamp {
                timestamp,
                now,
                distance,
            });
        }
        Ok(timestamp)
    }
}

/// Sends email through one SMTP relay.
pub struct EmailChannel {
    /// Pooled: connections are reused across sends and reopened when the
    /// relay dropped them.
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    /// Domain of the `Message-ID`s (the `From` address's domain).
    id_domain: String,
}

impl std::fmt::Debug for EmailChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailChannel")
            .field("from", &self.from.to_string())
            .finish_non_exhaustive()
    }
}

fn config_error(setting: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        setting,
        message: message.into(),
    }
}

impl EmailChannel {
    /// Checks the config and builds the transport; connects lazily, on the
    /// first send, so a relay that is down at start-up is not fatal. Call
    /// it inside a Tokio runtime: the connection pool runs a task there
    /// (and the channel must be dropped there too).
    pub fn new(config: EmailConfig) -> Result<Self, ConfigError> {
        if config.host.trim().is_empty() {
            return Err(config_error("email.host", "is empty"));
        }
        let from: Mailbox = config.from.parse().map_err(|err| {
            config_error(
                "email.from",
                format!("{:?} is not a mailbox: {err}", config.from),
            )
        })?;
        if config.pool_max_size == 0 {
            return Err(config_error("email.pool_max_size", "must be at least 1"));
        }
        if config.timeout.is_zero() {
            return Err(config_error("email.timeout", "must be longer than zero"));
        }
        if let Some(secret) = &config.callback_secret
            && secret.len() < MIN_CALLBACK_SECRET_BYTES
        {
            return Err(config_error(
                "email.callback_secret",
                format!(
                    "must be at least {MIN_CALLBACK_SECRET_BYTES} bytes (it has {}); \
                         make one with `openssl rand -base64 32`",
                    secret.len()
                ),
            ));
        }
        let tls_parameters = || {
            TlsParameters::builder(config.host.clone())
                .build_rustls()
                .map_err(|err| config_error("email.tls", format!("cannot set up TLS: {err}")))
        };
        let (tls, default_port) = match config.tls {
            EmailTls::None => (Tls::None, 25),
            EmailTls::StartTls => (Tls::Required(tls_parameters()?), 587),
            EmailTls::Tls => (Tls::Wrapper(tls_parameters()?), 465),
        };
        let mut builder =
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(config.host.clone())
                .port(config.port.unwrap_or(default_port))
                .tls(tls)
                .timeout(Some(config.timeout))
                .pool_config(PoolConfig::new().max_size(config.pool_max_size));
        match (config.username, config.password) {
            (Some(username), Some(password)) => {
                builder = builder.credentials(Credentials::new(username, password));
            }
            (None, None) => {}
            _ => {
                return Err(config_error(
                    "email.username",
                    "username and password must be set together",
                ));
            }
        }
        let id_domain = from.email.domain().to_owned();
        Ok(EmailChannel {
            transport: builder.build(),
            from,
            id_domain,
        })
    }

    /// Builds the MIME message for one delivery.
    fn build(&self, message: &OutboundMessage, to: Mailbox) -> Result<Message, SendError> {
        let mut builder = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(message.subject.clone())
            .message_id(Some(self.message_id(&message.delivery_id)));
        if let Some(url) = &message.unsubscribe_url {
            // Angle brackets delimit the URI in the header (RFC 2369), so a
            // URL containing them or whitespace would corrupt it.
            if url.is_empty() || url.contains(['<', '>']) || url.chars().any(char::is_whitespace) {
                return Err(SendError::Permanent {
                    answer: format!(
                        "unsubscribe URL {url:?} cannot go in a List-Unsubscribe header"
                    ),
                });
            }
            builder = builder
                .raw_header(HeaderValue::new(
                    HeaderName::new_from_ascii_str("List-Unsubscribe"),
                    format!("<{url}>"),
                ))
                .raw_header(HeaderValue::new(
                    HeaderName::new_from_ascii_str("List-Unsubscribe-Post"),
                    "List-Unsubscribe=One-Click".to_owned(),
                ));
        }
        let built = if message.html_body.is_empty() {
            builder.singlepart(
                SinglePart::builder()
                    .header(ContentType::TEXT_PLAIN)
                    .body(message.text_body.clone()),
            )
        } else {
            builder.multipart(MultiPart::alternative_plain_html(
                message.text_body.clone(),
                message.html_body.clone(),
            ))
        };
        built.map_err(|err| SendError::Permanent {
            answer: format!("cannot build the message: {err}"),
        })
    }

    /// The same for every attempt of one delivery, so a receiver that got
    /// an attempt whose reply was lost can drop the duplicate.
    fn message_id(&self, delivery_id: &str) -> String {
        let local: String = delivery_id
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            .collect();
        let local = if local.is_empty() {
            uuid::Uuid::now_v7().to_string()
        } else {
            local
        };
        format!("<{local}@{}>", self.id_domain)
    }
}

#[async_trait]
impl Channel for EmailChannel {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Email
    }

    async fn send(
        &self,
        message: &OutboundMessage,
        recipient: &Recipient,
    ) -> Result<SendReceipt, SendError> {
        let Recipient::Email { address, name } = recipient else {
            return Err(SendError::Permanent {
                answer: format!(
                    "the email channel cannot send to {}",
                    recipient_kind(recipient)
                ),
            });
        };
        let address: Address = address.parse().map_err(|err| SendError::InvalidRecipient {
            answer: format!("{address:?} is not an email address: {err}"),
        })?;
        let email = self.build(message, Mailbox::new(name.clone(), address))?;
        let message_id = email.headers().get_raw("Message-ID").map(str::to_owned);
        match self.transport.send(email).await {
            Ok(response) => Ok(SendReceipt {
                provider_message_id: message_id,
                answer: reply_line(&response),
            }),
            Err(err) => Err(classify(&err)),
        }
    }
}

/// Names a recipient's kind for error answers, without its address.
pub(crate) fn recipient_kind(recipient: &Recipient) -> &'static str {
    match recipient {
        Recipient::Email { .. } => "an email address",
        Recipient::Phone { .. } => "a phone number",
        Recipient::DeviceToken { .. } => "a device token",
        Recipient::WebPush { .. } => "a web push subscription",
        Recipient::Url { .. } => "a URL",
        Recipient::User { .. } => "a user's inbox",
    }
}

fn reply_line(response: &Response) -> String {
    let text = response.message().collect::<Vec<_>>().join(" ");
    shorten(format!("{} {text}", response.code()))
}

pub(crate) fn shorten(mut text: String) -> String {
    if text.len() > MAX_ANSWER {
        let mut end = MAX_ANSWER;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

/// Maps an SMTP failure to the retry policy's classes (see the module
/// table).
fn classify(err: &SmtpError) -> SendError {
    let answer = shorten(err.to_string());
    let Some(code) = err.status() else {
        if err.is_client() {
            return SendError::Permanent { answer };
        }
        // Network, connection, timeout, TLS, bad reply, pool shut down.
        return SendError::Retriable {
            answer,
            retry_after: None,
        };
    };
    match code.severity {
        Severity::TransientNegativeCompletion => SendError::Retriable {
            answer,
            retry_after: None,
        },
        Severity::PermanentNegativeCompletion => {
            let reply = std::error::Error::source(err)
                .map(ToString::to_string)
                .unwrap_or_default();
            if recipient_is_invalid(&code.to_string(), &reply) {
                SendError::InvalidRecipient { answer }
            } else {
                SendError::Permanent { answer }
            }
        }
        // lettre only reports 4xx and 5xx as status errors.
        _ => SendError::Permanent { answer },
    }
}

/// Whether a `5xx` reply says the recipient's mailbox is bad, from the
/// enhanced status code (RFC 3463) when the reply has one, else from the
/// basic code.
fn recipient_is_invalid(code: &str, reply: &str) -> bool {
    match enhanced_code(reply) {
        Some((5, 1, detail)) => !matches!(detail, 7 | 8),
        Some((5, 2, 1)) => true,
        Some(_) => false,
        None => matches!(code, "550" | "551" | "553"),
    }
}

/// The `class.subject.detail` code at the start of a reply, if any.
fn enhanced_code(reply: &str) -> Option<(u16, u16, u16)> {
    let first = reply.split_whitespace().next()?;
    let mut parts = first.split('.');
    let class = parts.next()?.parse().ok()?;
    let subject = parts.next()?.parse().ok()?;
    let detail = parts.next()?.parse().ok()?;
    if parts.next().is_some() {
        return None;
    }
    Some((class, subject, detail))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> EmailConfig {
        EmailConfig {
            host: "localhost".to_owned(),
            port: Some(2525),
            tls: EmailTls::None,
            username: None,
            password: None,
            from: "Nudge <notify@nudge.example>".to_owned(),
            pool_max_size: 2,
            timeout: Duration::from_secs(5),
            callback_secret: None,
        }
    }

    #[tokio::test]
    async fn a_short_callback_secret_is_refused() {
        let err = EmailChannel::new(EmailConfig {
            callback_secret: Some("short".to_owned()),
            ..config()
        })
        .unwrap_err();
        assert_eq!(err.setting, "email.callback_secret");
        assert!(err.message.contains("at least 32 bytes"), "{err:?}");
        let config = EmailConfig {
            callback_secret: Some("0123456789abcdef0123456789abcdef".to_owned()),
            ..config()
        };
        assert!(EmailChannel::new(config.clone()).is_ok());
        assert!(config.callback_auth().is_some());
        assert!(!format!("{config:?}").contains("0123456789abcdef"));
    }

    #[test]
    fn callback_signatures_bind_id_timestamp_and_body() {
        let auth = EmailCallbackAuth::new("0123456789abcdef0123456789abcdef");
        let now = jiff::Timestamp::from_second(1_800_000_000).unwrap();
        let at = now.as_second();
        let body = br#"{"events":[]}"#;
        let signature = auth.sign("msg_1", at, body);
        assert!(signature.starts_with("v1,"), "{signature}");
        let ts = at.to_string();
        assert_eq!(auth.verify("msg_1", &ts, &signature, body, now), Ok(at));
        assert_eq!(
            auth.verify(
                " msg_1 ",
                &format!(" {ts} "),
                &format!("v1,AAAA {signature}"),
                body,
                now
            ),
            Ok(at),
            "surrounding blanks and further signatures are accepted"
        );
        let invalid = Err(CallbackRefusal::InvalidSignature);
        assert_eq!(
            auth.verify("msg_1", &ts, &signature, br#"{"events":[{}]}"#, now),
            invalid
        );
        assert_eq!(auth.verify("msg_2", &ts, &signature, body, now), invalid);
        assert_eq!(
            auth.verify("msg_1", &(at + 1).to_string(), &signature, body, now),
            invalid
        );
        for (id, timestamp, signature) in [
            ("", ts.as_str(), signature.as_str()),
            ("msg_1", "", signature.as_str()),
            ("msg_1", "soon", signature.as_str()),
            ("msg_1", ts.as_str(), ""),
            ("msg_1", ts.as_str(), "v1,"),
            ("msg_1", ts.as_str(), &signature[3..]),
            ("msg_1", ts.as_str(), "v2,AAAA"),
        ] {
            assert_eq!(
                auth.verify(id, timestamp, signature, body, now),
                invalid,
                "{id:?} {timestamp:?} {signature:?}"
            );
        }
        let other = EmailCallbackAuth::new("another secret of at least 32 bytes!");
        assert_eq!(other.verify("msg_1", &ts, &signature, body, now), invalid);
        assert!(!format!("{auth:?}").contains("0123"));
    }

    #[test]
    fn callback_timestamps_are_checked_both_ways() {
        let auth = EmailCallbackAuth::new("0123456789abcdef0123456789abcdef");
        let now = jiff::Timestamp::from_second(1_800_000_000).unwrap();
        let tolerance = i64::try_from(CALLBACK_TOLERANCE.as_secs()).unwrap();
        let check = |at: i64| {
            let signature = auth.sign("msg", at, b"{}");
            auth.verify("msg", &at.to_string(), &signature, b"{}", now)
        };
        let now_s = now.as_second();
        assert_eq!(check(now_s - tolerance), Ok(now_s - tolerance));
        assert_eq!(check(now_s + tolerance), Ok(now_s + tolerance));
        for at in [
            now_s - tolerance - 1,
            now_s + tolerance + 1,
            0,
            i64::MIN,
            i64::MAX,
        ] {
            assert!(
                matches!(check(at), Err(CallbackRefusal::StaleTimestamp { timestamp, .. }) if timestamp == at),
                "{at}"
            );
        }
        let message = check(now_s - 3600).unwrap_err().to_string();
        assert!(
            message.contains("3600 s") && message.contains("300 s"),
            "{message}"
        );
    }

    #[test]
    fn standard_webhooks_secrets_are_decoded() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let auth = EmailCallbackAuth::new(secret);
        let key = crate::channels::webhook::decode_secret(secret).unwrap();
        assert_eq!(
            auth.sign("msg_1", 1_614_265_330, b"{}"),
            crate::channels::webhook::sign(&key, "msg_1", 1_614_265_330, b"{}")
        );
    }

    #[test]
    fn invalid_recipient_mapping_follows_enhanced_codes() {
        assert!(recipient_is_invalid("550", "5.1.1 <a@b>: user unknown"));
        assert!(recipient_is_invalid("550", "no such user"));
        assert!(recipient_is_invalid("553", "mailbox name not allowed"));
        assert!(recipient_is_invalid("550", "5.2.1 mailbox disabled"));
        assert!(!recipient_is_invalid(
            "550",
            "5.7.1 message refused as spam"
        ));
        assert!(!recipient_is_invalid(
            "553",
            "5.1.8 sender domain does not exist"
        ));
        assert!(!recipient_is_invalid("552", "message too big"));
        assert!(!recipient_is_invalid("554", "transaction failed"));
    }

    #[tokio::test]
    async fn config_is_checked() {
        assert!(EmailChannel::new(config()).is_ok());
        let err = EmailChannel::new(EmailConfig {
            from: "not a mailbox".to_owned(),
            ..config()
        })
        .unwrap_err();
        assert_eq!(err.setting, "email.from");
        let err = EmailChannel::new(EmailConfig {
            username: Some("u".to_owned()),
            ..config()
        })
        .unwrap_err();
        assert_eq!(err.setting, "email.username");
        assert!(
            EmailChannel::new(EmailConfig {
                tls: EmailTls::StartTls,
                ..config()
            })
            .is_ok()
        );
    }

    #[test]
    fn config_file_section_parses_and_rejects_unknown_keys() {
        let parsed: EmailConfig = serde_json::from_value(serde_json::json!({
            "host": "smtp.example.com", "tls": "starttls", "from": "n@example.com", "timeout": "10s"
        }))
        .unwrap();
        assert_eq!(parsed.tls, EmailTls::StartTls);
        assert_eq!(parsed.timeout, Duration::from_secs(10));
        assert_eq!(parsed.pool_max_size, 4);
        let unknown = serde_json::from_value::<EmailConfig>(serde_json::json!({
            "host": "h", "tls": "none", "from": "n@example.com", "hots": "x"
        }));
        assert!(unknown.is_err());
        let debug = format!(
            "{:?}",
            EmailConfig {
                password: Some("hunter2".to_owned()),
                ..config()
            }
        );
        assert!(!debug.contains("hunter2"));
    }

    #[tokio::test]
    async fn message_has_both_parts_and_unsubscribe_headers() {
        let channel = EmailChannel::new(config()).unwrap();
        let message = OutboundMessage {
            delivery_id: "d-1".to_owned(),
            subject: "Payment failed".to_owned(),
            text_body: "text".to_owned(),
            html_body: "<p>html</p>".to_owned(),
            unsubscribe_url: Some("https://nudge.example/u/tok".to_owned()),
            ..OutboundMessage::default()
        };
        let to: Mailbox = "a@example.com".parse().unwrap();
        let built = channel.build(&message, to).unwrap();
        let raw = String::from_utf8(built.formatted()).unwrap();
        assert!(
            raw.contains("List-Unsubscribe: <https://nudge.example/u/tok>"),
            "{raw}"
        );
        assert!(raw.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click"));
        assert!(raw.contains("Message-ID: <d-1@nudge.example>"));
        assert!(raw.contains("multipart/alternative"));
    }
}
