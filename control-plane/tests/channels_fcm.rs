//! The FCM channel against a local axum server that implements both of
//! Google's endpoints the channel uses:
//! * the OAuth2 token endpoint, which verifies the JWT assertion's RS256
//!   signature with the service account's public key and checks its
//!   claims (`iss`, `scope`, `aud`, `iat`/`exp`) before it grants a token;
//! * FCM's `messages:send`, which checks the bearer token, records the
//!   message and answers what the test sets.
//!
//! The service account in `tests/fixtures/fcm-test-service-account.json`
//! and its public key `fcm-test-public-key.der` (PKCS#1 `RSAPublicKey`)
//! are a key pair generated for these tests only: no Google project knows
//! them and they authorise nothing.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as BASE64URL;
use nudge_control_plane::channels::compliance::{self, Peer, sample_message};
use nudge_control_plane::channels::fcm::{
    DELIVERY_ID_KEY, FcmChannel, FcmConfig, JWT_BEARER_GRANT, SCOPE,
};
use nudge_control_plane::channels::{Channel, Recipient, SendError};
use ring::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};
use serde_json::{Value, json};

const PUBLIC_KEY: &[u8] = include_bytes!("fixtures/fcm-test-public-key.der");
const PROJECT: &str = "nudge-test";
const CLIENT_EMAIL: &str = "nudge-test@nudge-test.iam.gserviceaccount.com";
const KEY_ID: &str = "0123456789abcdef0123456789abcdef01234567";
const DEVICE: &str = "fcm-device-token-1";

fn service_account_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fcm-test-service-account.json")
}

/// How the token endpoint answers an assertion that verifies.
#[derive(Debug, Clone)]
enum TokenMode {
    Grant { expires_in: u64 },
    Unavailable,
}

impl Default for TokenMode {
    fn default() -> Self {
        TokenMode::Grant { expires_in: 3599 }
    }
}

/// What `messages:send` answers to a request with a valid token.
#[derive(Debug, Clone, Default)]
enum Mode {
    #[default]
    Accept,
    Unregistered,
    QuotaExceeded(&'static str),
    Unavailable,
    InvalidToken,
    TooBig,
    ThirdPartyAuth,
    Slow(Duration),
}

/// One `messages:send` request as the server saw it.
#[derive(Debug, Clone)]
struct Received {
    project: String,
    authorized: bool,
    body: Value,
}

impl Received {
    fn message(&self) -> &Value {
        &self.body["message"]
    }
}

#[derive(Debug, Default)]
struct ServerState {
    /// The server's own token URL: the `aud` it expects.
    token_url: String,
    token_mode: TokenMode,
    /// Makes the token endpoint slow, so concurrent sends overlap.
    token_delay: Duration,
    token_requests: usize,
    /// Why assertions were refused.
    token_problems: Vec<String>,
    last_assertion: Option<String>,
    issued: Vec<String>,
    /// Tokens issued before this index are no longer accepted.
    revoked_before: usize,
    mode: Mode,
    sends: Vec<Received>,
}

#[derive(Clone, Default)]
struct Google(Arc<Mutex<ServerState>>);

impl Google {
    fn state(&self) -> std::sync::MutexGuard<'_, ServerState> {
        self.0.lock().unwrap()
    }

    fn answer_with(&self, mode: Mode) {
        self.state().mode = mode;
    }

    fn sends(&self) -> Vec<Received> {
        self.state().sends.clone()
    }

    fn token_requests(&self) -> usize {
        self.state().token_requests
    }

    /// Makes FCM refuse every token issued so far, as after a revocation.
    fn revoke_tokens(&self) {
        let mut state = self.state();
        state.revoked_before = state.issued.len();
    }
}

fn form_pairs(body: &[u8]) -> Vec<(String, String)> {
    let query = String::from_utf8_lossy(body);
    reqwest::Url::parse(&format!("http://form/?{query}"))
        .unwrap()
        .query_pairs()
        .map(|(key, value)| (key.into_owned(), value.into_owned()))
        .collect()
}

fn decode_json(part: &str) -> Result<Value, String> {
    let bytes = BASE64URL
        .decode(part)
        .map_err(|err| format!("not base64url: {err}"))?;
    serde_json::from_slice(&bytes).map_err(|err| format!("not JSON: {err}"))
}

