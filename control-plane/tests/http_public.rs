//! The public HTTP routes over real HTTP, against the control plane's own
//! router on a loopback port with real stores in a tempdir: one-click
//! unsubscribe links (`/v1/unsubscribe/{token}`) and Twilio's status
//! callbacks (`/v1/callbacks/twilio/status`). What is observed: the answers,
//! and the preferences and deliveries in the stores behind them — which a
//! refused request must leave as they were.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde_json::Value;

use nudge_control_plane::channels::sms::{StatusCallbackAuth, twilio_signature};
use nudge_control_plane::channels::{ChannelKind, OutboundMessage, Recipient, SendReceipt};
use nudge_control_plane::delivery::{
    Completion, Delivery, DeliveryQueue, NewDelivery, Priority, Status,
};
use nudge_control_plane::engine::{EngineSettings, SettingsHandle};
use nudge_control_plane::http::HttpState;
use nudge_control_plane::links::{UnsubscribeClaims, UnsubscribeLinks};
use nudge_control_plane::preferences::{
    Frequency, OperatorDefaults, PreferenceStore, TypeDefaults, UserPreferences,
};
use nudge_control_plane::storage::Stores;

mod support;

const SECRET: &str = "0123456789abcdef0123456789abcdef-test";
const AUTH_TOKEN: &str = "twilio-auth-token";
/// What Twilio was told and signs: deliberately not the loopback address
/// the test posts to, as behind a proxy.
const CALLBACK_URL: &str = "https://nudge.example.com/v1/callbacks/twilio/status";
const USER: &str = "u-1";

/// The router on 127.0.0.1 with its stores.
struct Server {
    _dir: tempfile::TempDir,
    base: String,
    links: UnsubscribeLinks,
    preferences: PreferenceStore,
    queue: DeliveryQueue,
    client: reqwest::Client,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// `configured`: whether `public_url`/`link_secret` and the SMS
    /// callback URL are set.
    async fn start(configured: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let stores = Stores::open_embedded(dir.path()).await.unwrap();
        let preferences = stores.preferences.clone();
        let queue = stores.deliveries.clone();
        let type_defaults = |critical| TypeDefaults {
            channels: [ChannelKind::Email, ChannelKind::InApp].into(),
            critical,
            frequency: Frequency::Instant,
            category: None,
        };
        let defaults = OperatorDefaults {
            types: BTreeMap::from([
                ("newsletter".to_owned(), type_defaults(false)),
                ("security_alert".to_owned(), type_defaults(true)),
            ]),
        };
        let links = UnsubscribeLinks::new("https://nudge.example.com", SECRET).unwrap();
        let state = HttpState {
            settings: SettingsHandle::new(EngineSettings {
                defaults,
                ..EngineSettings::default()
            }),
            unsubscribe: configured.then(|| links.clone()),
            sms_callbacks: configured.then(|| StatusCallbackAuth::new(CALLBACK_URL, AUTH_TOKEN)),
            ..HttpState::standalone(&stores).unwrap()
        };
        let (base, task) = support::serve(state).await;
        Server {
            _dir: dir,
            base,
            links,
            preferences,
            queue,
            client: reqwest::Client::new(),
            task,
        }
    }

    /// The path of `notification_type`'s email unsubscribe link for USER.
    fn unsubscribe_path(&self, notification_type: &str) -> String {
        let token = self
            .links
            .sign_unsubscribe(&UnsubscribeClaims {
                user_id: USER.to_owned(),
                notification_type: notification_type.to_owned(),
                channel: ChannelKind::Email,
                issued_at: Timestamp::now(),
            })
            .unwrap();
        format!("/v1/unsubscribe/{token}")
    }

    /// RFC 8058's POST: `(status, JSON answer)`.
    async fn one_click(&self, path: &str, body: &str) -> (u16, Value) {
        let reply = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        let status = reply.status().as_u16();
        (status, reply.json().await.unwrap_or(Value::Null))
    }

