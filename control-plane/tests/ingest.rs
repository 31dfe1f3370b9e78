//! End-to-end tests of the control plane library: the real tonic server and
//! axum routers on 127.0.0.1:0, driven by the real tonic client from
//! `nudge-proto` and plain HTTP/1.1 over a socket. No timed assertions.

use std::net::SocketAddr;
use std::path::Path;

use nudge_control_plane::{Config, Listeners};
use nudge_proto::v1::envelope::Body;
use nudge_proto::v1::ingest_client::IngestClient;
use nudge_proto::v1::{Envelope, Identify, PushRequest, PushResponse, Track};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

const TOKEN: &str = "test-admin-token";

struct Running {
    grpc: SocketAddr,
    http: SocketAddr,
    admin: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), nudge_control_plane::Error>>,
}

impl Running {
    async fn start(dir: &Path, token: Option<&str>) -> Running {
        let mut args = vec![
            "nudge-control-plane".to_owned(),
            "--data-dir".to_owned(),
            dir.display().to_string(),
            "--grpc-listen=127.0.0.1:0".to_owned(),
            "--http-listen=127.0.0.1:0".to_owned(),
            "--admin-listen=127.0.0.1:0".to_owned(),
        ];
        if let Some(token) = token {
            args.push(format!("--admin-token={token}"));
        }
        let config = <Config as clap::Parser>::try_parse_from(args).unwrap();
        let listeners = Listeners::bind(&config).await.unwrap();
        let (grpc, http, admin) = (
            listeners.grpc.local_addr().unwrap(),
            listeners.http.local_addr().unwrap(),
            listeners.admin.local_addr().unwrap(),
        );
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(nudge_control_plane::run(
            config,
            listeners,
            shutdown.clone(),
        ));
        Running {
            grpc,
            http,
            admin,
            shutdown,
            task,
        }
    }

    async fn client(&self) -> IngestClient<Channel> {
        IngestClient::connect(format!("http://{}", self.grpc))
            .await
            .unwrap()
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
    }

    async fn stored_events(&self) -> u64 {
        let (status, body) = http_get(self.http, "/v1/admin/stats", Some(TOKEN)).await;
        assert_eq!(status, 200, "{body}");
        body["events"].as_u64().unwrap()
    }
}

fn track(id: &str, user: &str) -> Envelope {
    Envelope {
        id: id.to_owned(),
        user_id: user.to_owned(),
        context_json: r#"{"library":{"name":"test"}}"#.to_owned(),
        body: Some(Body::Track(Track {
            event: "Clicked".to_owned(),
            properties_json: r#"{"n":1}"#.to_owned(),
        })),
        ..Default::default()
    }
}

fn batch(envelopes: Vec<Envelope>) -> PushRequest {
    PushRequest {
        agent_id: "test-agent".to_owned(),
        batch_id: "b1".to_owned(),
        sent_at: Some(nudge_proto::timestamp(std::time::SystemTime::now())),
        envelopes,
    }
}

async fn push(client: &mut IngestClient<Channel>, envelopes: Vec<Envelope>) -> PushResponse {
    client.push(batch(envelopes)).await.unwrap().into_inner()
}

/// A GET over a fresh connection; returns the status and the body as JSON
/// (or as a JSON string when it is not JSON).
async fn http_get(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = token
        .map(|token| format!("Authorization: Bearer {token}\r\n"))
        .unwrap_or_default();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8(response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let body = serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_owned()));
    (status, body)
}

#[tokio::test]
async fn a_resent_batch_is_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = Running::start(dir.path(), Some(TOKEN)).await;
    let mut client = server.client().await;
    let envelopes = vec![track("e1", "u1"), track("e2", "u1"), track("e3", "u2")];

    let first = push(&mut client, envelopes.clone()).await;
    assert_eq!((first.stored, first.duplicates), (3, 0));
    assert_eq!(first.batch_id, "b1");
    assert!(first.received_at.is_some());
    let second = push(&mut client, envelopes).await;
    assert_eq!((second.stored, second.duplicates), (0, 3));
    assert_eq!(server.stored_events().await, 3);

    let (status, metrics) = http_get(server.admin, "/metrics", None).await;
    assert_eq!(status, 200);
    let metrics = metrics.as_str().unwrap();
    assert!(
        metrics.contains("nudge_cp_events_ingested_total 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("nudge_cp_events_duplicate_total 3"),
        "{metrics}"
    );
    assert!(metrics.contains("nudge_cp_stored_events 3"), "{metrics}");
    server.stop().await;
}

