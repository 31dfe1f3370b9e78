//! Workflows with steps (`control-plane/src/workflow`) over the real
//! programs, on embedded SQLite and on PostgreSQL: `nudge-control-plane`
//! configured by an engine TOML file whose type sends in-app at once and
//! by email after a wait, `nudge-agent` in front of it, and a real SMTP
//! server (`control-plane/tests/peers/smtp_server.py`, aiosmtpd).
//!
//! * **A read cancels the email step**: ana reads her in-app item through
//!   her own inbox API (`POST /v1/me/notifications/{id}/read`) before the
//!   wait ends; when it ends, her email delivery is `cancelled`, its
//!   attempt log holds one `skipped` entry naming the read, and the SMTP
//!   server never heard of her.
//! * **Marking everything read counts too**: cy uses
//!   `POST /v1/me/notifications/read-all`, which does not touch the
//!   deliveries; the step's check asks the inbox, and her email is
//!   cancelled the same way.
//! * **Unread, the email goes out**: bob does nothing; his email reaches
//!   the SMTP server once, its attempt log saying `proceeded` (what was
//!   checked) before `sent`.
//! * **Bad steps refuse to start**: a control plane whose engine file has a
//!   step it cannot use exits 64 naming the key
//!   (`types.payment_failed.steps[1].wait`).
//!
//! Observed as an operator and a user would: the admin API's deliveries,
//! the user's `/v1/me` answers (held to `openapi.json`), the SMTP server's
//! saved mail and RCPT log. Every wait polls towards a generous deadline;
//! nothing is timed.
//!
//! Run `cargo build --bins` first; `scripts/test` does everything (it
//! installs aiosmtpd into `.venv` and starts the PostgreSQL server).

// `support` is shared with `e2e.rs`; this binary uses only part of it.
#[allow(dead_code)]
mod support;

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use tempfile::TempDir;

use nudge_control_plane::http::user_auth::UserTokenSecret;
use nudge_e2e::ports::free_port;
use nudge_e2e::{Agent, ControlPlane};
use support::smtp::{SmtpServer, mails, recipients};
use support::{binary, run_to_exit, start_with_engine_config_and_env, wait_until};

/// Signs the users' tokens (`NUDGE_CP_USER_TOKEN_SECRET`).
const USER_TOKEN_SECRET: &str = "workflows-e2e-user-token-secret-0123456789abcdef";

/// The workflow's wait between the in-app step and the email step, in
/// seconds. The reads below must land before it ends (checked, see
/// [`assert_read_before_due`]); how long the rest takes is never checked.
const WAIT_SECONDS: i64 = 8;

/// Several engine polls and dispatches: how long the test gives the
/// programs to send a mail they must not, once the expected one has
/// arrived. Never a speed assertion.
const CHANCE_TO_MISBEHAVE: Duration = Duration::from_millis(1500);

// ---------------------------------------------------------------------------
// The programs

/// The engine file: the email channel pointed at the test's SMTP server,
/// and `payment_failed` sent in steps: in-app; wait [`WAIT_SECONDS`];
/// email.
fn engine(smtp_port: u16) -> String {
    format!(
        r#"
[retry]
initial = "200ms"
max = "2s"
max_attempts = 5

[channels.email]
host = "127.0.0.1"
port = {smtp_port}
tls = "none"
from = "Nudge <nudge@example.com>"
timeout = "5s"

[types.payment_failed]
[[types.payment_failed.steps]]
channel = "in_app"
[[types.payment_failed.steps]]
wait = "{WAIT_SECONDS}s"
[[types.payment_failed.steps]]
channel = "email"

[types.payment_failed.templates.fallback]
subject = "Payment failed for {{{{ data.invoice }}}}"
text = "Your payment for {{{{ data.invoice }}}} failed."
"#
    )
}

/// A control plane running [`engine`] (on `database_url`, else on its
/// embedded SQLite) and an agent shipping to it.
struct Stack {
    control_plane: ControlPlane,
    agent: Agent,
    _config: TempDir,
}

