//! The Web Push channel against a receiver that plays push service and
//! browser: `tests/peers/web_push_receiver.py`, run from the test venv's
//! python (`NUDGE_TEST_PYTHON`, default `<workspace>/.venv/bin/python`,
//! which `scripts/test` builds, with `http_ece` and `cryptography`). It
//! verifies the VAPID token and decrypts every message with `http_ece`, an
//! implementation independent of ours.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD as BASE64, URL_SAFE_NO_PAD};
use nudge_control_plane::channels::compliance::{self, Peer, sample_message};
use nudge_control_plane::channels::web_push::{self, WebPushChannel, WebPushConfig};
use nudge_control_plane::channels::{Channel, OutboundMessage, Recipient, SendError};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const SUBJECT: &str = "mailto:ops@nudge.example";

fn python() -> PathBuf {
    match std::env::var_os("NUDGE_TEST_PYTHON") {
        Some(path) => PathBuf::from(path),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python"),
    }
}

/// Fails (never skips) when the venv lacks http_ece or cryptography.
fn require_http_ece() -> PathBuf {
    let python = python();
    let ok = std::process::Command::new(&python)
        .args(["-c", "import http_ece, cryptography"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    assert!(
        ok,
        "{} cannot import http_ece and cryptography: run scripts/test once (it builds \
         the venv), or point NUDGE_TEST_PYTHON at a python with both installed",
        python.display()
    );
    python
}

/// The line the receiver prints once it listens.
#[derive(Debug, Deserialize)]
struct Ready {
    port: u16,
    p256dh: String,
    auth: String,
}

/// What the receiver saw, from `GET /received`.
#[derive(Debug, Deserialize)]
struct Received {
    attempts: Vec<Attempt>,
    messages: Vec<Message>,
}

#[derive(Debug, Deserialize)]
struct Attempt {
    status: u16,
    answer: String,
}

#[derive(Debug, Deserialize)]
struct Message {
    path: String,
    payload: serde_json::Value,
    ttl: Option<String>,
    urgency: Option<String>,
    topic: Option<String>,
    content_type: Option<String>,
    vapid: serde_json::Value,
    record_size: u32,
}

/// A running receiver with its subscription keys.
struct Receiver {
    ready: Ready,
    child: Option<Child>,
    http: reqwest::Client,
}

impl Receiver {
    async fn start() -> Self {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/web_push_receiver.py");
        let mut child = Command::new(require_http_ece())
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start the web push receiver");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("the web push receiver did not start within 20 s")
            .unwrap()
            .expect("the web push receiver exited before it was ready");
        let ready: Ready = serde_json::from_str(&line)
            .unwrap_or_else(|err| panic!("unexpected first line {line:?}: {err}"));
        Receiver {
            ready,
            child: Some(child),
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
        }
    }

    fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.ready.port)
    }

    /// The receiver's own subscription at `/push/{id}`.
    fn subscription(&self, id: &str) -> Recipient {
        Recipient::WebPush {
            endpoint: format!("{}/push/{id}", self.origin()),
            p256dh: self.ready.p256dh.clone(),
            auth: self.ready.auth.clone(),
        }
    }

    async fn set_mode(&self, mode: &str) {
        let response = self
            .http
            .post(format!("{}/mode", self.origin()))
            .json(&serde_json::json!({ "mode": mode }))
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "set mode {mode}: {response:?}"
        );
    }

    async fn received(&self) -> Received {
        self.http
            .get(format!("{}/received", self.origin()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Kills the receiver: its port is closed from then on.
    async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.unwrap();
        }
    }
}

/// A fresh VAPID key from ring, as a PKCS#8 PEM file and as raw keys.
struct VapidKey {
    dir: tempfile::TempDir,
    private_key: String,
    public_key: String,
}

