//! Engagement tracking over real HTTP, against the control plane's own
//! router on a loopback port with real stores in a tempdir: the open pixel
//! (`/v1/t/open/{token}.gif`), click-tracking redirects
//! (`/v1/t/click/{token}`) and the email provider's event callbacks
//! (`/v1/callbacks/email`). What is observed: the answers (a redirect only
//! ever to a signed destination), and the deliveries and preferences in
//! the stores behind them — which a refused request must leave as they
//! were.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde_json::{Value, json};
use uuid::Uuid;

use nudge_control_plane::channels::email::EmailCallbackAuth;
use nudge_control_plane::channels::{ChannelKind, OutboundMessage, Recipient, SendReceipt};
use nudge_control_plane::delivery::{
    Completion, Delivery, DeliveryQueue, NewDelivery, Priority, Status,
};
use nudge_control_plane::engine::{EngineSettings, SettingsHandle};
use nudge_control_plane::http::HttpState;
use nudge_control_plane::links::{TrackingLinks, UnsubscribeClaims, UnsubscribeLinks};
use nudge_control_plane::preferences::{
    Frequency, OperatorDefaults, PreferenceStore, TypeDefaults, UserPreferences,
};
use nudge_control_plane::storage::{SQLITE_FILE, Stores};

mod support;

const LINK_SECRET: &str = "0123456789abcdef0123456789abcdef-test";
const CALLBACK_SECRET: &str = "callback-secret-0123456789abcdef-test";
const PUBLIC_URL: &str = "https://nudge.example.com";
const USER: &str = "u-1";
const DESTINATION: &str = "https://shop.example/cart?item=42&ref=mail";

/// What a test server is set up with.
#[derive(Clone, Copy)]
struct Setup {
    /// `public_url`, `link_secret` and `callback_secret` are set.
    configured: bool,
    opens: bool,
    clicks: bool,
}

const ALL_ON: Setup = Setup {
    configured: true,
    opens: true,
    clicks: true,
};

/// A callback's Standard Webhooks headers.
#[derive(Debug, Clone)]
struct Headers {
    id: String,
    timestamp: String,
    signature: String,
}

/// The types: `newsletter`, and `security_alert`, which is critical.
fn defaults() -> OperatorDefaults {
    let type_defaults = |critical| TypeDefaults {
        channels: [ChannelKind::Email, ChannelKind::InApp].into(),
        critical,
        frequency: Frequency::Instant,
        category: None,
    };
    OperatorDefaults {
        types: BTreeMap::from([
            ("newsletter".to_owned(), type_defaults(false)),
            ("security_alert".to_owned(), type_defaults(true)),
        ]),
    }
}

