//! The FCM channel: one call to Firebase Cloud Messaging's HTTP v1 API per
//! send, authorised by a Google service account.
//!
//! Each send is `POST {base_url}/v1/projects/{project_id}/messages:send`
//! with `Authorization: Bearer <access token>` and the JSON body
//! `{"message": {...}}`:
//! * `token`: the recipient's device token.
//! * `notification`: `title` from the subject, `body` from the text body
//!   (an empty one is left out). A message with neither is
//!   [`SendError::Permanent`] without a request.
//! * `data`: the message's `data` flattened to strings, as FCM requires:
//!   the top-level keys of an object, string values as they are, any other
//!   value (numbers, booleans, `null`, arrays, objects) JSON-encoded; data
//!   that is not an object goes under the key `data`. Keys FCM reserves
//!   (`from`, `notification`, `message_type`, anything starting with
//!   `google` or `gcm`, the empty key) are left out: FCM would refuse the
//!   whole message for them. [`DELIVERY_ID_KEY`] carries the delivery id,
//!   the same on every attempt, so the app can drop duplicates;
//!   `nudge_notification_id` and `nudge_type` come along too. These three
//!   replace data keys of the same name.
//! * `android.priority`: `high`, so the notification is shown at once
//!   instead of waiting for the device to wake up.
//!
//! # Access tokens
//!
//! The access token comes from the OAuth2 JWT bearer grant (RFC 7523) as
//! Google documents it for service accounts: a JWT signed RS256 with the
//! account's private key (`kid` its `private_key_id`; `iss` its
//! `client_email`, `scope` [`SCOPE`], `aud` the token URL, valid for an
//! hour) is posted to the token URL as
//! `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=…`.
//! The token is cached and shared by all sends; it is refreshed
//! [`REFRESH_MARGIN`] before it expires (counted from when it was asked
//! for), by one send while the others wait for it. A `401` from FCM drops
//! it, so the next send asks for a new one. A token that lives no longer
//! than the margin is used for one send only.
//!
//! # Classification
//!
//! FCM answers errors as `{"error": {"code", "message", "status",
//! "details": [{"@type": "….FcmError", "errorCode": "UNREGISTERED"}]}}`;
//! the `errorCode` decides, then the HTTP status.
//!
//! | answer | result |
//! |---|---|
//! | `2xx` | receipt; the answer's `name` (`projects/…/messages/0:…`) is the provider message id |
//! | `UNREGISTERED` (`404`): the app was uninstalled or the token expired | [`SendError::InvalidRecipient`] |
//! | `SENDER_ID_MISMATCH` (`403`): the token belongs to another Firebase project | [`SendError::InvalidRecipient`] |
//! | `INVALID_ARGUMENT` (`400`) saying the *registration token* is invalid (message, or a `BadRequest` field violation on `message.token`) | [`SendError::InvalidRecipient`] |
//! | other `INVALID_ARGUMENT` (payload too big, bad data key…) | [`SendError::Permanent`] |
//! | `THIRD_PARTY_AUTH_ERROR` (`401`): the project's APNs or web push credentials are bad | [`SendError::Permanent`] |
//! | `QUOTA_EXCEEDED` (`429`), `UNAVAILABLE` (`503`), `INTERNAL` (`500`) | [`SendError::Retriable`], with `Retry-After` (seconds or HTTP date) |
//! | other `401` (`UNAUTHENTICATED`: the access token expired or was revoked) | [`SendError::Retriable`]; the cached token is dropped |
//! | other `408`, `429`, `5xx`, connect error, timeout | [`SendError::Retriable`] |
//! | other `4xx` (`403 PERMISSION_DENIED`, `404` unknown project…), `1xx`/`3xx` (redirects are not followed) | [`SendError::Permanent`] |
//! | recipient not a device token, message with neither title nor body | [`SendError::Permanent`], no request |
//! | empty device token | [`SendError::InvalidRecipient`], no request |
//!
//! `INVALID_ARGUMENT` is FCM's answer both for a malformed token and for a
//! bad payload, and deactivating a working device over a payload problem
//! would silently stop all its pushes, while keeping a bad token costs one
//! failed attempt per delivery. So only an answer that names the token is
//! taken as an invalid recipient.
//!
//! Getting the access token can fail first:
//!
//! | token endpoint's answer | result |
//! |---|---|
//! | `408`, `429`, `5xx`, connect error, timeout | [`SendError::Retriable`], with `Retry-After` |
//! | other status (`400`/`401` `invalid_grant`, `invalid_client`: wrong key, deleted account, clock far off) | [`SendError::Permanent`]: a configuration problem |
//! | `2xx` without an access token, or a token type other than `Bearer` | [`SendError::Permanent`]: the token URL is not Google's |
//!
//! A timeout after FCM accepted the message but before its answer arrived
//! is reported as retriable, so a retry can show the notification twice;
//! [`DELIVERY_ID_KEY`] lets the app notice.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD as BASE64, URL_SAFE_NO_PAD as BASE64URL};
use reqwest::StatusCode;
use reqwest::header::ACCEPT;
use ring::rand::SystemRandom;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use serde::Deserialize;
use serde_json::{Value, json};

use super::email::{humantime_duration, recipient_kind, shorten};
use super::webhook::{api_url, http_url, retry_after, transport_error};
use super::{Channel, ChannelKind, OutboundMessage, Recipient, SendError, SendReceipt};
use crate::config::ConfigError;

/// The OAuth2 scope that allows sending FCM messages.
pub const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";

