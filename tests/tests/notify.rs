//! End-to-end tests of issue 3 (notifications) against the real binaries
//! and real peers: an application identifies a user and sends a `notify`
//! through `nudge-agent`; `nudge-control-plane`, configured by an engine
//! TOML file, renders and sends it to a real SMTP server
//! (`control-plane/tests/peers/smtp_server.py`, aiosmtpd) and to a webhook
//! receiver that checks Standard Webhooks signatures. What is observed: the
//! peers' mail and requests, and the admin API's notifications, deliveries
//! and dead letters. (Workflows, whose email step a read cancels, are
//! `workflows.rs`.)
//!
//! Run `cargo build --bins` first; `scripts/test` does everything (it also
//! installs aiosmtpd into `.venv`).

// `support` is shared with `e2e.rs`; this binary uses only part of it.
#[allow(dead_code)]
mod support;

use std::time::Duration;

use serde_json::{Value, json};
use tempfile::TempDir;

use nudge_e2e::openapi_contract::{Checked, read_checked};
use nudge_e2e::ports::free_port;
use nudge_e2e::{Agent, ControlPlane};
use support::smtp::{SmtpServer, mails};
use support::webhook::Receiver;
use support::{start_with_engine_config, wait_until};

/// The webhook signing secret of every test.
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// Signs the unsubscribe links of every test (`link_secret`).
const LINK_SECRET: &str = "e2e-link-secret-0123456789abcdef0123";
const USER: &str = "u1";

/// Several engine polls (100 ms each) and dispatches: how long a test gives
/// the programs to send something they must not, once the expected message
/// has arrived. Never a speed assertion.
const CHANCE_TO_MISBEHAVE: Duration = Duration::from_millis(1500);

// ---------------------------------------------------------------------------
// The programs

/// What the engine file configures.
struct Engine<'a> {
    channels: &'a [&'a str],
    max_attempts: u32,
    smtp_port: u16,
    webhook_url: &'a str,
    allow_private: bool,
    /// More TOML appended as is (types, `[[rules]]`).
    extra: &'a str,
}

impl Engine<'_> {
    /// The file, with links under `public_url` (the control plane's HTTP
    /// address).
    fn toml(&self, public_url: &str) -> String {
        let channels: Vec<String> = self.channels.iter().map(|c| format!("{c:?}")).collect();
        format!(
            r#"
public_url = "{public_url}"
link_secret = "{LINK_SECRET}"

[retry]
initial = "200ms"
max = "2s"
max_attempts = {max_attempts}

[channels.email]
host = "127.0.0.1"
port = {smtp_port}
tls = "none"
from = "Nudge <nudge@example.com>"
timeout = "5s"

[channels.webhook]
secret = "{SECRET}"
allow_private_destinations = {allow_private}

[types.payment_failed]
channels = [{channels}]
critical = true
frequency = "instant"
webhook_url = "{webhook_url}"

[types.payment_failed.templates.fallback]
subject = "Payment failed for {{{{ data.invoice }}}}"
text = "Hi {{{{ user.name | default('there') }}}}, your payment for {{{{ data.invoice }}}} failed."
{extra}
"#,
            max_attempts = self.max_attempts,
            smtp_port = self.smtp_port,
            allow_private = self.allow_private,
            webhook_url = self.webhook_url,
            channels = channels.join(", "),
            extra = self.extra,
        )
    }
}

/// A control plane running `engine` and an agent shipping to it.
struct Stack {
    control_plane: ControlPlane,
    agent: Agent,
    _config: TempDir,
}

impl Stack {
    async fn start(engine: &Engine<'_>) -> Self {
        let (control_plane, agent, config) =
            start_with_engine_config(|public_url| engine.toml(public_url)).await;
        Stack {
            control_plane,
            agent,
            _config: config,
        }
    }

    async fn post(&self, path: &str, body: Value) {
        let reply = self.agent.post(path, &body).await.unwrap();
        assert!(reply.is_success(), "POST {path} {body}: {reply:?}");
    }

    /// Identifies Ada as [`USER`].
    async fn identify(&self) {
        let traits = json!({"email": "ada@example.com", "name": "Ada"});
        self.post("/v1/identify", json!({"userId": USER, "traits": traits}))
            .await;
    }

