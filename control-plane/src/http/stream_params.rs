//! What the live stream's two operations (`GET /v1/me/stream`, WebSocket;
//! `GET /v1/me/events`, SSE; see [`super::me_stream`]) document beyond
//! their Rust types: the `cursor` both read, the headers each transport
//! needs, and the shape of one Server-Sent Event. Built with utoipa's
//! builders: `cursor` takes any `u64` (a derived maximum would be written
//! as a float), and the headers take one exact value each.

use utoipa::IntoParams;
use utoipa::openapi::path::{Parameter, ParameterIn};
use utoipa::openapi::schema::{Object, ObjectBuilder, Schema, Type};
use utoipa::openapi::{Ref, RefOr, Required};

use super::openapi::{parameter, string_enum};

/// `?cursor=`: resume after this change (both transports).
pub(crate) struct CursorParam;

impl IntoParams for CursorParam {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let schema = ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(0))
            .maximum(Some(u64::MAX));
        let what = "Resume after this change sequence.";
        vec![parameter("cursor", ParameterIn::Query, what, schema).build()]
    }
}

/// The headers of a WebSocket upgrade request (RFC 6455).
pub(crate) struct UpgradeHeaders;

impl IntoParams for UpgradeHeaders {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let upgrade = "A WebSocket upgrade (RFC 6455).";
        let key = ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some("^[A-Za-z0-9+/]{22}==$"))
            .build();
        vec![
            header("Connection", true, upgrade, string_enum(["Upgrade"])),
            header("Upgrade", true, upgrade, string_enum(["websocket"])),
            header(
                "Sec-WebSocket-Version",
                true,
                "RFC 6455's version.",
                string_enum(["13"]),
            ),
            header(
                "Sec-WebSocket-Key",
                true,
                "16 random bytes, base64 (RFC 6455).",
                key,
            ),
        ]
    }
}

/// `Last-Event-ID`, which EventSource sends when it reconnects.
pub(crate) struct LastEventId;

impl IntoParams for LastEventId {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let seq = ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some("^[0-9]{0,19}$"))
            .build();
        vec![header(
            "Last-Event-ID",
            false,
            "Sent by EventSource when it reconnects; wins over `cursor`. A change's `seq` (what the server sent as `id:`); empty is the same as absent.",
            seq,
        )]
    }
}

fn header(name: &str, required: bool, description: &str, schema: Object) -> Parameter {
    let required = if required {
        Required::True
    } else {
        Required::False
    };
    parameter(name, ParameterIn::Header, description, schema)
        .required(required)
        .build()
}

/// One Server-Sent Event of `GET /v1/me/events` (its schema only): `data`
/// holds a JSON `StreamFrame`; change frames carry `id: <seq>`.
pub(crate) struct SseEvent;

impl utoipa::PartialSchema for SseEvent {
    fn schema() -> RefOr<Schema> {
        let string = || ObjectBuilder::new().schema_type(Type::String);
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some(
                "One event: `data` is a JSON `StreamFrame` (#/components/schemas/StreamFrame); change frames carry `id: <seq>`.",
            ))
            .property(
                "data",
                string()
                    .content_media_type("application/json")
                    .content_schema(Some(Ref::from_schema_name("StreamFrame"))),
            )
            .property("id", string().pattern(Some("^[0-9]+$")))
            .property("event", string())
            .property("retry", ObjectBuilder::new().schema_type(Type::Integer))
            .required("data")
            .into()
    }
}

impl utoipa::ToSchema for SseEvent {}
