//! Router tests through `tower::ServiceExt::oneshot`, against a real outbox
//! in a temporary directory (its flusher running), so success answers are
//! checked against what actually became durable.

use std::io::Write;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use base64::Engine;
use flate2::{Compression, write::GzEncoder};
use nudge_proto::v1::{Envelope, envelope};
use prost::Message;
use serde_json::{Value, json};
use tokio_util::sync::{CancellationToken, DropGuard};
use tower::ServiceExt;

use super::*;
use crate::outbox::{OutboxConfig, run_flusher};

/// The state the router is built from; tests vary only the outbox and keys.
fn test_state(outbox: Outbox, write_keys: &[&str]) -> IntakeState {
    IntakeState::new(
        outbox,
        Metrics::new(),
        write_keys.iter().map(|key| (*key).to_owned()).collect(),
    )
}

/// A router over a fresh outbox; dropping it stops the flusher.
struct Harness {
    app: Router,
    state: IntakeState,
    _dir: tempfile::TempDir,
    _flusher: DropGuard,
}

impl Harness {
    fn new(write_keys: &[&str]) -> Self {
        Self::with_config(write_keys, |_| {})
    }

    /// With server keys and an origin list (issue 15).
    fn with_trust(write_keys: &[&str], server_keys: &[&str], origins: AllowedOrigins) -> Self {
        let mut harness = Self::new(write_keys);
        harness.state = harness
            .state
            .clone()
            .with_server_keys(ServerKeys::new(
                server_keys.iter().map(|key| (*key).to_owned()).collect(),
            ))
            .with_origins(origins);
        harness.app = intake_router(harness.state.clone());
        harness
    }

    fn with_config(write_keys: &[&str], tune: impl FnOnce(&mut OutboxConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = OutboxConfig::new(dir.path());
        config.segment_max_bytes = 1 << 20;
        config.cache_capacity = 1 << 20;
        tune(&mut config);
        let outbox = Outbox::open(config, Metrics::new()).unwrap();
        let stop = CancellationToken::new();
        tokio::spawn(run_flusher(outbox.clone(), stop.clone()));
        let state = test_state(outbox, write_keys);
        Self {
            app: intake_router(state.clone()),
            state,
            _dir: dir,
            _flusher: stop.drop_guard(),
        }
    }

    async fn send(&self, request: Request<Body>) -> (StatusCode, HeaderMap, Value) {
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        (status, headers, body)
    }

    async fn post(&self, path: &str, body: &Value) -> (StatusCode, HeaderMap, Value) {
        self.send(json_post(path, body.to_string())).await
    }

    /// Every envelope that became durable, in order.
    fn stored(&self) -> Vec<Envelope> {
        let mut stored = Vec::new();
        while let Some(batch) = self.state.outbox.next_batch(1000, 1 << 30).unwrap() {
            for record in &batch.records {
                stored.push(Envelope::decode(record.bytes.clone()).unwrap());
            }
            self.state
                .outbox
                .remove(batch.segment_id, &batch.records)
                .unwrap();
        }
        stored
    }

    fn rejected(&self, reason: &str) -> u64 {
        self.state
            .metrics
            .requests_rejected
            .with_label_values(&[reason])
            .get()
    }

    fn received(&self) -> u64 {
        self.state.metrics.events_received.get()
    }

    /// Asserts a refusal: status, code, message fragment, one count in the
    /// metric, and nothing stored.
    fn assert_refused(
        &self,
        answer: &(StatusCode, HeaderMap, Value),
        status: StatusCode,
        code: &str,
        message_part: &str,
    ) {
        let (actual_status, _, body) = answer;
        assert_eq!(*actual_status, status, "{body}");
        assert_eq!(body["success"], false);
        assert_eq!(body["code"], code, "{body}");
        let message = body["message"].as_str().unwrap();
        assert!(
            message.contains(message_part),
            "{message:?} lacks {message_part:?}"
        );
        assert!(self.rejected(code) >= 1);
        assert_eq!(self.received(), 0);
        assert!(self.stored().is_empty());
    }
}

fn json_post(path: &str, body: impl Into<Body>) -> Request<Body> {
    Request::post(path)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.into())
        .unwrap()
}

