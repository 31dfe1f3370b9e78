//! The HTTP API keeps the promises of its OpenAPI document where an outside
//! fuzzer (schemathesis, issue 15) found it did not, over real HTTP (the
//! control plane's router on a loopback port, real SQLite stores):
//!
//! * a request body that is not JSON, not the route's shape, or sent
//!   without `Content-Type: application/json` is a JSON `400 bad_request`
//!   naming what was wrong (never axum's plain-text `415`/`422`), also on
//!   routes whose body is optional, and changes nothing;
//! * schema-valid input is taken: lengths count characters, as JSON
//!   Schema's `maxLength` does;
//! * schema-invalid input is refused: quiet hours are two digits each, a
//!   body is a JSON object (not `[]`), activity kinds have no empty item,
//!   the parked events' numbers are not empty, preference type names are
//!   names a notify's `type` may have (at most 500 of them);
//! * the WebSocket route answers a plain GET with a JSON `400`;
//! * an analytics report's range is bounded (a century), so no request
//!   keeps the server busy for seconds.

use jiff::Timestamp;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use nudge_control_plane::http::HttpState;
use nudge_control_plane::http::user_auth::UserTokenSecret;
use nudge_control_plane::inbox::{InboxItem, InboxStore};
use nudge_control_plane::preferences::PreferenceStore;

#[macro_use]
mod support;
use support::Backend;

const SECRET: &str = "the-app-backend-shares-this-32-byte-secret";
const ADMIN: &str = "the-operator-admin-token";
const USER: &str = "u1";

struct Server {
    _dir: tempfile::TempDir,
    base: String,
    inbox: InboxStore,
    preferences: PreferenceStore,
    client: reqwest::Client,
    user_token: String,
}

/// An answer: status, `Content-Type`, body as JSON (`Null` if it is not).
struct Answer {
    status: StatusCode,
    content_type: String,
    body: Value,
}

impl Answer {
    /// A JSON `400 bad_request` whose message mentions `needle`.
    fn assert_bad_request(&self, needle: &str) {
        assert_eq!(self.status, StatusCode::BAD_REQUEST, "{}", self.body);
        assert_eq!(self.content_type, "application/json", "{}", self.body);
        assert_eq!(self.body["error"]["code"], "bad_request", "{}", self.body);
        let message = self.body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(needle), "{needle:?} not in {message:?}");
    }
}

impl Server {
    async fn start() -> Self {
        Self::start_on(Backend::Sqlite).await
    }

    async fn start_on(backend: Backend) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let stores = support::fresh_stores(backend, dir.path()).await;
        let secret: UserTokenSecret = SECRET.parse().unwrap();
        let user_token = secret.sign(&json!({
            "sub": USER,
            "exp": Timestamp::now().as_second() + 600,
        }));
        let state = HttpState {
            admin_token: Some(ADMIN.parse().unwrap()),
            user_tokens: Some(secret),
            ..HttpState::standalone(&stores).unwrap()
        };
        let (inbox, preferences) = (state.inbox.clone(), state.preferences.clone());
        let (base, _) = support::serve(state).await;
        Server {
            _dir: dir,
            base,
            inbox,
            preferences,
            client: reqwest::Client::new(),
            user_token,
        }
    }

    /// `method path` as the user (`/v1/me/…`) or the operator, with a raw
    /// body and its content type, if any.
    async fn send(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Option<&str>,
    ) -> Answer {
        let token = if path.starts_with("/v1/me/") {
            &self.user_token
        } else {
            ADMIN
        };
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        if let Some(body) = body {
            request = request.body(body.to_owned());
        }
        let reply = request.send().await.unwrap();
        let status = reply.status();
        let content_type = reply
            .headers()
            .get("content-type")
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let text = reply.text().await.unwrap();
        Answer {
            status,
            content_type,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
        }
    }

    async fn json(&self, method: Method, path: &str, body: &Value) -> Answer {
        self.send(
            method,
            path,
            Some("application/json"),
            Some(&body.to_string()),
        )
        .await
    }

    async fn unread(&self) -> u64 {
        self.inbox.counts(USER).await.unwrap().unread
    }
}