/// The `grant_type` of the JWT bearer grant (RFC 7523 §2.1).
pub const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// Google's token endpoint, when neither the config nor the service
/// account names one.
pub const DEFAULT_TOKEN_URL: &str = "https://oauth2.googleapis.com/token";

/// The data key that carries the delivery id.
pub const DELIVERY_ID_KEY: &str = "nudge_delivery_id";

/// How long before its expiry a cached access token is replaced, so that
/// a token never expires on its way to FCM.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(60);

/// Lifetime asked for in the JWT assertion: Google's maximum.
const ASSERTION_LIFETIME_SECS: i64 = 3600;

/// Assumed when the token endpoint does not say how long a token lives:
/// Google's tokens live an hour, and a `401` would catch a shorter one.
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// The `fcm` section of the config file.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FcmConfig {
    /// Path of the service account's JSON key file, as downloaded from the
    /// Google Cloud console. Exactly one of this and `service_account_json`.
    #[serde(default)]
    pub service_account_file: Option<PathBuf>,
    /// The service account's JSON key itself; holds the private key, so it
    /// is never printed.
    #[serde(default)]
    pub service_account_json: Option<String>,
    /// The Firebase project to send as; the service account's
    /// `project_id` unless set.
    #[serde(default)]
    pub project_id: Option<String>,
    /// The API's base URL, `https://fcm.googleapis.com` unless set (tests).
    #[serde(default = "default_base_url")]
    pub base_url: String,
    /// Where access tokens come from: the service account's `token_uri`
    /// unless set, else [`DEFAULT_TOKEN_URL`] (tests).
    #[serde(default)]
    pub token_url: Option<String>,
    /// Limit for each request (token or send), connect to last byte, e.g.
    /// `"10s"`.
    #[serde(default = "default_timeout", with = "humantime_duration")]
    pub timeout: Duration,
}

fn default_base_url() -> String {
    "https://fcm.googleapis.com".to_owned()
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

impl std::fmt::Debug for FcmConfig {
    // By hand so the private key never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FcmConfig")
            .field("service_account_file", &self.service_account_file)
            .field(
                "service_account_json",
                &self.service_account_json.as_ref().map(|_| "<redacted>"),
            )
            .field("project_id", &self.project_id)
            .field("base_url", &self.base_url)
            .field("token_url", &self.token_url)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// The fields of a service account key file this channel reads; the
/// others (`client_id`, `auth_uri`…) are ignored.
#[derive(Deserialize)]
struct ServiceAccount {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    project_id: Option<String>,
    #[serde(default)]
    private_key_id: Option<String>,
    private_key: String,
    client_email: String,
    #[serde(default)]
    token_uri: Option<String>,
}

const FILE_SETTING: &str = "fcm.service_account_file";
const JSON_SETTING: &str = "fcm.service_account_json";

/// Reads and parses the one configured service account, with the setting
/// it came from (for later errors about its content).
fn load_service_account(
    file: Option<&Path>,
    json: Option<&str>,
) -> Result<(ServiceAccount, &'static str), ConfigError> {
    let (text, setting) = match (file, json) {
        (Some(path), None) => {
            let text = std::fs::read_to_string(path).map_err(|err| ConfigError {
                setting: FILE_SETTING,
                message: format!("cannot read {}: {err}", path.display()),
            })?;
            (text, FILE_SETTING)
        }
        (None, Some(json)) => (json.to_owned(), JSON_SETTING),
        (Some(_), Some(_)) => {
            return Err(ConfigError {
                setting: FILE_SETTING,
                message: "set either service_account_file or service_account_json, not both"
                    .to_owned(),
            });
        }
        (None, None) => {
            return Err(ConfigError {
                setting: FILE_SETTING,
                message: "one of service_account_file and service_account_json must be set"
                    .to_owned(),
            });
        }
    };
    // serde_json's messages name fields and positions, never string
    // values, so the private key cannot leak into the error.
    let account: ServiceAccount = serde_json::from_str(&text).map_err(|err| ConfigError {
        setting,
        message: format!("is not a service account JSON key: {err}"),
    })?;
    if let Some(kind) = account.kind.as_deref().filter(|k| *k != "service_account") {
        return Err(ConfigError {
            setting,
            message: format!("is a {kind:?} credential, not a service account key"),
        });
    }
    if account.client_email.trim().is_empty() {
        return Err(ConfigError {
            setting,
            message: "has an empty client_email".to_owned(),
        });
    }
    Ok((account, setting))
}

/// The label and DER bytes of the first PEM block in `text`.
fn decode_pem(text: &str) -> Result<(String, Vec<u8>), String> {
    // A key pasted through an environment variable or a shell often has
    // its newlines as literal `\n`; base64 has no backslash, so this is safe.
    let text = text.replace("\\n", "\n");
    let (_, rest) = text
        .split_once("-----BEGIN ")
        .ok_or("has no PEM block (-----BEGIN …-----)")?;
    let (label, rest) = rest
        .split_once("-----")
        .ok_or("has a malformed BEGIN line")?;
    let (body, _) = rest
        .split_once(&format!("-----END {label}-----"))
        .ok_or_else(|| format!("has no END line for its {label} block"))?;
    let encoded: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let der = BASE64
        .decode(encoded)
        .map_err(|err| format!("has a {label} block that is not base64: {err}"))?;
    Ok((label.to_owned(), der))
}

/// Parses the service account's `private_key`: an unencrypted PKCS#8 RSA
/// key, as Google issues them (PKCS#1 `RSA PRIVATE KEY` is accepted too).
fn parse_private_key(pem: &str) -> Result<RsaKeyPair, String> {
    let (label, der) = decode_pem(pem)?;
    let parsed = match label.as_str() {
        "PRIVATE KEY" => RsaKeyPair::from_pkcs8(&der),
        "RSA PRIVATE KEY" => RsaKeyPair::from_der(&der),
        other => {
            return Err(format!(
                "is a {other} PEM block, not an unencrypted RSA private key (BEGIN PRIVATE KEY)"
            ));
        }
    };
    parsed.map_err(|err| format!("is not a usable RSA private key: {err}"))
}

/// Whether `id` can go into the API path as it is: Google project ids are
/// lowercase letters, digits and `-`; old ones carry a `domain:` prefix.
fn is_project_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':' | b'_'))
}