    async fn email_choice(&self, notification_type: &str) -> Option<bool> {
        let preferences = self.preferences.get(USER).await.unwrap();
        preferences
            .types
            .get(notification_type)?
            .channels
            .get(&ChannelKind::Email)
            .copied()
    }

    /// An SMS delivery the provider accepted as `sid`.
    async fn sent_sms(&self, sid: &str) -> uuid::Uuid {
        let now = Timestamp::now();
        let delivery = Delivery::new(
            NewDelivery {
                notification_id: "n-1".into(),
                user_id: USER.into(),
                channel: ChannelKind::Sms,
                priority: Priority::Normal,
                message: OutboundMessage {
                    text_body: "hello".into(),
                    ..OutboundMessage::default()
                },
                recipient: Recipient::Phone {
                    number: "+15005550010".into(),
                },
                not_before: None,
            },
            now,
        );
        let id = delivery.id;
        self.queue.enqueue(delivery).await.unwrap();
        let claimed = self
            .queue
            .claim_due(ChannelKind::Sms, now, 10)
            .await
            .unwrap();
        assert!(claimed.iter().any(|d| d.id == id));
        let receipt = SendReceipt {
            provider_message_id: Some(sid.to_owned()),
            answer: "queued".into(),
        };
        self.queue
            .complete(id, &Completion::Sent(receipt), now)
            .await
            .unwrap();
        id
    }

    async fn status(&self, id: uuid::Uuid) -> Delivery {
        self.queue.get(id).await.unwrap().unwrap()
    }