/// The router on 127.0.0.1 with its stores.
struct Server {
    _dir: tempfile::TempDir,
    base: String,
    tracking: TrackingLinks,
    auth: EmailCallbackAuth,
    preferences: PreferenceStore,
    queue: DeliveryQueue,
    /// Follows no redirects: the tests look at them.
    client: reqwest::Client,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start(setup: Setup) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let stores = Stores::open_embedded(dir.path()).await.unwrap();
        let defaults = defaults();
        let tracking =
            TrackingLinks::new(PUBLIC_URL, LINK_SECRET, setup.opens, setup.clicks).unwrap();
        let auth = EmailCallbackAuth::new(CALLBACK_SECRET);
        let standalone = HttpState::standalone(&stores).unwrap();
        let queue = standalone.queue.clone();
        let preferences = standalone.preferences.clone();
        let state = HttpState {
            settings: SettingsHandle::new(EngineSettings {
                defaults,
                ..EngineSettings::default()
            }),
            unsubscribe: setup
                .configured
                .then(|| UnsubscribeLinks::new(PUBLIC_URL, LINK_SECRET).unwrap()),
            tracking: setup.configured.then(|| tracking.clone()),
            email_callbacks: setup.configured.then(|| auth.clone()),
            ..standalone
        };
        let (base, task) = support::serve(state).await;
        Server {
            _dir: dir,
            base,
            tracking,
            auth,
            preferences,
            queue,
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            task,
        }
    }

    /// An email of `notification_type` to USER that the relay accepted,
    /// with the Message-ID the email channel gives it.
    async fn sent_email(&self, notification_type: &str) -> Uuid {
        let now = Timestamp::now();
        let delivery = Delivery::new(
            NewDelivery {
                notification_id: Uuid::now_v7().to_string(),
                user_id: USER.into(),
                channel: ChannelKind::Email,
                priority: Priority::Normal,
                message: OutboundMessage {
                    notification_type: notification_type.into(),
                    subject: "Hello".into(),
                    text_body: "hello".into(),
                    ..OutboundMessage::default()
                },
                recipient: Recipient::Email {
                    address: "ada@example.com".into(),
                    name: None,
                },
                not_before: None,
            },
            now,
        );
        let id = delivery.id;
        self.queue.enqueue(delivery).await.unwrap();
        let claimed = self
            .queue
            .claim_due(ChannelKind::Email, now, 10)
            .await
            .unwrap();
        assert!(claimed.iter().any(|d| d.id == id));
        let receipt = SendReceipt {
            provider_message_id: Some(message_id(id)),
            answer: "250 2.0.0 Ok: queued".into(),
        };
        self.queue
            .complete(id, &Completion::Sent(receipt), now)
            .await
            .unwrap();
        id
    }

    async fn delivery(&self, id: Uuid) -> Delivery {
        self.queue.get(id).await.unwrap().unwrap()
    }

    /// The path part of `url` (made under PUBLIC_URL) on this server.
    fn local(&self, url: &str) -> String {
        let path = url.strip_prefix(PUBLIC_URL).unwrap();
        format!("{}{path}", self.base)
    }

    async fn get(&self, url: &str) -> reqwest::Response {
        self.client.get(url).send().await.unwrap()
    }

    /// Standard Webhooks headers for `body` as message `id` sent at `at`
    /// (unix seconds), signed with this server's secret.
    fn sign(&self, id: &str, at: i64, body: &str) -> Headers {
        Headers {
            id: id.to_owned(),
            timestamp: at.to_string(),
            signature: self.auth.sign(id, at, body.as_bytes()),
        }
    }

    /// Fresh headers for `body`: a new id, the time now.
    fn fresh(&self, body: &str) -> Headers {
        self.sign(
            &format!("msg_{}", Uuid::now_v7()),
            Timestamp::now().as_second(),
            body,
        )
    }

    /// Posts `body` to the email callback route with `headers` (none if
    /// `None`): `(status, JSON answer)`.
    async fn callback(&self, body: &str, headers: Option<&Headers>) -> (u16, Value) {
        let mut request = self
            .client
            .post(format!("{}/v1/callbacks/email", self.base))
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(headers) = headers {
            request = request
                .header("webhook-id", &headers.id)
                .header("webhook-timestamp", &headers.timestamp)
                .header("webhook-signature", &headers.signature);
        }
        let reply = request.send().await.unwrap();
        let status = reply.status().as_u16();
        (status, reply.json().await.unwrap_or(Value::Null))
    }

    /// `events` posted with fresh, valid headers; the answer must be 200.
    async fn signed(&self, events: Value) -> Vec<Value> {
        let body = json!({ "events": events }).to_string();
        let (status, answer) = self.callback(&body, Some(&self.fresh(&body))).await;
        assert_eq!(status, 200, "{answer}");
        answer["results"].as_array().unwrap().clone()
    }

    /// The user switches `notification_type`'s email back on.
    async fn switch_email_on(&self, notification_type: &str) {
        let defaults = defaults();
        self.preferences
            .update(USER, |preferences| {
                preferences.set_type_channel(&defaults, notification_type, ChannelKind::Email, true)
            })
            .await
            .unwrap();
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
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn message_id(id: Uuid) -> String {
    format!("<{id}@nudge.example>")
}

async fn assert_pixel(reply: reqwest::Response) {
    assert_eq!(reply.status(), 200);
    assert_eq!(reply.headers()["content-type"], "image/gif");
    let cache = reply.headers()["cache-control"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        cache.contains("no-store") && cache.contains("no-cache"),
        "{cache}"
    );
    let body = reply.bytes().await.unwrap();
    assert!(body.starts_with(b"GIF89a"), "{body:?}");
}

#[tokio::test]
async fn the_open_pixel_records_an_open_once() {
    let server = Server::start(ALL_ON).await;
    let id = server.sent_email("newsletter").await;
    let url = server.local(&server.tracking.open_url(id));
    assert!(url.ends_with(".gif"), "{url}");

    let head = server.client.head(&url).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(
        server.delivery(id).await.status,
        Status::Sent,
        "a HEAD is no open"
    );
    assert_pixel(server.get(&url).await).await;
    let opened = server.delivery(id).await;
    assert_eq!(opened.status, Status::Opened);
    let opened_at = opened.opened_at.expect("opened_at");
    assert_eq!(
        opened.delivered_at,
        Some(opened_at),
        "an open proves delivery"
    );

    // Again (a second look, a client reloading images): nothing changes.
    assert_pixel(server.get(&url).await).await;
    assert_eq!(server.delivery(id).await, opened);
    // The token without `.gif` works too.
    let bare = url.strip_suffix(".gif").unwrap();
    assert_pixel(server.get(bare).await).await;
    assert_eq!(server.delivery(id).await, opened);
}

#[tokio::test]
async fn a_bad_pixel_token_still_gets_the_gif_and_records_nothing() {
    let server = Server::start(ALL_ON).await;
    let id = server.sent_email("newsletter").await;
    let before = server.delivery(id).await;
    let good = server.tracking.sign_open(id);
    let mut altered = good.clone().into_bytes();
    altered[5] = if altered[5] == b'A' { b'B' } else { b'A' };
    let altered = String::from_utf8(altered).unwrap();
    let foreign = TrackingLinks::new(PUBLIC_URL, &"x".repeat(40), true, true)
        .unwrap()
        .sign_open(id);
    for token in [altered.as_str(), foreign.as_str(), "garbage", "x.gif"] {
        let url = format!("{}/v1/t/open/{token}", server.base);
        assert_pixel(server.get(&url).await).await;
    }
    // An open of a delivery that does not exist: the GIF, and no record.
    let ghost = server.local(&server.tracking.open_url(Uuid::now_v7()));
    assert_pixel(server.get(&ghost).await).await;
    assert_eq!(server.delivery(id).await, before);
}

#[tokio::test]
async fn a_click_redirects_to_its_destination_and_records_it() {
    let server = Server::start(ALL_ON).await;
    let id = server.sent_email("newsletter").await;
    let url = server.local(&server.tracking.click_url(id, DESTINATION).unwrap());

    // A link checker's HEAD: the redirect, but no click.
    let reply = server.client.head(&url).send().await.unwrap();
    assert_eq!(reply.status(), 302);
    assert_eq!(reply.headers()["location"], DESTINATION);
    assert_eq!(server.delivery(id).await.status, Status::Sent);

    let reply = server.get(&url).await;
    assert_eq!(reply.status(), 302);
    assert_eq!(reply.headers()["location"], DESTINATION);
    assert_eq!(reply.headers()["cache-control"], "no-store");
    let clicked = server.delivery(id).await;
    assert_eq!(clicked.status, Status::Clicked);
    let clicked_at = clicked.clicked_at.expect("clicked_at");
    assert_eq!(clicked.delivered_at, Some(clicked_at));
    assert_eq!(clicked.opened_at, None, "no pixel loaded (images blocked)");

    // A second click redirects again and keeps the first time.
    let reply = server.get(&url).await;
    assert_eq!(reply.status(), 302);
    assert_eq!(server.delivery(id).await, clicked);

    // The pixel loading after the click keeps `clicked`.
    assert_pixel(
        server
            .get(&server.local(&server.tracking.open_url(id)))
            .await,
    )
    .await;
    let later = server.delivery(id).await;
    assert_eq!(later.status, Status::Clicked);
    assert!(later.opened_at.is_some());
}

#[tokio::test]
async fn forged_click_links_are_refused_and_never_redirect() {
    let server = Server::start(ALL_ON).await;
    let id = server.sent_email("newsletter").await;
    let before = server.delivery(id).await;
    let token = server.tracking.sign_click(id, DESTINATION).unwrap();

    // Ours with one character changed, in the middle and in the tag.
    let mut bad = Vec::new();
    for at in [token.len() / 2, token.len() - 3] {
        let mut altered = token.clone().into_bytes();
        altered[at] = if altered[at] == b'A' { b'B' } else { b'A' };
        bad.push(String::from_utf8(altered).unwrap());
    }
    // The same link to another destination, signed with another secret.
    bad.push(
        TrackingLinks::new(PUBLIC_URL, &"x".repeat(40), true, true)
            .unwrap()
            .sign_click(id, "https://evil.example/")
            .unwrap(),
    );
    // An unsubscribe token and an open token of this server.
    bad.push(
        UnsubscribeLinks::new(PUBLIC_URL, LINK_SECRET)
            .unwrap()
            .sign_unsubscribe(&UnsubscribeClaims {
                user_id: USER.to_owned(),
                notification_type: "newsletter".to_owned(),
                channel: ChannelKind::Email,
                issued_at: Timestamp::now(),
            })
            .unwrap(),
    );
    bad.push(server.tracking.sign_open(id));
    bad.push("aHR0cHM6Ly9ldmlsLmV4YW1wbGUv".to_owned()); // base64 of a URL
    for token in &bad {
        let reply = server
            .get(&format!("{}/v1/t/click/{token}", server.base))
            .await;
        assert_eq!(reply.status(), 400, "{token}");
        assert!(reply.headers().get("location").is_none(), "{token}");
        assert!(
            reply.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        let page = reply.text().await.unwrap();
        assert!(page.contains("not valid"), "{page}");
        assert!(!page.contains("evil.example"), "{page}");
    }
    assert_eq!(
        server.delivery(id).await,
        before,
        "a refused click changed it"
    );
}

#[tokio::test]
async fn switched_off_tracking_serves_old_links_but_records_nothing() {
    let server = Server::start(Setup {
        configured: true,
        opens: false,
        clicks: false,
    })
    .await;
    let id = server.sent_email("newsletter").await;
    let before = server.delivery(id).await;
    assert_pixel(
        server
            .get(&server.local(&server.tracking.open_url(id)))
            .await,
    )
    .await;
    let reply = server
        .get(&server.local(&server.tracking.click_url(id, DESTINATION).unwrap()))
        .await;
    assert_eq!(reply.status(), 302);
    assert_eq!(reply.headers()["location"], DESTINATION);
    assert_eq!(server.delivery(id).await, before);
}

#[tokio::test]
async fn signed_email_callbacks_move_deliveries_forward_only() {
    let server = Server::start(ALL_ON).await;
    let delivered = server.sent_email("newsletter").await;
    let bounced = server.sent_email("newsletter").await;
    let opened = server.sent_email("newsletter").await;

    let results = server
        .signed(json!([
            // By Message-ID with and without angle brackets, and by id.
            {"message_id": message_id(delivered), "event": "delivered", "timestamp": "2026-01-02T03:04:05Z"},
            {"message_id": message_id(bounced).trim_matches(['<', '>']), "event": "bounced", "reason": "550 5.1.1 user unknown"},
            {"delivery_id": opened.to_string(), "event": "opened"},
            {"message_id": "<nobody@elsewhere.example>", "event": "delivered"},
        ]))
        .await;
    let summary: Vec<(&str, &str)> = results
        .iter()
        .map(|r| {
            (
                r["result"].as_str().unwrap(),
                r["status"].as_str().unwrap_or("-"),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("applied", "delivered"),
            ("applied", "failed"),
            ("applied", "opened"),
            ("unknown_message", "-")
        ],
        "{results:#?}"
    );
    assert_eq!(results[3]["index"], 3);
    let record = server.delivery(delivered).await;
    assert_eq!(record.status, Status::Delivered);
    assert_eq!(
        record.delivered_at,
        Some("2026-01-02T03:04:05Z".parse().unwrap())
    );
    let record = server.delivery(bounced).await;
    assert_eq!(record.status, Status::Failed);
    assert_eq!(
        record.last_answer.as_deref(),
        Some("hard bounce reported by the email provider: 550 5.1.1 user unknown")
    );
    assert_eq!(server.delivery(opened).await.status, Status::Opened);

    // Clicked, then late news: never backwards.
    server
        .signed(json!([{"delivery_id": opened.to_string(), "event": "clicked"}]))
        .await;
    let results = server
        .signed(json!([
            {"delivery_id": opened.to_string(), "event": "delivered"},
            {"delivery_id": opened.to_string(), "event": "opened"},
            {"delivery_id": opened.to_string(), "event": "bounced"},
            {"delivery_id": bounced.to_string(), "event": "opened"},
            {"delivery_id": bounced.to_string(), "event": "delivered"},
        ]))
        .await;
    let summary: Vec<(&str, &str)> = results
        .iter()
        .map(|r| (r["result"].as_str().unwrap(), r["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        summary,
        [
            ("applied", "clicked"),
            ("applied", "clicked"),
            ("ignored", "clicked"),
            ("ignored", "failed"),
            ("ignored", "failed"),
        ],
        "{results:#?}"
    );
    assert_eq!(server.delivery(opened).await.status, Status::Clicked);
    assert_eq!(server.delivery(bounced).await.status, Status::Failed);
}

#[tokio::test]
async fn a_complaint_switches_the_types_email_off() {
    let server = Server::start(ALL_ON).await;
    let newsletter = server.sent_email("newsletter").await;
    let alert = server.sent_email("security_alert").await;
    let results = server
        .signed(json!([
            {"delivery_id": newsletter.to_string(), "event": "complained"},
            {"delivery_id": alert.to_string(), "event": "complained"},
        ]))
        .await;
    assert_eq!(results[0]["unsubscribed"], true, "{results:#?}");
    assert_eq!(results[1]["unsubscribed"], false, "critical: {results:#?}");
    assert_eq!(server.email_choice("newsletter").await, Some(false));
    assert_eq!(server.email_choice("security_alert").await, None);
    let record = server.delivery(newsletter).await;
    assert_eq!(record.status, Status::Delivered);
    assert!(record.complained_at.is_some());
    // Soft bounces keep the status.
    let soft = server.sent_email("newsletter").await;
    server
        .signed(json!([{"delivery_id": soft.to_string(), "event": "soft_bounced", "reason": "452 4.2.2 mailbox full"}]))
        .await;
    let record = server.delivery(soft).await;
    assert_eq!(record.status, Status::Sent);
    assert!(
        record
            .last_answer
            .as_deref()
            .unwrap()
            .contains("mailbox full"),
        "{record:?}"
    );
}

#[tokio::test]
async fn unsigned_or_malformed_callbacks_change_nothing() {
    let server = Server::start(ALL_ON).await;
    let id = server.sent_email("newsletter").await;
    let before = server.delivery(id).await;
    let body = json!({"events": [
        {"delivery_id": id.to_string(), "event": "complained"},
        {"delivery_id": id.to_string(), "event": "bounced"},
    ]})
    .to_string();
    let other = EmailCallbackAuth::new("another-secret-0123456789abcdef-xyz");
    let now = Timestamp::now().as_second();
    let good = server.sign("msg_1", now, &body);
    let tampered = server.sign("msg_1", now, &body.replace("bounced", "opened"));
    let with = |change: &dyn Fn(&mut Headers)| {
        let mut headers = good.clone();
        change(&mut headers);
        Some(headers)
    };
    for headers in [
        None,
        with(&|h| h.signature = "v1,AAAA".to_owned()),
        with(&|h| h.signature = other.sign("msg_1", now, body.as_bytes())),
        with(&|h| h.signature = tampered.signature.clone()),
        with(&|h| h.signature = h.signature.replace("v1,", "")),
        // The old scheme: a signature of the body alone.
        with(&|h| h.signature = "sha256=00".to_owned()),
        with(&|h| h.id = "msg_2".to_owned()),
        with(&|h| h.id = String::new()),
        with(&|h| h.timestamp = (now + 1).to_string()),
        with(&|h| h.timestamp = "now".to_owned()),
    ] {
        let (status, answer) = server.callback(&body, headers.as_ref()).await;
        assert_eq!(status, 403, "{headers:?}: {answer}");
        assert_eq!(answer["error"]["code"], "invalid_signature", "{answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains("webhook-signature"), "{message}");
    }

    // Signed, but not a valid batch: 400 saying why, nothing applied —
    // not even the valid first event.
    for (body, code, says) in [
        ("{\"events\": [", "malformed_json", "EOF"),
        (
            "{\"items\": []}",
            "malformed_json",
            "missing field `events`",
        ),
        (
            &*json!({"events": [
                {"delivery_id": id.to_string(), "event": "complained"},
                {"delivery_id": id.to_string(), "event": "exploded"},
            ]})
            .to_string(),
            "bad_request",
            "events[1].event",
        ),
    ] {
        let (status, answer) = server.callback(body, Some(&server.fresh(body))).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{message}");
    }
    assert_eq!(server.delivery(id).await, before);
    assert_eq!(
        server.preferences.get(USER).await.unwrap(),
        UserPreferences::default()
    );
}

#[tokio::test]
async fn unconfigured_tracking_and_callbacks_say_so() {
    let server = Server::start(Setup {
        configured: false,
        opens: true,
        clicks: true,
    })
    .await;
    let id = server.sent_email("newsletter").await;
    let before = server.delivery(id).await;
    // The pixel always answers its GIF; a click cannot be checked: a 404
    // naming the settings, never a redirect.
    assert_pixel(
        server
            .get(&server.local(&server.tracking.open_url(id)))
            .await,
    )
    .await;
    let reply = server
        .get(&server.local(&server.tracking.click_url(id, DESTINATION).unwrap()))
        .await;
    assert_eq!(reply.status(), 404);
    assert!(reply.headers().get("location").is_none());
    let answer: Value = reply.json().await.unwrap();
    assert_eq!(answer["error"]["code"], "links_disabled", "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("public_url")),
        "{answer}"
    );
    let body = json!({"events": [{"delivery_id": id.to_string(), "event": "opened"}]}).to_string();
    let (status, answer) = server.callback(&body, Some(&server.fresh(&body))).await;
    assert_eq!(status, 404, "{answer}");
    assert_eq!(answer["error"]["code"], "callbacks_disabled", "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("callback_secret")),
        "{answer}"
    );
    assert_eq!(server.delivery(id).await, before);
}

/// Issue 15: a complaint whose unsubscribe fails (503) is applied whole
/// when the provider resends it: nothing half-done is left that would make
/// the resend look like a repeat. The preference write is made to fail by a
/// trigger in the real database file.
#[tokio::test]
async fn a_complaint_that_failed_midway_unsubscribes_on_resend() {
    let server = Server::start(ALL_ON).await;
    let id = server.sent_email("newsletter").await;
    let database = sqlx::SqlitePool::connect(&format!(
        "sqlite://{}",
        server._dir.path().join(SQLITE_FILE).display()
    ))
    .await
    .unwrap();
    for statement in [
        "CREATE TRIGGER refuse_preference_insert BEFORE INSERT ON preferences \
         BEGIN SELECT RAISE(ABORT, 'preferences unavailable (test)'); END",
        "CREATE TRIGGER refuse_preference_update BEFORE UPDATE ON preferences \
         BEGIN SELECT RAISE(ABORT, 'preferences unavailable (test)'); END",
    ] {
        sqlx::query(statement).execute(&database).await.unwrap();
    }
    let body =
        json!({"events": [{"delivery_id": id.to_string(), "event": "complained"}]}).to_string();
    let headers = server.fresh(&body);
    let (status, answer) = server.callback(&body, Some(&headers)).await;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(server.email_choice("newsletter").await, None);

    for statement in [
        "DROP TRIGGER refuse_preference_insert",
        "DROP TRIGGER refuse_preference_update",
    ] {
        sqlx::query(statement).execute(&database).await.unwrap();
    }
    // The provider resends the very message: its id was given back.
    let (status, answer) = server.callback(&body, Some(&headers)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["results"][0]["unsubscribed"], true, "{answer}");
    assert_eq!(server.email_choice("newsletter").await, Some(false));
    assert!(server.delivery(id).await.complained_at.is_some());
}

/// Issue 15: a complaint replayed after the user switched the type's
/// email back on must leave it on, whether the replay is the same message
/// (refused by id or by age) or the same complaint in a new message.
#[tokio::test]
async fn a_replayed_complaint_leaves_email_switched_back_on() {
    let server = Server::start(ALL_ON).await;
    let id = server.sent_email("newsletter").await;
    let body =
        json!({"events": [{"delivery_id": id.to_string(), "event": "complained"}]}).to_string();
    let headers = server.fresh(&body);
    let (status, answer) = server.callback(&body, Some(&headers)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["results"][0]["unsubscribed"], true, "{answer}");
    assert_eq!(server.email_choice("newsletter").await, Some(false));
    let complained_at = server.delivery(id).await.complained_at;

    server.switch_email_on("newsletter").await;
    assert_eq!(server.email_choice("newsletter").await, Some(true));

    // The very same message again: a duplicate, answered without effect.
    let (status, answer) = server.callback(&body, Some(&headers)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer, json!({"duplicate": true, "results": []}));
    assert_eq!(server.email_choice("newsletter").await, Some(true));

    // The same complaint in a new message (a provider that reports it
    // twice): applied, but the delivery already had its complaint.
    let (status, answer) = server.callback(&body, Some(&server.fresh(&body))).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["results"][0]["result"], "applied", "{answer}");
    assert_eq!(answer["results"][0]["unsubscribed"], false, "{answer}");
    assert_eq!(server.email_choice("newsletter").await, Some(true));
    assert_eq!(server.delivery(id).await.complained_at, complained_at);
}

#[tokio::test]
async fn stale_or_future_callbacks_are_refused() {
    let server = Server::start(ALL_ON).await;
    let id = server.sent_email("newsletter").await;
    let before = server.delivery(id).await;
    let body =
        json!({"events": [{"delivery_id": id.to_string(), "event": "complained"}]}).to_string();
    let now = Timestamp::now().as_second();
    for (at, distance) in [
        (now - 3600, "3600 s"),
        (now - 6 * 60, "360 s"),
        (now + 6 * 60, "360 s"),
    ] {
        let headers = server.sign(&format!("msg_{at}"), at, &body);
        let (status, answer) = server.callback(&body, Some(&headers)).await;
        assert_eq!(status, 403, "{at}: {answer}");
        assert_eq!(answer["error"]["code"], "stale_timestamp", "{answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(distance) && message.contains("300 s"),
            "{message}"
        );
    }
    assert_eq!(server.delivery(id).await, before);
    assert_eq!(
        server.preferences.get(USER).await.unwrap(),
        UserPreferences::default()
    );
    // Within the tolerance, both ways, it acts (a new id each).
    for at in [now - 4 * 60, now + 4 * 60] {
        let headers = server.sign(&format!("msg_ok_{at}"), at, &body);
        let (status, answer) = server.callback(&body, Some(&headers)).await;
        assert_eq!(status, 200, "{at}: {answer}");
    }
    assert_eq!(server.email_choice("newsletter").await, Some(false));
}

/// A malformed batch does not take its id: the provider's corrected
/// resend under the same id is applied.
#[tokio::test]
async fn a_refused_batch_does_not_take_its_id() {
    let server = Server::start(ALL_ON).await;
    let id = server.sent_email("newsletter").await;
    let now = Timestamp::now().as_second();
    let bad = json!({"events": [{"delivery_id": id.to_string(), "event": "exploded"}]}).to_string();
    let (status, answer) = server
        .callback(&bad, Some(&server.sign("msg_x", now, &bad)))
        .await;
    assert_eq!(status, 400, "{answer}");
    let good = json!({"events": [{"delivery_id": id.to_string(), "event": "opened"}]}).to_string();
    let (status, answer) = server
        .callback(&good, Some(&server.sign("msg_x", now, &good)))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["results"][0]["result"], "applied", "{answer}");
    // Taken now: the same id is a duplicate whatever its body.
    let (status, answer) = server
        .callback(&good, Some(&server.sign("msg_x", now, &good)))
        .await;
    assert_eq!(
        (status, &answer["duplicate"]),
        (200, &json!(true)),
        "{answer}"
    );
}
