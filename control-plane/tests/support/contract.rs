//! Every response the tests' HTTP server gives is held to `openapi.json`
//! (issue 15: "a test that validates every response the test suite
//! receives against it").
//!
//! [`check`] is a middleware that [`super::serve`] puts around the router.
//! For each answer to a documented operation it checks that the status is
//! one the operation lists (exactly, as a range such as `4XX`, or as
//! `default`), that the content type is one that status documents, and
//! that a JSON body validates against the documented schema (JSON Schema
//! 2020-12, as OpenAPI 3.1 says, with `#/components/…` references
//! resolving against the document). A response that breaks the contract is
//! replaced by a `500` whose body names the operation and what broke, so
//! the test that received it fails on its status or body, and the breach is
//! printed to stderr.
//!
//! Not checked here: requests to paths or methods the document does not
//! have (`openapi.rs` holds the router and the document to the same
//! routes), WebSocket upgrades (`101`), and event streams, which never end.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use axum::body::{Body, to_bytes};
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use jsonschema::Validator;
use serde_json::{Value, json};

const DOCUMENT: &str = include_str!("../../openapi.json");
/// The methods an OpenAPI path item may hold.
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// The middleware: answers as the router did, unless the answer breaks the
/// document (see the module documentation).
pub async fn check(request: Request, next: Next) -> Response {
    let method = request.method().as_str().to_ascii_lowercase();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let Some(operation) = contract().operation(&method, &path) else {
        return response;
    };
    let status = response.status();
    let content_type = media_type(response.headers().get(header::CONTENT_TYPE));
    if status == StatusCode::SWITCHING_PROTOCOLS || content_type == "text/event-stream" {
        return response;
    }
    let (parts, body) = response.into_parts();
    let bytes = match to_bytes(body, usize::MAX).await {
        Ok(bytes) => bytes,
        Err(error) => return breach(operation, status, &format!("unreadable body: {error}")),
    };
    match operation.judge(status, &content_type, &bytes) {
        Ok(()) => Response::from_parts(parts, Body::from(bytes)),
        Err(problem) => breach(operation, status, &problem),
    }
}

/// The `500` that replaces a response that broke the document.
fn breach(operation: &Operation, status: StatusCode, problem: &str) -> Response {
    let message = format!(
        "response breaks openapi.json: {} {} answered {status}: {problem}",
        operation.method.to_ascii_uppercase(),
        operation.template,
    );
    eprintln!("{message}");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        axum::Json(json!({ "error": "openapi_contract", "message": message })),
    )
        .into_response()
}

/// `type/subtype` of a `Content-Type`, lower-cased, without parameters;
/// empty when there is none.
fn media_type(value: Option<&HeaderValue>) -> String {
    value
        .and_then(|value| value.to_str().ok())
        .map(essence)
        .unwrap_or_default()
}

fn essence(media_type: &str) -> String {
    media_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

fn contract() -> &'static Contract {
    static CONTRACT: OnceLock<Contract> = OnceLock::new();
    CONTRACT.get_or_init(Contract::load)
}

/// Every documented operation, with its responses compiled.
struct Contract {
    operations: Vec<Operation>,
}

struct Operation {
    method: String,
    template: String,
    /// The template's segments; `None` for a `{parameter}`.
    segments: Vec<Option<String>>,
    /// By status key as written (`200`, `4XX`, `default`).
    responses: BTreeMap<String, Documented>,
}

/// One documented response: its media types, each with the validator of
/// its schema (`None`: not JSON, or no schema).
struct Documented {
    content: Vec<(String, Option<Validator>)>,
}

impl Contract {
    fn load() -> Self {
        let document: Value = serde_json::from_str(DOCUMENT).expect("openapi.json is JSON");
        let mut operations = Vec::new();
        for (template, item) in document["paths"].as_object().expect("paths") {
            for method in METHODS {
                let Some(operation) = item.get(method) else {
                    continue;
                };
                let responses = operation["responses"]
                    .as_object()
                    .expect("responses")
                    .iter()
                    .map(|(status, response)| {
                        (status.clone(), Documented::compile(&document, response))
                    })
                    .collect();
                operations.push(Operation {
                    method: method.to_owned(),
                    template: template.clone(),
                    segments: template
                        .split('/')
                        .map(|segment| {
                            (!(segment.starts_with('{') && segment.ends_with('}')))
                                .then(|| segment.to_owned())
                        })
                        .collect(),
                    responses,
                });
            }
        }
        Self { operations }
    }

