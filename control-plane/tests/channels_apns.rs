//! The APNs channel against a fake Apple behind the `ApnsSender` seam: it
//! records what a2 would send (a2's own payload and its JSON) and answers
//! with a2's own types, built the way a2 builds them from Apple's answer.

use std::sync::{Arc, Mutex};

use a2::request::payload::{Payload, PayloadLike as _};
use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures::StreamExt as _;
use nudge_control_plane::channels::apns::{
    ApnsChannel, ApnsConfig, ApnsEnvironment, ApnsSender, MAX_PAYLOAD_BYTES,
};
use nudge_control_plane::channels::compliance::{self, Peer, sample_message};
use nudge_control_plane::channels::{Channel, Recipient, SendError};
use serde_json::json;
use tokio::io::AsyncWriteExt as _;

const TOPIC: &str = "com.example.app";
const TOKEN: &str = "8f2c1b0e4a6d9c3b7e5f1a2d4c6b8e0f9a1c3e5b7d9f2a4c6e8b0d1f3a5c7e9b";
const DELIVERY_ID: &str = "0198a3c4-5b6d-7e8f-9a0b-1c2d3e4f5a6b";

/// What the fake answers.
#[derive(Debug, Clone, Copy, Default)]
enum Mode {
    #[default]
    Accept,
    /// Apple's status and JSON body, e.g. `410`, `{"reason":"Unregistered"}`.
    Reject(u16, &'static str),
    /// Apple cannot be reached.
    Down,
}

/// One push as a2 would put it on the wire.
#[derive(Debug, Clone)]
struct Push {
    token: String,
    body: serde_json::Value,
    apns_id: Option<String>,
    topic: Option<String>,
    collapse_id: Option<String>,
    push_type: Option<String>,
    priority: Option<String>,
}

#[derive(Debug, Default)]
struct State {
    mode: Mode,
    pushes: Vec<Push>,
}

#[derive(Clone, Default)]
struct FakeApple(Arc<Mutex<State>>);

impl FakeApple {
    fn answer_with(&self, mode: Mode) {
        self.0.lock().unwrap().mode = mode;
    }

    fn pushes(&self) -> Vec<Push> {
        self.0.lock().unwrap().pushes.clone()
    }
}

#[async_trait]
impl ApnsSender for FakeApple {
    async fn send(&self, payload: Payload<'_>) -> Result<a2::Response, a2::Error> {
        let mode = self.0.lock().unwrap().mode;
        if let Mode::Down = mode {
            return Err(hyper_connection_error().await);
        }
        let options = &payload.options;
        let push = Push {
            token: payload.device_token.to_owned(),
            // The body exactly as a2 serialises it for the request.
            body: serde_json::from_str(&payload.to_json_string()?).unwrap(),
            apns_id: options.apns_id.map(str::to_owned),
            topic: options.apns_topic.map(str::to_owned),
            collapse_id: options
                .apns_collapse_id
                .as_ref()
                .map(|id| id.value.to_owned()),
            push_type: options.apns_push_type.map(|kind| kind.to_string()),
            priority: options.apns_priority.as_ref().map(ToString::to_string),
        };
        // Apple echoes the request's apns-id, or makes one up.
        let apns_id = push
            .apns_id
            .clone()
            .unwrap_or_else(|| "5e1f0a9c-0000-4000-8000-00000000a991".to_owned());
        self.0.lock().unwrap().pushes.push(push);
        match mode {
            Mode::Reject(code, body) => Err(a2::Error::ResponseError(a2::Response {
                // As a2 reads Apple's error body: a reason it does not know
                // leaves `error` empty.
                error: serde_json::from_str(body).ok(),
                apns_id: Some(apns_id),
                code,
            })),
            Mode::Accept | Mode::Down => Ok(a2::Response {
                error: None,
                apns_id: Some(apns_id),
                code: 200,
            }),
        }
    }
}

/// A real `a2::Error::ConnectionError`, what a2 returns when the
/// connection to Apple breaks. It wraps a `hyper::Error`, which only hyper
/// can make (and hyper is no dependency here), so a local server receives
/// a request whose client hangs up half-way through the body and hands
/// over the error hyper reports for it.
async fn hyper_connection_error() -> a2::Error {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (found, error) = tokio::sync::oneshot::channel::<axum::Error>();
    let found = Arc::new(Mutex::new(Some(found)));
    let app = axum::Router::new().route(
        "/",
        axum::routing::post(move |body: axum::body::Body| async move {
            let mut frames = body.into_data_stream();
            while let Some(frame) = frames.next().await {
                if let Err(err) = frame {
                    if let Some(found) = found.lock().unwrap().take() {
                        let _ = found.send(err);
                    }
                    break;
                }
            }
        }),
    );
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
    client
        .write_all(b"POST / HTTP/1.1\r\nhost: apple\r\ncontent-length: 100\r\n\r\nhalf")
        .await
        .unwrap();
    drop(client);
    let err = error.await.expect("the server sees the body break off");
    server.abort();
    let hyper_error = err
        .into_inner()
        .downcast()
        .expect("axum passes hyper's own error on");
    a2::Error::ConnectionError(*hyper_error)
}

fn device(token: &str) -> Recipient {
    Recipient::DeviceToken {
        token: token.to_owned(),
    }
}

fn channel() -> (ApnsChannel, FakeApple) {
    let apple = FakeApple::default();
    let channel = ApnsChannel::with_sender(TOPIC, apple.clone()).unwrap();
    (channel, apple)
}

struct ApplePeer {
    apple: FakeApple,
}

#[async_trait]
impl Peer for ApplePeer {
    fn recipient(&self) -> Recipient {
        device(TOKEN)
    }

