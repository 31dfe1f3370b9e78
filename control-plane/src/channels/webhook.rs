//! The webhook channel: one signed HTTP `POST` per send, per the Standard
//! Webhooks spec (<https://www.standardwebhooks.com/>).
//!
//! Promises:
//! * `webhook-id` is the delivery id, the same on every attempt, so a
//!   receiver can drop duplicates; `webhook-timestamp` is the attempt's unix
//!   time; `webhook-signature` is `v1,<base64 HMAC-SHA256>` of
//!   `"{id}.{timestamp}.{body}"` under the shared secret.
//! * Unless the operator allows private destinations, a URL whose host
//!   resolves to a loopback, private, link-local, CGNAT, unique-local,
//!   unspecified, multicast or otherwise non-public address is refused.
//!   The check runs inside the client's DNS resolver, so the addresses
//!   checked are the ones connected to: a name that resolves to a public
//!   address when checked and a private one when connecting (DNS
//!   rebinding) cannot slip through. Proxies from the environment are
//!   ignored and redirects are not followed, for the same reason.
//!
//! # Classification
//!
//! | answer | result |
//! |---|---|
//! | `2xx` | receipt |
//! | `408`, `429`, `5xx`, connect error, timeout | [`SendError::Retriable`], with `Retry-After` (seconds or HTTP date) |
//! | `410 Gone` | [`SendError::InvalidRecipient`]: the endpoint is gone |
//! | other `4xx`, `1xx`/`3xx` (redirects are not followed) | [`SendError::Permanent`] |
//! | private destination, bad URL, recipient not a URL | [`SendError::Permanent`] |

use std::error::Error as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use reqwest::StatusCode;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{CONTENT_TYPE, HeaderMap, RETRY_AFTER};
use serde::Deserialize;
use sha2::Sha256;

use super::email::{humantime_duration, recipient_kind, shorten};
use super::{Channel, ChannelKind, OutboundMessage, Recipient, SendError, SendReceipt};
use crate::config::ConfigError;

type HmacSha256 = Hmac<Sha256>;

/// The `webhook` section of the config file.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The signing secret, base64, with or without the `whsec_` prefix.
    pub secret: String,
    /// Limit for the whole request, connect to last byte, e.g. `"10s"`.
    #[serde(default = "default_timeout", with = "humantime_duration")]
    pub timeout: Duration,
    /// Lets webhooks reach loopback and private networks: only for tests
    /// and for receivers inside the operator's own network.
    #[serde(default)]
    pub allow_private_destinations: bool,
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("secret", &"<redacted>")
            .field("timeout", &self.timeout)
            .field(
                "allow_private_destinations",
                &self.allow_private_destinations,
            )
            .finish()
    }
}

/// Decodes a Standard Webhooks secret (`whsec_` + base64) into key bytes.
pub fn decode_secret(secret: &str) -> Option<Vec<u8>> {
    let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
    BASE64
        .decode(encoded.trim())
        .ok()
        .filter(|key| !key.is_empty())
}

fn mac(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = HmacSha256::new_from_slice(key).expect("hmac takes any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The `webhook-signature` header value for one request.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let tag = mac(key, id, timestamp, body).finalize().into_bytes();
    format!("v1,{}", BASE64.encode(tag))
}

/// Checks a `webhook-signature` header (space-separated `v1,<base64>`
/// entries; any match verifies) in constant time. For receivers and tests;
/// it does not check the timestamp's age, which a receiver should.
pub fn verify_signature(secret: &str, id: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
    let Some(key) = decode_secret(secret) else {
        return false;
    };
    verify_with_key(&key, id, timestamp, body, header)
}

/// [`verify_signature`] with the key bytes already decoded (the email
/// callbacks' `callback_secret` need not be a `whsec_` secret).
pub fn verify_with_key(key: &[u8], id: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
    header.split_whitespace().any(|entry| {
        let Some(encoded) = entry.strip_prefix("v1,") else {
            return false;
        };
        let Ok(tag) = BASE64.decode(encoded) else {
            return false;
        };
        mac(key, id, timestamp, body).verify_slice(&tag).is_ok()
    })
}

/// Posts signed notifications to the recipient's URL.
pub struct WebhookChannel {
    client: reqwest::Client,
    key: Vec<u8>,
    allow_private: bool,
}

impl std::fmt::Debug for WebhookChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookChannel")
            .field("allow_private", &self.allow_private)
            .finish_non_exhaustive()
    }
}