/// An access token and when to stop using it.
struct AccessToken {
    value: String,
    refresh_at: Instant,
}

/// Sends push notifications through FCM as one service account.
pub struct FcmChannel {
    client: reqwest::Client,
    send_url: reqwest::Url,
    token_url: reqwest::Url,
    client_email: String,
    key_id: Option<String>,
    key: RsaKeyPair,
    rng: SystemRandom,
    /// The cached access token. The lock is held while a new one is
    /// fetched, so concurrent sends wait for that one instead of each
    /// fetching their own.
    token: tokio::sync::Mutex<Option<AccessToken>>,
}

impl std::fmt::Debug for FcmChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FcmChannel")
            .field("send_url", &self.send_url.as_str())
            .field("token_url", &self.token_url.as_str())
            .field("client_email", &self.client_email)
            .finish_non_exhaustive()
    }
}

impl FcmChannel {
    pub fn new(config: FcmConfig) -> Result<Self, ConfigError> {
        let FcmConfig {
            service_account_file,
            service_account_json,
            project_id,
            base_url,
            token_url,
            timeout,
        } = config;
        let (account, account_setting) = load_service_account(
            service_account_file.as_deref(),
            service_account_json.as_deref(),
        )?;
        let key = parse_private_key(&account.private_key).map_err(|message| ConfigError {
            setting: account_setting,
            message: format!("private_key {message}"),
        })?;
        let project_id = project_id
            .or(account.project_id)
            .filter(|id| !id.trim().is_empty())
            .ok_or_else(|| ConfigError {
                setting: "fcm.project_id",
                message: "is not set and the service account has no project_id".to_owned(),
            })?;
        if !is_project_id(&project_id) {
            return Err(ConfigError {
                setting: "fcm.project_id",
                message: format!("{project_id:?} is not a Google Cloud project id"),
            });
        }
        if timeout.is_zero() {
            return Err(ConfigError {
                setting: "fcm.timeout",
                message: "must be longer than zero".to_owned(),
            });
        }
        let send_url = api_url(
            "fcm.base_url",
            &base_url,
            &format!("/v1/projects/{project_id}/messages:send"),
        )?;
        let token_url = match (token_url, account.token_uri) {
            (Some(url), _) => http_url("fcm.token_url", &url)?,
            (None, Some(uri)) => http_url(account_setting, &uri)?,
            (None, None) => http_url("fcm.token_url", DEFAULT_TOKEN_URL)?,
        };
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("nudge-fcm/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|err| ConfigError {
                setting: "fcm",
                message: format!("cannot build the HTTP client: {err}"),
            })?;
        Ok(FcmChannel {
            client,
            send_url,
            token_url,
            client_email: account.client_email,
            key_id: account.private_key_id.filter(|id| !id.is_empty()),
            key,
            rng: SystemRandom::new(),
            token: tokio::sync::Mutex::new(None),
        })
    }

    /// A valid access token: the cached one, or a new one.
    async fn access_token(&self) -> Result<String, SendError> {
        let mut cached = self.token.lock().await;
        if let Some(token) = cached.as_ref().filter(|t| Instant::now() < t.refresh_at) {
            return Ok(token.value.clone());
        }
        let fresh = self.fetch_token().await?;
        let value = fresh.value.clone();
        *cached = Some(fresh);
        Ok(value)
    }

    /// Drops `rejected` from the cache, unless another send has already
    /// replaced it.
    async fn forget_token(&self, rejected: &str) {
        let mut cached = self.token.lock().await;
        if cached.as_ref().is_some_and(|t| t.value == rejected) {
            *cached = None;
        }
    }

    /// Asks the token endpoint for a new access token (the module doc).
    async fn fetch_token(&self) -> Result<AccessToken, SendError> {
        let asked_at = Instant::now();
        let now = jiff::Timestamp::now();
        let assertion = jwt_assertion(
            &self.key,
            &self.rng,
            self.key_id.as_deref(),
            &self.client_email,
            self.token_url.as_str(),
            now.as_second(),
        )
        .map_err(|_| SendError::Permanent {
            answer: "cannot sign the access token request with the service account key".to_owned(),
        })?;
        let result = self
            .client
            .post(self.token_url.clone())
            .header(ACCEPT, "application/json")
            .form(&[
                ("grant_type", JWT_BEARER_GRANT),
                ("assertion", assertion.as_str()),
            ])
            .send()
            .await;
        let response = result.map_err(|err| token_failure(transport_error(&err)))?;
        let status = response.status();
        let retry_after = retry_after(response.headers(), now);
        // Unlike a send's, this answer's body matters: losing it on the way
        // is a network failure.
        let text = super::answer::read_capped(response)
            .await
            .map_err(|err| token_failure(transport_error(&err)))?;
        let grant = classify_token_response(status, &text, retry_after).map_err(token_failure)?;
        Ok(AccessToken {
            value: grant.access_token,
            refresh_at: asked_at + grant.lifetime.saturating_sub(REFRESH_MARGIN),
        })
    }
}

