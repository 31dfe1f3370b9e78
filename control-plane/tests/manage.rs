//! End-to-end tests of `nudge.v1.Management`: the real control plane
//! (`nudge_control_plane::run`) on 127.0.0.1:0 with a real engine config
//! file, driven by the generated tonic clients over HTTP/2. Waits poll the
//! API until a deadline; nothing asserts on timing. The tests run on
//! SQLite; `topics_and_broadcasts_on_each_engine`, whose tables page and
//! fan out in SQL, runs on PostgreSQL too (`NUDGE_TEST_DATABASE_URL`,
//! which `scripts/test` starts).

#[macro_use]
mod support;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nudge_control_plane::{Config, Listeners};
use nudge_proto::v1 as pb;
use nudge_proto::v1::envelope::Body;
use nudge_proto::v1::ingest_client::IngestClient;
use nudge_proto::v1::management_client::ManagementClient;
use support::Backend;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Code, Request};

/// A real browser subscription's keys (base64url, as `toJSON()` gives them).
const P256DH: &str =
    "BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u-Ts1XbjhazAkj7I99e8QcYP7DkM";
const AUTH: &str = "tBHItJI5svbpez7KI4CCXg";
const TOKEN: &str = "manage-test-token";
const USER: &str = "u1";

/// The file every test starts from: one type and one rule the API cannot
/// change.
const FILE: &str = r#"
[types.file_type]
channels = ["in_app"]

[[rules]]
name = "file-rule"
on = "Logged In"
notify = "file_type"
"#;

struct Running {
    grpc: SocketAddr,
    /// The HTTP API, for what gRPC does not offer (erasing a user).
    http: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), nudge_control_plane::Error>>,
}

impl Running {
    /// `database`: a PostgreSQL URL; `None` is SQLite in `data`.
    async fn start(
        data: &Path,
        token: Option<&str>,
        config: &Path,
        database: Option<&str>,
    ) -> Running {
        let mut args = vec![
            "nudge-control-plane".to_owned(),
            format!("--data-dir={}", data.display()),
            "--grpc-listen=127.0.0.1:0".to_owned(),
            "--http-listen=127.0.0.1:0".to_owned(),
            "--admin-listen=127.0.0.1:0".to_owned(),
            format!("--config={}", config.display()),
        ];
        if let Some(token) = token {
            args.push(format!("--admin-token={token}"));
        }
        if let Some(url) = database {
            args.push(format!("--database-url={url}"));
        }
        let config = <Config as clap::Parser>::try_parse_from(args).unwrap();
        let listeners = Listeners::bind(&config).await.unwrap();
        let grpc = listeners.grpc.local_addr().unwrap();
        let http = listeners.http.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(nudge_control_plane::run(
            config,
            listeners,
            shutdown.clone(),
        ));
        Running {
            grpc,
            http,
            shutdown,
            task,
        }
    }

    async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.grpc))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    async fn manage(&self) -> ManagementClient<Channel> {
        ManagementClient::new(self.channel().await)
    }

    async fn ingest(&self) -> IngestClient<Channel> {
        IngestClient::new(self.channel().await)
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
    }
}

/// A control plane with [`FILE`] plus `extra` as its config file.
struct Fixture {
    data: tempfile::TempDir,
    config: PathBuf,
    /// A fresh PostgreSQL database's URL; `None`: SQLite in `data`.
    database: Option<String>,
    _config_dir: tempfile::TempDir,
}

impl Fixture {
    fn new(extra: &str) -> Fixture {
        let config_dir = tempfile::tempdir().unwrap();
        let config = config_dir.path().join("nudge.toml");
        std::fs::write(&config, format!("{FILE}\n{extra}")).unwrap();
        Fixture {
            data: tempfile::tempdir().unwrap(),
            config,
            database: None,
            _config_dir: config_dir,
        }
    }

    /// [`Fixture::new`] on `backend`'s storage engine.
    async fn on(backend: Backend, extra: &str) -> Fixture {
        let mut fixture = Fixture::new(extra);
        if backend == Backend::Postgres {
            fixture.database = Some(nudge_e2e::postgres::fresh_database().await);
        }
        fixture
    }

    async fn start(&self) -> Running {
        Running::start(
            self.data.path(),
            Some(TOKEN),
            &self.config,
            self.database.as_deref(),
        )
        .await
    }
}

/// `message` with the admin token in its metadata.
fn authed<T>(message: T) -> Request<T> {
    with_token(message, &format!("Bearer {TOKEN}"))
}

fn with_token<T>(message: T, value: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", value.parse().unwrap());
    request
}

/// Polls `check` until it returns `Some`, for at most 30 s.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn template(title: &str, text: &str) -> pb::Template {
    pb::Template {
        title: title.to_owned(),
        text: text.to_owned(),
        ..Default::default()
    }
}

