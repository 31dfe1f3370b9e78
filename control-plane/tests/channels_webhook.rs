//! The webhook channel against a local axum receiver that verifies the
//! Standard Webhooks signature and answers what the test sets.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use nudge_control_plane::channels::compliance::{self, Peer, sample_message};
use nudge_control_plane::channels::webhook::{WebhookChannel, WebhookConfig, verify_signature};
use nudge_control_plane::channels::{Channel, Recipient, SendError};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
struct Received {
    id: String,
    timestamp: i64,
    signature: String,
    body: Bytes,
    verified: bool,
}

#[derive(Debug, Default)]
struct ReceiverState {
    /// Status to answer and optional `Retry-After` value.
    answer: Option<(u16, Option<String>)>,
    received: Vec<Received>,
}

#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<ReceiverState>>);

impl Receiver {
    fn answer_with(&self, status: u16, retry_after: Option<&str>) {
        self.0.lock().unwrap().answer = Some((status, retry_after.map(str::to_owned)));
    }

    fn received(&self) -> Vec<Received> {
        self.0.lock().unwrap().received.clone()
    }
}

async fn receive(State(receiver): State<Receiver>, headers: HeaderMap, body: Bytes) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let id = header("webhook-id");
    let timestamp = header("webhook-timestamp").parse().unwrap_or(-1);
    let signature = header("webhook-signature");
    let verified = verify_signature(SECRET, &id, timestamp, &body, &signature);
    let mut state = receiver.0.lock().unwrap();
    state.received.push(Received {
        id,
        timestamp,
        signature,
        body,
        verified,
    });
    let (status, retry_after) = state.answer.clone().unwrap_or((200, None));
    if !verified {
        return (StatusCode::UNAUTHORIZED, "bad signature").into_response();
    }
    let status = StatusCode::from_u16(status).unwrap();
    match retry_after {
        Some(value) => (status, [("retry-after", value)], "answer").into_response(),
        None => (status, "ok").into_response(),
    }
}

