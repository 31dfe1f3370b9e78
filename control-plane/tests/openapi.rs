//! `openapi.json` (served at `GET /openapi.json`) kept in step with the
//! HTTP router, both ways:
//!
//! * **document → server**: every documented operation is sent to the real
//!   router on a loopback port (dummy path parameters, the auth its
//!   `security` names) and must exist: not the router's fallback (`404
//!   not_found` "no such route"), not `405`, and answering a status the
//!   operation documents. Secured operations refuse a request without
//!   credentials with `401`; public ones do not. Every method a documented
//!   path does *not* document must answer `405`.
//! * **server → document**: every `.route("…")` literal in
//!   `src/http/*.rs` (with its file's mount prefix) is a documented path,
//!   and the document has no path the sources lack.
//! * **fresh**: the committed file is the document the binary builds from
//!   its types and `src/http/openapi/hand_written.json`.
//! * **shape**: OpenAPI 3.1 (`openapi`, `info`, `paths`, `components`),
//!   every `$ref` resolves, every operation has a unique `operationId` and a
//!   success (`2xx`, `3xx`, or `101` for the WebSocket) response, path
//!   templates and path parameters agree, security schemes exist.
//!
//! Adding a route without documenting it fails here, naming the route.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use jiff::Timestamp;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use nudge_control_plane::http::HttpState;
use nudge_control_plane::http::user_auth::UserTokenSecret;
use nudge_control_plane::storage::Stores;

mod support;

const DOCUMENT: &str = include_str!("../openapi.json");
const USER_SECRET: &str = "the-app-backend-shares-this-32-byte-secret";
const ADMIN_TOKEN: &str = "the-operator-admin-token";
/// The methods an OpenAPI path item may have.
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];
/// The methods probed for `405` when a path does not document them (HEAD
/// is answered by every GET route, OPTIONS by the CORS layer).
const PROBED: [&str; 5] = ["get", "put", "post", "delete", "patch"];

fn document() -> Value {
    serde_json::from_str(DOCUMENT).expect("openapi.json is JSON")
}

/// Every operation: (path, method, operation, path item).
fn operations(doc: &Value) -> Vec<(String, String, Value, Value)> {
    let mut found = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths is an object") {
        for method in METHODS {
            if let Some(operation) = item.get(method) {
                found.push((
                    path.clone(),
                    method.to_owned(),
                    operation.clone(),
                    item.clone(),
                ));
            }
        }
    }
    found
}

/// Follows a local `$ref` (once is enough in this document).
fn resolve<'a>(doc: &'a Value, value: &'a Value) -> &'a Value {
    match value.get("$ref").and_then(Value::as_str) {
        Some(target) => doc
            .pointer(target.trim_start_matches('#'))
            .unwrap_or_else(|| panic!("$ref {target} does not resolve")),
        None => value,
    }
}

/// The parameters of an operation: its path item's, then its own.
fn parameters<'a>(doc: &'a Value, operation: &'a Value, item: &'a Value) -> Vec<&'a Value> {
    [item.get("parameters"), operation.get("parameters")]
        .into_iter()
        .flatten()
        .flat_map(|list| list.as_array().expect("parameters is an array"))
        .map(|parameter| resolve(doc, parameter))
        .collect()
}

/// `/a/{x}/b/{y}` → `/a/{}/b/{}`: parameter names do not matter.
fn normalise(path: &str) -> String {
    let mut out = String::new();
    let mut in_param = false;
    for ch in path.chars() {
        match ch {
            '{' => {
                in_param = true;
                out.push_str("{}");
            }
            '}' => in_param = false,
            _ if in_param => {}
            _ => out.push(ch),
        }
    }
    out
}

fn template_names(path: &str) -> BTreeSet<String> {
    path.split('{')
        .skip(1)
        .filter_map(|rest| rest.split_once('}').map(|(name, _)| name.to_owned()))
        .collect()
}

// ---------------------------------------------------------------------------
// Shape