impl WebhookChannel {
    pub fn new(config: WebhookConfig) -> Result<Self, ConfigError> {
        let WebhookConfig {
            secret,
            timeout,
            allow_private_destinations,
        } = config;
        let key = decode_secret(&secret).ok_or_else(|| ConfigError {
            setting: "webhook.secret",
            message: "is not base64 (with an optional whsec_ prefix) or is empty".to_owned(),
        })?;
        if timeout.is_zero() {
            return Err(ConfigError {
                setting: "webhook.timeout",
                message: "must be longer than zero".to_owned(),
            });
        }
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .user_agent(concat!("nudge-webhooks/", env!("CARGO_PKG_VERSION")));
        if !allow_private_destinations {
            builder = builder.dns_resolver(Arc::new(PublicOnlyResolver));
        }
        let client = builder.build().map_err(|err| ConfigError {
            setting: "webhook",
            message: format!("cannot build the HTTP client: {err}"),
        })?;
        Ok(WebhookChannel {
            client,
            key,
            allow_private: allow_private_destinations,
        })
    }
}

#[async_trait]
impl Channel for WebhookChannel {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Webhook
    }

    async fn send(
        &self,
        message: &OutboundMessage,
        recipient: &Recipient,
    ) -> Result<SendReceipt, SendError> {
        let Recipient::Url { url } = recipient else {
            return Err(SendError::Permanent {
                answer: format!(
                    "the webhook channel cannot send to {}",
                    recipient_kind(recipient)
                ),
            });
        };
        let url = reqwest::Url::parse(url).map_err(|err| SendError::Permanent {
            answer: format!("{url:?} is not a URL: {err}"),
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(SendError::Permanent {
                answer: format!("{} URLs are not webhooks: use http or https", url.scheme()),
            });
        }
        // An IP literal never reaches the resolver, so it is checked here.
        if !self.allow_private {
            let literal = url
                .host_str()
                .map(|host| host.trim_start_matches('[').trim_end_matches(']'))
                .and_then(|host| host.parse::<IpAddr>().ok());
            if let Some(ip) = literal.filter(|ip| !is_public(*ip)) {
                return Err(private_refused(&ip.to_string()));
            }
        }
        let now = jiff::Timestamp::now();
        let timestamp = now.as_second();
        let body = serde_json::to_vec(&serde_json::json!({
            "type": message.notification_type,
            "notification_id": message.notification_id,
            "delivery_id": message.delivery_id,
            "subject": message.subject,
            "text": message.text_body,
            "data": message.data,
            "timestamp": now.to_string(),
        }))
        .expect("a JSON value always serialises");
        let signature = sign(&self.key, &message.delivery_id, timestamp, &body);
        let result = self
            .client
            .post(url)
            .header(CONTENT_TYPE, "application/json")
            .header("webhook-id", &message.delivery_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await;
        let response = match result {
            Ok(response) => response,
            Err(err) => return Err(classify_error(&err)),
        };
        let status = response.status();
        let retry_after = retry_after(response.headers(), now);
        // The receiver's body is only for the attempt log; a failure to read
        // it does not change what the status said.
        let text = super::answer::read_capped(response)
            .await
            .unwrap_or_default();
        let answer = shorten(format!("{status} {}", text.trim()).trim_end().to_owned());
        classify_status(status, answer, retry_after)
    }
}

fn private_refused(what: &str) -> SendError {
    SendError::Permanent {
        answer: format!(
            "webhook destination {what} is a private, loopback or otherwise non-public address; \
             refused (set webhook.allow_private_destinations to allow)"
        ),
    }
}

fn classify_status(
    status: StatusCode,
    answer: String,
    retry_after: Option<Duration>,
) -> Result<SendReceipt, SendError> {
    if status.is_success() {
        return Ok(SendReceipt {
            provider_message_id: None,
            answer,
        });
    }
    match status.as_u16() {
        408 | 429 | 500..=599 => Err(SendError::Retriable {
            answer,
            retry_after,
        }),
        410 => Err(SendError::InvalidRecipient { answer }),
        _ => Err(SendError::Permanent { answer }),
    }
}

fn classify_error(err: &reqwest::Error) -> SendError {
    match private_refusal(err) {
        Some(what) => private_refused(what),
        None => transport_error(err),
    }
}

/// The host (and address) [`PublicOnlyResolver`] refused, when that is why
/// `err` happened. Shared with the Web Push channel, whose endpoints also
/// come from outside.
pub(crate) fn private_refusal(err: &reqwest::Error) -> Option<&str> {
    let mut source = err.source();
    while let Some(inner) = source {
        if let Some(refused) = inner.downcast_ref::<PrivateDestination>() {
            return Some(&refused.0);
        }
        source = inner.source();
    }
    None
}

/// `text` as an absolute http(s) URL, or a config error naming `setting`.
/// Shared by the HTTP channels' constructors.
pub(crate) fn http_url(setting: &'static str, text: &str) -> Result<reqwest::Url, ConfigError> {
    let url = reqwest::Url::parse(text).map_err(|err| ConfigError {
        setting,
        message: format!("{text:?} is not a URL: {err}"),
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(ConfigError {
            setting,
            message: format!("{text:?} is not an http or https URL"),
        });
    }
    Ok(url)
}

/// A provider API endpoint: `path` under the configured `base_url` (which
/// must be an http(s) URL without query or fragment; a trailing `/` is
/// fine). Errors name `setting`.
pub(crate) fn api_url(
    setting: &'static str,
    base_url: &str,
    path: &str,
) -> Result<reqwest::Url, ConfigError> {
    let base = http_url(setting, base_url)?;
    if base.query().is_some() || base.fragment().is_some() {
        return Err(ConfigError {
            setting,
            message: "must not have a query or fragment".to_owned(),
        });
    }
    http_url(
        setting,
        &format!("{}{path}", base.as_str().trim_end_matches('/')),
    )
}

/// A request that got no HTTP answer: the provider is unreachable, slow or
/// broke the connection (retriable), or the request could not even be built
/// (permanent). Shared by the HTTP channels (webhook, SMS).
pub(crate) fn transport_error(err: &reqwest::Error) -> SendError {
    let mut answer = err.to_string();
    let mut source = err.source();
    while let Some(inner) = source {
        answer.push_str(": ");
        answer.push_str(&inner.to_string());
        source = inner.source();
    }
    if err.is_builder() {
        return SendError::Permanent {
            answer: shorten(answer),
        };
    }
    SendError::Retriable {
        answer: shorten(answer),
        retry_after: None,
    }
}

/// `Retry-After` as delay-seconds or an HTTP date, relative to `now`.
pub fn retry_after(headers: &HeaderMap, now: jiff::Timestamp) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = jiff::fmt::rfc2822::DateTimeParser::new()
        .parse_timestamp(value)
        .ok()?;
    let wait = date.as_second().saturating_sub(now.as_second());
    Some(Duration::from_secs(u64::try_from(wait).unwrap_or(0)))
}

/// Raised by [`PublicOnlyResolver`] and found again in reqwest's error
/// chain, so the refusal is reported as such and not as a network failure.
#[derive(Debug)]
struct PrivateDestination(String);

impl std::fmt::Display for PrivateDestination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} resolves to a non-public address", self.0)
    }
}

