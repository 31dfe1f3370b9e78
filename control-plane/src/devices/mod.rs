//! Devices: the push addresses users register — APNs and FCM device tokens
//! and Web Push subscriptions — and their lifecycle.
//!
//! # Promises
//!
//! * **One record per address.** A device's id is derived from its platform
//!   and address (token, or subscription endpoint), so registering the same
//!   token again updates that record (label, keys, last seen) instead of
//!   adding a second one, and reactivates it if it was deactivated.
//! * **An address belongs to one user.** Registering a token that another
//!   user holds moves it: the phone changed hands (log out, log in), and
//!   the previous user must not get the new user's pushes.
//! * **Invalid addresses are not used again.** When a provider reports a
//!   token or subscription as gone ([`DeviceStore::deactivate_address`],
//!   called by the dispatcher on `InvalidRecipient`), the device is
//!   deactivated with the reason; planning only uses active devices
//!   ([`DeviceStore::active`]).
//! * **Long-inactive devices are cleaned up** by [`DeviceStore::cleanup`]:
//!   a device not seen (registered or refreshed) for `stale_after` is
//!   deactivated, and a device deactivated for `delete_after` is deleted.
//! * **A bounded number per user**: at most `NUDGE_CP_MAX_DEVICES_PER_USER`
//!   devices per user and platform; one more evicts the least reachable
//!   (see [`DeviceStore::register`]).
//! * Every write is one SQL statement or transaction (see
//!   [`crate::storage::DeviceTable`]), durable before it returns.

pub mod cleanup;
pub mod endpoint;
mod store;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::channels::{ChannelKind, Recipient, web_push};

pub use store::{CleanupReport, DEFAULT_MAX_DEVICES_PER_USER, DeviceStore};

/// The push service a device is reached through.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Platform {
    Apns,
    Fcm,
    WebPush,
}

impl Platform {
    pub fn channel(self) -> ChannelKind {
        match self {
            Platform::Apns => ChannelKind::Apns,
            Platform::Fcm => ChannelKind::Fcm,
            Platform::WebPush => ChannelKind::WebPush,
        }
    }

    pub fn of_channel(channel: ChannelKind) -> Option<Platform> {
        match channel {
            ChannelKind::Apns => Some(Platform::Apns),
            ChannelKind::Fcm => Some(Platform::Fcm),
            ChannelKind::WebPush => Some(Platform::WebPush),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        self.channel().as_str()
    }
}

/// A Web Push subscription as the browser's `PushSubscription.toJSON()`
/// gives it: the endpoint and its `keys` (base64url).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(
    description = "A Web Push subscription as the browser's `PushSubscription.toJSON()` gives it."
)]
pub struct Subscription {
    #[schema(schema_with = endpoint::schema)]
    pub endpoint: String,
    pub keys: SubscriptionKeys,
}

/// A subscription's keys, in base64url with or without padding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionKeys {
    /// The browser's ECDH key: an uncompressed P-256 point (65 bytes, 0x04
    /// first) in base64url, with or without padding, as
    /// `PushSubscription.toJSON()` gives it. Anything else is refused with
    /// 400 at registration.
    #[schema(pattern = "^B[A-P][A-Za-z0-9_-]{84}[AEIMQUYcgkosw048]=?$")]
    pub p256dh: String,
    /// The browser's 16-byte authentication secret in base64url, with or
    /// without padding. Anything else is refused with 400 at registration.
    #[schema(pattern = "^[A-Za-z0-9_-]{21}[AQgw](==)?$")]
    pub auth: String,
}

/// What a client registers: a token (APNs, FCM) or a subscription (Web
/// Push), with an optional label for people ("Anna's iPhone").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewDevice {
    pub platform: Platform,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription: Option<Subscription>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// The schema of a registration is a `oneOf` by platform, stricter than