    /// A `payment_failed` notify for `invoice`; `extra` adds fields
    /// (`idempotencyKey`, `messageId`).
    async fn notify(&self, invoice: &str, extra: Value) {
        let mut body = json!({
            "userId": USER,
            "type": "payment_failed",
            "data": {"invoice": invoice},
        });
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        self.post("/v1/notify", body).await;
    }

    async fn notifications(&self) -> Vec<Value> {
        self.control_plane.notifications(USER).await.unwrap()
    }

    /// Waits for the user's only notification and returns its id.
    async fn the_notification(&self) -> String {
        wait_until("the notify became a notification", || async {
            !self.notifications().await.is_empty()
        })
        .await;
        let notifications = self.notifications().await;
        assert_eq!(notifications.len(), 1, "{notifications:#?}");
        notifications[0]["id"].as_str().unwrap().to_owned()
    }

    /// The notification's delivery on `channel`.
    async fn delivery(&self, notification: &str, channel: &str) -> Value {
        self.control_plane
            .delivery(notification, channel)
            .await
            .unwrap()
    }

    /// Waits until the delivery on `channel` has status `status`; returns it.
    async fn delivery_reaching(&self, notification: &str, channel: &str, status: &str) -> Value {
        support::delivery_reaching(&self.control_plane, notification, channel, status).await
    }
}

fn attempts(delivery: &Value) -> u64 {
    delivery["attempts"].as_u64().unwrap_or(0)
}

