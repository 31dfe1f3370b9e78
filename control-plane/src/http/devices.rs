//! Push-device routes, for operators and for end users.
//!
//! * Operators (behind the admin token, `admin_router`):
//!   `/v1/admin/users/{user_id}/devices[/{device_id}]` — register (or
//!   refresh) a token or Web Push subscription, list, read, switch on or
//!   off (`PATCH {"active": false, "reason": …}`), delete.
//! * End users (their token, `me_router`): `/v1/me/devices[/{device_id}]`
//!   — register, list, read, delete their own devices. Another user's
//!   device id is `404`, like one that does not exist.
//!
//! Registering answers `201` with the record when the address is new to
//! the user and `200` when it refreshed an existing one (the same token
//! registered again is one device). Refused input is a `400` naming what
//! was wrong; nothing is stored then. A registration beyond
//! `NUDGE_CP_MAX_DEVICES_PER_USER` devices of the platform is accepted and
//! evicts the user's least reachable one (see [`crate::devices`]).

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use jiff::Timestamp;
use serde::Deserialize;

use super::openapi::{path_params, responses};
use super::user_auth::Me;
use super::{ApiError, HttpState, JsonBody};
use crate::devices::{Device, DeviceError, DeviceList, NewDevice};

pub fn admin_router() -> Router<HttpState> {
    Router::new()
        .route("/users/{user_id}/devices", get(list).post(register))
        .route(
            "/users/{user_id}/devices/{device_id}",
            get(read).patch(switch).delete(remove),
        )
}

pub fn me_router() -> Router<HttpState> {
    Router::new()
        .route("/devices", get(my_list).post(my_register))
        .route("/devices/{device_id}", get(my_read).delete(my_remove))
}

// The user's own devices: the operator's handlers, for the token's user.

#[utoipa::path(
    get,
    path = "/v1/me/devices",
    operation_id = "listMyDevices",
    summary = "The signed-in user's devices",
    tags = ["me", "devices"],
    security(("userToken" = [])),
    responses(
        (status = 200, body = DeviceList, description = "The devices."),
        responses::UserErrors,
    ),
)]
pub(crate) async fn my_list(
    state: State<HttpState>,
    Me(user): Me,
) -> Result<Json<DeviceList>, ApiError> {
    list(state, Path(user)).await
}

#[utoipa::path(
    post,
    path = "/v1/me/devices",
    operation_id = "registerMyDevice",
    summary = "Register (or refresh) a device",
    description = "A user holds at most NUDGE_CP_MAX_DEVICES_PER_USER devices (default 20) per platform. Registering a new address beyond that succeeds and deletes the user's least reachable device on the same platform: a deactivated one first, else the one seen (registered or refreshed) least recently. Refreshing an address the user holds never evicts one.",
    tags = ["me", "devices"],
    security(("userToken" = [])),
    request_body = NewDevice,
    responses(
        (status = 200, body = Device, description = "An existing device refreshed (same address)."),
        (status = 201, body = Device, description = "A new device."),
        (status = 400, response = responses::BadRequest),
        responses::UserErrors,
    ),
)]
pub(crate) async fn my_register(
    state: State<HttpState>,
    Me(user): Me,
    body: JsonBody<NewDevice>,
) -> Result<(StatusCode, Json<Device>), ApiError> {
    register(state, Path(user), body).await
}

#[utoipa::path(
    get,
    path = "/v1/me/devices/{device_id}",
    operation_id = "getMyDevice",
    summary = "One of the user's devices",
    tags = ["me", "devices"],
    security(("userToken" = [])),
    params(path_params::DeviceId),
    responses(
        (status = 200, body = Device, description = "The device."),
        (status = 404, response = responses::NotFound),
        responses::UserErrors,
    ),
)]
pub(crate) async fn my_read(
    state: State<HttpState>,
    Me(user): Me,
    Path(device_id): Path<String>,
) -> Result<Json<Device>, ApiError> {
    read(state, Path((user, device_id))).await
}

#[utoipa::path(
    delete,
    path = "/v1/me/devices/{device_id}",
    operation_id = "deleteMyDevice",
    summary = "Delete one of the user's devices",
    tags = ["me", "devices"],
    security(("userToken" = [])),
    params(path_params::DeviceId),
    responses(
        (status = 204, description = "Deleted."),
        (status = 404, response = responses::NotFound),
        responses::UserErrors,
    ),
)]
pub(crate) async fn my_remove(
    state: State<HttpState>,
    Me(user): Me,
    Path(device_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    remove(state, Path((user, device_id))).await
}

#[utoipa::path(
    get,
    path = "/v1/admin/users/{user_id}/devices",
    operation_id = "listUserDevices",
    summary = "A user's devices",
    tags = ["admin", "devices"],
    security(("adminToken" = [])),
    params(path_params::UserId),
    responses(
        (status = 200, body = DeviceList, description = "The devices."),
        responses::AdminErrors,
    ),
)]
pub(crate) async fn list(
    State(state): State<HttpState>,
    Path(user_id): Path<String>,
) -> Result<Json<DeviceList>, ApiError> {
    let devices = state.devices.list(&user_id).await?;
    Ok(Json(DeviceList { devices }))
}

