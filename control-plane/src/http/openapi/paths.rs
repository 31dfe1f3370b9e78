//! The operations, described where their handlers are: each listed
//! handler carries a `#[utoipa::path]` naming its route, parameters, the
//! Rust types of its bodies and its answers, so the document cannot name
//! a type the handler does not have. Every route is listed here;
//! `tests/openapi.rs` fails on a route that is not.

use serde_json::{Map, Value};
use utoipa::OpenApi;

use crate::http::{
    admin_analytics, admin_api, admin_notifications, admin_parked, admin_preferences,
    admin_privacy, broadcasts, devices, email_callbacks, me_activity, me_notifications,
    me_preferences, me_stream, public_links, sms_callbacks, tracking, user_auth, web,
};

#[derive(OpenApi)]
#[openapi(paths(
    crate::http::root,
    crate::http::healthz,
    super::serve,
    web::script,
    web::styles,
    web::inbox_page,
    web::preferences_page,
    email_callbacks::email_events,
    sms_callbacks::twilio_status,
    public_links::page,
    public_links::unsubscribe,
    tracking::open,
    tracking::click,
    admin_analytics::report,
    admin_api::stats,
    admin_api::profile,
    admin_api::events,
    admin_parked::parked_events,
    admin_notifications::notification,
    admin_notifications::retry,
    admin_notifications::user_notifications,
    admin_notifications::dead_letters,
    admin_preferences::read,
    admin_preferences::replace,
    admin_preferences::reset,
    admin_privacy::lift,
    admin_privacy::export,
    admin_privacy::erase,
    devices::list,
    devices::register,
    devices::read,
    devices::switch,
    devices::remove,
    devices::my_list,
    devices::my_register,
    devices::my_read,
    devices::my_remove,
    me_notifications::list,
    me_notifications::export,
    me_notifications::counts,
    me_notifications::read_all,
    me_notifications::bulk,
    me_notifications::one,
    me_notifications::delete_one,
    me_notifications::snooze_one,
    me_notifications::act_on_one,
    me_activity::list,
    me_activity::summary,
    me_activity::export,
    me_preferences::read,
    me_preferences::replace,
    me_preferences::reset,
    me_preferences::schema,
    broadcasts::subscribe,
    broadcasts::unsubscribe,
    broadcasts::user_topics,
    broadcasts::create,
    broadcasts::read,
    broadcasts::cancel,
    broadcasts::my_topics,
    broadcasts::leave,
    broadcasts::subscribers,
    broadcasts::list,
    user_auth::stream_ticket,
    me_stream::websocket,
    me_stream::sse,
))]
struct Described;

/// Each described path with its operations, by path.
pub(super) fn described() -> Map<String, Value> {
    Described::openapi()
        .paths
        .paths
        .into_iter()
        .map(|(path, item)| {
            let mut item = serde_json::to_value(item).expect("a path item always serializes");
            super::schemas::unwrap_descriptions(&mut item);
            (path, item)
        })
        .collect()
}