// ---------------------------------------------------------------------------
// The tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notify_is_emailed_once_and_sent_in_app_and_resends_change_nothing() {
    let mail_dir = tempfile::tempdir().unwrap();
    let smtp_port = free_port();
    let _smtp = SmtpServer::start(smtp_port, &mail_dir);
    let stack = Stack::start(&Engine {
        channels: &["email", "in_app"],
        max_attempts: 3,
        smtp_port,
        webhook_url: "http://127.0.0.1:9/hook",
        allow_private: true,
        extra: "",
    })
    .await;

    stack.identify().await;
    stack
        .notify("INV-42", json!({"idempotencyKey": "inv-42"}))
        .await;
    let notification = stack.the_notification().await;
    wait_until("the email arrived", || async {
        !mails(&mail_dir).is_empty()
    })
    .await;
    let mail = &mails(&mail_dir)[0];
    assert!(mail.contains("To: Ada <ada@example.com>"), "{mail}");
    assert!(
        mail.contains("Subject: Payment failed for INV-42"),
        "{mail}"
    );
    assert!(
        mail.contains("Hi Ada, your payment for INV-42 failed."),
        "{mail}"
    );
    let email = stack
        .delivery_reaching(&notification, "email", "sent")
        .await;
    assert_eq!(attempts(&email), 1, "{email:#}");
    stack
        .delivery_reaching(&notification, "in_app", "sent")
        .await;

    // The same notify again, same idempotency key: nothing new.
    stack
        .notify("INV-42", json!({"idempotencyKey": "inv-42"}))
        .await;
    tokio::time::sleep(CHANCE_TO_MISBEHAVE).await;
    assert_eq!(
        stack.notifications().await.len(),
        1,
        "idempotencyKey resent"
    );
    assert_eq!(mails(&mail_dir).len(), 1, "idempotencyKey resent");

    // No idempotency key, but the same messageId twice: the agent's
    // envelope id dedupes it into one event, hence one notification.
    stack.notify("INV-43", json!({"messageId": "msg-43"})).await;
    stack.notify("INV-43", json!({"messageId": "msg-43"})).await;
    wait_until("the second email arrived", || async {
        mails(&mail_dir).len() >= 2
    })
    .await;
    tokio::time::sleep(CHANCE_TO_MISBEHAVE).await;
    let mails = mails(&mail_dir);
    assert_eq!(mails.len(), 2, "messageId resent: {mails:#?}");
    assert!(mails[1].contains("Subject: Payment failed for INV-43"));
    assert_eq!(stack.notifications().await.len(), 2, "messageId resent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_attempts_an_email_is_dead_lettered_and_an_admin_retry_delivers_it_once() {
    let mail_dir = tempfile::tempdir().unwrap();
    let smtp_port = free_port(); // nothing listens yet
    let stack = Stack::start(&Engine {
        channels: &["email"],
        max_attempts: 3,
        smtp_port,
        webhook_url: "http://127.0.0.1:9/hook",
        allow_private: true,
        extra: "",
    })
    .await;
    stack.identify().await;
    stack
        .notify("INV-42", json!({"idempotencyKey": "inv-42"}))
        .await;
    let notification = stack.the_notification().await;

    let email = stack
        .delivery_reaching(&notification, "email", "dead_lettered")
        .await;
    let last_answer = email["last_answer"].as_str().unwrap_or_default();
    assert!(
        ["connect", "refused"]
            .iter()
            .any(|word| last_answer.to_lowercase().contains(word)),
        "last_answer should name the connection failure: {email:#}"
    );
    assert_eq!(attempts(&email), 3, "{email:#}");
    assert_eq!(
        email["attempt_log"].as_array().map(Vec::len),
        Some(3),
        "{email:#}"
    );
    let id = email["id"].as_str().unwrap();
    let dead = stack
        .control_plane
        .admin_get("/v1/admin/dead-letters?channel=email")
        .await
        .unwrap();
    assert!(
        dead["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["id"] == id),
        "the delivery is listed as a dead letter: {dead:#}"
    );

    let _smtp = SmtpServer::start(smtp_port, &mail_dir);
    let retried = stack
        .control_plane
        .admin_post(&format!("/v1/admin/dead-letters/{id}/retry"))
        .await
        .unwrap();
    assert_eq!(retried["status"], "queued", "{retried:#}");
    stack
        .delivery_reaching(&notification, "email", "sent")
        .await;
    wait_until("the email arrived", || async {
        !mails(&mail_dir).is_empty()
    })
    .await;
    tokio::time::sleep(CHANCE_TO_MISBEHAVE).await;
    assert_eq!(mails(&mail_dir).len(), 1, "delivered exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_email_retried_while_smtp_is_down_is_delivered_once_when_it_is_back() {
    let mail_dir = tempfile::tempdir().unwrap();
    let smtp_port = free_port(); // nothing listens yet
    let stack = Stack::start(&Engine {
        channels: &["email"],
        max_attempts: 20,
        smtp_port,
        webhook_url: "http://127.0.0.1:9/hook",
        allow_private: true,
        extra: "",
    })
    .await;
    stack.identify().await;
    stack
        .notify("INV-42", json!({"idempotencyKey": "inv-42"}))
        .await;
    let notification = stack.the_notification().await;
    wait_until("a send to the absent SMTP server failed", || async {
        attempts(&stack.delivery(&notification, "email").await) >= 1
    })
    .await;

    let _smtp = SmtpServer::start(smtp_port, &mail_dir);
    let email = stack
        .delivery_reaching(&notification, "email", "sent")
        .await;
    assert!(attempts(&email) >= 2, "retried until sent: {email:#}");
    wait_until("the email arrived", || async {
        !mails(&mail_dir).is_empty()
    })
    .await;
    tokio::time::sleep(CHANCE_TO_MISBEHAVE).await;
    assert_eq!(mails(&mail_dir).len(), 1, "delivered exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_arrives_once_with_a_valid_signature() {
    let receiver = Receiver::start(SECRET).await;
    let stack = Stack::start(&Engine {
        channels: &["webhook"],
        max_attempts: 3,
        smtp_port: free_port(),
        webhook_url: &receiver.url,
        allow_private: true,
        extra: "",
    })
    .await;
    stack.identify().await;
    stack
        .notify("INV-42", json!({"idempotencyKey": "inv-42"}))
        .await;
    let notification = stack.the_notification().await;
    let webhook = stack
        .delivery_reaching(&notification, "webhook", "sent")
        .await;
    tokio::time::sleep(CHANCE_TO_MISBEHAVE).await;

    let hooks = receiver.hooks();
    assert_eq!(hooks.len(), 1, "{hooks:#?}");
    let hook = &hooks[0];
    assert!(hook.signature_valid, "signature does not verify: {hook:#?}");
    assert_eq!(
        hook.webhook_id,
        webhook["id"].as_str().unwrap(),
        "{hook:#?}"
    );
    assert_eq!(hook.body["type"], "payment_failed", "{hook:#?}");
    assert_eq!(hook.body["data"]["invoice"], "INV-42", "{hook:#?}");
    assert_eq!(hook.body["notification_id"], notification.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_to_a_private_destination_is_refused() {
    let receiver = Receiver::start(SECRET).await;
    let stack = Stack::start(&Engine {
        channels: &["webhook"],
        max_attempts: 3,
        smtp_port: free_port(),
        webhook_url: &receiver.url,
        allow_private: false,
        extra: "",
    })
    .await;
    stack.identify().await;
    stack
        .notify("INV-42", json!({"idempotencyKey": "inv-42"}))
        .await;
    let notification = stack.the_notification().await;
    let webhook = stack
        .delivery_reaching(&notification, "webhook", "failed")
        .await;
    let last_answer = webhook["last_answer"].as_str().unwrap_or_default();
    assert!(
        last_answer.contains("private") || last_answer.contains("non-public"),
        "last_answer should say the destination is not public: {webhook:#}"
    );
    tokio::time::sleep(CHANCE_TO_MISBEHAVE).await;
    assert!(receiver.hooks().is_empty(), "{:#?}", receiver.hooks());
}

/// Rules on tracked events, as the issue's first scenario: a tracked
/// `payment_failed` (amount above zero) emails the user at once; one with
/// amount zero does not match; a `cart_add` schedules a reminder that a
/// `purchase` within the delay cancels, and that fires for a user who did
/// not buy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracked_events_fire_rules_and_a_following_event_cancels_a_delayed_one() {
    let mail_dir = tempfile::tempdir().unwrap();
    let smtp_port = free_port();
    let _smtp = SmtpServer::start(smtp_port, &mail_dir);
    let stack = Stack::start(&Engine {
        channels: &["email"],
        max_attempts: 3,
        smtp_port,
        webhook_url: "http://127.0.0.1:9/unused",
        allow_private: true,
        extra: r#"
[types.cart_reminder]
channels = ["email"]

[types.cart_reminder.templates.fallback]
subject = "You left {{ data.item }} in your cart"
text = "Still thinking about {{ data.item }}?"

[[rules]]
name = "payment-failed"
on = "payment_failed"
notify = "payment_failed"
when = [ { property = "amount", op = "gt", value = 0 } ]

[[rules]]
name = "cart-reminder"
on = "cart_add"
notify = "cart_reminder"
delay = "2s"
unless = "purchase"
"#,
    })
    .await;
    stack.identify().await;
    let buyer = json!({"email": "bo@example.com", "name": "Bo"});
    stack
        .post("/v1/identify", json!({"userId": "buyer", "traits": buyer}))
        .await;
    let track = |user: &str, event: &str, properties: Value| json!({"userId": user, "event": event, "properties": properties});
    stack
        .post(
            "/v1/track",
            track(
                USER,
                "payment_failed",
                json!({"amount": 12, "invoice": "INV-77"}),
            ),
        )
        .await;
    stack
        .post(
            "/v1/track",
            track(
                USER,
                "payment_failed",
                json!({"amount": 0, "invoice": "INV-78"}),
            ),
        )
        .await;
    stack
        .post(
            "/v1/track",
            track(USER, "cart_add", json!({"item": "Boots"})),
        )
        .await;
    stack
        .post(
            "/v1/track",
            track("buyer", "cart_add", json!({"item": "Hat"})),
        )
        .await;
    stack
        .post(
            "/v1/track",
            track("buyer", "purchase", json!({"item": "Hat"})),
        )
        .await;

    wait_until(
        "the payment email and the cart reminder arrived",
        || async { mails(&mail_dir).len() >= 2 },
    )
    .await;
    // The buyer's reminder was due 2 s after the cart_add: give it time to
    // (wrongly) fire.
    tokio::time::sleep(Duration::from_secs(2) + CHANCE_TO_MISBEHAVE).await;
    let mails = mails(&mail_dir);
    assert_eq!(mails.len(), 2, "{mails:#?}");
    assert!(
        mails
            .iter()
            .any(|m| m.contains("Subject: Payment failed for INV-77")
                && m.contains("To: Ada <ada@example.com>")),
        "{mails:#?}"
    );
    assert!(
        mails
            .iter()
            .any(|m| m.contains("Subject: You left Boots in your cart")),
        "{mails:#?}"
    );
    assert!(
        !mails
            .iter()
            .any(|m| m.contains("INV-78") || m.contains("bo@example.com")),
        "{mails:#?}"
    );
}

/// Preferences decide: a user's opt-out of a type's email stops that email
/// (in-app still goes), a global email switch-off does not stop a critical
/// type, and an opt-out of a critical type is refused with a 400 that says
/// why, leaving the stored preferences as they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opt_out_stops_an_email_but_a_critical_type_still_goes_out() {
    let mail_dir = tempfile::tempdir().unwrap();
    let smtp_port = free_port();
    let _smtp = SmtpServer::start(smtp_port, &mail_dir);
    let stack = Stack::start(&Engine {
        channels: &["email"],
        max_attempts: 3,
        smtp_port,
        webhook_url: "http://127.0.0.1:9/unused",
        allow_private: true,
        extra: r#"
[types.newsletter]
channels = ["email", "in_app"]

[types.newsletter.templates.fallback]
subject = "News for {{ user.name }}"
text = "Issue {{ data.issue }}"
"#,
    })
    .await;
    stack.identify().await;
    let preferences = format!("/v1/admin/users/{USER}/preferences");

    let (status, body) = stack
        .control_plane
        .admin_put(
            &preferences,
            &json!({"types": {"payment_failed": {"channels": {"email": false}}}}),
        )
        .await
        .unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("critical"), "{body}");

    let (status, body) = stack
        .control_plane
        .admin_put(
            &preferences,
            &json!({
                "channels": {"email": false},
                "types": {"newsletter": {"channels": {"email": false}}}
            }),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");

    stack
        .post(
            "/v1/notify",
            json!({"userId": USER, "type": "newsletter", "data": {"issue": 7}}),
        )
        .await;
    stack.notify("INV-90", json!({})).await;

    wait_until("the critical payment email arrived", || async {
        !mails(&mail_dir).is_empty()
    })
    .await;
    wait_until("both notifications exist", || async {
        stack.notifications().await.len() == 2
    })
    .await;
    tokio::time::sleep(CHANCE_TO_MISBEHAVE).await;
    let mails = mails(&mail_dir);
    assert_eq!(
        mails.len(),
        1,
        "only the critical email goes out: {mails:#?}"
    );
    assert!(
        mails[0].contains("Subject: Payment failed for INV-90"),
        "{mails:#?}"
    );

    let notifications = stack.notifications().await;
    let newsletter = notifications
        .iter()
        .find(|n| n["notification_type"] == "newsletter")
        .unwrap();
    let id = newsletter["id"].as_str().unwrap();
    let in_app = stack.delivery_reaching(id, "in_app", "sent").await;
    assert_eq!(in_app["channel"], "in_app");
    let deliveries = stack.control_plane.deliveries(id).await.unwrap();
    assert!(
        deliveries.iter().all(|d| d["channel"] != "email"),
        "the opted-out email was planned anyway: {deliveries:#?}"
    );
}

/// The value of header `name` in a saved message, unfolded; `None` when the
/// message has no such header.
fn mail_header(mail: &str, name: &str) -> Option<String> {
    let mail = mail.replace("\r\n", "\n");
    let head = mail.split("\n\n").next()?;
    let unfolded = head.replace("\n ", " ").replace("\n\t", " ");
    unfolded.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim()
            .eq_ignore_ascii_case(name)
            .then(|| value.trim().to_owned())
    })
}

/// One-click unsubscribe as the issue describes it: a tracked
/// `payment_failed` fires a critical `payment_failed` email (no unsubscribe
/// headers: it cannot be switched off) and a non-critical
/// `payment_reminder` email that carries `List-Unsubscribe` and
/// `List-Unsubscribe-Post`. A forged link changes nothing; a GET of the
/// real one (what link scanners do) changes nothing; RFC 8058's POST to it,
/// over real HTTP, switches the reminder's email off, so the next tracked
/// event emails only the critical notice while the reminder still goes
/// in-app.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emailed_unsubscribe_link_stops_that_types_email_in_one_click() {
    let mail_dir = tempfile::tempdir().unwrap();
    let smtp_port = free_port();
    let _smtp = SmtpServer::start(smtp_port, &mail_dir);
    let stack = Stack::start(&Engine {
        channels: &["email"],
        max_attempts: 3,
        smtp_port,
        webhook_url: "http://127.0.0.1:9/unused",
        allow_private: true,
        extra: r#"
[types.payment_reminder]
channels = ["email", "in_app"]

[types.payment_reminder.templates.fallback]
subject = "Reminder: {{ data.invoice }} is still open"
text = "Please pay {{ data.invoice }}."

[[rules]]
name = "payment-failed"
on = "payment_failed"
notify = "payment_failed"

[[rules]]
name = "payment-reminder"
on = "payment_failed"
notify = "payment_reminder"
"#,
    })
    .await;
    stack.identify().await;
    let track = |invoice: &str| json!({"userId": USER, "event": "payment_failed", "properties": {"amount": 12, "invoice": invoice}});
    stack.post("/v1/track", track("INV-1")).await;
    wait_until("both emails arrived", || async {
        mails(&mail_dir).len() >= 2
    })
    .await;
    let first = mails(&mail_dir);
    let critical = first
        .iter()
        .find(|m| m.contains("Subject: Payment failed for INV-1"))
        .unwrap_or_else(|| panic!("no payment_failed email: {first:#?}"));
    assert_eq!(
        mail_header(critical, "List-Unsubscribe"),
        None,
        "a critical type's email offers no unsubscribe: {critical}"
    );
    let reminder = first
        .iter()
        .find(|m| m.contains("Subject: Reminder: INV-1 is still open"))
        .unwrap_or_else(|| panic!("no payment_reminder email: {first:#?}"));
    assert_eq!(
        mail_header(reminder, "List-Unsubscribe-Post").as_deref(),
        Some("List-Unsubscribe=One-Click"),
        "{reminder}"
    );
    let list_unsubscribe = mail_header(reminder, "List-Unsubscribe")
        .unwrap_or_else(|| panic!("no List-Unsubscribe header: {reminder}"));
    let url = list_unsubscribe
        .strip_prefix('<')
        .and_then(|rest| rest.strip_suffix('>'))
        .unwrap_or_else(|| panic!("not <url>: {list_unsubscribe}"))
        .to_owned();
    let prefix = format!("http://{}/v1/unsubscribe/", stack.control_plane.http);
    assert!(url.starts_with(&prefix), "{url}");

    let client = reqwest::Client::new();
    let preferences_path = format!("/v1/admin/users/{USER}/preferences");
    let preferences = || async {
        stack
            .control_plane
            .admin_get(&preferences_path)
            .await
            .unwrap()
    };
    let untouched = preferences().await;
    let one_click = |url: String| {
        let client = client.clone();
        async move {
            let reply = client
                .post(&url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body("List-Unsubscribe=One-Click")
                .send()
                .await
                .unwrap();
            let reply = read_checked(&reqwest::Method::POST, reply).await.unwrap();
            (
                reply.status,
                serde_json::from_slice::<Value>(&reply.body).unwrap_or(Value::Null),
            )
        }
    };

    // A forged link: one character of the token changed.
    let token = &url[prefix.len()..];
    let middle = token.len() / 2;
    let swapped = if &token[middle..=middle] == "A" {
        "B"
    } else {
        "A"
    };
    let forged = format!(
        "{prefix}{}{swapped}{}",
        &token[..middle],
        &token[middle + 1..]
    );
    let (status, body) = one_click(forged).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_link", "{body}");
    assert_eq!(preferences().await, untouched, "a forged link changed them");

    // A link scanner's GET: a page, no change.
    let page = get_checked(&client, &url).await;
    assert_eq!(page.status, 200);
    assert!(page.text().contains("<form method=\"post\">"));
    assert_eq!(preferences().await, untouched, "a GET changed them");

    // The mailbox provider's one-click POST.
    let (status, body) = one_click(url.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["unsubscribed"], true, "{body}");
    assert_eq!(
        preferences().await["types"]["payment_reminder"]["channels"]["email"],
        false
    );

    // The next tracked event: the critical email goes, the reminder only
    // in-app.
    stack.post("/v1/track", track("INV-2")).await;
    wait_until("the second critical email arrived", || async {
        mails(&mail_dir).len() >= 3
    })
    .await;
    wait_until("four notifications exist", || async {
        stack.notifications().await.len() == 4
    })
    .await;
    let notifications = stack.notifications().await;
    let second_reminder = notifications
        .iter()
        .find(|n| n["notification_type"] == "payment_reminder" && n["data"]["invoice"] == "INV-2")
        .unwrap_or_else(|| panic!("no reminder for INV-2: {notifications:#?}"))["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let in_app = stack
        .delivery_reaching(&second_reminder, "in_app", "sent")
        .await;
    assert_eq!(in_app["channel"], "in_app");
    tokio::time::sleep(CHANCE_TO_MISBEHAVE).await;
    let deliveries = stack
        .control_plane
        .deliveries(&second_reminder)
        .await
        .unwrap();
    assert!(
        deliveries.iter().all(|d| d["channel"] != "email"),
        "the unsubscribed email was planned anyway: {deliveries:#?}"
    );
    let all = mails(&mail_dir);
    assert_eq!(all.len(), 3, "{all:#?}");
    assert!(
        all[2].contains("Subject: Payment failed for INV-2"),
        "{all:#?}"
    );
}

/// The body of the `text/html` part of a saved message, decoded from its
/// transfer encoding (7bit, 8bit, quoted-printable or base64).
fn html_part(mail: &str) -> String {
    let mail = mail.replace("\r\n", "\n");
    let at = mail
        .to_ascii_lowercase()
        .find("content-type: text/html")
        .unwrap_or_else(|| panic!("no text/html part: {mail}"));
    let part = &mail[at..];
    let (head, body) = part.split_once("\n\n").unwrap();
    let body = body.split("\n--").next().unwrap();
    let encoding = head
        .lines()
        .find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case("content-transfer-encoding")
                .then(|| value.trim().to_ascii_lowercase())
        })
        .unwrap_or_default();
    match encoding.as_str() {
        "quoted-printable" => {
            let joined = body.replace("=\n", "");
            let mut bytes = Vec::new();
            let mut rest = joined.as_bytes();
            while let Some((&byte, tail)) = rest.split_first() {
                if byte == b'=' && tail.len() >= 2 {
                    let hex = std::str::from_utf8(&tail[..2]).unwrap();
                    bytes.push(u8::from_str_radix(hex, 16).unwrap());
                    rest = &tail[2..];
                } else {
                    bytes.push(byte);
                    rest = tail;
                }
            }
            String::from_utf8(bytes).unwrap()
        }
        "base64" => {
            use base64::Engine as _;
            let compact: String = body.split_whitespace().collect();
            String::from_utf8(
                base64::engine::general_purpose::STANDARD
                    .decode(compact)
                    .unwrap(),
            )
            .unwrap()
        }
        _ => body.to_owned(),
    }
}