#[test]
fn the_document_is_openapi_3_1_shaped() {
    let doc = document();
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "openapi must be 3.1.x"
    );
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    assert!(doc["paths"].is_object() && doc["components"].is_object());
    assert!(doc["components"]["schemas"].is_object());

    // Every $ref, anywhere, is local and resolves.
    fn refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
        match value {
            Value::Object(map) => {
                for (key, inner) in map {
                    match (key.as_str(), inner) {
                        ("$ref", Value::String(target)) => out.push(target),
                        _ => refs(inner, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|item| refs(item, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(!all.is_empty());
    let broken: Vec<&str> = all
        .iter()
        .copied()
        .filter(|target| {
            !target.starts_with("#/") || doc.pointer(&target[1..]).is_none_or(Value::is_null)
        })
        .collect();
    assert!(broken.is_empty(), "$refs that do not resolve: {broken:?}");

    let schemes = doc["components"]["securitySchemes"]
        .as_object()
        .expect("components.securitySchemes");
    for name in ["adminToken", "userToken"] {
        assert!(schemes.contains_key(name), "security scheme {name}");
    }

    let mut ids = BTreeMap::new();
    let mut problems = Vec::new();
    for (path, method, operation, item) in operations(&doc) {
        let at = format!("{} {path}", method.to_uppercase());
        match operation["operationId"].as_str() {
            Some(id) => {
                if let Some(other) = ids.insert(id.to_owned(), at.clone()) {
                    problems.push(format!("{at}: operationId {id} is also {other}'s"));
                }
            }
            None => problems.push(format!("{at}: no operationId")),
        }
        let statuses: Vec<&String> = operation["responses"]
            .as_object()
            .map(|responses| responses.keys().collect())
            .unwrap_or_default();
        if !statuses
            .iter()
            .any(|s| s.starts_with('2') || s.starts_with('3') || s.as_str() == "101")
        {
            problems.push(format!("{at}: no 2xx/3xx response ({statuses:?})"));
        }
        match operation["security"].as_array() {
            None => problems.push(format!("{at}: no security (use [] for public routes)")),
            Some(requirements) => {
                for requirement in requirements {
                    for name in requirement.as_object().into_iter().flat_map(|r| r.keys()) {
                        if !schemes.contains_key(name) {
                            problems.push(format!("{at}: unknown security scheme {name}"));
                        }
                    }
                }
            }
        }
        let declared: BTreeSet<String> = parameters(&doc, &operation, &item)
            .into_iter()
            .filter(|parameter| parameter["in"] == "path")
            .map(|parameter| parameter["name"].as_str().unwrap_or_default().to_owned())
            .collect();
        if declared != template_names(&path) {
            problems.push(format!(
                "{at}: path parameters {declared:?} do not match the template"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// ---------------------------------------------------------------------------
// Server → document

/// Where a route file's router is mounted (see `http::router`). A route
/// file missing here fails the test: say where it is mounted.
fn mount_prefix(file: &str, route: &str) -> &'static str {
    match file {
        "mod.rs" | "openapi/mod.rs" | "public_links.rs" | "sms_callbacks.rs" | "tracking.rs"
        | "email_callbacks.rs" | "web.rs" => "",
        "admin_api.rs"
        | "admin_notifications.rs"
        | "admin_parked.rs"
        | "admin_preferences.rs"
        | "admin_privacy.rs"
        | "admin_analytics.rs" => "/v1/admin",
        // `admin_router` (`/users/…`) and `me_router` (`/devices…`).
        "devices.rs" if route.starts_with("/users/") => "/v1/admin",
        "devices.rs" if route.starts_with("/devices") => "/v1/me",
        // `me_router` (`/topics`, `/topics/{topic}`) and `admin_router`.
        "broadcasts.rs" if matches!(route, "/topics" | "/topics/{topic}") => "/v1/me",
        "broadcasts.rs" => "/v1/admin",
        me if me.starts_with("me_") => "/v1/me",
        other => panic!(
            "src/http/{other} has route {route:?}: add the file's mount prefix to \
             mount_prefix in tests/openapi.rs"
        ),
    }
}

/// Every `.route("…"` path literal in `src/http/**/*.rs`, with the file it
/// is in (relative to `src/http`), prefixed by its mount point.
fn source_routes() -> BTreeMap<String, String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http");
    let mut routes = BTreeMap::new();
    let mut files = Vec::new();
    let mut dirs = vec![dir.clone()];
    while let Some(next) = dirs.pop() {
        for entry in std::fs::read_dir(&next).expect("src/http") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    for file in files {
        let name = file
            .strip_prefix(&dir)
            .expect("under src/http")
            .to_string_lossy()
            .into_owned();
        // Comments may mention `.route(…)` too: only code counts.
        let source: String = std::fs::read_to_string(&file)
            .expect("route file")
            .lines()
            .filter(|line| !line.trim_start().starts_with("//"))
            .map(|line| format!("{line}\n"))
            .collect();
        for (at, call) in source.match_indices(".route(") {
            // The literal may be on the next line.
            let rest = source[at + call.len()..].trim_start();
            let Some(literal) = rest.strip_prefix('"') else {
                panic!("src/http/{name}: a .route( whose path is not a string literal");
            };
            let route = &literal[..literal.find('"').expect("closing quote")];
            let full = format!("{}{route}", mount_prefix(&name, route));
            routes.insert(full, name.clone());
        }
    }
    routes
}

#[test]
fn every_route_in_the_sources_is_documented_and_nothing_else() {
    let doc = document();
    let sources = source_routes();
    assert!(
        sources.len() > 20,
        "the scan found only {sources:?}: is it still reading src/http?"
    );
    let documented: BTreeMap<String, String> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(|path| (normalise(path), path.clone()))
        .collect();
    let in_sources: BTreeMap<String, (String, String)> = sources
        .iter()
        .map(|(path, file)| (normalise(path), (path.clone(), file.clone())))
        .collect();
    let undocumented: Vec<String> = in_sources
        .iter()
        .filter(|(key, _)| !documented.contains_key(*key))
        .map(|(_, (path, file))| format!("{path} (src/http/{file})"))
        .collect();
    let unknown: Vec<&String> = documented
        .iter()
        .filter(|(key, _)| !in_sources.contains_key(*key))
        .map(|(_, path)| path)
        .collect();
    assert!(
        undocumented.is_empty() && unknown.is_empty(),
        "routes missing from control-plane/openapi.json: {undocumented:#?}\n\
         paths openapi.json documents that no .route(…) in src/http has: {unknown:#?}"
    );
}

// ---------------------------------------------------------------------------
// Document → server

struct Server {
    _dir: tempfile::TempDir,
    base: String,
    client: reqwest::Client,
    user_token: String,
}

impl Server {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let stores = Stores::open_embedded(dir.path()).await.unwrap();
        let secret: UserTokenSecret = USER_SECRET.parse().unwrap();
        let user_token = secret.sign(&json!({
            "sub": "u123",
            "exp": Timestamp::now().as_second() + 600,
        }));
        let state = HttpState {
            user_tokens: Some(secret),
            admin_token: Some(ADMIN_TOKEN.into()),
            ..HttpState::standalone(&stores).unwrap()
        };
        let (base, _) = support::serve(state).await;
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Server {
            _dir: dir,
            base,
            client,
            user_token,
        }
    }

    /// The bearer token an operation's `security` asks for, if any.
    fn bearer_for(&self, operation: &Value) -> Option<&str> {
        let schemes: BTreeSet<&str> = operation["security"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_object)
            .flat_map(|requirement| requirement.keys().map(String::as_str))
            .collect();
        if schemes.contains("adminToken") {
            Some(ADMIN_TOKEN)
        } else if schemes.contains("userToken") {
            Some(&self.user_token)
        } else {
            None
        }
    }

    /// Sends `method` to `path`; the status and, for a 404, whether it
    /// was the router's fallback. Bodies of other answers are not read
    /// (the SSE route never ends).
    async fn send(&self, method: &str, path: &str, bearer: Option<&str>) -> (StatusCode, bool) {
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        let reply = request.send().await.unwrap();
        let status = reply.status();
        if status != StatusCode::NOT_FOUND {
            return (status, false);
        }
        let body: Value = reply.json().await.unwrap_or(Value::Null);
        let fallback =
            body["error"]["code"] == "not_found" && body["error"]["message"] == "no such route";
        (status, fallback)
    }
}

/// A value for a parameter: its example, else its schema's first enum
/// value or default, else a dummy.
fn sample(doc: &Value, parameter: &Value) -> String {
    let schema = resolve(doc, &parameter["schema"]);
    let value = parameter
        .get("example")
        .or_else(|| schema.get("enum").and_then(|values| values.get(0)))
        .or_else(|| schema.get("default"));
    match value {
        Some(Value::String(text)) => text.clone(),
        Some(other) => other.to_string(),
        None => "dummy".to_owned(),
    }
}

/// The operation's path with its parameters filled in, and its required
/// query parameters.
fn concrete_path(doc: &Value, path: &str, operation: &Value, item: &Value) -> String {
    let mut concrete = path.to_owned();
    let mut query = Vec::new();
    for parameter in parameters(doc, operation, item) {
        let name = parameter["name"].as_str().unwrap();
        match parameter["in"].as_str() {
            Some("path") => {
                concrete = concrete.replace(&format!("{{{name}}}"), &sample(doc, parameter));
            }
            Some("query") if parameter["required"] == true => {
                query.push(format!("{name}={}", sample(doc, parameter)));
            }
            _ => {}
        }
    }
    if !query.is_empty() {
        concrete = format!("{concrete}?{}", query.join("&"));
    }
    concrete
}

#[tokio::test]
async fn every_documented_operation_exists_with_its_auth() {
    let doc = document();
    let server = Server::start().await;
    let mut problems = Vec::new();
    for (path, method, operation, item) in operations(&doc) {
        let at = format!("{} {path}", method.to_uppercase());
        let concrete = concrete_path(&doc, &path, &operation, &item);
        let bearer = server.bearer_for(&operation);

        let (status, fallback) = server.send(&method, &concrete, bearer).await;
        if fallback {
            problems.push(format!("{at}: no such route (sent {concrete})"));
            continue;
        }
        if status == StatusCode::METHOD_NOT_ALLOWED {
            problems.push(format!("{at}: 405, the route has no such method"));
            continue;
        }
        let documented = operation["responses"]
            .as_object()
            .is_some_and(|responses| responses.contains_key(status.as_str()));
        if !documented {
            problems.push(format!(
                "{at}: answered {status} (sent {concrete}), which it does not document"
            ));
        }

        // Without credentials: secured operations refuse, public ones
        // do not ask.
        let (status, _) = server.send(&method, &concrete, None).await;
        match bearer {
            Some(_) if status != StatusCode::UNAUTHORIZED => problems.push(format!(
                "{at}: documented as secured, but answered {status} without credentials"
            )),
            None if status == StatusCode::UNAUTHORIZED => problems.push(format!(
                "{at}: documented as public, but answered 401 without credentials"
            )),
            _ => {}
        }
    }

    // Methods a documented path does not document are not served.
    for (path, item) in doc["paths"].as_object().unwrap() {
        let Some(operation) = METHODS.iter().find_map(|method| item.get(*method)) else {
            problems.push(format!("{path}: no operations"));
            continue;
        };
        let concrete = concrete_path(&doc, path, operation, item);
        for method in PROBED.iter().filter(|method| item.get(**method).is_none()) {
            // With credentials: the admin routes check them before the method.
            let bearer = server.bearer_for(operation);
            let (status, fallback) = server.send(method, &concrete, bearer).await;
            // A path that is not served at all was reported above.
            if !fallback && status != StatusCode::METHOD_NOT_ALLOWED {
                problems.push(format!(
                    "{} {path}: answered {status}, but the document has no such operation",
                    method.to_uppercase()
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// `control-plane/openapi.json` is the document the binary builds (the
/// derived schemas with the hand-written rest), not an older copy.
#[test]
fn the_committed_document_is_the_one_built() {
    let built = nudge_control_plane::http::openapi::document();
    assert!(
        DOCUMENT == built,
        "control-plane/openapi.json is stale; regenerate it with\n  \
         cargo run -p nudge-control-plane -- openapi > control-plane/openapi.json"
    );
}

#[tokio::test]
async fn the_server_serves_this_document() {
    let server = Server::start().await;
    let reply = server
        .client
        .get(format!("{}/openapi.json", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), StatusCode::OK);
    assert_eq!(reply.headers()["content-type"], "application/json");
    let served: Value = reply.json().await.unwrap();
    assert_eq!(served, document());
}

/// The response contract every `support::serve` test runs under
/// (`support/contract.rs`) refuses what the document does not allow, and
/// lets through what it does: a stand-in handler on a documented path
/// answers each case, behind the same middleware.
#[tokio::test]
async fn the_response_contract_refuses_what_the_document_does_not_allow() {
    use axum::response::IntoResponse;
    use tower::ServiceExt;

    async fn through_contract(status: u16, content_type: &str, body: &str) -> (u16, Value) {
        let (status, content_type, body) = (
            StatusCode::from_u16(status).unwrap(),
            content_type.to_owned(),
            body.to_owned(),
        );
        let app = axum::Router::new()
            .route(
                "/v1/me/preferences",
                axum::routing::get(move || async move {
                    (status, [("content-type", content_type)], body).into_response()
                }),
            )
            .layer(axum::middleware::from_fn(support::contract::check));
        let request = axum::http::Request::get("/v1/me/preferences")
            .body(axum::body::Body::empty())
            .unwrap();
        let response = app.oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    let fits = r#"{"types": {"order.shipped": {"channels": {"email": false}}}}"#;
    let (status, body) = through_contract(200, "application/json", fits).await;
    assert_eq!(status, 200, "a document that fits passes unchanged: {body}");
    assert_eq!(body["types"]["order.shipped"]["channels"]["email"], false);

    for (status, content_type, body, why) in [
        (
            200,
            "application/json",
            r#"{"types": 5}"#,
            "does not fit the schema",
        ),
        (
            200,
            "application/json",
            r#"{"types": {}, "frequency": null}"#,
            "does not fit",
        ),
        (
            200,
            "text/plain",
            "ok",
            "content type `text/plain` is not documented",
        ),
        (
            418,
            "application/json",
            "{}",
            "status 418 is not documented",
        ),
        (200, "application/json", "not json", "not JSON"),
    ] {
        let (answered, refusal) = through_contract(status, content_type, body).await;
        assert_eq!(answered, 500, "{status} {content_type} {body}: {refusal}");
        assert_eq!(refusal["error"], "openapi_contract");
        let message = refusal["message"].as_str().unwrap();
        assert!(
            message.contains("GET /v1/me/preferences") && message.contains(why),
            "{message}"
        );
    }
}