fn item(n: u64) -> InboxItem {
    InboxItem {
        id: format!("0190a000-0000-7000-8000-{n:012}"),
        notification_id: format!("n{n}"),
        notification_type: "comment".into(),
        category: Some("social".into()),
        title: format!("item {n}"),
        body: String::new(),
        data: json!({}),
        created_at: Timestamp::now(),
        seen_at: None,
        read_at: None,
        archived_at: None,
        snoozed_until: None,
    }
}

/// Before: axum's `Option<Json<_>>` answered `422 text/plain` for an
/// unknown field, and ignored a body sent without a content type; a
/// `null` body was refused though the document allows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_optional_body_is_refused_in_json_and_changes_nothing() {
    let server = Server::start().await;
    server.inbox.add(USER, &item(1)).await.unwrap();
    let path = "/v1/me/notifications/read-all";

    let unknown = server
        .json(Method::POST, path, &json!({"categroy": "social"}))
        .await;
    unknown.assert_bad_request("categroy");
    let wrong_type = server
        .json(Method::POST, path, &json!({"category": 5}))
        .await;
    wrong_type.assert_bad_request("category");
    let not_json = server
        .send(Method::POST, path, Some("application/json"), Some("{nope"))
        .await;
    not_json.assert_bad_request("request body");
    let untyped = server
        .send(Method::POST, path, None, Some(r#"{"category": 5}"#))
        .await;
    untyped.assert_bad_request("Content-Type: application/json");
    assert_eq!(server.unread().await, 1, "a refused body marked something");

    // No body at all is "every category"; null is "every category" too.
    let all = server
        .json(Method::POST, path, &json!({"category": null}))
        .await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.body);
    assert_eq!(all.body["marked"], 1, "{}", all.body);
    let none = server.send(Method::POST, path, None, None).await;
    assert_eq!(none.status, StatusCode::OK, "{}", none.body);
    // A JSON `null` body is no body (the document derives an optional
    // body as its schema or null).
    let null = server
        .send(Method::POST, path, Some("application/json"), Some(" null "))
        .await;
    assert_eq!(null.status, StatusCode::OK, "{}", null.body);
}

/// Every route with a required JSON body refuses alike, through the one
/// shared extractor (`JsonBody`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_required_bodies_are_json_400s() {
    let server = Server::start().await;
    let routes = [
        (Method::PUT, "/v1/me/preferences"),
        (Method::PUT, "/v1/admin/users/u1/preferences"),
        (Method::POST, "/v1/me/devices"),
        (Method::POST, "/v1/admin/users/u1/devices"),
        (Method::POST, "/v1/me/notifications/bulk"),
    ];
    for (method, path) in routes {
        server
            .send(method.clone(), path, None, Some("{}"))
            .await
            .assert_bad_request("Content-Type: application/json");
        server
            .send(method.clone(), path, Some("text/plain"), Some("{}"))
            .await
            .assert_bad_request("Content-Type: application/json");
        server
            .json(method, path, &json!({"unknown_field": true}))
            .await
            .assert_bad_request("unknown_field");
    }
    assert_eq!(
        server.preferences.get(USER).await.unwrap(),
        Default::default()
    );
}

/// Before: `+1:30` parsed (`"+1".parse::<i8>()` is 1) although the
/// document's pattern is two digits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_hours_are_two_digits_each() {
    let server = Server::start().await;
    let quiet =
        |start: &str| json!({"quiet_hours": {"start": start, "end": "07:00", "timezone": "UTC"}});
    for start in ["+1:30", "-0:30", "1:300", "24:00"] {
        server
            .json(Method::PUT, "/v1/me/preferences", &quiet(start))
            .await
            .assert_bad_request("HH:MM");
    }
    assert_eq!(
        server.preferences.get(USER).await.unwrap(),
        Default::default()
    );
    let fine = server
        .json(Method::PUT, "/v1/me/preferences", &quiet("22:30"))
        .await;
    assert_eq!(fine.status, StatusCode::OK, "{}", fine.body);
    assert_eq!(fine.body["quiet_hours"]["start"], "22:30", "{}", fine.body);
}

