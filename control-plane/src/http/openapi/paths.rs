//! The operations described where their handlers are: each listed handler
//! carries a `#[utoipa::path]` naming its route, the Rust types of its
//! bodies and its answers, so the document cannot name a type the handler
//! does not have. A path listed here must not also be written in
//! `hand_written.json` ([`super::assemble`] refuses it); the routes still
//! written there move here module by module.

use serde_json::{Map, Value};
use utoipa::OpenApi;

use crate::http::{admin_api, me_notifications, me_preferences, user_auth};

#[derive(OpenApi)]
#[openapi(paths(
    crate::http::root,
    admin_api::stats,
    me_notifications::counts,
    me_notifications::read_all,
    me_preferences::read,
    me_preferences::replace,
    me_preferences::reset,
    me_preferences::schema,
    user_auth::stream_ticket,
))]
struct Described;

/// Each described path with its operations, by path.
pub(super) fn described() -> Map<String, Value> {
    let mut paths =
        serde_json::to_value(Described::openapi().paths).expect("paths always serialize");
    super::schemas::unwrap_descriptions(&mut paths);
    match paths {
        Value::Object(mut paths) => match paths.remove("paths") {
            Some(Value::Object(paths)) => paths,
            _ => paths,
        },
        _ => Map::new(),
    }
}