#[tokio::test]
async fn concurrent_pushes_of_overlapping_ids_store_each_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = Running::start(dir.path(), Some(TOKEN)).await;
    let client = server.client().await;
    let pushes: Vec<_> = (0..8)
        .map(|agent| {
            let mut client = client.clone();
            tokio::spawn(async move {
                let mut envelopes: Vec<Envelope> = (0..40)
                    .map(|i| track(&format!("shared-{i}"), "u"))
                    .collect();
                envelopes.extend((0..5).map(|i| track(&format!("own-{agent}-{i}"), "u")));
                push(&mut client, envelopes).await
            })
        })
        .collect();
    let mut stored = 0;
    let mut duplicates = 0;
    for handle in pushes {
        let response = handle.await.unwrap();
        stored += response.stored;
        duplicates += response.duplicates;
    }
    assert_eq!(stored, 40 + 8 * 5);
    assert_eq!(duplicates, 7 * 40);
    assert_eq!(server.stored_events().await, 80);
    server.stop().await;
}

#[tokio::test]
async fn an_invalid_envelope_is_rejected_and_the_rest_stored() {
    let dir = tempfile::tempdir().unwrap();
    let server = Running::start(dir.path(), Some(TOKEN)).await;
    let mut client = server.client().await;
    let mut bad_json = track("bad-json", "u");
    bad_json.context_json = "{oops".to_owned();
    let mut no_user = track("no-user", "");
    no_user.anonymous_id.clear();
    let mut no_body = track("no-body", "u");
    no_body.body = None;

    let response = push(
        &mut client,
        vec![
            track("good-1", "u"),
            bad_json,
            no_user,
            no_body,
            track("good-2", "u"),
        ],
    )
    .await;
    assert_eq!(response.stored, 2);
    let rejected: Vec<(&str, &str)> = response
        .rejected
        .iter()
        .map(|r| (r.envelope_id.as_str(), r.reason.as_str()))
        .collect();
    assert_eq!(rejected.len(), 3, "{rejected:?}");
    assert!(
        rejected[0].0 == "bad-json" && rejected[0].1.contains("context_json is not valid JSON")
    );
    assert!(
        rejected[1].0 == "no-user" && rejected[1].1.contains("neither user_id nor anonymous_id")
    );
    assert!(rejected[2].0 == "no-body" && rejected[2].1.contains("body is missing"));
    assert_eq!(server.stored_events().await, 2);
    server.stop().await;
}

/// The rule the agent applies at intake (nudge-proto's shared check) is
/// the rule ingest applies: NUL and over-long ids are refused by name.
#[tokio::test]
async fn ids_with_nul_or_over_1024_bytes_are_rejected_by_the_shared_check() {
    let dir = tempfile::tempdir().unwrap();
    let server = Running::start(dir.path(), Some(TOKEN)).await;
    let mut client = server.client().await;
    let long = "x".repeat(nudge_proto::validate::MAX_ID_BYTES + 1);
    let mut anonymous_long = track("anonymous-long", "");
    anonymous_long.anonymous_id = long.clone();
    let response = push(
        &mut client,
        vec![
            track("nul-user", "u\0v"),
            track("long-user", &long),
            anonymous_long,
            track("id-with-\0", "u"),
            track("good", "u"),
        ],
    )
    .await;
    assert_eq!(response.stored, 1);
    let rejected: Vec<(&str, &str)> = response
        .rejected
        .iter()
        .map(|r| (r.envelope_id.as_str(), r.reason.as_str()))
        .collect();
    assert_eq!(
        rejected,
        [
            ("nul-user", "user_id contains a NUL character"),
            (
                "long-user",
                "user_id is 1025 bytes long, over the limit of 1024 bytes"
            ),
            (
                "anonymous-long",
                "anonymous_id is 1025 bytes long, over the limit of 1024 bytes"
            ),
            ("id-with-\0", "id contains a NUL character"),
        ]
    );
    assert_eq!(server.stored_events().await, 1);
    server.stop().await;
}