/// A type's frequency left to its default reads back as `null`, which
/// the document allows, and a `null` is accepted as "the default".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_default_frequency_is_null_both_ways() {
    let server = Server::start().await;
    let document = json!({"types": {"invoice": {"channels": {"sms": true}, "frequency": null}}});
    let put = server
        .json(Method::PUT, "/v1/me/preferences", &document)
        .await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.body);
    let read = server
        .send(Method::GET, "/v1/me/preferences", None, None)
        .await;
    assert_eq!(read.body["types"]["invoice"]["frequency"], Value::Null);
}

/// Before: the label and token limits counted bytes, so 200 `é`s (400
/// bytes) were refused although the document's `maxLength: 200` (which
/// counts characters) allows them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_lengths_count_characters() {
    let server = Server::start().await;
    let label = "é".repeat(200);
    let token = "ü".repeat(2048);
    let taken = server
        .json(
            Method::POST,
            "/v1/me/devices",
            &json!({"platform": "fcm", "token": token, "label": label}),
        )
        .await;
    assert_eq!(taken.status, StatusCode::CREATED, "{}", taken.body);
    assert_eq!(taken.body["label"], label.as_str());

    let long_label = server
        .json(
            Method::POST,
            "/v1/me/devices",
            &json!({"platform": "fcm", "token": "t2", "label": "é".repeat(201)}),
        )
        .await;
    long_label.assert_bad_request("200 characters");
    let long_token = server
        .json(
            Method::POST,
            "/v1/me/devices",
            &json!({"platform": "fcm", "token": "ü".repeat(2049)}),
        )
        .await;
    long_token.assert_bad_request("2048 characters");
    let listed = server.send(Method::GET, "/v1/me/devices", None, None).await;
    assert_eq!(listed.body["devices"].as_array().map(Vec::len), Some(1));
}

/// Before: 1024 `é`s as `user` (2048 bytes) were refused against the
/// document's `maxLength: 1024`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analytics_ids_count_characters() {
    let server = Server::start().await;
    let path = |n: usize| format!("/v1/admin/analytics/users?user={}", "%C3%A9".repeat(n));
    let taken = server.send(Method::GET, &path(1024), None, None).await;
    assert_eq!(taken.status, StatusCode::OK, "{}", taken.body);
    let refused = server.send(Method::GET, &path(1025), None, None).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
    let message = refused.body["error"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(message.contains("1024 characters"), "{message}");
}

/// Before: axum's `400 text/plain` "Connection header did not include
/// 'upgrade'".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_get_of_the_websocket_is_a_json_400() {
    let server = Server::start().await;
    let answer = server.send(Method::GET, "/v1/me/stream", None, None).await;
    answer.assert_bad_request("WebSocket");
}