/// The signed JWT assertion of the bearer grant for a request at unix time
/// `now` (RFC 7523 §3, with Google's `scope` claim).
fn jwt_assertion(
    key: &RsaKeyPair,
    rng: &SystemRandom,
    key_id: Option<&str>,
    client_email: &str,
    token_url: &str,
    now: i64,
) -> Result<String, ring::error::Unspecified> {
    let mut header = json!({"alg": "RS256", "typ": "JWT"});
    if let Some(key_id) = key_id {
        header["kid"] = json!(key_id);
    }
    let claims = json!({
        "iss": client_email,
        "scope": SCOPE,
        "aud": token_url,
        "iat": now,
        "exp": now + ASSERTION_LIFETIME_SECS,
    });
    let signing_input = format!(
        "{}.{}",
        BASE64URL.encode(header.to_string()),
        BASE64URL.encode(claims.to_string())
    );
    let mut signature = vec![0; key.public().modulus_len()];
    key.sign(
        &RSA_PKCS1_SHA256,
        rng,
        signing_input.as_bytes(),
        &mut signature,
    )?;
    Ok(format!("{signing_input}.{}", BASE64URL.encode(signature)))
}

/// Marks a failure as the token request's, for the attempt log.
fn token_failure(err: SendError) -> SendError {
    let answer = |answer: &str| shorten(format!("access token request: {answer}"));
    match err {
        SendError::Retriable {
            answer: text,
            retry_after,
        } => SendError::Retriable {
            answer: answer(&text),
            retry_after,
        },
        SendError::Permanent { answer: text } | SendError::InvalidRecipient { answer: text } => {
            SendError::Permanent {
                answer: answer(&text),
            }
        }
    }
}

/// What the token endpoint granted.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenGrant {
    pub access_token: String,
    pub lifetime: Duration,
}

/// The token endpoint's answer: a token on success, an OAuth error else.
#[derive(Debug, Default, Deserialize)]
struct TokenAnswer {
    access_token: Option<String>,
    expires_in: Option<u64>,
    token_type: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// Maps the token endpoint's answer to a grant or a [`SendError`] (the
/// module doc's second table).
pub fn classify_token_response(
    status: StatusCode,
    body: &str,
    retry_after: Option<Duration>,
) -> Result<TokenGrant, SendError> {
    let parsed: TokenAnswer = serde_json::from_str(body).unwrap_or_default();
    if status.is_success() {
        let bearer = parsed
            .token_type
            .as_deref()
            .is_none_or(|kind| kind.eq_ignore_ascii_case("bearer"));
        return match parsed.access_token.filter(|token| !token.is_empty()) {
            Some(access_token) if bearer => Ok(TokenGrant {
                access_token,
                lifetime: parsed
                    .expires_in
                    .map_or(DEFAULT_TOKEN_LIFETIME, Duration::from_secs),
            }),
            _ => Err(SendError::Permanent {
                answer: format!("{status} without a bearer access token"),
            }),
        };
    }
    let answer = match parsed.error {
        Some(error) => format!(
            "{status} {error}: {}",
            parsed.error_description.unwrap_or_default()
        ),
        None => format!("{status} {}", body.trim()),
    };
    let answer = shorten(answer.trim_end().trim_end_matches(':').to_owned());
    match status.as_u16() {
        408 | 429 | 500..=599 => Err(SendError::Retriable {
            answer,
            retry_after,
        }),
        _ => Err(SendError::Permanent { answer }),
    }
}

/// Whether FCM would refuse `key` as a data key.
fn is_reserved_data_key(key: &str) -> bool {
    key.is_empty()
        || matches!(key, "from" | "notification" | "message_type")
        || key.starts_with("google")
        || key.starts_with("gcm")
}

/// A data value as FCM takes it: strings as they are, the rest as JSON.
fn data_value(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// The message's `data` map (the module doc).
pub fn fcm_data(message: &OutboundMessage) -> BTreeMap<String, String> {
    let mut data = BTreeMap::new();
    match &message.data {
        Value::Null => {}
        Value::Object(fields) => {
            for (key, value) in fields {
                if is_reserved_data_key(key) {
                    tracing::debug!(key, "fcm: data key reserved by FCM left out");
                    continue;
                }
                data.insert(key.clone(), data_value(value));
            }
        }
        other => {
            data.insert("data".to_owned(), data_value(other));
        }
    }
    data.insert(DELIVERY_ID_KEY.to_owned(), message.delivery_id.clone());
    data.insert(
        "nudge_notification_id".to_owned(),
        message.notification_id.clone(),
    );
    data.insert("nudge_type".to_owned(), message.notification_type.clone());
    data
}

/// The request body of `messages:send` for one device token.
pub fn fcm_request(message: &OutboundMessage, token: &str) -> Value {
    let mut notification = serde_json::Map::new();
    if !message.subject.trim().is_empty() {
        notification.insert("title".to_owned(), json!(message.subject));
    }
    if !message.text_body.trim().is_empty() {
        notification.insert("body".to_owned(), json!(message.text_body));
    }
    json!({
        "message": {
            "token": token,
            "notification": notification,
            "data": fcm_data(message),
            "android": {"priority": "high"},
        }
    })
}

#[async_trait]
impl Channel for FcmChannel {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Fcm
    }

    async fn send(
        &self,
        message: &OutboundMessage,
        recipient: &Recipient,
    ) -> Result<SendReceipt, SendError> {
        let Recipient::DeviceToken { token } = recipient else {
            return Err(SendError::Permanent {
                answer: format!(
                    "the fcm channel cannot send to {}",
                    recipient_kind(recipient)
                ),
            });
        };
        if token.trim().is_empty() {
            return Err(SendError::InvalidRecipient {
                answer: "the device token is empty".to_owned(),
            });
        }
        if message.subject.trim().is_empty() && message.text_body.trim().is_empty() {
            return Err(SendError::Permanent {
                answer: "the message has neither a subject nor a text body to show".to_owned(),
            });
        }
        let body = fcm_request(message, token);
        let access_token = self.access_token().await?;
        let now = jiff::Timestamp::now();
        let result = self
            .client
            .post(self.send_url.clone())
            .bearer_auth(&access_token)
            .json(&body)
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
        let outcome = classify_response(status, &text, retry_after);
        // A retriable 401 is exactly the rejected access token (see the
        // classification table).
        if status == StatusCode::UNAUTHORIZED && matches!(outcome, Err(SendError::Retriable { .. }))
        {
            self.forget_token(&access_token).await;
        }
        outcome
    }
}

/// FCM's error answer (the fields this channel reads).
#[derive(Debug, Default, Deserialize)]
struct ErrorAnswer {
    error: Option<GoogleError>,
}

#[derive(Debug, Default, Deserialize)]
struct GoogleError {
    #[serde(default)]
    message: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    details: Vec<ErrorDetail>,
}

/// One entry of `details`: an `FcmError` (`errorCode`) or a `BadRequest`
/// (`fieldViolations`); other kinds are read as neither.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct ErrorDetail {
    error_code: Option<String>,
    field_violations: Vec<FieldViolation>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct FieldViolation {
    field: String,
}

impl GoogleError {
    fn error_code(&self) -> Option<&str> {
        self.details
            .iter()
            .find_map(|detail| detail.error_code.as_deref())
    }