fn basic(key: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{key}:"));
    format!("Basic {encoded}")
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

fn track() -> Value {
    json!({"userId": "u-1", "event": "Signed Up", "properties": {"plan": "pro"}})
}

#[tokio::test]
async fn track_is_stored_before_the_answer() {
    let harness = Harness::new(&[]);
    let (status, headers, body) = harness.post("/v1/track", &track()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["success"], true);
    assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    assert_eq!(harness.received(), 1);

    let stored = harness.stored();
    assert_eq!(stored.len(), 1);
    assert_eq!(body["messageId"], stored[0].id.as_str());
    assert!(stored[0].received_at.is_some());
    let Some(envelope::Body::Track(track)) = &stored[0].body else {
        panic!("not a track body");
    };
    assert_eq!(track.event, "Signed Up");
    assert_eq!(track.properties_json, r#"{"plan":"pro"}"#);
}

#[tokio::test]
async fn every_route_answers() {
    let harness = Harness::new(&[]);
    let calls = [
        ("/v1/track", track()),
        ("/v1/t", track()),
        ("/v1/identify", json!({"userId": 5, "traits": {}})),
        ("/v1/i", json!({"anonymousId": "a"})),
        ("/v1/page", json!({"anonymousId": "a", "name": "Home"})),
        ("/v1/p", json!({"anonymousId": "a"})),
        ("/v1/screen", json!({"anonymousId": "a"})),
        ("/v1/s", json!({"anonymousId": "a"})),
        ("/v1/group", json!({"userId": "u", "groupId": "g"})),
        ("/v1/g", json!({"userId": "u", "groupId": "g"})),
        ("/v1/alias", json!({"userId": "u", "previousId": "a"})),
        ("/v1/a", json!({"userId": "u", "previousId": "a"})),
        (
            "/v1/sessions/start",
            json!({"userId": "u", "sessionId": "s"}),
        ),
        ("/v1/sessions/end", json!({"userId": "u", "sessionId": "s"})),
        (
            "/v1/notify",
            json!({"userId": "u", "type": "t", "title": "Hi"}),
        ),
    ];
    for (path, body) in &calls {
        let (status, _, answer) = harness.post(path, body).await;
        assert_eq!(status, StatusCode::OK, "{path}: {answer}");
    }
    assert_eq!(harness.stored().len(), calls.len());
    assert_eq!(harness.received(), calls.len() as u64);
}

#[tokio::test]
async fn analytics_js_style_text_plain_with_body_write_key() {
    let harness = Harness::new(&["wk"]);
    let body = json!({"type": "page", "anonymousId": "a", "writeKey": "wk", "messageId": "ajs-1"});
    let request = Request::post("/v1/p")
        .header(header::CONTENT_TYPE, "text/plain;charset=UTF-8")
        .body(Body::from(body.to_string()))
        .unwrap();
    let (status, _, answer) = harness.send(request).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["messageId"], "ajs-1");
    assert_eq!(harness.stored()[0].write_key, "wk");
}

#[tokio::test]
async fn gzipped_batch_with_basic_auth_and_no_content_type() {
    let harness = Harness::new(&["server-key"]);
    let batch = json!({
        "sentAt": "2024-05-01T12:00:00.000Z",
        "batch": [
            {"type": "identify", "userId": 1, "messageId": "b-1"},
            {"type": "track", "userId": 1, "event": "e", "messageId": "b-2"},
        ],
    });
    let request = Request::post("/v1/batch")
        .header(header::AUTHORIZATION, basic("server-key"))
        .header(header::CONTENT_ENCODING, "gzip")
        .body(Body::from(gzip(batch.to_string().as_bytes())))
        .unwrap();
    let (status, _, answer) = harness.send(request).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["messageIds"], json!(["b-1", "b-2"]));
    let stored = harness.stored();
    assert_eq!(stored.len(), 2);
    assert!(
        stored
            .iter()
            .all(|e| e.write_key == "server-key" && e.user_id == "1")
    );
    assert_eq!(harness.received(), 2);
}