impl VapidKey {
    fn generate() -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let encoded = BASE64.encode(pkcs8.as_ref());
        let lines: Vec<&str> = encoded
            .as_bytes()
            .chunks(64)
            .map(|chunk| std::str::from_utf8(chunk).unwrap())
            .collect();
        std::fs::write(
            dir.path().join("vapid.pem"),
            format!(
                "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
                lines.join("\n")
            ),
        )
        .unwrap();
        VapidKey {
            dir,
            private_key: URL_SAFE_NO_PAD.encode(private_scalar(pkcs8.as_ref())),
            public_key: URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()),
        }
    }

    fn pem_file(&self) -> PathBuf {
        self.dir.path().join("vapid.pem")
    }
}

/// The 32-byte scalar inside ring's PKCS#8: the ECPrivateKey's
/// `INTEGER 1, OCTET STRING (32)`.
fn private_scalar(pkcs8: &[u8]) -> &[u8] {
    let marker = [0x02, 0x01, 0x01, 0x04, 0x20];
    let at = pkcs8
        .windows(marker.len())
        .position(|window| window == marker)
        .expect("an ECPrivateKey in the PKCS#8 document");
    &pkcs8[at + marker.len()..at + marker.len() + 32]
}

fn config(key: &VapidKey, allow_private: bool) -> WebPushConfig {
    WebPushConfig {
        vapid_private_key: None,
        vapid_public_key: None,
        vapid_key_file: Some(key.pem_file()),
        subject: SUBJECT.to_owned(),
        ttl: Duration::from_secs(3600),
        timeout: Duration::from_secs(5),
        allow_private_endpoints: allow_private,
    }
}

fn channel(key: &VapidKey) -> WebPushChannel {
    WebPushChannel::new(config(key, true)).unwrap()
}

struct WebPushPeer(Receiver);

#[async_trait]
impl Peer for WebPushPeer {
    fn recipient(&self) -> Recipient {
        self.0.subscription("compliance")
    }

    async fn attempts(&self) -> usize {
        self.0.received().await.attempts.len()
    }

    async fn fail_temporarily(&mut self) -> bool {
        self.0.set_mode("unavailable").await;
        true
    }

    async fn take_down(&mut self) -> bool {
        self.0.stop().await;
        true
    }
}

#[tokio::test]
async fn passes_the_compliance_test() {
    let receiver = Receiver::start().await;
    let key = VapidKey::generate();
    compliance::check(&channel(&key), &mut WebPushPeer(receiver)).await;
}

#[tokio::test]
async fn delivers_a_payload_the_browser_decrypts_under_a_verified_vapid_token() {
    let receiver = Receiver::start().await;
    let key = VapidKey::generate();
    let channel = channel(&key);
    let message = sample_message("d-42");
    let receipt = channel
        .send(&message, &receiver.subscription("sub-1"))
        .await
        .unwrap();
    assert!(receipt.answer.starts_with("201"), "{receipt:?}");
    assert_eq!(
        receipt.provider_message_id,
        Some(format!("{}/message/1", receiver.origin()))
    );

    let received = receiver.received().await;
    assert_eq!(received.messages.len(), 1, "{received:?}");
    let got = &received.messages[0];
    assert_eq!(got.path, "/push/sub-1");
    assert_eq!(
        got.payload,
        serde_json::json!({
            "title": message.subject,
            "body": message.text_body,
            "data": message.data,
            "notification_id": "n-d-42",
            "delivery_id": "d-42",
            "type": "payment_failed",
        })
    );
    assert_eq!(got.record_size, 4096);
    assert_eq!(got.ttl.as_deref(), Some("3600"));
    assert_eq!(got.urgency.as_deref(), Some("normal"));
    assert_eq!(
        got.content_type.as_deref(),
        Some("application/octet-stream")
    );
    assert_eq!(got.topic.as_ref().map(String::len), Some(32));

    // The receiver verified the signature; these are the claims it saw.
    assert_eq!(got.vapid["aud"], receiver.origin());
    assert_eq!(got.vapid["sub"], SUBJECT);
    assert_eq!(got.vapid["k"], channel.vapid_public_key());
    assert_eq!(channel.vapid_public_key(), key.public_key);
    let expires = got.vapid["exp"].as_i64().unwrap();
    let twelve_hours = jiff::Timestamp::now().as_second() + 12 * 60 * 60;
    assert!((expires - twelve_hours).abs() < 60, "exp {expires}");
}