impl Stack {
    async fn start(smtp_port: u16, database_url: Option<&str>) -> Self {
        let mut env = vec![("NUDGE_CP_USER_TOKEN_SECRET", USER_TOKEN_SECRET)];
        if let Some(url) = database_url {
            env.push(("NUDGE_CP_DATABASE_URL", url));
        }
        let (control_plane, agent, config) =
            start_with_engine_config_and_env(|_| engine(smtp_port), &env).await;
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

    /// `method path` under `/v1/me` as `user`: the status and the answer
    /// (JSON, or null).
    async fn me(&self, user: &str, method: Method, path: &str) -> (u16, Value) {
        let (status, text) = self
            .control_plane
            .send_as(Some(&token(user)), method, path, None)
            .await
            .unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// The one item in `user`'s inbox, once it is there.
    async fn inbox_item(&self, user: &str) -> Value {
        let items = || async {
            let (status, page) = self.me(user, Method::GET, "/v1/me/notifications").await;
            assert_eq!(status, 200, "{page}");
            page["items"].as_array().cloned().unwrap_or_default()
        };
        wait_until(&format!("{user}'s in-app item is in the inbox"), || async {
            !items().await.is_empty()
        })
        .await;
        let items = items().await;
        assert_eq!(items.len(), 1, "{items:#?}");
        items[0].clone()
    }

    /// `user`'s only notification.
    async fn notification_of(&self, user: &str) -> Value {
        wait_until(
            &format!("{user}'s notify became a notification"),
            || async {
                !self
                    .control_plane
                    .notifications(user)
                    .await
                    .unwrap()
                    .is_empty()
            },
        )
        .await;
        let notifications = self.control_plane.notifications(user).await.unwrap();
        assert_eq!(notifications.len(), 1, "{notifications:#?}");
        notifications[0].clone()
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

/// A token of `user`, signed as the application's backend would.
fn token(user: &str) -> String {
    let secret: UserTokenSecret = USER_TOKEN_SECRET.parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    secret.sign(&json!({"sub": user, "exp": now + 3600}))
}

fn email_of(user: &str) -> String {
    format!("{user}@example.com")
}

/// The outcomes in a delivery's attempt log, in order.
fn outcomes(delivery: &Value) -> Vec<&str> {
    delivery["attempt_log"]
        .as_array()
        .unwrap_or_else(|| panic!("no attempt_log: {delivery:#}"))
        .iter()
        .map(|attempt| attempt["outcome"].as_str().unwrap())
        .collect()
}

fn timestamp(value: &Value) -> jiff::Timestamp {
    value
        .as_str()
        .unwrap_or_else(|| panic!("not a time: {value}"))
        .parse()
        .unwrap_or_else(|error| panic!("not a time: {value}: {error}"))
}

/// When a notification's email step is due: [`WAIT_SECONDS`] after the
/// notification was created, less a millisecond for the storage's rounding
/// of times.
fn step_due(notification: &Value) -> jiff::Timestamp {
    timestamp(&notification["created_at"])
        .checked_add(jiff::SignedDuration::from_secs(WAIT_SECONDS))
        .unwrap()
        .checked_sub(jiff::SignedDuration::from_millis(1))
        .unwrap()
}

/// The scenario's precondition: the inbox item was read before the email
/// step came due. Failing here means this machine took longer than
/// [`WAIT_SECONDS`] between the notify and the read, not that the product
/// is wrong.
fn assert_read_before_due(user: &str, item: &Value, email: &Value) {
    let read = timestamp(&item["read_at"]);
    let due = timestamp(&email["not_before"]);
    assert!(
        read < due,
        "precondition: {user} read the item at {read}, after the email step was due at {due} \
         (the machine was slower than the {WAIT_SECONDS}s wait; not a product failure)\n{item:#}\n{email:#}"
    );
}

// ---------------------------------------------------------------------------
// The tests

async fn an_email_step_goes_out_only_while_the_in_app_item_is_unread(database_url: Option<&str>) {
    let mail_dir = TempDir::new().unwrap();
    let smtp_port = free_port();
    let _smtp = SmtpServer::start(smtp_port, &mail_dir);
    let stack = Stack::start(smtp_port, database_url).await;

    // ana reads her item, bob does nothing, cy marks everything read.
    let users = ["ana", "bob", "cy"];
    for user in users {
        stack
            .post(
                "/v1/identify",
                json!({"userId": user, "traits": {"email": email_of(user)}}),
            )
            .await;
        stack
            .post(
                "/v1/notify",
                json!({"userId": user, "type": "payment_failed",
                       "data": {"invoice": format!("INV-{user}")}}),
            )
            .await;
    }

    // The in-app step goes out at once; the reads follow right away.
    let ana_item = stack.inbox_item("ana").await;
    let id = ana_item["id"].as_str().unwrap();
    let (status, ana_read) = stack
        .me(
            "ana",
            Method::POST,
            &format!("/v1/me/notifications/{id}/read"),
        )
        .await;
    assert_eq!(status, 200, "{ana_read}");
    assert!(ana_read["read_at"].is_string(), "{ana_read:#}");

    let cy_item = stack.inbox_item("cy").await;
    let (status, body) = stack
        .me("cy", Method::POST, "/v1/me/notifications/read-all")
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["marked"], 1, "{body}");
    let id = cy_item["id"].as_str().unwrap();
    let (status, cy_read) = stack
        .me("cy", Method::GET, &format!("/v1/me/notifications/{id}"))
        .await;
    assert_eq!(status, 200, "{cy_read}");

    // Each notification: the in-app step sent, the email step planned with
    // its gate (step 3, cancelled by a read or a click).
    let mut notifications = Vec::new();
    for user in users {
        let notification = stack.notification_of(user).await;
        let id = notification["id"].as_str().unwrap().to_owned();
        // Sent, and for ana read since: the status moved on, `sent_at` stays.
        wait_until(&format!("{user}'s in-app delivery is sent"), || async {
            stack.delivery(&id, "in_app").await["sent_at"].is_string()
        })
        .await;
        let in_app = stack.delivery(&id, "in_app").await;
        assert!(in_app.get("step").is_none(), "sent at once: {in_app:#}");
        let email = stack.delivery(&id, "email").await;
        assert_eq!(email["step"]["step"], 3, "{email:#}");
        let unless = email["step"]["unless"].as_array().unwrap();
        assert!(
            unless.contains(&json!("read")) && unless.contains(&json!("clicked")),
            "{email:#}"
        );
        let due = step_due(&notification);
        assert!(
            timestamp(&email["not_before"]) >= due,
            "the email waits for its step, due at {due}: {email:#}\n{notification:#}"
        );
        match user {
            "ana" => assert_read_before_due(user, &ana_read, &email),
            "cy" => assert_read_before_due(user, &cy_read, &email),
            _ => {}
        }
        notifications.push((id, due));
    }
    let [(ana, _), (bob, bob_due), (cy, _)] = &notifications[..] else {
        unreachable!()
    };

    // Read, whichever way: cancelled when due, nothing sent.
    for (user, notification) in [("ana", ana), ("cy", cy)] {
        let email = stack
            .delivery_reaching(notification, "email", "cancelled")
            .await;
        assert_eq!(outcomes(&email), ["skipped"], "{user}: {email:#}");
        let answer = email["attempt_log"][0]["answer"].as_str().unwrap();
        assert!(
            answer.contains("step 3 cancelled") && answer.contains("in_app message was read"),
            "{user}: the skip names the read: {email:#}"
        );
        assert_eq!(email["attempts"], 0, "{user}: no provider call: {email:#}");
        assert_eq!(email["sent_at"], Value::Null, "{user}: {email:#}");
    }

    // Unread: the step's check passed, then the SMTP server's answer.
    let email = stack.delivery_reaching(bob, "email", "sent").await;
    assert_eq!(outcomes(&email), ["proceeded", "sent"], "{email:#}");
    assert!(
        timestamp(&email["sent_at"]) >= *bob_due,
        "sent no earlier than its step, due at {bob_due}: {email:#}"
    );
    let checked = email["attempt_log"][0]["answer"].as_str().unwrap();
    assert!(checked.contains("step 3"), "{email:#}");
    wait_until("bob's mail is on the SMTP server", || async {
        !mails(&mail_dir).is_empty()
    })
    .await;
    tokio::time::sleep(CHANCE_TO_MISBEHAVE).await;

    // The server got bob's mail, once, and never heard of ana or cy.
    let mails = mails(&mail_dir);
    assert_eq!(mails.len(), 1, "{mails:#?}");
    assert!(
        mails[0]
            .lines()
            .any(|line| line.starts_with("To:") && line.contains(&email_of("bob"))),
        "{}",
        mails[0]
    );
    assert!(
        mails[0].contains("Subject: Payment failed for INV-bob"),
        "{}",
        mails[0]
    );
    let recipients = recipients(&mail_dir);
    assert_eq!(recipients, [email_of("bob")], "RCPT addresses");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_email_step_goes_out_only_while_the_in_app_item_is_unread_on_sqlite() {
    an_email_step_goes_out_only_while_the_in_app_item_is_unread(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_email_step_goes_out_only_while_the_in_app_item_is_unread_on_postgres() {
    let url = nudge_e2e::postgres::fresh_database().await;
    an_email_step_goes_out_only_while_the_in_app_item_is_unread(Some(&url)).await;
}

/// A control plane whose engine file has steps it cannot use does not
/// start: it exits 64 (EX_USAGE, like any bad setting), its message names
/// the key to fix (once), and it has not created or migrated a database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_steps_refuse_to_start_naming_the_key() {
    let good = engine(free_port());
    let cases = [
        (
            good.replace(&format!("wait = \"{WAIT_SECONDS}s\""), "wait = \"soon\""),
            "types.payment_failed.steps[1].wait",
        ),
        (
            good.replace(
                &format!("wait = \"{WAIT_SECONDS}s\""),
                "wait_until = \"25:00\"",
            ),
            "types.payment_failed.steps[1].wait_until",
        ),
        (
            good.replace(
                "[types.payment_failed]\n",
                "[types.payment_failed]\nchannels = [\"in_app\"]\n",
            ),
            "types.payment_failed.channels",
        ),
    ];
    let dir = TempDir::new().unwrap();
    let data = dir.path().join("data").display().to_string();
    let path = dir.path().join("nudge.toml");
    for (toml, key) in cases {
        assert_ne!(toml, good, "the case changes the file");
        std::fs::write(&path, &toml).unwrap();
        let env = [
            ("NUDGE_CP_GRPC_LISTEN", "127.0.0.1:0"),
            ("NUDGE_CP_HTTP_LISTEN", "127.0.0.1:0"),
            ("NUDGE_CP_ADMIN_LISTEN", "127.0.0.1:0"),
            ("NUDGE_CP_DATA_DIR", data.as_str()),
            ("NUDGE_CP_ADMIN_TOKEN", "token"),
            ("NUDGE_CP_CONFIG", path.to_str().unwrap()),
        ];
        let (status, output) = run_to_exit(&binary("nudge-control-plane"), &env).await;
        assert_eq!(status.code(), Some(64), "{key}: {status}\n{output}\n{toml}");
        assert_eq!(
            output.matches(key).count(),
            1,
            "the message names {key}, once:\n{output}\n{toml}"
        );
        assert!(
            !dir.path().join("data").join("nudge.sqlite3").exists(),
            "the engine file is checked before a database is created:\n{output}"
        );
    }
}