#[tokio::test]
async fn a_bad_batch_item_rejects_the_whole_batch() {
    let harness = Harness::new(&[]);
    let batch = json!({"batch": [
        {"type": "track", "userId": "u", "event": "ok"},
        {"type": "track", "userId": "u"},
    ]});
    let answer = harness.post("/v1/b", &batch).await;
    harness.assert_refused(
        &answer,
        StatusCode::BAD_REQUEST,
        "missing_field",
        "batch item 1 (track): `event` is required",
    );
}

#[tokio::test]
async fn body_errors() {
    let harness = Harness::new(&[]);
    let answer = harness
        .send(json_post("/v1/track", &b"{\"userId\": \"\xff\"}"[..]))
        .await;
    harness.assert_refused(&answer, StatusCode::BAD_REQUEST, "invalid_utf8", "UTF-8");

    let answer = harness.send(json_post("/v1/track", "{\"userId\": ")).await;
    harness.assert_refused(
        &answer,
        StatusCode::BAD_REQUEST,
        "malformed_json",
        "not valid JSON",
    );

    let answer = harness.post("/v1/identify", &json!({"traits": {}})).await;
    harness.assert_refused(
        &answer,
        StatusCode::BAD_REQUEST,
        "missing_identity",
        "`userId`",
    );

    let answer = harness
        .post(
            "/v1/track",
            &json!({"userId": "u", "event": "e", "timestamp": "noon"}),
        )
        .await;
    harness.assert_refused(
        &answer,
        StatusCode::BAD_REQUEST,
        "invalid_field",
        "`timestamp`",
    );

    // Money the control plane would sum: bounded at intake.
    let answer = harness
        .post(
            "/v1/track",
            &json!({"userId": "u", "event": "paid", "properties": {"revenue": 1e18}}),
        )
        .await;
    harness.assert_refused(
        &answer,
        StatusCode::BAD_REQUEST,
        "invalid_field",
        "`revenue`",
    );
    let answer = harness
        .post(
            "/v1/notify",
            &json!({"userId": "u", "type": "invoice", "cost": "999999999999"}),
        )
        .await;
    harness.assert_refused(&answer, StatusCode::BAD_REQUEST, "invalid_field", "`cost`");

    let request = Request::post("/v1/track")
        .header(header::CONTENT_ENCODING, "gzip")
        .body(Body::from("plain text"))
        .unwrap();
    let answer = harness.send(request).await;
    harness.assert_refused(&answer, StatusCode::BAD_REQUEST, "invalid_gzip", "gzip");
}

#[tokio::test]
async fn size_limits_hold_before_and_after_decompression() {
    let harness = Harness::new(&[]);
    let mut big = track();
    big["properties"] = json!({"blob": "x".repeat(crate::segment::MAX_CALL_BYTES)});
    let answer = harness.post("/v1/track", &big).await;
    harness.assert_refused(
        &answer,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        "32768 bytes",
    );

    // The same call fits a batch body, but not the per-call limit inside it.
    let answer = harness.post("/v1/batch", &json!({"batch": [big]})).await;
    harness.assert_refused(
        &answer,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        "batch item 0",
    );

    let bomb = gzip(&vec![b' '; 64 * 1024 * 1024]);
    let request = Request::post("/v1/batch")
        .header(header::CONTENT_ENCODING, "gzip")
        .body(Body::from(bomb))
        .unwrap();
    let answer = harness.send(request).await;
    harness.assert_refused(
        &answer,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        "512000 bytes",
    );
}

#[tokio::test]
async fn media_types() {
    let harness = Harness::new(&[]);
    let request = Request::post("/v1/track")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from("userId=u"))
        .unwrap();
    let answer = harness.send(request).await;
    harness.assert_refused(
        &answer,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        "Content-Type",
    );

    let request = Request::post("/v1/track")
        .header(header::CONTENT_ENCODING, "br")
        .body(Body::from(track().to_string()))
        .unwrap();
    let answer = harness.send(request).await;
    harness.assert_refused(
        &answer,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        "Content-Encoding",
    );
}

