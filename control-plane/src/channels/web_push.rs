//! The Web Push channel: one encrypted, VAPID-signed `POST` to the
//! subscription's endpoint per send (RFC 8030), with everything done by
//! `ring`.
//!
//! Promises:
//! * The payload is encrypted for the subscription (RFC 8291): an ephemeral
//!   P-256 key agreed with the browser's `p256dh` key, the `auth` secret
//!   mixed in, 16 random bytes of salt, one `aes128gcm` record (RFC 8188)
//!   with record size 4096 and the ephemeral public key as key id. Only the
//!   browser can read it; the push service sees ciphertext.
//! * Every request carries a fresh VAPID token (RFC 8292): an ES256 JWT
//!   whose `aud` is the endpoint's origin, `exp` 12 hours ahead (the RFC
//!   allows at most 24) and `sub` the configured contact, sent as
//!   `Authorization: vapid t=<jwt>, k=<public key>`.
//! * The plaintext is JSON: `title` (the subject), `body` (the text body),
//!   `data`, `notification_id`, `delivery_id` and `type`. Push services
//!   only promise to carry 4096 bytes of body, so it may be at most
//!   [`MAX_PLAINTEXT`] (3993) bytes: a larger one is sent without `data`,
//!   and one still too large fails as [`SendError::Permanent`] without a
//!   request.
//! * Headers: `TTL` (the configured `ttl`, default one day: a notification
//!   that has not reached an offline browser by then is stale),
//!   `Urgency: normal` (the message has no urgency to map), and a `Topic`
//!   derived from the delivery id, so a retry replaces a copy of the same
//!   delivery the push service still holds instead of queuing a second one.
//! * Subscription endpoints come from users' browsers, so unless the
//!   operator allows private endpoints an endpoint must be `https` and its
//!   host must resolve to public addresses only: the same rule, checked in
//!   the resolver, as the webhook channel's (see there for why). Proxies
//!   from the environment are ignored and redirects not followed.
//!
//! # Classification
//!
//! | answer | result |
//! |---|---|
//! | `2xx` (`201 Created` normally) | receipt; the provider message id is the `Location` header, if any |
//! | `404 Not Found`, `410 Gone` | [`SendError::InvalidRecipient`]: the subscription expired or was withdrawn |
//! | `408`, `429`, `5xx`, connect error, timeout | [`SendError::Retriable`], with `Retry-After` (seconds or HTTP date) |
//! | `413 Payload Too Large` | [`SendError::Permanent`] |
//! | `401`, `403` | [`SendError::Permanent`]: the push service refused the VAPID token, usually a key or `subject` problem in the config; the answer says so |
//! | other `4xx` (`400`…), `1xx`/`3xx` (redirects are not followed) | [`SendError::Permanent`] |
//! | recipient not a subscription, payload too large, `http` or private endpoint when not allowed | [`SendError::Permanent`], no request |
//! | malformed endpoint URL, `p256dh` not a P-256 point, `auth` not 16 bytes | [`SendError::InvalidRecipient`], no request |
//!
//! A subscription whose keys are well formed but wrong (not the browser's)
//! cannot be told apart by the sender: a real push service accepts the
//! ciphertext and the browser drops it. Only a receiver that decrypts (the
//! tests' one answers `400`) can report it, and that is `Permanent`.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use base64::alphabet;
use base64::engine::general_purpose::{STANDARD as BASE64, URL_SAFE_NO_PAD};
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, LOCATION};
use ring::agreement::{ECDH_P256, EphemeralPrivateKey, UnparsedPublicKey, agree_ephemeral};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use serde::Deserialize;

use super::email::{humantime_duration, recipient_kind, shorten};
use super::webhook::{
    PublicOnlyResolver, is_public, private_refusal, retry_after, transport_error,
};
use super::{Channel, ChannelKind, OutboundMessage, Recipient, SendError, SendReceipt};
use crate::config::ConfigError;

/// The record size written in the `aes128gcm` header.
pub const RECORD_SIZE: u32 = 4096;

/// Salt, record size, key id length and a 65-byte key id (RFC 8291 §4).
const HEADER_LEN: usize = 16 + 4 + 1 + 65;

/// AES-GCM's tag, one per record.
const TAG_LEN: usize = 16;

/// The largest plaintext sent: push services must accept bodies of 4096
/// bytes (RFC 8030 §7.2), header, tag and padding delimiter included
/// (RFC 8291 §4).
pub const MAX_PLAINTEXT: usize = 4096 - HEADER_LEN - TAG_LEN - 1;

/// How long a VAPID token is valid: half of RFC 8292's 24-hour limit, so
/// a push service's clock may run hours ahead without refusing it.
const VAPID_VALIDITY: i64 = 12 * 60 * 60;

/// The longest `ttl` accepted: the push services keep messages at most
/// four weeks (FCM's limit) whatever the header says.
const MAX_TTL: Duration = Duration::from_secs(28 * 24 * 60 * 60);