/// the struct: [`NewDevice::validate`]'s rules (a token for apns/fcm, a
/// subscription for web_push, exactly one; the length limits), stated
/// from the same constants.
impl utoipa::PartialSchema for NewDevice {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::Ref;
        use utoipa::openapi::schema::{
            AdditionalProperties, ObjectBuilder, OneOfBuilder, SchemaType, Type,
        };
        let label = || {
            ObjectBuilder::new()
                .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
                .max_length(Some(MAX_LABEL_LEN))
                .pattern(Some(crate::http::openapi::NO_NUL))
                .description(Some(format!(
                    "For people, e.g. \"Anna's iPhone\" (at most {MAX_LABEL_LEN} characters, no NUL)."
                )))
        };
        let null = || ObjectBuilder::new().schema_type(Type::Null);
        let platforms = |platforms: &[Platform]| {
            crate::http::openapi::string_enum(platforms.iter().map(|p| p.as_str()))
        };
        let token = ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(MAX_ADDRESS_LEN))
            // No whitespace (Unicode's White_Space) or control characters.
            .pattern(Some(
                "^[^\\u0000-\\u0020\\u007f-\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]+$",
            ))
            .description(Some(format!(
                "The APNs or FCM device token: 1-{MAX_ADDRESS_LEN} characters, no whitespace or control characters."
            )));
        let with_token = ObjectBuilder::new()
            .schema_type(Type::Object)
            .title(Some("apns or fcm"))
            .property("platform", platforms(&[Platform::Apns, Platform::Fcm]))
            .property("token", token)
            .property("subscription", null())
            .property("label", label())
            .required("platform")
            .required("token")
            .additional_properties(Some(AdditionalProperties::FreeForm(false)));
        let with_subscription = ObjectBuilder::new()
            .schema_type(Type::Object)
            .title(Some("web_push"))
            .property("platform", platforms(&[Platform::WebPush]))
            .property("subscription", Ref::from_schema_name("Subscription"))
            .property("token", null())
            .property("label", label())
            .required("platform")
            .required("subscription")
            .additional_properties(Some(AdditionalProperties::FreeForm(false)));
        OneOfBuilder::new()
            .description(Some(
                "A device to register: `token` for apns/fcm, `subscription` for web_push (exactly \
                 one). Registering the same address again refreshes that device (and reactivates \
                 it); an address another user held moves to this user. Anything else is a 400 \
                 naming what is wrong; nothing is stored then.",
            ))
            .item(with_token)
            .item(with_subscription)
            .into()
    }
}

impl utoipa::ToSchema for NewDevice {
    fn name() -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed("NewDevice")
    }
}

/// Longest token or endpoint accepted, in characters (as JSON Schema's
/// `maxLength` counts, so the OpenAPI document can state it exactly): APNs
/// tokens are 64 hex digits, FCM tokens ~160 characters, push endpoints a
/// few hundred.
pub(crate) const MAX_ADDRESS_LEN: usize = 2048;
const MAX_LABEL_LEN: usize = 200;

/// Why a registration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    #[error("{0}")]
    Invalid(String),
    #[error("device storage: {0}")]
    Storage(String),
    #[error("stored device {key} is unreadable: {message}")]
    Corrupt { key: String, message: String },
}

impl NewDevice {
    /// Checks the registration has exactly the address its platform needs,
    /// and returns that address (the token, or the endpoint).
    pub fn validate(&self) -> Result<&str, DeviceError> {
        let invalid = |message: &str| Err(DeviceError::Invalid(message.to_owned()));
        if self
            .label
            .as_ref()
            .is_some_and(|label| label.chars().count() > MAX_LABEL_LEN)
        {
            return invalid("label is longer than 200 characters");
        }
        let address = match (self.platform, &self.token, &self.subscription) {
            (Platform::Apns | Platform::Fcm, Some(token), None) => token.as_str(),
            (Platform::Apns | Platform::Fcm, _, _) => {
                return invalid("apns and fcm devices need a `token` and no `subscription`");
            }
            (Platform::WebPush, None, Some(subscription)) => {
                // Keys that could never encrypt a message are refused now,
                // not found out at every send.
                let keys = &subscription.keys;
                if let Err(problem) = web_push::decode_keys(&keys.p256dh, &keys.auth) {
                    return invalid(problem);
                }
                // Likewise an endpoint the send's URL parser would refuse.
                let endpoint = subscription.endpoint.as_str();
                if let Err(problem) = endpoint::check(endpoint) {
                    return invalid(problem);
                }
                endpoint
            }
            (Platform::WebPush, _, _) => {
                return invalid("web_push devices need a `subscription` and no `token`");
            }
        };
        if address.trim().is_empty() {
            return invalid("the device token or endpoint is empty");
        }
        if address.chars().count() > MAX_ADDRESS_LEN {
            return invalid("the device token or endpoint is longer than 2048 characters");
        }
        if address.chars().any(char::is_whitespace) {
            return invalid("the device token or endpoint contains whitespace");
        }
        if address.chars().any(char::is_control) {
            return invalid("the device token or endpoint contains a control character");
        }
        // Text a database column can hold, on either engine.
        if self
            .label
            .as_ref()
            .is_some_and(|label| label.contains('\0'))
        {
            return invalid("the label contains a NUL character");
        }
        Ok(address)
    }
}