#[tokio::test]
async fn write_keys_are_enforced_when_configured() {
    let harness = Harness::new(&["good"]);
    let answer = harness.post("/v1/track", &track()).await;
    harness.assert_refused(
        &answer,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "write key is required",
    );

    let mut wrong = track();
    wrong["writeKey"] = json!("bad");
    let answer = harness.post("/v1/track", &wrong).await;
    harness.assert_refused(
        &answer,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "not accepted",
    );

    let request = Request::post("/v1/track")
        .header(header::AUTHORIZATION, basic("bad"))
        .body(Body::from(track().to_string()))
        .unwrap();
    let answer = harness.send(request).await;
    harness.assert_refused(
        &answer,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "not accepted",
    );

    let request = Request::post("/v1/track")
        .header(header::AUTHORIZATION, "Bearer good")
        .body(Body::from(track().to_string()))
        .unwrap();
    let answer = harness.send(request).await;
    harness.assert_refused(
        &answer,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "HTTP Basic",
    );

    // One item of a batch without any key is refused too.
    let batch = json!({"batch": [
        {"type": "track", "userId": "u", "event": "e", "writeKey": "good"},
        {"type": "track", "userId": "u", "event": "e"},
    ]});
    let answer = harness.post("/v1/batch", &batch).await;
    harness.assert_refused(
        &answer,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "write key is required",
    );
    assert_eq!(harness.rejected("unauthorized"), 5);

    let request = Request::post("/v1/track")
        .header(header::AUTHORIZATION, basic("good"))
        .body(Body::from(track().to_string()))
        .unwrap();
    let (status, _, answer) = harness.send(request).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
}

#[tokio::test]
async fn a_full_outbox_answers_503_with_retry_after() {
    let harness = Harness::with_config(&[], |config| {
        config.max_bytes = 10;
        config.retry_after = std::time::Duration::from_millis(2500);
    });
    let answer = harness.post("/v1/track", &track()).await;
    assert_eq!(answer.1[header::RETRY_AFTER], "3");
    harness.assert_refused(
        &answer,
        StatusCode::SERVICE_UNAVAILABLE,
        "outbox_full",
        "full",
    );
}

#[tokio::test]
async fn shutting_down_answers_503_with_retry_after() {
    let harness = Harness::new(&[]);
    harness.state.outbox.stop_accepting();
    let answer = harness.post("/v1/track", &track()).await;
    assert_eq!(answer.1[header::RETRY_AFTER], "5");
    harness.assert_refused(
        &answer,
        StatusCode::SERVICE_UNAVAILABLE,
        "shutting_down",
        "shutting down",
    );
}

#[tokio::test]
async fn cors_preflight() {
    let harness = Harness::new(&[]);
    let request = Request::builder()
        .method(Method::OPTIONS)
        .uri("/v1/t")
        .header(header::ORIGIN, "https://shop.example")
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .body(Body::empty())
        .unwrap();
    let (status, headers, _) = harness.send(request).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    let allowed = headers[header::ACCESS_CONTROL_ALLOW_HEADERS]
        .to_str()
        .unwrap();
    assert!(allowed.contains("Content-Type") && allowed.contains("Authorization"));
}

#[tokio::test]
async fn empty_batch_is_accepted_without_touching_the_outbox() {
    let harness = Harness::new(&[]);
    let (status, _, answer) = harness.post("/v1/batch", &json!({"batch": []})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["messageIds"], json!([]));
    assert_eq!(harness.received(), 0);
}

#[tokio::test]
async fn request_durations_are_labelled_by_route_template() {
    let harness = Harness::new(&[]);
    let track = json!({"userId": "user-42", "event": "Opened"});
    assert_eq!(harness.post("/v1/track", &track).await.0, StatusCode::OK);
    assert_eq!(
        harness.post("/v1/track", &json!("not a call")).await.0,
        StatusCode::BAD_REQUEST
    );
    let unmatched = harness.post("/v1/users/user-42/secret", &track).await;
    assert_eq!(unmatched.0, StatusCode::NOT_FOUND);
    let extension = Request::builder()
        .method(Method::from_bytes(b"BREW").unwrap())
        .uri("/v1/track")
        .body(Body::empty())
        .unwrap();
    harness.send(extension).await;

    let histogram = &harness.state.metrics.http_request_duration;
    let count = |labels: &[&str]| histogram.with_label_values(labels).get_sample_count();
    assert_eq!(count(&["/v1/track", "POST", "200"]), 1);
    assert_eq!(count(&["/v1/track", "POST", "400"]), 1);
    assert_eq!(count(&["unmatched", "POST", "404"]), 1);
    assert_eq!(count(&["/v1/track", "other", "405"]), 1);
    let text = harness.state.metrics.render();
    assert!(!text.contains("user-42"), "{text}");
    assert!(!text.contains("BREW"), "{text}");
}