    /// Whether this `INVALID_ARGUMENT` is about the device token rather
    /// than the payload (see the module doc).
    fn blames_the_token(&self) -> bool {
        self.message
            .to_ascii_lowercase()
            .contains("registration token")
            || self.details.iter().any(|detail| {
                detail
                    .field_violations
                    .iter()
                    .any(|violation| violation.field == "message.token")
            })
    }
}

/// The success answer's message name.
#[derive(Debug, Default, Deserialize)]
struct SentAnswer {
    name: Option<String>,
}

/// Maps FCM's answer to a receipt or a [`SendError`] (the module doc's
/// table).
pub fn classify_response(
    status: StatusCode,
    body: &str,
    retry_after: Option<Duration>,
) -> Result<SendReceipt, SendError> {
    if status.is_success() {
        // Also without a name: the message was accepted, and sending it
        // again would show it twice.
        let name = serde_json::from_str::<SentAnswer>(body)
            .unwrap_or_default()
            .name
            .filter(|name| !name.is_empty());
        let answer = match &name {
            Some(name) => name.clone(),
            None => format!("{status} {}", body.trim()).trim_end().to_owned(),
        };
        return Ok(SendReceipt {
            provider_message_id: name,
            answer: shorten(answer),
        });
    }
    let error = serde_json::from_str::<ErrorAnswer>(body)
        .ok()
        .and_then(|answer| answer.error);
    let code = error.as_ref().and_then(GoogleError::error_code);
    let answer = match &error {
        Some(error) => {
            let name = code.unwrap_or(&error.status);
            format!("{status} {name}: {}", error.message)
        }
        None => format!("{status} {}", body.trim()),
    };
    let answer = shorten(answer.trim_end().trim_end_matches(':').to_owned());
    let blames_the_token = error.as_ref().is_some_and(GoogleError::blames_the_token);
    match (code, status.as_u16()) {
        (Some("UNREGISTERED" | "SENDER_ID_MISMATCH"), _) => {
            Err(SendError::InvalidRecipient { answer })
        }
        (Some("INVALID_ARGUMENT"), _) if blames_the_token => {
            Err(SendError::InvalidRecipient { answer })
        }
        (Some("THIRD_PARTY_AUTH_ERROR"), _) => Err(SendError::Permanent { answer }),
        (Some("QUOTA_EXCEEDED" | "UNAVAILABLE" | "INTERNAL"), _)
        | (_, 401 | 408 | 429 | 500..=599) => Err(SendError::Retriable {
            answer,
            retry_after,
        }),
        _ => Err(SendError::Permanent { answer }),
    }
}

#[cfg(test)]
mod tests {
    use ring::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};

    use super::*;

    const ACCOUNT: &str = include_str!("../../tests/fixtures/fcm-test-service-account.json");

    fn config() -> FcmConfig {
        FcmConfig {
            service_account_file: None,
            service_account_json: Some(ACCOUNT.to_owned()),
            project_id: None,
            base_url: default_base_url(),
            token_url: None,
            timeout: default_timeout(),
        }
    }

    fn account_with(change: impl FnOnce(&mut Value)) -> String {
        let mut account: Value = serde_json::from_str(ACCOUNT).unwrap();
        change(&mut account);
        account.to_string()
    }