/// Subscription keys arrive base64url with or without padding
/// (`PushSubscription.toJSON()` omits it, some libraries add it).
const BASE64URL_ANY_PADDING: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The `web_push` section of the config file. The VAPID key is given
/// either as raw base64url keys (`vapid_private_key` and
/// `vapid_public_key`, the form `web-push generate-vapid-keys` prints) or
/// as a PKCS#8 PEM file (`vapid_key_file`), not both.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebPushConfig {
    /// The P-256 private scalar, 32 bytes base64url; never printed.
    #[serde(default)]
    pub vapid_private_key: Option<String>,
    /// The matching public key, the uncompressed 65-byte point base64url:
    /// the `applicationServerKey` browsers subscribe with.
    #[serde(default)]
    pub vapid_public_key: Option<String>,
    /// A PEM file holding the key as PKCS#8 (`BEGIN PRIVATE KEY`).
    #[serde(default)]
    pub vapid_key_file: Option<PathBuf>,
    /// The operator's contact for push services: `mailto:` address or
    /// `https:` URL (RFC 8292 §2.1).
    pub subject: String,
    /// How long the push service keeps a message for an offline browser,
    /// e.g. `"1d"`; at most 28 days, `"0s"` for "now or never".
    #[serde(default = "default_ttl", with = "humantime_duration")]
    pub ttl: Duration,
    /// Limit for the whole request, connect to last byte, e.g. `"10s"`.
    #[serde(default = "default_timeout", with = "humantime_duration")]
    pub timeout: Duration,
    /// Lets endpoints be plain `http` and reach loopback and private
    /// networks: only for tests and development.
    #[serde(default)]
    pub allow_private_endpoints: bool,
}

fn default_ttl() -> Duration {
    Duration::from_secs(24 * 60 * 60)
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

impl std::fmt::Debug for WebPushConfig {
    // By hand so the private key never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebPushConfig")
            .field(
                "vapid_private_key",
                &self.vapid_private_key.as_ref().map(|_| "<redacted>"),
            )
            .field("vapid_public_key", &self.vapid_public_key)
            .field("vapid_key_file", &self.vapid_key_file)
            .field("subject", &self.subject)
            .field("ttl", &self.ttl)
            .field("timeout", &self.timeout)
            .field("allow_private_endpoints", &self.allow_private_endpoints)
            .finish()
    }
}

fn config_error(setting: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        setting,
        message: message.into(),
    }
}

/// Whether `subject` is a contact RFC 8292 accepts: `mailto:` with an
/// address, or an `https` URL with a host.
pub fn is_valid_subject(subject: &str) -> bool {
    if let Some(address) = subject.strip_prefix("mailto:") {
        return address
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty())
            && !address.contains(char::is_whitespace);
    }
    reqwest::Url::parse(subject)
        .is_ok_and(|url| url.scheme() == "https" && url.host_str().is_some_and(|h| !h.is_empty()))
}

/// The VAPID key pair from whichever form the config gives.
fn load_vapid_key(
    private_key: Option<&str>,
    public_key: Option<&str>,
    key_file: Option<&PathBuf>,
    rng: &SystemRandom,
) -> Result<EcdsaKeyPair, ConfigError> {
    match (private_key, public_key, key_file) {
        (Some(private_key), Some(public_key), None) => {
            let private_key = BASE64URL_ANY_PADDING
                .decode(private_key.trim())
                .ok()
                .filter(|key| key.len() == 32)
                .ok_or_else(|| {
                    config_error(
                        "web_push.vapid_private_key",
                        "is not a 32-byte P-256 private key in base64url",
                    )
                })?;
            let public_key = BASE64URL_ANY_PADDING
                .decode(public_key.trim())
                .ok()
                .filter(|key| key.len() == 65 && key[0] == 0x04)
                .ok_or_else(|| {
                    config_error(
                        "web_push.vapid_public_key",
                        "is not an uncompressed 65-byte P-256 public key in base64url",
                    )
                })?;
            EcdsaKeyPair::from_private_key_and_public_key(
                &ECDSA_P256_SHA256_FIXED_SIGNING,
                &private_key,
                &public_key,
                rng,
            )
            .map_err(|err| {
                config_error(
                    "web_push.vapid_private_key",
                    format!("and vapid_public_key are not one P-256 key pair ({err})"),
                )
            })
        }
        (None, None, Some(path)) => {
            let pem = std::fs::read_to_string(path).map_err(|err| {
                config_error(
                    "web_push.vapid_key_file",
                    format!("cannot read {}: {err}", path.display()),
                )
            })?;
            let der = pem_block(&pem, "PRIVATE KEY").ok_or_else(|| {
                let hint = if pem_block(&pem, "EC PRIVATE KEY").is_some() {
                    "holds a SEC1 key (BEGIN EC PRIVATE KEY); convert it with \
                     `openssl pkcs8 -topk8 -nocrypt -in old.pem -out new.pem`"
                } else {
                    "holds no PKCS#8 PEM block (BEGIN PRIVATE KEY)"
                };
                config_error(
                    "web_push.vapid_key_file",
                    format!("{} {hint}", path.display()),
                )
            })?;
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der, rng).map_err(|err| {
                config_error(
                    "web_push.vapid_key_file",
                    format!("{} is not a P-256 PKCS#8 key ({err})", path.display()),
                )
            })
        }
        (None, None, None) => Err(config_error(
            "web_push.vapid_private_key",
            "is missing: set vapid_private_key and vapid_public_key, or vapid_key_file",
        )),
        (_, _, Some(_)) => Err(config_error(
            "web_push.vapid_key_file",
            "cannot be combined with vapid_private_key or vapid_public_key: use one form",
        )),
        (Some(_), None, None) => Err(config_error(
            "web_push.vapid_public_key",
            "is missing: ring needs both halves of a raw key pair",
        )),
        (None, Some(_), None) => Err(config_error(
            "web_push.vapid_private_key",
            "is missing next to vapid_public_key",
        )),
    }
}

/// The DER inside the first `-----BEGIN {label}-----` block of `pem`.
fn pem_block(pem: &str, label: &str) -> Option<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = pem.find(&begin)? + begin.len();
    let stop = start + pem[start..].find(&end)?;
    let base64: String = pem[start..stop]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    BASE64.decode(base64).ok().filter(|der| !der.is_empty())
}

/// A Web Push subscription, checked and decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub endpoint: reqwest::Url,
    /// The browser's ECDH public key, an uncompressed P-256 point.
    pub p256dh: Vec<u8>,
    /// The browser's 16-byte authentication secret.
    pub auth: Vec<u8>,
}