/// Before: `[]` was read as a `UserPreferences` with every field at its
/// default, and replaced the stored document; nested structs too took
/// arrays (`{"types": {"a": []}}`, quiet hours as `[start, end, zone]`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_is_not_an_object_is_refused() {
    let server = Server::start().await;
    let document = json!({"channels": {"email": false}});
    let put = server
        .json(Method::PUT, "/v1/me/preferences", &document)
        .await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.body);
    for (body, place) in [
        (json!([]), "the body"),
        (json!([{}, {}]), "the body"),
        (json!({"types": {"a": []}}), "types.a"),
        (
            json!({"types": {"a": [{"email": false}, "daily"]}}),
            "types.a",
        ),
        (
            json!({"quiet_hours": ["22:00", "07:00", "UTC"]}),
            "quiet_hours",
        ),
    ] {
        server
            .json(Method::PUT, "/v1/me/preferences", &body)
            .await
            .assert_bad_request(&format!("{place}: expected a JSON object"));
    }
    for body in [json!("x"), json!(null)] {
        server
            .json(Method::PUT, "/v1/me/preferences", &body)
            .await
            .assert_bad_request("expected struct UserPreferences");
    }
    let device =
        json!({"platform": "web_push", "subscription": ["https://push.example/1", ["k", "a"]]});
    server
        .json(Method::POST, "/v1/me/devices", &device)
        .await
        .assert_bad_request("subscription: expected a JSON object");
    // Well-formed keys, but an endpoint the send's URL parser would refuse.
    for (endpoint, part) in [
        ("https://push.example:70000/1", "port"),
        ("https://push.example/1#fragment", "path and query"),
        ("https://[::1]/1", "host"),
    ] {
        let device = json!({"platform": "web_push", "subscription": {"endpoint": endpoint, "keys": {
            "p256dh": "BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u-Ts1XbjhazAkj7I99e8QcYP7DkM",
            "auth": "tBHItJI5svbpez7KI4CCXg"}}});
        server
            .json(Method::POST, "/v1/me/devices", &device)
            .await
            .assert_bad_request(&format!("subscription endpoint's {part}"));
    }
    let read = server
        .send(Method::GET, "/v1/me/preferences", None, None)
        .await;
    assert_eq!(
        read.body["channels"],
        json!({"email": false}),
        "{}",
        read.body
    );
    let devices = server.send(Method::GET, "/v1/me/devices", None, None).await;
    assert_eq!(devices.body["devices"], json!([]), "{}", devices.body);
}

/// Before: empty items were skipped, so `kind=,` listed every kind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_activity_kind_is_refused() {
    let server = Server::start().await;
    for path in [
        "/v1/me/activity",
        "/v1/me/activity/summary",
        "/v1/me/activity/export",
    ] {
        for kinds in ["", ",", "track,", "track,,page"] {
            server
                .send(Method::GET, &format!("{path}?kind={kinds}"), None, None)
                .await
                .assert_bad_request("empty kind");
        }
        let fine = server
            .send(Method::GET, &format!("{path}?kind=track,page"), None, None)
            .await;
        assert_eq!(fine.status, StatusCode::OK, "{path}: {}", fine.body);
    }
}

/// Before: `limit=` and `after=` were read as absent, although the
/// document's integers have no empty value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_events_refuse_empty_numbers() {
    let server = Server::start().await;
    for query in ["limit=", "after=", "limit=&after="] {
        server
            .send(
                Method::GET,
                &format!("/v1/admin/parked-events?{query}"),
                None,
                None,
            )
            .await
            .assert_bad_request("whole number");
    }
    let fine = server
        .send(Method::GET, "/v1/admin/parked-events?limit=5", None, None)
        .await;
    assert_eq!(fine.status, StatusCode::OK, "{}", fine.body);
}

/// Before, on PostgreSQL: a NUL in a filter or an id reached the database,
/// which refuses NUL in text, and the answer was `503 store_unavailable`.
/// Now a filter with a NUL is a `400` naming it (no item can match one) and
/// an id with a NUL is an id that does not exist, on both engines alike.
async fn text_with_nul_is_refused_or_unknown_not_a_server_error(backend: Backend) {
    let server = Server::start_on(backend).await;
    server.inbox.add(USER, &item(1)).await.unwrap();
    for path in [
        "/v1/me/notifications?type=a%00b",
        "/v1/me/notifications?type=comment,%00",
        "/v1/me/notifications?category=so%00cial",
        "/v1/me/notifications/export?type=%00",
        "/v1/me/notifications/export?category=%00&format=csv",
    ] {
        server
            .send(Method::GET, path, None, None)
            .await
            .assert_bad_request("contains a NUL character");
    }
    server
        .json(
            Method::POST,
            "/v1/me/notifications/read-all",
            &json!({"category": "so\u{0}cial"}),
        )
        .await
        .assert_bad_request("contains a NUL character");

    let nul_id = "0190a000\u{0}";
    let bulk = server
        .json(
            Method::POST,
            "/v1/me/notifications/bulk",
            &json!({"ids": [item(1).id, nul_id], "action": "read"}),
        )
        .await;
    assert_eq!(bulk.status, StatusCode::OK, "{}", bulk.body);
    assert_eq!(bulk.body["changed"], json!([item(1).id]), "{}", bulk.body);
    assert_eq!(bulk.body["not_found"], json!([nul_id]), "{}", bulk.body);
    for (method, path) in [
        (Method::GET, "/v1/me/notifications/a%00b"),
        (Method::DELETE, "/v1/me/notifications/a%00b"),
        (Method::POST, "/v1/me/notifications/a%00b/archive"),
    ] {
        let answer = server.send(method, path, None, None).await;
        assert_eq!(
            answer.status,
            StatusCode::NOT_FOUND,
            "{path}: {}",
            answer.body
        );
    }
    assert_eq!(server.unread().await, 0);
}