    fn fcm_error(code: u16, status: &str, error_code: Option<&str>, message: &str) -> String {
        let mut details = vec![];
        if let Some(error_code) = error_code {
            details.push(json!({
                "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                "errorCode": error_code,
            }));
        }
        json!({"error": {"code": code, "message": message, "status": status, "details": details}})
            .to_string()
    }

    fn decode_part(part: &str) -> Value {
        serde_json::from_slice(&BASE64URL.decode(part).unwrap()).unwrap()
    }

    #[test]
    fn signs_the_jwt_assertion_google_expects() {
        let (account, _) = load_service_account(None, Some(ACCOUNT)).unwrap();
        let key = parse_private_key(&account.private_key).unwrap();
        let jwt = jwt_assertion(
            &key,
            &SystemRandom::new(),
            Some("kid-1"),
            "sa@p.iam.gserviceaccount.com",
            DEFAULT_TOKEN_URL,
            1_700_000_000,
        )
        .unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(
            decode_part(parts[0]),
            json!({"alg": "RS256", "typ": "JWT", "kid": "kid-1"})
        );
        assert_eq!(
            decode_part(parts[1]),
            json!({
                "iss": "sa@p.iam.gserviceaccount.com",
                "scope": SCOPE,
                "aud": DEFAULT_TOKEN_URL,
                "iat": 1_700_000_000,
                "exp": 1_700_003_600,
            })
        );
        let signature = BASE64URL.decode(parts[2]).unwrap();
        let public = UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, key.public().as_ref());
        let signed = format!("{}.{}", parts[0], parts[1]);
        assert!(public.verify(signed.as_bytes(), &signature).is_ok());
        assert!(public.verify(b"other", &signature).is_err());

