//! End-to-end tests of the push channels against the real binaries: an
//! application registers devices through the admin API and sends `notify`
//! calls through `nudge-agent`; `nudge-control-plane` pushes to
//! * an FCM-shaped HTTP server (its OAuth token endpoint and the v1
//!   `messages:send`), which answers `UNREGISTERED` for one token, and
//! * the Web Push receiver `control-plane/tests/peers/web_push_receiver.py`,
//!   which verifies VAPID, decrypts with Mozilla's `http_ece`, and can
//!   answer `410 Gone`.
//!
//! What the issue promises and these tests show: a token or subscription
//! the provider reports as invalid is deactivated (with the provider's
//! answer as the reason) and not used again, while the user's other
//! devices keep receiving. (APNs is tested at a2's boundary in
//! `control-plane/tests/engine.rs`: Apple's hosts are hard-coded in a2.)
//!
//! Run `cargo build --bins` first; `scripts/test` does everything.

// `support` is shared with the other e2e binaries; this one uses part of it.
#[allow(dead_code)]
mod support;

use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use reqwest::Method;
use serde_json::{Value, json};
use tempfile::TempDir;

use nudge_e2e::peer::start_python_peer;
use nudge_e2e::{Agent, ControlPlane};
use support::{installed_tool, start_with_engine_config, wait_until, workspace_dir};

const USER: &str = "pusher";
const DEAD_TOKEN: &str = "fcm-token-uninstalled";
const LIVE_TOKEN: &str = "fcm-token-live";

/// Several engine polls and dispatches: how long a test gives the programs
/// to send something they must not. Never a speed assertion.
const CHANCE_TO_MISBEHAVE: Duration = Duration::from_millis(1500);

// ---------------------------------------------------------------------------
// Peers

