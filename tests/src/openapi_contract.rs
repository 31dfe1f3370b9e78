//! The control plane's answers held to its `openapi.json` (issue 15: "a
//! test that validates every response the test suite receives against
//! it").
//!
//! [`check`] judges one answer to a documented operation: its status must
//! be one the operation lists (exactly, as a range such as `4XX`, or as
//! `default`), its content type one that status documents, and a JSON
//! body must validate against the documented schema (JSON Schema 2020-12,
//! as OpenAPI 3.1 says, with `#/components/…` references resolving against
//! the document). Its callers: the control plane's HTTP tests, whose
//! server answers through a middleware that uses it
//! (`control-plane/tests/support`), and the end-to-end tests' requests to
//! the real program, read through [`read_checked`] (admin, user-token and
//! public routes alike: [`crate::ControlPlane::send_as`], and the signed
//! links the notify tests follow).
//!
//! Not judged: paths or methods the document does not have
//! (`control-plane/tests/openapi.rs` holds the router and the document to
//! the same routes), WebSocket upgrades (`101`) and event streams.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use jsonschema::Validator;
use serde_json::Value;

const DOCUMENT: &str = include_str!("../../control-plane/openapi.json");
/// The methods an OpenAPI path item may hold.
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Judges the answer `status`, `content_type` (the header's value, if any)
/// and `body` to `method path` (the request's path, without the query).
/// `Err` says which operation and what broke the document.
pub fn check(
    method: &str,
    path: &str,
    status: u16,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<(), String> {
    let method = method.to_ascii_lowercase();
    let Some(operation) = contract().operation(&method, path) else {
        return Ok(());
    };
    let content_type = content_type.map(essence).unwrap_or_default();
    if status == 101 || content_type == "text/event-stream" {
        return Ok(());
    }
    operation
        .judge(status, &content_type, body)
        .map_err(|problem| {
            format!(
                "answer breaks openapi.json: {} {} answered {status}: {problem}",
                method.to_ascii_uppercase(),
                operation.template,
            )
        })
}

/// An answer read whole by [`read_checked`].
#[derive(Debug)]
pub struct Checked {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Checked {
    /// The body as text (lossy for bytes that are not UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Reads `reply` to the `method` request whole and [`check`]s it against
/// the document; `Err` names the request and what broke.
pub async fn read_checked(
    method: &reqwest::Method,
    reply: reqwest::Response,
) -> Result<Checked, String> {
    let url = reply.url().clone();
    let status = reply.status().as_u16();
    let headers = reply.headers().clone();
    let body = reply
        .bytes()
        .await
        .map_err(|error| format!("{method} {url}: reading the answer: {error}"))?
        .to_vec();
    let content_type = headers
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok());
    check(method.as_str(), url.path(), status, content_type, &body)?;
    Ok(Checked {
        status,
        headers,
        body,
    })
}

/// `type/subtype` of a `Content-Type`, lower-cased, without parameters.
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
    fn judge(&self, status: u16, content_type: &str, body: &[u8]) -> Result<(), String> {
        let code = status.to_string();
        let range = format!("{}XX", &code[..1]);
        let documented = self
            .responses
            .get(&code)
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
