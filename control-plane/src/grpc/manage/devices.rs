//! A user's push devices: register (or refresh), list, switch on or off,
//! delete; and the device messages ↔ [`NewDevice`] / [`Device`]. The device
//! store validates a registration (one address of the platform's kind) and
//! keeps one record per address; see [`crate::devices`].

use jiff::Timestamp;
use nudge_proto::v1 as pb;

use super::{GrpcState, ServiceError, known_enum, non_empty, required_id, timestamp};
use crate::devices::{Device, NewDevice, Platform, Subscription, SubscriptionKeys};

pub(super) async fn register(
    state: &GrpcState,
    request: pb::RegisterDeviceRequest,
) -> Result<pb::RegisterDeviceResponse, ServiceError> {
    let user_id = required_id("user_id", request.user_id)?;
    let platform = match known_enum("platform", request.platform)? {
        pb::Platform::Unspecified => {
            return Err(ServiceError::invalid(
                "platform",
                "must be set (apns, fcm or web_push)",
            ));
        }
        pb::Platform::Apns => Platform::Apns,
        pb::Platform::Fcm => Platform::Fcm,
        pb::Platform::WebPush => Platform::WebPush,
    };
    let new = NewDevice {
        platform,
        token: non_empty(request.token),
        subscription: request.subscription.map(|subscription| Subscription {
            endpoint: subscription.endpoint,
            keys: SubscriptionKeys {
                p256dh: subscription.p256dh,
                auth: subscription.auth,
            },
        }),
        label: non_empty(request.label),
    };
    let (device, created) = state
        .devices
        .register_telling_new(&user_id, &new, Timestamp::now())
        .await?;
    Ok(pb::RegisterDeviceResponse {
        device: Some(to_proto(device)),
        created,
    })
}

pub(super) async fn list(
    state: &GrpcState,
    request: pb::ListDevicesRequest,
) -> Result<pb::ListDevicesResponse, ServiceError> {
    let user_id = required_id("user_id", request.user_id)?;
    let found = state.devices.list(&user_id).await?;
    Ok(pb::ListDevicesResponse {
        devices: found.into_iter().map(to_proto).collect(),
    })
}

pub(super) async fn set_active(
    state: &GrpcState,
    request: pb::SetDeviceActiveRequest,
) -> Result<pb::SetDeviceActiveResponse, ServiceError> {
    let user_id = required_id("user_id", request.user_id)?;
    let device = required_id("device_id", request.device_id)?;
    let reason =
        non_empty(request.reason).unwrap_or_else(|| "deactivated by an operator".to_owned());
    let changed = state
        .devices
        .set_active(&user_id, &device, request.active, &reason, Timestamp::now())
        .await?;
    let changed = changed.ok_or_else(|| not_found(&device))?;
    Ok(pb::SetDeviceActiveResponse {
        device: Some(to_proto(changed)),
    })
}

pub(super) async fn delete(
    state: &GrpcState,
    request: pb::DeleteDeviceRequest,
) -> Result<pb::DeleteDeviceResponse, ServiceError> {
    let user_id = required_id("user_id", request.user_id)?;
    let device = required_id("device_id", request.device_id)?;
    if !state.devices.delete(&user_id, &device).await? {
        return Err(not_found(&device));
    }
    Ok(pb::DeleteDeviceResponse {})
}

fn not_found(device_id: &str) -> ServiceError {
    ServiceError::NotFound(format!("no device {device_id} for this user"))
}

fn to_proto(device: Device) -> pb::Device {
    let platform = match device.platform {
        Platform::Apns => pb::Platform::Apns,
        Platform::Fcm => pb::Platform::Fcm,
        Platform::WebPush => pb::Platform::WebPush,
    };
    pb::Device {
        id: device.id,
        user_id: device.user_id,
        platform: platform.into(),
        token: device.token.unwrap_or_default(),
        subscription: device
            .subscription
            .map(|subscription| pb::WebPushSubscription {
                endpoint: subscription.endpoint,
                p256dh: subscription.keys.p256dh,
                auth: subscription.keys.auth,
            }),
        label: device.label.unwrap_or_default(),
        active: device.active,
        deactivated_reason: device.deactivated_reason.unwrap_or_default(),
        deactivated_at: device.deactivated_at.and_then(timestamp),
        created_at: timestamp(device.created_at),
        last_seen_at: timestamp(device.last_seen_at),
    }
}