impl std::error::Error for PrivateDestination {}

/// Resolves with the system resolver and refuses names that have any
/// non-public address: refusing only some of them would let a connection
/// fall back to the private one. Used by every channel whose destinations
/// come from outside (webhooks, Web Push endpoints).
pub(crate) struct PublicOnlyResolver;

impl Resolve for PublicOnlyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if let Some(private) = addrs.iter().find(|addr| !is_public(addr.ip())) {
                let what = format!("{host} ({})", private.ip());
                return Err(
                    Box::new(PrivateDestination(what)) as Box<dyn std::error::Error + Send + Sync>
                );
            }
            let addrs: Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

/// Whether a webhook may go to `ip` when private destinations are refused.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => is_public_v4(ip),
        IpAddr::V6(ip) => {
            if let Some(mapped) = ip.to_ipv4_mapped() {
                return is_public_v4(mapped);
            }
            is_public_v6(ip)
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a == 0 // "this network"
        || (a == 100 && (64..128).contains(&b)) // CGNAT 100.64/10
        || (a == 192 && b == 0 && ip.octets()[2] == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking 198.18/15
        || a >= 240) // reserved
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (first & 0xffc0) == 0xfe80 // link local fe80::/10
        || (first & 0xffc0) == 0xfec0 // site local (deprecated) fec0::/10
        || (first == 0x2001 && ip.segments()[1] == 0x0db8) // documentation
        || first == 0x0064 && ip.segments()[1] == 0xff9b) // NAT64 may reach private v4
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_round_trips_and_detects_tampering() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let key = decode_secret(secret).unwrap();
        let header = sign(&key, "msg_1", 1_614_265_330, b"{\"a\":1}");
        assert!(verify_signature(
            secret,
            "msg_1",
            1_614_265_330,
            b"{\"a\":1}",
            &header
        ));
        assert!(!verify_signature(
            secret,
            "msg_1",
            1_614_265_330,
            b"{\"a\":2}",
            &header
        ));
        assert!(!verify_signature(
            secret,
            "msg_2",
            1_614_265_330,
            b"{\"a\":1}",
            &header
        ));
        assert!(!verify_signature(
            secret,
            "msg_1",
            1_614_265_331,
            b"{\"a\":1}",
            &header
        ));
        let multiple = format!("v1,AAAA {header}");
        assert!(verify_signature(
            secret,
            "msg_1",
            1_614_265_330,
            b"{\"a\":1}",
            &multiple
        ));
    }

    #[test]
    fn matches_the_standard_webhooks_reference_vector() {
        // From the Standard Webhooks reference libraries' test suite.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = br#"{"test": 2432232314}"#;
        let key = decode_secret(secret).unwrap();
        assert_eq!(
            sign(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1_614_265_330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn private_ranges_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip} should be refused");
        }
        for ip in [
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "::ffff:1.1.1.1",
        ] {
            assert!(is_public(ip.parse().unwrap()), "{ip} should be allowed");
        }
    }

    #[test]
    fn retry_after_accepts_seconds_and_dates() {
        let now: jiff::Timestamp = "2015-10-21T07:28:00Z".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, "120".parse().unwrap());
        assert_eq!(retry_after(&headers, now), Some(Duration::from_secs(120)));
        headers.insert(
            RETRY_AFTER,
            "Wed, 21 Oct 2015 07:30:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&headers, now), Some(Duration::from_secs(120)));
        headers.insert(RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&headers, now), None);
    }

    #[test]
    fn config_rejects_bad_secret_and_unknown_keys() {
        let config = |secret: &str| WebhookConfig {
            secret: secret.to_owned(),
            timeout: Duration::from_secs(1),
            allow_private_destinations: false,
        };
        assert!(WebhookChannel::new(config("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")).is_ok());
        assert_eq!(
            WebhookChannel::new(config("not base64!"))
                .unwrap_err()
                .setting,
            "webhook.secret"
        );
        assert!(
            serde_json::from_value::<WebhookConfig>(serde_json::json!({
                "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "timout": "1s"
            }))
            .is_err()
        );
    }
}
