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
        .route(
            "/devices",
            get(|state: State<HttpState>, Me(user): Me| list(state, Path(user))).post(
                |state: State<HttpState>, Me(user): Me, body: JsonBody<NewDevice>| {
                    register(state, Path(user), body)
                },
            ),
        )
        .route(
            "/devices/{device_id}",
            get(
                |state: State<HttpState>, Me(user): Me, Path(device_id): Path<String>| {
                    read(state, Path((user, device_id)))
                },
            )
            .delete(
                |state: State<HttpState>, Me(user): Me, Path(device_id): Path<String>| {
                    remove(state, Path((user, device_id)))
                },
            ),
        )
}

async fn list(
    State(state): State<HttpState>,
    Path(user_id): Path<String>,
) -> Result<Json<DeviceList>, ApiError> {
    let devices = state.devices.list(&user_id).await?;
    Ok(Json(DeviceList { devices }))
}

async fn register(
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

async fn read(
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

async fn switch(
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

async fn remove(
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