/// Checks a JWT bearer assertion as Google does: the RS256 signature under
/// the service account's public key, then the header and the claims.
fn verify_assertion(assertion: &str, audience: &str) -> Result<(), String> {
    let parts: Vec<&str> = assertion.split('.').collect();
    let [header, claims, signature] = parts[..] else {
        return Err(format!("not a JWT: {} parts", parts.len()));
    };
    let signature = BASE64URL
        .decode(signature)
        .map_err(|err| format!("signature not base64url: {err}"))?;
    UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, PUBLIC_KEY)
        .verify(format!("{header}.{claims}").as_bytes(), &signature)
        .map_err(|_| "Invalid JWT Signature.".to_owned())?;
    let header = decode_json(header)?;
    if header != json!({"alg": "RS256", "typ": "JWT", "kid": KEY_ID}) {
        return Err(format!("unexpected header {header}"));
    }
    let claims = decode_json(claims)?;
    let expect = |name: &str, value: &str| {
        if claims[name] == value {
            Ok(())
        } else {
            Err(format!("{name} is {}, expected {value}", claims[name]))
        }
    };
    expect("iss", CLIENT_EMAIL)?;
    expect("scope", SCOPE)?;
    expect("aud", audience)?;
    let now = jiff::Timestamp::now().as_second();
    let (Some(iat), Some(exp)) = (claims["iat"].as_i64(), claims["exp"].as_i64()) else {
        return Err(format!("iat or exp missing: {claims}"));
    };
    if (iat - now).abs() > 60 || exp != iat + 3600 {
        return Err(format!(
            "iat {iat} / exp {exp} not an hour from now ({now})"
        ));
    }
    Ok(())
}

async fn token(State(google): State<Google>, body: Bytes) -> Response {
    let form = form_pairs(&body);
    let field = |name: &str| {
        form.iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
            .unwrap_or_default()
    };
    let (audience, mode, delay) = {
        let mut state = google.state();
        state.token_requests += 1;
        state.last_assertion = Some(field("assertion"));
        (
            state.token_url.clone(),
            state.token_mode.clone(),
            state.token_delay,
        )
    };
    tokio::time::sleep(delay).await;
    let checked = if field("grant_type") == JWT_BEARER_GRANT {
        verify_assertion(&field("assertion"), &audience)
    } else {
        Err(format!("grant_type {:?}", field("grant_type")))
    };
    if let Err(problem) = checked {
        google.state().token_problems.push(problem.clone());
        let body = json!({"error": "invalid_grant", "error_description": problem});
        return (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
    }
    match mode {
        TokenMode::Grant { expires_in } => {
            let mut state = google.state();
            let access_token = format!("ya29.test-{}", state.issued.len() + 1);
            state.issued.push(access_token.clone());
            let body = json!({
                "access_token": access_token,
                "expires_in": expires_in,
                "token_type": "Bearer",
            });
            axum::Json(body).into_response()
        }
        TokenMode::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "try later").into_response(),
    }
}

fn fcm_error(status: StatusCode, google_status: &str, code: Option<&str>, text: &str) -> Response {
    let details: Vec<Value> = code
        .map(|code| {
            json!({
                "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                "errorCode": code,
            })
        })
        .into_iter()
        .collect();
    let body = json!({"error": {
        "code": status.as_u16(),
        "message": text,
        "status": google_status,
        "details": details,
    }});
    (status, axum::Json(body)).into_response()
}

async fn send(
    State(google): State<Google>,
    Path(project): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let bearer = headers
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::to_owned);
    let json_body = headers
        .get("content-type")
        .is_some_and(|value| value.as_bytes() == b"application/json");
    let (authorized, mode, name) = {
        let mut state = google.state();
        let authorized = bearer
            .as_ref()
            .is_some_and(|token| state.issued[state.revoked_before..].contains(token));
        state.sends.push(Received {
            project,
            authorized,
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        });
        let name = format!("projects/{PROJECT}/messages/0:{}", state.sends.len());
        (authorized, state.mode.clone(), name)
    };
    if !authorized {
        return fcm_error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            None,
            "Request had invalid authentication credentials. Expected OAuth 2 access token.",
        );
    }
    if !json_body {
        return fcm_error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            None,
            "not JSON",
        );
    }
    match mode {
        Mode::Accept => axum::Json(json!({"name": name})).into_response(),
        Mode::Unregistered => fcm_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            Some("UNREGISTERED"),
            "Requested entity was not found.",
        ),
        Mode::QuotaExceeded(retry_after) => {
            let mut response = fcm_error(
                StatusCode::TOO_MANY_REQUESTS,
                "RESOURCE_EXHAUSTED",
                Some("QUOTA_EXCEEDED"),
                "Quota exceeded for quota metric 'Send messages'.",
            );
            response
                .headers_mut()
                .insert("retry-after", retry_after.parse().unwrap());
            response
        }
        Mode::Unavailable => fcm_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            Some("UNAVAILABLE"),
            "The service is currently unavailable.",
        ),
        Mode::InvalidToken => fcm_error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            Some("INVALID_ARGUMENT"),
            "The registration token is not a valid FCM registration token",
        ),
        Mode::TooBig => fcm_error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            Some("INVALID_ARGUMENT"),
            "Message is too big",
        ),
        Mode::ThirdPartyAuth => fcm_error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            Some("THIRD_PARTY_AUTH_ERROR"),
            "Auth error from APNS or Web Push Service",
        ),
        Mode::Slow(wait) => {
            tokio::time::sleep(wait).await;
            axum::Json(json!({"name": name})).into_response()
        }
    }
}