// ---------------------------------------------------------------- issue 15
// Browsers (an Origin header, a public write key) against servers.

const SERVER_KEY: &str = "server-key-0123456789abcdef";
const SHOP: &str = "https://shop.example";

/// A post as analytics.js sends it from a page on `origin`: `text/plain`,
/// the write key in the body.
fn from_page(origin: &str, path: &str, body: &Value) -> Request<Body> {
    Request::post(path)
        .header(header::ORIGIN, origin)
        .header(header::CONTENT_TYPE, "text/plain;charset=UTF-8")
        .body(Body::from(body.to_string()))
        .unwrap()
}

fn preflight_from(origin: &str, path: &str) -> Request<Body> {
    Request::builder()
        .method(Method::OPTIONS)
        .uri(path)
        .header(header::ORIGIN, origin)
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .body(Body::empty())
        .unwrap()
}

fn notify() -> Value {
    json!({"userId": "u-1", "type": "t", "title": "Hi", "writeKey": "pk"})
}

#[tokio::test]
async fn a_page_may_identify_but_not_set_where_notifications_go() {
    let harness = Harness::new(&["pk"]);
    for (name, value) in [
        ("email", json!("attacker@evil.example")),
        ("phone", json!("+15550100")),
        ("email", Value::Null),
    ] {
        let call =
            json!({"userId": "victim", "writeKey": "pk", "traits": {"plan": "pro", name: value}});
        let answer = harness.send(from_page(SHOP, "/v1/identify", &call)).await;
        assert_eq!(
            answer.1[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "*",
            "the page reads why"
        );
        harness.assert_refused(
            &answer,
            StatusCode::FORBIDDEN,
            "contact_trait_refused",
            &format!("identify call: trait `{name}` is where notifications go"),
        );
    }
    assert_eq!(harness.rejected("contact_trait_refused"), 3);

    // Other traits, and contact traits elsewhere than identify traits
    // (nothing makes them recipients), are fine from a page.
    let call = json!({"userId": "u-1", "writeKey": "pk", "traits": {"name": "Ada", "Email": "x"},
                      "context": {"traits": {"email": "ada@example.com"}}});
    let (status, _, answer) = harness.send(from_page(SHOP, "/v1/i", &call)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let group = json!({"userId": "u-1", "groupId": "g", "writeKey": "pk", "traits": {"email": "team@example.com"}});
    let (status, _, answer) = harness.send(from_page(SHOP, "/v1/group", &group)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");

    // The same identify from a backend (no Origin) is trusted.
    let call = json!({"userId": "u-1", "writeKey": "pk", "traits": {"email": "ada@example.com"}});
    let (status, _, answer) = harness.post("/v1/identify", &call).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(harness.stored().len(), 3);
}

#[tokio::test]
async fn a_page_cannot_notify_and_notify_answers_no_cors() {
    let harness = Harness::new(&[]);
    let answer = harness.send(from_page(SHOP, "/v1/notify", &notify())).await;
    assert!(
        !answer.1.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN),
        "{:?}",
        answer.1
    );
    harness.assert_refused(
        &answer,
        StatusCode::FORBIDDEN,
        "server_key_required",
        "notify is accepted only from a trusted caller",
    );
    // `null` (a sandboxed page) is an Origin too.
    let answer = harness
        .send(from_page("null", "/v1/notify", &notify()))
        .await;
    harness.assert_refused(
        &answer,
        StatusCode::FORBIDDEN,
        "server_key_required",
        "backend",
    );

    let (status, headers, _) = harness.send(preflight_from(SHOP, "/v1/notify")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(!headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
    assert!(!headers.contains_key(header::ACCESS_CONTROL_ALLOW_METHODS));
    assert_eq!(harness.rejected("server_key_required"), 3);

    // A backend notifies as before.
    let (status, headers, answer) = harness.post("/v1/notify", &notify()).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert!(!headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
}

#[tokio::test]
async fn with_server_keys_only_they_are_trusted_and_never_stored() {
    let harness = Harness::with_trust(&["pk"], &[SERVER_KEY], AllowedOrigins::Any);
    // No Origin is no longer enough.
    let answer = harness.post("/v1/notify", &notify()).await;
    harness.assert_refused(
        &answer,
        StatusCode::FORBIDDEN,
        "server_key_required",
        "with a server key",
    );
    let identify = json!({"userId": "u-1", "writeKey": "pk", "traits": {"phone": "+15550100"}});
    let answer = harness.post("/v1/identify", &identify).await;
    harness.assert_refused(
        &answer,
        StatusCode::FORBIDDEN,
        "contact_trait_refused",
        "trait `phone`",
    );

    // The server key as the HTTP Basic user name (server libraries) is
    // accepted although NUDGE_AGENT_WRITE_KEYS does not list it.
    let mut call = notify();
    call.as_object_mut().unwrap().remove("writeKey");
    let request = Request::post("/v1/notify")
        .header(header::AUTHORIZATION, basic(SERVER_KEY))
        .body(Body::from(call.to_string()))
        .unwrap();
    let (status, _, answer) = harness.send(request).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    // ... or as `writeKey`, even from a page (the key is the credential).
    let mut identify = identify;
    identify["writeKey"] = json!(SERVER_KEY);
    let (status, _, answer) = harness
        .send(from_page(SHOP, "/v1/identify", &identify))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");

    let stored = harness.stored();
    assert_eq!(stored.len(), 2);
    for envelope in &stored {
        assert!(
            envelope.write_key.starts_with("server-key:"),
            "{}",
            envelope.write_key
        );
        assert!(!envelope.write_key.contains(SERVER_KEY));
    }
    assert_eq!(
        stored[0].write_key, stored[1].write_key,
        "one key, one label"
    );
}

#[tokio::test]
async fn a_batch_with_one_untrusted_contact_trait_is_refused_whole() {
    let harness = Harness::with_trust(&[], &[SERVER_KEY], AllowedOrigins::Any);
    let batch = json!({"writeKey": "pk", "batch": [
        {"type": "identify", "userId": "u-1", "traits": {"email": "ok@example.com"}, "writeKey": SERVER_KEY},
        {"type": "track", "userId": "u-1", "event": "Viewed"},
        {"type": "identify", "userId": "u-2", "traits": {"email": "attacker@evil.example"}},
    ]});
    let answer = harness.send(from_page(SHOP, "/v1/batch", &batch)).await;
    harness.assert_refused(
        &answer,
        StatusCode::FORBIDDEN,
        "contact_trait_refused",
        "batch item 2 (identify): trait `email`",
    );
    // Without that item the rest goes through.
    let mut fixed = batch.clone();
    fixed["batch"].as_array_mut().unwrap().pop();
    let (status, _, answer) = harness.send(from_page(SHOP, "/v1/batch", &fixed)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(harness.stored().len(), 2);
}

#[tokio::test]
async fn only_listed_origins_may_call_and_get_their_origin_back() {
    let origins = AllowedOrigins::from_entries(&[SHOP.to_owned()]);
    let harness = Harness::with_trust(&[], &[], origins);
    let page = json!({"anonymousId": "a", "name": "Home"});

    let (status, headers, body) = harness
        .send(preflight_from("https://evil.example", "/v1/t"))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["code"], "origin_not_allowed");
    assert!(!headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
    // A simple request is not preflighted: the agent itself refuses it.
    let answer = harness
        .send(from_page("https://evil.example", "/v1/page", &page))
        .await;
    assert!(!answer.1.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
    harness.assert_refused(
        &answer,
        StatusCode::FORBIDDEN,
        "origin_not_allowed",
        "\"https://evil.example\" is not allowed",
    );
    assert_eq!(harness.rejected("origin_not_allowed"), 2);

    let (status, headers, _) = harness.send(preflight_from(SHOP, "/v1/t")).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], SHOP);
    assert_eq!(headers[header::VARY], "Origin");
    let (status, headers, answer) = harness.send(from_page(SHOP, "/v1/page", &page)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], SHOP);

    // Servers send no Origin and are not affected.
    let (status, headers, _) = harness.post("/v1/page", &page).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
    assert_eq!(harness.stored().len(), 2);
}