/// An FCM-shaped server: `POST /token` grants an access token (the grant's
/// signature is checked in the channel's own test), `POST
/// /v1/projects/{p}/messages:send` records the target token and answers
/// `UNREGISTERED` for [`DEAD_TOKEN`], success otherwise.
struct Fcm {
    url: String,
    sends: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Fcm {
    async fn start() -> Self {
        async fn token() -> Json<Value> {
            Json(json!({"access_token": "ya29.e2e", "expires_in": 3600, "token_type": "Bearer"}))
        }
        async fn send(State(sends): State<Arc<Mutex<Vec<String>>>>, body: Json<Value>) -> Response {
            let token = body["message"]["token"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            sends.lock().unwrap().push(token.clone());
            if token == DEAD_TOKEN {
                let error = json!({"error": {
                    "code": 404,
                    "message": "Requested entity was not found.",
                    "status": "NOT_FOUND",
                    "details": [{
                        "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                        "errorCode": "UNREGISTERED"
                    }]
                }});
                return (StatusCode::NOT_FOUND, Json(error)).into_response();
            }
            Json(json!({"name": "projects/nudge-test/messages/0:1"})).into_response()
        }
        let sends = Arc::new(Mutex::new(Vec::new()));
        let app = axum::Router::new()
            .route("/token", post(token))
            .route("/v1/projects/nudge-test/messages:send", post(send))
            .with_state(Arc::clone(&sends));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Fcm { url, sends, task }
    }

    fn sends_to(&self, token: &str) -> usize {
        self.sends
            .lock()
            .unwrap()
            .iter()
            .filter(|t| *t == token)
            .count()
    }
}

impl Drop for Fcm {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `web_push_receiver.py`: one browser subscription, a push service that
/// answers what its mode says.
struct WebPushReceiver {
    child: Child,
    port: u16,
    p256dh: String,
    auth: String,
}

impl WebPushReceiver {
    fn start() -> Self {
        let python = installed_tool("NUDGE_TEST_PYTHON", ".venv/bin/python", "http_ece");
        let script = workspace_dir().join("control-plane/tests/peers/web_push_receiver.py");
        let (child, line) = start_python_peer(&python, &script, std::iter::empty::<&str>())
            .expect("start web_push_receiver.py");
        let hello: Value = serde_json::from_str(&line).expect("the receiver's JSON line");
        WebPushReceiver {
            child,
            port: u16::try_from(hello["port"].as_u64().unwrap()).unwrap(),
            p256dh: hello["p256dh"].as_str().unwrap().to_owned(),
            auth: hello["auth"].as_str().unwrap().to_owned(),
        }
    }

    fn subscription(&self, id: &str) -> Value {
        json!({
            "endpoint": format!("http://127.0.0.1:{}/push/{id}", self.port),
            "keys": {"p256dh": self.p256dh, "auth": self.auth},
        })
    }

    async fn set_mode(&self, mode: &str) {
        let reply = reqwest::Client::new()
            .post(format!("http://127.0.0.1:{}/mode", self.port))
            .json(&json!({"mode": mode}))
            .send()
            .await
            .unwrap();
        assert!(reply.status().is_success(), "{reply:?}");
    }

    /// Every attempt the receiver saw, as `(path, status)`.
    async fn attempts(&self) -> Vec<(String, u64)> {
        let received: Value = reqwest::get(format!("http://127.0.0.1:{}/received", self.port))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        received["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|attempt| {
                (
                    attempt["path"].as_str().unwrap_or_default().to_owned(),
                    attempt["status"].as_u64().unwrap_or_default(),
                )
            })
            .collect()
    }

    /// Decrypted messages' titles, in arrival order.
    async fn titles(&self) -> Vec<String> {
        let received: Value = reqwest::get(format!("http://127.0.0.1:{}/received", self.port))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        received["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|message| {
                message["payload"]["title"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect()
    }
}

impl Drop for WebPushReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A VAPID key as a PKCS#8 PEM file in `dir`.
fn vapid_key_file(dir: &TempDir) -> String {
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let pem = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref())
    );
    let path = dir.path().join("vapid.pem");
    std::fs::write(&path, pem).unwrap();
    path.to_str().unwrap().to_owned()
}

// ---------------------------------------------------------------------------
// The programs

struct Stack {
    control_plane: ControlPlane,
    agent: Agent,
    _config: TempDir,
    /// Holds the VAPID key file.
    _vapid: TempDir,
}

impl Stack {
    async fn start(fcm: &Fcm) -> Self {
        let vapid_dir = tempfile::tempdir().unwrap();
        let service_account =
            workspace_dir().join("control-plane/tests/fixtures/fcm-test-service-account.json");
        let toml = format!(
            r#"
[retry]
initial = "200ms"
max = "1s"
max_attempts = 3

[channels.fcm]
service_account_file = "{service_account}"
base_url = "{fcm}"
token_url = "{fcm}/token"

[channels.web_push]
vapid_key_file = "{vapid}"
subject = "mailto:ops@example.com"
allow_private_endpoints = true

[types.reply]
channels = ["fcm", "web_push", "in_app"]
"#,
            service_account = service_account.display(),
            fcm = fcm.url,
            vapid = vapid_key_file(&vapid_dir),
        );
        let (control_plane, agent, config) = start_with_engine_config(|_| toml).await;
        Stack {
            control_plane,
            agent,
            _config: config,
            _vapid: vapid_dir,
        }
    }

    async fn register(&self, device: Value) -> Value {
        let (status, body) = self
            .control_plane
            .admin_send(
                Method::POST,
                &format!("/v1/admin/users/{USER}/devices"),
                Some(&device),
            )
            .await
            .unwrap();
        assert_eq!(status, 201, "{body}");
        body
    }

    async fn devices(&self) -> Vec<Value> {
        let (status, body) = self
            .control_plane
            .admin_send(
                Method::GET,
                &format!("/v1/admin/users/{USER}/devices"),
                None,
            )
            .await
            .unwrap();
        assert_eq!(status, 200, "{body}");
        body["devices"].as_array().unwrap().clone()
    }

    async fn device(&self, id: &str) -> Value {
        self.devices()
            .await
            .into_iter()
            .find(|device| device["id"] == id)
            .unwrap_or_else(|| panic!("no device {id}"))
    }

    async fn notify(&self, title: &str) {
        let body = json!({"userId": USER, "type": "reply", "title": title, "body": "Open the app"});
        let reply = self.agent.post("/v1/notify", &body).await.unwrap();
        assert!(reply.is_success(), "{reply:?}");
    }

    /// Waits until the user has `n` notifications whose deliveries all
    /// reached a final state (sent or failed).
    async fn settled(&self, n: usize) {
        wait_until(
            &format!("{n} notifications delivered or failed"),
            || async {
                let Ok(notifications) = self.control_plane.notifications(USER).await else {
                    return false;
                };
                if notifications.len() < n {
                    return false;
                }
                for notification in notifications {
                    let id = notification["id"].as_str().unwrap();
                    let Ok(deliveries) = self.control_plane.deliveries(id).await else {
                        return false;
                    };
                    if deliveries
                        .iter()
                        .any(|d| !matches!(d["status"].as_str(), Some("sent" | "failed")))
                    {
                        return false;
                    }
                }
                true
            },
        )
        .await;
    }
}

// ---------------------------------------------------------------------------
// The tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fcm_unregistered_token_is_deactivated_and_not_used_again() {
    let fcm = Fcm::start().await;
    let stack = Stack::start(&fcm).await;
    let dead = stack
        .register(json!({"platform": "fcm", "token": DEAD_TOKEN, "label": "old phone"}))
        .await;
    stack
        .register(json!({"platform": "fcm", "token": LIVE_TOKEN}))
        .await;

    stack.notify("First reply").await;
    let dead_id = dead["id"].as_str().unwrap();
    wait_until("FCM's UNREGISTERED deactivated the token", || async {
        stack.device(dead_id).await["active"] == false
    })
    .await;
    let device = stack.device(dead_id).await;
    assert!(
        device["deactivated_reason"]
            .as_str()
            .is_some_and(|reason| reason.contains("UNREGISTERED")),
        "{device}"
    );
    stack.settled(1).await;
    assert_eq!(fcm.sends_to(DEAD_TOKEN), 1, "one attempt: invalid is final");
    assert_eq!(fcm.sends_to(LIVE_TOKEN), 1);

    stack.notify("Second reply").await;
    stack.settled(2).await;
    tokio::time::sleep(CHANCE_TO_MISBEHAVE).await;
    assert_eq!(
        fcm.sends_to(LIVE_TOKEN),
        2,
        "the live phone still gets pushes"
    );
    assert_eq!(
        fcm.sends_to(DEAD_TOKEN),
        1,
        "the dead token is not used again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_push_gone_subscription_is_deactivated_and_not_used_again() {
    let fcm = Fcm::start().await;
    let receiver = WebPushReceiver::start();
    let stack = Stack::start(&fcm).await;
    let laptop = stack
        .register(json!({"platform": "web_push", "subscription": receiver.subscription("laptop")}))
        .await;

    // A working subscription: the browser decrypts what was pushed.
    stack.notify("Hello browser").await;
    wait_until("the push arrived and decrypted", || async {
        receiver.titles().await == ["Hello browser"]
    })
    .await;

    // The browser unsubscribed: the push service answers 410 Gone.
    receiver.set_mode("gone").await;
    stack.notify("Are you there?").await;
    let laptop_id = laptop["id"].as_str().unwrap();
    wait_until("410 Gone deactivated the subscription", || async {
        stack.device(laptop_id).await["active"] == false
    })
    .await;
    stack.settled(2).await;
    let attempts = receiver.attempts().await;
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert_eq!(attempts[1], ("/push/laptop".to_owned(), 410));

    // Even once the endpoint would accept again, nothing goes to it.
    receiver.set_mode("accept").await;
    stack.notify("Third").await;
    stack.settled(3).await;
    tokio::time::sleep(CHANCE_TO_MISBEHAVE).await;
    assert_eq!(
        receiver.attempts().await.len(),
        2,
        "a gone subscription is not used again"
    );
    assert_eq!(receiver.titles().await, ["Hello browser"]);
}
