//! The SMS channel against a local axum server that implements Twilio's
//! Messages endpoint: it checks the Basic auth and the form, and answers
//! what the test sets.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use nudge_control_plane::channels::compliance::{self, Peer, sample_message};
use nudge_control_plane::channels::sms::{MAX_BODY_CHARS, SmsChannel, SmsConfig};
use nudge_control_plane::channels::{Channel, Recipient, SendError};

const SID: &str = "AC0123456789abcdef0123456789abcdef";
const TOKEN: &str = "test-auth-token";
const FROM: &str = "+15005550006";
const TO: &str = "+15005550010";
const CALLBACK: &str = "https://nudge.example/sms/status?x=1&y=2";

/// What the server answers to a correctly authenticated request.
#[derive(Debug, Clone, Default)]
enum Mode {
    #[default]
    Accept,
    TooMany(&'static str),
    ServerError,
    InvalidTo,
    Unauthorized,
    Slow(Duration),
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Received {
    account: String,
    authorized: bool,
    form: Vec<(String, String)>,
}

impl Received {
    fn field(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

#[derive(Debug, Default)]
struct ServerState {
    mode: Mode,
    received: Vec<Received>,
}

#[derive(Clone, Default)]
struct Twilio(Arc<Mutex<ServerState>>);

impl Twilio {
    fn answer_with(&self, mode: Mode) {
        self.0.lock().unwrap().mode = mode;
    }

    fn received(&self) -> Vec<Received> {
        self.0.lock().unwrap().received.clone()
    }
}

fn twilio_error(status: StatusCode, code: u32, message: &str) -> Response {
    let body = serde_json::json!({
        "code": code,
        "message": message,
        "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
        "status": status.as_u16(),
    });
    (status, axum::Json(body)).into_response()
}

async fn create_message(
    State(twilio): State<Twilio>,
    Path(account): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let expected = format!("Basic {}", BASE64.encode(format!("{SID}:{TOKEN}")));
    let authorized = headers
        .get("authorization")
        .is_some_and(|value| value.as_bytes() == expected.as_bytes())
        && account == SID;
    let form_encoded = headers
        .get("content-type")
        .is_some_and(|value| value.as_bytes() == b"application/x-www-form-urlencoded");
    let query = String::from_utf8_lossy(&body);
    let form = reqwest::Url::parse(&format!("http://form/?{query}"))
        .unwrap()
        .query_pairs()
        .map(|(key, value)| (key.into_owned(), value.into_owned()))
        .collect();
    let mode = {
        let mut state = twilio.0.lock().unwrap();
        state.received.push(Received {
            account,
            authorized,
            form,
        });
        state.mode.clone()
    };
    if !authorized {
        return twilio_error(StatusCode::UNAUTHORIZED, 20003, "Authenticate");
    }
    if !form_encoded {
        return twilio_error(StatusCode::BAD_REQUEST, 20001, "not a form");
    }
    match mode {
        Mode::Accept => (
            StatusCode::CREATED,
            axum::Json(serde_json::json!({
                "sid": "SM0123456789abcdef0123456789abcdef",
                "status": "queued",
                "account_sid": SID,
            })),
        )
            .into_response(),
        Mode::TooMany(retry_after) => {
            let mut response =
                twilio_error(StatusCode::TOO_MANY_REQUESTS, 20429, "Too Many Requests");
            response
                .headers_mut()
                .insert("retry-after", retry_after.parse().unwrap());
            response
        }
        Mode::ServerError => (StatusCode::INTERNAL_SERVER_ERROR, "oops").into_response(),
        Mode::InvalidTo => twilio_error(
            StatusCode::BAD_REQUEST,
            21211,
            "The 'To' number is not a valid phone number.",
        ),
        Mode::Unauthorized => twilio_error(StatusCode::UNAUTHORIZED, 20003, "Authenticate"),
        Mode::Slow(wait) => {
            tokio::time::sleep(wait).await;
            (StatusCode::CREATED, "{}").into_response()
        }
    }
}

/// A running fake Twilio; dropping the stop sender shuts it down.
struct Server {
    twilio: Twilio,
    base_url: String,
    stop: Option<(
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    )>,
}

impl Server {
    async fn start() -> Server {
        let twilio = Twilio::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .route(
                "/2010-04-01/Accounts/{account}/Messages.json",
                axum::routing::post(create_message),
            )
            .with_state(twilio.clone());
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
            twilio,
            base_url: format!("http://{addr}"),
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

fn config(base_url: &str) -> SmsConfig {
    SmsConfig {
        account_sid: SID.to_owned(),
        auth_token: TOKEN.to_owned(),
        from: FROM.to_owned(),
        base_url: base_url.to_owned(),
        timeout: Duration::from_secs(5),
        status_callback_url: Some(CALLBACK.to_owned()),
    }
}

fn channel(base_url: &str) -> SmsChannel {
    SmsChannel::new(config(base_url)).unwrap()
}

fn phone(number: &str) -> Recipient {
    Recipient::Phone {
        number: number.to_owned(),
    }
}

/// A port nothing listens on.
fn closed_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

struct SmsPeer {
    server: Server,
}

#[async_trait]
impl Peer for SmsPeer {
    fn recipient(&self) -> Recipient {
        phone(TO)
    }

    async fn attempts(&self) -> usize {
        self.server.twilio.received().len()
    }

    async fn fail_temporarily(&mut self) -> bool {
        self.server.twilio.answer_with(Mode::ServerError);
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
    let channel = channel(&server.base_url);
    compliance::check(&channel, &mut SmsPeer { server }).await;
}

#[tokio::test]
async fn sends_twilios_form_with_basic_auth() {
    let server = Server::start().await;
    let message = sample_message("d-1");
    let receipt = channel(&server.base_url)
        .send(&message, &phone(TO))
        .await
        .unwrap();
    assert_eq!(
        receipt.provider_message_id.as_deref(),
        Some("SM0123456789abcdef0123456789abcdef")
    );
    assert_eq!(receipt.answer, "queued");

    let received = server.twilio.received();
    assert_eq!(received.len(), 1);
    let request = &received[0];
    assert!(request.authorized, "{request:?}");
    assert_eq!(request.account, SID);
    assert_eq!(request.field("To"), Some(TO));
    assert_eq!(request.field("From"), Some(FROM));
    assert_eq!(request.field("Body"), Some(message.text_body.as_str()));
    assert_eq!(request.field("StatusCallback"), Some(CALLBACK));
    assert_eq!(request.form.len(), 4, "{request:?}");
}

#[tokio::test]
async fn messaging_service_sid_subject_fallback_and_long_bodies() {
    let server = Server::start().await;
    let service = format!("MG{}", "0123456789abcdef".repeat(2));
    let channel = SmsChannel::new(SmsConfig {
        from: service.clone(),
        status_callback_url: None,
        ..config(&server.base_url)
    })
    .unwrap();

    let mut message = sample_message("d-2");
    message.text_body.clear();
    channel.send(&message, &phone(TO)).await.unwrap();

    message.text_body = "é ".repeat(1000); // 2000 characters
    channel.send(&message, &phone(TO)).await.unwrap();

    let received = server.twilio.received();
    assert_eq!(
        received[0].field("MessagingServiceSid"),
        Some(service.as_str())
    );
    assert_eq!(received[0].field("From"), None);
    assert_eq!(received[0].field("StatusCallback"), None);
    assert_eq!(received[0].field("Body"), Some(message.subject.as_str()));
    let long = received[1].field("Body").unwrap();
    assert!(
        long.encode_utf16().count() <= MAX_BODY_CHARS,
        "{}",
        long.len()
    );
    assert!(long.ends_with('…'));
    assert!(long.starts_with("é é"));
}

#[tokio::test]
async fn classifies_twilios_answers() {
    let server = Server::start().await;
    let channel = channel(&server.base_url);
    let message = sample_message("d-3");
    let twilio = &server.twilio;

    twilio.answer_with(Mode::TooMany("7"));
    let err = channel.send(&message, &phone(TO)).await.unwrap_err();
    assert_eq!(
        err,
        SendError::Retriable {
            answer: "429 Too Many Requests (Twilio error 20429) Too Many Requests".to_owned(),
            retry_after: Some(Duration::from_secs(7)),
        }
    );

    twilio.answer_with(Mode::ServerError);
    let err = channel.send(&message, &phone(TO)).await.unwrap_err();
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

    twilio.answer_with(Mode::InvalidTo);
    let err = channel.send(&message, &phone(TO)).await.unwrap_err();
    assert!(matches!(err, SendError::InvalidRecipient { .. }), "{err:?}");
    assert!(err.answer().contains("21211"), "{err:?}");

    twilio.answer_with(Mode::Unauthorized);
    let err = channel.send(&message, &phone(TO)).await.unwrap_err();
    assert!(matches!(err, SendError::Permanent { .. }), "{err:?}");
    assert!(err.answer().starts_with("401"), "{err:?}");

    // One request per send, none repeated.
    assert_eq!(twilio.received().len(), 4);
}

#[tokio::test]
async fn bad_credentials_are_permanent() {
    let server = Server::start().await;
    let channel = SmsChannel::new(SmsConfig {
        auth_token: "wrong".to_owned(),
        ..config(&server.base_url)
    })
    .unwrap();
    let err = channel
        .send(&sample_message("d-4"), &phone(TO))
        .await
        .unwrap_err();
    assert!(matches!(err, SendError::Permanent { .. }), "{err:?}");
    assert!(err.answer().contains("20003"), "{err:?}");
    assert!(!server.twilio.received()[0].authorized);
}

#[tokio::test]
async fn invalid_numbers_never_reach_the_api() {
    let server = Server::start().await;
    let channel = channel(&server.base_url);
    for number in ["15005550010", "+1 500 555 0010", "+123", "tel:+15005550010"] {
        let err = channel
            .send(&sample_message("d-5"), &phone(number))
            .await
            .unwrap_err();
        assert!(
            matches!(err, SendError::InvalidRecipient { .. }),
            "{number}: {err:?}"
        );
    }
    let mut empty = sample_message("d-6");
    empty.text_body.clear();
    empty.subject.clear();
    let err = channel.send(&empty, &phone(TO)).await.unwrap_err();
    assert!(matches!(err, SendError::Permanent { .. }), "{err:?}");
    assert!(server.twilio.received().is_empty());
}

#[tokio::test]
async fn unreachable_and_slow_apis_are_retriable() {
    let down = channel(&format!("http://{}", closed_port()));
    let err = down
        .send(&sample_message("d-7"), &phone(TO))
        .await
        .unwrap_err();
    assert!(matches!(err, SendError::Retriable { .. }), "{err:?}");

    let server = Server::start().await;
    server
        .twilio
        .answer_with(Mode::Slow(Duration::from_secs(5)));
    let impatient = SmsChannel::new(SmsConfig {
        timeout: Duration::from_millis(300),
        ..config(&server.base_url)
    })
    .unwrap();
    let err = impatient
        .send(&sample_message("d-8"), &phone(TO))
        .await
        .unwrap_err();
    assert!(matches!(err, SendError::Retriable { .. }), "{err:?}");
}

/// A provider that answers an endless body costs a bounded read, not
/// memory and a worker until the timeout.
#[tokio::test]
async fn an_endless_answer_is_read_bounded() {
    let peer = compliance::EndlessAnswer::start(201).await;
    let channel = SmsChannel::new(SmsConfig {
        timeout: Duration::from_secs(30),
        ..config(&peer.url(""))
    })
    .unwrap();
    compliance::check_bounded_answer(&channel, &phone("+15555550123"), &peer).await;
}