#[tokio::test]
async fn admin_routes_require_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let server = Running::start(dir.path(), Some(TOKEN)).await;
    let mut client = server.client().await;
    let identify = Envelope {
        body: Some(Body::Identify(Identify {
            traits_json: r#"{"email":"a@example.com"}"#.to_owned(),
        })),
        ..track("i1", "u1")
    };
    push(
        &mut client,
        vec![
            track("e1", "u1"),
            track("e2", "u1"),
            track("e3", "u1"),
            identify,
        ],
    )
    .await;

    let path = "/v1/admin/events?user_id=u1&limit=2";
    let (status, body) = http_get(server.http, path, None).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "unauthorized");
    let (status, body) = http_get(server.http, path, Some("wrong-token")).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "unauthorized");

    let (status, page) = http_get(server.http, path, Some(TOKEN)).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["events"][0]["id"], "e1");
    assert_eq!(page["events"][0]["type"], "track");
    assert_eq!(page["events"][0]["agent_id"], "test-agent");
    let next = page["next"].as_str().unwrap();
    let (status, rest) = http_get(server.http, &format!("{path}&after={next}"), Some(TOKEN)).await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = rest["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["e3", "i1"]);
    assert_eq!(rest["next"], Value::Null);

    let (status, body) = http_get(server.http, "/v1/admin/events?limit=2", Some(TOKEN)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("bad_request"))
    );
    let (status, _) = http_get(
        server.http,
        "/v1/admin/events?user_id=u1&limit=zero",
        Some(TOKEN),
    )
    .await;
    assert_eq!(status, 400);

    let (status, profile) = http_get(server.http, "/v1/admin/users/u1/profile", Some(TOKEN)).await;
    assert_eq!(status, 200);
    assert_eq!(profile["traits"]["email"], "a@example.com");
    let (status, _) = http_get(server.http, "/v1/admin/users/nobody/profile", Some(TOKEN)).await;
    assert_eq!(status, 404);
    let (status, _) = http_get(server.http, "/v1/admin/users/u1/profile", None).await;
    assert_eq!(status, 401);
    server.stop().await;
}

#[tokio::test]
async fn admin_routes_are_disabled_without_a_configured_token() {
    let dir = tempfile::tempdir().unwrap();
    let server = Running::start(dir.path(), None).await;
    let (status, body) = http_get(server.http, "/v1/admin/stats", Some("anything")).await;
    assert_eq!(status, 503);
    assert_eq!(body["error"]["code"], "admin_disabled");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("NUDGE_CP_ADMIN_TOKEN")
    );
    server.stop().await;
}

#[tokio::test]
async fn a_restart_keeps_events_and_dedupe_state() {
    let dir = tempfile::tempdir().unwrap();
    let envelopes = vec![track("e1", "u1"), track("e2", "u1")];
    let server = Running::start(dir.path(), Some(TOKEN)).await;
    assert_eq!(
        push(&mut server.client().await, envelopes.clone())
            .await
            .stored,
        2
    );
    server.stop().await;

    let server = Running::start(dir.path(), Some(TOKEN)).await;
    assert_eq!(server.stored_events().await, 2);
    let mut resend = envelopes;
    resend.push(track("e3", "u1"));
    let response = push(&mut server.client().await, resend).await;
    assert_eq!((response.stored, response.duplicates), (1, 2));
    assert_eq!(server.stored_events().await, 3);
    server.stop().await;
}

#[tokio::test]
async fn probes_and_grpc_health_report_serving() {
    let dir = tempfile::tempdir().unwrap();
    let server = Running::start(dir.path(), Some(TOKEN)).await;
    assert_eq!(http_get(server.admin, "/healthz", None).await.0, 200);
    assert_eq!(http_get(server.admin, "/readyz", None).await.0, 200);
    let channel = Channel::from_shared(format!("http://{}", server.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let answer = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "nudge.v1.Ingest".to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        answer.status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
    server.stop().await;
}

/// Money beyond nudge-proto's bound (10⁹ units) is refused by name at
/// ingest, as the agent refuses it at intake: a notify's cost, an outcome
/// amount in a track's properties.
#[tokio::test]
async fn amounts_beyond_the_money_bound_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let server = Running::start(dir.path(), Some(TOKEN)).await;
    let mut client = server.client().await;
    let mut revenue = track("huge-revenue", "u");
    if let Some(Body::Track(track)) = &mut revenue.body {
        track.properties_json = r#"{"revenue": 1e18}"#.to_owned();
    }
    let mut amount = track("fine-amount", "u");
    if let Some(Body::Track(track)) = &mut amount.body {
        track.properties_json = r#"{"amount": "999999999.99"}"#.to_owned();
    }
    let mut cost = track("huge-cost", "u");
    cost.body = Some(Body::Notify(nudge_proto::v1::Notify {
        r#type: "invoice".to_owned(),
        cost: "999999999999".to_owned(),
        ..Default::default()
    }));
    let response = push(&mut client, vec![revenue, amount, cost]).await;
    assert_eq!(response.stored, 1);
    let rejected: Vec<(&str, &str)> = response
        .rejected
        .iter()
        .map(|r| (r.envelope_id.as_str(), r.reason.as_str()))
        .collect();
    assert_eq!(rejected.len(), 2, "{rejected:?}");
    assert!(
        rejected[0].0 == "huge-revenue"
            && rejected[0].1.contains("`revenue` is 1000000000000000000"),
        "{rejected:?}"
    );
    assert!(
        rejected[1].0 == "huge-cost"
            && rejected[1].1.starts_with("notify.cost is \"999999999999\""),
        "{rejected:?}"
    );
    server.stop().await;
}