/// Starts a receiver on 127.0.0.1:0; returns it and its URL.
async fn start_receiver() -> (Receiver, String) {
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(receiver.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (receiver, format!("http://{addr}/hook"))
}

fn channel(allow_private: bool) -> WebhookChannel {
    WebhookChannel::new(WebhookConfig {
        secret: SECRET.to_owned(),
        timeout: Duration::from_secs(5),
        allow_private_destinations: allow_private,
    })
    .unwrap()
}

fn to(url: &str) -> Recipient {
    Recipient::Url {
        url: url.to_owned(),
    }
}

/// A port nothing listens on.
fn closed_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

struct WebhookPeer {
    receiver: Receiver,
    url: String,
}

#[async_trait]
impl Peer for WebhookPeer {
    fn recipient(&self) -> Recipient {
        to(&self.url)
    }

    async fn attempts(&self) -> usize {
        self.receiver.received().len()
    }

    async fn fail_temporarily(&mut self) -> bool {
        self.receiver.answer_with(503, None);
        true
    }

    async fn take_down(&mut self) -> bool {
        self.url = format!("http://{}/hook", closed_port());
        true
    }
}

#[tokio::test]
async fn passes_the_compliance_test() {
    let (receiver, url) = start_receiver().await;
    let channel = channel(true);
    compliance::check(&channel, &mut WebhookPeer { receiver, url }).await;
}

#[tokio::test]
async fn delivers_a_signed_payload_that_verifies() {
    let (receiver, url) = start_receiver().await;
    let message = sample_message("d-42");
    let receipt = channel(true).send(&message, &to(&url)).await.unwrap();
    assert!(receipt.answer.starts_with("200"), "{receipt:?}");

    let received = receiver.received();
    assert_eq!(received.len(), 1);
    let request = &received[0];
    assert!(request.verified, "signature should verify: {request:?}");
    assert_eq!(request.id, "d-42");
    let now = jiff::Timestamp::now().as_second();
    assert!((now - request.timestamp).abs() < 60);
    let payload: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(payload["type"], "payment_failed");
    assert_eq!(payload["notification_id"], "n-d-42");
    assert_eq!(payload["delivery_id"], "d-42");
    assert_eq!(payload["subject"], message.subject);
    assert_eq!(payload["text"], message.text_body);
    assert_eq!(payload["data"], message.data);
    assert!(
        payload["timestamp"]
            .as_str()
            .unwrap()
            .parse::<jiff::Timestamp>()
            .is_ok()
    );

    // A tampered body, id or timestamp no longer verifies.
    let mut tampered = request.body.to_vec();
    let last = tampered.len() - 2;
    tampered[last] ^= 1;
    assert!(!verify_signature(
        SECRET,
        &request.id,
        request.timestamp,
        &tampered,
        &request.signature
    ));
    assert!(!verify_signature(
        SECRET,
        "d-43",
        request.timestamp,
        &request.body,
        &request.signature
    ));
    assert!(!verify_signature(
        SECRET,
        &request.id,
        request.timestamp + 1,
        &request.body,
        &request.signature
    ));
    let other_secret = "whsec_dGhpcyBpcyBhbm90aGVyIHNlY3JldA==";
    assert!(!verify_signature(
        other_secret,
        &request.id,
        request.timestamp,
        &request.body,
        &request.signature
    ));
}

#[tokio::test]
async fn webhook_id_is_stable_across_retries() {
    let (receiver, url) = start_receiver().await;
    let channel = channel(true);
    receiver.answer_with(500, None);
    let message = sample_message("d-stable");
    assert!(channel.send(&message, &to(&url)).await.is_err());
    receiver.answer_with(200, None);
    channel.send(&message, &to(&url)).await.unwrap();
    let ids: Vec<String> = receiver.received().into_iter().map(|r| r.id).collect();
    assert_eq!(ids, ["d-stable", "d-stable"]);
}

#[tokio::test]
async fn classifies_the_receivers_answers() {
    let (receiver, url) = start_receiver().await;
    let channel = channel(true);
    let message = sample_message("d-1");

    receiver.answer_with(500, None);
    let err = channel.send(&message, &to(&url)).await.unwrap_err();
    assert!(
        matches!(
            err,
            SendError::Retriable {
                retry_after: None,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.answer().starts_with("500"), "{err:?}");

    receiver.answer_with(429, Some("7"));
    let err = channel.send(&message, &to(&url)).await.unwrap_err();
    assert_eq!(
        err,
        SendError::Retriable {
            answer: "429 Too Many Requests answer".to_owned(),
            retry_after: Some(Duration::from_secs(7)),
        }
    );

    let in_two_minutes = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(120);
    let http_date = jiff::fmt::rfc2822::DateTimePrinter::new()
        .timestamp_to_rfc9110_string(&in_two_minutes)
        .unwrap();
    receiver.answer_with(503, Some(&http_date));
    let SendError::Retriable {
        retry_after: Some(wait),
        ..
    } = channel.send(&message, &to(&url)).await.unwrap_err()
    else {
        panic!("503 with Retry-After should be Retriable with a hint");
    };
    assert!(
        (Duration::from_secs(110)..=Duration::from_secs(120)).contains(&wait),
        "{wait:?}"
    );

    receiver.answer_with(408, None);
    let err = channel.send(&message, &to(&url)).await.unwrap_err();
    assert!(matches!(err, SendError::Retriable { .. }), "{err:?}");

    receiver.answer_with(410, None);
    let err = channel.send(&message, &to(&url)).await.unwrap_err();
    assert!(matches!(err, SendError::InvalidRecipient { .. }), "{err:?}");

    receiver.answer_with(400, None);
    let err = channel.send(&message, &to(&url)).await.unwrap_err();
    assert!(matches!(err, SendError::Permanent { .. }), "{err:?}");

    receiver.answer_with(302, None);
    let err = channel.send(&message, &to(&url)).await.unwrap_err();
    assert!(
        matches!(err, SendError::Permanent { .. }),
        "redirects are not followed: {err:?}"
    );

    // One request per send, none repeated.
    assert_eq!(receiver.received().len(), 7);
}

#[tokio::test]
async fn refuses_private_destinations_unless_allowed() {
    let (receiver, url) = start_receiver().await;
    let port = url
        .split(':')
        .nth(2)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let strict = channel(false);
    let message = sample_message("d-private");
    for destination in [
        url.clone(),
        format!("http://localhost:{port}/hook"),
        format!("http://[::1]:{port}/hook"),
        "http://10.0.0.1/hook".to_owned(),
        "http://169.254.169.254/latest/meta-data".to_owned(),
        "http://[::ffff:127.0.0.1]:80/hook".to_owned(),
    ] {
        let err = strict.send(&message, &to(&destination)).await.unwrap_err();
        let SendError::Permanent { answer } = &err else {
            panic!("{destination}: expected Permanent, got {err:?}");
        };
        assert!(answer.contains("non-public"), "{destination}: {answer}");
    }
    assert!(
        receiver.received().is_empty(),
        "a refused destination is never contacted"
    );

    channel(true).send(&message, &to(&url)).await.unwrap();
    assert_eq!(receiver.received().len(), 1);
}

#[tokio::test]
async fn bad_urls_are_permanent() {
    let channel = channel(false);
    let message = sample_message("d-url");
    for url in ["not a url", "ftp://example.com/hook"] {
        let err = channel.send(&message, &to(url)).await.unwrap_err();
        assert!(matches!(err, SendError::Permanent { .. }), "{url}: {err:?}");
    }
}

/// A receiver that answers an endless body costs a bounded read, not
/// memory and a worker until the timeout.
#[tokio::test]
async fn an_endless_answer_is_read_bounded() {
    let peer = compliance::EndlessAnswer::start(200).await;
    let channel = WebhookChannel::new(WebhookConfig {
        secret: SECRET.to_owned(),
        timeout: Duration::from_secs(30),
        allow_private_destinations: true,
    })
    .unwrap();
    compliance::check_bounded_answer(&channel, &to(&peer.url("/hook")), &peer).await;
}