impl Subscription {
    /// Decodes a subscription as browsers give it. Every error is
    /// [`SendError::InvalidRecipient`]: such a subscription can never be
    /// sent to. Whether the endpoint is *allowed* is checked on send.
    pub fn parse(endpoint: &str, p256dh: &str, auth: &str) -> Result<Self, SendError> {
        let invalid = |answer: String| SendError::InvalidRecipient {
            answer: shorten(answer),
        };
        let url = reqwest::Url::parse(endpoint)
            .map_err(|err| invalid(format!("push endpoint {endpoint:?} is not a URL: {err}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
            return Err(invalid(format!(
                "push endpoint {endpoint:?} is not an http or https URL"
            )));
        }
        let (p256dh, auth) = decode_keys(p256dh.trim(), auth.trim())
            .map_err(|problem| invalid(problem.to_owned()))?;
        Ok(Subscription {
            endpoint: url,
            p256dh,
            auth,
        })
    }
}

/// Decodes a subscription's keys as browsers give them: base64url, with or
/// without padding, `p256dh` an uncompressed P-256 point (65 bytes, `0x04`
/// first) and `auth` a 16-byte secret. Registration refuses a subscription
/// whose keys fail here (`devices`), and a send never gets such keys; the
/// OpenAPI document's `SubscriptionKeys` patterns state the same rule.
/// Whether the point lies on the curve is left to the key agreement.
pub fn decode_keys(p256dh: &str, auth: &str) -> Result<(Vec<u8>, Vec<u8>), &'static str> {
    let p256dh = BASE64URL_ANY_PADDING
        .decode(p256dh)
        .ok()
        .filter(|key| key.len() == 65 && key[0] == 0x04)
        .ok_or("the subscription's p256dh is not an uncompressed P-256 key in base64url")?;
    let auth = BASE64URL_ANY_PADDING
        .decode(auth)
        .ok()
        .filter(|secret| secret.len() == 16)
        .ok_or("the subscription's auth is not a 16-byte secret in base64url")?;
    Ok((p256dh, auth))
}

/// The JSON the service worker receives; `None` when it cannot fit in
/// [`MAX_PLAINTEXT`] bytes even without `data`.
pub fn push_payload(message: &OutboundMessage) -> Option<Vec<u8>> {
    let mut payload = serde_json::json!({
        "title": message.subject,
        "body": message.text_body,
        "data": message.data,
        "notification_id": message.notification_id,
        "delivery_id": message.delivery_id,
        "type": message.notification_type,
    });
    let bytes = serde_json::to_vec(&payload).expect("a JSON value always serialises");
    if bytes.len() <= MAX_PLAINTEXT {
        return Some(bytes);
    }
    // The text is the notification; the data only enriches it.
    if let Some(fields) = payload.as_object_mut() {
        fields.remove("data");
    }
    let bytes = serde_json::to_vec(&payload).expect("a JSON value always serialises");
    (bytes.len() <= MAX_PLAINTEXT).then_some(bytes)
}

/// An output length for ring's HKDF.
struct Len(usize);

impl ring::hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// HKDF-SHA-256 (RFC 5869) of `ikm` under `salt` and `info`, filling `out`.
fn hkdf(salt: &[u8], ikm: &[u8], info: &[&[u8]], out: &mut [u8]) {
    let prk = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, salt).extract(ikm);
    // Only lengths over 255 hashes fail, and ours are 12 to 32 bytes.
    prk.expand(info, Len(out.len()))
        .and_then(|okm| okm.fill(out))
        .expect("HKDF output of at most 32 bytes");
}

/// The keys of one message (RFC 8291 §3.3, §3.4; RFC 8188 §2.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageKeys {
    /// The input keying material, from the ECDH secret and `auth`.
    pub ikm: [u8; 32],
    /// The content encryption key.
    pub cek: [u8; 16],
    /// The first (and only) record's nonce.
    pub nonce: [u8; 12],
}

/// Derives the message keys from the ECDH secret: pure, so RFC 8291's
/// worked example checks it.
pub fn derive_keys(
    ecdh_secret: &[u8],
    auth_secret: &[u8],
    ua_public: &[u8],
    as_public: &[u8],
    salt: &[u8; 16],
) -> MessageKeys {
    let mut keys = MessageKeys {
        ikm: [0; 32],
        cek: [0; 16],
        nonce: [0; 12],
    };
    let key_info: [&[u8]; 3] = [b"WebPush: info\0", ua_public, as_public];
    hkdf(auth_secret, ecdh_secret, &key_info, &mut keys.ikm);
    hkdf(
        salt,
        &keys.ikm,
        &[b"Content-Encoding: aes128gcm\0"],
        &mut keys.cek,
    );
    hkdf(
        salt,
        &keys.ikm,
        &[b"Content-Encoding: nonce\0"],
        &mut keys.nonce,
    );
    keys
}