/// A running fake Google; `shut_down` stops it.
struct Server {
    google: Google,
    base_url: String,
    token_url: String,
    stop: Option<(
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    )>,
}

impl Server {
    async fn start() -> Server {
        let google = Google::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let base_url = format!("http://{addr}");
        let token_url = format!("{base_url}/token");
        google.state().token_url = token_url.clone();
        let app = axum::Router::new()
            .route("/token", axum::routing::post(token))
            .route(
                "/v1/projects/{project}/messages:send",
                axum::routing::post(send),
            )
            .with_state(google.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Server {
            google,
            base_url,
            token_url,
            stop: Some((stop, task)),
        }
    }

    /// Stops accepting and closes every connection.
    async fn shut_down(&mut self) {
        if let Some((stop, task)) = self.stop.take() {
            let _ = stop.send(());
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("the server shuts down")
                .unwrap();
        }
    }
}

fn config(server: &Server) -> FcmConfig {
    FcmConfig {
        service_account_file: Some(service_account_file()),
        service_account_json: None,
        project_id: None,
        base_url: server.base_url.clone(),
        token_url: Some(server.token_url.clone()),
        timeout: Duration::from_secs(5),
    }
}

fn channel(server: &Server) -> FcmChannel {
    FcmChannel::new(config(server)).unwrap()
}

fn device(token: &str) -> Recipient {
    Recipient::DeviceToken {
        token: token.to_owned(),
    }
}

/// A port nothing listens on.
fn closed_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

fn assert_no_token_problems(server: &Server) {
    let problems = server.google.state().token_problems.clone();
    assert!(problems.is_empty(), "refused assertions: {problems:?}");
}

struct FcmPeer {
    server: Server,
}

#[async_trait]
impl Peer for FcmPeer {
    fn recipient(&self) -> Recipient {
        device(DEVICE)
    }

    async fn attempts(&self) -> usize {
        self.server.google.sends().len()
    }

    async fn fail_temporarily(&mut self) -> bool {
        self.server.google.answer_with(Mode::Unavailable);
        true
    }

