//! The schemas derived from the types the handlers serialize and read:
//! each listed type, and every type its fields name, becomes a
//! `components.schemas` entry under its API name (`#[schema(as = …)]`
//! where that differs from the Rust name). A type listed here must not
//! also be written in `hand_written.json` ([`super::assemble`] refuses it).

use serde_json::Value;
use utoipa::OpenApi;

use crate::channels::ChannelKind;
use crate::delivery::Delivery;
use crate::devices::{Device, DeviceList};
use crate::http::ErrorBody;
use crate::http::admin_notifications::{
    DeadLetterPage, NotificationList, NotificationWithDeliveries,
};
use crate::http::devices::Switch;
use crate::http::me_notifications::{BulkResult, ReadAllResult};
use crate::http::me_preferences::Schema as PreferencesSchema;
use crate::http::user_auth::StreamTicket;
use crate::inbox::{CategoryCounts, Counts, InboxItem};
use crate::preferences::{TypePreferences, UserPreferences};
use crate::storage::ParkedPage;

#[derive(OpenApi)]
#[openapi(components(schemas(
    // Map keys are inlined where used; hand-written schemas still refer
    // to `Channel` by name.
    ChannelKind,
    // `UserPreferences.types` is built by hand (its limits come from
    // constants), so the schema it refers to is named here.
    TypePreferences,
    UserPreferences,
    Device,
    DeviceList,
    Switch,
    ErrorBody,
    InboxItem,
    Counts,
    CategoryCounts,
    BulkResult,
    ReadAllResult,
    PreferencesSchema,
    StreamTicket,
    ParkedPage,
    Delivery,
    DeadLetterPage,
    NotificationWithDeliveries,
    NotificationList,
)))]
struct Derived;

/// Each derived schema, by its API name.
pub(super) fn derived() -> Vec<(String, Value)> {
    let components = Derived::openapi()
        .components
        .expect("the derive lists schemas, so there are components");
    components
        .schemas
        .into_iter()
        .map(|(name, schema)| {
            let schema = serde_json::to_value(schema).expect("a schema always serializes");
            (name, schema)
        })
        .collect()
}