/// The `aes128gcm` body for `plaintext` (at most [`MAX_PLAINTEXT`] bytes),
/// given the ECDH secret, the salt and the sender's public key: the pure
/// half of [`encrypt`].
pub fn seal(
    ecdh_secret: &[u8],
    auth_secret: &[u8],
    ua_public: &[u8],
    as_public: &[u8],
    salt: &[u8; 16],
    plaintext: &[u8],
) -> Vec<u8> {
    let keys = derive_keys(ecdh_secret, auth_secret, ua_public, as_public, salt);
    let key = ring::aead::LessSafeKey::new(
        ring::aead::UnboundKey::new(&ring::aead::AES_128_GCM, &keys.cek)
            .expect("a 16-byte AES-128 key"),
    );
    // One record, the last: the plaintext, then the delimiter 0x02 and no
    // padding (RFC 8188 §2).
    let mut record = Vec::with_capacity(plaintext.len() + 1 + TAG_LEN);
    record.extend_from_slice(plaintext);
    record.push(0x02);
    // The nonce is fresh because the salt is: record 0's nonce is NONCE.
    key.seal_in_place_append_tag(
        ring::aead::Nonce::assume_unique_for_key(keys.nonce),
        ring::aead::Aad::empty(),
        &mut record,
    )
    .expect("AES-GCM seals any record this small");
    let id_len = u8::try_from(as_public.len()).expect("a 65-byte key id");
    let mut body = Vec::with_capacity(16 + 4 + 1 + as_public.len() + record.len());
    body.extend_from_slice(salt);
    body.extend_from_slice(&RECORD_SIZE.to_be_bytes());
    body.push(id_len);
    body.extend_from_slice(as_public);
    body.extend_from_slice(&record);
    body
}

/// Encrypts `plaintext` for `subscription`: fresh ephemeral key and salt,
/// then [`seal`].
pub fn encrypt(
    subscription: &Subscription,
    plaintext: &[u8],
    rng: &SystemRandom,
) -> Result<Vec<u8>, SendError> {
    let no_randomness = || SendError::Retriable {
        answer: "the system's random number generator failed".to_owned(),
        retry_after: None,
    };
    let mut salt = [0u8; 16];
    rng.fill(&mut salt).map_err(|_| no_randomness())?;
    let ephemeral = EphemeralPrivateKey::generate(&ECDH_P256, rng).map_err(|_| no_randomness())?;
    let as_public = ephemeral
        .compute_public_key()
        .map_err(|_| no_randomness())?;
    let peer = UnparsedPublicKey::new(&ECDH_P256, &subscription.p256dh);
    // The agreement only fails when p256dh is not a point on the curve.
    agree_ephemeral(ephemeral, &peer, |secret| {
        seal(
            secret,
            &subscription.auth,
            &subscription.p256dh,
            as_public.as_ref(),
            &salt,
            plaintext,
        )
    })
    .map_err(|_| SendError::InvalidRecipient {
        answer: "the subscription's p256dh is not a point on P-256".to_owned(),
    })
}

/// The VAPID audience for `endpoint`: its origin, `scheme://host[:port]`
/// with the default port left out.
pub fn audience(endpoint: &reqwest::Url) -> String {
    endpoint.origin().ascii_serialization()
}

/// A VAPID token (RFC 8292 §2): ES256 JWT with `aud`, `exp`, `sub`.
pub fn vapid_jwt(
    key: &EcdsaKeyPair,
    rng: &SystemRandom,
    audience: &str,
    expires: i64,
    subject: &str,
) -> Result<String, SendError> {
    let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"ES256"}"#);
    let claims = serde_json::json!({"aud": audience, "exp": expires, "sub": subject});
    let claims = URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(&claims).expect("a JSON value always serialises"));
    let signing_input = format!("{header}.{claims}");
    // FIXED signing gives JWS's r||s form, not DER.
    let signature = key
        .sign(rng, signing_input.as_bytes())
        .map_err(|_| SendError::Retriable {
            answer: "signing the VAPID token failed".to_owned(),
            retry_after: None,
        })?;
    Ok(format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature.as_ref())
    ))
}

/// The `Topic` for a delivery: 32 base64url characters of its id's
/// SHA-256, the most RFC 8030 §5.4 allows, the same on every attempt.
pub fn topic(delivery_id: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, delivery_id.as_bytes());
    URL_SAFE_NO_PAD.encode(&digest.as_ref()[..24])
}

/// Sends Web Push notifications under one VAPID identity.
pub struct WebPushChannel {
    client: reqwest::Client,
    vapid: EcdsaKeyPair,
    /// The VAPID public key, base64url: the `k=` parameter.
    vapid_public: String,
    subject: String,
    ttl_seconds: u64,
    allow_private: bool,
    rng: SystemRandom,
}

impl std::fmt::Debug for WebPushChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebPushChannel")
            .field("vapid_public", &self.vapid_public)
            .field("subject", &self.subject)
            .field("ttl_seconds", &self.ttl_seconds)
            .field("allow_private", &self.allow_private)
            .finish_non_exhaustive()
    }
}

impl WebPushChannel {
    /// Checks the config and loads the VAPID key; needs no runtime.
    pub fn new(config: WebPushConfig) -> Result<Self, ConfigError> {
        let WebPushConfig {
            vapid_private_key,
            vapid_public_key,
            vapid_key_file,
            subject,
            ttl,
            timeout,
            allow_private_endpoints,
        } = config;
        let rng = SystemRandom::new();
        let vapid = load_vapid_key(
            vapid_private_key.as_deref(),
            vapid_public_key.as_deref(),
            vapid_key_file.as_ref(),
            &rng,
        )?;
        if !is_valid_subject(&subject) {
            return Err(config_error(
                "web_push.subject",
                format!("{subject:?} is neither a mailto: address nor an https: URL"),
            ));
        }
        if ttl > MAX_TTL {
            return Err(config_error(
                "web_push.ttl",
                format!(
                    "{} is longer than 28 days, the most push services keep a message",
                    humantime::format_duration(ttl)
                ),
            ));
        }
        if timeout.is_zero() {
            return Err(config_error("web_push.timeout", "must be longer than zero"));
        }
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .user_agent(concat!("nudge-web-push/", env!("CARGO_PKG_VERSION")));
        if !allow_private_endpoints {
            builder = builder.dns_resolver(Arc::new(PublicOnlyResolver));
        }
        let client = builder.build().map_err(|err| {
            config_error("web_push", format!("cannot build the HTTP client: {err}"))
        })?;
        let vapid_public = URL_SAFE_NO_PAD.encode(vapid.public_key().as_ref());
        Ok(WebPushChannel {
            client,
            vapid,
            vapid_public,
            subject,
            ttl_seconds: ttl.as_secs(),
            allow_private: allow_private_endpoints,
            rng,
        })
    }