#[utoipa::path(
    post,
    path = "/v1/admin/users/{user_id}/devices",
    operation_id = "registerUserDevice",
    summary = "Register (or refresh) a device for a user",
    description = "A user holds at most NUDGE_CP_MAX_DEVICES_PER_USER devices (default 20) per platform. Registering a new address beyond that succeeds and deletes the user's least reachable device on the same platform: a deactivated one first, else the one seen (registered or refreshed) least recently. Refreshing an address the user holds never evicts one.",
    tags = ["admin", "devices"],
    security(("adminToken" = [])),
    params(path_params::UserId),
    request_body = NewDevice,
    responses(
        (status = 200, body = Device, description = "An existing device refreshed (same address)."),
        (status = 201, body = Device, description = "A new device."),
        (status = 400, response = responses::BadRequest),
        responses::AdminErrors,
    ),
)]
pub(crate) async fn register(
    State(state): State<HttpState>,
    Path(user_id): Path<String>,
    JsonBody(new): JsonBody<NewDevice>,
) -> Result<(StatusCode, Json<Device>), ApiError> {
    let (device, created) = state
        .devices
        .register_telling_new(&user_id, &new, Timestamp::now())
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(device)))
}

#[utoipa::path(
    get,
    path = "/v1/admin/users/{user_id}/devices/{device_id}",
    operation_id = "getUserDevice",
    summary = "One of a user's devices",
    tags = ["admin", "devices"],
    security(("adminToken" = [])),
    params(path_params::UserId, path_params::DeviceId),
    responses(
        (status = 200, body = Device, description = "The device."),
        (status = 404, response = responses::NotFound),
        responses::AdminErrors,
    ),
)]
pub(crate) async fn read(
    State(state): State<HttpState>,
    Path((user_id, device_id)): Path<(String, String)>,
) -> Result<Json<Device>, ApiError> {
    let found = state.devices.get(&user_id, &device_id).await?;
    found.map(Json).ok_or_else(|| not_found(&device_id))
}

/// `PATCH {"active": false, "reason": "…"}`: an operator switching a device
/// off (or back on) without deleting it.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(
    as = DeviceSwitch,
    description = "Switches a device off (or back on) without deleting it."
)]
pub(crate) struct Switch {
    active: bool,
    /// Default (absent or null): `deactivated by an operator`.
    #[serde(default)]
    reason: Option<String>,
}

#[utoipa::path(
    patch,
    path = "/v1/admin/users/{user_id}/devices/{device_id}",
    operation_id = "switchUserDevice",
    summary = "Switch a device off or back on",
    tags = ["admin", "devices"],
    security(("adminToken" = [])),
    params(path_params::UserId, path_params::DeviceId),
    request_body = Switch,
    responses(
        (status = 200, body = Device, description = "The device after the change."),
        (status = 400, response = responses::BadRequest),
        (status = 404, response = responses::NotFound),
        responses::AdminErrors,
    ),
)]
pub(crate) async fn switch(
    State(state): State<HttpState>,
    Path((user_id, device_id)): Path<(String, String)>,
    JsonBody(change): JsonBody<Switch>,
) -> Result<Json<Device>, ApiError> {
    let reason = change
        .reason
        .unwrap_or_else(|| "deactivated by an operator".to_owned());
    let changed = state
        .devices
        .set_active(
            &user_id,
            &device_id,
            change.active,
            &reason,
            Timestamp::now(),
        )
        .await?;
    changed.map(Json).ok_or_else(|| not_found(&device_id))
}

#[utoipa::path(
    delete,
    path = "/v1/admin/users/{user_id}/devices/{device_id}",
    operation_id = "deleteUserDevice",
    summary = "Delete a device",
    tags = ["admin", "devices"],
    security(("adminToken" = [])),
    params(path_params::UserId, path_params::DeviceId),
    responses(
        (status = 204, description = "Deleted."),
        (status = 404, response = responses::NotFound),
        responses::AdminErrors,
    ),
)]
pub(crate) async fn remove(
    State(state): State<HttpState>,
    Path((user_id, device_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let removed = state.devices.delete(&user_id, &device_id).await?;
    if removed {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found(&device_id))
    }
}

fn not_found(device_id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no device {device_id} for this user"),
    )
}

impl From<DeviceError> for ApiError {
    fn from(error: DeviceError) -> Self {
        match error {
            DeviceError::Invalid(message) => ApiError::bad_request(message),
            failed => {
                tracing::error!(error = %failed, "device store failed in http handler");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    failed.to_string(),
                )
            }
        }
    }
}