/// The values of every `attribute="…"` in `html`, in order.
fn attribute_values(html: &str, attribute: &str) -> Vec<String> {
    let needle = format!("{attribute}=\"");
    html.match_indices(&needle)
        .map(|(at, _)| {
            let rest = &html[at + needle.len()..];
            rest[..rest.find('"').unwrap()].to_owned()
        })
        .collect()
}

/// Engagement tracking end to end: an HTML email sent through the real
/// stack reaches the SMTP server with its web link rewritten to a signed
/// click link (the `mailto:` link and the text part left alone) and an
/// open pixel before `</body>`. Fetching the pixel from the received mail
/// over real HTTP moves the delivery to `opened`; following the click link
/// redirects to the original destination and moves it to `clicked`; a
/// forged click link is refused without a redirect and changes nothing.
/// Observed through the admin API, as an operator would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emails_pixel_and_links_track_its_open_and_click() {
    let mail_dir = tempfile::tempdir().unwrap();
    let smtp_port = free_port();
    let _smtp = SmtpServer::start(smtp_port, &mail_dir);
    let stack = Stack::start(&Engine {
        channels: &["email"],
        max_attempts: 3,
        smtp_port,
        webhook_url: "http://127.0.0.1:9/unused",
        allow_private: true,
        extra: r#"
[types.spring_sale]
channels = ["email"]

[types.spring_sale.templates.fallback]
subject = "Spring sale {{ data.code }}"
text = "Shop at https://shop.example/sale"
html = '<html><body><p>Hi {{ user.name }}, <a class="button" href="https://shop.example/sale?code={{ data.code }}&amp;from=mail">shop now</a> or <a href="mailto:help@shop.example">ask us</a>.</p></body></html>'
"#,
    })
    .await;
    stack.identify().await;
    stack
        .post(
            "/v1/notify",
            json!({"userId": USER, "type": "spring_sale", "data": {"code": "SPRING"}}),
        )
        .await;
    let notification = stack.the_notification().await;
    wait_until("the email arrived", || async {
        !mails(&mail_dir).is_empty()
    })
    .await;
    let mail = &mails(&mail_dir)[0];
    let email = stack
        .delivery_reaching(&notification, "email", "sent")
        .await;
    assert_eq!(email["opened_at"], Value::Null, "{email:#}");

    let html = html_part(mail);
    let base = format!("http://{}", stack.control_plane.http);
    let hrefs = attribute_values(&html, "href");
    assert_eq!(hrefs.len(), 2, "{html}");
    let click = hrefs[0].clone();
    assert!(
        click.starts_with(&format!("{base}/v1/t/click/")),
        "the web link is tracked: {html}"
    );
    assert!(
        !click.contains("shop.example"),
        "signed, not readable as a URL: {click}"
    );
    assert_eq!(hrefs[1], "mailto:help@shop.example", "{html}");
    let pixels: Vec<String> = attribute_values(&html, "src");
    assert_eq!(pixels.len(), 1, "{html}");
    let pixel = &pixels[0];
    assert!(
        pixel.starts_with(&format!("{base}/v1/t/open/")) && pixel.ends_with(".gif"),
        "{html}"
    );
    assert!(
        html.contains(&format!("<img src=\"{pixel}\" width=\"1\" height=\"1\""))
            && html.contains("style=\"display:none\"></body>"),
        "the pixel sits before </body>: {html}"
    );
    assert!(
        mail.contains("Shop at https://shop.example/sale"),
        "the text part is left alone: {mail}"
    );

    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    // The mail client loads the images: opened.
    let reply = get_checked(&client, pixel).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.headers["content-type"], "image/gif");
    let opened = stack
        .delivery_reaching(&notification, "email", "opened")
        .await;
    assert!(opened["opened_at"].is_string(), "{opened:#}");
    assert!(opened["delivered_at"].is_string(), "{opened:#}");

    // A forged click link: one character of the token changed.
    let token_at = click.len() - 10;
    let swapped = if &click[token_at..=token_at] == "A" {
        "B"
    } else {
        "A"
    };
    let forged = format!("{}{swapped}{}", &click[..token_at], &click[token_at + 1..]);
    let reply = get_checked(&client, &forged).await;
    assert_eq!(reply.status, 400);
    assert!(reply.headers.get("location").is_none());
    tokio::time::sleep(CHANCE_TO_MISBEHAVE).await;
    assert_eq!(
        stack.delivery(&notification, "email").await["status"],
        "opened",
        "a forged click changed the delivery"
    );

    // The recipient clicks: redirected to the original link, clicked.
    let reply = get_checked(&client, &click).await;
    assert_eq!(reply.status, 302);
    assert_eq!(
        reply.headers["location"],
        "https://shop.example/sale?code=SPRING&from=mail"
    );
    let clicked = stack
        .delivery_reaching(&notification, "email", "clicked")
        .await;
    assert!(clicked["clicked_at"].is_string(), "{clicked:#}");
    assert_eq!(clicked["opened_at"], opened["opened_at"], "{clicked:#}");

    // Loading the images again later keeps `clicked`.
    let reply = get_checked(&client, pixel).await;
    assert_eq!(reply.status, 200);
    tokio::time::sleep(CHANCE_TO_MISBEHAVE).await;
    let later = stack.delivery(&notification, "email").await;
    assert_eq!(later["status"], "clicked", "{later:#}");
    assert_eq!(later["opened_at"], opened["opened_at"], "{later:#}");
}

/// `GET url` (a signed link a recipient follows: a public route), its
/// answer held to openapi.json.
async fn get_checked(client: &reqwest::Client, url: &str) -> Checked {
    let reply = client.get(url).send().await.unwrap();
    read_checked(&reqwest::Method::GET, reply).await.unwrap()
}