/// A registered device. The field docs are the API's descriptions; an
/// absent option is left out of the JSON, never `null`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(description = "A registered push device.")]
pub struct Device {
    // See [`device_id`].
    /// Derived from platform and address.
    pub id: String,
    pub user_id: String,
    pub platform: Platform,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub subscription: Option<Subscription>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub label: Option<String>,
    pub active: bool,
    /// The provider's answer, `inactive`, or an operator's note.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub deactivated_reason: Option<String>,
    /// RFC 3339 time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub deactivated_at: Option<Timestamp>,
    /// RFC 3339 time.
    pub created_at: Timestamp,
    /// Last registration or refresh by the client.
    pub last_seen_at: Timestamp,
}

/// Every device of one user.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeviceList {
    pub devices: Vec<Device>,
}

impl Device {
    /// Where a delivery to this device goes.
    pub fn recipient(&self) -> Option<Recipient> {
        match (self.platform, &self.token, &self.subscription) {
            (Platform::Apns | Platform::Fcm, Some(token), _) => Some(Recipient::DeviceToken {
                token: token.clone(),
            }),
            (Platform::WebPush, _, Some(subscription)) => Some(Recipient::WebPush {
                endpoint: subscription.endpoint.clone(),
                p256dh: subscription.keys.p256dh.clone(),
                auth: subscription.keys.auth.clone(),
            }),
            _ => None,
        }
    }
}

/// What the dispatcher does when a provider says an address is gone:
/// deactivate the device holding it (the provider's answer is the reason),
/// so planning stops using it. Failures are logged: the delivery has failed
/// for good either way.
pub fn deactivation_hook(
    devices: DeviceStore,
    clock: std::sync::Arc<dyn crate::delivery::Clock>,
) -> crate::delivery::InvalidRecipientHook {
    std::sync::Arc::new(move |channel, recipient, answer| {
        let (devices, recipient, answer) = (devices.clone(), recipient.clone(), answer.to_owned());
        let now = clock.now();
        Box::pin(async move {
            match devices
                .deactivate_address(channel, &recipient, &answer, now)
                .await
            {
                Ok(Some(device)) => {
                    tracing::info!(%channel, device = %device.id, %answer, "device deactivated: the provider reported it invalid");
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::error!(%channel, %error, "could not deactivate an invalid device");
                }
            }
        })
    })
}

/// The address a recipient on `channel` names, if it is a device's.
pub fn address_of(channel: ChannelKind, recipient: &Recipient) -> Option<(Platform, &str)> {
    let platform = Platform::of_channel(channel)?;
    match recipient {
        Recipient::DeviceToken { token } => Some((platform, token)),
        Recipient::WebPush { endpoint, .. } => Some((platform, endpoint)),
        _ => None,
    }
}

/// A device's id: the first 16 bytes of SHA-256 over `platform:address`,
/// hex. Stable, so re-registering finds the record; opaque, so ids in
/// URLs and logs do not reveal the token.
pub fn device_id(platform: Platform, address: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(platform.as_str().as_bytes());
    hasher.update(b":");
    hasher.update(address.as_bytes());
    let digest = hasher.finalize();
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests;