    async fn attempts(&self) -> usize {
        self.apple.pushes().len()
    }

    async fn fail_temporarily(&mut self) -> bool {
        self.apple
            .answer_with(Mode::Reject(503, r#"{"reason":"ServiceUnavailable"}"#));
        true
    }

    async fn take_down(&mut self) -> bool {
        self.apple.answer_with(Mode::Down);
        true
    }
}

#[tokio::test]
async fn passes_the_compliance_test() {
    let (channel, apple) = channel();
    compliance::check(&channel, &mut ApplePeer { apple }).await;
}

#[tokio::test]
async fn sends_title_body_and_data_with_the_apns_headers() {
    let (channel, apple) = channel();
    let message = sample_message(DELIVERY_ID);
    let receipt = channel.send(&message, &device(TOKEN)).await.unwrap();
    assert_eq!(receipt.provider_message_id.as_deref(), Some(DELIVERY_ID));
    assert_eq!(receipt.answer, "200 OK");

    let pushes = apple.pushes();
    assert_eq!(pushes.len(), 1);
    let push = &pushes[0];
    assert_eq!(push.token, TOKEN);
    assert_eq!(
        push.body,
        json!({
            "aps": {
                "alert": {
                    "title": "Your payment failed",
                    "body": "We could not charge your card.",
                },
                "mutable-content": 0,
            },
            "data": {"amount": 42, "currency": "EUR"},
            "notification_id": format!("n-{DELIVERY_ID}"),
            "notification_type": "payment_failed",
        })
    );
    assert_eq!(push.apns_id.as_deref(), Some(DELIVERY_ID));
    assert_eq!(push.collapse_id.as_deref(), Some(DELIVERY_ID));
    assert_eq!(push.topic.as_deref(), Some(TOPIC));
    assert_eq!(push.push_type.as_deref(), Some("alert"));
    assert_eq!(push.priority.as_deref(), Some("10"));
}

#[tokio::test]
async fn a_retry_carries_the_same_apns_id() {
    let (channel, apple) = channel();
    let message = sample_message(DELIVERY_ID);
    apple.answer_with(Mode::Reject(500, r#"{"reason":"InternalServerError"}"#));
    channel.send(&message, &device(TOKEN)).await.unwrap_err();
    apple.answer_with(Mode::Accept);
    channel.send(&message, &device(TOKEN)).await.unwrap();
    let pushes = apple.pushes();
    assert_eq!(pushes[0].apns_id, pushes[1].apns_id);
    assert_eq!(pushes[0].collapse_id, pushes[1].collapse_id);
    assert_eq!(pushes[0].body, pushes[1].body);
}

#[tokio::test]
async fn a_message_without_data_or_title() {
    let (channel, apple) = channel();
    let mut message = sample_message("not-a-uuid");
    message.subject.clear();
    message.data = serde_json::Value::Null;
    let receipt = channel.send(&message, &device(TOKEN)).await.unwrap();
    let push = &apple.pushes()[0];
    // Apple refuses an apns-id that is not a UUID, so none is sent and
    // Apple's own id comes back.
    assert_eq!(push.apns_id, None);
    assert_eq!(
        receipt.provider_message_id.as_deref(),
        Some("5e1f0a9c-0000-4000-8000-00000000a991")
    );
    assert_eq!(push.body["aps"]["alert"], json!(message.text_body));
    assert!(push.body.get("data").is_none(), "{:?}", push.body);
}

#[tokio::test]
async fn unregistered_token_is_an_invalid_recipient() {
    let (channel, apple) = channel();
    apple.answer_with(Mode::Reject(
        410,
        r#"{"reason":"Unregistered","timestamp":1508249865488}"#,
    ));
    let err = channel
        .send(&sample_message(DELIVERY_ID), &device(TOKEN))
        .await
        .unwrap_err();
    assert!(matches!(err, SendError::InvalidRecipient { .. }), "{err:?}");
    assert!(
        err.answer()
            .starts_with("410 Unregistered (token inactive since 2017-10-17T14:17:45.488Z)"),
        "{err:?}"
    );

    // A 410 whose reason a2 does not know is still the token's end.
    apple.answer_with(Mode::Reject(410, r#"{"reason":"ExpiredToken"}"#));
    let err = channel
        .send(&sample_message(DELIVERY_ID), &device(TOKEN))
        .await
        .unwrap_err();
    assert!(matches!(err, SendError::InvalidRecipient { .. }), "{err:?}");
}

#[tokio::test]
async fn throttling_and_server_errors_are_retriable() {
    let (channel, apple) = channel();
    let answers = [
        (429, r#"{"reason":"TooManyRequests"}"#),
        (500, r#"{"reason":"InternalServerError"}"#),
        (503, r#"{"reason":"ServiceUnavailable"}"#),
        (503, r#"{"reason":"Shutdown"}"#),
        (502, ""),
    ];
    for (code, body) in answers {
        apple.answer_with(Mode::Reject(code, body));
        let err = channel
            .send(&sample_message(DELIVERY_ID), &device(TOKEN))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                SendError::Retriable {
                    retry_after: None,
                    ..
                }
            ),
            "{code} {body}: {err:?}"
        );
        assert!(err.answer().starts_with(&code.to_string()), "{err:?}");
    }
    // One push per send: the channel does not retry by itself.
    assert_eq!(apple.pushes().len(), answers.len());
}

#[tokio::test]
async fn bad_device_token_fails_for_good_and_is_not_retried() {
    let (channel, apple) = channel();
    let answers = [
        ("BadDeviceToken", r#"{"reason":"BadDeviceToken"}"#),
        (
            "DeviceTokenNotForTopic",
            r#"{"reason":"DeviceTokenNotForTopic"}"#,
        ),
    ];
    for (reason, body) in answers {
        apple.answer_with(Mode::Reject(400, body));
        let err = channel
            .send(&sample_message(DELIVERY_ID), &device(TOKEN))
            .await
            .unwrap_err();
        assert!(
            matches!(err, SendError::InvalidRecipient { .. }),
            "{reason}: {err:?}"
        );
        assert!(
            err.answer().starts_with(&format!("400 {reason}: ")),
            "{err:?}"
        );
    }
}

#[tokio::test]
async fn provider_token_problems() {
    let (channel, apple) = channel();
    let message = sample_message(DELIVERY_ID);
    let recipient = device(TOKEN);
    let send = || channel.send(&message, &recipient);

    // a2 signs a fresh token later: worth another attempt.
    apple.answer_with(Mode::Reject(403, r#"{"reason":"ExpiredProviderToken"}"#));
    let err = send().await.unwrap_err();
    assert!(matches!(err, SendError::Retriable { .. }), "{err:?}");

    // Wrong key id, team id or revoked key: only the operator can fix it.
    apple.answer_with(Mode::Reject(403, r#"{"reason":"InvalidProviderToken"}"#));
    let err = send().await.unwrap_err();
    assert!(matches!(err, SendError::Permanent { .. }), "{err:?}");

    apple.answer_with(Mode::Reject(400, r#"{"reason":"TopicDisallowed"}"#));
    let err = send().await.unwrap_err();
    assert!(matches!(err, SendError::Permanent { .. }), "{err:?}");

    apple.answer_with(Mode::Reject(413, r#"{"reason":"PayloadTooLarge"}"#));
    let err = send().await.unwrap_err();
    assert!(matches!(err, SendError::Permanent { .. }), "{err:?}");
}

#[tokio::test]
async fn unreachable_apple_is_retriable() {
    let (channel, apple) = channel();
    apple.answer_with(Mode::Down);
    let err = channel
        .send(&sample_message(DELIVERY_ID), &device(TOKEN))
        .await
        .unwrap_err();
    assert!(matches!(err, SendError::Retriable { .. }), "{err:?}");
    assert!(
        err.answer().starts_with("Error connecting to APNs"),
        "{err:?}"
    );
    // The cause is there, once.
    assert_eq!(
        err.answer()
            .matches("error reading a body from connection")
            .count(),
        1,
        "{err:?}"
    );
}

#[tokio::test]
async fn pushes_that_cannot_succeed_never_reach_apple() {
    let (channel, apple) = channel();
    for token in ["", "not hex", "<8f2c 1b0e>", "8f2c/../1b0e"] {
        let err = channel
            .send(&sample_message(DELIVERY_ID), &device(token))
            .await
            .unwrap_err();
        assert!(
            matches!(err, SendError::InvalidRecipient { .. }),
            "{token:?}: {err:?}"
        );
    }

    let mut huge = sample_message(DELIVERY_ID);
    huge.data = json!({"blob": "x".repeat(MAX_PAYLOAD_BYTES)});
    let err = channel.send(&huge, &device(TOKEN)).await.unwrap_err();
    assert!(matches!(err, SendError::Permanent { .. }), "{err:?}");
    assert!(err.answer().contains("4096"), "{err:?}");

    let mut empty = sample_message(DELIVERY_ID);
    empty.subject.clear();
    empty.text_body.clear();
    let err = channel.send(&empty, &device(TOKEN)).await.unwrap_err();
    assert!(matches!(err, SendError::Permanent { .. }), "{err:?}");

    assert!(apple.pushes().is_empty());
}

/// A key like the `.p8` Apple hands out: EC P-256, PKCS#8, PEM.
fn p8_key() -> String {
    let rng = ring::rand::SystemRandom::new();
    let der = ring::signature::EcdsaKeyPair::generate_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &rng,
    )
    .unwrap();
    pem("PRIVATE KEY", der.as_ref())
}

fn pem(label: &str, der: &[u8]) -> String {
    let encoded = BASE64.encode(der);
    let lines: Vec<&str> = encoded
        .as_bytes()
        .chunks(64)
        .map(|line| std::str::from_utf8(line).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

fn config(key_pem: &str) -> ApnsConfig {
    ApnsConfig {
        key_id: "ABC123DEFG".to_owned(),
        team_id: "DEF123GHIJ".to_owned(),
        key_file: None,
        key_pem: Some(key_pem.to_owned()),
        topic: TOPIC.to_owned(),
        environment: ApnsEnvironment::Production,
        timeout: std::time::Duration::from_secs(10),
    }
}

#[test]
fn new_takes_a_p8_key_inline_or_from_a_file() {
    let key = p8_key();
    ApnsChannel::new(config(&key)).unwrap();

    let mut file = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut file, key.as_bytes()).unwrap();
    ApnsChannel::new(ApnsConfig {
        key_file: Some(file.path().to_owned()),
        key_pem: None,
        environment: ApnsEnvironment::Sandbox,
        ..config(&key)
    })
    .unwrap();
}

#[test]
fn new_refuses_a_key_that_is_not_a_p8_key() {
    let garbage = "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n";
    let ed25519 =
        ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
    let not_p256 = pem("PRIVATE KEY", ed25519.as_ref());
    for key in ["not a key at all", garbage, &not_p256] {
        let err = ApnsChannel::new(config(key)).unwrap_err();
        assert_eq!(err.setting, "apns.key_pem", "{err}");
        let text = err.to_string();
        assert!(
            text.starts_with("invalid apns.key_pem: is not an APNs auth key (a .p8 file"),
            "{text}"
        );
        assert!(
            !text.contains("bm90IGEga2V5"),
            "the key is not echoed: {text}"
        );
    }

    let mut file = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut file, garbage.as_bytes()).unwrap();
    let err = ApnsChannel::new(ApnsConfig {
        key_file: Some(file.path().to_owned()),
        key_pem: None,
        ..config("")
    })
    .unwrap_err();
    assert_eq!(err.setting, "apns.key_file", "{err}");
}