/// An in-app type whose in-app template uses the event's properties.
fn welcome_type() -> pb::NotificationType {
    pb::NotificationType {
        name: "welcome".to_owned(),
        channels: vec!["in_app".to_owned()],
        frequency: pb::Frequency::Instant.into(),
        category: "onboarding".to_owned(),
        templates: Some(pb::TypeTemplates {
            channels: [(
                "in_app".to_owned(),
                template(
                    "Welcome to {{ data.plan }}",
                    "Hi {{ user.name | default('there') }}",
                ),
            )]
            .into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn welcome_rule() -> pb::Rule {
    pb::Rule {
        name: "welcome-on-signup".to_owned(),
        on: "Signed Up".to_owned(),
        notify: "welcome".to_owned(),
        when: vec![pb::Condition {
            property: "plan".to_owned(),
            op: pb::ConditionOp::Exists.into(),
            value_json: String::new(),
        }],
        // What an unspecified priority is read back as.
        priority: pb::Priority::Normal.into(),
        ..Default::default()
    }
}

fn envelope(id: &str, body: Body) -> pb::Envelope {
    pb::Envelope {
        id: id.to_owned(),
        user_id: USER.to_owned(),
        body: Some(body),
        ..Default::default()
    }
}

async fn push(client: &mut IngestClient<Channel>, envelopes: Vec<pb::Envelope>) {
    let response = client
        .push(pb::PushRequest {
            agent_id: "manage-test".to_owned(),
            batch_id: "b1".to_owned(),
            sent_at: None,
            envelopes,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(response.rejected.is_empty(), "{response:?}");
}

async fn notifications(client: &mut ManagementClient<Channel>) -> Vec<pb::Notification> {
    client
        .list_user_notifications(authed(pb::ListUserNotificationsRequest {
            user_id: USER.to_owned(),
            limit: 0,
        }))
        .await
        .unwrap()
        .into_inner()
        .notifications
}

async fn deliveries(client: &mut ManagementClient<Channel>, id: &str) -> Vec<pb::Delivery> {
    client
        .get_notification(authed(pb::GetNotificationRequest { id: id.to_owned() }))
        .await
        .unwrap()
        .into_inner()
        .deliveries
}

async fn type_names(client: &mut ManagementClient<Channel>) -> Vec<(String, i32)> {
    let types = client
        .list_types(authed(pb::ListTypesRequest {}))
        .await
        .unwrap()
        .into_inner()
        .types;
    types
        .into_iter()
        .map(|entry| (entry.r#type.unwrap().name, entry.source))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_needs_the_admin_token_and_is_disabled_without_one() {
    let fixture = Fixture::new("");
    let server = fixture.start().await;
    let mut client = server.manage().await;
    let missing = client
        .list_types(Request::new(pb::ListTypesRequest {}))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::Unauthenticated, "{missing:?}");
    let wrong = client
        .list_types(with_token(pb::ListTypesRequest {}, "Bearer guess"))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::Unauthenticated, "{wrong:?}");
    assert!(wrong.message().contains("wrong"), "{wrong:?}");
    client
        .list_types(authed(pb::ListTypesRequest {}))
        .await
        .unwrap();
    // Ingest stays open to agents.
    let mut ingest = server.ingest().await;
    push(
        &mut ingest,
        vec![envelope(
            "e-open",
            Body::Track(pb::Track {
                event: "Clicked".to_owned(),
                properties_json: String::new(),
            }),
        )],
    )
    .await;
    assert_eq!(health(&server, "nudge.v1.Management").await, 1, "SERVING");
    server.stop().await;

    // No token configured: every call is refused as unavailable, and health
    // says so.
    let disabled = Running::start(fixture.data.path(), None, &fixture.config, None).await;
    let refused = disabled
        .manage()
        .await
        .list_types(authed(pb::ListTypesRequest {}))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(
        refused.message().contains("NUDGE_CP_ADMIN_TOKEN"),
        "{refused:?}"
    );
    assert_eq!(
        health(&disabled, "nudge.v1.Management").await,
        2,
        "NOT_SERVING"
    );
    disabled.stop().await;
}

/// The standard health service's status for `service` (1 SERVING, 2
/// NOT_SERVING).
async fn health(server: &Running, service: &str) -> i32 {
    let mut client = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    client
        .check(tonic_health::pb::HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_type_and_a_rule_put_through_the_api_turn_a_tracked_event_into_an_in_app_notification() {
    let fixture = Fixture::new("");
    let server = fixture.start().await;
    let mut client = server.manage().await;

    let put = client
        .put_type(authed(pb::PutTypeRequest {
            r#type: Some(welcome_type()),
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(put.created);
    let entry = put.r#type.unwrap();
    assert_eq!(entry.source, i32::from(pb::Source::Api));
    assert_eq!(entry.r#type.unwrap(), welcome_type());
    // A workflow type reads back with its steps as put.
    let reminder = pb::NotificationType {
        name: "reminder".to_owned(),
        channels: Vec::new(),
        steps: vec![
            pb::WorkflowStep {
                wait: "30m".to_owned(),
                ..Default::default()
            },
            pb::WorkflowStep {
                wait_until: "09:00".to_owned(),
                ..Default::default()
            },
            pb::WorkflowStep {
                channel: "in_app".to_owned(),
                unless: vec!["opened".to_owned()],
                min_priority: pb::Priority::High.into(),
                ..Default::default()
            },
        ],
        ..welcome_type()
    };
    let put = client
        .put_type(authed(pb::PutTypeRequest {
            r#type: Some(reminder.clone()),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(put.r#type.unwrap().r#type.unwrap(), reminder);
    let rule = client
        .put_rule(authed(pb::PutRuleRequest {
            rule: Some(welcome_rule()),
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(rule.created);
    let rules = client
        .list_rules(authed(pb::ListRulesRequest {}))
        .await
        .unwrap()
        .into_inner()
        .rules;
    let names: Vec<_> = rules
        .iter()
        .map(|entry| entry.rule.as_ref().unwrap().name.as_str())
        .collect();
    assert_eq!(names, ["file-rule", "welcome-on-signup"]);

    let mut ingest = server.ingest().await;
    push(
        &mut ingest,
        vec![
            envelope(
                "identify-1",
                Body::Identify(pb::Identify {
                    traits_json: r#"{"name":"Ada"}"#.to_owned(),
                }),
            ),
            envelope(
                "signup-1",
                Body::Track(pb::Track {
                    event: "Signed Up".to_owned(),
                    properties_json: r#"{"plan":"pro"}"#.to_owned(),
                }),
            ),
        ],
    )
    .await;
    let notification = eventually("the rule created a notification", || {
        let mut client = client.clone();
        async move { notifications(&mut client).await.into_iter().next() }
    })
    .await;
    assert_eq!(notification.r#type, "welcome");
    assert_eq!(
        notification.source_event_id,
        "rule:welcome-on-signup:signup-1"
    );
    assert_eq!(notification.data_json, r#"{"plan":"pro"}"#);
    let delivery = eventually("the in-app delivery was sent", || {
        let (mut client, id) = (client.clone(), notification.id.clone());
        async move {
            deliveries(&mut client, &id)
                .await
                .into_iter()
                .find(|d| d.status == i32::from(pb::DeliveryStatus::Sent))
        }
    })
    .await;
    assert_eq!(delivery.channel, "in_app");
    assert_eq!(delivery.subject, "Welcome to pro");
    assert_eq!(delivery.text, "Hi Ada");
    assert_eq!(delivery.recipient, USER);
    assert_eq!(delivery.attempts, 1);
    assert_eq!(delivery.attempt_log.len(), 1);
    assert!(delivery.sent_at.is_some());

    // Notify through the API: the agent's path, so the same idempotency
    // key is one event and one notification.
    let notify = pb::NotifyRequest {
        user_id: USER.to_owned(),
        notify: Some(pb::Notify {
            r#type: "welcome".to_owned(),
            data_json: r#"{"plan":"team"}"#.to_owned(),
            idempotency_key: "welcome-team".to_owned(),
            cost: "0.05".to_owned(),
            ..Default::default()
        }),
    };
    let first = client
        .notify(authed(notify.clone()))
        .await
        .unwrap()
        .into_inner();
    assert!(!first.duplicate);
    let again = client.notify(authed(notify)).await.unwrap().into_inner();
    assert_eq!(
        (again.event_id.as_str(), again.duplicate),
        (first.event_id.as_str(), true)
    );
    let notified = eventually("the notify became a notification", || {
        let (mut client, event) = (client.clone(), first.event_id.clone());
        async move {
            notifications(&mut client)
                .await
                .into_iter()
                .find(|n| n.source_event_id == event)
        }
    })
    .await;
    assert_eq!(notified.idempotency_key, "welcome-team");
    assert_eq!(notified.cost, "0.05");
    assert_eq!(notifications(&mut client).await.len(), 2);

    // A bad notify is refused before anything is stored.
    let bad = client
        .notify(authed(pb::NotifyRequest {
            user_id: USER.to_owned(),
            notify: Some(pb::Notify {
                r#type: "welcome".to_owned(),
                data_json: "[1]".to_owned(),
                ..Default::default()
            }),
        }))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument, "{bad:?}");
    assert!(bad.message().contains("notify.data_json"), "{bad:?}");
    let negative = client
        .notify(authed(pb::NotifyRequest {
            user_id: USER.to_owned(),
            notify: Some(pb::Notify {
                r#type: "welcome".to_owned(),
                cost: "-0.05".to_owned(),
                ..Default::default()
            }),
        }))
        .await
        .unwrap_err();
    assert_eq!(negative.code(), Code::InvalidArgument, "{negative:?}");
    assert!(
        negative
            .message()
            .starts_with("notify.cost is \"-0.05\"; it must be a non-negative decimal"),
        "{negative:?}"
    );
    // Beyond the money bound (10⁹ units): refused, not summed.
    let huge = client
        .notify(authed(pb::NotifyRequest {
            user_id: USER.to_owned(),
            notify: Some(pb::Notify {
                r#type: "welcome".to_owned(),
                cost: "999999999999".to_owned(),
                ..Default::default()
            }),
        }))
        .await
        .unwrap_err();
    assert_eq!(huge.code(), Code::InvalidArgument, "{huge:?}");
    assert!(huge.message().contains("at most 1000000000"), "{huge:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_definitions_are_refused_and_change_nothing_and_the_file_is_read_only() {
    let fixture = Fixture::new("");
    let server = fixture.start().await;
    let mut client = server.manage().await;
    let before = type_names(&mut client).await;
    assert_eq!(
        before,
        [("file_type".to_owned(), i32::from(pb::Source::ConfigFile))]
    );

    let mut broken = welcome_type();
    broken.templates = Some(pb::TypeTemplates {
        fallback: Some(template("{{ oops", "")),
        ..Default::default()
    });
    let refused = client
        .put_type(authed(pb::PutTypeRequest {
            r#type: Some(broken),
        }))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(
        refused.message().starts_with("type.templates:"),
        "{refused:?}"
    );
    assert!(
        refused.message().contains("template welcome/*/title"),
        "{refused:?}"
    );
    let mut email = welcome_type();
    email.channels = vec!["email".to_owned()];
    let refused = client
        .put_type(authed(pb::PutTypeRequest {
            r#type: Some(email),
        }))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(
        refused
            .message()
            .contains("[channels.email] is not configured"),
        "{refused:?}"
    );
    // A workflow's steps are checked like the file's, named by index.
    let mut steps = welcome_type();
    steps.channels.clear();
    steps.steps = vec![
        pb::WorkflowStep {
            channel: "in_app".to_owned(),
            ..Default::default()
        },
        pb::WorkflowStep {
            wait: "soon".to_owned(),
            ..Default::default()
        },
    ];
    let refused = client
        .put_type(authed(pb::PutTypeRequest {
            r#type: Some(steps.clone()),
        }))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(
        refused.message().starts_with("type.steps[1].wait:"),
        "{refused:?}"
    );
    steps.channels = vec!["in_app".to_owned()];
    steps.steps[1].wait = "1h".to_owned();
    let refused = client
        .put_type(authed(pb::PutTypeRequest {
            r#type: Some(steps),
        }))
        .await
        .unwrap_err();
    assert!(
        refused.message().starts_with("type.channels:"),
        "{refused:?}"
    );
    let mut unless = welcome_rule();
    unless.unless = "Bought".to_owned();
    let refused = client
        .put_rule(authed(pb::PutRuleRequest { rule: Some(unless) }))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().contains("delay"), "{refused:?}");
    assert_eq!(type_names(&mut client).await, before, "nothing changed");
    let missing = client
        .get_type(authed(pb::GetTypeRequest {
            name: "welcome".to_owned(),
        }))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);

    // The file's type and rule are read-only.
    let mut mine = welcome_type();
    mine.name = "file_type".to_owned();
    let refused = client
        .put_type(authed(pb::PutTypeRequest { r#type: Some(mine) }))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused.message().contains("defined in the config file"),
        "{refused:?}"
    );
    let refused = client
        .delete_type(authed(pb::DeleteTypeRequest {
            name: "file_type".to_owned(),
        }))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    let mut rule = welcome_rule();
    rule.name = "file-rule".to_owned();
    let refused = client
        .put_rule(authed(pb::PutRuleRequest { rule: Some(rule) }))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    let file_type = client
        .get_type(authed(pb::GetTypeRequest {
            name: "file_type".to_owned(),
        }))
        .await
        .unwrap()
        .into_inner()
        .r#type
        .unwrap();
    assert_eq!(file_type.source, i32::from(pb::Source::ConfigFile));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_definitions_survive_a_restart_and_can_be_deleted() {
    let fixture = Fixture::new("");
    let server = fixture.start().await;
    let mut client = server.manage().await;
    client
        .put_type(authed(pb::PutTypeRequest {
            r#type: Some(welcome_type()),
        }))
        .await
        .unwrap();
    client
        .put_rule(authed(pb::PutRuleRequest {
            rule: Some(welcome_rule()),
        }))
        .await
        .unwrap();
    server.stop().await;

    let server = fixture.start().await;
    let mut client = server.manage().await;
    let entry = client
        .get_type(authed(pb::GetTypeRequest {
            name: "welcome".to_owned(),
        }))
        .await
        .unwrap()
        .into_inner()
        .r#type
        .unwrap();
    assert_eq!(entry.source, i32::from(pb::Source::Api));
    assert_eq!(entry.problem, "");
    assert_eq!(entry.r#type.unwrap(), welcome_type());
    let rule = client
        .get_rule(authed(pb::GetRuleRequest {
            name: "welcome-on-signup".to_owned(),
        }))
        .await
        .unwrap()
        .into_inner()
        .rule
        .unwrap();
    assert_eq!(rule.rule.unwrap(), welcome_rule());

    client
        .delete_rule(authed(pb::DeleteRuleRequest {
            name: "welcome-on-signup".to_owned(),
        }))
        .await
        .unwrap();
    client
        .delete_type(authed(pb::DeleteTypeRequest {
            name: "welcome".to_owned(),
        }))
        .await
        .unwrap();
    let again = client
        .delete_type(authed(pb::DeleteTypeRequest {
            name: "welcome".to_owned(),
        }))
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::NotFound);
    assert_eq!(type_names(&mut client).await.len(), 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_register_list_deactivate_and_delete() {
    let fixture = Fixture::new("");
    let server = fixture.start().await;
    let mut client = server.manage().await;
    let register = pb::RegisterDeviceRequest {
        user_id: USER.to_owned(),
        platform: pb::Platform::Apns.into(),
        token: "a".repeat(64),
        subscription: None,
        label: "Ada's iPhone".to_owned(),
    };
    let first = client
        .register_device(authed(register.clone()))
        .await
        .unwrap()
        .into_inner();
    assert!(first.created);
    let device = first.device.unwrap();
    assert!(device.active);
    let again = client
        .register_device(authed(register))
        .await
        .unwrap()
        .into_inner();
    assert!(!again.created, "the same token is the same device");
    assert_eq!(again.device.unwrap().id, device.id);

    let web_push = |endpoint: &str, p256dh: &str| pb::RegisterDeviceRequest {
        user_id: USER.to_owned(),
        platform: pb::Platform::WebPush.into(),
        subscription: Some(pb::WebPushSubscription {
            endpoint: endpoint.to_owned(),
            p256dh: p256dh.to_owned(),
            auth: AUTH.to_owned(),
        }),
        ..Default::default()
    };
    let push = client
        .register_device(authed(web_push("https://push.example.com/sub/1", P256DH)))
        .await
        .unwrap()
        .into_inner();
    assert!(push.created);
    // Keys that could never encrypt a message are refused at registration.
    let unusable = client
        .register_device(authed(web_push("https://push.example.com/sub/2", "key")))
        .await
        .unwrap_err();
    assert_eq!(unusable.code(), Code::InvalidArgument, "{unusable:?}");
    assert!(unusable.message().contains("p256dh"), "{unusable:?}");
    // So is an endpoint the send could not parse (here, one with user info).
    let unreachable = client
        .register_device(authed(web_push(
            "https://me@push.example.com/sub/3",
            P256DH,
        )))
        .await
        .unwrap_err();
    assert_eq!(unreachable.code(), Code::InvalidArgument, "{unreachable:?}");
    assert!(
        unreachable.message().contains("endpoint's host"),
        "{unreachable:?}"
    );
    let invalid = client
        .register_device(authed(pb::RegisterDeviceRequest {
            user_id: USER.to_owned(),
            platform: pb::Platform::Fcm.into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(invalid.code(), Code::InvalidArgument, "{invalid:?}");

    let list = |mut client: ManagementClient<Channel>| async move {
        client
            .list_devices(authed(pb::ListDevicesRequest {
                user_id: USER.to_owned(),
            }))
            .await
            .unwrap()
            .into_inner()
            .devices
    };
    assert_eq!(list(client.clone()).await.len(), 2);

    let off = client
        .set_device_active(authed(pb::SetDeviceActiveRequest {
            user_id: USER.to_owned(),
            device_id: device.id.clone(),
            active: false,
            reason: "lost phone".to_owned(),
        }))
        .await
        .unwrap()
        .into_inner()
        .device
        .unwrap();
    assert!(!off.active);
    assert_eq!(off.deactivated_reason, "lost phone");
    assert!(off.deactivated_at.is_some());

    client
        .delete_device(authed(pb::DeleteDeviceRequest {
            user_id: USER.to_owned(),
            device_id: device.id.clone(),
        }))
        .await
        .unwrap();
    let devices = list(client.clone()).await;
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0].platform, i32::from(pb::Platform::WebPush));
    let gone = client
        .delete_device(authed(pb::DeleteDeviceRequest {
            user_id: USER.to_owned(),
            device_id: device.id,
        }))
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preferences_put_get_reset_and_a_critical_opt_out_is_refused() {
    let fixture = Fixture::new("");
    let server = fixture.start().await;
    let mut client = server.manage().await;
    let mut security = welcome_type();
    security.name = "security".to_owned();
    security.critical = true;
    client
        .put_type(authed(pb::PutTypeRequest {
            r#type: Some(security),
        }))
        .await
        .unwrap();

    let get = |mut client: ManagementClient<Channel>| async move {
        client
            .get_preferences(authed(pb::GetPreferencesRequest {
                user_id: USER.to_owned(),
            }))
            .await
            .unwrap()
            .into_inner()
            .preferences
            .unwrap()
    };
    assert_eq!(get(client.clone()).await, pb::Preferences::default());

    let preferences = pb::Preferences {
        channels: [("email".to_owned(), false)].into(),
        types: [(
            "file_type".to_owned(),
            pb::TypePreferences {
                channels: [("in_app".to_owned(), false)].into(),
                frequency: pb::Frequency::Daily.into(),
            },
        )]
        .into(),
        quiet_hours: Some(pb::QuietHours {
            start: "22:00".to_owned(),
            end: "07:00".to_owned(),
            timezone: "Europe/Berlin".to_owned(),
        }),
        timezone: "Europe/Berlin".to_owned(),
    };
    let stored = client
        .put_preferences(authed(pb::PutPreferencesRequest {
            user_id: USER.to_owned(),
            preferences: Some(preferences.clone()),
        }))
        .await
        .unwrap()
        .into_inner()
        .preferences
        .unwrap();
    assert_eq!(stored, preferences);
    assert_eq!(get(client.clone()).await, preferences);

    let mut opt_out = preferences.clone();
    opt_out.types.insert(
        "security".to_owned(),
        pb::TypePreferences {
            channels: [("in_app".to_owned(), false)].into(),
            frequency: 0,
        },
    );
    let refused = client
        .put_preferences(authed(pb::PutPreferencesRequest {
            user_id: USER.to_owned(),
            preferences: Some(opt_out),
        }))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().contains("critical"), "{refused:?}");
    assert_eq!(get(client.clone()).await, preferences, "unchanged");

    let reset = client
        .reset_preferences(authed(pb::ResetPreferencesRequest {
            user_id: USER.to_owned(),
        }))
        .await
        .unwrap()
        .into_inner()
        .preferences
        .unwrap();
    let kept_zone = pb::Preferences {
        timezone: "Europe/Berlin".to_owned(),
        ..Default::default()
    };
    assert_eq!(reset, kept_zone, "the time zone is a fact, not a choice");
    assert_eq!(get(client.clone()).await, kept_zone);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_email_past_max_attempts_is_dead_lettered_listed_and_retried() {
    // Nothing listens on the SMTP port: every attempt fails, retriably.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let smtp_port = closed.local_addr().unwrap().port();
    drop(closed);
    let fixture = Fixture::new(&format!(
        r#"
[retry]
initial = "100ms"
max = "1s"
max_attempts = 1

[channels.email]
host = "127.0.0.1"
port = {smtp_port}
tls = "none"
from = "Nudge <nudge@example.com>"
timeout = "2s"
"#
    ));
    let server = fixture.start().await;
    let mut client = server.manage().await;
    client
        .put_type(authed(pb::PutTypeRequest {
            r#type: Some(pb::NotificationType {
                name: "invoice".to_owned(),
                channels: vec!["email".to_owned()],
                templates: Some(pb::TypeTemplates {
                    fallback: Some(pb::Template {
                        subject: "Invoice {{ data.number }}".to_owned(),
                        text: "Your invoice".to_owned(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        }))
        .await
        .unwrap();
    let mut ingest = server.ingest().await;
    push(
        &mut ingest,
        vec![envelope(
            "identify-1",
            Body::Identify(pb::Identify {
                traits_json: r#"{"email":"ada@example.com"}"#.to_owned(),
            }),
        )],
    )
    .await;
    let notified = client
        .notify(authed(pb::NotifyRequest {
            user_id: USER.to_owned(),
            notify: Some(pb::Notify {
                r#type: "invoice".to_owned(),
                data_json: r#"{"number":7}"#.to_owned(),
                ..Default::default()
            }),
        }))
        .await
        .unwrap()
        .into_inner();

    let dead = eventually("the email was dead-lettered", || {
        let mut client = client.clone();
        async move {
            client
                .list_dead_letters(authed(pb::ListDeadLettersRequest {
                    channel: "email".to_owned(),
                    ..Default::default()
                }))
                .await
                .unwrap()
                .into_inner()
                .deliveries
                .into_iter()
                .next()
        }
    })
    .await;
    assert_eq!(dead.status, i32::from(pb::DeliveryStatus::DeadLettered));
    assert_eq!(dead.recipient, "ada@example.com");
    assert_eq!(dead.subject, "Invoice 7");
    assert_eq!(dead.attempts, 1);
    assert!(!dead.last_answer.is_empty(), "{dead:?}");
    let notification = notifications(&mut client).await.remove(0);
    assert_eq!(notification.source_event_id, notified.event_id);
    assert_eq!(notification.id, dead.notification_id);

    let retried = client
        .retry_dead_letter(authed(pb::RetryDeadLetterRequest {
            delivery_id: dead.id.clone(),
        }))
        .await
        .unwrap()
        .into_inner()
        .delivery
        .unwrap();
    assert_eq!(retried.status, i32::from(pb::DeliveryStatus::Queued));
    assert_eq!(retried.attempts, 0);
    assert_eq!(retried.attempt_log.len(), 1, "the history is kept");
    // SMTP is still down: it fails once more and is dead again.
    let again = eventually("the retried email was dead-lettered again", || {
        let (mut client, id) = (client.clone(), notification.id.clone());
        async move {
            deliveries(&mut client, &id).await.into_iter().find(|d| {
                d.status == i32::from(pb::DeliveryStatus::DeadLettered) && d.attempt_log.len() == 2
            })
        }
    })
    .await;
    assert_eq!(again.id, dead.id);

    let unknown = client
        .retry_dead_letter(authed(pb::RetryDeadLetterRequest {
            delivery_id: "0190c0de-0000-7000-8000-000000000000".to_owned(),
        }))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
    let malformed = client
        .retry_dead_letter(authed(pb::RetryDeadLetterRequest {
            delivery_id: "nope".to_owned(),
        }))
        .await
        .unwrap_err();
    assert_eq!(malformed.code(), Code::InvalidArgument, "{malformed:?}");
    assert!(malformed.message().starts_with("delivery_id:"));
    server.stop().await;
}

/// Issue 16, item 2, through the management API: a type put with a
/// throttle reads back with it; a bad throttle is refused naming its
/// field and changes nothing; over the limit a notify is created but not
/// delivered, and `GetNotification` says it was dropped by the throttle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttle_put_through_the_api_drops_what_is_over_its_limit() {
    let fixture = Fixture::new("");
    let server = fixture.start().await;
    let mut client = server.manage().await;
    let throttled = pb::NotificationType {
        name: "nudge_like".to_owned(),
        channels: vec!["in_app".to_owned()],
        category: "social".to_owned(),
        throttle: Some(pb::Throttle {
            limit: 2,
            window: "1h".to_owned(),
            per: pb::ThrottleScope::Category.into(),
            over: pb::ThrottleOver::Drop.into(),
        }),
        ..Default::default()
    };
    for (bad, field) in [
        (
            pb::Throttle {
                limit: 0,
                ..throttled.throttle.clone().unwrap()
            },
            "type.throttle.limit",
        ),
        (
            pb::Throttle {
                window: "forever".to_owned(),
                ..throttled.throttle.clone().unwrap()
            },
            "type.throttle.window",
        ),
        (
            pb::Throttle {
                over: 9,
                ..throttled.throttle.clone().unwrap()
            },
            "type.throttle.over",
        ),
    ] {
        let status = client
            .put_type(authed(pb::PutTypeRequest {
                r#type: Some(pb::NotificationType {
                    throttle: Some(bad),
                    ..throttled.clone()
                }),
            }))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(field), "{field}: {status:?}");
    }
    assert!(
        !type_names(&mut client)
            .await
            .iter()
            .any(|(name, _)| name == "nudge_like")
    );

    client
        .put_type(authed(pb::PutTypeRequest {
            r#type: Some(throttled.clone()),
        }))
        .await
        .unwrap();
    let read = client
        .get_type(authed(pb::GetTypeRequest {
            name: "nudge_like".to_owned(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        read.r#type.unwrap().r#type.unwrap().throttle,
        throttled.throttle
    );

    let mut ids = Vec::new();
    for n in 0..3 {
        let answer = client
            .notify(authed(pb::NotifyRequest {
                user_id: USER.to_owned(),
                notify: Some(pb::Notify {
                    r#type: "nudge_like".to_owned(),
                    title: format!("Like {n}"),
                    idempotency_key: format!("like-{n}"),
                    ..Default::default()
                }),
            }))
            .await
            .unwrap()
            .into_inner();
        ids.push(answer.event_id);
    }
    let created = eventually("three notifications", || {
        let mut client = client.clone();
        async move {
            let all = notifications(&mut client).await;
            (all.len() == 3).then_some(all)
        }
    })
    .await;
    let mut outcomes = Vec::new();
    for notification in &created {
        let detail = client
            .get_notification(authed(pb::GetNotificationRequest {
                id: notification.id.clone(),
            }))
            .await
            .unwrap()
            .into_inner();
        let decided: Vec<(String, String)> = detail
            .throttle
            .iter()
            .map(|d| (d.scope.clone(), d.outcome.clone()))
            .collect();
        outcomes.push((notification.title.clone(), decided, detail.deliveries.len()));
    }
    outcomes.sort();
    let decision = |outcome: &str| vec![("category:social".to_owned(), outcome.to_owned())];
    assert_eq!(
        outcomes,
        [
            ("Like 0".to_owned(), decision("sent"), 1),
            ("Like 1".to_owned(), decision("sent"), 1),
            ("Like 2".to_owned(), decision("dropped"), 0),
        ]
    );
    server.stop().await;
}

/// Topics and broadcasts through the management API: subscriptions round
/// trip; a broadcast to a topic fans out to its subscribers (the engine
/// runs in this server) and reports its progress; the same id again is
/// the first broadcast, other content under it ALREADY_EXISTS; bad input
/// is INVALID_ARGUMENT naming the field; a finished broadcast cannot be
/// cancelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_and_a_broadcast_through_the_api() {
    let fixture = Fixture::new("");
    let server = fixture.start().await;
    let mut client = server.manage().await;
    for user in [USER, "u2", "u3"] {
        let created = client
            .subscribe_to_topic(authed(pb::SubscribeToTopicRequest {
                topic: "release:2".to_owned(),
                user_id: user.to_owned(),
            }))
            .await
            .unwrap()
            .into_inner()
            .created;
        assert!(created, "{user}");
    }
    let again = client
        .subscribe_to_topic(authed(pb::SubscribeToTopicRequest {
            topic: "release:2".to_owned(),
            user_id: USER.to_owned(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(!again.created);
    let removed = client
        .unsubscribe_from_topic(authed(pb::UnsubscribeFromTopicRequest {
            topic: "release:2".to_owned(),
            user_id: "u3".to_owned(),
        }))
        .await
        .unwrap()
        .into_inner()
        .removed;
    assert!(removed);
    let page = client
        .list_topic_subscribers(authed(pb::ListTopicSubscribersRequest {
            topic: "release:2".to_owned(),
            page_size: 1,
            page_token: String::new(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.total, 2);
    assert_eq!(page.subscribers.len(), 1);
    assert_eq!(page.subscribers[0].user_id, USER);
    assert_eq!(page.next_page_token, USER);
    let topics = client
        .list_user_topics(authed(pb::ListUserTopicsRequest {
            user_id: USER.to_owned(),
        }))
        .await
        .unwrap()
        .into_inner()
        .topics;
    assert_eq!(topics.len(), 1);
    assert_eq!(topics[0].topic, "release:2");

    let notify = pb::Notify {
        r#type: "file_type".to_owned(),
        title: "Release 2".to_owned(),
        ..Default::default()
    };
    let create = |id: &str, notify: pb::Notify| pb::CreateBroadcastRequest {
        id: id.to_owned(),
        notify: Some(notify),
        audience: Some(pb::create_broadcast_request::Audience::Topic(
            "release:2".to_owned(),
        )),
        send_at: None,
    };
    let created = client
        .create_broadcast(authed(create("r2", notify.clone())))
        .await
        .unwrap()
        .into_inner();
    assert!(created.created);
    let done = eventually("the broadcast is done", || {
        let mut client = client.clone();
        async move {
            let broadcast = client
                .get_broadcast(authed(pb::GetBroadcastRequest {
                    id: "r2".to_owned(),
                }))
                .await
                .unwrap()
                .into_inner()
                .broadcast
                .unwrap();
            (broadcast.state == pb::BroadcastState::Done as i32).then_some(broadcast)
        }
    })
    .await;
    assert_eq!((done.recipients, done.notifications), (2, 2));
    assert!(matches!(
        done.audience,
        Some(pb::broadcast::Audience::Topic(ref topic)) if topic == "release:2"
    ));
    let mine = notifications(&mut client).await;
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].title, "Release 2");
    assert_eq!(mine[0].source_event_id, "broadcast:r2:u1");

    // The same again: the first; other content: ALREADY_EXISTS.
    let again = client
        .create_broadcast(authed(create("r2", notify.clone())))
        .await
        .unwrap()
        .into_inner();
    assert!(!again.created);
    assert_eq!(
        again.broadcast.unwrap().state,
        pb::BroadcastState::Done as i32
    );
    let other = pb::Notify {
        title: "Other".to_owned(),
        ..notify.clone()
    };
    let status = client
        .create_broadcast(authed(create("r2", other)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
    // Done, it can be cancelled (recalling what is held), once.
    let recalled = client
        .cancel_broadcast(authed(pb::CancelBroadcastRequest {
            id: "r2".to_owned(),
        }))
        .await
        .unwrap()
        .into_inner()
        .broadcast
        .unwrap();
    assert_eq!(recalled.state, pb::BroadcastState::Cancelled as i32);
    assert_eq!(recalled.recipients, 2, "its progress stays");
    let status = client
        .cancel_broadcast(authed(pb::CancelBroadcastRequest {
            id: "r2".to_owned(),
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("cancelled"), "{status:?}");

    // Refusals name the field and store nothing.
    let segment = |traits: Vec<pb::Condition>, within: Option<i64>| {
        Some(pb::create_broadcast_request::Audience::Segment(
            pb::Segment {
                traits,
                active_within: within.map(|seconds| prost_types::Duration { seconds, nanos: 0 }),
            },
        ))
    };
    let far = prost_types::Timestamp {
        seconds: jiff::Timestamp::now().as_second() + 400 * 86_400,
        nanos: 0,
    };
    let bad_condition = pb::Condition {
        property: "seats".to_owned(),
        op: pb::ConditionOp::Gt.into(),
        value_json: "\"many\"".to_owned(),
    };
    for (request, field) in [
        (create("bad id", notify.clone()), "id"),
        (
            pb::CreateBroadcastRequest {
                audience: None,
                ..create("b1", notify.clone())
            },
            "audience",
        ),
        (
            pb::CreateBroadcastRequest {
                audience: Some(pb::create_broadcast_request::Audience::Topic(
                    "no topic".to_owned(),
                )),
                ..create("b1", notify.clone())
            },
            "audience.topic",
        ),
        (
            pb::CreateBroadcastRequest {
                audience: segment(Vec::new(), None),
                ..create("b1", notify.clone())
            },
            "audience.segment",
        ),
        (
            pb::CreateBroadcastRequest {
                audience: segment(vec![bad_condition], Some(3600)),
                ..create("b1", notify.clone())
            },
            "audience.segment.traits[0]",
        ),
        (
            pb::CreateBroadcastRequest {
                send_at: Some(far),
                ..create("b1", notify.clone())
            },
            "send_at",
        ),
        (
            create(
                "b1",
                pb::Notify {
                    idempotency_key: "k".to_owned(),
                    ..notify.clone()
                },
            ),
            "notify.idempotency_key",
        ),
        (
            create(
                "b1",
                pb::Notify {
                    channels: vec!["pigeon".to_owned()],
                    ..notify.clone()
                },
            ),
            "notify.channels",
        ),
    ] {
        let status = client.create_broadcast(authed(request)).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        assert!(status.message().starts_with(field), "{field}: {status:?}");
    }
    let status = client
        .get_broadcast(authed(pb::GetBroadcastRequest {
            id: "b1".to_owned(),
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let listed = client
        .list_broadcasts(authed(pb::ListBroadcastsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.broadcasts.len(), 1);
    assert!(listed.next_page_token.is_empty());
    server.stop().await;
}

on_both_engines!(topics_and_broadcasts_on_each_engine);

/// Erases `user` through the HTTP admin API (gRPC has no such call).
async fn erase(server: &Running, user: &str) {
    let response = reqwest::Client::new()
        .delete(format!("http://{}/v1/admin/users/{user}", server.http))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::OK, "erase {user}");
}

async fn notifications_of(
    client: &mut ManagementClient<Channel>,
    user: &str,
) -> Vec<pb::Notification> {
    client
        .list_user_notifications(authed(pb::ListUserNotificationsRequest {
            user_id: user.to_owned(),
            limit: 0,
        }))
        .await
        .unwrap()
        .into_inner()
        .notifications
}

async fn user_topics(client: &mut ManagementClient<Channel>, user: &str) -> Vec<String> {
    client
        .list_user_topics(authed(pb::ListUserTopicsRequest {
            user_id: user.to_owned(),
        }))
        .await
        .unwrap()
        .into_inner()
        .topics
        .into_iter()
        .map(|topic| topic.topic)
        .collect()
}

/// The refusal `result` must be: `code`, its message starting with
/// `start` (INVALID_ARGUMENT names the field first).
fn assert_refused<T: std::fmt::Debug>(result: Result<T, tonic::Status>, code: Code, start: &str) {
    let status = result.unwrap_err();
    assert_eq!(status.code(), code, "{start}: {status:?}");
    assert!(status.message().starts_with(start), "{start}: {status:?}");
}

/// Topics and broadcasts on each storage engine, past what
/// `topics_and_a_broadcast_through_the_api` covers: subscribers paged to
/// the last page; bad subscription calls refused naming the field; an
/// erased user loses their topics and cannot subscribe again; a scheduled
/// segment broadcast read back as it was sent, then cancelled, and a
/// second cancel FAILED_PRECONDITION; a topic broadcast fanned out to
/// every subscriber; broadcasts listed newest first, a page at a time.
async fn topics_and_broadcasts_on_each_engine(backend: Backend) {
    let fixture = Fixture::on(backend, "").await;
    let server = fixture.start().await;
    let mut client = server.manage().await;
    let subscription = |topic: &str, user: &str| pb::SubscribeToTopicRequest {
        topic: topic.to_owned(),
        user_id: user.to_owned(),
    };
    let unsubscription = |topic: &str, user: &str| pb::UnsubscribeFromTopicRequest {
        topic: topic.to_owned(),
        user_id: user.to_owned(),
    };
    for (topic, user) in [
        ("news", "carol"),
        ("news", "alice"),
        ("news", "bob"),
        ("news", "gone"),
        ("digest", "alice"),
    ] {
        let created = client
            .subscribe_to_topic(authed(subscription(topic, user)))
            .await
            .unwrap()
            .into_inner()
            .created;
        assert!(created, "{topic} {user}");
    }
    assert_eq!(user_topics(&mut client, "alice").await, ["digest", "news"]);

    // An erased user's subscriptions go, and they cannot subscribe again.
    erase(&server, "gone").await;
    assert!(user_topics(&mut client, "gone").await.is_empty());
    assert_refused(
        client
            .subscribe_to_topic(authed(subscription("news", "gone")))
            .await,
        Code::FailedPrecondition,
        "user \"gone\" is erased",
    );
    assert!(user_topics(&mut client, "gone").await.is_empty());

    // Not subscribed is not an error.
    let removed = client
        .unsubscribe_from_topic(authed(unsubscription("news", "dave")))
        .await
        .unwrap()
        .into_inner()
        .removed;
    assert!(!removed);

    // Every page to the last, in user id order.
    let mut pages: Vec<Vec<String>> = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_topic_subscribers(authed(pb::ListTopicSubscribersRequest {
                topic: "news".to_owned(),
                page_size: 2,
                page_token,
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(page.total, 3);
        assert!(page.subscribers.iter().all(|s| s.subscribed_at.is_some()));
        pages.push(page.subscribers.into_iter().map(|s| s.user_id).collect());
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(pages, [vec!["alice", "bob"], vec!["carol"]]);

    // Bad subscription calls name the field and change nothing.
    assert_refused(
        client
            .subscribe_to_topic(authed(subscription("no topic", "alice")))
            .await,
        Code::InvalidArgument,
        "topic",
    );
    assert_refused(
        client
            .subscribe_to_topic(authed(subscription("news", "")))
            .await,
        Code::InvalidArgument,
        "user_id",
    );
    assert_refused(
        client
            .unsubscribe_from_topic(authed(unsubscription("", "alice")))
            .await,
        Code::InvalidArgument,
        "topic",
    );
    assert_refused(
        client
            .list_topic_subscribers(authed(pb::ListTopicSubscribersRequest {
                topic: "news".to_owned(),
                page_size: 1001,
                page_token: String::new(),
            }))
            .await,
        Code::InvalidArgument,
        "page_size",
    );
    assert_refused(
        client
            .list_broadcasts(authed(pb::ListBroadcastsRequest {
                page_size: 1001,
                page_token: String::new(),
            }))
            .await,
        Code::InvalidArgument,
        "page_size",
    );
    assert_eq!(user_topics(&mut client, "alice").await, ["digest", "news"]);

    // A segment broadcast for tomorrow reads back as it was sent.
    let notify = pb::Notify {
        r#type: "file_type".to_owned(),
        title: "Weekly".to_owned(),
        body: "For pro teams".to_owned(),
        channels: vec!["in_app".to_owned()],
        data_json: r#"{"edition":7}"#.to_owned(),
        priority: pb::Priority::High.into(),
        ..Default::default()
    };
    let segment = pb::Segment {
        traits: vec![pb::Condition {
            property: "plan".to_owned(),
            op: pb::ConditionOp::Eq.into(),
            value_json: r#""pro""#.to_owned(),
        }],
        active_within: Some(prost_types::Duration {
            seconds: 7 * 86_400,
            nanos: 0,
        }),
    };
    let tomorrow = prost_types::Timestamp {
        seconds: jiff::Timestamp::now().as_second() + 86_400,
        nanos: 0,
    };
    let scheduled = pb::CreateBroadcastRequest {
        id: "digest-pro".to_owned(),
        notify: Some(notify.clone()),
        audience: Some(pb::create_broadcast_request::Audience::Segment(
            segment.clone(),
        )),
        send_at: Some(tomorrow),
    };
    let created = client
        .create_broadcast(authed(scheduled.clone()))
        .await
        .unwrap()
        .into_inner();
    assert!(created.created);
    let broadcast = created.broadcast.unwrap();
    assert_eq!(broadcast.id, "digest-pro");
    assert_eq!(broadcast.notify.as_ref(), Some(&notify));
    assert_eq!(
        broadcast.audience,
        Some(pb::broadcast::Audience::Segment(segment))
    );
    assert_eq!(broadcast.send_at, Some(tomorrow));
    assert_eq!(broadcast.due_at, Some(tomorrow));
    assert_eq!(broadcast.state, pb::BroadcastState::Scheduled as i32);
    assert_eq!(
        (
            broadcast.scanned,
            broadcast.recipients,
            broadcast.notifications
        ),
        (0, 0, 0)
    );
    assert!(broadcast.created_at.is_some());
    assert!(broadcast.started_at.is_none() && broadcast.finished_at.is_none());
    let got = client
        .get_broadcast(authed(pb::GetBroadcastRequest {
            id: "digest-pro".to_owned(),
        }))
        .await
        .unwrap()
        .into_inner()
        .broadcast
        .unwrap();
    assert_eq!(got, broadcast);

    // The same again is the first; another send time under the id is not.
    let again = client
        .create_broadcast(authed(scheduled.clone()))
        .await
        .unwrap()
        .into_inner();
    assert!(!again.created);
    assert_eq!(again.broadcast.unwrap(), broadcast);
    let later = prost_types::Timestamp {
        seconds: tomorrow.seconds + 60,
        nanos: 0,
    };
    assert_refused(
        client
            .create_broadcast(authed(pb::CreateBroadcastRequest {
                send_at: Some(later),
                ..scheduled.clone()
            }))
            .await,
        Code::AlreadyExists,
        "broadcast \"digest-pro\" already exists",
    );

    // Cancelled once; a second cancel names the state it is in.
    let cancelled = client
        .cancel_broadcast(authed(pb::CancelBroadcastRequest {
            id: "digest-pro".to_owned(),
        }))
        .await
        .unwrap()
        .into_inner()
        .broadcast
        .unwrap();
    assert_eq!(cancelled.state, pb::BroadcastState::Cancelled as i32);
    assert!(cancelled.finished_at.is_some());
    let status = client
        .cancel_broadcast(authed(pb::CancelBroadcastRequest {
            id: "digest-pro".to_owned(),
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("cancelled"), "{status:?}");
    for id in ["nobody", "bad id", ""] {
        assert_refused(
            client
                .cancel_broadcast(authed(pb::CancelBroadcastRequest { id: id.to_owned() }))
                .await,
            Code::NotFound,
            "no broadcast",
        );
        assert_refused(
            client
                .get_broadcast(authed(pb::GetBroadcastRequest { id: id.to_owned() }))
                .await,
            Code::NotFound,
            "no broadcast",
        );
    }

    // A topic broadcast reaches every subscriber, once each.
    let created = client
        .create_broadcast(authed(pb::CreateBroadcastRequest {
            id: "news-1".to_owned(),
            notify: Some(pb::Notify {
                title: "Extra".to_owned(),
                ..notify.clone()
            }),
            audience: Some(pb::create_broadcast_request::Audience::Topic(
                "news".to_owned(),
            )),
            send_at: None,
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(created.created);
    let done = eventually("the topic broadcast is done", || {
        let mut client = client.clone();
        async move {
            let broadcast = client
                .get_broadcast(authed(pb::GetBroadcastRequest {
                    id: "news-1".to_owned(),
                }))
                .await
                .unwrap()
                .into_inner()
                .broadcast
                .unwrap();
            (broadcast.state == pb::BroadcastState::Done as i32).then_some(broadcast)
        }
    })
    .await;
    assert_eq!(
        (done.scanned, done.recipients, done.notifications),
        (3, 3, 3)
    );
    assert!(done.started_at.is_some() && done.finished_at.is_some());
    for user in ["alice", "bob", "carol"] {
        let mine = notifications_of(&mut client, user).await;
        assert_eq!(mine.len(), 1, "{user}: {mine:?}");
        assert_eq!(mine[0].title, "Extra");
        assert_eq!(mine[0].r#type, "file_type");
        assert_eq!(mine[0].source_event_id, format!("broadcast:news-1:{user}"));
    }
    assert!(notifications_of(&mut client, "gone").await.is_empty());

    // Newest first, a page at a time; the token is the page's last id.
    let first = client
        .list_broadcasts(authed(pb::ListBroadcastsRequest {
            page_size: 1,
            page_token: String::new(),
        }))
        .await
        .unwrap()
        .into_inner();
    let ids = |page: &pb::ListBroadcastsResponse| -> Vec<String> {
        page.broadcasts.iter().map(|b| b.id.clone()).collect()
    };
    assert_eq!(ids(&first), ["news-1"]);
    assert_eq!(first.next_page_token, "news-1");
    let second = client
        .list_broadcasts(authed(pb::ListBroadcastsRequest {
            page_size: 1,
            page_token: first.next_page_token.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ids(&second), ["digest-pro"]);
    assert_eq!(
        second.broadcasts[0].state,
        pb::BroadcastState::Cancelled as i32
    );
    assert!(second.next_page_token.is_empty());
    server.stop().await;
}