    /// Posts `form` to the callback route with `signature` (none if `None`).
    async fn callback(&self, form: &[(&str, &str)], signature: Option<&str>) -> (u16, Value) {
        let mut request = self
            .client
            .post(format!("{}/v1/callbacks/twilio/status", self.base))
            .form(form);
        if let Some(signature) = signature {
            request = request.header("X-Twilio-Signature", signature);
        }
        let reply = request.send().await.unwrap();
        let status = reply.status().as_u16();
        (status, reply.json().await.unwrap_or(Value::Null))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Twilio's form for `sid` reaching `status`, and its signature.
fn twilio_form<'a>(sid: &'a str, status: &'a str, error: &'a str) -> Vec<(&'a str, &'a str)> {
    let mut form = vec![
        ("AccountSid", "AC00000000000000000000000000000001"),
        ("From", "+15005550006"),
        ("MessageSid", sid),
        ("MessageStatus", status),
        ("SmsSid", sid),
        ("SmsStatus", status),
        ("To", "+15005550010"),
        ("ApiVersion", "2010-04-01"),
    ];
    if !error.is_empty() {
        form.push(("ErrorCode", error));
    }
    form
}

fn sign(form: &[(&str, &str)]) -> String {
    let params: Vec<(String, String)> = form
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    twilio_signature(AUTH_TOKEN, CALLBACK_URL, &params)
}

#[tokio::test]
async fn a_one_click_post_unsubscribes_and_a_get_does_not() {
    let server = Server::start(true).await;
    let path = server.unsubscribe_path("newsletter");

    // A link scanner's GET: a page with a button, and no change.
    let page = server
        .client
        .get(format!("{}{path}", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert_eq!(page.headers()["cache-control"], "no-store");
    let html = page.text().await.unwrap();
    assert!(html.contains("<form method=\"post\">"), "{html}");
    assert!(
        html.contains("name=\"List-Unsubscribe\" value=\"One-Click\""),
        "{html}"
    );
    assert!(html.contains("newsletter"), "{html}");
    assert_eq!(
        server.email_choice("newsletter").await,
        None,
        "a GET changed it"
    );

    // The mailbox provider's POST.
    let (status, body) = server.one_click(&path, "List-Unsubscribe=One-Click").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["unsubscribed"], true, "{body}");
    assert_eq!(body["notification_type"], "newsletter", "{body}");
    assert_eq!(body["channel"], "email", "{body}");
    assert_eq!(server.email_choice("newsletter").await, Some(false));

    // Idempotent.
    let (status, body) = server.one_click(&path, "List-Unsubscribe=One-Click").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(server.email_choice("newsletter").await, Some(false));
    let preferences = server.preferences.get(USER).await.unwrap();
    assert_eq!(preferences.types.len(), 1, "{preferences:?}");
    assert!(preferences.channels.is_empty(), "only the type, not email");
}

#[tokio::test]
async fn the_pages_button_and_multipart_bodies_work_too() {
    let server = Server::start(true).await;
    let path = server.unsubscribe_path("newsletter");
    // What a browser sends from the GET page's form.
    let reply = server
        .client
        .post(format!("{}{path}", server.base))
        .header("accept", "text/html,application/xhtml+xml")
        .form(&[("List-Unsubscribe", "One-Click")])
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    let html = reply.text().await.unwrap();
    assert!(html.contains("You are unsubscribed"), "{html}");
    assert_eq!(server.email_choice("newsletter").await, Some(false));

    server
        .preferences
        .put(USER, &UserPreferences::default())
        .await
        .unwrap();
    let boundary = "nudge-boundary";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"List-Unsubscribe\"\r\n\r\nOne-Click\r\n--{boundary}--\r\n"
    );
    let reply = server
        .client
        .post(format!("{}{path}", server.base))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    assert_eq!(server.email_choice("newsletter").await, Some(false));
}

#[tokio::test]
async fn forged_links_bad_bodies_and_critical_types_change_nothing() {
    let server = Server::start(true).await;
    let path = server.unsubscribe_path("newsletter");

    // Signed with another secret.
    let forger = UnsubscribeLinks::new("https://nudge.example.com", &"x".repeat(40)).unwrap();
    let forged = forger
        .sign_unsubscribe(&UnsubscribeClaims {
            user_id: USER.to_owned(),
            notification_type: "newsletter".to_owned(),
            channel: ChannelKind::Email,
            issued_at: Timestamp::now(),
        })
        .unwrap();
    // Ours, with one character changed.
    let mut altered = path.clone().into_bytes();
    let at = altered.len() - 30;
    altered[at] = if altered[at] == b'A' { b'B' } else { b'A' };
    let altered = String::from_utf8(altered).unwrap();
    for bad in [
        format!("/v1/unsubscribe/{forged}"),
        altered,
        "/v1/unsubscribe/not-a-token".to_owned(),
    ] {
        let (status, body) = server.one_click(&bad, "List-Unsubscribe=One-Click").await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["error"]["code"], "invalid_link", "{body}");
        let page = server
            .client
            .get(format!("{}{bad}", server.base))
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 400, "{bad}");
        let html = page.text().await.unwrap();
        assert!(html.contains("not valid"), "{html}");
        assert!(!html.contains("<form"), "{html}");
    }

    for body in ["", "List-Unsubscribe=Yes", "unsubscribe=1"] {
        let (status, answer) = server.one_click(&path, body).await;
        assert_eq!(status, 400, "{body:?}: {answer}");
        assert_eq!(answer["error"]["code"], "bad_request", "{answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains("List-Unsubscribe=One-Click"),
            "{answer}"
        );
    }

    // A type that is critical (now): refused, and said so.
    let critical = server.unsubscribe_path("security_alert");
    let (status, body) = server
        .one_click(&critical, "List-Unsubscribe=One-Click")
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "critical_type", "{body}");
    let page = server
        .client
        .get(format!("{}{critical}", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("cannot be switched off"), "{html}");
    assert!(!html.contains("<form"), "{html}");

    assert_eq!(
        server.preferences.get(USER).await.unwrap(),
        UserPreferences::default(),
        "a refused request changed the preferences"
    );
}

