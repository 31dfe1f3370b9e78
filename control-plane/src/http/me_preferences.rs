//! The signed-in user's notification preferences, under
//! `/v1/me/preferences` (see [`super::user_auth`] for the token).
//!
//! * `GET /v1/me/preferences` — the stored document ([`UserPreferences`];
//!   absent entries mean "the operator's default").
//! * `PUT /v1/me/preferences` — replaces it as a whole, validated exactly
//!   like the operator's route (`admin_preferences`): a critical type
//!   cannot be switched off, time zones are IANA names, quiet hours
//!   `HH:MM`. A refusal is a `400` that says what was wrong and the stored
//!   document stays as it was.
//! * `DELETE /v1/me/preferences` — back to the operator's defaults (the
//!   user's time zone is kept); answers the document after the reset.
//! * `GET /v1/me/preferences/schema` — what a preferences page renders:
//!   the channels that can send, the frequencies, and every configured
//!   type with its category, channels, critical flag and default
//!   frequency.
//!
//! The user is the token's `sub` and nothing else: no route takes a user
//! id, so another user's preferences cannot even be named.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde::Serialize;

use super::openapi::responses;
use super::user_auth::Me;
use super::{ApiError, HttpState, JsonBody};
use crate::channels::ChannelKind;
use crate::preferences::{DIGEST_HOUR, Frequency, UserPreferences};

pub fn router() -> Router<HttpState> {
    Router::new()
        .route("/preferences", get(read).put(replace).delete(reset))
        .route("/preferences/schema", get(schema))
}

#[utoipa::path(
    get,
    path = "/v1/me/preferences",
    operation_id = "getMyPreferences",
    summary = "The user's preferences",
    tags = ["me", "preferences"],
    security(("userToken" = [])),
    responses(
        (status = 200, body = UserPreferences, description = "The stored document (absent entries mean the operator's default)."),
        responses::UserErrors,
    ),
)]
pub(crate) async fn read(
    State(state): State<HttpState>,
    Me(user): Me,
) -> Result<Json<UserPreferences>, ApiError> {
    let preferences = state.preferences.get(&user).await?;
    Ok(Json(preferences))
}

#[utoipa::path(
    put,
    path = "/v1/me/preferences",
    operation_id = "replaceMyPreferences",
    summary = "Replace the user's preferences",
    description = "Validated whole like the operator's route: a critical type cannot be switched off, IANA time zones, quiet hours `HH:MM`. A refusal is a 400 and the stored document stays as it was.",
    tags = ["me", "preferences"],
    security(("userToken" = [])),
    request_body = UserPreferences,
    responses(
        (status = 200, body = UserPreferences, description = "The stored document."),
        (status = 400, response = responses::BadRequest),
        responses::UserErrors,
    ),
)]
pub(crate) async fn replace(
    State(state): State<HttpState>,
    Me(user): Me,
    JsonBody(preferences): JsonBody<UserPreferences>,
) -> Result<Json<UserPreferences>, ApiError> {
    preferences.validate(&state.settings.current().defaults)?;
    state.preferences.put(&user, &preferences).await?;
    Ok(Json(preferences))
}

#[utoipa::path(
    delete,
    path = "/v1/me/preferences",
    operation_id = "resetMyPreferences",
    summary = "Back to the operator's defaults",
    tags = ["me", "preferences"],
    security(("userToken" = [])),
    responses(
        (status = 200, body = UserPreferences, description = "The document after the reset (the time zone is kept)."),
        responses::UserErrors,
    ),
)]
pub(crate) async fn reset(
    State(state): State<HttpState>,
    Me(user): Me,
) -> Result<Json<UserPreferences>, ApiError> {
    let preferences = state.preferences.reset_all(&user).await?;
    Ok(Json(preferences))
}

/// The answer of `GET /v1/me/preferences/schema`; the field docs are the
/// API's descriptions.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = PreferencesSchema, description = "What a preferences page renders.")]
pub(crate) struct Schema {
    /// Channels with a configured sender.
    channels: Vec<ChannelKind>,
    /// Most frequent first.
    #[schema(value_type = Vec<Frequency>)]
    frequencies: [Frequency; 5],
    /// Local hour of daily and weekly digests.
    #[schema(minimum = 0, maximum = 23)]
    digest_hour: i8,
    types: Vec<TypeSchema>,
}

/// One type as a preferences page shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct TypeSchema {
    name: String,
    #[schema(required = true)]
    category: Option<String>,
    /// Cannot be switched off, always instant: shown locked.
    critical: bool,
    /// The channels the type goes out on by default that can send.
    channels: Vec<ChannelKind>,
    /// The operator's default.
    frequency: Frequency,
}

/// Needs a valid token like every `/v1/me` route, although the answer is
/// the same for every user: the operator's types are not public.
#[utoipa::path(
    get,
    path = "/v1/me/preferences/schema",
    operation_id = "getMyPreferencesSchema",
    summary = "What a preferences page renders",
    description = "The same for every user, but needs a valid token: the operator's types are not public.",
    tags = ["me", "preferences"],
    security(("userToken" = [])),
    responses(
        (status = 200, body = Schema, description = "Channels, frequencies and every configured type."),
        responses::UserErrors,
    ),
)]
pub(crate) async fn schema(State(state): State<HttpState>, Me(_): Me) -> Json<Schema> {
    let settings = state.settings.current();
    let types = settings
        .defaults
        .types
        .iter()
        .map(|(name, defaults)| TypeSchema {
            name: name.clone(),
            category: defaults.category.clone(),
            critical: defaults.critical,
            channels: defaults
                .channels
                .iter()
                .copied()
                .filter(|channel| settings.enabled.contains(channel))
                .collect(),
            frequency: defaults.frequency,
        })
        .collect();
    Json(Schema {
        channels: settings.enabled.iter().copied().collect(),
        frequencies: [
            Frequency::Instant,
            Frequency::Hourly,
            Frequency::Daily,
            Frequency::Weekly,
            Frequency::Never,
        ],
        digest_hour: DIGEST_HOUR,
        types,
    })
}