#[tokio::test]
async fn raw_keys_sign_like_the_pem_file() {
    let receiver = Receiver::start().await;
    let key = VapidKey::generate();
    let raw = WebPushChannel::new(WebPushConfig {
        vapid_private_key: Some(key.private_key.clone()),
        vapid_public_key: Some(key.public_key.clone()),
        vapid_key_file: None,
        ..config(&key, true)
    })
    .unwrap();
    assert_eq!(raw.vapid_public_key(), channel(&key).vapid_public_key());
    raw.send(&sample_message("raw"), &receiver.subscription("raw"))
        .await
        .unwrap();
    let received = receiver.received().await;
    assert_eq!(received.messages[0].vapid["k"], key.public_key);
}

#[tokio::test]
async fn retries_of_one_delivery_share_a_topic() {
    let receiver = Receiver::start().await;
    let channel = channel(&VapidKey::generate());
    let subscription = receiver.subscription("sub-1");
    for delivery in ["d-1", "d-1", "d-2"] {
        channel
            .send(&sample_message(delivery), &subscription)
            .await
            .unwrap();
    }
    let topics: Vec<String> = receiver
        .received()
        .await
        .messages
        .into_iter()
        .map(|message| message.topic.unwrap())
        .collect();
    assert_eq!(topics[0], topics[1]);
    assert_ne!(topics[0], topics[2]);
}

#[tokio::test]
async fn gone_and_not_found_are_invalid_recipients() {
    let receiver = Receiver::start().await;
    let channel = channel(&VapidKey::generate());
    for (mode, status) in [("gone", "410"), ("not_found", "404")] {
        receiver.set_mode(mode).await;
        let err = channel
            .send(&sample_message(mode), &receiver.subscription("old"))
            .await
            .unwrap_err();
        assert!(
            matches!(err, SendError::InvalidRecipient { .. }),
            "{mode}: {err:?}"
        );
        assert!(err.answer().starts_with(status), "{err:?}");
    }
    let received = receiver.received().await;
    assert_eq!(received.attempts.len(), 2, "one request per send");
    assert!(received.messages.is_empty());
}

#[tokio::test]
async fn throttling_and_outages_are_retriable() {
    let receiver = Receiver::start().await;
    let channel = channel(&VapidKey::generate());
    receiver.set_mode("too_many").await;
    let err = channel
        .send(&sample_message("t"), &receiver.subscription("s"))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        SendError::Retriable {
            answer: "429 Too Many Requests mode too_many".to_owned(),
            retry_after: Some(Duration::from_secs(7)),
        }
    );
    receiver.set_mode("unavailable").await;
    let err = channel
        .send(&sample_message("u"), &receiver.subscription("s"))
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
        "{err:?}"
    );
    assert_eq!(receiver.received().await.attempts.len(), 2);
}

#[tokio::test]
async fn keys_that_are_not_the_browsers_fail_permanently() {
    let receiver = Receiver::start().await;
    let channel = channel(&VapidKey::generate());
    let Recipient::WebPush {
        endpoint, p256dh, ..
    } = receiver.subscription("s")
    else {
        unreachable!()
    };
    // Well-formed keys, but not the subscription's: the browser's side
    // cannot decrypt and (in this receiver) answers 400.
    let other_public = {
        let rng = SystemRandom::new();
        let other =
            ring::agreement::EphemeralPrivateKey::generate(&ring::agreement::ECDH_P256, &rng)
                .unwrap();
        URL_SAFE_NO_PAD.encode(other.compute_public_key().unwrap().as_ref())
    };
    for recipient in [
        Recipient::WebPush {
            endpoint: endpoint.clone(),
            p256dh: p256dh.clone(),
            auth: URL_SAFE_NO_PAD.encode([0x5a; 16]),
        },
        Recipient::WebPush {
            endpoint: endpoint.clone(),
            p256dh: other_public,
            auth: receiver.ready.auth.clone(),
        },
    ] {
        let err = channel
            .send(&sample_message("tampered"), &recipient)
            .await
            .unwrap_err();
        assert!(matches!(err, SendError::Permanent { .. }), "{err:?}");
        assert!(err.answer().contains("cannot decrypt"), "{err:?}");
    }
    let received = receiver.received().await;
    assert!(received.messages.is_empty());
    assert!(
        received
            .attempts
            .iter()
            .all(|attempt| attempt.status == 400),
        "{received:?}"
    );
}

