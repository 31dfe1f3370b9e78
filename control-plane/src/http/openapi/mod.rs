//! `GET /openapi.json`: the OpenAPI 3.1 document of this HTTP API, so a
//! binary describes exactly the routes it serves. Public, like `/`: it
//! holds no secrets. `nudge-control-plane openapi` prints the same
//! document, and `control-plane/openapi.json` is that output, committed
//! for readers and tools (`tests/openapi.rs` fails when it is stale).
//!
//! The document is assembled once, from three parts:
//!
//! * **Operations described at their handlers** ([`paths`]: every route
//!   has a `#[utoipa::path]` on its handler naming its route, parameters,
//!   the Rust types of its body and answers, and the shared error answers
//!   of [`responses`]). Path parameters several routes share are
//!   [`path_params`]; a query a handler parses by hand (a repeated key,
//!   refusals that name their parameter) is documented by an `IntoParams`
//!   type beside its parser, and a unit test there holds the parser to it.
//! * **Schemas from the types** the handlers serialize and read
//!   ([`schemas`]): derived (`utoipa`'s `ToSchema`), so a field added to,
//!   renamed in or made optional in such a type changes the document with
//!   it; or, for the request bodies whose accepted forms are stricter than
//!   their struct (a device registration, a bulk action, a broadcast
//!   request: a `oneOf` by kind), built beside the type from the constants
//!   its checks use.
//! * **The frame, written by hand** (`hand_written.json`): `info`, the
//!   servers and tags, the security schemes and the error answers several
//!   operations share (each with its codes). It has no paths and no
//!   schemas; a schema named both there and in code would be refused (the
//!   tests below), never silently overridden.
//!
//! `tests/openapi.rs` keeps the document in step with the router both
//! ways: every documented operation exists, and every `.route(…)` in
//! `src/http/` is documented.

pub(crate) mod path_params;
mod paths;
pub(crate) mod responses;
mod schemas;

use std::sync::LazyLock;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Map, Value};

use super::HttpState;

/// The hand-written frame: everything but the operations and the schemas.
const HAND_WRITTEN: &str = include_str!("hand_written.json");

/// The whole document, pretty-printed, as served and as committed.
pub fn document() -> &'static str {
    static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
        let document = assemble(HAND_WRITTEN, schemas::derived(), paths::described())
            .unwrap_or_else(|error| panic!("the OpenAPI document cannot be assembled: {error}"));
        let mut text =
            serde_json::to_string_pretty(&document).expect("a JSON value always serializes");
        text.push('\n');
        text
    });
    &DOCUMENT
}

/// The hand-written part with the described operations as `paths` and
/// the derived schemas added under `components.schemas`. A schema in both
/// parts, or paths in the hand-written one, is an error: one of the two
/// would be dead text.
fn assemble(
    hand_written: &str,
    derived: Vec<(String, Value)>,
    described: Map<String, Value>,
) -> Result<Value, String> {
    let mut document: Value = serde_json::from_str(hand_written)
        .map_err(|error| format!("hand_written.json is not JSON: {error}"))?;
    let root = document
        .as_object_mut()
        .ok_or("hand_written.json is not an object")?;
    if root.contains_key("paths") {
        return Err(
            "hand_written.json has paths: every operation is described at its handler".to_owned(),
        );
    }
    root.insert("paths".to_owned(), Value::Object(described));
    let schemas = document
        .pointer_mut("/components")
        .and_then(Value::as_object_mut)
        .ok_or("hand_written.json has no components object")?
        .entry("schemas")
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
        .ok_or("components.schemas in hand_written.json is not an object")?;
    for (name, schema) in derived {
        if schemas.contains_key(&name) {
            return Err(format!(
                "schema {name} is both derived from its type and written in hand_written.json"
            ));
        }
        schemas.insert(name, schema);
    }
    Ok(document)
}

/// Text without NUL (what a database column holds on either engine), as a
/// JSON Schema pattern (ECMA-262).
pub(crate) const NO_NUL: &str = "^[^\\u0000]*$";

/// Text without control characters (C0, DEL, C1), as a JSON Schema
/// pattern (ECMA-262).
pub(crate) const NO_CONTROL_CHARACTERS: &str = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$";

/// A boolean that is always `true` (JSON Schema's `enum: [true]`; utoipa
/// has no `const`), for `schema_with` on such a field.
pub(crate) fn always_true() -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::Boolean)
        .enum_values(Some([true]))
        .build()
}

/// A string that is one of `values`, for `schema_with` on a field whose
/// Rust type is wider than what the API offers.
pub(crate) fn string_enum<'a>(
    values: impl IntoIterator<Item = &'a str>,
) -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(values))
        .build()
}