    async fn take_down(&mut self) -> bool {
        self.server.shut_down().await;
        true
    }
}

#[tokio::test]
async fn passes_the_compliance_test() {
    let server = Server::start().await;
    let channel = channel(&server);
    let mut peer = FcmPeer { server };
    compliance::check(&channel, &mut peer).await;
    assert_no_token_problems(&peer.server);
}

#[tokio::test]
async fn sends_a_v1_message_with_a_verified_access_token() {
    let server = Server::start().await;
    let message = sample_message("d-1");
    let receipt = channel(&server)
        .send(&message, &device(DEVICE))
        .await
        .unwrap();
    let name = format!("projects/{PROJECT}/messages/0:1");
    assert_eq!(receipt.provider_message_id.as_deref(), Some(name.as_str()));
    assert_eq!(receipt.answer, name);

    assert_no_token_problems(&server);
    assert_eq!(server.google.token_requests(), 1);
    let sends = server.google.sends();
    assert_eq!(sends.len(), 1);
    let request = &sends[0];
    assert!(request.authorized, "{request:?}");
    // The project comes from the service account.
    assert_eq!(request.project, PROJECT);
    let sent = request.message();
    assert_eq!(sent["token"], DEVICE);
    assert_eq!(
        sent["notification"],
        json!({"title": message.subject, "body": message.text_body})
    );
    assert_eq!(sent["android"], json!({"priority": "high"}));
    assert_eq!(sent["data"][DELIVERY_ID_KEY], "d-1");
    assert_eq!(sent["data"]["nudge_type"], "payment_failed");
}

#[tokio::test]
async fn data_values_are_strings() {
    let server = Server::start().await;
    let mut message = sample_message("d-2");
    message.data = json!({
        "amount": 42,
        "currency": "EUR",
        "paid": false,
        "card": {"last4": "4242", "exp": [12, 2030]},
        "note": null,
        "from": "reserved by FCM",
    });
    channel(&server)
        .send(&message, &device(DEVICE))
        .await
        .unwrap();
    let data = server.google.sends()[0].message()["data"].clone();
    let data = data.as_object().unwrap();
    for (key, value) in data {
        assert!(value.is_string(), "{key}: {value} is not a string");
    }
    assert_eq!(data["amount"], "42");
    assert_eq!(data["currency"], "EUR");
    assert_eq!(data["paid"], "false");
    assert_eq!(data["note"], "null");
    let card: Value = serde_json::from_str(data["card"].as_str().unwrap()).unwrap();
    assert_eq!(card, json!({"last4": "4242", "exp": [12, 2030]}));
    assert!(!data.contains_key("from"), "{data:?}");
    assert_eq!(data[DELIVERY_ID_KEY], "d-2");
}

#[tokio::test]
async fn unregistered_token_is_an_invalid_recipient() {
    let server = Server::start().await;
    server.google.answer_with(Mode::Unregistered);
    let err = channel(&server)
        .send(&sample_message("d-3"), &device(DEVICE))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        SendError::InvalidRecipient {
            answer: "404 Not Found UNREGISTERED: Requested entity was not found.".to_owned()
        }
    );
    assert_eq!(server.google.sends().len(), 1);
}

#[tokio::test]
async fn quota_exceeded_is_retriable_with_the_retry_after_hint() {
    let server = Server::start().await;
    server.google.answer_with(Mode::QuotaExceeded("7"));
    let err = channel(&server)
        .send(&sample_message("d-4"), &device(DEVICE))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        SendError::Retriable {
            answer: "429 Too Many Requests QUOTA_EXCEEDED: \
                     Quota exceeded for quota metric 'Send messages'."
                .to_owned(),
            retry_after: Some(Duration::from_secs(7)),
        }
    );
}

#[tokio::test]
async fn classifies_other_fcm_errors() {
    let server = Server::start().await;
    let channel = channel(&server);
    let message = sample_message("d-5");
    let recipient = device(DEVICE);
    let send = || channel.send(&message, &recipient);

    server.google.answer_with(Mode::InvalidToken);
    let err = send().await.unwrap_err();
    assert!(matches!(err, SendError::InvalidRecipient { .. }), "{err:?}");

    server.google.answer_with(Mode::TooBig);
    let err = send().await.unwrap_err();
    assert!(matches!(err, SendError::Permanent { .. }), "{err:?}");
    assert!(err.answer().contains("too big"), "{err:?}");

    server.google.answer_with(Mode::ThirdPartyAuth);
    let err = send().await.unwrap_err();
    assert!(matches!(err, SendError::Permanent { .. }), "{err:?}");
    assert!(err.answer().contains("THIRD_PARTY_AUTH_ERROR"), "{err:?}");

    server.google.answer_with(Mode::Unavailable);
    let err = send().await.unwrap_err();
    assert!(matches!(err, SendError::Retriable { .. }), "{err:?}");

    // A third-party auth error is not the access token's fault: kept.
    assert_eq!(server.google.token_requests(), 1);
    assert_eq!(server.google.sends().len(), 4);

    let mut empty = sample_message("d-6");
    empty.subject.clear();
    empty.text_body.clear();
    let err = channel.send(&empty, &device(DEVICE)).await.unwrap_err();
    assert!(matches!(err, SendError::Permanent { .. }), "{err:?}");
    let err = channel
        .send(&sample_message("d-7"), &device(" "))
        .await
        .unwrap_err();
    assert!(matches!(err, SendError::InvalidRecipient { .. }), "{err:?}");
    assert_eq!(server.google.sends().len(), 4, "neither reaches FCM");
}