#[tokio::test]
async fn malformed_subscriptions_are_invalid_without_a_request() {
    let receiver = Receiver::start().await;
    let channel = channel(&VapidKey::generate());
    let Recipient::WebPush {
        endpoint,
        p256dh,
        auth,
    } = receiver.subscription("s")
    else {
        unreachable!()
    };
    for (endpoint, p256dh, auth) in [
        (endpoint.as_str(), "not-a-key", auth.as_str()),
        (endpoint.as_str(), p256dh.as_str(), "c2hvcnQ"),
        ("push.example/no-scheme", p256dh.as_str(), auth.as_str()),
    ] {
        let recipient = Recipient::WebPush {
            endpoint: endpoint.to_owned(),
            p256dh: p256dh.to_owned(),
            auth: auth.to_owned(),
        };
        let err = channel
            .send(&sample_message("m"), &recipient)
            .await
            .unwrap_err();
        assert!(
            matches!(err, SendError::InvalidRecipient { .. }),
            "{endpoint}: {err:?}"
        );
    }
    assert!(receiver.received().await.attempts.is_empty());
}

#[tokio::test]
async fn oversized_data_is_dropped_and_an_oversized_text_refused() {
    let receiver = Receiver::start().await;
    let channel = channel(&VapidKey::generate());
    let big_data = OutboundMessage {
        data: serde_json::json!({ "blob": "x".repeat(5000) }),
        ..sample_message("big-data")
    };
    channel
        .send(&big_data, &receiver.subscription("s"))
        .await
        .unwrap();
    let received = receiver.received().await;
    let payload = &received.messages[0].payload;
    assert_eq!(payload.get("data"), None, "{payload}");
    assert_eq!(payload["body"], big_data.text_body);

    let big_text = OutboundMessage {
        text_body: "x".repeat(5000),
        ..sample_message("big-text")
    };
    let err = channel
        .send(&big_text, &receiver.subscription("s"))
        .await
        .unwrap_err();
    assert!(matches!(err, SendError::Permanent { .. }), "{err:?}");
    assert_eq!(receiver.received().await.attempts.len(), 1);
}

#[tokio::test]
async fn refuses_private_endpoints_unless_allowed() {
    let receiver = Receiver::start().await;
    let key = VapidKey::generate();
    let strict = WebPushChannel::new(config(&key, false)).unwrap();
    let port = receiver.ready.port;
    let Recipient::WebPush { p256dh, auth, .. } = receiver.subscription("s") else {
        unreachable!()
    };
    for endpoint in [
        format!("{}/push/s", receiver.origin()),
        format!("https://127.0.0.1:{port}/push/s"),
        format!("https://localhost:{port}/push/s"),
        format!("https://[::1]:{port}/push/s"),
        "https://169.254.169.254/push/s".to_owned(),
    ] {
        let recipient = Recipient::WebPush {
            endpoint: endpoint.clone(),
            p256dh: p256dh.clone(),
            auth: auth.clone(),
        };
        let err = strict
            .send(&sample_message("p"), &recipient)
            .await
            .unwrap_err();
        let SendError::Permanent { answer } = &err else {
            panic!("{endpoint}: expected Permanent, got {err:?}");
        };
        assert!(
            answer.contains("allow_private_endpoints"),
            "{endpoint}: {answer}"
        );
    }
    assert!(
        receiver.received().await.attempts.is_empty(),
        "a refused endpoint is never contacted"
    );

    channel(&key)
        .send(&sample_message("p"), &receiver.subscription("s"))
        .await
        .unwrap();
    assert_eq!(receiver.received().await.messages.len(), 1);
}