    /// The VAPID public key, base64url: the `applicationServerKey` a page
    /// passes to `pushManager.subscribe`.
    pub fn vapid_public_key(&self) -> &str {
        &self.vapid_public
    }

    /// Refuses endpoints the config does not allow (no request is made).
    fn check_allowed(&self, endpoint: &reqwest::Url) -> Result<(), SendError> {
        if self.allow_private {
            return Ok(());
        }
        if endpoint.scheme() != "https" {
            return Err(SendError::Permanent {
                answer: "push endpoint is plain http; refused \
                         (set web_push.allow_private_endpoints to allow)"
                    .to_owned(),
            });
        }
        // An IP literal never reaches the resolver, so it is checked here.
        let literal = endpoint
            .host_str()
            .map(|host| host.trim_start_matches('[').trim_end_matches(']'))
            .and_then(|host| host.parse::<IpAddr>().ok());
        match literal.filter(|ip| !is_public(*ip)) {
            Some(ip) => Err(private_refused(&ip.to_string())),
            None => Ok(()),
        }
    }
}

#[async_trait]
impl Channel for WebPushChannel {
    fn kind(&self) -> ChannelKind {
        ChannelKind::WebPush
    }

    async fn send(
        &self,
        message: &OutboundMessage,
        recipient: &Recipient,
    ) -> Result<SendReceipt, SendError> {
        let Recipient::WebPush {
            endpoint,
            p256dh,
            auth,
        } = recipient
        else {
            return Err(SendError::Permanent {
                answer: format!(
                    "the web_push channel cannot send to {}",
                    recipient_kind(recipient)
                ),
            });
        };
        let subscription = Subscription::parse(endpoint, p256dh, auth)?;
        self.check_allowed(&subscription.endpoint)?;
        let plaintext = push_payload(message).ok_or_else(|| SendError::Permanent {
            answer: format!(
                "the notification is larger than the {MAX_PLAINTEXT} bytes a push message \
                 carries, even without its data"
            ),
        })?;
        let body = encrypt(&subscription, &plaintext, &self.rng)?;
        let now = jiff::Timestamp::now();
        let jwt = vapid_jwt(
            &self.vapid,
            &self.rng,
            &audience(&subscription.endpoint),
            now.as_second() + VAPID_VALIDITY,
            &self.subject,
        )?;
        let result = self
            .client
            .post(subscription.endpoint)
            .header(
                AUTHORIZATION,
                format!("vapid t={jwt}, k={}", self.vapid_public),
            )
            .header(CONTENT_ENCODING, "aes128gcm")
            .header(CONTENT_TYPE, "application/octet-stream")
            .header("TTL", self.ttl_seconds.to_string())
            .header("Urgency", "normal")
            .header("Topic", topic(&message.delivery_id))
            .body(body)
            .send()
            .await;
        let response = match result {
            Ok(response) => response,
            Err(err) => return Err(classify_error(&err)),
        };
        let status = response.status();
        let retry_after = retry_after(response.headers(), now);
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        // The body is only for the attempt log; a failure to read it does
        // not change what the status said.
        let text = super::answer::read_capped(response)
            .await
            .unwrap_or_default();
        let answer = format!("{status} {}", text.trim()).trim_end().to_owned();
        classify_response(status, answer, location, retry_after)
    }
}

/// Maps the push service's answer to a receipt or a [`SendError`] (the
/// module doc's table).
pub fn classify_response(
    status: StatusCode,
    answer: String,
    location: Option<String>,
    retry_after: Option<Duration>,
) -> Result<SendReceipt, SendError> {
    if status.is_success() {
        return Ok(SendReceipt {
            provider_message_id: location.filter(|location| !location.is_empty()),
            answer: shorten(answer),
        });
    }
    match status.as_u16() {
        404 | 410 => Err(SendError::InvalidRecipient {
            answer: shorten(answer),
        }),
        408 | 429 | 500..=599 => Err(SendError::Retriable {
            answer: shorten(answer),
            retry_after,
        }),
        // The hint goes before the service's answer, so that shortening
        // the answer cannot cut it off.
        401 | 403 => Err(SendError::Permanent {
            answer: shorten(format!(
                "the push service refused the VAPID token; check web_push's key and \
                 subject: {answer}"
            )),
        }),
        _ => Err(SendError::Permanent {
            answer: shorten(answer),
        }),
    }
}

fn private_refused(what: &str) -> SendError {
    SendError::Permanent {
        answer: format!(
            "push endpoint {what} is a private, loopback or otherwise non-public address; \
             refused (set web_push.allow_private_endpoints to allow)"
        ),
    }
}