#[tokio::test]
async fn access_token_is_fetched_once_and_shared() {
    let server = Server::start().await;
    server.google.state().token_delay = Duration::from_millis(200);
    let channel = channel(&server);

    // Concurrent first sends wait for one token instead of each fetching.
    let messages: Vec<_> = (0..8).map(|i| sample_message(&format!("c-{i}"))).collect();
    let recipient = device(DEVICE);
    let results = futures::future::join_all(
        messages
            .iter()
            .map(|message| channel.send(message, &recipient)),
    )
    .await;
    for result in results {
        result.unwrap();
    }
    for i in 0..3 {
        channel
            .send(&sample_message(&format!("s-{i}")), &device(DEVICE))
            .await
            .unwrap();
    }
    assert_eq!(server.google.token_requests(), 1);
    assert_eq!(server.google.sends().len(), 11);
    assert!(server.google.sends().iter().all(|send| send.authorized));
    assert_no_token_problems(&server);
}

#[tokio::test]
async fn a_rejected_access_token_is_dropped_and_refetched() {
    let server = Server::start().await;
    let channel = channel(&server);
    channel
        .send(&sample_message("r-1"), &device(DEVICE))
        .await
        .unwrap();
    server.google.revoke_tokens();

    let err = channel
        .send(&sample_message("r-2"), &device(DEVICE))
        .await
        .unwrap_err();
    assert!(matches!(err, SendError::Retriable { .. }), "{err:?}");
    assert!(err.answer().starts_with("401"), "{err:?}");
    assert_eq!(server.google.token_requests(), 1, "no retry by itself");

    channel
        .send(&sample_message("r-2"), &device(DEVICE))
        .await
        .unwrap();
    assert_eq!(server.google.token_requests(), 2);
    assert_eq!(server.google.sends().len(), 3);
}

#[tokio::test]
async fn access_token_is_refetched_shortly_before_it_expires() {
    let server = Server::start().await;
    // With the 60 s margin, usable for two seconds: room for two sends
    // on a busy machine.
    server.google.state().token_mode = TokenMode::Grant { expires_in: 62 };
    let channel = channel(&server);
    for id in ["e-1", "e-2"] {
        channel
            .send(&sample_message(id), &device(DEVICE))
            .await
            .unwrap();
    }
    assert_eq!(server.google.token_requests(), 1);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    channel
        .send(&sample_message("e-3"), &device(DEVICE))
        .await
        .unwrap();
    assert_eq!(server.google.token_requests(), 2);

    // A token that lives no longer than the margin serves one send.
    server.google.state().token_mode = TokenMode::Grant { expires_in: 30 };
    tokio::time::sleep(Duration::from_millis(2100)).await;
    for id in ["e-4", "e-5"] {
        channel
            .send(&sample_message(id), &device(DEVICE))
            .await
            .unwrap();
    }
    assert_eq!(server.google.token_requests(), 4);
    assert_no_token_problems(&server);
}

#[tokio::test]
async fn token_endpoint_failures_are_classified() {
    let server = Server::start().await;

    server.google.state().token_mode = TokenMode::Unavailable;
    let err = channel(&server)
        .send(&sample_message("t-1"), &device(DEVICE))
        .await
        .unwrap_err();
    assert!(matches!(err, SendError::Retriable { .. }), "{err:?}");
    assert!(
        err.answer().starts_with("access token request: 503"),
        "{err:?}"
    );
    assert!(server.google.sends().is_empty(), "no send without a token");

    // The token endpoint refuses an assertion for another account: a
    // configuration problem, permanent.
    server.google.state().token_mode = TokenMode::default();
    let text = std::fs::read_to_string(service_account_file()).unwrap();
    let mut account: Value = serde_json::from_str(&text).unwrap();
    account["client_email"] = json!("someone-else@nudge-test.iam.gserviceaccount.com");
    let impostor = FcmChannel::new(FcmConfig {
        service_account_file: None,
        service_account_json: Some(account.to_string()),
        ..config(&server)
    })
    .unwrap();
    let err = impostor
        .send(&sample_message("t-2"), &device(DEVICE))
        .await
        .unwrap_err();
    assert!(matches!(err, SendError::Permanent { .. }), "{err:?}");
    assert!(err.answer().contains("invalid_grant"), "{err:?}");
    assert!(server.google.sends().is_empty());

    let unreachable = FcmChannel::new(FcmConfig {
        token_url: Some(format!("http://{}/token", closed_port())),
        ..config(&server)
    })
    .unwrap();
    let err = unreachable
        .send(&sample_message("t-3"), &device(DEVICE))
        .await
        .unwrap_err();
    assert!(matches!(err, SendError::Retriable { .. }), "{err:?}");
}