/// A parameter built by hand, for the `IntoParams` impls whose schema is
/// computed (a derived parameter with a computed schema loses its
/// description): `name` in `place`, described, with `schema`; required
/// in the path, optional elsewhere (`.required(…)` changes that).
pub(crate) fn parameter(
    name: &str,
    place: utoipa::openapi::path::ParameterIn,
    description: &str,
    schema: impl Into<utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>>,
) -> utoipa::openapi::path::ParameterBuilder {
    use utoipa::openapi::Required;
    use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
    let required = match place {
        ParameterIn::Path => Required::True,
        _ => Required::False,
    };
    ParameterBuilder::new()
        .name(name)
        .parameter_in(place)
        .required(required)
        .description(Some(description))
        .schema(Some(schema))
}

/// The query parameters the document gives `GET path`, each with its
/// schema: for the tests that hold a query parsed by hand to what its
/// operation documents.
#[cfg(test)]
pub(crate) fn documented_query(path: &str) -> Vec<(String, Value)> {
    let document: Value = serde_json::from_str(document()).expect("the document is JSON");
    let operation = &document["paths"][path]["get"];
    assert!(operation.is_object(), "no GET {path} in the document");
    operation["parameters"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|parameter| parameter["in"] == "query")
        .map(|parameter| {
            let name = parameter["name"].as_str().expect("a named parameter");
            (name.to_owned(), parameter["schema"].clone())
        })
        .collect()
}

pub fn router() -> Router<HttpState> {
    Router::new().route("/openapi.json", get(serve))
}

#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "getOpenApi",
    summary = "This document",
    tags = ["service"],
    security(),
    responses(
        (status = 200, body = Object,
         description = "The OpenAPI 3.1 document of this API (compiled into the binary)."),
    ),
)]
pub(crate) async fn serve() -> Response {
    let mut response = document().into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_assembles_without_a_schema_in_both_parts() {
        let document: Value = serde_json::from_str(document()).unwrap();
        for (name, _) in schemas::derived() {
            assert!(
                document["components"]["schemas"][&name].is_object(),
                "derived schema {name} is missing from the document"
            );
        }
    }

    /// A delivery with every optional part set (an attempt, a workflow
    /// step, a cost) serializes to what its derived schema allows. An
    /// inlined enum once derived as `allOf` with `type: object`, which no
    /// outcome string fits; only an end-to-end run had caught it.
    #[test]
    fn a_full_delivery_fits_its_derived_schema() {
        use crate::channels::{ChannelKind, OutboundMessage, Recipient};
        use crate::delivery::model::{
            Attempt, AttemptOutcome, Delivery, Engagement, NewDelivery, StepGate,
        };
        use crate::event::Priority;

        let now = jiff::Timestamp::now();
        let mut delivery = Delivery::new(
            NewDelivery {
                notification_id: "n1".to_owned(),
                user_id: "u1".to_owned(),
                channel: ChannelKind::Email,
                priority: Priority::High,
                message: OutboundMessage::default(),
                recipient: Recipient::Email {
                    address: "anna@example.com".to_owned(),
                    name: None,
                },
                not_before: None,
            },
            now,
        );
        delivery.attempt_log.push(Attempt {
            at: now,
            outcome: AttemptOutcome::Skipped,
            answer: "step 2 cancelled".to_owned(),
        });
        delivery.step = Some(StepGate {
            step: 2,
            unless: [Engagement::Read, Engagement::Clicked].into(),
        });
        delivery.cost = Some("0.05".parse().unwrap());
        delivery.template = Some("welcome".to_owned());
        delivery.sent_at = Some(now);

        let document: Value = serde_json::from_str(document()).unwrap();
        let schema = serde_json::json!({
            "$ref": "#/components/schemas/Delivery",
            "components": document["components"],
        });
        let validator = jsonschema::draft202012::new(&schema).unwrap();
        let value = serde_json::to_value(&delivery).unwrap();
        let problems: Vec<String> = validator
            .iter_errors(&value)
            .map(|error| format!("{}: {error}", error.instance_path()))
            .collect();
        assert!(problems.is_empty(), "{problems:#?}");
    }

    #[test]
    fn a_schema_in_both_parts_is_refused() {
        let hand_written = r#"{"components": {"schemas": {"Frequency": {"type": "string"}}}}"#;
        let derived = vec![(
            "Frequency".to_owned(),
            serde_json::json!({"type": "string"}),
        )];
        let error = assemble(hand_written, derived, Map::new()).unwrap_err();
        assert!(
            error.contains("schema Frequency is both derived"),
            "{error}"
        );
    }

    #[test]
    fn paths_in_the_hand_written_part_are_refused() {
        let hand_written = r#"{"paths": {"/v1/x": {"get": {}}}, "components": {"schemas": {}}}"#;
        let error = assemble(hand_written, Vec::new(), Map::new()).unwrap_err();
        assert!(error.contains("hand_written.json has paths"), "{error}");
    }
}