#[tokio::test]
async fn twilio_callbacks_move_deliveries_only_when_signed() {
    let server = Server::start(true).await;
    let delivered = server.sent_sms("SM00000000000000000000000000000001").await;
    let undelivered = server.sent_sms("SM00000000000000000000000000000002").await;

    // Forged: a signature over other values, a wrong one, none at all.
    let form = twilio_form("SM00000000000000000000000000000001", "delivered", "");
    let other = sign(&twilio_form(
        "SM00000000000000000000000000000001",
        "sent",
        "",
    ));
    for signature in [Some(other.as_str()), Some("bm90IGl0"), None] {
        let (status, body) = server.callback(&form, signature).await;
        assert_eq!(status, 403, "{signature:?}: {body}");
        assert_eq!(body["error"]["code"], "invalid_signature", "{body}");
    }
    assert_eq!(server.status(delivered).await.status, Status::Sent);

    // Signed: `sent` changes nothing, `delivered` delivers (twice is fine).
    let sent = twilio_form("SM00000000000000000000000000000001", "sent", "");
    let (status, body) = server.callback(&sent, Some(&sign(&sent))).await;
    assert_eq!((status, &body["status"]), (200, &Value::from("sent")));
    for _ in 0..2 {
        let (status, body) = server.callback(&form, Some(&sign(&form))).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["delivery"], delivered.to_string(), "{body}");
        assert_eq!(body["status"], "delivered", "{body}");
    }
    let record = server.status(delivered).await;
    assert_eq!(record.status, Status::Delivered);
    assert!(record.delivered_at.is_some());

    // Undelivered, with Twilio's error code kept for the operator; a late
    // `delivered` cannot undo it.
    let form = twilio_form("SM00000000000000000000000000000002", "undelivered", "30003");
    let (status, body) = server.callback(&form, Some(&sign(&form))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "failed", "{body}");
    let record = server.status(undelivered).await;
    assert_eq!(record.status, Status::Failed);
    assert!(
        record.last_answer.as_deref().unwrap().contains("30003"),
        "{record:?}"
    );
    let late = twilio_form("SM00000000000000000000000000000002", "delivered", "");
    let (status, body) = server.callback(&late, Some(&sign(&late))).await;
    assert_eq!((status, &body["status"]), (200, &Value::from("failed")));
    assert_eq!(server.status(undelivered).await.status, Status::Failed);

    // Not ours: 200, so Twilio does not retry.
    let unknown = twilio_form("SM99999999999999999999999999999999", "delivered", "");
    let (status, body) = server.callback(&unknown, Some(&sign(&unknown))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["delivery"], Value::Null, "{body}");

    // Not a form at all (signed or not: the form is read first; only a
    // missing signature header is refused before that).
    let reply = server
        .client
        .post(format!("{}/v1/callbacks/twilio/status", server.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("X-Twilio-Signature", "bm90IGEgc2lnbmF0dXJl")
        .body("MessageSid=%zz")
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 400);
}

/// Issue 15: an unconfigured route is a `404` (not a `503`, which invites
/// retries that cannot succeed) in JSON, naming the setting that enables
/// it; a callback without its signature header is a `403` all the same.
#[tokio::test]
async fn unconfigured_public_routes_say_so() {
    let server = Server::start(false).await;
    let path = server.unsubscribe_path("newsletter");
    let (status, body) = server.one_click(&path, "List-Unsubscribe=One-Click").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "links_disabled", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("public_url") && m.contains("link_secret")),
        "{body}"
    );
    // The page a browser opens gets the same JSON: it is for the operator.
    let page = server
        .client
        .get(format!("{}{path}", server.base))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 404);
    let body: Value = page.json().await.unwrap();
    assert_eq!(body["error"]["code"], "links_disabled", "{body}");
    let form = twilio_form("SM1", "delivered", "");
    let (status, body) = server.callback(&form, Some(&sign(&form))).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "callbacks_disabled", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("status_callback_url")),
        "{body}"
    );
    let (status, body) = server.callback(&form, None).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "invalid_signature", "{body}");
    assert_eq!(
        server.preferences.get(USER).await.unwrap(),
        UserPreferences::default()
    );
}