#[tokio::test]
async fn the_fake_token_endpoint_really_verifies_signatures() {
    let server = Server::start().await;
    channel(&server)
        .send(&sample_message("v-1"), &device(DEVICE))
        .await
        .unwrap();
    let assertion = server.google.state().last_assertion.clone().unwrap();
    verify_assertion(&assertion, &server.token_url).unwrap();

    // Same signature, other claims: refused.
    let parts: Vec<&str> = assertion.split('.').collect();
    let mut claims = decode_json(parts[1]).unwrap();
    claims["scope"] = json!("https://www.googleapis.com/auth/cloud-platform");
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        BASE64URL.encode(claims.to_string()),
        parts[2]
    );
    assert_eq!(
        verify_assertion(&forged, &server.token_url),
        Err("Invalid JWT Signature.".to_owned())
    );
    assert!(verify_assertion(&assertion, "https://other.example/token").is_err());
}

#[tokio::test]
async fn unreachable_and_slow_apis_are_retriable() {
    let server = Server::start().await;
    let down = FcmChannel::new(FcmConfig {
        base_url: format!("http://{}", closed_port()),
        ..config(&server)
    })
    .unwrap();
    let err = down
        .send(&sample_message("u-1"), &device(DEVICE))
        .await
        .unwrap_err();
    assert!(matches!(err, SendError::Retriable { .. }), "{err:?}");

    server
        .google
        .answer_with(Mode::Slow(Duration::from_secs(5)));
    let impatient = FcmChannel::new(FcmConfig {
        timeout: Duration::from_millis(300),
        ..config(&server)
    })
    .unwrap();
    let err = impatient
        .send(&sample_message("u-2"), &device(DEVICE))
        .await
        .unwrap_err();
    assert!(matches!(err, SendError::Retriable { .. }), "{err:?}");
}

#[test]
fn a_bad_service_account_file_fails_new() {
    let new = |path: PathBuf| {
        FcmChannel::new(FcmConfig {
            service_account_file: Some(path),
            service_account_json: None,
            project_id: None,
            base_url: "https://fcm.googleapis.com".to_owned(),
            token_url: None,
            timeout: Duration::from_secs(5),
        })
    };
    assert!(new(service_account_file()).is_ok());

    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.json");
    let err = new(missing.clone()).unwrap_err();
    assert_eq!(err.setting, "fcm.service_account_file");
    assert!(
        err.message.contains(&missing.display().to_string()),
        "{err}"
    );

    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let err = new(write("garbage.json", "not json")).unwrap_err();
    assert_eq!(err.setting, "fcm.service_account_file");
    assert!(err.message.contains("not a service account"), "{err}");

    let err = new(write(
        "no-key.json",
        r#"{"type": "service_account", "client_email": "a@b"}"#,
    ))
    .unwrap_err();
    assert!(err.message.contains("private_key"), "{err}");

    // A damaged key: one base64 character of the PEM changed.
    let text = std::fs::read_to_string(service_account_file()).unwrap();
    let mut account: Value = serde_json::from_str(&text).unwrap();
    let key = account["private_key"].as_str().unwrap().to_owned();
    let damaged = key.replacen("MII", "MIJ", 1);
    assert_ne!(damaged, key);
    account["private_key"] = json!(damaged);
    let err = new(write("damaged.json", &account.to_string())).unwrap_err();
    assert_eq!(err.setting, "fcm.service_account_file");
    assert!(err.message.contains("private_key"), "{err}");
    assert!(!err.to_string().contains("PRIVATE KEY-----"), "{err}");
}

/// Neither FCM's send answer nor the token endpoint's is read beyond the
/// cap when it never ends.
#[tokio::test]
async fn endless_answers_are_read_bounded() {
    let server = Server::start().await;
    let peer = compliance::EndlessAnswer::start(500).await;
    let channel = FcmChannel::new(FcmConfig {
        base_url: peer.url(""),
        timeout: Duration::from_secs(30),
        ..config(&server)
    })
    .unwrap();
    compliance::check_bounded_answer(&channel, &device("token-endless"), &peer).await;

    let endless_token = compliance::EndlessAnswer::start(200).await;
    let channel = FcmChannel::new(FcmConfig {
        token_url: Some(endless_token.url("/token")),
        timeout: Duration::from_secs(30),
        ..config(&server)
    })
    .unwrap();
    compliance::check_bounded_answer(&channel, &device("token-endless"), &endless_token).await;
}