        let unnamed = jwt_assertion(&key, &SystemRandom::new(), None, "a", "b", 0).unwrap();
        assert_eq!(
            decode_part(unnamed.split('.').next().unwrap()),
            json!({"alg": "RS256", "typ": "JWT"})
        );
    }

    #[test]
    fn decodes_pem_blocks() {
        let (account, _) = load_service_account(None, Some(ACCOUNT)).unwrap();
        let (label, der) = decode_pem(&account.private_key).unwrap();
        assert_eq!(label, "PRIVATE KEY");
        assert!(RsaKeyPair::from_pkcs8(&der).is_ok());
        // Newlines escaped once more, as environment variables carry them.
        let escaped = account.private_key.replace('\n', "\\n");
        assert!(parse_private_key(&escaped).is_ok());

        let errors = [
            ("", "no PEM block"),
            ("-----BEGIN PRIVATE KEY-----\nAAAA\n", "no END line"),
            (
                "-----BEGIN PRIVATE KEY-----\n!!\n-----END PRIVATE KEY-----",
                "not base64",
            ),
            (
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----",
                "not a usable RSA private key",
            ),
            (
                "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----",
                "EC PRIVATE KEY",
            ),
        ];
        for (pem, expected) in errors {
            let err = parse_private_key(pem).err().unwrap();
            assert!(err.contains(expected), "{pem:?}: {err}");
        }
    }

    #[test]
    fn flattens_data_to_strings() {
        let message = OutboundMessage {
            delivery_id: "d-1".to_owned(),
            notification_id: "n-1".to_owned(),
            notification_type: "payment_failed".to_owned(),
            data: json!({
                "text": "hi", "amount": 42, "ratio": 0.5, "flag": true, "none": null,
                "list": [1, "a"], "nested": {"a": {"b": 1}},
                "from": "x", "google.c": "x", "gcm.n": "x", "": "x",
                DELIVERY_ID_KEY: "forged",
            }),
            ..OutboundMessage::default()
        };
        let data = fcm_data(&message);
        let expected: BTreeMap<String, String> = [
            ("text", "hi"),
            ("amount", "42"),
            ("ratio", "0.5"),
            ("flag", "true"),
            ("none", "null"),
            ("list", r#"[1,"a"]"#),
            ("nested", r#"{"a":{"b":1}}"#),
            (DELIVERY_ID_KEY, "d-1"),
            ("nudge_notification_id", "n-1"),
            ("nudge_type", "payment_failed"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(data, expected);

        let scalar = OutboundMessage {
            data: json!([1, 2]),
            ..OutboundMessage::default()
        };
        assert_eq!(fcm_data(&scalar)["data"], "[1,2]");
        let none = OutboundMessage::default();
        assert_eq!(fcm_data(&none).len(), 3);
    }

    #[test]
    fn builds_the_request_body() {
        let message = OutboundMessage {
            delivery_id: "d-1".to_owned(),
            subject: "Title".to_owned(),
            text_body: String::new(),
            ..OutboundMessage::default()
        };
        let body = fcm_request(&message, "device-1");
        assert_eq!(body["message"]["token"], "device-1");
        assert_eq!(body["message"]["notification"], json!({"title": "Title"}));
        assert_eq!(body["message"]["android"], json!({"priority": "high"}));
        assert_eq!(body["message"]["data"][DELIVERY_ID_KEY], "d-1");
    }

    #[test]
    fn classifies_every_fcm_answer() {
        let ok = classify_response(
            StatusCode::OK,
            r#"{"name":"projects/p/messages/0:1500415314455276%31bd1c96"}"#,
            None,
        )
        .unwrap();
        assert_eq!(
            ok.provider_message_id.as_deref(),
            Some("projects/p/messages/0:1500415314455276%31bd1c96")
        );
        assert_eq!(ok.answer, "projects/p/messages/0:1500415314455276%31bd1c96");
        let odd = classify_response(StatusCode::OK, "ok", None).unwrap();
        assert_eq!(odd.provider_message_id, None);
        assert_eq!(odd.answer, "200 OK ok");

        let wait = Some(Duration::from_secs(7));
        let invalid_recipient = [
            (
                404,
                "NOT_FOUND",
                Some("UNREGISTERED"),
                "Requested entity was not found.",
            ),
            (
                403,
                "PERMISSION_DENIED",
                Some("SENDER_ID_MISMATCH"),
                "SenderId mismatch",
            ),
            (
                400,
                "INVALID_ARGUMENT",
                Some("INVALID_ARGUMENT"),
                "The registration token is not a valid FCM registration token",
            ),
        ];
        let permanent = [
            (
                400,
                "INVALID_ARGUMENT",
                Some("INVALID_ARGUMENT"),
                "Message is too big",
            ),
            (
                400,
                "INVALID_ARGUMENT",
                None,
                "Invalid JSON payload received.",
            ),
            (
                401,
                "UNAUTHENTICATED",
                Some("THIRD_PARTY_AUTH_ERROR"),
                "Auth error from APNS or Web Push Service",
            ),
            (
                403,
                "PERMISSION_DENIED",
                None,
                "Permission 'cloudmessaging.messages.create' denied",
            ),
            (404, "NOT_FOUND", None, "Requested entity was not found."),
        ];
        let retriable = [
            (
                429,
                "RESOURCE_EXHAUSTED",
                Some("QUOTA_EXCEEDED"),
                "Quota exceeded",
            ),
            (
                503,
                "UNAVAILABLE",
                Some("UNAVAILABLE"),
                "The service is currently unavailable.",
            ),
            (500, "INTERNAL", Some("INTERNAL"), "Internal error"),
            (
                401,
                "UNAUTHENTICATED",
                None,
                "Request had invalid authentication credentials.",
            ),
            (502, "", None, ""),
        ];
        for (code, status, error_code, message) in invalid_recipient {
            let body = fcm_error(code, status, error_code, message);
            let status = StatusCode::from_u16(code).unwrap();
            let err = classify_response(status, &body, None).unwrap_err();
            assert!(matches!(err, SendError::InvalidRecipient { .. }), "{err:?}");
        }
        for (code, status, error_code, message) in permanent {
            let body = fcm_error(code, status, error_code, message);
            let status = StatusCode::from_u16(code).unwrap();
            let err = classify_response(status, &body, wait).unwrap_err();
            assert!(matches!(err, SendError::Permanent { .. }), "{err:?}");
        }
        for (code, status, error_code, message) in retriable {
            let body = fcm_error(code, status, error_code, message);
            let status = StatusCode::from_u16(code).unwrap();
            let err = classify_response(status, &body, wait).unwrap_err();
            assert!(
                matches!(err, SendError::Retriable { retry_after, .. } if retry_after == wait),
                "{err:?}"
            );
        }

        // The field violation alone names the token.
        let violation = json!({"error": {
        "code": 400, "message": "Request contains an invalid argument.",
        "status": "INVALID_ARGUMENT",
        "details": [
            {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
             "errorCode": "INVALID_ARGUMENT"},
            {"@type": "type.googleapis.com/google.rpc.BadRequest",
             "fieldViolations": [{"field": "message.token", "description": "Invalid registration token"}]},
        ]}});
        let err =
            classify_response(StatusCode::BAD_REQUEST, &violation.to_string(), None).unwrap_err();
        assert!(matches!(err, SendError::InvalidRecipient { .. }), "{err:?}");

        // The answer names the error code, else the status.
        let body = fcm_error(404, "NOT_FOUND", Some("UNREGISTERED"), "gone");
        let err = classify_response(StatusCode::NOT_FOUND, &body, None).unwrap_err();
        assert_eq!(err.answer(), "404 Not Found UNREGISTERED: gone");
        let body = fcm_error(403, "PERMISSION_DENIED", None, "denied");
        let err = classify_response(StatusCode::FORBIDDEN, &body, None).unwrap_err();
        assert_eq!(err.answer(), "403 Forbidden PERMISSION_DENIED: denied");

        for (status, body) in [
            (StatusCode::BAD_REQUEST, "not json"),
            (StatusCode::FOUND, ""),
        ] {
            let err = classify_response(status, body, None).unwrap_err();
            assert!(matches!(err, SendError::Permanent { .. }), "{err:?}");
        }
        let err = classify_response(StatusCode::REQUEST_TIMEOUT, "", None).unwrap_err();
        assert!(matches!(err, SendError::Retriable { .. }), "{err:?}");
    }

    #[test]
    fn classifies_token_endpoint_answers() {
        let grant = classify_token_response(
            StatusCode::OK,
            r#"{"access_token":"ya29.x","expires_in":3599,"token_type":"Bearer"}"#,
            None,
        )
        .unwrap();
        assert_eq!(
            grant,
            TokenGrant {
                access_token: "ya29.x".to_owned(),
                lifetime: Duration::from_secs(3599),
            }
        );
        let no_expiry =
            classify_token_response(StatusCode::OK, r#"{"access_token":"t"}"#, None).unwrap();
        assert_eq!(no_expiry.lifetime, DEFAULT_TOKEN_LIFETIME);

        for body in [
            "{}",
            "<html>",
            r#"{"access_token":""}"#,
            r#"{"access_token":"t","token_type":"mac"}"#,
        ] {
            let err = classify_token_response(StatusCode::OK, body, None).unwrap_err();
            assert!(
                matches!(err, SendError::Permanent { .. }),
                "{body}: {err:?}"
            );
        }
        let refused = classify_token_response(
            StatusCode::BAD_REQUEST,
            r#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#,
            None,
        )
        .unwrap_err();
        assert_eq!(
            refused,
            SendError::Permanent {
                answer: "400 Bad Request invalid_grant: Invalid JWT Signature.".to_owned()
            }
        );
        let err = classify_token_response(
            StatusCode::UNAUTHORIZED,
            r#"{"error":"invalid_client"}"#,
            None,
        )
        .unwrap_err();
        assert!(matches!(err, SendError::Permanent { .. }), "{err:?}");
        let wait = Some(Duration::from_secs(2));
        for status in [
            StatusCode::INTERNAL_SERVER_ERROR,
            StatusCode::SERVICE_UNAVAILABLE,
            StatusCode::TOO_MANY_REQUESTS,
        ] {
            let err = classify_token_response(status, "", wait).unwrap_err();
            assert!(
                matches!(err, SendError::Retriable { retry_after, .. } if retry_after == wait),
                "{err:?}"
            );
        }
        // Token failures are marked as such and never blame the recipient.
        let marked = token_failure(SendError::InvalidRecipient {
            answer: "x".to_owned(),
        });
        assert_eq!(
            marked,
            SendError::Permanent {
                answer: "access token request: x".to_owned()
            }
        );
    }

    #[test]
    fn config_is_checked_and_the_key_hidden() {
        let channel = FcmChannel::new(config()).unwrap();
        assert_eq!(
            channel.send_url.as_str(),
            "https://fcm.googleapis.com/v1/projects/nudge-test/messages:send"
        );
        assert_eq!(channel.token_url.as_str(), DEFAULT_TOKEN_URL);
        assert_eq!(
            channel.key_id.as_deref(),
            Some("0123456789abcdef0123456789abcdef01234567")
        );

        let custom = FcmChannel::new(FcmConfig {
            project_id: Some("other-project".to_owned()),
            base_url: "http://127.0.0.1:9/prefix/".to_owned(),
            token_url: Some("http://127.0.0.1:9/token".to_owned()),
            ..config()
        })
        .unwrap();
        assert_eq!(
            custom.send_url.as_str(),
            "http://127.0.0.1:9/prefix/v1/projects/other-project/messages:send"
        );
        assert_eq!(custom.token_url.as_str(), "http://127.0.0.1:9/token");

        let bad = |config: FcmConfig| FcmChannel::new(config).unwrap_err();
        let err = bad(FcmConfig {
            service_account_json: None,
            ..config()
        });
        assert_eq!(err.setting, FILE_SETTING);
        let err = bad(FcmConfig {
            service_account_file: Some("/nonexistent/sa.json".into()),
            ..config()
        });
        assert!(err.message.contains("not both"), "{err}");
        let err = bad(FcmConfig {
            service_account_json: Some("{".to_owned()),
            ..config()
        });
        assert_eq!(err.setting, JSON_SETTING);
        let err = bad(FcmConfig {
            service_account_json: Some(account_with(|a| a["type"] = json!("authorized_user"))),
            ..config()
        });
        assert!(err.message.contains("authorized_user"), "{err}");
        let err = bad(FcmConfig {
            service_account_json: Some(account_with(|a| a["private_key"] = json!("nope"))),
            ..config()
        });
        assert_eq!(err.setting, JSON_SETTING);
        assert!(err.message.contains("private_key"), "{err}");
        let err = bad(FcmConfig {
            service_account_json: Some(account_with(|a| {
                a.as_object_mut().unwrap().remove("project_id");
            })),
            ..config()
        });
        assert_eq!(err.setting, "fcm.project_id");
        let err = bad(FcmConfig {
            project_id: Some("a/b".to_owned()),
            ..config()
        });
        assert_eq!(err.setting, "fcm.project_id");
        let err = bad(FcmConfig {
            base_url: "ftp://x".to_owned(),
            ..config()
        });
        assert_eq!(err.setting, "fcm.base_url");
        let err = bad(FcmConfig {
            token_url: Some("nope".to_owned()),
            ..config()
        });
        assert_eq!(err.setting, "fcm.token_url");
        let err = bad(FcmConfig {
            timeout: Duration::ZERO,
            ..config()
        });
        assert_eq!(err.setting, "fcm.timeout");

        let printed = format!("{:?}", config());
        assert!(!printed.contains("PRIVATE KEY"), "{printed}");
        assert!(printed.contains("<redacted>"), "{printed}");
        assert!(!format!("{channel:?}").contains("PRIVATE KEY"));

        let parsed: FcmConfig = serde_json::from_value(json!({
            "service_account_file": "/etc/nudge/fcm.json", "timeout": "3s"
        }))
        .unwrap();
        assert_eq!(parsed.base_url, "https://fcm.googleapis.com");
        assert_eq!(parsed.timeout, Duration::from_secs(3));
        assert_eq!(parsed.token_url, None);
        assert!(
            serde_json::from_value::<FcmConfig>(json!({
                "service_account_file": "/etc/nudge/fcm.json", "projectid": "x"
            }))
            .is_err()
        );
    }
}