fn classify_error(err: &reqwest::Error) -> SendError {
    match private_refusal(err) {
        Some(what) => private_refused(what),
        None => transport_error(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(text: &str) -> Vec<u8> {
        BASE64URL_ANY_PADDING.decode(text).unwrap()
    }

    // RFC 8291, Appendix A.
    const RFC_PLAINTEXT: &[u8] = b"When I grow up, I want to be a watermelon";
    const RFC_AS_PUBLIC: &str =
        "BP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A8";
    const RFC_AS_PRIVATE: &str = "yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw";
    const RFC_UA_PUBLIC: &str =
        "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
    const RFC_SALT: &str = "DGv6ra1nlYgDCS1FRnbzlw";
    const RFC_AUTH: &str = "BTBZMqHH6r4Tts7J_aSIgg";
    const RFC_ECDH_SECRET: &str = "kyrL1jIIOHEzg3sM2ZWRHDRB62YACZhhSlknJ672kSs";
    const RFC_IKM: &str = "S4lYMb_L0FxCeq0WhDx813KgSYqU26kOyzWUdsXYyrg";
    const RFC_CEK: &str = "oIhVW04MRdy2XN9CiKLxTg";
    const RFC_NONCE: &str = "4h_95klXJ5E_qnoN";
    const RFC_BODY: &str = "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN";

    fn rfc_salt() -> [u8; 16] {
        b64(RFC_SALT).try_into().unwrap()
    }

    fn config() -> WebPushConfig {
        WebPushConfig {
            vapid_private_key: Some(RFC_AS_PRIVATE.to_owned()),
            vapid_public_key: Some(RFC_AS_PUBLIC.to_owned()),
            vapid_key_file: None,
            subject: "mailto:ops@nudge.example".to_owned(),
            ttl: default_ttl(),
            timeout: default_timeout(),
            allow_private_endpoints: false,
        }
    }

    #[test]
    fn derives_the_rfc_8291_intermediate_values() {
        let keys = derive_keys(
            &b64(RFC_ECDH_SECRET),
            &b64(RFC_AUTH),
            &b64(RFC_UA_PUBLIC),
            &b64(RFC_AS_PUBLIC),
            &rfc_salt(),
        );
        assert_eq!(URL_SAFE_NO_PAD.encode(keys.ikm), RFC_IKM);
        assert_eq!(URL_SAFE_NO_PAD.encode(keys.cek), RFC_CEK);
        assert_eq!(URL_SAFE_NO_PAD.encode(keys.nonce), RFC_NONCE);
    }

    #[test]
    fn seals_the_rfc_8291_message_byte_for_byte() {
        let body = seal(
            &b64(RFC_ECDH_SECRET),
            &b64(RFC_AUTH),
            &b64(RFC_UA_PUBLIC),
            &b64(RFC_AS_PUBLIC),
            &rfc_salt(),
            RFC_PLAINTEXT,
        );
        assert_eq!(URL_SAFE_NO_PAD.encode(&body), RFC_BODY);
    }

    /// The browser's side, to read what [`encrypt`] wrote.
    fn open(
        body: &[u8],
        ua_private: EphemeralPrivateKey,
        ua_public: &[u8],
        auth: &[u8],
    ) -> Vec<u8> {
        let salt: [u8; 16] = body[..16].try_into().unwrap();
        assert_eq!(
            u32::from_be_bytes(body[16..20].try_into().unwrap()),
            RECORD_SIZE
        );
        assert_eq!(body[20], 65);
        let as_public = &body[21..86];
        let peer = UnparsedPublicKey::new(&ECDH_P256, as_public);
        let keys = agree_ephemeral(ua_private, &peer, |secret| {
            derive_keys(secret, auth, ua_public, as_public, &salt)
        })
        .unwrap();
        let key = ring::aead::LessSafeKey::new(
            ring::aead::UnboundKey::new(&ring::aead::AES_128_GCM, &keys.cek).unwrap(),
        );
        let mut record = body[86..].to_vec();
        let plain = key
            .open_in_place(
                ring::aead::Nonce::assume_unique_for_key(keys.nonce),
                ring::aead::Aad::empty(),
                &mut record,
            )
            .unwrap();
        assert_eq!(plain.last(), Some(&0x02), "the last record's delimiter");
        plain[..plain.len() - 1].to_vec()
    }

    #[test]
    fn encrypt_round_trips_with_a_fresh_key_and_salt() {
        let rng = SystemRandom::new();
        let ua_private = EphemeralPrivateKey::generate(&ECDH_P256, &rng).unwrap();
        let ua_public = ua_private.compute_public_key().unwrap();
        let subscription = Subscription {
            endpoint: reqwest::Url::parse("https://push.example/x").unwrap(),
            p256dh: ua_public.as_ref().to_vec(),
            auth: vec![7; 16],
        };
        let first = encrypt(&subscription, b"hello", &rng).unwrap();
        let second = encrypt(&subscription, b"hello", &rng).unwrap();
        assert_ne!(first[..16], second[..16], "a fresh salt per message");
        assert_ne!(first[21..86], second[21..86], "a fresh key per message");
        assert_eq!(first.len(), HEADER_LEN + 5 + 1 + TAG_LEN);
        assert_eq!(
            open(&first, ua_private, ua_public.as_ref(), &[7; 16]),
            b"hello"
        );
    }

    #[test]
    fn a_p256dh_off_the_curve_is_an_invalid_recipient() {
        let mut p256dh = b64(RFC_UA_PUBLIC);
        p256dh[40] ^= 1;
        let subscription = Subscription {
            endpoint: reqwest::Url::parse("https://push.example/x").unwrap(),
            p256dh,
            auth: vec![7; 16],
        };
        let err = encrypt(&subscription, b"hello", &SystemRandom::new()).unwrap_err();
        assert!(matches!(err, SendError::InvalidRecipient { .. }), "{err:?}");
    }

    #[test]
    fn parses_subscriptions_with_or_without_padding() {
        let parsed = Subscription::parse(
            "https://fcm.googleapis.com/fcm/send/abc",
            RFC_UA_PUBLIC,
            RFC_AUTH,
        )
        .unwrap();
        assert_eq!(parsed.p256dh, b64(RFC_UA_PUBLIC));
        assert_eq!(parsed.auth, b64(RFC_AUTH));
        let padded = Subscription::parse(
            "https://fcm.googleapis.com/fcm/send/abc",
            &format!("{RFC_UA_PUBLIC}="),
            &format!("{RFC_AUTH}=="),
        )
        .unwrap();
        assert_eq!(padded, parsed);

        for (endpoint, p256dh, auth) in [
            ("not a url", RFC_UA_PUBLIC, RFC_AUTH),
            ("ftp://push.example/x", RFC_UA_PUBLIC, RFC_AUTH),
            ("https://push.example/x", "short", RFC_AUTH),
            ("https://push.example/x", RFC_AS_PRIVATE, RFC_AUTH),
            ("https://push.example/x", "not base64!", RFC_AUTH),
            ("https://push.example/x", RFC_UA_PUBLIC, "AAAA"),
            ("https://push.example/x", RFC_UA_PUBLIC, RFC_UA_PUBLIC),
        ] {
            let err = Subscription::parse(endpoint, p256dh, auth).unwrap_err();
            assert!(
                matches!(err, SendError::InvalidRecipient { .. }),
                "{endpoint} {p256dh} {auth}: {err:?}"
            );
        }
    }

    #[test]
    fn vapid_token_verifies_and_carries_the_claims() {
        let channel = WebPushChannel::new(config()).unwrap();
        assert_eq!(channel.vapid_public_key(), RFC_AS_PUBLIC);
        let jwt = vapid_jwt(
            &channel.vapid,
            &channel.rng,
            "https://push.example",
            1_700_000_000,
            "mailto:ops@nudge.example",
        )
        .unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header, serde_json::json!({"typ": "JWT", "alg": "ES256"}));
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(
            claims,
            serde_json::json!({
                "aud": "https://push.example", "exp": 1_700_000_000, "sub": "mailto:ops@nudge.example"
            })
        );
        let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        assert_eq!(signature.len(), 64, "JWS r||s, not DER");
        let public = ring::signature::UnparsedPublicKey::new(
            &ring::signature::ECDSA_P256_SHA256_FIXED,
            b64(RFC_AS_PUBLIC),
        );
        public
            .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
            .unwrap();
        assert!(public.verify(b"other", &signature).is_err());
    }

    #[test]
    fn audience_is_the_endpoint_origin() {
        for (endpoint, origin) in [
            (
                "https://fcm.googleapis.com/fcm/send/abc?x=1",
                "https://fcm.googleapis.com",
            ),
            ("https://push.example:8443/a/b", "https://push.example:8443"),
            ("https://push.example:443/a", "https://push.example"),
            ("http://127.0.0.1:9000/push/1", "http://127.0.0.1:9000"),
            ("https://[::1]:8443/p", "https://[::1]:8443"),
        ] {
            assert_eq!(audience(&reqwest::Url::parse(endpoint).unwrap()), origin);
        }
    }

    #[test]
    fn topic_is_stable_short_and_url_safe() {
        let topic_1 = topic("delivery-1");
        assert_eq!(topic_1.len(), 32);
        assert!(
            topic_1
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_eq!(topic_1, topic("delivery-1"));
        assert_ne!(topic_1, topic("delivery-2"));
    }

    #[test]
    fn payload_drops_data_before_failing() {
        let message = OutboundMessage {
            delivery_id: "d-1".to_owned(),
            notification_id: "n-1".to_owned(),
            notification_type: "payment_failed".to_owned(),
            subject: "Title".to_owned(),
            text_body: "Body".to_owned(),
            data: serde_json::json!({"amount": 42}),
            ..OutboundMessage::default()
        };
        let payload: serde_json::Value =
            serde_json::from_slice(&push_payload(&message).unwrap()).unwrap();
        assert_eq!(
            payload,
            serde_json::json!({
                "title": "Title", "body": "Body", "data": {"amount": 42},
                "notification_id": "n-1", "delivery_id": "d-1", "type": "payment_failed"
            })
        );

        let big_data = OutboundMessage {
            data: serde_json::json!({"blob": "x".repeat(MAX_PLAINTEXT)}),
            ..message.clone()
        };
        let payload: serde_json::Value =
            serde_json::from_slice(&push_payload(&big_data).unwrap()).unwrap();
        assert_eq!(payload.get("data"), None);
        assert_eq!(payload["body"], "Body");

        let big_body = OutboundMessage {
            text_body: "x".repeat(MAX_PLAINTEXT),
            ..message
        };
        assert_eq!(push_payload(&big_body), None);
        assert_eq!(MAX_PLAINTEXT, 3993);
    }

    #[test]
    fn classifies_push_service_answers() {
        let ok = classify_response(
            StatusCode::CREATED,
            "201 Created".to_owned(),
            Some("https://push.example/m/1".to_owned()),
            None,
        )
        .unwrap();
        assert_eq!(
            ok.provider_message_id.as_deref(),
            Some("https://push.example/m/1")
        );
        assert_eq!(ok.answer, "201 Created");
        for status in [StatusCode::OK, StatusCode::ACCEPTED] {
            let receipt = classify_response(status, status.to_string(), None, None).unwrap();
            assert_eq!(receipt.provider_message_id, None);
        }

        let wait = Some(Duration::from_secs(7));
        for status in [
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::REQUEST_TIMEOUT,
            StatusCode::INTERNAL_SERVER_ERROR,
            StatusCode::SERVICE_UNAVAILABLE,
        ] {
            assert_eq!(
                classify_response(status, "busy".to_owned(), None, wait),
                Err(SendError::Retriable {
                    answer: "busy".to_owned(),
                    retry_after: wait,
                }),
                "{status}"
            );
        }
        for status in [StatusCode::NOT_FOUND, StatusCode::GONE] {
            let err = classify_response(status, "gone".to_owned(), None, None).unwrap_err();
            assert!(
                matches!(err, SendError::InvalidRecipient { .. }),
                "{status}: {err:?}"
            );
        }
        for status in [
            StatusCode::PAYLOAD_TOO_LARGE,
            StatusCode::BAD_REQUEST,
            StatusCode::UNAUTHORIZED,
            StatusCode::FORBIDDEN,
            StatusCode::FOUND,
        ] {
            let err = classify_response(status, "no".to_owned(), None, None).unwrap_err();
            assert!(
                matches!(err, SendError::Permanent { .. }),
                "{status}: {err:?}"
            );
        }
        let err =
            classify_response(StatusCode::FORBIDDEN, "403".to_owned(), None, None).unwrap_err();
        assert!(err.answer().contains("VAPID"), "{err:?}");
    }

    #[test]
    fn checks_the_subject() {
        for good in ["mailto:ops@nudge.example", "https://nudge.example/contact"] {
            assert!(is_valid_subject(good), "{good}");
        }
        for bad in [
            "",
            "ops@nudge.example",
            "mailto:",
            "mailto:ops",
            "mailto:@nudge.example",
            "mailto:ops @nudge.example",
            "http://nudge.example",
            "https://",
        ] {
            assert!(!is_valid_subject(bad), "{bad:?}");
        }
    }

    #[test]
    fn config_is_checked_and_the_key_hidden() {
        assert!(WebPushChannel::new(config()).is_ok());
        let bad = |config: WebPushConfig| WebPushChannel::new(config).unwrap_err().setting;
        assert_eq!(
            bad(WebPushConfig {
                subject: "ops@nudge.example".to_owned(),
                ..config()
            }),
            "web_push.subject"
        );
        assert_eq!(
            bad(WebPushConfig {
                vapid_private_key: Some("AAAA".to_owned()),
                ..config()
            }),
            "web_push.vapid_private_key"
        );
        // A valid scalar that is not the public key's.
        assert_eq!(
            bad(WebPushConfig {
                vapid_public_key: Some(RFC_UA_PUBLIC.to_owned()),
                ..config()
            }),
            "web_push.vapid_private_key"
        );
        assert_eq!(
            bad(WebPushConfig {
                vapid_public_key: None,
                ..config()
            }),
            "web_push.vapid_public_key"
        );
        assert_eq!(
            bad(WebPushConfig {
                vapid_key_file: Some("/nonexistent.pem".into()),
                ..config()
            }),
            "web_push.vapid_key_file"
        );
        assert_eq!(
            bad(WebPushConfig {
                vapid_private_key: None,
                vapid_public_key: None,
                vapid_key_file: Some("/nonexistent/vapid.pem".into()),
                ..config()
            }),
            "web_push.vapid_key_file"
        );
        assert_eq!(
            bad(WebPushConfig {
                vapid_private_key: None,
                vapid_public_key: None,
                ..config()
            }),
            "web_push.vapid_private_key"
        );
        assert_eq!(
            bad(WebPushConfig {
                ttl: Duration::from_secs(29 * 24 * 60 * 60),
                ..config()
            }),
            "web_push.ttl"
        );
        assert_eq!(
            bad(WebPushConfig {
                timeout: Duration::ZERO,
                ..config()
            }),
            "web_push.timeout"
        );
        let debug = format!("{:?}", config());
        assert!(!debug.contains(RFC_AS_PRIVATE), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");

        let parsed: WebPushConfig = serde_json::from_value(serde_json::json!({
            "vapid_key_file": "/etc/nudge/vapid.pem", "subject": "mailto:a@b.example", "ttl": "1h"
        }))
        .unwrap();
        assert_eq!(parsed.ttl, Duration::from_secs(3600));
        assert_eq!(parsed.timeout, default_timeout());
        assert!(!parsed.allow_private_endpoints);
        assert!(
            serde_json::from_value::<WebPushConfig>(serde_json::json!({
                "vapid_key_file": "/k.pem", "subject": "mailto:a@b.example", "tll": "1h"
            }))
            .is_err()
        );
    }

    #[test]
    fn reads_a_pkcs8_pem_file() {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            BASE64.encode(pkcs8.as_ref())
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vapid.pem");
        std::fs::write(&path, pem).unwrap();
        let channel = WebPushChannel::new(WebPushConfig {
            vapid_private_key: None,
            vapid_public_key: None,
            vapid_key_file: Some(path.clone()),
            ..config()
        })
        .unwrap();
        assert_eq!(
            URL_SAFE_NO_PAD
                .decode(channel.vapid_public_key())
                .unwrap()
                .len(),
            65
        );

        std::fs::write(
            &path,
            "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n",
        )
        .unwrap();
        let err = WebPushChannel::new(WebPushConfig {
            vapid_private_key: None,
            vapid_public_key: None,
            vapid_key_file: Some(path),
            ..config()
        })
        .unwrap_err();
        assert!(err.message.contains("openssl pkcs8"), "{err:?}");
    }

    #[tokio::test]
    async fn refuses_endpoints_the_config_does_not_allow() {
        let channel = WebPushChannel::new(config()).unwrap();
        let message = OutboundMessage::default();
        for endpoint in [
            "http://push.example/x",
            "https://127.0.0.1/x",
            "https://[::1]:8443/x",
            "https://10.0.0.1/x",
            "https://localhost:1/x",
        ] {
            let recipient = Recipient::WebPush {
                endpoint: endpoint.to_owned(),
                p256dh: RFC_UA_PUBLIC.to_owned(),
                auth: RFC_AUTH.to_owned(),
            };
            let err = channel.send(&message, &recipient).await.unwrap_err();
            assert!(
                matches!(&err, SendError::Permanent { answer } if answer.contains("allow_private_endpoints")),
                "{endpoint}: {err:?}"
            );
        }
    }
}