/// The other tests rely on the receiver's VAPID check: make sure it
/// refuses what it should, with tokens made by the channel's own signer.
#[tokio::test]
async fn the_receiver_really_checks_the_vapid_token() {
    let receiver = Receiver::start().await;
    let rng = SystemRandom::new();
    let signer = |key: &VapidKey| {
        let pem = std::fs::read_to_string(key.pem_file()).unwrap();
        let der: String = pem
            .lines()
            .filter(|line| !line.starts_with("-----"))
            .collect();
        EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &BASE64.decode(der).unwrap(),
            &rng,
        )
        .unwrap()
    };
    let (key, other) = (VapidKey::generate(), VapidKey::generate());
    let in_an_hour = jiff::Timestamp::now().as_second() + 3600;
    let token = |key: &VapidKey, audience: &str, expires: i64, subject: &str| {
        web_push::vapid_jwt(&signer(key), &rng, audience, expires, subject).unwrap()
    };
    let origin = receiver.origin();
    let post = |authorization: Option<String>| {
        let mut request = receiver
            .http
            .post(format!("{origin}/push/s"))
            .header("Content-Encoding", "aes128gcm")
            .header("TTL", "60")
            .body(vec![0u8; 100]);
        if let Some(authorization) = authorization {
            request = request.header("Authorization", authorization);
        }
        request.send()
    };
    let vapid = |token: String, k: &str| Some(format!("vapid t={token}, k={k}"));
    for (case, authorization) in [
        ("no token", None),
        (
            "signed by another key",
            vapid(token(&other, &origin, in_an_hour, SUBJECT), &key.public_key),
        ),
        (
            "another audience",
            vapid(
                token(&key, "https://push.example", in_an_hour, SUBJECT),
                &key.public_key,
            ),
        ),
        (
            "expired",
            vapid(
                token(&key, &origin, in_an_hour - 7200, SUBJECT),
                &key.public_key,
            ),
        ),
        (
            "more than 24 hours",
            vapid(
                token(&key, &origin, in_an_hour + 24 * 3600, SUBJECT),
                &key.public_key,
            ),
        ),
        (
            "no contact",
            vapid(token(&key, &origin, in_an_hour, "ops"), &key.public_key),
        ),
    ] {
        let response = post(authorization).await.unwrap();
        assert_eq!(response.status(), 401, "{case}");
    }
    // A good token gets past the check; the garbage body then cannot be
    // decrypted.
    let response = post(vapid(
        token(&key, &origin, in_an_hour, SUBJECT),
        &key.public_key,
    ))
    .await
    .unwrap();
    assert_eq!(response.status(), 400);
    let received = receiver.received().await;
    assert!(
        received.attempts[6].answer.contains("cannot decrypt"),
        "{received:?}"
    );
}

/// A push endpoint that answers an endless body costs a bounded read, not
/// memory and a worker until the timeout.
#[tokio::test]
async fn an_endless_answer_is_read_bounded() {
    let peer = compliance::EndlessAnswer::start(201).await;
    let channel = WebPushChannel::new(WebPushConfig {
        timeout: Duration::from_secs(30),
        ..config(&VapidKey::generate(), true)
    })
    .unwrap();
    // A browser's subscription keys: a P-256 public key and 16 random bytes.
    let rng = SystemRandom::new();
    let browser =
        ring::agreement::EphemeralPrivateKey::generate(&ring::agreement::ECDH_P256, &rng).unwrap();
    let p256dh = URL_SAFE_NO_PAD.encode(browser.compute_public_key().unwrap().as_ref());
    let auth = URL_SAFE_NO_PAD.encode([7_u8; 16]);
    let recipient = Recipient::WebPush {
        endpoint: peer.url("/push/endless"),
        p256dh,
        auth,
    };
    compliance::check_bounded_answer(&channel, &recipient, &peer).await;
}
