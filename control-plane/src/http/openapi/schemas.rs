//! The schemas of the types the handlers serialize and read: each listed
//! type, and every type its fields name, becomes a `components.schemas`
//! entry under its API name (`#[schema(as = …)]` where that differs from
//! the Rust name). Most derive `ToSchema`; the few request bodies whose
//! accepted forms are stricter than their struct implement it by hand
//! beside the type (`NewDevice`, `BulkRequest`, `http::broadcast_schemas`).

use serde_json::Value;
use utoipa::OpenApi;

use crate::analytics::ReportJson as AnalyticsReport;
use crate::channels::ChannelKind;
use crate::delivery::Delivery;
use crate::devices::{Device, DeviceList, NewDevice};
use crate::event::{EventPage, Profile};
use crate::http::admin_api::Stats;
use crate::http::admin_notifications::{
    DeadLetterPage, NotificationList, NotificationWithDeliveries,
};
use crate::http::broadcast_schemas::{AudienceRequest, SegmentRequest, TraitCondition};
use crate::http::broadcasts::{
    BroadcastPage, NewBroadcast, TopicSubscribed, TopicSubscriberPage, UserTopics,
};
use crate::http::devices::Switch;
use crate::http::email_callbacks::{
    Answer as EmailCallbackResults, Batch as EmailCallbackBatch, RawEvent as EmailCallbackEvent,
};
use crate::http::me_activity::{ActivityPage, Summary as ActivitySummary};
use crate::http::me_notifications::{
    Bulk as BulkRequest, BulkResult, InboxActionName as InboxAction, ReadAll as ReadAllRequest,
    ReadAllResult, Snooze as SnoozeRequest,
};
use crate::http::me_preferences::Schema as PreferencesSchema;
use crate::http::me_stream::{ClientFrame, Frame as StreamFrame};
use crate::http::public_links::UnsubscribeResult;
use crate::http::sms_callbacks::SmsCallbackResult;
use crate::http::user_auth::StreamTicket;
use crate::http::{ErrorBody, ServiceInfo};
use crate::inbox::{CategoryCounts, Counts, InboxItem, Page};
use crate::preferences::{TypePreferences, UserPreferences};
use crate::privacy::{Erased as UserErasure, UserExport};
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
    Page,
    Profile,
    Stats,
    ActivityPage,
    ActivitySummary,
    TopicSubscriberPage,
    TopicSubscribed,
    UserTopics,
    SmsCallbackResult,
    UnsubscribeResult,
    StreamFrame,
    ClientFrame,
    ServiceInfo,
    ReadAllRequest,
    SnoozeRequest,
    EventPage,
    UserExport,
    // Named by `EmailCallbackBatch.events`, which is built by hand (its
    // limit comes from a constant).
    EmailCallbackEvent,
    EmailCallbackBatch,
    EmailCallbackResults,
    BroadcastPage,
    AnalyticsReport,
    UserErasure,
    BulkRequest,
    InboxAction,
    NewDevice,
    NewBroadcast,
    AudienceRequest,
    SegmentRequest,
    TraitCondition,
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
            let mut schema = serde_json::to_value(schema).expect("a schema always serializes");
            unwrap_descriptions(&mut schema);
            (name, schema)
        })
        .collect()
}

/// Doc comments are wrapped at 80 columns; utoipa keeps their line
/// breaks. Markdown reads a single break as a space anyway, so each
/// paragraph's lines are joined into one (a blank line still separates
/// paragraphs, and a line starting a list item keeps its break).
pub(super) fn unwrap_descriptions(value: &mut Value) {
    match value {
        Value::Object(members) => {
            for (key, member) in members.iter_mut() {
                match member {
                    Value::String(text) if key == "description" => *text = unwrap(text),
                    other => unwrap_descriptions(other),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(unwrap_descriptions),
        _ => {}
    }
}

fn unwrap(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (index, line) in text.split('\n').enumerate() {
        let starts_item = line.starts_with("* ") || line.starts_with("- ");
        if index > 0 {
            let paragraph_break = line.is_empty() || out.ends_with('\n');
            out.push(if paragraph_break || starts_item {
                '\n'
            } else {
                ' '
            });
        }
        out.push_str(line);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapped_lines_join_and_paragraphs_and_items_stay() {
        assert_eq!(unwrap("one\ntwo three\nfour"), "one two three four");
        assert_eq!(unwrap("one\n\ntwo\nthree"), "one\n\ntwo three");
        assert_eq!(unwrap("list:\n* a\n* b"), "list:\n* a\n* b");
    }

    #[test]
    fn only_descriptions_are_unwrapped() {
        let mut schema = serde_json::json!({
            "description": "a\nb",
            "pattern": "x\ny",
            "properties": {"f": {"description": "c\nd"}},
            "oneOf": [{"description": "e\nf"}],
        });
        unwrap_descriptions(&mut schema);
        assert_eq!(schema["description"], "a b");
        assert_eq!(schema["pattern"], "x\ny");
        assert_eq!(schema["properties"]["f"]["description"], "c d");
        assert_eq!(schema["oneOf"][0]["description"], "e f");
    }
}