    /// The operation `method path` is. The path picks its template first,
    /// whatever the method: of those that match, the one with the most
    /// literal segments (`/read-all` before `/{id}`), as a router does. The
    /// method then picks the operation, if that template has it.
    fn operation(&self, method: &str, path: &str) -> Option<&Operation> {
        let segments: Vec<&str> = path.split('/').collect();
        let template = &self
            .operations
            .iter()
            .filter(|operation| operation.matches(&segments))
            .max_by_key(|operation| operation.segments.iter().flatten().count())?
            .template;
        self.operations
            .iter()
            .find(|operation| &operation.template == template && operation.method == method)
    }
}

impl Documented {
    fn compile(document: &Value, response: &Value) -> Self {
        let response = match response.get("$ref").and_then(Value::as_str) {
            Some(target) => document
                .pointer(target.trim_start_matches('#'))
                .unwrap_or_else(|| panic!("$ref {target} does not resolve")),
            None => response,
        };
        let content = response
            .get("content")
            .and_then(Value::as_object)
            .map(|content| {
                content
                    .iter()
                    .map(|(media_type, media)| {
                        let media_type = essence(media_type);
                        let validator = media
                            .get("schema")
                            .filter(|_| is_json(&media_type))
                            .map(|schema| compile_schema(document, schema));
                        (media_type, validator)
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self { content }
    }
}

/// A validator for `schema` whose `#/components/…` references resolve:
/// the document's components sit beside the schema at its root.
fn compile_schema(document: &Value, schema: &Value) -> Validator {
    let mut root = schema.clone();
    if let Some(object) = root.as_object_mut() {
        object.insert("components".into(), document["components"].clone());
    }
    jsonschema::draft202012::new(&root)
        .unwrap_or_else(|error| panic!("openapi.json schema {schema} does not compile: {error}"))
}

fn is_json(media_type: &str) -> bool {
    media_type == "application/json" || media_type.ends_with("+json")
}

impl Operation {
    fn matches(&self, segments: &[&str]) -> bool {
        self.segments.len() == segments.len()
            && self
                .segments
                .iter()
                .zip(segments)
                .all(|(template, actual)| match template {
                    Some(literal) => literal == actual,
                    None => !actual.is_empty(),
                })
    }

    /// `Ok` when the response is one the document allows.
    fn judge(&self, status: StatusCode, content_type: &str, body: &[u8]) -> Result<(), String> {
        let code = status.as_str();
        let range = format!("{}XX", &code[..1]);
        let documented = self
            .responses
            .get(code)
            .or_else(|| self.responses.get(&range))
            .or_else(|| self.responses.get("default"))
            .ok_or_else(|| {
                format!(
                    "status {code} is not documented (documented: {})",
                    self.responses
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
        if documented.content.is_empty() {
            return if body.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "a body ({} bytes, `{content_type}`) where the document has none",
                    body.len()
                ))
            };
        }
        if body.is_empty() && content_type.is_empty() {
            // HEAD, or a status whose body the server may omit.
            return Ok(());
        }
        let (_, validator) = documented
            .content
            .iter()
            .find(|(media_type, _)| media_type == content_type)
            .ok_or_else(|| {
                format!(
                    "content type `{content_type}` is not documented for {code} (documented: {})",
                    documented
                        .content
                        .iter()
                        .map(|(media_type, _)| media_type.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
        let Some(validator) = validator else {
            return Ok(());
        };
        let value: Value = serde_json::from_slice(body)
            .map_err(|error| format!("the body is not JSON ({error})"))?;
        let errors: Vec<String> = validator
            .iter_errors(&value)
            .take(5)
            .map(|error| format!("at `{}`: {error}", error.instance_path()))
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "body {value} does not fit the schema: {}",
                errors.join("; ")
            ))
        }
    }
}