on_both_engines!(
    text_with_nul_is_refused_or_unknown_not_a_server_error,
    preference_type_names_are_checked,
);

/// Before: the type names of a preferences document were not checked: a
/// NUL reached the store (PostgreSQL refuses NUL in JSON: a `503`), and
/// any number of names of any length was kept. Now a name is what a
/// notify's `type` may be (1 to 256 characters, no control characters), a
/// document names at most 500, as the OpenAPI document states, and a
/// refused document leaves the stored one as it was.
async fn preference_type_names_are_checked(backend: Backend) {
    let server = Server::start_on(backend).await;
    let kept = json!({"types": {"invoice": {"channels": {"sms": true}}}});
    let put = server.json(Method::PUT, "/v1/me/preferences", &kept).await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.body);
    let stored = server.preferences.get(USER).await.unwrap();

    let off = json!({"channels": {"sms": false}});
    for (name, needle) in [
        (String::new(), "is empty"),
        ("a\u{0}b".to_owned(), "control character"),
        ("tab\there".to_owned(), "control character"),
        ("x".repeat(257), "longer than 256 characters"),
    ] {
        server
            .json(
                Method::PUT,
                "/v1/me/preferences",
                &json!({"types": {name: off}}),
            )
            .await
            .assert_bad_request(needle);
    }
    let too_many: serde_json::Map<String, Value> = (0..501)
        .map(|n| (format!("type{n}"), off.clone()))
        .collect();
    server
        .json(
            Method::PUT,
            "/v1/me/preferences",
            &json!({"types": too_many}),
        )
        .await
        .assert_bad_request("more than the 500");
    assert_eq!(server.preferences.get(USER).await.unwrap(), stored);

    // The limits themselves are taken: 256 characters of two bytes each,
    // and 500 names.
    let mut most: serde_json::Map<String, Value> = (0..499)
        .map(|n| (format!("type{n}"), off.clone()))
        .collect();
    most.insert("é".repeat(256), off.clone());
    let fine = server
        .json(Method::PUT, "/v1/me/preferences", &json!({"types": most}))
        .await;
    assert_eq!(fine.status, StatusCode::OK, "{}", fine.body);
    let stored = server.preferences.get(USER).await.unwrap();
    assert_eq!(stored.types.len(), 500);
    assert!(stored.types.contains_key(&"é".repeat(256)));
}

/// Before: `from=0100-05-09` made `resource_actions` walk nineteen
/// centuries of buckets, past schemathesis' 5 s timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_analytics_range_is_at_most_a_century() {
    let server = Server::start().await;
    let refused = server
        .send(
            Method::GET,
            "/v1/admin/analytics/resource_actions?from=0100-05-09&to=2026-01-01",
            None,
            None,
        )
        .await;
    refused.assert_bad_request("from: 0100-05-09 to 2026-01-01 is longer than a report reads");
    let started = std::time::Instant::now();
    let longest = server
        .send(
            Method::GET,
            "/v1/admin/analytics/resource_actions?from=1926-01-03&to=2026-01-01",
            None,
            None,
        )
        .await;
    assert_eq!(longest.status, StatusCode::OK, "{}", longest.body);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "a century took {:?}",
        started.elapsed()
    );
}
